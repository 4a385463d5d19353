// What every conv kernel receives: one plain struct, computed on the host from a ConvProblem
// (MakeKernelParams) and passed by value as a __grid_constant__ argument.
#pragma once

#include <cstdint>

#include "kernels/conv_problem.h"
#include "kernels/cuda/fast_divmod.h"

namespace convserve {
namespace cuda {

struct KernelParams {
  const void* input = nullptr;   // NHWC (NCHW inputs are transposed into the workspace first)
  const void* weight = nullptr;  // packed: [groups][K/groups][k_pad] (GEMM kinds) or [R][S][K]
  const void* bias = nullptr;    // [K] in the dtype, or null
  void* output = nullptr;        // NHWC or NCHW, see output_nchw
  float* partials = nullptr;     // workspace split-K: [split_k][M][K] fp32 (not kWgmmaTma)

  int batch = 0, height = 0, width = 0, channels = 0;  // input N, H, W, C
  int out_channels = 0, out_h = 0, out_w = 0;          // K, P, Q
  int kernel_h = 0, kernel_w = 0;                      // R, S
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int groups = 1;
  int group_c = 0;  // C / groups
  int group_k = 0;  // K / groups: GEMM N
  int gemm_m = 0;   // N * P * Q
  int gemm_k = 0;   // group_c * R * S
  int k_pad = 0;    // gemm_k rounded up to 8: the packed weight row stride
  int split_k = 1;
  int k_tiles_per_split = 0;
  // The split slices of a tile are one thread-block cluster and sum in it, no partials, no
  // reduction kernel (the TMA kind always; the mma.sync kinds on sm_90). Else they store partials.
  int cluster_split = 0;
  int activation = 0;  // convserve::Activation
  int output_nchw = 0;
  // NHWC output, no workspace split-K, channel counts and the output pointer 16-byte aligned: the
  // GEMM kinds stage their tile in shared memory and store 16-byte vectors (StagedTile).
  int vector_store = 0;
  int depth_multiplier = 1;  // depthwise: K / C
  // The divisors the GEMM kernels decode positions with, as multiply-shifts (fast_divmod.h); set
  // by the host (SetDivisors in conv_runner.cc) once the fields above are final.
  FastDivmod div_pq;        // out_h * out_w
  FastDivmod div_out_w;     // out_w
  FastDivmod div_group_c;   // group_c
  FastDivmod div_kernel_w;  // kernel_w
  FastDivmod div_split_k;   // split_k
};

}  // namespace cuda
}  // namespace convserve
