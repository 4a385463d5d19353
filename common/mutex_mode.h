// What the binaries (server, CLI, echo server) call first: Debian builds Abseil without NDEBUG,
// which leaves absl::Mutex's deadlock detection on, a lock-graph update on every lock and mutex
// destruction. In the server at 19k small requests a second that was 8% of its CPU (perf); off,
// the tiny-layer benchmark served 4% more (bench/results/2026-12-07_mutex_detection). The tests
// keep detection on.
#pragma once

#include "absl/synchronization/mutex.h"

namespace convserve {

inline void TurnOffMutexDeadlockDetection() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace convserve
