// Cost of the metrics hot path: Metrics::RequestFinished (one counter and two histograms) from 1
// and 8 threads on one layer, against the same observations through prometheus-cpp's own
// Family::Add lookup + Histogram::Observe (a mutex per lookup and per observation).
//   bench/metrics/metrics_bench --benchmark_min_time=0.5
#include <memory>
#include <string>

#include "benchmark/benchmark.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/metrics/metrics.h"

namespace convserve {
namespace {

Metrics& SharedMetrics() {
  static Metrics* metrics = Metrics::Create("")->release();
  return *metrics;
}

void BM_RequestFinished(benchmark::State& state) {
  Metrics& metrics = SharedMetrics();
  const std::string layer = "resnet50.layer3.0.conv2";
  double seconds = 1e-4 * (state.thread_index() + 1);
  for (auto _ : state) {
    metrics.RequestFinished(layer, Api::kNative, absl::StatusCode::kOk, seconds, seconds / 4);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RequestFinished)->Threads(1)->Threads(8)->UseRealTime();

void BM_BatchExecuted(benchmark::State& state) {
  Metrics& metrics = SharedMetrics();
  const std::string layer = "resnet50.layer3.0.conv2";
  for (auto _ : state) {
    metrics.BatchExecuted(layer, "cuda:0", "b128x128x32_w64x64_s3", 8, 2e-3, 1e-3);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_BatchExecuted)->Threads(1)->Threads(8)->UseRealTime();

// The straightforward prometheus-cpp way, for comparison.
struct PlainPrometheus {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Counter>& requests =
      prometheus::BuildCounter().Name("requests_total").Register(registry);
  prometheus::Family<prometheus::Histogram>& total =
      prometheus::BuildHistogram().Name("total_seconds").Register(registry);
  prometheus::Family<prometheus::Histogram>& queue =
      prometheus::BuildHistogram().Name("queue_seconds").Register(registry);
  const prometheus::Histogram::BucketBoundaries bounds = {
      1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
      2.5e-2, 5e-2,   0.1,  0.25, 0.5,    1.0,  2.5,  5.0,    10.0};
};

void BM_PlainPrometheusCpp(benchmark::State& state) {
  static PlainPrometheus* plain = new PlainPrometheus;
  const std::string layer = "resnet50.layer3.0.conv2";
  double seconds = 1e-4 * (state.thread_index() + 1);
  for (auto _ : state) {
    plain->requests.Add({{"layer", layer}, {"api", "native"}, {"status", "OK"}}).Increment();
    plain->total.Add({{"layer", layer}}, plain->bounds).Observe(seconds);
    plain->queue.Add({{"layer", layer}}, plain->bounds).Observe(seconds / 4);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PlainPrometheusCpp)->Threads(1)->Threads(8)->UseRealTime();

}  // namespace
}  // namespace convserve

BENCHMARK_MAIN();
