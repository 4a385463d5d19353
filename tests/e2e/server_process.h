// Test support: run the real server binaries (convserve-server, convserve-echo-server) as
// child processes on free loopback ports and wait until they answer health checks, and run
// command-line tools to completion capturing their output. Shared by every test folder that
// needs a live server (e2e, KServe, metrics).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace convserve {

struct ServerProcessOptions {
  // Path of the server executable; where it does not exist (tests moved to another machine
  // without their build tree), the executable of the same file name on PATH.
  std::string binary;
  std::vector<std::string> args;  // further flags, e.g. "--model_repository=/x"
  // Add convserve-server's own flags: --metrics_listen on a second free port, --state_dir in
  // the process's work dir, and --device. Off for the echo server, which has none of them.
  bool convserve_flags = true;
  std::string device = "cpu";
  // How long to wait for the health service to report SERVING ("" service).
  absl::Duration startup_timeout = absl::Seconds(120);
};

// One running server. Thread-compatible. The destructor kills (SIGKILL) a server still running
// and removes the work dir; a server also dies with the test process (PR_SET_PDEATHSIG).
class ServerProcess {
 public:
  // Picks free ports, starts the binary with --listen=127.0.0.1:<port> (stdout and stderr to
  // <work_dir>/server.log) and waits until healthy. Retries with fresh ports when the server
  // exits during start-up (another process took the port). FAILED_PRECONDITION with the log's
  // tail when it never becomes healthy.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(ServerProcessOptions options);
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string address() const;                        // "127.0.0.1:<port>"
  int metrics_port() const { return metrics_port_; }  // 0 without convserve_flags
  pid_t pid() const { return pid_; }
  const std::string& work_dir() const { return work_dir_; }
  std::string Log() const;  // the server's output so far

  absl::Status Signal(int signal);
  // Waits for the process to end: its exit status, or 128 + signal number when killed.
  // DEADLINE_EXCEEDED when it still runs after `timeout`.
  absl::StatusOr<int> Wait(absl::Duration timeout);

 private:
  ServerProcess() = default;
  absl::Status Launch(const ServerProcessOptions& options);
  absl::Status WaitHealthy(absl::Duration timeout);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int port_ = 0;
  int metrics_port_ = 0;
  std::string work_dir_;
};

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs argv[0] with argv to completion. DEADLINE_EXCEEDED (after killing it) on timeout.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout = absl::Seconds(300));

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
int PickFreePort();

// A fresh directory under $TMPDIR (or /tmp); the caller removes it.
std::string MakeTempDir(const std::string& prefix);

}  // namespace convserve
