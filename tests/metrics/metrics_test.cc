// Names, labels and values of every family Metrics exports, read back through Scrape() (the
// exact text /metrics serves) and through a real HTTP GET of the exposer.
#include "server/metrics/metrics.h"

#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/metrics/http_get.h"

namespace convserve {
namespace {

// The value of the sample whose name and labels (as printed, in order) match exactly.
std::optional<double> Sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

bool HasLineStartingWith(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

std::unique_ptr<Metrics> NewMetrics() {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  EXPECT_TRUE(metrics.ok()) << metrics.status();
  return *std::move(metrics);
}

TEST(MetricsTest, RequestsCountedByLayerApiAndStatus) {
  auto metrics = NewMetrics();
  metrics->RequestFinished("conv1", Api::kNative, absl::StatusCode::kOk, 0.002, 0.0005);
  metrics->RequestFinished("conv1", Api::kNative, absl::StatusCode::kOk, 0.004, 0.001);
  metrics->RequestFinished("conv1", Api::kKserve, absl::StatusCode::kInvalidArgument, 0, 0);
  const std::string text = metrics->Scrape();
  EXPECT_EQ(Sample(text, R"(convserve_requests_total{api="native",layer="conv1",status="OK"})"), 2);
  EXPECT_EQ(Sample(text, R"(convserve_requests_total{api="kserve",layer="conv1",)"
                         R"(status="INVALID_ARGUMENT"})"),
            1);
  // Only successful requests are timed.
  EXPECT_EQ(Sample(text, R"(convserve_request_duration_seconds_count{layer="conv1"})"), 2);
  EXPECT_NEAR(*Sample(text, R"(convserve_request_duration_seconds_sum{layer="conv1"})"), 0.006,
              1e-12);
  EXPECT_EQ(Sample(text, R"(convserve_request_queue_seconds_count{layer="conv1"})"), 2);
  EXPECT_TRUE(HasLineStartingWith(text, "# TYPE convserve_requests_total counter"));
  EXPECT_TRUE(HasLineStartingWith(text, "# TYPE convserve_request_duration_seconds histogram"));
}

TEST(MetricsTest, LatencyBucketsSpan10MicrosecondsTo10SecondsAndAreCumulative) {
  auto metrics = NewMetrics();
  for (double seconds : {5e-6, 1e-5, 3e-3, 20.0}) {
    metrics->RequestFinished("c", Api::kNative, absl::StatusCode::kOk, seconds, 0);
  }
  const std::string text = metrics->Scrape();
  const std::string b = R"(convserve_request_duration_seconds_bucket{layer="c",le=")";
  EXPECT_EQ(Sample(text, b + R"(1e-05"})"), 2);  // le is inclusive
  EXPECT_EQ(Sample(text, b + R"(0.0025"})"), 2);
  EXPECT_EQ(Sample(text, b + R"(0.005"})"), 3);
  EXPECT_EQ(Sample(text, b + R"(10"})"), 3);
  EXPECT_EQ(Sample(text, b + R"(+Inf"})"), 4);
}

TEST(MetricsTest, BatchesByLayerDeviceAndKernelConfig) {
  auto metrics = NewMetrics();
  metrics->BatchExecuted("conv1", "cuda:0", "b128x128x32_w64x64_s3", 8, 0.003, 0.001);
  metrics->BatchExecuted("conv1", "cuda:0", "b128x128x32_w64x64_s3", 3, 0.002, 0.0008);
  const std::string text = metrics->Scrape();
  const std::string labels =
      R"({device="cuda:0",kernel_config="b128x128x32_w64x64_s3",layer="conv1")";
  EXPECT_EQ(Sample(text, "convserve_batch_size_count" + labels + "}"), 2);
  EXPECT_EQ(Sample(text, "convserve_batch_size_sum" + labels + "}"), 11);
  EXPECT_EQ(Sample(text, "convserve_batch_size_bucket" + labels + R"(,le="4"})"), 1);
  EXPECT_EQ(Sample(text, "convserve_batch_size_bucket" + labels + R"(,le="8"})"), 2);
  EXPECT_NEAR(*Sample(text, "convserve_batch_compute_seconds_sum" + labels + "}"), 0.005, 1e-12);
  EXPECT_NEAR(*Sample(text, "convserve_batch_kernel_seconds_sum" + labels + "}"), 0.0018, 1e-12);
}

TEST(MetricsTest, ExecutorStagesByLayerAndDeviceWithMicrosecondBuckets) {
  auto metrics = NewMetrics();
  ExecutorStageSeconds stages;
  stages.staging = 30e-6;
  stages.enqueue = 8e-6;
  stages.wait = 60e-6;
  stages.split = 25e-6;
  stages.answer = 150e-6;
  metrics->ExecutorStages("conv1", "cuda:0", stages);
  stages.staging = 2e-6;
  metrics->ExecutorStages("conv1", "cuda:0", stages);
  stages.staging = 1.0;
  metrics->ExecutorStages("conv2", "cuda:0", stages);
  const std::string text = metrics->Scrape();
  const auto series = [](const char* stage, const std::string& suffix) {
    return "convserve_executor_stage_seconds" + suffix +
           R"({device="cuda:0",layer="conv1",stage=")" + stage + "\"";
  };
  for (const char* stage : kExecutorStageNames) {
    EXPECT_EQ(Sample(text, series(stage, "_count") + "}"), 2) << stage;
  }
  EXPECT_NEAR(*Sample(text, series("staging", "_sum") + "}"), 32e-6, 1e-12);
  EXPECT_NEAR(*Sample(text, series("answer", "_sum") + "}"), 300e-6, 1e-12);
  // The buckets start at 1 us, so a 2 us stage is told from a 30 us one.
  EXPECT_EQ(Sample(text, series("staging", "_bucket") + R"(,le="2.5e-06"})"), 1);
  EXPECT_EQ(Sample(text, series("staging", "_bucket") + R"(,le="5e-05"})"), 2);
  // Each layer its own series; a layer with batches but no stages yet has none.
  EXPECT_EQ(
      Sample(
          text,
          R"(convserve_executor_stage_seconds_count{device="cuda:0",layer="conv2",stage="staging"})"),
      1);
  metrics->BatchExecuted("conv3", "cpu", "cfg", 1, 1e-3, 1e-4);
  EXPECT_FALSE(HasLineStartingWith(metrics->Scrape(),
                                   R"(convserve_executor_stage_seconds_count{device="cpu")"));
}

TEST(MetricsTest, RejectionsExpirationsCancellationsAndQueueDepth) {
  auto metrics = NewMetrics();
  metrics->Rejected("conv1", RejectReason::kQueueFull);
  metrics->Rejected("conv1", RejectReason::kQueueFull);
  metrics->Rejected("conv1", RejectReason::kTooLarge);
  metrics->Expired("conv1");
  metrics->Cancelled("conv1");
  metrics->Cancelled("conv1");
  metrics->SetQueueDepth("conv1", 7);
  const std::string text = metrics->Scrape();
  EXPECT_EQ(Sample(text, R"(convserve_rejected_requests_total{layer="conv1",reason="queue_full"})"),
            2);
  EXPECT_EQ(Sample(text, R"(convserve_rejected_requests_total{layer="conv1",reason="too_large"})"),
            1);
  EXPECT_EQ(Sample(text, R"(convserve_expired_requests_total{layer="conv1"})"), 1);
  EXPECT_EQ(Sample(text, R"(convserve_cancelled_requests_total{layer="conv1"})"), 2);
  EXPECT_EQ(Sample(text, R"(convserve_queue_depth{layer="conv1"})"), 7);
  metrics->SetQueueDepth("conv1", 0);
  EXPECT_EQ(Sample(metrics->Scrape(), R"(convserve_queue_depth{layer="conv1"})"), 0);
}

TEST(MetricsTest, EveryRejectReasonHasADistinctName) {
  std::vector<std::string> names;
  for (int r = 0; r <= static_cast<int>(RejectReason::kDeviceError); ++r) {
    names.push_back(RejectReasonName(static_cast<RejectReason>(r)));
    EXPECT_TRUE(std::regex_match(names.back(), std::regex("[a-z_]+"))) << names.back();
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::unique(names.begin(), names.end()), names.end());
}

TEST(MetricsTest, UnknownLayersNeverBecomeLabelValues) {
  auto metrics = NewMetrics();
  metrics->RequestFinished("no-such-layer", Api::kNative, absl::StatusCode::kNotFound, 0, 0);
  metrics->Rejected("no-such-layer", RejectReason::kNotFound);
  const std::string text = metrics->Scrape();
  EXPECT_EQ(text.find("no-such-layer"), std::string::npos);
  EXPECT_EQ(Sample(text, R"(convserve_requests_total{api="native",layer="_unknown",)"
                         R"(status="NOT_FOUND"})"),
            1);
  EXPECT_EQ(
      Sample(text, R"(convserve_rejected_requests_total{layer="_unknown",reason="not_found"})"), 1);
}

TEST(MetricsTest, LayerLabelValuesAreBounded) {
  auto metrics = NewMetrics();
  for (int i = 0; i < 1000; ++i) {
    metrics->Rejected("invented-" + std::to_string(i), RejectReason::kInvalid);
  }
  const std::string text = metrics->Scrape();
  int series = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) series += line.rfind("convserve_rejected_requests_total{", 0) == 0;
  EXPECT_LE(series, 257);
  // Every rejection is still counted: the overflow label holds the rest.
  EXPECT_EQ(Sample(text, R"(convserve_rejected_requests_total{layer="_other",reason="invalid"})"),
            1000 - (series - 1));
}

TEST(MetricsTest, DeviceMemoryResidentBytesAndTheirRemoval) {
  auto metrics = NewMetrics();
  metrics->SetDeviceMemory("cuda:0", 1 << 30, int64_t{80} << 30);
  metrics->SetLayerResidentBytes("conv1", "cuda:0", 4096);
  std::string text = metrics->Scrape();
  EXPECT_EQ(Sample(text, R"(convserve_device_memory_used_bytes{device="cuda:0"})"), 1 << 30);
  EXPECT_EQ(Sample(text, R"(convserve_device_memory_total_bytes{device="cuda:0"})"),
            double(int64_t{80} << 30));
  EXPECT_EQ(Sample(text, R"(convserve_layer_resident_weight_bytes{device="cuda:0",layer="conv1"})"),
            4096);
  metrics->SetLayerResidentBytes("conv1", "cuda:0", -1);
  text = metrics->Scrape();
  EXPECT_FALSE(
      Sample(text, R"(convserve_layer_resident_weight_bytes{device="cuda:0",layer="conv1"})"));
}

TEST(MetricsTest, TunerCountersFollowTheEnginesRunningTotals) {
  auto metrics = NewMetrics();
  metrics->SetTunerCounters("cuda:0", 3, 10, 2, 1.5);
  metrics->SetTunerCounters("cuda:0", 5, 12, 2, 2.25);
  const std::string text = metrics->Scrape();
  EXPECT_EQ(Sample(text, R"(convserve_tuner_runs_total{device="cuda:0"})"), 5);
  EXPECT_EQ(Sample(text, R"(convserve_tuner_cache_hits_total{device="cuda:0"})"), 12);
  EXPECT_EQ(Sample(text, R"(convserve_tuner_cache_misses_total{device="cuda:0"})"), 2);
  EXPECT_EQ(Sample(text, R"(convserve_tuner_seconds_total{device="cuda:0"})"), 2.25);
}

TEST(MetricsTest, OccupancyRatiosAndSamplerState) {
  auto metrics = NewMetrics();
  metrics->SetOccupancy("cuda:0", "b64x64x32_w32x32_s3", 0.5, -1);
  std::string text = metrics->Scrape();
  const std::string labels = R"({device="cuda:0",kernel_config="b64x64x32_w32x32_s3"})";
  EXPECT_EQ(Sample(text, "convserve_kernel_theoretical_occupancy_ratio" + labels), 0.5);
  EXPECT_FALSE(Sample(text, "convserve_kernel_achieved_occupancy_ratio" + labels));
  metrics->SetOccupancy("cuda:0", "b64x64x32_w32x32_s3", 0.5, 0.42);
  metrics->SetOccupancySamplerEnabled("cuda:0", false);
  text = metrics->Scrape();
  EXPECT_EQ(Sample(text, "convserve_kernel_achieved_occupancy_ratio" + labels), 0.42);
  EXPECT_EQ(Sample(text, R"(convserve_occupancy_sampler_enabled{device="cuda:0"})"), 0);
}

TEST(MetricsTest, EveryFamilyIsNamedByTheConventions) {
  auto metrics = NewMetrics();
  metrics->RequestFinished("l", Api::kNative, absl::StatusCode::kOk, 1e-3, 1e-4);
  metrics->Rejected("l", RejectReason::kQueueFull);
  metrics->Expired("l");
  metrics->Cancelled("l");
  metrics->SetQueueDepth("l", 1);
  metrics->BatchExecuted("l", "cuda:0", "cfg", 1, 1e-3, 1e-4);
  metrics->ExecutorStages("l", "cuda:0", ExecutorStageSeconds{});
  metrics->SetLayerResidentBytes("l", "cuda:0", 1);
  metrics->SetDeviceMemory("cuda:0", 1, 2);
  metrics->SetTunerCounters("cuda:0", 1, 1, 1, 1);
  metrics->SetOccupancy("cuda:0", "cfg", 0.5, 0.4);
  metrics->SetOccupancySamplerEnabled("cuda:0", true);
  metrics->SetDeviceHealthy("cuda:0", true);
  std::istringstream in(metrics->Scrape());
  std::string line;
  std::vector<std::string> families;
  const std::regex type_line("# TYPE (\\S+) (counter|gauge|histogram)");
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_match(line, m, type_line)) continue;
    const std::string name = m[1];
    families.push_back(name);
    const bool is_total = name.size() > 6 && name.substr(name.size() - 6) == "_total";
    EXPECT_EQ(m[2] == "counter", is_total) << name << " is a " << m[2];
  }
  std::sort(families.begin(), families.end());
  // The dashboards and docs/operations.md name these; renaming one is a breaking change.
  const std::vector<std::string> expected = {
      "convserve_batch_compute_seconds",
      "convserve_batch_kernel_seconds",
      "convserve_batch_size",
      "convserve_build_info",
      "convserve_cancelled_requests_total",
      "convserve_device_healthy",
      "convserve_device_memory_total_bytes",
      "convserve_device_memory_used_bytes",
      "convserve_executor_stage_seconds",
      "convserve_expired_requests_total",
      "convserve_kernel_achieved_occupancy_ratio",
      "convserve_kernel_theoretical_occupancy_ratio",
      "convserve_layer_resident_weight_bytes",
      "convserve_occupancy_sampler_enabled",
      "convserve_queue_depth",
      "convserve_rejected_requests_total",
      "convserve_request_duration_seconds",
      "convserve_request_queue_seconds",
      "convserve_requests_total",
      "convserve_tuner_cache_hits_total",
      "convserve_tuner_cache_misses_total",
      "convserve_tuner_runs_total",
      "convserve_tuner_seconds_total",
  };
  EXPECT_EQ(families, expected);
}

TEST(MetricsTest, ConcurrentObserversLoseNothing) {
  auto metrics = NewMetrics();
  constexpr int kThreads = 8, kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&metrics, t] {
      const std::string layer = "layer" + std::to_string(t % 3);
      for (int i = 0; i < kPerThread; ++i) {
        metrics->RequestFinished(layer, Api::kNative, absl::StatusCode::kOk, 1e-3, 1e-4);
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = metrics->Scrape();
  double total = 0;
  for (int l = 0; l < 3; ++l) {
    total += *Sample(
        text, "convserve_request_duration_seconds_count{layer=\"layer" + std::to_string(l) + "\"}");
  }
  EXPECT_EQ(total, kThreads * kPerThread);
}

TEST(MetricsTest, ServesTheSameTextOverHttp) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  const int port = (*metrics)->listening_port();
  ASSERT_GT(port, 0);
  (*metrics)->RequestFinished("conv1", Api::kNative, absl::StatusCode::kOk, 0.002, 0.0005);
  absl::StatusOr<HttpResponse> response = HttpGet(port, "/metrics");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(
      Sample(response->body, R"(convserve_requests_total{api="native",layer="conv1",status="OK"})"),
      1);
}

TEST(MetricsTest, BusyPortIsUnavailable) {
  absl::StatusOr<std::unique_ptr<Metrics>> first = Metrics::Create("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = "127.0.0.1:" + std::to_string((*first)->listening_port());
  absl::StatusOr<std::unique_ptr<Metrics>> second = Metrics::Create(taken);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

}  // namespace
}  // namespace convserve
