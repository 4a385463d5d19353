// Test support: a real Prometheus server (Debian's /usr/bin/prometheus) started as a child
// process on a free loopback port with a generated configuration, and its HTTP query API.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace convserve {

struct PrometheusOptions {
  std::string binary = "/usr/bin/prometheus";
  std::vector<std::string> targets;  // "127.0.0.1:port" of /metrics endpoints, one job
  std::string job = "convserve";
  absl::Duration scrape_interval = absl::Seconds(1);
  absl::Duration startup_timeout = absl::Seconds(60);
};

// One sample of an instant-query result.
struct PromSample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Thread-compatible. The destructor stops the server (SIGTERM, then SIGKILL) and removes its
// directory; the server also dies with the test process.
class PrometheusProcess {
 public:
  // Writes the configuration, starts the server and waits until /-/ready answers 200.
  // FAILED_PRECONDITION with the log's tail when it never gets ready.
  static absl::StatusOr<std::unique_ptr<PrometheusProcess>> Start(PrometheusOptions options);
  ~PrometheusProcess();
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;

  int port() const { return port_; }
  const std::string& config_path() const { return config_path_; }
  std::string Log() const;

  // GET /api/v1/query?query=...: the samples of an instant vector or the one of a scalar.
  // INVALID_ARGUMENT with Prometheus' error text when the query is rejected.
  absl::StatusOr<std::vector<PromSample>> Query(const std::string& promql) const;

 private:
  PrometheusProcess() = default;

  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_;
  std::string config_path_;
};

}  // namespace convserve
