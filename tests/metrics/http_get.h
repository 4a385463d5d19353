// Test support: a minimal HTTP/1.0 GET against a loopback port (the metrics exposer, the
// Prometheus API), without pulling an HTTP client library into the tests.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace convserve {

struct HttpResponse {
  int status = 0;  // e.g. 200
  std::string body;
};

// GET http://127.0.0.1:<port><path_and_query>. UNAVAILABLE when nothing listens or the
// connection breaks; DEADLINE_EXCEEDED after `timeout`.
absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path_and_query,
                                     absl::Duration timeout = absl::Seconds(30));

// Percent-encodes everything but RFC 3986's unreserved characters.
std::string UrlEncode(const std::string& text);

}  // namespace convserve
