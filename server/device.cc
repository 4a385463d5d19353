#include "server/device.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/cpu_executor.h"
#include "server/log.h"
#ifdef CONVSERVE_HAVE_CUDA_ENGINE
#include "server/cuda_executor.h"
#endif

namespace convserve {
namespace {

absl::StatusOr<std::unique_ptr<Executor>> CreateGpuExecutor(const ServerOptions& options,
                                                            int device, Metrics* metrics) {
#ifdef CONVSERVE_HAVE_CUDA_ENGINE
  ConvEngineOptions engine_options;
  engine_options.device = device;
  engine_options.tuning_cache_path =
      options.tuning_cache.empty() ? options.state_dir + "/tuning_cache.tsv" : options.tuning_cache;
  std::error_code ec;
  const std::filesystem::path cache_dir =
      std::filesystem::path(engine_options.tuning_cache_path).parent_path();
  if (!cache_dir.empty()) std::filesystem::create_directories(cache_dir, ec);
  if (ec) {
    LogWarning("cannot create ", cache_dir.string(), " for the tuning cache: ", ec.message());
  }
  absl::StatusOr<std::unique_ptr<ConvEngine>> engine = ConvEngine::Create(engine_options);
  if (!engine.ok()) return engine.status();
  absl::StatusOr<std::unique_ptr<Executor>> executor =
      CudaExecutor::Create(/*index=*/0, device, *std::move(engine), metrics,
                           absl::Milliseconds(options.occupancy_sample_interval_ms));
  return executor;
#else
  return absl::FailedPreconditionError(
      "this convserve-server was built without the CUDA engine (kernels/cuda)");
#endif
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Executor>>> CreateExecutors(const ServerOptions& options,
                                                                       Metrics* metrics) {
  std::vector<std::unique_ptr<Executor>> executors;
  const std::string& device = options.device;
  if (device == "cpu") {
    executors.push_back(std::make_unique<CpuExecutor>(0, options.cpu_threads, metrics));
  } else if (absl::StartsWith(device, "cuda:")) {
    int ordinal = -1;
    if (!absl::SimpleAtoi(device.substr(5), &ordinal) || ordinal < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device=", device, ": expected auto, cpu or cuda:N"));
    }
    absl::StatusOr<std::unique_ptr<Executor>> gpu = CreateGpuExecutor(options, ordinal, metrics);
    if (!gpu.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--device=", device, ": ", gpu.status().message()));
    }
    executors.push_back(*std::move(gpu));
  } else if (device == "auto") {
    absl::StatusOr<std::unique_ptr<Executor>> gpu = CreateGpuExecutor(options, 0, metrics);
    if (gpu.ok()) {
      executors.push_back(*std::move(gpu));
    } else {
      LogWarning("--device=auto: no usable GPU (", gpu.status().message(),
                 "); serving on the CPU reference backend, which is slow");
      executors.push_back(std::make_unique<CpuExecutor>(0, options.cpu_threads, metrics));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--device=", device, ": expected auto, cpu or cuda:N"));
  }
  LogInfo("serving on ", executors.front()->device_name());
  return executors;
}

}  // namespace convserve
