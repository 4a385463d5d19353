// ConvEngine on one CUDA GPU: packs weights, plans launches through the Tuner (with our own
// MeasureFn) or the heuristic, and runs the kernels of kConfigTable.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/conv_engine.h"
#include "kernels/cuda/conv_runner.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/helper_kernels.h"
#include "kernels/cuda/tile_config.h"
#include "kernels/tuner.h"

namespace convserve {
namespace {

using cuda::CudaEvent;
using cuda::CudaStreamOwner;
using cuda::DeviceBuffer;

class CudaPackedWeights : public PackedWeights {
 public:
  CudaPackedWeights(const ConvParams& params, DeviceBuffer gemm, DeviceBuffer depthwise,
                    DeviceBuffer bias)
      : params_(params),
        gemm_(std::move(gemm)),
        depthwise_(std::move(depthwise)),
        bias_(std::move(bias)) {}
  const ConvParams& params() const override { return params_; }
  int64_t resident_bytes() const override {
    return gemm_.bytes() + depthwise_.bytes() + bias_.bytes();
  }
  cuda::DeviceWeights device() const {
    return {gemm_.get(), depthwise_.get(), params_.has_bias ? bias_.get() : nullptr};
  }

 private:
  ConvParams params_;
  DeviceBuffer gemm_;
  DeviceBuffer depthwise_;
  DeviceBuffer bias_;
};

bool SameLayer(const ConvParams& a, const ConvParams& b) {
  return a.in_channels == b.in_channels && a.out_channels == b.out_channels &&
         a.kernel_h == b.kernel_h && a.kernel_w == b.kernel_w && a.groups == b.groups &&
         a.dtype == b.dtype && a.has_bias == b.has_bias;
}

int64_t NextPow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

class CudaConvEngine : public ConvEngine {
 public:
  CudaConvEngine(const ConvEngineOptions& options, cuda::DeviceInfo device)
      : options_(options), device_(std::move(device)) {
    TunerOptions tuner_options;
    tuner_options.fingerprint.gpu_name = device_.name;
    tuner_options.fingerprint.sm_count = device_.sm_count;
    tuner_options.fingerprint.compute_capability = device_.compute_capability;
    tuner_options.fingerprint.driver_version = device_.driver_version;
    tuner_options.fingerprint.library_version = cuda::kConfigTableVersion;
    tuner_options.cache_path = options.tuning_cache_path;
    tuner_options.background_tuning = options.background_tuning;
    tuner_ = std::make_unique<Tuner>(
        tuner_options, [this](const ConvProblem& problem) { return Measure(problem); });
  }
  ~CudaConvEngine() override { tuner_.reset(); }  // background tuning uses this engine

  std::string device_name() const override {
    return absl::StrCat("cuda:", device_.device, " (", device_.name, ", sm_",
                        device_.compute_capability, ")");
  }
  int64_t device_memory_total() const override { return MemInfo().second; }
  int64_t device_memory_used() const override {
    const auto [free_bytes, total] = MemInfo();
    return total - free_bytes;
  }

  absl::StatusOr<std::shared_ptr<const PackedWeights>> PackWeights(const ConvParams& params,
                                                                   const void* weights_oihw,
                                                                   const void* bias) override {
    CONVSERVE_RETURN_IF_ERROR(ValidateParams(params));
    if (weights_oihw == nullptr || (params.has_bias && bias == nullptr)) {
      return absl::InvalidArgumentError("weights (and bias when has_bias) must be given");
    }
    CONVSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_.device));
    absl::StatusOr<CudaStreamOwner> stream = CudaStreamOwner::Create();
    if (!stream.ok()) return stream.status();
    absl::StatusOr<DeviceBuffer> raw = DeviceBuffer::Allocate(params.weight_bytes());
    absl::StatusOr<DeviceBuffer> gemm = DeviceBuffer::Allocate(cuda::PackedGemmBytes(params));
    absl::StatusOr<DeviceBuffer> dw = DeviceBuffer::Allocate(cuda::PackedDepthwiseBytes(params));
    absl::StatusOr<DeviceBuffer> bias_buffer = DeviceBuffer::Allocate(params.bias_bytes());
    for (const absl::Status& s : {raw.status(), gemm.status(), dw.status(), bias_buffer.status()}) {
      CONVSERVE_RETURN_IF_ERROR(s);
    }
    CONVSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(raw->get(), weights_oihw, params.weight_bytes(),
                                                   cudaMemcpyHostToDevice, stream->get()));
    if (params.has_bias) {
      CONVSERVE_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bias_buffer->get(), bias, params.bias_bytes(),
                                                     cudaMemcpyHostToDevice, stream->get()));
    }
    CONVSERVE_RETURN_IF_ERROR(
        cuda::PackWeightsOnDevice(params, raw->get(), gemm->get(), dw->get(), stream->get()));
    CONVSERVE_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream->get()));
    return std::shared_ptr<const PackedWeights>(std::make_shared<CudaPackedWeights>(
        params, *std::move(gemm), *std::move(dw), *std::move(bias_buffer)));
  }

  absl::StatusOr<ConvLaunch> Plan(const ConvProblem& problem) override {
    CONVSERVE_RETURN_IF_ERROR(ValidateProblem(problem));
    ConvLaunch launch;
    const std::optional<TunedEntry> entry = tuner_->Choose(problem);
    if (entry.has_value()) {
      const int index = cuda::FindConfig(entry->config);
      if (index >= 0 && cuda::CanImplement(index, problem, device_)) {
        launch.config_index = index;
        launch.tuned = true;
      }
    }
    if (launch.config_index < 0) launch.config_index = cuda::HeuristicConfig(problem, device_);
    if (launch.config_index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("no kernel configuration can run ", problem.ToString()));
    }
    launch.config_name = cuda::ConfigName(cuda::kConfigTable[launch.config_index]);
    launch.workspace_bytes = cuda::WorkspaceBytes(launch.config_index, problem);
    return launch;
  }

  absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) override {
    CONVSERVE_RETURN_IF_ERROR(ValidateProblem(problem));
    absl::StatusOr<TunedEntry> entry = tuner_->Tune(problem);
    if (!entry.ok()) return entry.status();
    TuningResult result;
    result.problem = problem;
    result.problem.batch = BatchBucket(problem.batch);
    result.config = entry->config;
    result.time_us = entry->time_us;
    result.runner_up = entry->runner_up;
    result.runner_up_time_us = entry->runner_up_time_us;
    result.tuning_seconds = entry->measure_gpu_seconds;
    return result;
  }

  absl::Status Run(const ConvProblem& problem, const ConvLaunch& launch,
                   const PackedWeights& weights, const void* input, void* output, void* workspace,
                   CudaStream stream) override {
    const auto* packed = dynamic_cast<const CudaPackedWeights*>(&weights);
    if (packed == nullptr) return absl::InvalidArgumentError("weights not packed by this engine");
    if (!SameLayer(packed->params(), problem.params)) {
      return absl::InvalidArgumentError("weights were packed for different layer params");
    }
    if (launch.config_index < 0 || launch.config_index >= cuda::kNumConfigs) {
      return absl::InvalidArgumentError("launch has no configuration; call Plan first");
    }
    if (launch.workspace_bytes < cuda::WorkspaceBytes(launch.config_index, problem) ||
        (launch.workspace_bytes > 0 && workspace == nullptr)) {
      return absl::InvalidArgumentError("workspace smaller than the launch needs");
    }
    CONVSERVE_RETURN_IF_ERROR(cuda::CheckImplementable(launch.config_index, problem, device_));
    CONVSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_.device));
    return cuda::LaunchConv(launch.config_index, problem, packed->device(), input, output,
                            workspace, stream);
  }

  std::vector<TuningResult> TunedFor(const ConvParams& params) const override {
    std::vector<TuningResult> results;
    for (const auto& [problem, entry] : tuner_->EntriesFor(params)) {
      TuningResult r;
      r.problem = problem;
      r.config = entry.config;
      r.time_us = entry.time_us;
      r.runner_up = entry.runner_up;
      r.runner_up_time_us = entry.runner_up_time_us;
      r.tuning_seconds = entry.measure_gpu_seconds;
      results.push_back(std::move(r));
    }
    return results;
  }

  TunerCounters tuner_counters() const override {
    TunerCounters c;
    c.runs = tuner_->runs();
    c.cache_hits = tuner_->cache_hits();
    c.cache_misses = tuner_->cache_misses();
    c.seconds = tuner_->tuning_seconds();
    return c;
  }

  ConfigOccupancy Occupancy(const ConvProblem& problem, const ConvLaunch& launch) const override {
    if (launch.config_index < 0 || launch.config_index >= cuda::kNumConfigs) return {};
    cudaSetDevice(device_.device);
    return cuda::QueryOccupancy(launch.config_index, problem);
  }

 private:
  std::pair<int64_t, int64_t> MemInfo() const {
    size_t free_bytes = 0, total = 0;
    if (cudaSetDevice(device_.device) != cudaSuccess ||
        cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) {
      return {0, 0};
    }
    return {static_cast<int64_t>(free_bytes), static_cast<int64_t>(total)};
  }

  // The configurations worth timing: those that can run the problem, without kinds a better
  // kind covers and without tiles far larger than the GEMM (mostly empty blocks).
  std::vector<int> Candidates(const ConvProblem& problem) const {
    bool vector_ok = false;
    for (int i = 0; i < cuda::kNumConfigs; ++i) {
      // Kinds that only run a transformed problem do not make the few-channel kind redundant.
      if (cuda::kConfigTable[i].kind == cuda::KernelKind::kTensorOp && cuda::RunsAsIs(i, problem) &&
          cuda::CanImplement(i, problem, device_)) {
        vector_ok = true;
      }
    }
    const bool tf32_ok =
        problem.params.dtype != DataType::kFloat32 || problem.params.fp32_math == Fp32Math::kTf32;
    std::vector<int> out;
    for (int i = 0; i < cuda::kNumConfigs; ++i) {
      const cuda::TileConfig& c = cuda::kConfigTable[i];
      if (!cuda::CanImplement(i, problem, device_)) continue;
      if (c.kind == cuda::KernelKind::kFewChannels && vector_ok) continue;
      if (c.kind == cuda::KernelKind::kSimt && tf32_ok && vector_ok) continue;
      if (c.kind != cuda::KernelKind::kDepthwise &&
          (c.block_m > std::max<int64_t>(32, NextPow2(problem.gemm_m())) ||
           c.block_n > std::max<int64_t>(64, NextPow2(problem.gemm_n())))) {
        continue;
      }
      out.push_back(i);
    }
    return out;
  }

  // The Tuner's MeasureFn: times every candidate on random scratch data of the problem's shape.
  absl::StatusOr<std::vector<CandidateTime>> Measure(const ConvProblem& problem) {
    std::lock_guard<std::mutex> lock(measure_mutex_);
    CONVSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_.device));
    const std::vector<int> candidates = Candidates(problem);
    if (candidates.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("no kernel configuration can run ", problem.ToString()));
    }
    const ConvParams& params = problem.params;
    // Each timed run starts behind a memset of twice the L2 (as in bench/conv): the L2 is cold,
    // as for a batch that was just copied in, and the stream is busy while the host prepares
    // the launch (the TMA kind encodes tensor maps), so only GPU time is measured, as in the
    // server, where the launch queues behind the batch's input copy. Inputs still rotate.
    const int copies = static_cast<int>(std::clamp<int64_t>(
        2 * device_.l2_bytes / std::max<int64_t>(1, problem.input_bytes()) + 1, 1, 4));
    const int64_t flush_bytes = std::max<int64_t>(device_.l2_bytes, 1 << 20) * 2;
    absl::StatusOr<DeviceBuffer> flush = DeviceBuffer::Allocate(flush_bytes);
    if (!flush.ok()) return flush.status();
    int64_t workspace = 0;
    for (int i : candidates) workspace = std::max(workspace, cuda::WorkspaceBytes(i, problem));
    absl::StatusOr<CudaStreamOwner> stream = CudaStreamOwner::Create();
    if (!stream.ok()) return stream.status();
    std::vector<DeviceBuffer> inputs;
    for (int i = 0; i < copies; ++i) {
      absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Allocate(problem.input_bytes());
      if (!b.ok()) return b.status();
      CONVSERVE_CUDA_RETURN_IF_ERROR(cuda::LaunchFillRandom(
          params.dtype, b->get(), problem.input_elements(), 1234 + i, stream->get()));
      inputs.push_back(*std::move(b));
    }
    absl::StatusOr<DeviceBuffer> output = DeviceBuffer::Allocate(problem.output_bytes());
    absl::StatusOr<DeviceBuffer> scratch = DeviceBuffer::Allocate(workspace);
    absl::StatusOr<DeviceBuffer> gemm = DeviceBuffer::Allocate(cuda::PackedGemmBytes(params));
    absl::StatusOr<DeviceBuffer> dw = DeviceBuffer::Allocate(cuda::PackedDepthwiseBytes(params));
    absl::StatusOr<DeviceBuffer> bias = DeviceBuffer::Allocate(params.bias_bytes());
    for (const absl::Status& s :
         {output.status(), scratch.status(), gemm.status(), dw.status(), bias.status()}) {
      CONVSERVE_RETURN_IF_ERROR(s);
    }
    const int64_t elem = DataTypeSize(params.dtype);
    CONVSERVE_CUDA_RETURN_IF_ERROR(
        cuda::LaunchFillRandom(params.dtype, gemm->get(), gemm->bytes() / elem, 99, stream->get()));
    if (dw->get() != nullptr) {
      CONVSERVE_CUDA_RETURN_IF_ERROR(
          cuda::LaunchFillRandom(params.dtype, dw->get(), dw->bytes() / elem, 98, stream->get()));
    }
    if (bias->get() != nullptr) {
      CONVSERVE_CUDA_RETURN_IF_ERROR(cuda::LaunchFillRandom(
          params.dtype, bias->get(), bias->bytes() / elem, 97, stream->get()));
    }
    const cuda::DeviceWeights weights{gemm->get(), dw->get(), bias->get()};
    absl::StatusOr<CudaEvent> start = CudaEvent::Create();
    absl::StatusOr<CudaEvent> stop = CudaEvent::Create();
    CONVSERVE_RETURN_IF_ERROR(start.status());
    CONVSERVE_RETURN_IF_ERROR(stop.status());

    // About 40 ms of GPU time per key: a few timed runs each, fewer for slow candidates.
    const double budget_us = 40000.0 / static_cast<double>(candidates.size());
    std::vector<CandidateTime> times;
    int rotation = 0;
    for (int config : candidates) {
      CandidateTime t;
      t.config = cuda::ConfigName(cuda::kConfigTable[config]);
      std::vector<float> runs;
      bool failed = false;
      for (int rep = 0; rep < 12 && !failed; ++rep) {
        const void* in = inputs[rotation++ % copies].get();
        CONVSERVE_CUDA_RETURN_IF_ERROR(
            cudaMemsetAsync(flush->get(), rep & 0xff, flush_bytes, stream->get()));
        CONVSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(start->get(), stream->get()));
        failed = !cuda::LaunchConv(config, problem, weights, in, output->get(), scratch->get(),
                                   stream->get())
                      .ok();
        CONVSERVE_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop->get(), stream->get()));
        CONVSERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop->get()));
        float ms = 0;
        CONVSERVE_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start->get(), stop->get()));
        t.gpu_time_us += ms * 1000.0;
        if (rep > 0) runs.push_back(ms);  // the first run is the warm-up
        if (rep >= 3 && t.gpu_time_us > budget_us) break;
      }
      if (failed || runs.empty()) continue;
      std::nth_element(runs.begin(), runs.begin() + runs.size() / 2, runs.end());
      t.time_us = runs[runs.size() / 2] * 1000.0;
      times.push_back(t);
    }
    if (times.empty()) return absl::InternalError("every candidate failed to launch");
    return times;
  }

  const ConvEngineOptions options_;
  const cuda::DeviceInfo device_;
  std::mutex measure_mutex_;
  std::unique_ptr<Tuner> tuner_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ConvEngine>> ConvEngine::Create(const ConvEngineOptions& options) {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no usable CUDA GPU: ", error == cudaSuccess ? "no devices" : cudaGetErrorString(error)));
  }
  if (options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(
        absl::StrCat("CUDA device ", options.device, " not present (", count, " found)"));
  }
  absl::StatusOr<cuda::DeviceInfo> device = cuda::PrepareDevice(options.device);
  if (!device.ok()) return absl::FailedPreconditionError(device.status().message());
  return std::unique_ptr<ConvEngine>(new CudaConvEngine(options, *std::move(device)));
}

}  // namespace convserve
