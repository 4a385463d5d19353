// The queue depth of one layer name, summed over every batcher that holds requests for it: the
// generation now serving the name and replaced generations still draining. Each of those
// batchers has its own queue, but the convserve_queue_depth{layer=...} series is one per name,
// so each batcher adds its changes here instead of setting the gauge to its own count (which
// would make the two batchers of a replaced layer overwrite each other's depth).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "server/metrics/metrics.h"

namespace convserve {

// Thread-safe. `metrics` may be null and must outlive this.
class QueueDepthGauge {
 public:
  QueueDepthGauge(std::string layer, Metrics* metrics)
      : layer_(std::move(layer)), metrics_(metrics) {}
  QueueDepthGauge(const QueueDepthGauge&) = delete;
  QueueDepthGauge& operator=(const QueueDepthGauge&) = delete;

  // Adds `delta` requests (negative: removed) and publishes the new total. The gauge is set
  // under the lock, so concurrent changes reach it in the order they happened: set after
  // unlocking, a thread preempted in between would overwrite a newer total with its stale one.
  void Add(int64_t delta) {
    if (delta == 0) return;
    absl::MutexLock lock(&mu_);
    total_ += delta;
    // A relaxed atomic store in the metrics: cheap enough to hold the lock for.
    if (metrics_ != nullptr) metrics_->SetQueueDepth(layer_, total_);
  }

  int64_t total() const {
    absl::MutexLock lock(&mu_);
    return total_;
  }

 private:
  const std::string layer_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  int64_t total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace convserve
