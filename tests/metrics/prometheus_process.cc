// Starts Prometheus with a generated scrape configuration and reads its JSON query answers
// through protobuf's JSON parser (google.protobuf.Struct), the one JSON parser we link anyway.
#include "tests/metrics/prometheus_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "tests/e2e/server_process.h"
#include "tests/metrics/http_get.h"

namespace convserve {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string Seconds(absl::Duration d) {
  return absl::StrCat(std::max<int64_t>(1, absl::ToInt64Seconds(d)), "s");
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrometheusProcess>> PrometheusProcess::Start(
    PrometheusOptions options) {
  std::unique_ptr<PrometheusProcess> p(new PrometheusProcess);
  p->dir_ = MakeTempDir("convserve-prometheus");
  p->config_path_ = p->dir_ + "/prometheus.yml";
  {
    std::vector<std::string> quoted;
    for (const std::string& t : options.targets) quoted.push_back(absl::StrCat("\"", t, "\""));
    std::ofstream config(p->config_path_);
    config << "global:\n  scrape_interval: " << Seconds(options.scrape_interval)
           << "\n  evaluation_interval: " << Seconds(options.scrape_interval)
           << "\nscrape_configs:\n  - job_name: " << options.job
           << "\n    static_configs:\n      - targets: [" << absl::StrJoin(quoted, ", ") << "]\n";
    if (!config) return absl::InternalError("cannot write " + p->config_path_);
  }
  const std::string log_path = p->dir_ + "/prometheus.log";
  for (int attempt = 0; attempt < 3; ++attempt) {
    p->port_ = PickFreePort();
    std::vector<std::string> argv = {
        options.binary,
        "--config.file=" + p->config_path_,
        "--storage.tsdb.path=" + p->dir_ + "/data",
        absl::StrCat("--web.listen-address=127.0.0.1:", p->port_),
        "--log.level=warn",
    };
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0)
      return absl::InternalError(absl::StrCat("open ", log_path, ": ", strerror(errno)));
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(log_fd);
    if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
    p->pid_ = pid;

    const absl::Time deadline = absl::Now() + options.startup_timeout;
    bool exited = false;
    while (absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;  // most likely the port was taken in the meantime: try another
        p->pid_ = -1;
        break;
      }
      absl::StatusOr<HttpResponse> ready = HttpGet(p->port_, "/-/ready", absl::Seconds(5));
      if (ready.ok() && ready->status == 200) return p;
      absl::SleepFor(absl::Milliseconds(200));
    }
    if (!exited) break;
  }
  return absl::FailedPreconditionError(
      absl::StrCat("prometheus did not get ready; log:\n", p->Log()));
}

PrometheusProcess::~PrometheusProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGTERM);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (absl::Now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

std::string PrometheusProcess::Log() const { return ReadFile(dir_ + "/prometheus.log"); }

absl::StatusOr<std::vector<PromSample>> PrometheusProcess::Query(const std::string& promql) const {
  absl::StatusOr<HttpResponse> response =
      HttpGet(port_, "/api/v1/query?query=" + UrlEncode(promql));
  if (!response.ok()) return response.status();
  google::protobuf::Struct json;
  if (!google::protobuf::util::JsonStringToMessage(response->body, &json).ok()) {
    return absl::InternalError(
        absl::StrCat("not JSON (HTTP ", response->status, "): ", response->body.substr(0, 300)));
  }
  const auto& fields = json.fields();
  auto status = fields.find("status");
  if (status == fields.end() || status->second.string_value() != "success") {
    auto error = fields.find("error");
    return absl::InvalidArgumentError(absl::StrCat(
        promql, ": ", error == fields.end() ? response->body : error->second.string_value()));
  }
  const google::protobuf::Struct& data = fields.at("data").struct_value();
  const std::string type = data.fields().at("resultType").string_value();
  const google::protobuf::Value& result = data.fields().at("result");
  // A sample's value is [unix_time, "number"]; Prometheus writes numbers as strings.
  auto parse_value = [](const google::protobuf::Value& pair, double* out) {
    return pair.list_value().values_size() == 2 &&
           absl::SimpleAtod(pair.list_value().values(1).string_value(), out);
  };
  std::vector<PromSample> samples;
  if (type == "scalar") {
    PromSample s;
    if (!parse_value(result, &s.value)) return absl::InternalError("unreadable scalar");
    samples.push_back(s);
    return samples;
  }
  if (type != "vector") return absl::InternalError("unexpected result type " + type);
  for (const google::protobuf::Value& item : result.list_value().values()) {
    PromSample s;
    for (const auto& [name, value] :
         item.struct_value().fields().at("metric").struct_value().fields()) {
      s.labels[name] = value.string_value();
    }
    if (!parse_value(item.struct_value().fields().at("value"), &s.value)) {
      return absl::InternalError("unreadable sample value");
    }
    samples.push_back(std::move(s));
  }
  return samples;
}

}  // namespace convserve
