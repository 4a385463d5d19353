// The small kernels around the convolutions; see helper_kernels.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "kernels/cuda/conv_kernels.cuh"
#include "kernels/cuda/helper_kernels.h"

namespace convserve {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned BlocksFor(int64_t elements) {
  return static_cast<unsigned>((elements + kThreads - 1) / kThreads);
}

// k = (r * S + s) * packed_c + c; channels c >= group_c (padding) and k >= gemm_k are zeros.
template <typename E>
__global__ void PackGemmWeightsKernel(int64_t total, int k_pad, int gemm_k, int group_c,
                                      int packed_c, int r_dim, int s_dim,
                                      const E* __restrict__ oihw, E* __restrict__ packed) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int k = static_cast<int>(index % k_pad);
  const int64_t o = index / k_pad;
  const int c = k % packed_c;
  if (k >= gemm_k || c >= group_c) {
    packed[index] = E(0);
    return;
  }
  const int rs = k / packed_c;
  const int s = rs % s_dim;
  const int r = rs / s_dim;
  packed[index] = oihw[((o * group_c + c) * r_dim + r) * s_dim + s];
}

template <typename E>
__global__ void PackSpaceToDepthWeightsKernel(int64_t total, int k_pad, SpaceToDepthShape shape,
                                              int r_dim, int s_dim, const E* __restrict__ oihw,
                                              E* __restrict__ packed) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int k = static_cast<int>(index % k_pad);
  const int64_t o = index / k_pad;
  const int tap = k / shape.s2d_channels;
  const int channel = k - tap * shape.s2d_channels;
  const int phase = channel / shape.channels;  // i * block_w + j
  const int c = channel - phase * shape.channels;
  const int a = tap / shape.taps_w;
  const int b = tap - a * shape.taps_w;
  const int r = a * shape.block_h + phase / shape.block_w - shape.shift_h;
  const int s = b * shape.block_w + phase % shape.block_w - shape.shift_w;
  const bool inside = a < shape.taps_h && phase < shape.block_h * shape.block_w && r >= 0 &&
                      r < r_dim && s >= 0 && s < s_dim;
  packed[index] = inside ? oihw[((o * shape.channels + c) * r_dim + r) * s_dim + s] : E(0);
}

// One thread per space-to-depth pixel: its s2d_channels values (a multiple of 16) gathered from
// the block's input pixels and written as 16-byte vectors.
__global__ void SpaceToDepthKernel(int64_t pixels, SpaceToDepthShape shape, bool nchw,
                                   const uint16_t* __restrict__ src, uint16_t* __restrict__ dst) {
  const int64_t pixel = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pixel >= pixels) return;
  const int64_t plane = static_cast<int64_t>(shape.s2d_height) * shape.s2d_width;
  const int64_t image = pixel / plane;
  const int uv = static_cast<int>(pixel - image * plane);
  const int u = uv / shape.s2d_width;
  const int v = uv - u * shape.s2d_width;
  const int64_t hw = static_cast<int64_t>(shape.height) * shape.width;
  const int phases = shape.block_h * shape.block_w;
  int phase = 0;  // i * block_w + j of the channel being gathered, and its input channel c
  int c = 0;
  uint4* out = reinterpret_cast<uint4*>(dst + pixel * shape.s2d_channels);
  for (int chunk = 0; chunk < shape.s2d_channels / 8; ++chunk) {
    uint16_t values[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      values[e] = 0;
      const int h = u * shape.block_h + phase / shape.block_w;
      const int w = v * shape.block_w + phase % shape.block_w;
      if (phase < phases && h < shape.height && w < shape.width) {
        const int64_t at = static_cast<int64_t>(h) * shape.width + w;
        values[e] = nchw ? src[(image * shape.channels + c) * hw + at]
                         : src[(image * hw + at) * shape.channels + c];
      }
      if (++c == shape.channels) {
        c = 0;
        ++phase;
      }
    }
    uint4 vector;
    memcpy(&vector, values, sizeof(vector));
    out[chunk] = vector;
  }
}

// One thread per pixel: its `channels` values (from NCHW or NHWC) then zeros up to
// `padded_channels`, as one NHWC row.
template <typename E>
__global__ void PadChannelsKernel(int64_t pixels, int64_t hw, int channels, int padded_channels,
                                  bool nchw, const E* __restrict__ src, E* __restrict__ dst) {
  const int64_t pixel = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pixel >= pixels) return;
  const int64_t image = pixel / hw;
  const int64_t x = pixel - image * hw;
  E* out = dst + pixel * padded_channels;
  for (int c = 0; c < padded_channels; ++c) {
    E v = E(0);
    if (c < channels) v = nchw ? src[(image * channels + c) * hw + x] : src[pixel * channels + c];
    out[c] = v;
  }
}

template <typename E>
__global__ void PackDepthwiseWeightsKernel(int64_t total, int out_channels, int rs_count,
                                           const E* __restrict__ oihw, E* __restrict__ packed) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= total) return;
  const int k = static_cast<int>(index % out_channels);
  const int rs = static_cast<int>(index / out_channels);
  packed[index] = oihw[static_cast<int64_t>(k) * rs_count + rs];
}

// 32x32 tiles through shared memory; the +1 column keeps the transposed reads conflict-free.
template <typename E>
__global__ void NchwToNhwcKernel(int64_t channels, int64_t hw, const E* __restrict__ src,
                                 E* __restrict__ dst) {
  __shared__ E tile[32][33];
  const int64_t image = blockIdx.z;
  const int64_t hw0 = static_cast<int64_t>(blockIdx.x) * 32;
  const int64_t c0 = static_cast<int64_t>(blockIdx.y) * 32;
  const E* in = src + image * channels * hw;
  E* out = dst + image * channels * hw;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t c = c0 + i;
    const int64_t x = hw0 + threadIdx.x;
    if (c < channels && x < hw) tile[i][threadIdx.x] = in[c * hw + x];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t x = hw0 + i;
    const int64_t c = c0 + threadIdx.x;
    if (c < channels && x < hw) out[x * channels + c] = tile[threadIdx.x][i];
  }
}

// Launched as a programmatic dependent of the GEMM (LaunchSplitKReduce): its blocks may be
// resident before the GEMM has finished, and wait here until the GEMM's partial sums are
// complete and visible. Without that dependency the wait returns at once.
template <typename T>
__global__ void SplitKReduceKernel(const __grid_constant__ KernelParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t slice = static_cast<int64_t>(p.gemm_m) * p.out_channels;
  if (index >= slice) return;
  float sum = 0.f;
  for (int s = 0; s < p.split_k; ++s) sum += p.partials[s * slice + index];
  const int k = static_cast<int>(index % p.out_channels);
  const int m = static_cast<int>(index / p.out_channels);
  KernelParams final_params = p;
  final_params.split_k = 1;
  const OutputRow row = MakeOutputRow(final_params, m, 0);
  static_cast<T*>(p.output)[row.base + k * row.step] = FinishValue<T>(p, k, sum);
}

__device__ __forceinline__ float HashUniform(uint64_t seed, int64_t index) {
  uint64_t x = seed ^ (static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

template <typename T>
__global__ void FillRandomKernel(T* dst, int64_t elements, uint64_t seed) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index < elements) dst[index] = FromFloat<T>(HashUniform(seed, index));
}

// Programmatic dependent launch exists from sm_90 on. A failed query answers false; the launch
// that follows then reports the error itself.
bool DependentLaunchSupported() {
  int device = 0;
  int major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         major >= 9;
}

}  // namespace

cudaError_t LaunchPackGemmWeights(const ConvParams& params, int packed_c, int k_pad,
                                  const void* oihw, void* packed, cudaStream_t stream) {
  const int group_c = static_cast<int>(params.in_channels / params.groups);
  const int gemm_k = packed_c * static_cast<int>(params.kernel_h * params.kernel_w);
  const int64_t total = params.out_channels * k_pad;
  const int r_dim = static_cast<int>(params.kernel_h);
  const int s_dim = static_cast<int>(params.kernel_w);
  if (DataTypeSize(params.dtype) == 2) {
    PackGemmWeightsKernel<uint16_t><<<BlocksFor(total), kThreads, 0, stream>>>(
        total, k_pad, gemm_k, group_c, packed_c, r_dim, s_dim, static_cast<const uint16_t*>(oihw),
        static_cast<uint16_t*>(packed));
  } else {
    PackGemmWeightsKernel<uint32_t><<<BlocksFor(total), kThreads, 0, stream>>>(
        total, k_pad, gemm_k, group_c, packed_c, r_dim, s_dim, static_cast<const uint32_t*>(oihw),
        static_cast<uint32_t*>(packed));
  }
  return cudaPeekAtLastError();
}

cudaError_t LaunchPackSpaceToDepthWeights(const ConvParams& params, const SpaceToDepthShape& shape,
                                          int k_pad, const void* oihw, void* packed,
                                          cudaStream_t stream) {
  const int64_t total = params.out_channels * k_pad;
  const int r_dim = static_cast<int>(params.kernel_h);
  const int s_dim = static_cast<int>(params.kernel_w);
  if (DataTypeSize(params.dtype) != 2) return cudaErrorInvalidValue;  // the TMA kind's dtypes
  PackSpaceToDepthWeightsKernel<uint16_t><<<BlocksFor(total), kThreads, 0, stream>>>(
      total, k_pad, shape, r_dim, s_dim, static_cast<const uint16_t*>(oihw),
      static_cast<uint16_t*>(packed));
  return cudaPeekAtLastError();
}

cudaError_t LaunchSpaceToDepth(int element_bytes, int64_t batch, const SpaceToDepthShape& shape,
                               bool nchw, const void* src, void* dst, cudaStream_t stream) {
  const int64_t pixels = batch * shape.s2d_height * shape.s2d_width;
  if (element_bytes != 2 || shape.s2d_channels % 8 != 0) return cudaErrorInvalidValue;
  SpaceToDepthKernel<<<BlocksFor(pixels), kThreads, 0, stream>>>(
      pixels, shape, nchw, static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst));
  return cudaPeekAtLastError();
}

cudaError_t LaunchPadChannels(int element_bytes, int64_t batch, int64_t channels,
                              int64_t padded_channels, int64_t hw, bool nchw, const void* src,
                              void* dst, cudaStream_t stream) {
  const int64_t pixels = batch * hw;
  const int c = static_cast<int>(channels);
  const int padded = static_cast<int>(padded_channels);
  if (element_bytes == 2) {
    PadChannelsKernel<uint16_t><<<BlocksFor(pixels), kThreads, 0, stream>>>(
        pixels, hw, c, padded, nchw, static_cast<const uint16_t*>(src),
        static_cast<uint16_t*>(dst));
  } else {
    PadChannelsKernel<uint32_t><<<BlocksFor(pixels), kThreads, 0, stream>>>(
        pixels, hw, c, padded, nchw, static_cast<const uint32_t*>(src),
        static_cast<uint32_t*>(dst));
  }
  return cudaPeekAtLastError();
}

cudaError_t LaunchPackDepthwiseWeights(const ConvParams& params, const void* oihw, void* packed,
                                       cudaStream_t stream) {
  const int rs_count = static_cast<int>(params.kernel_h * params.kernel_w);
  const int64_t total = params.out_channels * rs_count;
  const int k = static_cast<int>(params.out_channels);
  if (DataTypeSize(params.dtype) == 2) {
    PackDepthwiseWeightsKernel<uint16_t><<<BlocksFor(total), kThreads, 0, stream>>>(
        total, k, rs_count, static_cast<const uint16_t*>(oihw), static_cast<uint16_t*>(packed));
  } else {
    PackDepthwiseWeightsKernel<uint32_t><<<BlocksFor(total), kThreads, 0, stream>>>(
        total, k, rs_count, static_cast<const uint32_t*>(oihw), static_cast<uint32_t*>(packed));
  }
  return cudaPeekAtLastError();
}

cudaError_t LaunchNchwToNhwc(int element_bytes, int64_t batch, int64_t channels, int64_t hw,
                             const void* src, void* dst, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((hw + 31) / 32),
                  static_cast<unsigned>((channels + 31) / 32), static_cast<unsigned>(batch));
  const dim3 block(32, 8);
  if (element_bytes == 2) {
    NchwToNhwcKernel<uint16_t><<<grid, block, 0, stream>>>(
        channels, hw, static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst));
  } else {
    NchwToNhwcKernel<uint32_t><<<grid, block, 0, stream>>>(
        channels, hw, static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst));
  }
  return cudaPeekAtLastError();
}

// The reduction is launched as a programmatic dependent of the split GEMM before it on the
// stream (sm_90+): the GEMM lets it be scheduled once all its blocks run
// (griddepcontrol.launch_dependents), so at N = 1 the reduction's launch latency, about a
// microsecond, overlaps the GEMM instead of following it.
cudaError_t LaunchSplitKReduce(DataType dtype, const KernelParams& p, cudaStream_t stream) {
  const int64_t total = static_cast<int64_t>(p.gemm_m) * p.out_channels;
  cudaLaunchAttribute dependent;
  dependent.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  dependent.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(BlocksFor(total));
  config.blockDim = dim3(kThreads);
  config.stream = stream;
  config.attrs = &dependent;
  config.numAttrs = DependentLaunchSupported() ? 1 : 0;
  switch (dtype) {
    case DataType::kFloat16:
      return cudaLaunchKernelEx(&config, SplitKReduceKernel<__half>, p);
    case DataType::kBFloat16:
      return cudaLaunchKernelEx(&config, SplitKReduceKernel<__nv_bfloat16>, p);
    case DataType::kFloat32:
      return cudaLaunchKernelEx(&config, SplitKReduceKernel<float>, p);
  }
  return cudaErrorInvalidValue;
}

cudaError_t LaunchFillRandom(DataType dtype, void* dst, int64_t elements, uint64_t seed,
                             cudaStream_t stream) {
  switch (dtype) {
    case DataType::kFloat16:
      FillRandomKernel<<<BlocksFor(elements), kThreads, 0, stream>>>(static_cast<__half*>(dst),
                                                                     elements, seed);
      break;
    case DataType::kBFloat16:
      FillRandomKernel<<<BlocksFor(elements), kThreads, 0, stream>>>(
          static_cast<__nv_bfloat16*>(dst), elements, seed);
      break;
    case DataType::kFloat32:
      FillRandomKernel<<<BlocksFor(elements), kThreads, 0, stream>>>(static_cast<float*>(dst),
                                                                     elements, seed);
      break;
  }
  return cudaPeekAtLastError();
}

}  // namespace cuda
}  // namespace convserve
