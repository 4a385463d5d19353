// Every Prometheus metric convserve exports, registered once here and served at
// --metrics_listen /metrics. The serving path calls these observation methods; each one is
// cheap (no allocation, no lock shared across layers on the hot path) and thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/inference.h"

namespace convserve {

// Why a request was turned away or ended without a result; a bounded label set.
enum class RejectReason : uint8_t {
  kQueueFull,        // per-layer queue over its request or byte bound
  kTooLarge,         // over a size limit
  kInvalid,          // failed validation
  kNotFound,         // unknown layer
  kUnauthenticated,  // missing or wrong token
  kShuttingDown,
  kDeviceError,
};
const char* RejectReasonName(RejectReason reason);

// Where an executor's time went for one batch, in seconds, stage by stage (BatchRun in
// server/batch.h says where each starts and ends). A stage an executor does not have is 0.
struct ExecutorStageSeconds {
  double staging = 0;  // lane, launch plan, buffers, input merged into (pinned) staging
  double enqueue = 0;  // issuing the copies and the kernel
  double wait = 0;     // until the host saw the batch done: device time plus wake-up
  double split = 0;    // results copied out of staging, one per request
  double answer = 0;   // the executor thread answering its part (serialising, writing)
};
inline constexpr const char* kExecutorStageNames[] = {"staging", "enqueue", "wait", "split",
                                                      "answer"};

class Metrics {
 public:
  // Serves /metrics on `listen` ("host:port"); an empty string registers the metrics without
  // serving them (tests, tools). UNAVAILABLE when the port cannot be bound.
  static absl::StatusOr<std::unique_ptr<Metrics>> Create(const std::string& listen);
  virtual ~Metrics() = default;

  // A request ended (any status): counts it and, when ok, observes its latencies.
  virtual void RequestFinished(std::string_view layer, Api api, absl::StatusCode code,
                               double total_seconds, double queue_seconds) = 0;
  virtual void Rejected(std::string_view layer, RejectReason reason) = 0;
  virtual void Expired(std::string_view layer) = 0;    // deadline passed before launch
  virtual void Cancelled(std::string_view layer) = 0;  // client went away before launch
  // One merged launch ran: its size, copies+kernel time and kernel-only time.
  virtual void BatchExecuted(std::string_view layer, std::string_view device,
                             std::string_view kernel_config, int batch_size, double compute_seconds,
                             double kernel_seconds) = 0;
  // The same launch, stage by stage on the host (convserve_executor_stage_seconds).
  virtual void ExecutorStages(std::string_view /*layer*/, std::string_view /*device*/,
                              const ExecutorStageSeconds& /*stages*/) {}
  virtual void SetQueueDepth(std::string_view layer, int64_t requests) = 0;
  // Resident weight bytes of a layer on a device; bytes < 0 removes the series (unload).
  virtual void SetLayerResidentBytes(std::string_view layer, std::string_view device,
                                     int64_t bytes) = 0;
  virtual void SetDeviceMemory(std::string_view device, int64_t used_bytes,
                               int64_t total_bytes) = 0;
  virtual void SetTunerCounters(std::string_view device, int64_t runs, int64_t cache_hits,
                                int64_t cache_misses, double seconds) = 0;
  // Occupancy of a kernel configuration as ratios 0..1: theoretical from the occupancy
  // calculator, achieved as sampled with CUPTI (negative when not sampled yet: the achieved
  // series then keeps its last value, or does not exist).
  virtual void SetOccupancy(std::string_view device, std::string_view kernel_config,
                            double theoretical, double achieved) = 0;
  // 1 while the CUPTI occupancy sampler runs, 0 when it turned itself off.
  virtual void SetOccupancySamplerEnabled(std::string_view device, bool enabled) = 0;
  // 1 while the executor of `device` is healthy, 0 once it broke (it then gets no batches while
  // another device is healthy). Set for every executor when the server starts, and again by the
  // server whenever one changes. Not pure, so implementations written before it still compile.
  virtual void SetDeviceHealthy(std::string_view /*device*/, bool /*healthy*/) {}
  // The registered shared-memory regions (with --allow_shared_memory): how many, their bytes,
  // how many of those bytes are page-locked for the GPU, and how many are GPU memory.
  virtual void SetSharedMemory(int64_t /*regions*/, int64_t /*registered_bytes*/,
                               int64_t /*page_locked_bytes*/, int64_t /*gpu_bytes*/) {}

  // The text exposition of everything registered (what /metrics serves).
  virtual std::string Scrape() const = 0;

  // The TCP port /metrics is served on (useful with port 0), or -1 when not serving.
  virtual int listening_port() const { return -1; }
};

}  // namespace convserve
