// The Prometheus implementation of Metrics: every family convserve exports is named here.
//
// Per-request and per-batch series (requests, latency and batch histograms, queue depth,
// rejections) live in lock-free striped cells behind per-layer handles found through a
// read-mostly map, and are turned into metric families only when scraped. Everything that
// changes at most a few times a second (memory, tuner, occupancy) uses prometheus-cpp's own
// registry.
#include "server/metrics/metrics.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <iterator>
#include <mutex>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/metric_family.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/metrics/read_mostly_map.h"
#include "server/metrics/striped.h"

#ifndef CONVSERVE_VERSION
#define CONVSERVE_VERSION "unknown"
#endif

namespace convserve {

const char* RejectReasonName(RejectReason reason) {
  switch (reason) {
    case RejectReason::kQueueFull:
      return "queue_full";
    case RejectReason::kTooLarge:
      return "too_large";
    case RejectReason::kInvalid:
      return "invalid";
    case RejectReason::kNotFound:
      return "not_found";
    case RejectReason::kUnauthenticated:
      return "unauthenticated";
    case RejectReason::kShuttingDown:
      return "shutting_down";
    case RejectReason::kDeviceError:
      return "device_error";
  }
  return "unknown";
}

namespace {

using metrics_internal::BucketBounds;
using metrics_internal::ReadMostlyMap;
using metrics_internal::StripedCounters;
using metrics_internal::StripedHistogram;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr int kApis = 2;
constexpr int kStatusCodes = 17;  // absl::StatusCode 0 (OK) .. 16 (UNAUTHENTICATED)
constexpr int kRejectReasons = static_cast<int>(RejectReason::kDeviceError) + 1;
constexpr int kExpiredCell = kRejectReasons;
constexpr int kCancelledCell = kRejectReasons + 1;

// Layer names come from clients; past this many distinct values they share one label value so
// that a client inventing names cannot grow the series without bound.
constexpr size_t kMaxLayerLabels = 256;
constexpr char kOverflowLayer[] = "_other";
// Requests for layers the server does not know (NOT_FOUND) never get their own series.
constexpr char kUnknownLayer[] = "_unknown";

// 10 us .. 10 s in 1-2.5-5 steps: microsecond kernels to multi-second overloaded queues.
const BucketBounds& SecondsBounds() {
  static const BucketBounds* bounds =
      new BucketBounds{1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2,
                       2.5e-2, 5e-2,   0.1,  0.25, 0.5,    1.0,  2.5,  5.0,    10.0};
  return *bounds;
}
// 1 us .. 1 s: an executor's host stages take microseconds (issuing a copy) to milliseconds.
const BucketBounds& StageBounds() {
  static const BucketBounds* bounds =
      new BucketBounds{1e-6,   2.5e-6, 5e-6, 1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
                       2.5e-3, 5e-3,   1e-2, 2.5e-2, 5e-2,   0.1,  0.25, 0.5,    1.0};
  return *bounds;
}
const BucketBounds& BatchSizeBounds() {
  static const BucketBounds* bounds = new BucketBounds{1, 2, 4, 8, 16, 32, 64, 128, 256};
  return *bounds;
}

int StatusIndex(absl::StatusCode code) {
  const int index = static_cast<int>(code);
  return index >= 0 && index < kStatusCodes ? index : static_cast<int>(absl::StatusCode::kUnknown);
}
int ApiIndex(Api api) { return api == Api::kNative ? 0 : 1; }

// One (device, kernel configuration) that ran batches of a layer.
struct ConfigHandle {
  StripedHistogram batch_size{&BatchSizeBounds()};
  StripedHistogram compute_seconds{&SecondsBounds()};
  StripedHistogram kernel_seconds{&SecondsBounds()};
};
// An executor's host stages (ExecutorStageSeconds) for one layer's batches on one device: per
// layer, because staging, copies and replies scale with the layer's tensors and with where
// they live (in band, shared memory, GPU memory).
constexpr int kExecutorStages = std::size(kExecutorStageNames);
struct StageHandle {
  StripedHistogram seconds[kExecutorStages] = {
      StripedHistogram{&StageBounds()}, StripedHistogram{&StageBounds()},
      StripedHistogram{&StageBounds()}, StripedHistogram{&StageBounds()},
      StripedHistogram{&StageBounds()}};
  std::atomic<bool> observed{false};  // no series before the first batch
};
struct DeviceHandle {
  ReadMostlyMap<ConfigHandle> configs;
  StageHandle stages;
};

// Everything the hot path updates for one layer; found once per call through the layer map.
struct LayerHandle {
  StripedCounters requests{kApis * kStatusCodes};
  StripedCounters ended{kRejectReasons + 2};  // rejections by reason, expired, cancelled
  StripedHistogram total_seconds{&SecondsBounds()};
  StripedHistogram queue_seconds{&SecondsBounds()};
  std::atomic<int64_t> queue_depth{-1};  // -1: never set, no series
  ReadMostlyMap<DeviceHandle> devices;
};

MetricFamily Family(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

// Labels in name order, as prometheus-cpp's own families print them.
ClientMetric Labelled(std::vector<ClientMetric::Label> labels) {
  ClientMetric metric;
  std::sort(labels.begin(), labels.end());
  metric.label = std::move(labels);
  return metric;
}

// The striped per-layer series, exposed as a prometheus-cpp Collectable.
class HotSeries : public prometheus::Collectable {
 public:
  LayerHandle& Layer(std::string_view layer) {
    if (LayerHandle* handle = layers_.Find(layer)) return *handle;
    if (layers_.size() >= kMaxLayerLabels) layer = kOverflowLayer;
    return layers_.FindOrCreate(layer, [] { return std::make_unique<LayerHandle>(); });
  }
  // For outcomes that say the layer does not exist: its name is not a label value.
  LayerHandle& KnownLayerOrUnknown(std::string_view layer) {
    if (LayerHandle* handle = layers_.Find(layer)) return *handle;
    return Layer(kUnknownLayer);
  }
  static DeviceHandle& Device(LayerHandle& layer, std::string_view device) {
    return layer.devices.FindOrCreate(device, [] { return std::make_unique<DeviceHandle>(); });
  }
  static ConfigHandle& Config(LayerHandle& layer, std::string_view device,
                              std::string_view config) {
    return Device(layer, device).configs.FindOrCreate(config, [] {
      return std::make_unique<ConfigHandle>();
    });
  }

  std::vector<MetricFamily> Collect() const override;

 private:
  ReadMostlyMap<LayerHandle> layers_;
};

std::vector<MetricFamily> HotSeries::Collect() const {
  MetricFamily requests =
      Family("convserve_requests_total", "Requests that ended, by layer, wire API and gRPC status.",
             MetricType::Counter);
  MetricFamily total =
      Family("convserve_request_duration_seconds",
             "Successful requests: accepted to result ready, in seconds.", MetricType::Histogram);
  MetricFamily queue = Family("convserve_request_queue_seconds",
                              "Successful requests: accepted to their batch's launch, in seconds.",
                              MetricType::Histogram);
  MetricFamily depth = Family("convserve_queue_depth",
                              "Requests waiting in the layer's batcher queue.", MetricType::Gauge);
  MetricFamily rejected =
      Family("convserve_rejected_requests_total",
             "Requests turned away before execution, by reason.", MetricType::Counter);
  MetricFamily expired =
      Family("convserve_expired_requests_total",
             "Requests whose deadline passed before their batch launched.", MetricType::Counter);
  MetricFamily cancelled =
      Family("convserve_cancelled_requests_total",
             "Requests whose client went away before their batch launched.", MetricType::Counter);
  MetricFamily batch_size = Family("convserve_batch_size", "Batch size (N) of each merged launch.",
                                   MetricType::Histogram);
  MetricFamily compute =
      Family("convserve_batch_compute_seconds",
             "Merged launches: host-device copies plus kernel, in seconds.", MetricType::Histogram);
  MetricFamily kernel =
      Family("convserve_batch_kernel_seconds", "Merged launches: kernel time alone, in seconds.",
             MetricType::Histogram);
  MetricFamily stages =
      Family("convserve_executor_stage_seconds",
             "Merged launches, stage by stage on the executor's host thread, in seconds: staging "
             "(lane, plan, buffers, input merge), enqueue (issuing copies and kernel), wait "
             "(until the batch is seen done), split (results copied out), answer (the "
             "executor thread's own replies).",
             MetricType::Histogram);

  std::vector<std::pair<std::string, const LayerHandle*>> layers;
  layers_.ForEach([&](const std::string& name, const LayerHandle& handle) {
    layers.emplace_back(name, &handle);
  });
  std::sort(layers.begin(), layers.end());
  for (const auto& [name, layer] : layers) {
    for (int api = 0; api < kApis; ++api) {
      for (int code = 0; code < kStatusCodes; ++code) {
        const uint64_t value = layer->requests.Value(api * kStatusCodes + code);
        if (value == 0) continue;
        ClientMetric metric =
            Labelled({{"layer", name},
                      {"api", ApiName(api == 0 ? Api::kNative : Api::kKserve)},
                      {"status", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}});
        metric.counter.value = static_cast<double>(value);
        requests.metric.push_back(std::move(metric));
      }
    }
    ClientMetric t = Labelled({{"layer", name}});
    t.histogram = layer->total_seconds.Snapshot();
    total.metric.push_back(std::move(t));
    ClientMetric q = Labelled({{"layer", name}});
    q.histogram = layer->queue_seconds.Snapshot();
    queue.metric.push_back(std::move(q));
    if (const int64_t d = layer->queue_depth.load(std::memory_order_relaxed); d >= 0) {
      ClientMetric metric = Labelled({{"layer", name}});
      metric.gauge.value = static_cast<double>(d);
      depth.metric.push_back(std::move(metric));
    }
    for (int reason = 0; reason < kRejectReasons; ++reason) {
      const uint64_t value = layer->ended.Value(reason);
      if (value == 0) continue;
      ClientMetric metric = Labelled(
          {{"layer", name}, {"reason", RejectReasonName(static_cast<RejectReason>(reason))}});
      metric.counter.value = static_cast<double>(value);
      rejected.metric.push_back(std::move(metric));
    }
    ClientMetric e = Labelled({{"layer", name}});
    e.counter.value = static_cast<double>(layer->ended.Value(kExpiredCell));
    expired.metric.push_back(std::move(e));
    ClientMetric c = Labelled({{"layer", name}});
    c.counter.value = static_cast<double>(layer->ended.Value(kCancelledCell));
    cancelled.metric.push_back(std::move(c));

    // C++17 lambdas cannot capture a structured binding (clang rejects it): name a reference.
    const std::string& layer_name = name;
    layer->devices.ForEach([&](const std::string& device, const DeviceHandle& d) {
      d.configs.ForEach([&](const std::string& config, const ConfigHandle& handle) {
        const std::vector<ClientMetric::Label> labels = {
            {"layer", layer_name}, {"device", device}, {"kernel_config", config}};
        ClientMetric b = Labelled(labels);
        b.histogram = handle.batch_size.Snapshot();
        batch_size.metric.push_back(std::move(b));
        ClientMetric cs = Labelled(labels);
        cs.histogram = handle.compute_seconds.Snapshot();
        compute.metric.push_back(std::move(cs));
        ClientMetric ks = Labelled(labels);
        ks.histogram = handle.kernel_seconds.Snapshot();
        kernel.metric.push_back(std::move(ks));
      });
      if (!d.stages.observed.load(std::memory_order_relaxed)) return;
      for (int stage = 0; stage < kExecutorStages; ++stage) {
        ClientMetric metric = Labelled(
            {{"layer", layer_name}, {"device", device}, {"stage", kExecutorStageNames[stage]}});
        metric.histogram = d.stages.seconds[stage].Snapshot();
        stages.metric.push_back(std::move(metric));
      }
    });
  }
  std::vector<MetricFamily> families;
  for (MetricFamily* f : {&requests, &total, &queue, &depth, &rejected, &expired, &cancelled,
                          &batch_size, &compute, &kernel, &stages}) {
    families.push_back(std::move(*f));
  }
  return families;
}

class PrometheusMetrics final : public Metrics {
 public:
  PrometheusMetrics()
      : registry_(std::make_shared<prometheus::Registry>()),
        hot_(std::make_shared<HotSeries>()),
        build_info_(prometheus::BuildGauge()
                        .Name("convserve_build_info")
                        .Help("Always 1; the labels say which build is running.")
                        .Register(*registry_)),
        memory_used_(prometheus::BuildGauge()
                         .Name("convserve_device_memory_used_bytes")
                         .Help("Device memory in use on the GPU (all processes), in bytes.")
                         .Register(*registry_)),
        memory_total_(prometheus::BuildGauge()
                          .Name("convserve_device_memory_total_bytes")
                          .Help("Device memory of the GPU, in bytes.")
                          .Register(*registry_)),
        resident_(prometheus::BuildGauge()
                      .Name("convserve_layer_resident_weight_bytes")
                      .Help("Packed weights and bias of a loaded layer on a device, in bytes.")
                      .Register(*registry_)),
        tuner_runs_(prometheus::BuildCounter()
                        .Name("convserve_tuner_runs_total")
                        .Help("Problem keys the auto-tuner measured.")
                        .Register(*registry_)),
        tuner_hits_(prometheus::BuildCounter()
                        .Name("convserve_tuner_cache_hits_total")
                        .Help("Launch plans that found a tuned entry for their shape.")
                        .Register(*registry_)),
        tuner_misses_(prometheus::BuildCounter()
                          .Name("convserve_tuner_cache_misses_total")
                          .Help("Launch plans that fell back to a nearby bucket or heuristic.")
                          .Register(*registry_)),
        tuner_seconds_(prometheus::BuildCounter()
                           .Name("convserve_tuner_seconds_total")
                           .Help("Wall time spent auto-tuning, in seconds.")
                           .Register(*registry_)),
        theoretical_(prometheus::BuildGauge()
                         .Name("convserve_kernel_theoretical_occupancy_ratio")
                         .Help("Theoretical occupancy of a kernel configuration (active warps "
                               "per SM over the maximum, from its resource usage), 0..1.")
                         .Register(*registry_)),
        achieved_(prometheus::BuildGauge()
                      .Name("convserve_kernel_achieved_occupancy_ratio")
                      .Help("Achieved occupancy of a kernel configuration as last sampled with "
                            "CUPTI (sm__warps_active.avg.pct_of_peak_sustained_active / 100).")
                      .Register(*registry_)),
        sampler_enabled_(prometheus::BuildGauge()
                             .Name("convserve_occupancy_sampler_enabled")
                             .Help("1 while the CUPTI occupancy sampler runs on the device, 0 "
                                   "once it turned itself off (see the server log for why).")
                             .Register(*registry_)),
        device_healthy_(prometheus::BuildGauge()
                            .Name("convserve_device_healthy")
                            .Help("1 while the device's executor is healthy, 0 once it broke "
                                  "and gets no more batches (see the server log for why).")
                            .Register(*registry_)),
        shared_memory_regions_(prometheus::BuildGauge()
                                   .Name("convserve_shared_memory_regions")
                                   .Help("Shared-memory regions clients have registered.")
                                   .Register(*registry_)),
        shared_memory_bytes_(prometheus::BuildGauge()
                                 .Name("convserve_shared_memory_bytes")
                                 .Help("Bytes of the registered shared-memory regions: all of "
                                       "them (registered), host regions page-locked for the "
                                       "GPU's copies (page_locked; locked host memory, never "
                                       "swapped), and GPU memory shared through CUDA IPC (gpu).")
                                 .Register(*registry_)) {
    build_info_.Add({{"version", CONVSERVE_VERSION}}).Set(1);
  }

  absl::Status Serve(const std::string& listen) {
    // civetweb wants "host:port" or "port"; accept ":port" as every interface.
    std::string address = listen;
    if (!address.empty() && address.front() == ':') address = "0.0.0.0" + address;
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/2);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve metrics on '", listen, "': ", e.what()));
    }
    exposer_->RegisterCollectable(registry_);
    exposer_->RegisterCollectable(hot_);
    return absl::OkStatus();
  }

  int listening_port() const override {
    if (exposer_ == nullptr) return -1;
    const std::vector<int> ports = exposer_->GetListeningPorts();
    return ports.empty() ? -1 : ports.front();
  }

  void RequestFinished(std::string_view layer, Api api, absl::StatusCode code, double total_seconds,
                       double queue_seconds) override {
    LayerHandle& handle =
        code == absl::StatusCode::kNotFound ? hot_->KnownLayerOrUnknown(layer) : hot_->Layer(layer);
    handle.requests.Add(ApiIndex(api) * kStatusCodes + StatusIndex(code));
    if (code == absl::StatusCode::kOk) {
      handle.total_seconds.Observe(total_seconds);
      handle.queue_seconds.Observe(queue_seconds);
    }
  }

  void Rejected(std::string_view layer, RejectReason reason) override {
    LayerHandle& handle =
        reason == RejectReason::kNotFound ? hot_->KnownLayerOrUnknown(layer) : hot_->Layer(layer);
    const int cell = static_cast<int>(reason);
    if (cell >= 0 && cell < kRejectReasons) handle.ended.Add(cell);
  }
  void Expired(std::string_view layer) override { hot_->Layer(layer).ended.Add(kExpiredCell); }
  void Cancelled(std::string_view layer) override { hot_->Layer(layer).ended.Add(kCancelledCell); }

  void BatchExecuted(std::string_view layer, std::string_view device,
                     std::string_view kernel_config, int batch_size, double compute_seconds,
                     double kernel_seconds) override {
    ConfigHandle& handle = HotSeries::Config(hot_->Layer(layer), device, kernel_config);
    handle.batch_size.Observe(batch_size);
    handle.compute_seconds.Observe(compute_seconds);
    handle.kernel_seconds.Observe(kernel_seconds);
  }

  void ExecutorStages(std::string_view layer, std::string_view device,
                      const ExecutorStageSeconds& stages) override {
    StageHandle& handle = HotSeries::Device(hot_->Layer(layer), device).stages;
    const double values[kExecutorStages] = {stages.staging, stages.enqueue, stages.wait,
                                            stages.split, stages.answer};
    for (int stage = 0; stage < kExecutorStages; ++stage)
      handle.seconds[stage].Observe(values[stage]);
    handle.observed.store(true, std::memory_order_relaxed);
  }

  void SetQueueDepth(std::string_view layer, int64_t requests) override {
    hot_->Layer(layer).queue_depth.store(std::max<int64_t>(requests, 0), std::memory_order_relaxed);
  }

  void SetLayerResidentBytes(std::string_view layer, std::string_view device,
                             int64_t bytes) override {
    std::lock_guard<std::mutex> lock(cold_mutex_);
    prometheus::Gauge& gauge =
        resident_.Add({{"layer", std::string(layer)}, {"device", std::string(device)}});
    if (bytes < 0) {
      resident_.Remove(&gauge);
    } else {
      gauge.Set(static_cast<double>(bytes));
    }
  }

  void SetDeviceMemory(std::string_view device, int64_t used_bytes, int64_t total_bytes) override {
    const prometheus::Labels labels = {{"device", std::string(device)}};
    memory_used_.Add(labels).Set(static_cast<double>(used_bytes));
    memory_total_.Add(labels).Set(static_cast<double>(total_bytes));
  }

  void SetTunerCounters(std::string_view device, int64_t runs, int64_t cache_hits,
                        int64_t cache_misses, double seconds) override {
    const prometheus::Labels labels = {{"device", std::string(device)}};
    // The engine reports running totals; counters only move forward, by the difference.
    std::lock_guard<std::mutex> lock(cold_mutex_);
    AdvanceTo(tuner_runs_.Add(labels), static_cast<double>(runs));
    AdvanceTo(tuner_hits_.Add(labels), static_cast<double>(cache_hits));
    AdvanceTo(tuner_misses_.Add(labels), static_cast<double>(cache_misses));
    AdvanceTo(tuner_seconds_.Add(labels), seconds);
  }

  void SetOccupancy(std::string_view device, std::string_view kernel_config, double theoretical,
                    double achieved) override {
    const prometheus::Labels labels = {{"device", std::string(device)},
                                       {"kernel_config", std::string(kernel_config)}};
    theoretical_.Add(labels).Set(theoretical);
    if (achieved >= 0) achieved_.Add(labels).Set(achieved);
  }

  void SetOccupancySamplerEnabled(std::string_view device, bool enabled) override {
    sampler_enabled_.Add({{"device", std::string(device)}}).Set(enabled ? 1 : 0);
  }

  void SetDeviceHealthy(std::string_view device, bool healthy) override {
    device_healthy_.Add({{"device", std::string(device)}}).Set(healthy ? 1 : 0);
  }

  void SetSharedMemory(int64_t regions, int64_t registered_bytes, int64_t page_locked_bytes,
                       int64_t gpu_bytes) override {
    shared_memory_regions_.Add({}).Set(static_cast<double>(regions));
    shared_memory_bytes_.Add({{"state", "registered"}}).Set(static_cast<double>(registered_bytes));
    shared_memory_bytes_.Add({{"state", "page_locked"}})
        .Set(static_cast<double>(page_locked_bytes));
    shared_memory_bytes_.Add({{"state", "gpu"}}).Set(static_cast<double>(gpu_bytes));
  }

  std::string Scrape() const override {
    std::vector<MetricFamily> families = registry_->Collect();
    std::vector<MetricFamily> hot = hot_->Collect();
    families.insert(families.end(), std::make_move_iterator(hot.begin()),
                    std::make_move_iterator(hot.end()));
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, families);
    return out.str();
  }

 private:
  static void AdvanceTo(prometheus::Counter& counter, double total) {
    const double delta = total - counter.Value();
    if (delta > 0) counter.Increment(delta);
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<HotSeries> hot_;
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Gauge>& memory_used_;
  prometheus::Family<prometheus::Gauge>& memory_total_;
  prometheus::Family<prometheus::Gauge>& resident_;
  prometheus::Family<prometheus::Counter>& tuner_runs_;
  prometheus::Family<prometheus::Counter>& tuner_hits_;
  prometheus::Family<prometheus::Counter>& tuner_misses_;
  prometheus::Family<prometheus::Counter>& tuner_seconds_;
  prometheus::Family<prometheus::Gauge>& theoretical_;
  prometheus::Family<prometheus::Gauge>& achieved_;
  prometheus::Family<prometheus::Gauge>& sampler_enabled_;
  prometheus::Family<prometheus::Gauge>& device_healthy_;
  prometheus::Family<prometheus::Gauge>& shared_memory_regions_;
  prometheus::Family<prometheus::Gauge>& shared_memory_bytes_;
  std::mutex cold_mutex_;  // read-modify-write updates of the registry's series
  // Last, so it stops serving before the collectables it reads go away.
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Create(const std::string& listen) {
  auto metrics = std::make_unique<PrometheusMetrics>();
  if (!listen.empty()) {
    if (absl::Status status = metrics->Serve(listen); !status.ok()) return status;
  }
  return metrics;
}

}  // namespace convserve
