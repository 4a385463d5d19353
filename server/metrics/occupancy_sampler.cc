// CUPTI Range Profiler plumbing for OccupancySampler (see occupancy_sampler.h). Each sample
// enables the range profiler on the device's context, collects one user range around one
// launch in one pass, decodes and evaluates it on the host, and disables the profiler again.
#include "server/metrics/occupancy_sampler.h"

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <cupti_profiler_host.h>
#include <cupti_profiler_target.h>
#include <cupti_range_profiler.h>
#include <cupti_result.h>
#include <cupti_target.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/metrics/cupti_attachment.h"

namespace convserve {

bool OccupancySamplePolicy::ShouldSample(std::string_view kernel_config, absl::Time now) {
  const int64_t now_ns = absl::ToUnixNanos(now);
  if (now_ns < next_allowed_ns_.load(std::memory_order_relaxed)) return false;
  std::unique_lock<std::mutex> lock(mutex_, std::try_to_lock);
  if (!lock.owns_lock() || in_progress_) return false;
  if (now_ns < next_allowed_ns_.load(std::memory_order_relaxed)) return false;
  const std::string key(kernel_config);
  if (auto it = last_sampled_.find(key); it != last_sampled_.end()) {
    // Refresh each configuration about once per interval x configurations, so a rare one gets
    // its turn between two samples of a busy one.
    const absl::Duration own_interval =
        interval_ * static_cast<int64_t>(std::max<size_t>(1, last_sampled_.size()));
    if (now - it->second < own_interval) return false;
  }
  last_sampled_[key] = now;
  in_progress_ = true;
  next_allowed_ns_.store(absl::ToUnixNanos(now + interval_), std::memory_order_relaxed);
  return true;
}

void OccupancySamplePolicy::Finished() {
  std::lock_guard<std::mutex> lock(mutex_);
  in_progress_ = false;
}

bool OccupancySamplePolicy::Due(absl::Time now) const {
  return absl::ToUnixNanos(now) >= next_allowed_ns_.load(std::memory_order_relaxed);
}

void OccupancySamplePolicy::Postpone(absl::Time now) {
  next_allowed_ns_.store(absl::ToUnixNanos(now + interval_), std::memory_order_relaxed);
}

namespace {

absl::Status CudaStatus(cudaError_t error, const char* call) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(call, ": ", cudaGetErrorString(error)));
}

}  // namespace

struct OccupancySampler::Cupti {
  int device = 0;
  CUcontext context = nullptr;
  std::string chip;                           // found at the first Attach, with
  std::vector<uint8_t> counter_availability;  // the device's counters
  bool attached = false;                      // holds the CuptiAttachment and the host object below
  CUpti_Profiler_Host_Object* host = nullptr;
  std::vector<uint8_t> config_image;
  std::vector<uint8_t> counter_data;
  CUpti_RangeProfiler_Object* range = nullptr;  // set only while a sample is being taken
  bool session = false;  // cuptiRangeProfilerStart called, cuptiRangeProfilerStop not yet
  // OccupancySamplerOptions::on_step, or null.
  const std::function<void(std::string_view, absl::Time, absl::Time)>* on_step = nullptr;

  ~Cupti() { Detach().IgnoreError(); }

  // Runs `step` and tells on_step how long it took.
  template <typename Step>
  auto Timed(std::string_view name, Step step) {
    const absl::Time begin = absl::Now();
    if constexpr (std::is_void_v<decltype(step())>) {
      step();
      if (on_step != nullptr && *on_step) (*on_step)(name, begin, absl::Now());
    } else {
      auto result = step();
      if (on_step != nullptr && *on_step) (*on_step)(name, begin, absl::Now());
      return result;
    }
  }

  // Attaches CUPTI for a sample and builds the host object and the configuration for the metric.
  absl::Status Attach() {
    if (attached) return absl::OkStatus();
    if (absl::Status s = Timed("profiler_initialize", CuptiAttachment::Acquire); !s.ok()) return s;
    attached = true;
    return Timed("host_config", [this] { return BuildHostConfig(); });
  }

  // The host object and the configuration image for the metric (host work; needs CUPTI attached
  // for the chip's counters the first time).
  absl::Status BuildHostConfig() {
    if (counter_availability.empty()) {
      if (absl::Status s = FindChipAndCounters(); !s.ok()) return s;
    }
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_Initialize_Params, init);
    init.profilerType = CUPTI_PROFILER_TYPE_RANGE_PROFILER;
    init.pChipName = chip.c_str();
    init.pCounterAvailabilityImage = counter_availability.data();
    if (absl::Status s =
            CuptiStatus(cuptiProfilerHostInitialize(&init), "cuptiProfilerHostInitialize");
        !s.ok()) {
      return s;
    }
    host = init.pHostObject;

    const char* metrics[] = {metric()};
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_ConfigAddMetrics_Params, add);
    add.pHostObject = host;
    add.ppMetricNames = metrics;
    add.numMetrics = 1;
    if (absl::Status s = CuptiStatus(cuptiProfilerHostConfigAddMetrics(&add),
                                     "cuptiProfilerHostConfigAddMetrics");
        !s.ok()) {
      return s;
    }
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_GetConfigImageSize_Params, image_size);
    image_size.pHostObject = host;
    if (absl::Status s = CuptiStatus(cuptiProfilerHostGetConfigImageSize(&image_size),
                                     "cuptiProfilerHostGetConfigImageSize");
        !s.ok()) {
      return s;
    }
    config_image.assign(image_size.configImageSize, 0);
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_GetConfigImage_Params, image);
    image.pHostObject = host;
    image.configImageSize = config_image.size();
    image.pConfigImage = config_image.data();
    return CuptiStatus(cuptiProfilerHostGetConfigImage(&image), "cuptiProfilerHostGetConfigImage");
  }

  // The chip's name and the device's counter availability, which need CUPTI attached and do not
  // change, so later attachments reuse them.
  absl::Status FindChipAndCounters() {
    CONVSERVE_CUPTI_PARAMS(CUpti_Device_GetChipName_Params, name);
    name.deviceIndex = static_cast<size_t>(device);
    if (absl::Status s = CuptiStatus(cuptiDeviceGetChipName(&name), "cuptiDeviceGetChipName");
        !s.ok()) {
      return s;
    }
    chip = name.pChipName;
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_GetCounterAvailability_Params, availability);
    availability.ctx = context;
    if (absl::Status s = CuptiStatus(cuptiProfilerGetCounterAvailability(&availability),
                                     "cuptiProfilerGetCounterAvailability");
        !s.ok()) {
      return s;
    }
    std::vector<uint8_t> image(availability.counterAvailabilityImageSize, 0);
    availability.pCounterAvailabilityImage = image.data();
    if (absl::Status s = CuptiStatus(cuptiProfilerGetCounterAvailability(&availability),
                                     "cuptiProfilerGetCounterAvailability");
        !s.ok()) {
      return s;
    }
    counter_availability = std::move(image);
    return absl::OkStatus();
  }

  // Undoes Attach (whatever part of it succeeded); the status says whether CUPTI left.
  absl::Status Detach() {
    if (!attached) return absl::OkStatus();
    if (range != nullptr) Timed("range_disable", [this] { DisableRange(); });
    if (host != nullptr) {
      CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_Deinitialize_Params, params);
      params.pHostObject = host;
      cuptiProfilerHostDeinitialize(&params);
      host = nullptr;
    }
    attached = false;
    return Timed("detach", CuptiAttachment::Release);
  }

  const char* metric() const { return OccupancySampler::kMetricName; }

  // Enables the range profiler on the context and arms it for one range in one pass.
  absl::Status EnableRange() {
    return Timed("range_enable", [this] { return EnableAndConfigureRange(); });
  }
  absl::Status EnableAndConfigureRange() {
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_Enable_Params, enable);
    enable.ctx = context;
    if (absl::Status s = CuptiStatus(cuptiRangeProfilerEnable(&enable), "cuptiRangeProfilerEnable");
        !s.ok()) {
      return s;
    }
    range = enable.pRangeProfilerObject;

    const char* metrics[] = {metric()};
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_GetCounterDataSize_Params, size);
    size.pRangeProfilerObject = range;
    size.pMetricNames = metrics;
    size.numMetrics = 1;
    size.maxNumOfRanges = 1;
    size.maxNumRangeTreeNodes = 1;
    if (absl::Status s = CuptiStatus(cuptiRangeProfilerGetCounterDataSize(&size),
                                     "cuptiRangeProfilerGetCounterDataSize");
        !s.ok()) {
      return s;
    }
    counter_data.assign(size.counterDataSize, 0);
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_CounterDataImage_Initialize_Params, init);
    init.pRangeProfilerObject = range;
    init.counterDataSize = counter_data.size();
    init.pCounterData = counter_data.data();
    if (absl::Status s = CuptiStatus(cuptiRangeProfilerCounterDataImageInitialize(&init),
                                     "cuptiRangeProfilerCounterDataImageInitialize");
        !s.ok()) {
      return s;
    }

    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_SetConfig_Params, config);
    config.pRangeProfilerObject = range;
    config.configSize = config_image.size();
    config.pConfig = config_image.data();
    config.counterDataImageSize = counter_data.size();
    config.pCounterDataImage = counter_data.data();
    config.range = CUPTI_UserRange;        // exactly the launch we wrap, nothing before or after
    config.replayMode = CUPTI_UserReplay;  // we never replay: one pass suffices (checked)
    config.maxRangesPerPass = 1;
    config.numNestingLevels = 1;
    config.minNestingLevel = 1;
    config.passIndex = 0;
    config.targetNestingLevel = 1;
    return CuptiStatus(cuptiRangeProfilerSetConfig(&config), "cuptiRangeProfilerSetConfig");
  }

  void DisableRange() {
    if (range == nullptr) return;
    if (session) {  // armed, and no launch took the sample
      CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_Stop_Params, stop);
      stop.pRangeProfilerObject = range;
      cuptiRangeProfilerStop(&stop);
      session = false;
    }
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_Disable_Params, disable);
    disable.pRangeProfilerObject = range;
    cuptiRangeProfilerDisable(&disable);
    range = nullptr;
  }

  // Starts the pass. In user-range mode nothing is counted until PushRange, so the worker starts
  // it while arming: on the H100 this call takes ~100 ms, which the sampled launch, holding every
  // lane of the device, used to wait out (bench/results/2026-12-07_range_start).
  absl::Status StartSession() {
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_Start_Params, start);
    start.pRangeProfilerObject = range;
    if (absl::Status s = Timed("pass_start",
                               [&start] {
                                 return CuptiStatus(cuptiRangeProfilerStart(&start),
                                                    "cuptiRangeProfilerStart");
                               });
        !s.ok()) {
      return s;
    }
    session = true;
    return absl::OkStatus();
  }

  // Opens the range: what runs on the context from here to StopRange is counted.
  absl::Status PushRange() {
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_PushRange_Params, push);
    push.pRangeProfilerObject = range;
    push.pRangeName = "convserve_occupancy_sample";
    return CuptiStatus(cuptiRangeProfilerPushRange(&push), "cuptiRangeProfilerPushRange");
  }

  // Closes the range; all of it was collected in this one pass.
  absl::Status StopRange() {
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_PopRange_Params, pop);
    pop.pRangeProfilerObject = range;
    absl::Status popped =
        CuptiStatus(cuptiRangeProfilerPopRange(&pop), "cuptiRangeProfilerPopRange");
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_Stop_Params, stop);
    stop.pRangeProfilerObject = range;
    absl::Status stopped = CuptiStatus(cuptiRangeProfilerStop(&stop), "cuptiRangeProfilerStop");
    session = false;
    if (!popped.ok()) return popped;
    if (!stopped.ok()) return stopped;
    if (!stop.isAllPassSubmitted) {
      return absl::FailedPreconditionError(
          absl::StrCat(metric(), " needs more than one pass on ", chip));
    }
    return absl::OkStatus();
  }

  // The metric's value (percent) over the closed range.
  absl::StatusOr<double> DecodeAndEvaluate() {
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_DecodeData_Params, decode);
    decode.pRangeProfilerObject = range;
    if (absl::Status s =
            CuptiStatus(cuptiRangeProfilerDecodeData(&decode), "cuptiRangeProfilerDecodeData");
        !s.ok()) {
      return s;
    }
    if (decode.numOfRangeDropped != 0) {
      return absl::InternalError("cuptiRangeProfilerDecodeData dropped the sampled range");
    }
    CONVSERVE_CUPTI_PARAMS(CUpti_RangeProfiler_GetCounterDataInfo_Params, info);
    info.pCounterDataImage = counter_data.data();
    info.counterDataImageSize = counter_data.size();
    if (absl::Status s = CuptiStatus(cuptiRangeProfilerGetCounterDataInfo(&info),
                                     "cuptiRangeProfilerGetCounterDataInfo");
        !s.ok()) {
      return s;
    }
    if (info.numTotalRanges < 1) return absl::InternalError("the sampled range was not recorded");

    const char* metrics[] = {metric()};
    double value = NAN;
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_EvaluateToGpuValues_Params, evaluate);
    evaluate.pHostObject = host;
    evaluate.pCounterDataImage = counter_data.data();
    evaluate.counterDataImageSize = counter_data.size();
    evaluate.rangeIndex = 0;
    evaluate.ppMetricNames = metrics;
    evaluate.numMetrics = 1;
    evaluate.pMetricValues = &value;
    if (absl::Status s = CuptiStatus(cuptiProfilerHostEvaluateToGpuValues(&evaluate),
                                     "cuptiProfilerHostEvaluateToGpuValues");
        !s.ok()) {
      return s;
    }
    return value;
  }
};

OccupancySampler::OccupancySampler(OccupancySamplerOptions options)
    : options_(std::move(options)), policy_(options_.interval) {
  if (options_.device_label.empty()) options_.device_label = absl::StrCat("cuda:", options_.device);
  if (!options_.log) {
    options_.log = [](bool, std::string_view line) {
      std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    };
  }
}

OccupancySampler::~OccupancySampler() {
  {
    absl::MutexLock lock(&phase_mu_);
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
}

std::unique_ptr<OccupancySampler> OccupancySampler::Create(OccupancySamplerOptions options) {
  std::unique_ptr<OccupancySampler> sampler(new OccupancySampler(std::move(options)));
  if (absl::Status status = sampler->Initialize(); !status.ok()) {
    sampler->Disable(status).IgnoreError();
    return sampler;
  }
  sampler->enabled_.store(true);
  if (sampler->options_.metrics != nullptr) {
    sampler->options_.metrics->SetOccupancySamplerEnabled(sampler->options_.device_label, true);
  }
  sampler->options_.log(
      false, absl::StrCat("occupancy sampler on ", sampler->options_.device_label, " (",
                          sampler->cupti_->chip, "): one launch every ",
                          absl::FormatDuration(sampler->options_.interval), " at most, after ",
                          absl::FormatDuration(sampler->options_.quiet_period), " without one"));
  sampler->worker_ = std::thread([raw = sampler.get()] { raw->WorkerLoop(); });
  return sampler;
}

absl::Status OccupancySampler::Initialize() {
  cupti_ = std::make_unique<Cupti>();
  Cupti& c = *cupti_;
  if (absl::Status s = CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice"); !s.ok()) {
    return s;
  }
  if (absl::Status s = CudaStatus(cudaFree(nullptr), "cudaFree (context creation)"); !s.ok()) {
    return s;
  }
  // The context through the runtime's driver entry points, so nothing links libcuda directly
  // (binaries must start on machines without the driver).
  using CtxGetCurrent = CUresult (*)(CUcontext*);
  void* entry = nullptr;
  cudaDriverEntryPointQueryResult found{};
  if (absl::Status s = CudaStatus(cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &entry, 12000,
                                                                   cudaEnableDefault, &found),
                                  "cudaGetDriverEntryPointByVersion(cuCtxGetCurrent)");
      !s.ok()) {
    return s;
  }
  if (found != cudaDriverEntryPointSuccess || entry == nullptr ||
      reinterpret_cast<CtxGetCurrent>(entry)(&c.context) != CUDA_SUCCESS || c.context == nullptr) {
    return absl::FailedPreconditionError("cannot get the device's CUDA context");
  }

  c.device = options_.device;
  c.on_step = &options_.on_step;
  absl::Status probe = c.Attach();
  CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Host_GetNumOfPasses_Params, passes);
  passes.configImageSize = c.config_image.size();
  passes.pConfigImage = c.config_image.data();
  if (probe.ok()) {
    probe =
        CuptiStatus(cuptiProfilerHostGetNumOfPasses(&passes), "cuptiProfilerHostGetNumOfPasses");
  }
  if (probe.ok() && passes.numOfPasses != 1) {
    probe = absl::FailedPreconditionError(absl::StrCat(kMetricName, " needs ", passes.numOfPasses,
                                                       " passes on ", c.chip, "; we never replay"));
  }
  // Arm and close one empty range now, so that missing permissions or busy counters show at
  // start-up rather than on the first sampled launch.
  if (probe.ok()) probe = c.EnableRange();
  if (probe.ok()) probe = c.StartSession();
  if (probe.ok()) probe = c.PushRange();
  if (probe.ok()) probe = c.StopRange();
  if (!probe.ok()) {
    c.Detach().IgnoreError();  // a sampler that is off leaves nothing attached
    return probe;
  }
  // Detached until the first sample; a failure to detach is no reason to stop sampling.
  Detach();
  return absl::OkStatus();
}

absl::Status OccupancySampler::Disable(absl::Status why) {
  const bool was_enabled = enabled_.exchange(false);
  {
    absl::MutexLock lock(&phase_mu_);
    off_ = true;
  }
  {
    std::lock_guard<std::mutex> lock(reason_mutex_);
    if (!disabled_reason_.empty()) return why;  // logged already
    disabled_reason_ = why.ToString();
  }
  options_.log(true,
               absl::StrCat("occupancy sampler on ", options_.device_label,
                            was_enabled ? " turned itself off: " : " is off: ", why.ToString()));
  if (options_.metrics != nullptr) {
    options_.metrics->SetOccupancySamplerEnabled(options_.device_label, false);
  }
  return why;
}

std::string OccupancySampler::disabled_reason() const {
  std::lock_guard<std::mutex> lock(reason_mutex_);
  return disabled_reason_;
}

bool OccupancySampler::ShouldSample(std::string_view kernel_config) {
  if (!enabled()) return false;
  const absl::Time now = absl::Now();
  last_launch_ns_.store(absl::ToUnixNanos(now), std::memory_order_relaxed);
  if (!armed_.load(std::memory_order_acquire)) {
    if (policy_.Due(now)) RequestArming();
    return false;
  }
  if (!policy_.ShouldSample(kernel_config, now)) return false;
  absl::MutexLock lock(&phase_mu_);
  if (phase_ != Phase::kArmed) {  // the worker disarmed meanwhile
    policy_.Finished();
    return false;
  }
  phase_ = Phase::kSampling;
  armed_.store(false, std::memory_order_relaxed);
  sample_status_ = absl::FailedPreconditionError("Begin was not called");
  return true;
}

void OccupancySampler::RequestArming() {
  if (arming_requested_.exchange(true)) return;  // until the worker is back to detached
  absl::MutexLock lock(&phase_mu_);
  if (phase_ == Phase::kDetached) phase_ = Phase::kArming;
}

bool OccupancySampler::ArmAndWait(absl::Duration timeout) {
  absl::MutexLock lock(&phase_mu_);
  auto settled = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(phase_mu_) {
    return phase_ == Phase::kDetached || phase_ == Phase::kArmed || off_;
  };
  // A sample that just ended is being disarmed first.
  if (!phase_mu_.AwaitWithTimeout(absl::Condition(&settled), timeout)) return false;
  if (phase_ == Phase::kDetached && !off_) {
    arming_requested_.store(true);
    phase_ = Phase::kArming;
  }
  auto armed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(phase_mu_) {
    return phase_ == Phase::kArmed || off_;
  };
  return phase_mu_.AwaitWithTimeout(absl::Condition(&armed), timeout) && phase_ == Phase::kArmed;
}

void OccupancySampler::WaitUntilDisarmed() {
  absl::MutexLock lock(&phase_mu_);
  auto disarmed = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(phase_mu_) {
    return phase_ == Phase::kDetached || worker_done_;
  };
  phase_mu_.Await(absl::Condition(&disarmed));
}

void OccupancySampler::WorkerLoop() {
  while (true) {
    {
      absl::MutexLock lock(&phase_mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(phase_mu_) {
        return phase_ == Phase::kArming || stopping_;
      };
      phase_mu_.Await(absl::Condition(&wake));
      if (stopping_ || off_) break;
    }
    if (!WaitForQuiet(absl::InfiniteDuration())) break;
    absl::Status armed = cupti_->Attach();
    if (armed.ok()) armed = cupti_->EnableRange();
    if (armed.ok()) armed = cupti_->StartSession();
    if (!armed.ok()) {
      cupti_->Detach().IgnoreError();
      Disable(armed).IgnoreError();
      break;
    }
    bool sampled = false;
    {
      absl::MutexLock lock(&phase_mu_);
      phase_ = Phase::kArmed;
      armed_.store(true, std::memory_order_release);
      // The next launch of a due configuration takes the sample. As arming waited for a lull,
      // that is the first launch after it, however long the lull lasts: an idle device pays
      // nothing for CUPTI. When launches come but none is due (the rotation skips their
      // configurations) for kArmedWindow, CUPTI goes back and the sample waits an interval.
      auto taken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(phase_mu_) {
        return phase_ != Phase::kArmed || stopping_;
      };
      while (true) {
        const int64_t window_start_ns = absl::ToUnixNanos(absl::Now());
        if (phase_mu_.AwaitWithTimeout(absl::Condition(&taken), kArmedWindow)) break;
        if (last_launch_ns_.load(std::memory_order_relaxed) >= window_start_ns) break;
      }
      armed_.store(false, std::memory_order_relaxed);
      // A launch that took the sample finishes it, even while stopping.
      auto finished = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(phase_mu_) {
        return phase_ != Phase::kSampling;
      };
      phase_mu_.Await(absl::Condition(&finished));
      sampled = phase_ == Phase::kSampled;
      phase_ = Phase::kDisarming;
    }
    if (!sampled) policy_.Postpone(absl::Now());
    WaitForQuiet(kDisarmQuietWait);  // stopping: detach now
    Detach();
    {
      absl::MutexLock lock(&phase_mu_);
      phase_ = Phase::kDetached;
      arming_requested_.store(false);
    }
  }
  absl::MutexLock lock(&phase_mu_);
  phase_ = Phase::kDetached;
  worker_done_ = true;
}

bool OccupancySampler::WaitForQuiet(absl::Duration limit) {
  const absl::Time deadline = absl::Now() + limit;
  absl::MutexLock lock(&phase_mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    const absl::Time quiet_at =
        absl::FromUnixNanos(last_launch_ns_.load(std::memory_order_relaxed)) +
        options_.quiet_period;
    if (now >= quiet_at || now >= deadline) return true;
    // Sleeps until the launch seen last would be quiet_period old; a later launch moves that on.
    phase_mu_.AwaitWithDeadline(absl::Condition(&stopping_), std::min(quiet_at, deadline));
  }
  return false;
}

void OccupancySampler::Detach() {
  // CUPTI left or stayed; either way later samples work, so this only informs.
  if (absl::Status s = cupti_->Detach(); !s.ok() && !detach_failure_logged_.exchange(true)) {
    options_.log(true, absl::StrCat("occupancy sampler on ", options_.device_label,
                                    ": CUPTI stays attached between samples (every launch then "
                                    "costs more host time): ",
                                    s.ToString()));
  }
}

absl::Status OccupancySampler::Begin(CUstream_st* stream) {
  // Nothing launched before the range may be counted in it.
  absl::Status status = CudaStatus(cudaSetDevice(options_.device), "cudaSetDevice");
  if (status.ok()) status = CudaStatus(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  if (status.ok()) status = cupti_->PushRange();
  range_open_ = status.ok();
  sample_status_ = status;
  if (!status.ok()) return Disable(status);
  return absl::OkStatus();
}

absl::Status OccupancySampler::EndRange(CUstream_st* stream) {
  if (!range_open_) return sample_status_;
  range_open_ = false;
  const absl::Status synced = CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
  const absl::Status stopped = cupti_->StopRange();
  sample_status_ = !synced.ok() ? synced : stopped;
  return sample_status_;
}

absl::StatusOr<double> OccupancySampler::Collect() {
  absl::StatusOr<double> percent =
      sample_status_.ok() ? cupti_->DecodeAndEvaluate() : absl::StatusOr<double>(sample_status_);
  policy_.Finished();
  {
    absl::MutexLock lock(&phase_mu_);
    phase_ = Phase::kSampled;  // the worker disarms and detaches
  }
  if (!percent.ok()) return Disable(percent.status());
  if (!std::isfinite(*percent)) {
    // Nothing ran inside the range (the launch failed): no figure, but nothing wrong with CUPTI.
    return absl::FailedPreconditionError("no kernel ran in the sampled range");
  }
  return std::clamp(*percent / 100.0, 0.0, 1.0);
}

absl::StatusOr<double> OccupancySampler::End(CUstream_st* stream) {
  EndRange(stream).IgnoreError();  // Collect returns its failure
  return Collect();
}

SampledLaunch::SampledLaunch(OccupancySampler* sampler, absl::Mutex* launch_mu,
                             std::string_view kernel_config, CUstream_st* stream)
    : sampler_(sampler), mu_(launch_mu), stream_(stream) {
  exclusive_ = sampler_ != nullptr && sampler_->ShouldSample(kernel_config);
  if (exclusive_) {
    mu_->WriterLock();
    sampling_ = sampler_->Begin(stream_).ok();  // a failure turned the sampler off
  } else {
    mu_->ReaderLock();
  }
}

SampledLaunch::~SampledLaunch() { Finish().IgnoreError(); }

absl::StatusOr<double> SampledLaunch::Finish() {
  if (mu_ == nullptr) return absl::FailedPreconditionError("launch not sampled");
  if (!exclusive_) {
    mu_->ReaderUnlock();
    mu_ = nullptr;
    return absl::FailedPreconditionError("launch not sampled");
  }
  // The range closes with the other lanes held; decoding it needs only this thread.
  sampler_->EndRange(stream_).IgnoreError();
  mu_->WriterUnlock();
  mu_ = nullptr;
  absl::StatusOr<double> achieved = sampler_->Collect();
  if (!sampling_) return absl::FailedPreconditionError("launch not sampled");
  sampling_ = false;
  return achieved;
}

}  // namespace convserve
