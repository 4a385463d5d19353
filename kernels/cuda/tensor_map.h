// TMA descriptors (CUtensorMap) of the Hopper TMA kind's operands: the NHWC input as an im2col
// map (the copy engine gathers one filter tap's 128-byte channel slice for block_m output
// pixels, zero-filling the padding), the packed weights as a tiled map, and the NHWC output as a
// tiled map for the epilogue's stores. Encoded per launch on the host, since the input and
// output change with every batch. Internal to kernels/cuda.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include "kernels/cuda/kernel_params.h"

namespace convserve {
namespace cuda {

// The im2col map's corners along one spatial dim: the top-left filter tap of output 0 sits at
// -pad, of the last output at (out - 1) * stride - pad; the corners are offsets from 0 and from
// extent - 1 (so the copy engine walks exactly `out` positions, padding on either side implied).
constexpr int Im2colLowerCorner(int pad) { return -pad; }
constexpr int Im2colUpperCorner(int extent, int out, int stride, int pad) {
  return (out - 1) * stride - pad - (extent - 1);
}

// Both maps travel by value as one __grid_constant__ kernel argument.
struct TmaOperands {
  CUtensorMap input;   // im2col, dims {C, W, H, N}, box {min(C, 64) channels} x block_m pixels
  CUtensorMap weight;  // tiled, dims {k_pad, K}, box {128 bytes of k} x block_n rows
  CUtensorMap output;  // tiled, dims {K, M}, box {128 bytes of K} x 64 rows; p.vector_store only
};

// Encodes the maps for `p` (input, weight, output and the shape fields set) with 2-byte elements
// (fp16 or bf16, `bf16` picks which). cudaErrorNotSupported when the driver has no tensor-map
// entry points, cudaErrorInvalidValue when the driver refuses a map (CheckImplementable keeps
// such problems away from the TMA kind).
cudaError_t EncodeTmaOperands(const KernelParams& p, bool bf16, int block_m, int block_n,
                              TmaOperands* maps);

}  // namespace cuda
}  // namespace convserve
