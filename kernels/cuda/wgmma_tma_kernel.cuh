// The TMA-fed Hopper kind (KernelKind::kWgmmaTma): ConvWgmmaWsKernel's warp specialisation with
// the producer's copies done by the tensor memory accelerator. Per k tile one thread issues two
// bulk tensor copies: the A tile through the input's im2col map (block_m output pixels x one
// filter tap's 64 channels, padding zero-filled by the copy engine) and the B tile through the
// weights' tiled map, both landing in the 128-byte swizzle wgmma reads, completing on the stage's
// "full" mbarrier by byte count. So the producer warpgroup needs almost no registers: it gives
// them to the consumers (setmaxnreg) when there are two consumer warpgroups to feed.
//
// Split-K runs in one launch: the split slices of an output tile are one thread-block cluster
// (dims 1 x 1 x split); each slice parks its fp32 accumulators in its own shared memory and
// rank 0 adds the others' through distributed shared memory, then runs the epilogue. No
// workspace, no second kernel.
//
// Persistent rows (TileConfig::persistent) launch one block per SM; each walks every gridDim.x-th
// output tile. The ring's k-tile count runs on across tiles, so the producer copies the next
// tile's operands while the consumers run this tile's epilogue, which is staged in its own
// shared memory rather than in the ring.
//
// Limits (CheckImplementable): fp16/bf16, groups == 1, C a multiple of 64 (a k tile is one tap),
// conv strides <= 8 and corner offsets within the 4-D im2col range [-128, 127].
#pragma once

#include "kernels/cuda/tensor_map.h"
#include "kernels/cuda/wgmma_ws_kernel.cuh"

namespace convserve {
namespace cuda {

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages, bool kPersistent>
struct WgmmaTmaShape : WgmmaSpecialisedShape<T, kBlockM, kBlockN, kWgN, kStages> {
  using Ring = WgmmaSpecialisedShape<T, kBlockM, kBlockN, kWgN, kStages>;
  using Ring::kConsumers, Ring::kConsumerThreads, Ring::kThreads;
  // A persistent block stages its epilogue after the barriers, one tile per consumer
  // warpgroup; the others stage it in the drained ring.
  static constexpr int kEpilogueOffset = (Ring::kBarrierOffset + kStages * 16 + 127) / 128 * 128;
  static constexpr int kEpilogueBytes =
      kPersistent ? kConsumers * StagedTile<T, Ring::kWgM, kWgN>::kBytes : 0;
  static constexpr int kSmemBytes =
      kPersistent ? kEpilogueOffset + kEpilogueBytes + 1024 : Ring::kSmemBytes;
  // Two resident blocks when their shared memory fits in the SM's 228 KB (1 KB per block is
  // the system's), so one block's epilogue overlaps the other's copies and multiplies. A
  // persistent block overlaps them itself and is launched once per SM.
  static constexpr int kMinBlocks = !kPersistent && 2 * (kSmemBytes + 1024) <= 228 * 1024 ? 2 : 1;
  // Register split with two consumer warpgroups (per thread, multiples of 8). A block starts
  // with the entry cap for every thread (65536 / (threads x kMinBlocks), rounded down to 8:
  // 168 or 80), and setmaxnreg.inc can only take what the block's own producer gave back with
  // setmaxnreg.dec: asking for more waits forever. So the producer keeps 40 and the consumers
  // share the rest of the block's entry allocation (232 with one block per SM, 96 with two).
  // ptxas compiles the whole kernel for the entry cap, so a 64 x 128 consumer tile needs one
  // block per SM.
  static constexpr bool kReallocate = kConsumers == 2;
  static constexpr int kEntryRegisters = 65536 / (kThreads * kMinBlocks) / 8 * 8;
  static constexpr int kProducerRegisters = 40;
  static constexpr int kConsumerRegisters =
      (kEntryRegisters * kThreads - kProducerRegisters * 128) / kConsumerThreads / 8 * 8;
  static_assert(!kReallocate || kConsumerRegisters >= Ring::kAccumulators + 40,
                "the consumers' share must hold the accumulators");
  static_assert(sizeof(T) == 2, "the TMA kind moves 16-bit elements");
  static_assert(kConsumers <= 2, "one or two consumer warpgroups");
  static_assert(kBlockM <= 256 && kBlockN <= 256, "a TMA box has at most 256 rows");
  static_assert(kSmemBytes <= 227 * 1024, "more shared memory than a Hopper block may have");
};

// Waits for the async proxy's view of the barrier inits before the copy engine touches them.
__device__ __forceinline__ void FenceBarrierInit() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

__device__ __forceinline__ void MbarrierArriveExpectTx(uint32_t bar, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}

// A tile: pixels_per_column output pixels from (c, w, h, n) on, shifted by the tap's offsets.
__device__ __forceinline__ void TmaLoadIm2col(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                              int c, int w, int h, int n, uint16_t offset_w,
                                              uint16_t offset_h) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4, %5, %6}], [%2], {%7, %8};\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c), "r"(w), "r"(h), "r"(n), "h"(offset_w),
      "h"(offset_h)
      : "memory");
}

__device__ __forceinline__ void TmaLoadTile2d(uint32_t dst, const CUtensorMap* map, uint32_t bar,
                                              int x, int y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(x), "r"(y)
      : "memory");
}

// Every thread of the cluster (exited ones excepted, so none exits before): arrive and wait,
// ordering shared-memory writes before it with reads after it, cluster-wide.
__device__ __forceinline__ void ClusterSync() {
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::
          : "memory");
}

// The in-cluster split-K reduction, for one consumer thread (`ctid` of kThreads consumer
// threads) between the two cluster barriers the whole cluster runs: rank 0 adds every other
// rank's parked accumulators to its own. The parking layout keeps each thread's 4-register
// chunks 16 bytes apart from its neighbours' (conflict-free 16-byte accesses).
template <int kCount, int kThreads>
__device__ __forceinline__ uint32_t ParkedChunk(uint32_t park, int chunk, int ctid) {
  return park + (chunk * kThreads + ctid) * 16;
}

template <int kCount, int kThreads>
__device__ __forceinline__ void ParkAccumulators(const float (&acc)[kCount], uint32_t park,
                                                 int ctid) {
#pragma unroll
  for (int c = 0; c < kCount / 4; ++c) {
    asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(
                     ParkedChunk<kCount, kThreads>(park, c, ctid)),
                 "f"(acc[4 * c]), "f"(acc[4 * c + 1]), "f"(acc[4 * c + 2]), "f"(acc[4 * c + 3])
                 : "memory");
  }
}

template <int kCount, int kThreads>
__device__ __forceinline__ void AddPeerAccumulators(float (&acc)[kCount], uint32_t park, int ctid,
                                                    int ranks) {
#pragma unroll 1
  for (int rank = 1; rank < ranks; ++rank) {
    uint32_t peer;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(peer) : "r"(park), "r"(rank));
#pragma unroll
    for (int c = 0; c < kCount / 4; ++c) {
      float v[4];
      asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                   : "=f"(v[0]), "=f"(v[1]), "=f"(v[2]), "=f"(v[3])
                   : "r"(ParkedChunk<kCount, kThreads>(peer, c, ctid))
                   : "memory");
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[4 * c + e] += v[e];
    }
  }
}

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages, bool kPersistent>
__global__ void __launch_bounds__(
    (WgmmaTmaShape<T, kBlockM, kBlockN, kWgN, kStages, kPersistent>::kThreads),
    (WgmmaTmaShape<T, kBlockM, kBlockN, kWgN, kStages, kPersistent>::kMinBlocks))
    ConvWgmmaTmaKernel(const __grid_constant__ KernelParams p,
                       const __grid_constant__ TmaOperands maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaTmaShape<T, kBlockM, kBlockN, kWgN, kStages, kPersistent>;
  constexpr int kBlockK = Shape::kBlockK;
  constexpr int kRowBytes = Shape::kRowBytes;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t smem_base = (SmemAddress(smem_raw) + 1023u) & ~1023u;
  const uint32_t full_bar = smem_base + Shape::kBarrierOffset;  // + 8 * stage
  const uint32_t empty_bar = full_bar + kStages * 8;

  // The output tiles of this block: its own, or every gridDim.x-th one when persistent.
  const int n_tiles = (p.group_k + kBlockN - 1) / kBlockN;
  const int tile_count = kPersistent ? (p.gemm_m + kBlockM - 1) / kBlockM * n_tiles : 1;
  const int tile_first = kPersistent ? static_cast<int>(blockIdx.x) : 0;
  const int tile_step = kPersistent ? static_cast<int>(gridDim.x) : 1;
  const auto locate = [&](int tile) {
    return kPersistent ? GemmBlock::LocateTile(p, tile, n_tiles, kBlockM, kBlockN, kBlockK)
                       : GemmBlock::Locate(p, kBlockM, kBlockN, kBlockK);
  };

  const int tid = threadIdx.x;
  if (tid == 0) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&maps.input))
                 : "memory");
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&maps.weight))
                 : "memory");
    for (int s = 0; s < kStages; ++s) {
      MbarrierInit(full_bar + 8 * s, 1);  // the producer's expect_tx arrival; bytes do the rest
      MbarrierInit(empty_bar + 8 * s, Shape::kConsumerThreads);
    }
    FenceBarrierInit();
  }
  __syncthreads();

  if (tid < 128) {
    // Producer warpgroup: one thread issues every copy.
    if constexpr (Shape::kReallocate) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Shape::kProducerRegisters));
    }
    if (tid == 0) {
      int issued = 0;  // k tiles put in the ring so far, over all of the block's output tiles
#pragma unroll 1
      for (int t = tile_first; t < tile_count; t += tile_step) {
        const GemmBlock block = locate(t);
        // The tile's first output pixel, as the input position of its top-left filter tap.
        const int pq_count = p.out_h * p.out_w;
        const int image = block.m_block / pq_count;
        const int pq = block.m_block - image * pq_count;
        const int out_row = pq / p.out_w;
        const int w0 = (pq - out_row * p.out_w) * p.stride_w - p.pad_w;
        const int h0 = out_row * p.stride_h - p.pad_h;
#pragma unroll 1
        for (int kt = block.kt_begin; kt < block.kt_end; ++kt, ++issued) {
          const int stage = issued % kStages;
          if (issued >= kStages) MbarrierWait(empty_bar + 8 * stage, ((issued / kStages) - 1) & 1);
          const int k = kt * kBlockK;
          const int tap = k / p.group_c;
          const int r = tap / p.kernel_w;
          const int s = tap - r * p.kernel_w;
          const uint32_t a_dst = smem_base + stage * Shape::kStageBytes;
          MbarrierArriveExpectTx(full_bar + 8 * stage, Shape::kStageBytes);
          TmaLoadIm2col(a_dst, &maps.input, full_bar + 8 * stage, k - tap * p.group_c, w0, h0,
                        image, static_cast<uint16_t>(s * p.dil_w),
                        static_cast<uint16_t>(r * p.dil_h));
          TmaLoadTile2d(a_dst + kBlockM * kRowBytes, &maps.weight, full_bar + 8 * stage, k,
                        block.n_block);
        }
      }
    }
    __syncwarp();
    if (!kPersistent && p.split_k > 1) {  // the consumers' two reduction barriers
      ClusterSync();
      ClusterSync();
    }
    return;
  }

  // Consumer warpgroups.
  if constexpr (Shape::kReallocate) {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Shape::kConsumerRegisters));
  }
  const int ctid = tid - 128;
  const int warpgroup = ctid / 128;
  const int wg_m = warpgroup % Shape::kWgsM;
  const int wg_n = warpgroup / Shape::kWgsM;
  uint8_t* const smem = smem_raw + (smem_base - SmemAddress(smem_raw));
  int consumed = 0;  // k tiles taken from the ring so far
#pragma unroll 1
  for (int t = tile_first; t < tile_count; t += tile_step) {
    const GemmBlock block = locate(t);
    const int tiles = max(0, block.kt_end - block.kt_begin);
    float acc[Shape::kAccumulators];
    ConsumeRing<T, kWgN, kStages, Shape::kStageBytes>(acc, smem_base, full_bar, empty_bar, consumed,
                                                      tiles, kBlockM, wg_m, wg_n);
    consumed += tiles;
    const int m0 = block.m_block + wg_m * Shape::kWgM;
    const int n0 = block.n_block + wg_n * kWgN;
    if constexpr (kPersistent) {
      WgmmaStoreTile<T, kWgN>(p, acc, smem + Shape::kEpilogueOffset, warpgroup, 2 + warpgroup, m0,
                              n0, 0, 0, ctid % 128);
      // The warpgroup has read its staged tile before it stages the next one.
      if (p.vector_store) asm volatile("bar.sync %0, 128;\n" ::"r"(2 + warpgroup) : "memory");
    } else {
      // Every consumer's wgmma is done reading the ring before any warpgroup stages its tile or
      // parks its accumulators there (every copy landed before the last "full" phase, which
      // every consumer passed).
      if (p.vector_store || p.split_k > 1) {
        asm volatile("bar.sync 1, %0;\n" ::"n"(Shape::kConsumerThreads) : "memory");
      }
      KernelParams out = p;
      if (p.split_k > 1) {
        constexpr int kCount = Shape::kAccumulators;
        static_assert(kBlockM * kBlockN * 4 <= kStages * Shape::kStageBytes,
                      "the parked accumulators must fit in the ring");
        if (block.split != 0) {
          ParkAccumulators<kCount, Shape::kConsumerThreads>(acc, smem_base, ctid);
        }
        ClusterSync();
        if (block.split == 0) {
          AddPeerAccumulators<kCount, Shape::kConsumerThreads>(acc, smem_base, ctid, p.split_k);
        }
        ClusterSync();  // no rank leaves while rank 0 still reads its shared memory
        if (block.split != 0) return;
        out.split_k = 1;  // rank 0 holds the whole sum: the plain epilogue
      }
      WgmmaStoreTile<T, kWgN>(out, acc, smem, warpgroup, 2 + warpgroup, m0, n0, block.group, 0,
                              ctid % 128);
    }
  }
#endif
}

}  // namespace cuda
}  // namespace convserve
