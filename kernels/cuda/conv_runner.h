// Running one configuration of the table on one problem: whether it can, the workspace it
// needs, the launch itself, its occupancy, and a heuristic default. Internal to the CUDA
// backend; the engine, the GPU test and the benchmark use it, the server never does.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/conv_engine.h"
#include "kernels/conv_problem.h"
#include "kernels/cuda/tile_config.h"

namespace convserve {
namespace cuda {

struct DeviceInfo {
  int device = 0;
  std::string name;
  int sm_count = 0;
  int compute_capability = 0;  // 90 for sm_90
  int max_smem_per_block = 0;  // opt-in limit
  int driver_version = 0;
  int64_t l2_bytes = 0;
};

// Reads the device's properties and raises every kernel's dynamic shared-memory limit on it.
// Call once per device (with it current) before launching anything.
absl::StatusOr<DeviceInfo> PrepareDevice(int device);

// Device pointers of one layer's packed weights (see PackWeightsOnDevice).
struct DeviceWeights {
  const void* gemm = nullptr;       // [groups][K/groups][k_pad], + a padded copy: PackedGemmBytes
  const void* depthwise = nullptr;  // [R][S][K], only when params.is_depthwise()
  const void* bias = nullptr;       // [K] or null
};

// The packed weight row stride: C/groups*R*S rounded up to 8.
int64_t PackedKPad(const ConvParams& params);
// The GEMM weights' buffer: the plain packing; for layers with fewer input channels than a
// 16-byte vector (groups 1) a second packing with C rounded up to the vector width; for layers
// with a space-to-depth form a packing of that form; each 256-byte aligned after the last.
int64_t PackedGemmBytes(const ConvParams& params);
int64_t PackedDepthwiseBytes(const ConvParams& params);  // 0 unless depthwise

// Packs device OIHW weights into `gemm` and (when non-null) `depthwise`. Asynchronous.
absl::Status PackWeightsOnDevice(const ConvParams& params, const void* oihw, void* gemm,
                                 void* depthwise, cudaStream_t stream);

// True when `config` (the TMA kind or a 16-byte-vector kind) runs `problem` in space-to-depth
// form: a strided layer (groups 1, no dilation, fp16/bf16) whose C the TMA kind cannot copy and
// whose stride blocks hold at most 64 channels; LaunchConv re-cuts the input in the workspace.
bool RunsSpaceToDepth(int config, const ConvProblem& problem);
// True when `config` (a 16-byte-vector kind) runs `problem` on a channel-padded NHWC copy of
// the input that LaunchConv makes in the workspace: C < the vector width, groups 1, and no
// space-to-depth form.
bool RunsChannelPadded(int config, const ConvProblem& problem);
// Neither of the two: `config` reads `problem`'s input as it is. While no mma.sync row runs a
// problem as it is, the few-channel kind stays a candidate (it may be faster than a transform).
bool RunsAsIs(int config, const ConvProblem& problem);

// OK when `config` can run `problem` on `device`; else FAILED_PRECONDITION saying why.
absl::Status CheckImplementable(int config, const ConvProblem& problem, const DeviceInfo& device);
inline bool CanImplement(int config, const ConvProblem& problem, const DeviceInfo& device) {
  return CheckImplementable(config, problem, device).ok();
}

// Device scratch the launch needs: the NHWC copy of an NCHW input (channel-padded where the
// configuration runs padded), split-K partial sums.
int64_t WorkspaceBytes(int config, const ConvProblem& problem);

// Enqueues `config` on `stream`. The caller has checked CanImplement. `input`/`output` in the
// problem's layouts; `workspace` >= WorkspaceBytes and 256-byte aligned.
absl::Status LaunchConv(int config, const ConvProblem& problem, const DeviceWeights& weights,
                        const void* input, void* output, void* workspace, cudaStream_t stream);

// Registers, shared memory, spills and theoretical occupancy of `config` for `problem`'s dtype.
ConfigOccupancy QueryOccupancy(int config, const ConvProblem& problem);

// A reasonable configuration without measuring: the fewest estimated cycles from a
// waves x tile-efficiency model. -1 when nothing can run the problem.
int HeuristicConfig(const ConvProblem& problem, const DeviceInfo& device);

// Index of the configuration called `name`, or -1.
int FindConfig(const std::string& name);

}  // namespace cuda
}  // namespace convserve
