// Child processes for tests: fork/exec with output to files, health polling, reaping.
#include "tests/e2e/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "client/client.h"

namespace convserve {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string Tail(const std::string& text, size_t bytes) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

// The executable to run for `path`: itself when it exists; otherwise, as when the tests run
// from a gpu-bundle on the device machine without their build tree, the file of the same name
// in a PATH directory; otherwise `path` again, whose exec then fails and says so in the log.
std::string ResolveExecutable(const std::string& path) {
  if (access(path.c_str(), X_OK) == 0) return path;
  const std::string name = std::filesystem::path(path).filename().string();
  const char* dirs = getenv("PATH");
  for (absl::string_view dir :
       absl::StrSplit(dirs != nullptr ? dirs : "", ':', absl::SkipEmpty())) {
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return path;
}

// Starts argv with stdout and stderr redirected to the given files (created or truncated).
// The child dies with its parent. Everything the child needs is prepared before fork(): only
// async-signal-safe calls run between fork and exec.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& out_path,
                            const std::string& err_path) {
  const std::string executable = ResolveExecutable(argv[0]);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const int err_fd = out_path == err_path
                         ? out_fd
                         : open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out_fd < 0 || err_fd < 0) {
    return absl::InternalError(absl::StrCat("cannot create ", out_path, ": ", strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(out_fd, STDOUT_FILENO);
    dup2(err_fd, STDERR_FILENO);
    // The test process may block signals in its threads; the child starts with none blocked.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(executable.c_str(), args.data());
    const char message[] = "exec failed\n";
    (void)!write(STDERR_FILENO, message, sizeof(message) - 1);
    _exit(127);
  }
  close(out_fd);
  if (err_fd != out_fd) close(err_fd);
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  return pid;
}

int DecodeWaitStatus(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Polls waitpid until `pid` ends (true, its exit code in *exit_code) or `timeout` passes.
bool PollExit(pid_t pid, absl::Duration timeout, int* exit_code) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      *exit_code = DecodeWaitStatus(status);
      return true;
    }
    if (r < 0 && errno != EINTR) {
      *exit_code = -1;
      return true;
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace

int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/", prefix, "-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) return "";
  return pattern;
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(ServerProcessOptions options) {
  constexpr int kAttempts = 3;
  absl::Status last;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::unique_ptr<ServerProcess> server(new ServerProcess);
    last = server->Launch(options);
    if (last.ok()) last = server->WaitHealthy(options.startup_timeout);
    if (last.ok()) return server;
    // Retry only when the server exited by itself during start-up, the mark of a lost port.
    if (!absl::IsUnavailable(last)) break;
  }
  return absl::FailedPreconditionError(last.message());
}

absl::Status ServerProcess::Launch(const ServerProcessOptions& options) {
  work_dir_ = MakeTempDir("convserve-server");
  if (work_dir_.empty()) return absl::InternalError("cannot create a temporary directory");
  port_ = PickFreePort();
  std::vector<std::string> argv = {options.binary, absl::StrCat("--listen=", address())};
  if (options.convserve_flags) {
    metrics_port_ = PickFreePort();
    argv.push_back(absl::StrCat("--metrics_listen=127.0.0.1:", metrics_port_));
    argv.push_back(absl::StrCat("--state_dir=", work_dir_, "/state"));
    argv.push_back(absl::StrCat("--device=", options.device));
  }
  argv.insert(argv.end(), options.args.begin(), options.args.end());
  const std::string log = work_dir_ + "/server.log";
  absl::StatusOr<pid_t> pid = Spawn(argv, log, log);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  return absl::OkStatus();
}

absl::Status ServerProcess::WaitHealthy(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::UnknownError("no health check made");
  while (absl::Now() < deadline) {
    int exit_code = 0;
    if (PollExit(pid_, absl::ZeroDuration(), &exit_code)) {
      reaped_ = true;
      return absl::UnavailableError(absl::StrCat("server exited with status ", exit_code,
                                                 " during start-up; log:\n", Tail(Log(), 4000)));
    }
    // A fresh channel per poll: a channel that failed to connect backs off for seconds.
    ClientOptions client_options;
    client_options.target = address();
    client_options.call_timeout = absl::Seconds(2);
    Client client(client_options);
    absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> health = client.Health();
    if (health.ok() && *health == grpc::health::v1::HealthCheckResponse::SERVING) {
      return absl::OkStatus();
    }
    last = health.ok() ? absl::UnavailableError("health says NOT_SERVING") : health.status();
    absl::SleepFor(absl::Milliseconds(100));
  }
  Signal(SIGKILL).IgnoreError();
  return absl::DeadlineExceededError(absl::StrCat("server at ", address(), " not healthy after ",
                                                  absl::FormatDuration(timeout), " (",
                                                  last.ToString(), "); log:\n", Tail(Log(), 4000)));
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (!work_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(work_dir_, ec);
  }
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string ServerProcess::Log() const { return ReadFile(work_dir_ + "/server.log"); }

absl::Status ServerProcess::Signal(int signal) {
  if (pid_ <= 0 || reaped_) return absl::FailedPreconditionError("the server is not running");
  if (kill(pid_, signal) != 0) return absl::InternalError(absl::StrCat("kill: ", strerror(errno)));
  return absl::OkStatus();
}

absl::StatusOr<int> ServerProcess::Wait(absl::Duration timeout) {
  if (reaped_) return absl::FailedPreconditionError("the server was already waited for");
  int exit_code = 0;
  if (!PollExit(pid_, timeout, &exit_code)) {
    return absl::DeadlineExceededError(
        absl::StrCat("server still running after ", absl::FormatDuration(timeout)));
  }
  reaped_ = true;
  return exit_code;
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         absl::Duration timeout) {
  const std::string dir = MakeTempDir("convserve-command");
  if (dir.empty()) return absl::InternalError("cannot create a temporary directory");
  absl::StatusOr<pid_t> pid = Spawn(argv, dir + "/out", dir + "/err");
  CommandResult result;
  bool finished = false;
  if (pid.ok()) {
    finished = PollExit(*pid, timeout, &result.exit_code);
    if (!finished) {
      kill(*pid, SIGKILL);
      int status = 0;
      waitpid(*pid, &status, 0);
    }
    result.out = ReadFile(dir + "/out");
    result.err = ReadFile(dir + "/err");
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!pid.ok()) return pid.status();
  if (!finished) {
    return absl::DeadlineExceededError(absl::StrCat(
        argv[0], " still running after ", absl::FormatDuration(timeout), "; stderr: ", result.err));
  }
  return result;
}

}  // namespace convserve
