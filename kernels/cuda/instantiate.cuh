// Turns rows of kConfigTable into kernel instantiations and KernelHandles. Each kernels_*.cu
// file instantiates a few rows for one dtype, so no single file compiles for long.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/conv_kernels.cuh"
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/wgmma_kernel.cuh"
#include "kernels/cuda/wgmma_tma_kernel.cuh"
#include "kernels/cuda/wgmma_ws_kernel.cuh"

namespace convserve {
namespace cuda {

// The grid of the GEMM kinds: (M tiles, N tiles, groups x split-K slices).
inline dim3 GemmGrid(const TileConfig& c, const KernelParams& p) {
  return dim3((p.gemm_m + c.block_m - 1) / c.block_m, (p.group_k + c.block_n - 1) / c.block_n,
              p.groups * p.split_k);
}

template <typename T, int kIndex>
cudaError_t LaunchGemm(const KernelParams& p, cudaStream_t stream) {
  constexpr TileConfig c = kConfigTable[kIndex];
  constexpr int kBlockKBytes = c.block_k * 2;
  using Shape =
      GemmShape<T, c.block_m, c.block_n, kBlockKBytes, c.warp_m, c.warp_n, c.stages, c.kind>;
  auto* kernel = &ConvGemmKernel<T, c.block_m, c.block_n, kBlockKBytes, c.warp_m, c.warp_n,
                                 c.stages, c.kind, (c.split_k > 1)>;
  if (!p.cluster_split) {
    kernel<<<GemmGrid(c, p), Shape::kThreads, Shape::kSmemBytes, stream>>>(p);
    return cudaPeekAtLastError();
  }
  // A tile's split slices (consecutive in z) form one cluster and sum in it.
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 1;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = static_cast<unsigned>(p.split_k);
  cudaLaunchConfig_t config = {};
  config.gridDim = GemmGrid(c, p);
  config.blockDim = dim3(Shape::kThreads);
  config.dynamicSmemBytes = Shape::kSmemBytes;
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, p);
}

template <typename T, int kIndex>
cudaError_t LaunchWgmma(const KernelParams& p, cudaStream_t stream) {
  constexpr TileConfig c = kConfigTable[kIndex];
  using Shape = WgmmaShape<T, c.block_m, c.block_n, c.warp_n, c.stages>;
  ConvWgmmaKernel<T, c.block_m, c.block_n, c.warp_n, c.stages>
      <<<GemmGrid(c, p), Shape::kThreads, Shape::kSmemBytes, stream>>>(p);
  return cudaPeekAtLastError();
}

template <typename T, int kIndex>
cudaError_t LaunchWgmmaWs(const KernelParams& p, cudaStream_t stream) {
  constexpr TileConfig c = kConfigTable[kIndex];
  using Shape = WgmmaWsShape<T, c.block_m, c.block_n, c.warp_n, c.stages>;
  ConvWgmmaWsKernel<T, c.block_m, c.block_n, c.warp_n, c.stages>
      <<<GemmGrid(c, p), Shape::kThreads, Shape::kSmemBytes, stream>>>(p);
  return cudaPeekAtLastError();
}

// Encodes the operands' tensor maps for this launch (the input moves with every batch).
template <typename T, int kIndex>
cudaError_t LaunchWgmmaTma(const KernelParams& p, cudaStream_t stream) {
  constexpr TileConfig c = kConfigTable[kIndex];
  using Shape = WgmmaTmaShape<T, c.block_m, c.block_n, c.warp_n, c.stages, c.persistent>;
  TmaOperands maps;
  // A multicast pair's blocks each copy kBlockN / multicast rows of B.
  const cudaError_t encoded = EncodeTmaOperands(p, std::is_same_v<T, __nv_bfloat16>, c.block_m,
                                                c.block_n / c.multicast, &maps);
  if (encoded != cudaSuccess) return encoded;
  auto* kernel =
      &ConvWgmmaTmaKernel<T, c.block_m, c.block_n, c.warp_n, c.stages, c.persistent, c.multicast>;
  dim3 grid = GemmGrid(c, p);
  if constexpr (c.persistent) {
    // One block per SM (the ring and staging leave no room for two), each walking its share of
    // the output tiles.
    int device = 0;
    int sms = 0;
    cudaError_t queried = cudaGetDevice(&device);
    if (queried == cudaSuccess) {
      queried = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    }
    if (queried != cudaSuccess) return queried;
    const int64_t tiles = static_cast<int64_t>(grid.x) * grid.y;
    kernel<<<static_cast<unsigned>(std::min<int64_t>(tiles, sms)), Shape::kThreads,
             Shape::kSmemBytes, stream>>>(p, maps);
    return cudaPeekAtLastError();
  }
  if (p.split_k == 1 && c.multicast == 1) {
    kernel<<<grid, Shape::kThreads, Shape::kSmemBytes, stream>>>(p, maps);
    return cudaPeekAtLastError();
  }
  // Split-K: a tile's slices form one cluster and reduce in it; multicast: pairs of blocks
  // adjacent in M (an odd M tile count gets one block past M, whose copies read zeros and whose
  // stores are clipped). See wgmma_tma_kernel.cuh.
  cudaLaunchAttribute cluster;
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(c.multicast);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = static_cast<unsigned>(p.split_k);
  grid.x = (grid.x + c.multicast - 1) / c.multicast * c.multicast;
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = dim3(Shape::kThreads);
  config.dynamicSmemBytes = Shape::kSmemBytes;
  config.stream = stream;
  config.attrs = &cluster;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, p, maps);
}

template <typename T, int kIndex>
cudaError_t LaunchDepthwise(const KernelParams& p, cudaStream_t stream) {
  constexpr int kThreads = kConfigTable[kIndex].block_m;
  const int64_t total = static_cast<int64_t>(p.gemm_m) * p.out_channels;
  const dim3 grid(static_cast<unsigned>((total + kThreads - 1) / kThreads));
  DepthwiseKernel<T, kThreads><<<grid, kThreads, 0, stream>>>(p);
  return cudaPeekAtLastError();
}

// The handle of a kernel whose launch shape `Shape` gives (threads, dynamic shared memory).
template <typename Shape>
KernelHandle GemmHandle(const void* func,
                        cudaError_t (*launch)(const KernelParams&, cudaStream_t)) {
  KernelHandle h;
  h.func = func;
  h.threads = Shape::kThreads;
  h.smem_bytes = Shape::kSmemBytes;
  h.launch = launch;
  return h;
}

template <typename T, int kIndex>
KernelHandle MakeHandle() {
  constexpr TileConfig c = kConfigTable[kIndex];
  static_assert(!c.persistent || c.kind == KernelKind::kWgmmaTma, "only TMA rows are persistent");
  KernelHandle h;
  if constexpr (c.kind == KernelKind::kDepthwise) {
    h.func = reinterpret_cast<const void*>(&DepthwiseKernel<T, c.block_m>);
    h.threads = c.block_m;
    h.smem_bytes = 0;
    h.launch = &LaunchDepthwise<T, kIndex>;
  } else if constexpr (c.kind == KernelKind::kWgmma) {
    static_assert(c.block_k == 64 && c.warp_m == 64, "wgmma rows: 128-byte k tiles, m64");
    h = GemmHandle<WgmmaShape<T, c.block_m, c.block_n, c.warp_n, c.stages>>(
        reinterpret_cast<const void*>(
            &ConvWgmmaKernel<T, c.block_m, c.block_n, c.warp_n, c.stages>),
        &LaunchWgmma<T, kIndex>);
  } else if constexpr (c.kind == KernelKind::kWgmmaWs) {
    static_assert(c.block_k == 64 && c.warp_m == 64, "wgmma rows: 128-byte k tiles, m64");
    h = GemmHandle<WgmmaWsShape<T, c.block_m, c.block_n, c.warp_n, c.stages>>(
        reinterpret_cast<const void*>(
            &ConvWgmmaWsKernel<T, c.block_m, c.block_n, c.warp_n, c.stages>),
        &LaunchWgmmaWs<T, kIndex>);
  } else if constexpr (c.kind == KernelKind::kWgmmaTma) {
    static_assert(c.block_k == 64 && c.warp_m == 64, "wgmma rows: 128-byte k tiles, m64");
    static_assert(!c.persistent || c.split_k == 1, "persistent rows do not split k");
    if constexpr (!std::is_same_v<T, float>) {  // 16-bit only: no fp32 kernel
      h = GemmHandle<WgmmaTmaShape<T, c.block_m, c.block_n, c.warp_n, c.stages, c.persistent>>(
          reinterpret_cast<const void*>(&ConvWgmmaTmaKernel<T, c.block_m, c.block_n, c.warp_n,
                                                            c.stages, c.persistent, c.multicast>),
          &LaunchWgmmaTma<T, kIndex>);
    }
  } else if constexpr (c.kind == KernelKind::kSimt && !std::is_same_v<T, float>) {
    // Exact fp32 only.
  } else if constexpr (std::is_same_v<T, float> && c.kind != KernelKind::kSimt &&
                       c.warp_m * c.warp_n >= 64 * 64 && c.block_k >= 64) {
    // TF32 with 64x64 warp tiles and 32-float stages needs more than 255 registers (ptxas
    // spilled 80 bytes): no fp32 kernel for this row.
  } else {
    constexpr int kBlockKBytes = c.block_k * 2;
    using Shape =
        GemmShape<T, c.block_m, c.block_n, kBlockKBytes, c.warp_m, c.warp_n, c.stages, c.kind>;
    h = GemmHandle<Shape>(reinterpret_cast<const void*>(
                              &ConvGemmKernel<T, c.block_m, c.block_n, kBlockKBytes, c.warp_m,
                                              c.warp_n, c.stages, c.kind, (c.split_k > 1)>),
                          &LaunchGemm<T, kIndex>);
    h.cluster_split = c.split_k > 1 && Shape::kClusterSplit;
  }
  return h;
}

// True when every listed row is of `kind`: guards the hand-written row lists of the
// instantiation files against table edits.
template <KernelKind kKind, int... kIndices>
constexpr bool AllOfKind() {
  return ((kConfigTable[kIndices].kind == kKind) && ...);
}

template <typename T, int... kIndices>
void FillKernels(KernelTable& table) {
  ((table[kIndices] = MakeHandle<T, kIndices>()), ...);
}

}  // namespace cuda
}  // namespace convserve
