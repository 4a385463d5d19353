// Achieved occupancy of our kernels, measured in the running server: now and then one launch is
// wrapped in a CUPTI Range Profiler range (user range, user replay, one pass) that collects
// sm__warps_active.avg.pct_of_peak_sustained_active, the metric Nsight Compute reports as
// "Achieved Occupancy". Launches that are not sampled run exactly as without the sampler: CUPTI
// is in the process only around a sampled launch (attached, then detached with cuptiFinalize),
// because while attached its driver hooks cost every launch host time. Attaching it, enabling
// the range profiler and starting its pass take 80-140 ms on the H100, so a worker thread of the
// sampler does that (and the detaching) when a sample is due, and the launch that is sampled only
// pushes and pops its range.
//
// Two of those calls hold up every CUDA call of the process while they run: starting the pass
// (61-103 ms on the H100) and disabling the profiler (35-41 ms;
// bench/results/2026-12-08_arming_stall). So the worker arms, and disarms, only once the device
// has seen no launch for `quiet_period`: a device that never pauses is never sampled, rather than
// stalled. (The sampled launch runs alone with the other lanes held, so its figure does not
// depend on the load it was taken under.)
//
// Where profiling is impossible (no permission to read GPU counters, another profiler holding
// them, a metric that would need several passes) the sampler turns itself off, logs why once and
// reports convserve_occupancy_sampler_enabled 0.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/metrics/metrics.h"

struct CUstream_st;

namespace convserve {

// Which launch to sample: at most one per `interval`, and spread over the kernel configurations
// in use, so that each is refreshed about every interval x (configurations seen). A pure
// function of the calls and the times passed in. Thread-safe.
class OccupancySamplePolicy {
 public:
  explicit OccupancySamplePolicy(absl::Duration interval) : interval_(interval) {}

  // True when a launch of `kernel_config` at `now` should be sampled; the caller must then call
  // Finished() after the sample (successful or not). False while a sample is in progress.
  bool ShouldSample(std::string_view kernel_config, absl::Time now);
  void Finished();
  // Whether the interval since the last sample has passed at `now`; one atomic load.
  bool Due(absl::Time now) const;
  // No sample before `now` + interval (a sampler that was ready saw no launch it could take).
  void Postpone(absl::Time now);

 private:
  const absl::Duration interval_;
  // Earliest time of the next sample, as Unix nanoseconds, checked without the mutex so that
  // the launches between samples pay one atomic load.
  std::atomic<int64_t> next_allowed_ns_{INT64_MIN};
  std::mutex mutex_;
  bool in_progress_ = false;
  absl::flat_hash_map<std::string, absl::Time> last_sampled_;  // by kernel configuration
};

struct OccupancySamplerOptions {
  int device = 0;                               // CUDA device ordinal
  absl::Duration interval = absl::Seconds(60);  // --occupancy_sample_interval
  // How long the device must have gone without a launch before the worker arms or disarms (see
  // the top of this file). Zero: at once (for tools that measure the stall itself).
  absl::Duration quiet_period = absl::Milliseconds(100);
  std::string device_label;    // the metrics' device label, e.g. "cuda:0"
  Metrics* metrics = nullptr;  // may be null; must outlive the sampler
  // Where the sampler's log lines go: one when it starts, one saying why it turned itself off
  // (`warning` true). Default: stderr.
  std::function<void(bool warning, std::string_view line)> log;
  // Told of each CUPTI step taken to arm and disarm, with when it began and ended, on the thread
  // that took it (the worker; Create's probe too): "profiler_initialize", "host_config",
  // "range_enable", "pass_start" to arm; "range_disable", "detach" (profiler deinitialized,
  // CUPTI finalized) to disarm. For tools that measure what a sample costs the other threads'
  // CUDA calls (occupancy_check stall). Default: none.
  std::function<void(std::string_view step, absl::Time begin, absl::Time end)> on_step;
};

// One per device. Thread-safe; Begin, EndRange and Collect (or End) come from the thread whose
// ShouldSample returned true.
class OccupancySampler {
 public:
  // Prepares CUPTI for `options.device` (making its primary context current on this thread) and
  // starts the worker. Never fails: a sampler that cannot profile is returned disabled, with the
  // reason logged.
  static std::unique_ptr<OccupancySampler> Create(OccupancySamplerOptions options);
  // Stops the worker, which detaches CUPTI. No sample may be in progress.
  ~OccupancySampler();
  OccupancySampler(const OccupancySampler&) = delete;
  OccupancySampler& operator=(const OccupancySampler&) = delete;

  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  // Why the sampler is off; empty while enabled.
  std::string disabled_reason() const;

  // Whether to sample this launch: only once the worker has armed CUPTI, for a launch the policy
  // picks. When a sample is due and CUPTI is not armed, asks the worker to arm it and says no.
  // One or two atomic loads between samples; false when disabled.
  bool ShouldSample(std::string_view kernel_config);

  // Around exactly one kernel launch on `stream`, after ShouldSample returned true: Begin waits
  // for the device to go idle (so no earlier kernel is counted) and opens the range; EndRange
  // waits for `stream` and closes it; Collect decodes the range into the achieved occupancy of
  // what ran in it (a ratio 0..1) and hands CUPTI back to the worker, which detaches it. For an
  // exact figure nothing else should be launched on the device between Begin and EndRange. Any
  // CUPTI failure turns the sampler off (and is returned). EndRange and then Collect must follow
  // every ShouldSample that returned true, whatever Begin returned; End is the two.
  absl::Status Begin(CUstream_st* stream);
  absl::Status EndRange(CUstream_st* stream);
  absl::StatusOr<double> Collect();
  absl::StatusOr<double> End(CUstream_st* stream);

  // For tools and tests, which sample on demand: asks the worker to arm now, whatever the
  // interval, and waits until it has (true), or it failed or `timeout` passed (false). The worker
  // still waits for the quiet period first.
  bool ArmAndWait(absl::Duration timeout);
  // Whether the worker has armed CUPTI and the next due launch would be sampled; for tests.
  bool armed() const { return armed_.load(std::memory_order_acquire); }
  // Waits until the worker has detached CUPTI after a sample.
  void WaitUntilDisarmed();

  // The Nsight Compute metric that is collected (percent of the SM's warp slots).
  static constexpr const char* kMetricName = "sm__warps_active.avg.pct_of_peak_sustained_active";

 private:
  struct Cupti;  // the CUPTI objects; defined in the .cc so users need no CUPTI headers
  // Where CUPTI is: the worker moves it kArming -> kArmed and, after a sample (or kArmedWindow
  // of launches none of which was due), kDisarming -> kDetached; the sampled launch moves it kArmed
  // -> kSampling -> kSampled.
  enum class Phase { kDetached, kArming, kArmed, kSampling, kSampled, kDisarming };
  static constexpr absl::Duration kArmedWindow = absl::Seconds(1);
  // After a sample the worker waits this long at most for a quiet period to disarm in; past it,
  // it disarms anyway, since while CUPTI stays attached every launch pays its hooks.
  static constexpr absl::Duration kDisarmQuietWait = absl::Seconds(10);

  explicit OccupancySampler(OccupancySamplerOptions options);
  absl::Status Initialize();
  absl::Status Disable(absl::Status why);
  void RequestArming();
  void WorkerLoop();
  // Returns once no launch has been seen for options_.quiet_period (true), `limit` has passed
  // (true), or the sampler is stopping (false).
  bool WaitForQuiet(absl::Duration limit);
  // Detaches CUPTI, logging once when it stays.
  void Detach();

  OccupancySamplerOptions options_;
  OccupancySamplePolicy policy_;
  std::atomic<bool> enabled_{false};
  std::atomic<bool> detach_failure_logged_{false};
  mutable std::mutex reason_mutex_;
  std::string disabled_reason_;
  std::unique_ptr<Cupti> cupti_;  // used by the worker, and by the sampling thread in kSampling

  absl::Mutex phase_mu_;
  Phase phase_ ABSL_GUARDED_BY(phase_mu_) = Phase::kDetached;
  bool off_ ABSL_GUARDED_BY(phase_mu_) = false;  // Disable() was called
  bool stopping_ ABSL_GUARDED_BY(phase_mu_) = false;
  bool worker_done_ ABSL_GUARDED_BY(phase_mu_) = false;
  std::atomic<bool> armed_{false};             // phase_ == kArmed, read without the mutex
  std::atomic<bool> arming_requested_{false};  // from a request until back to kDetached
  // When ShouldSample last saw a launch (Unix nanoseconds); what WaitForQuiet watches.
  std::atomic<int64_t> last_launch_ns_{0};
  // The sampling thread's own: whether its range is open, and the sample's status so far.
  bool range_open_ = false;
  absl::Status sample_status_;
  std::thread worker_;
};

// One kernel launch of an executor that has several streams, as the sampler wants it. Holds
// `launch_mu` shared around an ordinary launch; when `sampler` picks this launch it holds it
// exclusively instead, so no other stream of the executor launches a kernel inside the range,
// and opens the range; it closes the range before letting go and decodes it after. Use:
// construct, enqueue the kernel, then Finish(). `sampler` may be null.
class SampledLaunch {
 public:
  SampledLaunch(OccupancySampler* sampler, absl::Mutex* launch_mu, std::string_view kernel_config,
                CUstream_st* stream);
  // Closes a range still open (on an early return) and releases the mutex.
  ~SampledLaunch();
  SampledLaunch(const SampledLaunch&) = delete;
  SampledLaunch& operator=(const SampledLaunch&) = delete;

  bool sampling() const { return sampling_; }
  // Closes the range (waiting for the stream) and releases the mutex: the achieved occupancy
  // (0..1) when this launch was sampled, FAILED_PRECONDITION when it was not.
  absl::StatusOr<double> Finish();

 private:
  OccupancySampler* const sampler_;
  absl::Mutex* mu_;  // null once released
  CUstream_st* const stream_;
  bool exclusive_ = false;
  bool sampling_ = false;
};

}  // namespace convserve
