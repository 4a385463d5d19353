// Launchers for the small kernels around the convolutions: weight packing, the NCHW->NHWC
// input transpose, the split-K reduction and random fills for tuning scratch. Plain CUDA
// signatures (no Abseil) so nvcc compiles only CUDA here; callers turn errors into Status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/conv_problem.h"
#include "kernels/cuda/kernel_params.h"

namespace convserve {
namespace cuda {

// OIHW weights (device) -> [groups][K/groups][k_pad] with k = (r*S + s)*packed_c + c, zero
// padded (packed_c >= C/groups: channels past C/groups are zeros too).
cudaError_t LaunchPackGemmWeights(const ConvParams& params, int packed_c, int k_pad,
                                  const void* oihw, void* packed, cudaStream_t stream);
// A strided layer's space-to-depth form (see conv_runner.cc): each block_h x block_w block of
// input pixels (the strides) is one pixel of s2d_channels channels, channel (i * block_w + j) * C
// + c holding input pixel (u * block_h + i, v * block_w + j), channel c; and the filter, shifted
// down and right by (shift_h, shift_w) rows and columns, is cut into taps_h x taps_w taps of
// whole blocks.
struct SpaceToDepthShape {
  int channels = 0, height = 0, width = 0;  // the input's C, H, W
  int block_h = 1, block_w = 1;
  int s2d_channels = 0, s2d_height = 0, s2d_width = 0;
  int shift_h = 0, shift_w = 0;
  int taps_h = 0, taps_w = 0;
};
// OIHW weights (groups 1) -> [K][k_pad] with k = (a * taps_w + b) * s2d_channels +
// (i * block_w + j) * C + c holding w[o][c][a * block_h + i - shift_h][b * block_w + j - shift_w],
// zero outside the filter, past C * block_h * block_w channels and past the taps.
cudaError_t LaunchPackSpaceToDepthWeights(const ConvParams& params, const SpaceToDepthShape& shape,
                                          int k_pad, const void* oihw, void* packed,
                                          cudaStream_t stream);
// [N][C][H][W] (nchw) or [N][H][W][C] -> [N][s2d_height][s2d_width][s2d_channels]; pixels past
// H or W and channels past C * block_h * block_w are zeros.
cudaError_t LaunchSpaceToDepth(int element_bytes, int64_t batch, const SpaceToDepthShape& shape,
                               bool nchw, const void* src, void* dst, cudaStream_t stream);
// OIHW depthwise weights (C/groups == 1) -> [R][S][K].
cudaError_t LaunchPackDepthwiseWeights(const ConvParams& params, const void* oihw, void* packed,
                                       cudaStream_t stream);
// [N][C][H*W] -> [N][H*W][C], elements of `element_bytes` (2 or 4).
cudaError_t LaunchNchwToNhwc(int element_bytes, int64_t batch, int64_t channels, int64_t hw,
                             const void* src, void* dst, cudaStream_t stream);
// [N][C][H*W] or [N][H*W][C] -> [N][H*W][padded_channels], channels past C zero.
cudaError_t LaunchPadChannels(int element_bytes, int64_t batch, int64_t channels,
                              int64_t padded_channels, int64_t hw, bool nchw, const void* src,
                              void* dst, cudaStream_t stream);
// output = act(sum over p.split_k slices of p.partials + bias), in p.output's layout.
cudaError_t LaunchSplitKReduce(DataType dtype, const KernelParams& p, cudaStream_t stream);
// Uniform values in [-1, 1) from a counter-based hash of (seed, index).
cudaError_t LaunchFillRandom(DataType dtype, void* dst, int64_t elements, uint64_t seed,
                             cudaStream_t stream);

}  // namespace cuda
}  // namespace convserve
