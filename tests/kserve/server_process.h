// Runs the real convserve-server binary as a subprocess on free loopback ports for an
// end-to-end test, and stops it (SIGTERM, then SIGKILL) when destroyed.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace convserve::testing {

class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess();

  // Starts `binary` with --listen / --metrics_listen on free 127.0.0.1 ports, --device=cpu,
  // a fresh --state_dir and `extra_args`, and waits until it answers KServe ServerLive.
  // Retries with other ports if the first ones were taken meanwhile.
  absl::Status Start(const std::string& binary, const std::vector<std::string>& extra_args = {});
  // SIGTERM and wait (graceful shutdown); SIGKILL after 30 s. Idempotent.
  void Stop();

  const std::string& target() const { return target_; }  // "127.0.0.1:port" (gRPC)
  int metrics_port() const { return metrics_port_; }
  // The tail of the server's stdout and stderr, for failure messages.
  std::string LogTail(size_t bytes = 8000) const;

 private:
  bool WaitUntilLive();

  pid_t pid_ = -1;
  std::string workdir_;
  std::string log_path_;
  std::string target_;
  int metrics_port_ = 0;
};

// GET http://127.0.0.1:`port``path` with a plain socket; the body, or an error.
absl::Status HttpGet(int port, const std::string& path, std::string* body);

}  // namespace convserve::testing
