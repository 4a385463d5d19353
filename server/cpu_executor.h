// The executor for machines without a GPU: the CPU reference conv (fp64 accumulation,
// multithreaded) on merged batches, one batch at a time on its own worker thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "server/executor.h"
#include "server/metrics/metrics.h"

namespace convserve {

class CpuExecutor final : public Executor {
 public:
  // `threads` <= 0: one per hardware thread. `metrics` may be null; it must outlive this.
  // `numbered` puts the index in the device name ("cpu:1 (reference, 2 threads)"), which tells
  // several CPU executors apart in the metrics' device label.
  CpuExecutor(int index, int threads, Metrics* metrics, bool numbered = false);
  ~CpuExecutor() override;

  int index() const override { return index_; }
  const std::string& device_name() const override { return device_name_; }
  bool is_gpu() const override { return false; }
  bool healthy() const override { return true; }
  absl::StatusOr<std::shared_ptr<const DeviceWeights>> PrepareWeights(
      const ConvParams& params, const std::string& weights, const std::string& bias) override;
  bool AcquireSlot(absl::Duration timeout) override { return slots_.Acquire(timeout); }
  void ReleaseSlot() override { slots_.Release(); }
  int free_slots() const override { return slots_.free(); }
  void set_slot_signal(SlotSignal* signal) override { slots_.set_signal(signal); }
  void Execute(Batch batch) override;
  absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) override;
  std::vector<TuningResult> TunedFor(const ConvParams& params) const override { return {}; }
  void Shutdown() override;

 private:
  void WorkerLoop();
  void Run(Batch& batch);

  const int index_;
  const int threads_;
  Metrics* const metrics_;
  std::string device_name_;
  LaunchSlots slots_{1};  // the reference already uses every core for one batch
  // Answer the requests of a batch in parallel (batch.h); released by Shutdown() once the worker
  // has stopped, which waits for the answers they were given.
  std::unique_ptr<AnswerThreads> answer_threads_ = std::make_unique<AnswerThreads>(2);

  absl::Mutex mu_;
  std::optional<Batch> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_;
};

}  // namespace convserve
