// A minimal line logger for the server (Abseil 20220623 has no logging library): one line per
// call to stderr, prefixed with the UTC time and the severity. Thread-safe (one write per line).
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"

namespace convserve {

enum class LogSeverity { kInfo, kWarning, kError };

void LogLine(LogSeverity severity, std::string_view message);

template <typename... Args>
void LogInfo(const Args&... args) {
  LogLine(LogSeverity::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarning(const Args&... args) {
  LogLine(LogSeverity::kWarning, absl::StrCat(args...));
}
template <typename... Args>
void LogError(const Args&... args) {
  LogLine(LogSeverity::kError, absl::StrCat(args...));
}

}  // namespace convserve
