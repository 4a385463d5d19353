#include "server/device.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/cpu_executor.h"
#include "server/log.h"
#ifdef CONVSERVE_HAVE_CUDA_ENGINE
#include "server/cuda_executor.h"
#endif

namespace convserve {
namespace {

absl::StatusOr<std::unique_ptr<Executor>> CreateGpuExecutor(const ServerOptions& options, int index,
                                                            int device, Metrics* metrics) {
#ifdef CONVSERVE_HAVE_CUDA_ENGINE
  ConvEngineOptions engine_options;
  engine_options.device = device;
  // Every GPU's engine shares the one file: records are keyed by the GPU model (the tuner's
  // fingerprint), and the tuner serialises its read-merge-write of the file with a file lock,
  // so engines tuning at once keep each other's entries (docs/operations.md).
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
      CudaExecutor::Create(index, device, *std::move(engine), metrics,
                           absl::Milliseconds(options.occupancy_sample_interval_ms),
                           options.cuda_graphs, options.gpu_lanes);
  return executor;
#else
  (void)options;
  (void)index;
  (void)device;
  (void)metrics;
  return absl::FailedPreconditionError(
      "this convserve-server was built without the CUDA engine (kernels/cuda)");
#endif
}

// "cuda:N" or "N" -> N; false when it is neither (the sign is kept for the caller to reject).
bool ParseOrdinal(absl::string_view entry, int* ordinal) {
  absl::ConsumePrefix(&entry, "cuda:");
  return !entry.empty() && absl::SimpleAtoi(entry, ordinal);
}

}  // namespace

absl::StatusOr<DevicePlan> ParseDevices(absl::string_view device, absl::string_view devices,
                                        int visible_gpus) {
  DevicePlan plan;
  devices = absl::StripAsciiWhitespace(devices);
  if (devices.empty()) {
    const std::string bad = absl::StrCat("--device=", device, ": expected auto, cpu or cuda:N");
    if (device == "auto") {
      plan.auto_select = true;
    } else if (device == "cpu") {
      plan.cpu = true;
      plan.ordinals.push_back(0);
    } else if (absl::StartsWith(device, "cuda:")) {
      int ordinal = -1;
      if (!ParseOrdinal(device, &ordinal) || ordinal < 0) return absl::InvalidArgumentError(bad);
      plan.ordinals.push_back(ordinal);
    } else {
      return absl::InvalidArgumentError(bad);
    }
    return plan;
  }

  const std::string flag = absl::StrCat("--devices=", devices);
  if (device != "auto") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--device=", device, " and ", flag,
        " both choose devices: give --devices alone (it takes cpu or cuda:N entries too)"));
  }
  if (devices == "all") {
    if (visible_gpus <= 0) {
      return absl::FailedPreconditionError(absl::StrCat(flag, ": no CUDA GPU is visible"));
    }
    for (int i = 0; i < visible_gpus; ++i) plan.ordinals.push_back(i);
    return plan;
  }
  const std::vector<absl::string_view> entries = absl::StrSplit(devices, ',');
  for (absl::string_view entry : entries) {
    if (absl::StripAsciiWhitespace(entry).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": has an empty entry"));
    }
  }
  const size_t cpus =
      static_cast<size_t>(std::count_if(entries.begin(), entries.end(), [](absl::string_view e) {
        return absl::StripAsciiWhitespace(e) == "cpu";
      }));
  if (cpus == entries.size()) {
    plan.cpu = true;
    for (size_t i = 0; i < cpus; ++i) plan.ordinals.push_back(static_cast<int>(i));
    return plan;
  }
  if (cpus > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag,
        ": lists both GPUs and cpu; the CPU reference backend is far slower than a GPU and "
        "would hold back every batch sent to it"));
  }
  for (absl::string_view raw : entries) {
    const absl::string_view entry = absl::StripAsciiWhitespace(raw);
    int ordinal = -1;
    if (!ParseOrdinal(entry, &ordinal)) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": '", entry,
                       "' is not a device: expected all, or a comma list of N, cuda:N or cpu"));
    }
    if (ordinal < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": GPU ordinal ", ordinal, " is negative"));
    }
    if (std::find(plan.ordinals.begin(), plan.ordinals.end(), ordinal) != plan.ordinals.end()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": GPU ", ordinal, " is listed twice"));
    }
    if (ordinal >= visible_gpus) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": GPU ", ordinal, " does not exist: ", visible_gpus, " CUDA GPU",
                       visible_gpus == 1 ? " is" : "s are", " visible",
                       visible_gpus > 0 ? absl::StrCat(" (0..", visible_gpus - 1, ")") : ""));
    }
    plan.ordinals.push_back(ordinal);
  }
  return plan;
}

int VisibleGpuCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clears the error so that later CUDA calls do not see it
    return 0;
  }
  return count;
}

absl::StatusOr<std::vector<std::unique_ptr<Executor>>> CreateExecutors(const ServerOptions& options,
                                                                       Metrics* metrics) {
  if (options.gpu_lanes < 1 || options.gpu_lanes > kMaxGpuLanes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--gpu_lanes=", options.gpu_lanes, ": expected 1 to ", kMaxGpuLanes));
  }
  // Counting GPUs initialises the CUDA runtime: only where --devices names GPUs.
  bool needs_count = false;
  for (absl::string_view entry : absl::StrSplit(options.devices, ',', absl::SkipWhitespace())) {
    needs_count |= absl::StripAsciiWhitespace(entry) != "cpu";
  }
  absl::StatusOr<DevicePlan> plan =
      ParseDevices(options.device, options.devices, needs_count ? VisibleGpuCount() : 0);
  if (!plan.ok()) return plan.status();

  std::vector<std::unique_ptr<Executor>> executors;
  if (plan->auto_select) {
    absl::StatusOr<std::unique_ptr<Executor>> gpu = CreateGpuExecutor(options, 0, 0, metrics);
    if (gpu.ok()) {
      executors.push_back(*std::move(gpu));
    } else {
      LogWarning("--device=auto: no usable GPU (", gpu.status().message(),
                 "); serving on the CPU reference backend, which is slow");
      executors.push_back(std::make_unique<CpuExecutor>(0, options.cpu_threads, metrics));
    }
  } else if (plan->cpu) {
    const bool several = plan->ordinals.size() > 1;
    for (int i : plan->ordinals) {
      executors.push_back(
          std::make_unique<CpuExecutor>(i, options.cpu_threads, metrics, /*numbered=*/several));
    }
  } else {
    const std::string flag =
        options.devices.empty() ? "--device=" + options.device : "--devices=" + options.devices;
    for (int ordinal : plan->ordinals) {
      absl::StatusOr<std::unique_ptr<Executor>> gpu =
          CreateGpuExecutor(options, static_cast<int>(executors.size()), ordinal, metrics);
      if (!gpu.ok()) {
        return absl::FailedPreconditionError(
            absl::StrCat(flag, ": cuda:", ordinal, ": ", gpu.status().message()));
      }
      executors.push_back(*std::move(gpu));
    }
  }
  std::vector<std::string> names;
  for (const auto& executor : executors) names.push_back(executor->device_name());
  LogInfo("serving on ", absl::StrJoin(names, ", "));
  return executors;
}

}  // namespace convserve
