// The dynamic batcher of one layer generation: per-shape queues of accepted requests and one
// scheduler thread that asks DecideBatch (batch_policy.h) when to launch, takes a launch slot
// from an executor and hands the merged batch over. It never touches a device.
//
// With several executors a batch goes to the least-loaded healthy one (the most free slots;
// ties in turn), so a broken GPU gets no batches while another executor is healthy. When every
// executor is unhealthy, batches still go to them and fail at once with their error rather than
// wait in the queue for a device that will not come back.
//
// The request that makes a launch due launches it itself, skipping the scheduler thread, when a
// launch slot is free now: a lone request whose batch of one the policy launches at once (a
// preferred size, a full batch, or no delay), and under load the request that fills a batch or
// reaches a preferred size. Enqueue then hands the batch to the executor on the calling thread,
// which saves one thread hand-off (the scheduler's wake-up) per batch. The scheduler launches
// the rest: batches whose delay runs out, and those due while every slot was taken.
//
// Every request it accepts is answered exactly once: by the executor, or here when its deadline
// passes or its client cancels before launch. Replacing or unloading the layer drains it: what
// was queued still launches, on the generation it was accepted for.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/executor.h"
#include "server/inference.h"
#include "server/loaded_layer.h"
#include "server/metrics/metrics.h"
#include "server/queue_depth_gauge.h"

namespace convserve {

// What the batcher knows of one executor when it picks where a batch goes.
struct ExecutorLoad {
  int free_slots = 0;
  bool healthy = true;
};

// The executor a batch goes to: among the eligible ones (the healthy ones, or all when none is
// healthy), the one with the most free slots, ties to the first in turn from `start`;
// loads.size() when no eligible executor has a free slot. A pure function.
size_t ChooseLeastLoaded(const std::vector<ExecutorLoad>& loads, size_t start);

class Batcher {
 public:
  // `executors`, `metrics` (may be null) and `slot_signal` must outlive this. `slot_signal`,
  // notified by every executor when a slot frees (Executor::set_slot_signal), lets the batcher
  // wait for whichever executor frees a slot first; null, it waits on one executor at a time.
  // `depth_gauge` counts this batcher's queued requests together with those of the layer
  // name's other batchers (a replaced generation still draining); null: a gauge of its own.
  Batcher(std::shared_ptr<const LoadedLayer> layer, std::vector<Executor*> executors,
          Metrics* metrics, const SlotSignal* slot_signal = nullptr,
          std::shared_ptr<QueueDepthGauge> depth_gauge = nullptr);
  // Drains (launches everything queued) and joins the scheduler.
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a validated request (its shape and bytes match the layer), moving from `request` on
  // success; the batch it makes due may launch from here (see above), on the calling thread,
  // which then runs Executor::Execute (it never blocks on the device). RESOURCE_EXHAUSTED when the
  // layer's queues are over their request or byte bound; UNAVAILABLE once draining (the caller may
  // retry on the layer's new generation). On error `request` is untouched and the caller answers
  // it.
  absl::Status Enqueue(InferenceRequest& request);

  // Stops accepting and launches what is queued without waiting for company.
  void BeginDrain();
  // True once draining finished: nothing queued or being handed over, the scheduler has exited.
  bool drained() const;
  int64_t queued_requests() const;

 private:
  // Requests merge when they share the spatial size and both layouts.
  using ShapeKey = std::tuple<int64_t, int64_t, Layout, Layout>;
  struct Queue {
    std::deque<InferenceRequest> requests;
    // Its launch came due (DecideBatch): it stays due until a batch is taken from it, so the
    // requests that join while it waits for a launch slot ride along. Deciding afresh would
    // send a queue that had reached a preferred size back to wait out its delay.
    bool due = false;
  };

  void SchedulerLoop();
  // Enqueue's part under mu_: the admission checks, then the queue; a launch the request makes
  // due and that has a slot now is set in `launch` (counted in handing_over_), and what expired
  // or was cancelled in the queues meanwhile in `ended`, for the caller to answer.
  absl::Status EnqueueLocked(InferenceRequest& request, int64_t bytes,
                             std::optional<std::pair<Executor*, Batch>>& launch,
                             std::vector<std::pair<InferenceRequest, absl::Status>>& ended)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes expired and cancelled requests into `ended` with the status that ends them.
  void SweepLocked(absl::Time now, std::vector<std::pair<InferenceRequest, absl::Status>>& ended)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // DecideBatch for `queue` now.
  BatchDecision DecideLocked(const Queue& queue, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The queue that should launch now (oldest head first), or end(); `wake_at` gets the next
  // time a decision may change.
  std::map<ShapeKey, Queue>::iterator ChooseLocked(absl::Time now, absl::Time& wake_at)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A launch slot of the least-loaded healthy executor, waiting up to `timeout` when none is
  // free; null on timeout.
  Executor* AcquireExecutor(absl::Duration timeout);
  // Takes a free slot of the eligible executor with the most free slots, without waiting.
  Executor* TryAcquireLeastLoaded();
  Batch TakeBatchLocked(std::map<ShapeKey, Queue>::iterator queue, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The lone-request launch (see above): a batch of `request` alone with a slot taken, when
  // nothing is queued, the policy launches it now and a slot is free; nullopt otherwise.
  std::optional<std::pair<Executor*, Batch>> TryLaunchAloneLocked(InferenceRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The launch of the due queue `key` from Enqueue (see above): its batch with a slot taken,
  // after sweeping out what expired or was cancelled (into `ended`); nullopt when another queue
  // is due first, no slot is free, or the sweep emptied it.
  std::optional<std::pair<Executor*, Batch>> TryLaunchDueLocked(
      const ShapeKey& key, absl::Time now,
      std::vector<std::pair<InferenceRequest, absl::Status>>& ended)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds the change in queued_requests_ since the last call to the layer's queue-depth gauge.
  // Called under mu_ after every change so the gauge sees the changes in the order they
  // happened: published after unlocking, a thread preempted in between would apply a stale
  // change late, and the gauge would be wrong until the queue next changed (with a long
  // batching delay, for that whole delay).
  void PublishDepthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::shared_ptr<const LoadedLayer> layer_;
  const std::vector<Executor*> executors_;
  Metrics* const metrics_;
  const SlotSignal* const slot_signal_;
  const std::shared_ptr<QueueDepthGauge> depth_gauge_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  std::map<ShapeKey, Queue> queues_ ABSL_GUARDED_BY(mu_);
  int64_t queued_requests_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // When the scheduler's wait on wake_ ends by itself; InfinitePast while it is not waiting
  // there (it looks at every queue before it waits again).
  absl::Time scheduler_wake_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool drained_ ABSL_GUARDED_BY(mu_) = false;
  int64_t published_depth_ ABSL_GUARDED_BY(mu_) = 0;   // queued_requests_ the gauge has seen
  std::vector<int64_t> samples_ ABSL_GUARDED_BY(mu_);  // DecideLocked's, reused
  // Lone-request batches taken under mu_ but not yet passed to Execute(); draining waits for
  // them, so drained() still means every accepted request reached an executor.
  int handing_over_ ABSL_GUARDED_BY(mu_) = 0;
  // The scheduler's, used outside mu_ while a queue is due; and Enqueue's (TryLaunchAloneLocked),
  // under mu_ while nothing is queued. Only the scheduler empties queues, so the two never
  // overlap: the scheduler takes slots only while a queue is non-empty.
  size_t next_executor_ = 0;
  std::vector<ExecutorLoad> loads_;  // reused
  std::thread scheduler_;
};

}  // namespace convserve
