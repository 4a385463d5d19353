// Chooses the executors for --device and --devices.
//
// --device (one device): "cpu" (the reference backend), "cuda:N" (that GPU; fails when it
// cannot be used) or "auto" (GPU 0 when the CUDA engine starts, else the CPU reference backend,
// saying so in the log).
// --devices (several): "all" (every visible CUDA GPU), or a comma list of GPUs ("0,1",
// "cuda:0,cuda:2") or of CPU reference executors ("cpu,cpu", for tests of the multi-executor
// paths without a GPU). Given, it replaces --device, which must then stay "auto".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/executor.h"
#include "server/metrics/metrics.h"
#include "server/server_options.h"

namespace convserve {

// What --device / --devices ask for, before any device is touched.
struct DevicePlan {
  // --device=auto without --devices: GPU 0 when usable, else one CPU reference executor.
  bool auto_select = false;
  bool cpu = false;  // the executors are CPU reference executors, else CUDA GPUs
  // One entry per executor, in executor order (Executor::index()): the CUDA ordinal of each GPU,
  // or 0, 1, ... for CPU executors. Empty only with auto_select.
  std::vector<int> ordinals;
};

// Parses the two flags; `visible_gpus` is how many CUDA GPUs this process sees (for "all" and
// the range check). INVALID_ARGUMENT naming the flag for malformed values, negative, duplicate
// or out-of-range ordinals, a list mixing GPUs and "cpu", and --device other than "auto"
// together with --devices; FAILED_PRECONDITION for --devices=all when no GPU is visible.
absl::StatusOr<DevicePlan> ParseDevices(absl::string_view device, absl::string_view devices,
                                        int visible_gpus);

// How many CUDA GPUs this process sees (CUDA_VISIBLE_DEVICES applies); 0 without a driver.
int VisibleGpuCount();

// Creates the executors options.device / options.devices ask for, executor i with index() i.
// INVALID_ARGUMENT / FAILED_PRECONDITION as ParseDevices, INVALID_ARGUMENT for options.gpu_lanes
// out of range; FAILED_PRECONDITION naming the GPU
// when an asked-for GPU cannot be used. `metrics` may be null and must outlive the executors.
absl::StatusOr<std::vector<std::unique_ptr<Executor>>> CreateExecutors(const ServerOptions& options,
                                                                       Metrics* metrics);

}  // namespace convserve
