// End to end: a real convserve-server serving the demo repository, scraped by a real Prometheus;
// after Forward traffic (good requests, an unknown layer, a malformed input), every query of
// every panel of the shipped Grafana dashboard must return data through Prometheus' HTTP API.
// On a machine without a GPU the server runs on the CPU reference backend, which exports no
// GPU families (occupancy, device memory, tuner): panels made only of those must then come back
// empty, and every other panel must have data. With a GPU, every panel must have data.
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/metrics/http_get.h"
#include "tests/metrics/prometheus_process.h"

namespace convserve {
namespace {

// Families only a GPU executor exports.
const std::set<std::string> kGpuOnlyFamilies = {
    "convserve_kernel_achieved_occupancy_ratio",
    "convserve_kernel_theoretical_occupancy_ratio",
    "convserve_occupancy_sampler_enabled",
    "convserve_device_memory_used_bytes",
    "convserve_device_memory_total_bytes",
    "convserve_tuner_runs_total",
    "convserve_tuner_cache_hits_total",
    "convserve_tuner_cache_misses_total",
    "convserve_tuner_seconds_total",
};

struct PanelQuery {
  std::string panel;
  std::string expr;  // with the dashboard's variables substituted
};

// Every target of every panel of the dashboard file, $layer as "all" and Grafana's interval
// variables as one minute (60 scrapes here).
std::vector<PanelQuery> DashboardQueries(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::Struct dashboard;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(text.str(), &dashboard).ok()) << path;
  std::vector<PanelQuery> queries;
  for (const auto& panel : dashboard.fields().at("panels").list_value().values()) {
    const auto& fields = panel.struct_value().fields();
    if (fields.at("type").string_value() == "row") continue;
    const std::string title = fields.at("title").string_value();
    auto targets = fields.find("targets");
    EXPECT_TRUE(targets != fields.end() && targets->second.list_value().values_size() > 0)
        << "panel '" << title << "' has no query";
    if (targets == fields.end()) continue;
    for (const auto& target : targets->second.list_value().values()) {
      const std::string expr = target.struct_value().fields().at("expr").string_value();
      queries.push_back({title, absl::StrReplaceAll(expr, {{"$__rate_interval", "1m"},
                                                           {"$__interval", "1m"},
                                                           {"$layer", ".*"}})});
    }
  }
  return queries;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The metric families named in a query or an exposition (histogram series to their family).
std::set<std::string> FamiliesIn(const std::string& text) {
  std::set<std::string> names;
  const std::regex name("convserve_[a-z_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    std::string n = it->str();
    for (const std::string suffix : {"_bucket", "_count", "_sum"}) {
      if (!EndsWith(n, suffix)) continue;
      const std::string base = n.substr(0, n.size() - suffix.size());
      if (EndsWith(base, "_seconds") || base == "convserve_batch_size") n = base;
    }
    names.insert(n);
  }
  return names;
}

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

v1::ForwardRequest DemoRequest(const std::string& layer, int64_t channels, std::mt19937& rng) {
  std::uniform_int_distribution<int> bits(0x3000, 0x3bff);  // fp16 in [0.125, 1)
  v1::ForwardRequest request;
  request.set_layer(layer);
  v1::Tensor* input = request.mutable_input();
  input->set_dtype(v1::DATA_TYPE_FP16);
  input->set_layout(v1::LAYOUT_NCHW);
  for (int64_t d : {int64_t{1}, channels, int64_t{56}, int64_t{56}}) input->add_shape(d);
  std::string data(static_cast<size_t>(channels * 56 * 56 * 2), '\0');
  for (size_t i = 0; i < data.size(); i += 2) {
    const int v = bits(rng);
    data[i] = static_cast<char>(v & 0xff);
    data[i + 1] = static_cast<char>(v >> 8);
  }
  input->set_data(std::move(data));
  return request;
}

TEST(PrometheusE2eTest, EveryDashboardPanelHasData) {
  if (access(CONVSERVE_PROMETHEUS, X_OK) != 0) {
    GTEST_SKIP() << CONVSERVE_PROMETHEUS << " missing (scripts/install-deps.sh installs it)";
  }
  const bool gpu = HaveGpu();
  const std::string repo = MakeTempDir("convserve-demo") + "/repo";
  absl::StatusOr<CommandResult> made = RunCommand(
      {"/usr/bin/python3", CONVSERVE_SOURCE_DIR "/scripts/make-demo-repository.py", repo});
  ASSERT_TRUE(made.ok() && made->exit_code == 0) << made.status() << (made.ok() ? made->err : "");

  ServerProcessOptions server_options;
  server_options.binary = CONVSERVE_SERVER;
  server_options.device = gpu ? "cuda:0" : "cpu";
  // Shared memory on, so its panel has data (its gauges exist from start-up).
  server_options.args = {"--model_repository=" + repo, "--max_queue_delay_us=2000",
                         "--allow_shared_memory"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();

  PrometheusOptions prometheus_options;
  prometheus_options.binary = CONVSERVE_PROMETHEUS;
  prometheus_options.targets = {"127.0.0.1:" + std::to_string((*server)->metrics_port())};
  absl::StatusOr<std::unique_ptr<PrometheusProcess>> prometheus =
      PrometheusProcess::Start(prometheus_options);
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  // Traffic for the whole test: concurrent good requests (so batches form), plus requests for
  // a layer that does not exist and with the wrong channel count.
  ClientOptions client_options;
  client_options.target = (*server)->address();
  Client client(client_options);
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> senders;
  for (int t = 0; t < 3; ++t) {
    senders.emplace_back([&, t] {
      std::mt19937 rng(12345 + t);  // one per sender: an engine shared by threads is a data race
      while (!stop.load()) {
        absl::StatusOr<v1::ForwardResponse> r =
            client.Forward(DemoRequest("demo_conv3x3", 64, rng));
        (r.ok() ? ok : failed)++;
        if (t == 0) {
          EXPECT_EQ(client.Forward(DemoRequest("no_such_layer", 64, rng)).status().code(),
                    absl::StatusCode::kNotFound);
          EXPECT_EQ(client.Forward(DemoRequest("demo_conv3x3", 32, rng)).status().code(),
                    absl::StatusCode::kInvalidArgument);
        }
      }
    });
  }
  struct Joiner {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (auto& t : threads) t.join();
    }
  } joiner{stop, senders};

  absl::StatusOr<HttpResponse> own =
      HttpGet((*server)->metrics_port(), "/metrics", absl::Seconds(10));
  ASSERT_TRUE(own.ok()) << own.status();

  const std::vector<PanelQuery> queries =
      DashboardQueries(CONVSERVE_SOURCE_DIR "/docker/grafana/dashboards/convserve.json");
  ASSERT_GE(queries.size(), 20u);
  // Poll until every query answers with a finite sample (rates need two scrapes after the first
  // requests; histogram quantiles need observations inside the window).
  std::vector<std::string> missing;
  const absl::Time deadline = absl::Now() + absl::Seconds(150);
  std::vector<bool> done(queries.size(), false);
  while (true) {
    missing.clear();
    // GPU families appear once the GPU executor published them; read the server's own page.
    absl::StatusOr<HttpResponse> page = HttpGet((*server)->metrics_port(), "/metrics");
    const std::set<std::string> exported =
        page.ok() ? FamiliesIn(page->body) : std::set<std::string>{};
    for (size_t i = 0; i < queries.size(); ++i) {
      if (done[i]) continue;
      absl::StatusOr<std::vector<PromSample>> samples = (*prometheus)->Query(queries[i].expr);
      ASSERT_TRUE(samples.ok()) << queries[i].panel << ": " << samples.status();
      bool finite = false;
      for (const PromSample& s : *samples) finite |= std::isfinite(s.value);
      if (finite) {
        done[i] = true;
        continue;
      }
      const std::set<std::string> families = FamiliesIn(queries[i].expr);
      bool gpu_only = !families.empty();
      for (const std::string& f : families) gpu_only &= kGpuOnlyFamilies.count(f) > 0;
      bool any_exported = false;
      for (const std::string& f : families) any_exported |= exported.count(f) > 0;
      if (!gpu && gpu_only && !any_exported && ok.load() > 10) {
        std::printf("no GPU: '%s' stays empty: %s\n", queries[i].panel.c_str(),
                    queries[i].expr.c_str());
        done[i] = true;
        continue;
      }
      missing.push_back(queries[i].panel + ": " + queries[i].expr);
    }
    if (missing.empty() || absl::Now() > deadline) break;
    absl::SleepFor(absl::Seconds(2));
  }
  EXPECT_TRUE(missing.empty()) << missing.size()
                               << " queries without data, first: " << missing.front()
                               << "\nrequests ok " << ok << " failed " << failed
                               << "\nserver log:\n"
                               << (*server)->Log();
  EXPECT_GT(ok.load(), 0);

  // Prometheus itself sees the target up.
  absl::StatusOr<std::vector<PromSample>> up = (*prometheus)->Query("up{job=\"convserve\"}");
  ASSERT_TRUE(up.ok()) << up.status();
  ASSERT_EQ(up->size(), 1u);
  EXPECT_EQ(up->front().value, 1);
}

}  // namespace
}  // namespace convserve
