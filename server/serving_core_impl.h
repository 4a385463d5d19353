// The serving core: validates requests against the layer store, queues them in the layer's
// batcher and lets the executors run them; loads, replaces and unloads layers; keeps the
// health callback informed. Front-ends reach it only through the ServingCore interface.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "server/executor.h"
#include "server/layer_store.h"
#include "server/metrics/metrics.h"
#include "server/queue_depth_gauge.h"
#include "server/server_options.h"
#include "server/serving_core.h"

namespace convserve {

class ServingCoreImpl final : public ServingCore {
 public:
  // Called with (layer name, serving) when a layer's readiness changes, and with ("", serving)
  // for the server as a whole. Must not block or call back into the core.
  using HealthCallback = std::function<void(const std::string& service, bool serving)>;

  // `executors` must be non-empty (index() == position); `metrics` may be null and must outlive
  // the core.
  ServingCoreImpl(const ServerOptions& options, std::vector<std::unique_ptr<Executor>> executors,
                  Metrics* metrics);
  // Shutdown() if not done yet.
  ~ServingCoreImpl() override;

  void set_health_callback(HealthCallback callback);

  void Submit(InferenceRequest request) override;
  absl::StatusOr<convserve::v1::LayerInfo> LoadLayer(
      const convserve::v1::LoadLayerRequest& request) override;
  absl::Status UnloadLayer(const std::string& name) override;
  std::vector<LayerSnapshot> ListLayers() const override;
  std::optional<LayerSnapshot> FindLayer(const std::string& name) const override;
  absl::StatusOr<convserve::v1::TuneResponse> Tune(
      const convserve::v1::TuneRequest& request) override;
  // True while not shutting down and at least one executor is healthy: a server with several
  // GPUs keeps serving on the healthy ones when one breaks (as Triton does); the batchers send
  // the broken one nothing. Per-device health: executors()[i]->healthy().
  bool ready() const override;

  // New requests get UNAVAILABLE from now on; queued ones launch without waiting for company
  // and, like running ones, are answered.
  void BeginShutdown();
  // BeginShutdown(), then drains every batcher, waits for warm-ups and running batches.
  void Shutdown();

  const std::vector<std::unique_ptr<Executor>>& executors() const { return executors_; }
  // True when the first executor is a GPU.
  bool on_gpu() const { return executors_.front()->is_gpu(); }

 private:
  void Reject(InferenceRequest& request, RejectReason reason, absl::Status status);
  absl::Status Validate(const InferenceRequest& request, const LoadedLayer& layer) const;
  convserve::v1::LayerInfo InfoFor(const LayerEntry& entry) const;
  void StartWarmup(const std::shared_ptr<LayerEntry>& entry);
  void Retire(std::shared_ptr<LayerEntry> entry);
  void ReapRetired();
  void NotifyHealth(const std::string& service, bool serving);
  // The queue-depth gauge shared by every batcher of layer `name` (the serving generation and
  // replaced ones still draining), created when none of them is left.
  std::shared_ptr<QueueDepthGauge> DepthGaugeFor(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(load_mu_);

  const ServerOptions options_;
  // Declared before the executors, which notify it until they are destroyed.
  SlotSignal slot_signal_;
  const std::vector<std::unique_ptr<Executor>> executors_;
  std::vector<Executor*> executor_ptrs_;
  Metrics* const metrics_;
  const std::shared_ptr<ResidentBudget> budget_;
  LayerStore store_;
  std::atomic<uint64_t> next_generation_{1};
  std::atomic<bool> shutting_down_{false};

  absl::Mutex health_mu_;
  HealthCallback health_callback_ ABSL_GUARDED_BY(health_mu_);

  absl::Mutex load_mu_;  // serialises LoadLayer / UnloadLayer / Shutdown
  absl::Mutex retired_mu_;
  std::vector<std::shared_ptr<LayerEntry>> retired_ ABSL_GUARDED_BY(retired_mu_);
  bool shut_down_ ABSL_GUARDED_BY(load_mu_) = false;
  // Held by the batchers; an entry expires once the name's last batcher is gone.
  absl::flat_hash_map<std::string, std::weak_ptr<QueueDepthGauge>> depth_gauges_
      ABSL_GUARDED_BY(load_mu_);
};

}  // namespace convserve
