#include "server/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/batch_policy.h"

namespace convserve {
namespace {

// How often queued requests are checked for a client that went away, at most: cancellation
// has no wake-up of its own.
constexpr absl::Duration kCancelPollInterval = absl::Milliseconds(20);

// The merged problem of a batch whose first request is `first` and whose N sum is `samples`.
ConvProblem BatchProblem(const LoadedLayer& layer, const InferenceRequest& first, int64_t samples) {
  ConvProblem problem;
  problem.params = layer.params;
  problem.batch = samples;
  problem.height = first.shape[2];
  problem.width = first.shape[3];
  problem.input_layout = first.input_layout;
  problem.output_layout = first.output_layout;
  return problem;
}

}  // namespace

size_t ChooseLeastLoaded(const std::vector<ExecutorLoad>& loads, size_t start) {
  const size_t count = loads.size();
  const bool any_healthy =
      std::any_of(loads.begin(), loads.end(), [](const ExecutorLoad& l) { return l.healthy; });
  size_t chosen = count;
  int most_free = 0;
  for (size_t i = 0; i < count; ++i) {
    const size_t position = (start + i) % count;
    const ExecutorLoad& load = loads[position];
    // Healthy executors take batches; when none is, all do (and fail them at once with their
    // error rather than leave them queued for a device that will not come back).
    if (any_healthy && !load.healthy) continue;
    // Strictly more: ties go to the first in turn.
    if (load.free_slots > most_free) {
      chosen = position;
      most_free = load.free_slots;
    }
  }
  return chosen;
}

Batcher::Batcher(std::shared_ptr<const LoadedLayer> layer, std::vector<Executor*> executors,
                 Metrics* metrics, const SlotSignal* slot_signal,
                 std::shared_ptr<QueueDepthGauge> depth_gauge)
    : layer_(std::move(layer)),
      executors_(std::move(executors)),
      metrics_(metrics),
      slot_signal_(slot_signal),
      depth_gauge_(depth_gauge != nullptr
                       ? std::move(depth_gauge)
                       : std::make_shared<QueueDepthGauge>(layer_->name, metrics_)) {
  scheduler_ = std::thread([this] { SchedulerLoop(); });
}

Batcher::~Batcher() {
  BeginDrain();
  if (scheduler_.joinable()) scheduler_.join();
}

absl::Status Batcher::Enqueue(InferenceRequest& request) {
  const int64_t bytes = static_cast<int64_t>(request.input.size());
  std::optional<std::pair<Executor*, Batch>> launch;
  std::vector<std::pair<InferenceRequest, absl::Status>> ended;
  {
    absl::MutexLock lock(&mu_);
    absl::Status s = EnqueueLocked(request, bytes, launch, ended);
    if (!s.ok()) return s;
  }
  // Outside the lock: the executor may take a while to accept the batch (the GPU one stages the
  // input and enqueues the copies and kernel), and requests for other shapes must not wait.
  for (auto& [expired, status] : ended) AnswerRequest(expired, status, metrics_);
  if (!launch.has_value()) return absl::OkStatus();
  launch->first->Execute(std::move(launch->second));
  absl::MutexLock lock(&mu_);
  if (--handing_over_ == 0 && draining_) wake_.Signal();
  return absl::OkStatus();
}

absl::Status Batcher::EnqueueLocked(InferenceRequest& request, int64_t bytes,
                                    std::optional<std::pair<Executor*, Batch>>& launch,
                                    std::vector<std::pair<InferenceRequest, absl::Status>>& ended) {
  if (draining_) {
    return absl::UnavailableError(
        absl::StrCat("layer '", layer_->name, "' is being replaced or unloaded"));
  }
  const BatchingConfig& config = layer_->batching;
  if (queued_requests_ + 1 > config.max_queue_requests) {
    return absl::ResourceExhaustedError(absl::StrCat("layer '", layer_->name, "' queue is full (",
                                                     queued_requests_, " requests queued, bound ",
                                                     config.max_queue_requests, "); retry later"));
  }
  if (queued_bytes_ + bytes > config.max_queue_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "layer '", layer_->name, "' queue is full (", queued_bytes_, " input bytes queued + ",
        bytes, " over the bound ", config.max_queue_bytes, "); retry later"));
  }
  launch = TryLaunchAloneLocked(request);
  if (launch.has_value()) {
    ++handing_over_;
    return absl::OkStatus();
  }
  const ShapeKey key{request.shape[2], request.shape[3], request.input_layout,
                     request.output_layout};
  const absl::Time deadline = request.deadline;
  Queue& queue = queues_[key];
  queue.requests.push_back(std::move(request));
  ++queued_requests_;
  queued_bytes_ += bytes;
  // A waiting scheduler is woken only when this request changes what it waits for: a launch now
  // due, or a decision (a new queue's delay, this request's deadline) due before its wake-up. A
  // wake-up per request cost the CPU backend's tiny layer at c = 64 about 1.3 futex calls each.
  bool wake_scheduler = false;
  if (!queue.due) {
    const absl::Time now = absl::Now();
    const BatchDecision decision = DecideLocked(queue, now);
    queue.due = decision.launch;
    wake_scheduler = decision.launch || std::min(decision.wake_at, deadline) < scheduler_wake_at_;
    if (decision.launch) {
      launch = TryLaunchDueLocked(key, now, ended);
      if (launch.has_value()) {
        ++handing_over_;
        // The scheduler decides for what is left of this queue (more than one batch held).
        wake_scheduler = queues_.count(key) > 0;
      }
    }
  }
  PublishDepthLocked();
  if (wake_scheduler) wake_.Signal();
  return absl::OkStatus();
}

std::optional<std::pair<Executor*, Batch>> Batcher::TryLaunchDueLocked(
    const ShapeKey& key, absl::Time now,
    std::vector<std::pair<InferenceRequest, absl::Status>>& ended) {
  // Another due queue waits for a slot already: the scheduler launches the oldest first.
  for (const auto& [other_key, other] : queues_) {
    if (other.due && other_key != key) return std::nullopt;
  }
  Executor* executor = TryAcquireLeastLoaded();
  if (executor == nullptr) return std::nullopt;
  // What expired or was cancelled while queued is answered, not launched; what is left launches
  // (a due queue stays due), as from the scheduler.
  SweepLocked(now, ended);
  auto queue = queues_.find(key);
  if (queue == queues_.end()) {
    executor->ReleaseSlot();
    return std::nullopt;
  }
  return std::make_pair(executor, TakeBatchLocked(queue, now));
}

void Batcher::BeginDrain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  wake_.Signal();
}

std::optional<std::pair<Executor*, Batch>> Batcher::TryLaunchAloneLocked(
    InferenceRequest& request) {
  // Anything queued launches first (and the scheduler may be taking a slot for it right now).
  if (!queues_.empty()) return std::nullopt;
  const absl::Time now = absl::Now();
  const int64_t samples = request.shape[0];
  if (!DecideBatch({&samples, 1}, request.accepted_at, now, layer_->batching).launch) {
    return std::nullopt;
  }
  // A client that already left is answered CANCELLED by the scheduler's sweep, as before.
  if (request.is_cancelled && request.is_cancelled()) return std::nullopt;
  Executor* executor = TryAcquireLeastLoaded();
  if (executor == nullptr) return std::nullopt;
  Batch batch;
  batch.layer = layer_;
  batch.launched_at = now;
  batch.problem = BatchProblem(*layer_, request, samples);
  batch.requests.push_back(std::move(request));
  return std::make_pair(executor, std::move(batch));
}

bool Batcher::drained() const {
  absl::MutexLock lock(&mu_);
  return drained_;
}

int64_t Batcher::queued_requests() const {
  absl::MutexLock lock(&mu_);
  return queued_requests_;
}

void Batcher::PublishDepthLocked() {
  depth_gauge_->Add(queued_requests_ - published_depth_);
  published_depth_ = queued_requests_;
}

void Batcher::SweepLocked(absl::Time now,
                          std::vector<std::pair<InferenceRequest, absl::Status>>& ended) {
  for (auto it = queues_.begin(); it != queues_.end();) {
    std::deque<InferenceRequest>& requests = it->second.requests;
    for (auto r = requests.begin(); r != requests.end();) {
      absl::Status status;
      if (r->deadline <= now) {
        status = absl::DeadlineExceededError(
            absl::StrCat("deadline passed after ", absl::ToInt64Microseconds(now - r->accepted_at),
                         " us in the queue of layer '", layer_->name, "'"));
        if (metrics_ != nullptr) metrics_->Expired(layer_->name);
      } else if (r->is_cancelled && r->is_cancelled()) {
        status = absl::CancelledError("the client cancelled the request before it launched");
        if (metrics_ != nullptr) metrics_->Cancelled(layer_->name);
      } else {
        ++r;
        continue;
      }
      --queued_requests_;
      queued_bytes_ -= static_cast<int64_t>(r->input.size());
      ended.emplace_back(std::move(*r), std::move(status));
      r = requests.erase(r);
    }
    it = requests.empty() ? queues_.erase(it) : std::next(it);
  }
}

BatchDecision Batcher::DecideLocked(const Queue& queue, absl::Time now) {
  // Each request has N >= 1, so the first max_batch_size + 1 requests decide everything.
  const size_t window =
      std::min(queue.requests.size(), static_cast<size_t>(layer_->batching.max_batch_size) + 1);
  samples_.clear();
  for (size_t i = 0; i < window; ++i) samples_.push_back(queue.requests[i].shape[0]);
  return DecideBatch(samples_, queue.requests.front().accepted_at, now, layer_->batching,
                     draining_);
}

std::map<Batcher::ShapeKey, Batcher::Queue>::iterator Batcher::ChooseLocked(absl::Time now,
                                                                            absl::Time& wake_at) {
  wake_at = absl::InfiniteFuture();
  auto chosen = queues_.end();
  absl::Time chosen_oldest = absl::InfiniteFuture();
  for (auto it = queues_.begin(); it != queues_.end(); ++it) {
    Queue& queue = it->second;
    const std::deque<InferenceRequest>& requests = queue.requests;
    const absl::Time oldest = requests.front().accepted_at;
    const BatchDecision decision = DecideLocked(queue, now);
    if (decision.launch) queue.due = true;
    if (queue.due) {
      if (oldest < chosen_oldest) {
        chosen = it;
        chosen_oldest = oldest;
      }
    } else {
      wake_at = std::min(wake_at, decision.wake_at);
    }
    for (const InferenceRequest& r : requests) wake_at = std::min(wake_at, r.deadline);
  }
  if (!queues_.empty()) wake_at = std::min(wake_at, now + kCancelPollInterval);
  return chosen;
}

Executor* Batcher::TryAcquireLeastLoaded() {
  // Other layers' batchers take slots of the same executors, so a slot seen free may be gone
  // by the time it is taken: look again until one is taken or none is free.
  while (true) {
    loads_.resize(executors_.size());
    for (size_t i = 0; i < executors_.size(); ++i) {
      loads_[i] = {executors_[i]->free_slots(), executors_[i]->healthy()};
    }
    const size_t chosen = ChooseLeastLoaded(loads_, next_executor_);
    if (chosen == executors_.size()) return nullptr;
    if (executors_[chosen]->AcquireSlot(absl::ZeroDuration())) {
      next_executor_ = (chosen + 1) % executors_.size();
      return executors_[chosen];
    }
  }
}

Executor* Batcher::AcquireExecutor(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    // Read before looking, so that a slot freed after the look ends the wait below at once.
    const uint64_t seen = slot_signal_ != nullptr ? slot_signal_->generation() : 0;
    if (Executor* executor = TryAcquireLeastLoaded()) return executor;
    if (slot_signal_ == nullptr || executors_.size() == 1) {
      // One executor (or no signal): wait on the next eligible one in turn.
      for (ExecutorLoad& load : loads_) load.free_slots = 1;
      const size_t position = ChooseLeastLoaded(loads_, next_executor_);
      Executor* executor = executors_[position];
      if (!executor->AcquireSlot(std::max(absl::ZeroDuration(), deadline - absl::Now()))) {
        return nullptr;
      }
      next_executor_ = (position + 1) % executors_.size();
      return executor;
    }
    if (!slot_signal_->WaitForChange(seen, deadline)) return nullptr;
  }
}

Batch Batcher::TakeBatchLocked(std::map<ShapeKey, Queue>::iterator queue, absl::Time now) {
  std::deque<InferenceRequest>& requests = queue->second.requests;
  Batch batch;
  batch.layer = layer_;
  batch.launched_at = now;
  int64_t samples = 0;
  while (!requests.empty()) {
    const int64_t n = requests.front().shape[0];
    if (!batch.requests.empty() && samples + n > layer_->batching.max_batch_size) break;
    samples += n;
    --queued_requests_;
    queued_bytes_ -= static_cast<int64_t>(requests.front().input.size());
    batch.requests.push_back(std::move(requests.front()));
    requests.pop_front();
  }
  batch.problem = BatchProblem(*layer_, batch.requests.front(), samples);
  if (requests.empty()) {
    queues_.erase(queue);
  } else {
    queue->second.due = false;  // what is left decides afresh
  }
  return batch;
}

void Batcher::SchedulerLoop() {
  std::vector<std::pair<InferenceRequest, absl::Status>> ended;
  mu_.Lock();
  while (true) {
    absl::Time now = absl::Now();
    SweepLocked(now, ended);
    if (!ended.empty()) {
      PublishDepthLocked();
      mu_.Unlock();
      for (auto& [request, status] : ended) AnswerRequest(request, status, metrics_);
      ended.clear();
      mu_.Lock();
      continue;
    }
    absl::Time wake_at;
    auto chosen = ChooseLocked(now, wake_at);
    if (chosen == queues_.end()) {
      if (draining_ && queues_.empty() && handing_over_ == 0) break;
      scheduler_wake_at_ = wake_at;
      wake_.WaitWithDeadline(&mu_, wake_at);
      scheduler_wake_at_ = absl::InfinitePast();
      continue;
    }
    // A launch is due: wait for a slot outside the lock (requests keep arriving and join the
    // batch), but no longer than until the next deadline or cancellation check.
    const absl::Duration slot_wait =
        std::max(absl::ZeroDuration(), std::min(wake_at, now + kCancelPollInterval) - now);
    mu_.Unlock();
    Executor* executor = AcquireExecutor(slot_wait);
    mu_.Lock();
    if (executor == nullptr) continue;
    now = absl::Now();
    SweepLocked(now, ended);
    chosen = ChooseLocked(now, wake_at);
    if (chosen == queues_.end()) {
      // Everything due expired while waiting, or the queue is still below its delay after
      // the sweep; give the slot back and decide again.
      executor->ReleaseSlot();
      continue;
    }
    Batch batch = TakeBatchLocked(chosen, now);
    PublishDepthLocked();
    mu_.Unlock();
    executor->Execute(std::move(batch));
    mu_.Lock();
  }
  drained_ = true;
  mu_.Unlock();
}

}  // namespace convserve
