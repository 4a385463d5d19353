// The executor of one GPU, behind the ConvEngine seam (kernels/conv_engine.h). Lanes (two by
// default, ServerOptions::gpu_lanes), each
// with its own stream, reused pinned host staging and device buffers, and a thread. Execute()
// stages the batch's inputs into a free lane and enqueues the input copy, the tuned kernel and
// the output copy on its stream, all asynchronous, on the caller's thread; the lane's thread
// then waits for the device and answers the requests. So the lane thread's wake-up overlaps the
// device work instead of preceding it, and the next batch's copies on the other lane overlap
// this batch's kernel. Execute() waits for the device only for the launch the occupancy sampler
// measures (one per configuration every sampling interval) and after a failed launch.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/conv_engine.h"
#include "server/executor.h"
#include "server/metrics/metrics.h"
#include "server/metrics/occupancy_sampler.h"

namespace convserve {

class CudaExecutor final : public Executor {
 public:
  // Takes over `engine`, which drives CUDA device `device`. UNAVAILABLE / RESOURCE_EXHAUSTED
  // when streams or events cannot be created. `metrics` may be null and must outlive this.
  // A positive `occupancy_sample_interval` starts the CUPTI achieved-occupancy sampler. With
  // `cuda_graphs`, each batch's kernels and copy out are issued as one CUDA graph launch,
  // captured per (problem, plan, lane) on first use. `lanes` (>= 1): batches in flight at once.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(
      int index, int device, std::unique_ptr<ConvEngine> engine, Metrics* metrics,
      absl::Duration occupancy_sample_interval = absl::ZeroDuration(), bool cuda_graphs = true,
      int lanes = 2);
  ~CudaExecutor() override;

  int index() const override { return index_; }
  const std::string& device_name() const override { return device_name_; }
  bool is_gpu() const override { return true; }
  bool healthy() const override { return !broken_.load(); }
  absl::StatusOr<std::shared_ptr<const DeviceWeights>> PrepareWeights(
      const ConvParams& params, const std::string& weights, const std::string& bias) override;
  bool AcquireSlot(absl::Duration timeout) override { return slots_.Acquire(timeout); }
  void ReleaseSlot() override { slots_.Release(); }
  int free_slots() const override { return slots_.free(); }
  void set_slot_signal(SlotSignal* signal) override { slots_.set_signal(signal); }
  void Execute(Batch batch) override;
  absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) override;
  std::vector<TuningResult> TunedFor(const ConvParams& params) const override;
  std::shared_ptr<HostMemoryPinner> MakeHostMemoryPinner() const override;
  std::shared_ptr<CudaIpcImporter> MakeCudaIpcImporter() const override;
  void Shutdown() override;

  class Lane;  // defined in cuda_executor.cc

 private:
  CudaExecutor(int index, int device, std::unique_ptr<ConvEngine> engine, Metrics* metrics,
               bool cuda_graphs, int lanes);
  void LaneLoop(Lane& lane);
  // On the caller's thread: stages `batch` into `lane` and enqueues its copies and kernel, setting
  // `launch` and the run's staging and enqueue times (from `taken_at`, when Execute() got the
  // batch). False when a step failed; the batch has then been answered with the error.
  bool LaunchOnLane(Lane& lane, Batch& batch, absl::Time taken_at, ConvLaunch& launch,
                    BatchRun& run);
  // Enqueue, on the lane's stream, the batch's kernels between the kernel events (recorded as
  // graph nodes when `capturing`), and the copy of its merged output into staging.
  absl::Status IssueKernels(Lane& lane, const Batch& batch, const ConvLaunch& launch,
                            bool capturing);
  absl::Status IssueCopyOut(Lane& lane, const Batch& batch);
  // Instead of IssueCopyOut: each request's output straight into its sink's copy-engine
  // destination (marking it delivered) where it has one, the others into staging.
  absl::Status IssueSplitCopyOut(Lane& lane, Batch& batch);
  // The kernels, and with `copy_out` IssueCopyOut, as one graph launch: captured on the lane's
  // first batch of its kind, replayed after. When capture fails the batch is issued directly,
  // and so is every later batch of that kernel configuration (logged once).
  absl::Status IssueAsGraph(Lane& lane, const Batch& batch, const ConvLaunch& launch,
                            bool copy_out);
  // On the lane's thread: waits for the launched batch (issued at `issued_at`) and answers its
  // requests.
  void FinishOnLane(Lane& lane, Batch& batch, const ConvLaunch& launch, BatchRun& run,
                    absl::Time issued_at);
  // Marks `lane` free and releases its launch slot.
  void FreeLane(Lane& lane);
  // Marks the device broken after an error that poisons the context (not for out-of-memory).
  void NoteError(int cuda_error);
  void PublishDeviceMetrics(const ConvProblem& problem, const ConvLaunch& launch);

  const int index_;
  const int device_;
  std::unique_ptr<ConvEngine> engine_;
  Metrics* const metrics_;
  std::string device_name_;
  LaunchSlots slots_;  // one per lane
  // Answer the requests of a batch in parallel with its lane thread (batch.h), so a lane is free
  // again after the copies out and its share of the answers; released by Shutdown() once the
  // lanes have stopped, which waits for the answers they were given.
  static constexpr int kAnswerThreads = 4;
  std::unique_ptr<AnswerThreads> answer_threads_ = std::make_unique<AnswerThreads>(kAnswerThreads);
  absl::Mutex lanes_mu_;  // guards every lane's hand-over state
  std::vector<std::unique_ptr<Lane>> lanes_;
  bool stopping_ ABSL_GUARDED_BY(lanes_mu_) = false;
  std::atomic<bool> broken_{false};
  const bool cuda_graphs_;
  // Kernel configurations whose capture failed (a launch feature graphs could not hold): their
  // batches are issued call by call from then on; the others keep their graphs.
  bool Capturable(const std::string& kernel_config);
  absl::Mutex uncapturable_mu_;
  absl::flat_hash_set<std::string> uncapturable_ ABSL_GUARDED_BY(uncapturable_mu_);
  // Null when sampling is off. Kernel launches hold launch_mu_ shared; the sampled one holds it
  // exclusively, so no other lane's kernel runs inside its profiling range.
  std::unique_ptr<OccupancySampler> sampler_;
  absl::Mutex launch_mu_;

  absl::Mutex metrics_mu_;
  absl::Time last_device_metrics_ ABSL_GUARDED_BY(metrics_mu_) = absl::InfinitePast();
  std::vector<std::string> occupancy_published_ ABSL_GUARDED_BY(metrics_mu_);
};

}  // namespace convserve
