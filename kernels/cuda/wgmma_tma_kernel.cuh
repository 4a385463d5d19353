// The TMA-fed Hopper kind (KernelKind::kWgmmaTma): ConvWgmmaWsKernel's warp specialisation with
// the producer's copies done by the tensor memory accelerator. Per k tile one thread issues two
// bulk tensor copies: the A tile through the input's im2col map (block_m output pixels x one
// filter tap's 64 channels, padding zero-filled by the copy engine) and the B tile through the
// weights' tiled map, both landing in the 128-byte swizzle wgmma reads, completing on the stage's
// "full" mbarrier by byte count. So the producer warpgroup needs almost no registers: it gives
// them to the consumers (setmaxnreg) when there are two consumer warpgroups to feed.
//
// Split-K runs in one launch: the split slices of an output tile are one thread-block cluster
// (dims 1 x 1 x split); each slice parks its fp32 accumulators in its own shared memory, the
// ranks share the sum through distributed shared memory into rank 0's, and rank 0 runs the
// epilogue. No workspace, no second kernel.
//
// Persistent rows (TileConfig::persistent) launch one block per SM; each walks every gridDim.x-th
// output tile. The ring's k-tile count runs on across tiles, so the producer copies the next
// tile's operands while the consumers run this tile's epilogue, which is staged in its own
// shared memory rather than in the ring.
//
// The epilogue (NHWC output, p.vector_store) is the copy engine's too: each warpgroup writes its
// finished tile into shared memory with stmatrix and one thread hands it to a TMA store, so the
// warpgroup goes on to its next tile while the store drains (TmaStoreTile).
//
// Narrow taps: with C = 16 or 32 a k tile holds 64 / C taps, each copied by its own im2col copy
// into a slab of block_m rows of C * 2 bytes in the 32- or 64-byte swizzle, which wgmma reads
// with a descriptor of that swizzle (WgmmaTile's kARowBytes). Taps past R * S in the last k tile
// are copied from channel C on, wholly out of bounds, so the copy engine writes zeros (their
// weights are zero too).
//
// Weight multicast (TileConfig::multicast = 2): two blocks of one cluster, adjacent in M, share
// their B tile: each block's producer copies half of its rows into the same offset of both
// blocks' stages (cp.async.bulk.tensor .multicast::cluster), so L2 serves each B tile once per
// pair. A stage is then free only once both blocks' consumers released it: every consumer warp
// arrives on the "empty" barrier of both blocks (ReleaseStage<2>), and no block exits before
// its peer is done arriving (a cluster barrier at the end). A "full" barrier may see its peer's
// bytes land before its own producer's expect_tx: the transaction count goes negative for a
// while, which mbarriers allow (the phase also waits for the producer's arrival).
//
// Limits (CheckImplementable): fp16/bf16, groups == 1, C 16, 32 or a multiple of 64, conv strides
// <= 8 and corner offsets within the 4-D im2col range [-128, 127].
#pragma once

#include "kernels/cuda/cluster_reduce.cuh"
#include "kernels/cuda/tensor_map.h"
#include "kernels/cuda/wgmma_ws_kernel.cuh"

namespace convserve {
namespace cuda {

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages, bool kPersistent>
struct WgmmaTmaShape : WgmmaSpecialisedShape<T, kBlockM, kBlockN, kWgN, kStages> {
  using Ring = WgmmaSpecialisedShape<T, kBlockM, kBlockN, kWgN, kStages>;
  using Ring::kConsumers, Ring::kConsumerThreads, Ring::kThreads;
  // A warpgroup's staged output tile: kWgN / 64 boxes of 64 rows x 128 bytes, in the 128-byte
  // swizzle of the output's tensor map (1024-byte aligned, like the ring's stages).
  static constexpr int kStagedBoxBytes = Ring::kWgM * 128;
  static constexpr int kStagedBytes = kWgN / 64 * kStagedBoxBytes;
  // A persistent block stages its epilogue after the barriers, one tile per consumer
  // warpgroup; the others stage it in the drained ring.
  static constexpr int kEpilogueOffset = (Ring::kBarrierOffset + kStages * 16 + 1023) / 1024 * 1024;
  static constexpr int kEpilogueBytes = kPersistent ? kConsumers * kStagedBytes : 0;
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
  static_assert(kPersistent || kConsumers * kStagedBytes <= kStages * Ring::kStageBytes,
                "the staged output tiles must fit in the drained ring");
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

// This block's rank in its cluster.
__device__ __forceinline__ uint32_t ClusterRank() {
  uint32_t rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return rank;
}

// A 2-D box copied into the same shared-memory offset of every block in `mask` (cluster ranks),
// completing its bytes on each one's barrier at `bar`'s offset.
__device__ __forceinline__ void TmaLoadTile2dMulticast(uint32_t dst, const CUtensorMap* map,
                                                       uint32_t bar, int x, int y, uint16_t mask) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".multicast::cluster [%0], [%1, {%3, %4}], [%2], %5;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(x), "r"(y), "h"(mask)
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

// A 2-D box of the output from shared memory, as one bulk async group of this thread's.
__device__ __forceinline__ void TmaStoreTile2d(const CUtensorMap* map, uint32_t src, int x, int y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(
          reinterpret_cast<uint64_t>(map)),
      "r"(src), "r"(x), "r"(y)
      : "memory");
}

template <typename T>
__device__ __forceinline__ uint32_t PackPair(T lo, T hi) {
  static_assert(sizeof(T) == 2, "two 16-bit elements");
  return static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&lo)) |
         static_cast<uint32_t>(*reinterpret_cast<const uint16_t*>(&hi)) << 16;
}

// The TMA kind's epilogue for NHWC output (p.vector_store): one warpgroup's 64 x kWgN tile (the
// accumulator layout of WgmmaStoreDirect) with bias and activation, staged at `staging` (the
// warpgroup's own kWgN / 64 boxes of 64 x 64 elements) and stored by the copy engine through the
// output's tiled map, which clips rows past M and channels past K. Per pair of 8-column blocks
// one stmatrix.x4 writes four 8 x 8 matrices; in the 128-byte swizzle the 8 rows of a matrix fall
// in 8 different bank groups, so the writes are conflict-free. Thread 0 of the warpgroup issues
// the stores and, before the warpgroup writes the staging again, waits until the copy engine has
// read the last ones: the stores drain while the warpgroup multiplies its next tile.
template <typename T, int kWgN>
__device__ __forceinline__ void TmaStoreTile(const KernelParams& p, const CUtensorMap* map,
                                             const float (&acc)[kWgN / 2], uint32_t staging,
                                             int barrier, int m0, int n0, int wg_thread) {
  constexpr int kBoxBytes = 64 * 128;
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  if (wg_thread == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  asm volatile("bar.sync %0, 128;\n" ::"r"(barrier) : "memory");
  // stmatrix.x4: lane l addresses row l % 8 of matrix l / 8; matrices 0..3 are (rows 0-7,
  // block j), (rows 8-15, block j), (rows 0-7, block j + 1), (rows 8-15, block j + 1) of the
  // warp's 16 rows, matching registers 4j, 4j + 2, 4j + 4, 4j + 6 (and their + 1 halves).
  const int row = warp * 16 + (lane / 8) % 2 * 8 + lane % 8;
  const int block_of_lane = lane / 16;
  DispatchActivation(p.activation, [&](auto tag) {
    constexpr int kAct = decltype(tag)::value;
#pragma unroll
    for (int j = 0; j < kWgN / 8; j += 2) {
      uint32_t packed[4];
#pragma unroll
      for (int b = 0; b < 2; ++b) {
        // group_k is a multiple of 8 (vector_store), so a block is wholly in or out of K; the
        // copy engine drops the columns out of it, whose bias is never read.
        const int channel = n0 + (j + b) * 8 + 2 * (lane % 4);
        const bool in_k = channel < p.group_k;
        const float bias0 = in_k ? BiasOf<T>(p, channel) : 0.f;
        const float bias1 = in_k ? BiasOf<T>(p, channel + 1) : 0.f;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const float* pair = &acc[4 * (j + b) + 2 * half];
          packed[2 * b + half] = PackPair(ActivateToT<T, kAct>(p, pair[0] + bias0),
                                          ActivateToT<T, kAct>(p, pair[1] + bias1));
        }
      }
      const int chunk = j + block_of_lane;  // the 16-byte column chunk of the lane's matrix
      const uint32_t address =
          staging + chunk / 8 * kBoxBytes + row * 128 + ((chunk % 8) ^ (row % 8)) * 16;
      asm volatile(
          "stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(address),
          "r"(packed[0]), "r"(packed[1]), "r"(packed[2]), "r"(packed[3])
          : "memory");
    }
  });
  // The generic-proxy writes are visible to the copy engine once fenced and barriered.
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  asm volatile("bar.sync %0, 128;\n" ::"r"(barrier) : "memory");
  if (wg_thread == 0 && m0 < p.gemm_m) {
#pragma unroll
    for (int box = 0; box < kWgN / 64; ++box) {
      if (n0 + box * 64 < p.group_k)
        TmaStoreTile2d(map, staging + box * kBoxBytes, n0 + box * 64, m0);
    }
    asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
  }
}

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages, bool kPersistent,
          int kMulticast>
__global__ void __launch_bounds__(
    (WgmmaTmaShape<T, kBlockM, kBlockN, kWgN, kStages, kPersistent>::kThreads),
    (WgmmaTmaShape<T, kBlockM, kBlockN, kWgN, kStages, kPersistent>::kMinBlocks))
    ConvWgmmaTmaKernel(const __grid_constant__ KernelParams p,
                       const __grid_constant__ TmaOperands maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaTmaShape<T, kBlockM, kBlockN, kWgN, kStages, kPersistent>;
  constexpr int kBlockK = Shape::kBlockK;
  constexpr int kRowBytes = Shape::kRowBytes;
  static_assert(kMulticast == 1 || (kMulticast == 2 && !kPersistent),
                "weight multicast: pairs of non-persistent blocks");
  // Each block's slice of B starts on a 1024-byte swizzle atom (8 rows of 128 bytes).
  static_assert(kBlockN % (8 * kMulticast) == 0, "B slices of whole swizzle atoms");
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

  // A k tile is one tap's 64 channels of a wider one (one slab), or 64 / C narrow taps of C
  // channels (a slab each).
  const int slab_channels = min(p.group_c, kBlockK);
  const int a_row_bytes = slab_channels * static_cast<int>(sizeof(T));
  const int slabs_per_tile = a_row_bytes == kRowBytes ? 1 : kRowBytes / a_row_bytes;

  const int tid = threadIdx.x;
  if (tid == 0) {
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&maps.input))
                 : "memory");
    asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&maps.weight))
                 : "memory");
    if (p.vector_store) {
      asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&maps.output))
                   : "memory");
    }
    for (int s = 0; s < kStages; ++s) {
      MbarrierInit(full_bar + 8 * s, 1);  // the producer's expect_tx arrival; bytes do the rest
      // ReleaseStage: one arrival per consumer warp of every block sharing the stage.
      MbarrierInit(empty_bar + 8 * s, Shape::kConsumerThreads / 32 * kMulticast);
    }
    FenceBarrierInit();
  }
  // A peer's multicast copies and releases reach this block's barriers: they must exist first.
  if constexpr (kMulticast > 1) {
    ClusterSync();
  } else {
    __syncthreads();
  }

  if (tid < 128) {
    // Producer warpgroup: one thread issues every copy.
    if constexpr (Shape::kReallocate) {
      asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Shape::kProducerRegisters));
    }
    if (tid == 0) {
      const int rank = kMulticast > 1 ? static_cast<int>(ClusterRank()) : 0;
      int issued = 0;  // k tiles put in the ring so far, over all of the block's output tiles
#pragma unroll 1
      for (int t = tile_first; t < tile_count; t += tile_step) {
        const GemmBlock block = locate(t);
        // The tile's first output pixel, as the input position of its top-left filter tap.
        // Multiply-shift divisions (FastDivmod): they stand between launch and the first copy.
        int pq, out_col;
        const int image = p.div_pq.DivMod(block.m_block, &pq);
        const int out_row = p.div_out_w.DivMod(pq, &out_col);
        const int w0 = out_col * p.stride_w - p.pad_w;
        const int h0 = out_row * p.stride_h - p.pad_h;
        // The filter tap (r, s) and channel of the first slab, stepped slab by slab after it
        // (no divisions in the loop: this one thread feeds the whole block).
        int channel, s;
        int r = p.div_kernel_w.DivMod(p.div_group_c.DivMod(block.kt_begin * kBlockK, &channel), &s);
#pragma unroll 1
        for (int kt = block.kt_begin; kt < block.kt_end; ++kt, ++issued) {
          const int stage = issued % kStages;
          if (issued >= kStages) MbarrierWait(empty_bar + 8 * stage, ((issued / kStages) - 1) & 1);
          const uint32_t a_dst = smem_base + stage * Shape::kStageBytes;
          MbarrierArriveExpectTx(full_bar + 8 * stage, Shape::kStageBytes);
#pragma unroll 1
          for (int slab = 0; slab < slabs_per_tile; ++slab) {
            const bool real = r < p.kernel_h;  // else a tap past the filter: zeros
            TmaLoadIm2col(a_dst + slab * kBlockM * a_row_bytes, &maps.input, full_bar + 8 * stage,
                          real ? channel : p.group_c, w0, h0, image,
                          static_cast<uint16_t>(real ? s * p.dil_w : 0),
                          static_cast<uint16_t>(real ? r * p.dil_h : 0));
            channel += slab_channels;
            if (channel == p.group_c) {
              channel = 0;
              if (++s == p.kernel_w) {
                s = 0;
                ++r;
              }
            }
          }
          if constexpr (kMulticast > 1) {
            // This block's slice of the pair's B tile (the map's box is kBlockN / kMulticast rows).
            constexpr int kSliceRows = kBlockN / kMulticast;
            TmaLoadTile2dMulticast(a_dst + (kBlockM + rank * kSliceRows) * kRowBytes, &maps.weight,
                                   full_bar + 8 * stage, kt * kBlockK,
                                   block.n_block + rank * kSliceRows,
                                   static_cast<uint16_t>((1 << kMulticast) - 1));
          } else {
            TmaLoadTile2d(a_dst + kBlockM * kRowBytes, &maps.weight, full_bar + 8 * stage,
                          kt * kBlockK, block.n_block);
          }
        }
      }
    }
    __syncwarp();
    if (!kPersistent && p.split_k > 1) {  // the consumers' two reduction barriers
      ClusterSync();
      ClusterSync();
    }
    if constexpr (kMulticast > 1) ClusterSync();  // the consumers' last one
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
  // The warpgroup's output staging: its own after the barriers when persistent, else the ring.
  const uint32_t staging =
      smem_base + (kPersistent ? Shape::kEpilogueOffset : 0) + warpgroup * Shape::kStagedBytes;
  int consumed = 0;  // k tiles taken from the ring so far
#pragma unroll 1
  for (int t = tile_first; t < tile_count; t += tile_step) {
    const GemmBlock block = locate(t);
    const int tiles = max(0, block.kt_end - block.kt_begin);
    float acc[Shape::kAccumulators];
    // One compiled ring loop per A slab width, chosen once per tile.
    const auto consume = [&](auto a_row_bytes_tag) {
      ConsumeRing<T, kWgN, kStages, Shape::kStageBytes, decltype(a_row_bytes_tag)::value,
                  kMulticast>(acc, smem_base, full_bar, empty_bar, consumed, tiles, kBlockM, wg_m,
                              wg_n);
    };
    if (a_row_bytes == 32) {
      consume(std::integral_constant<int, 32>{});
    } else if (a_row_bytes == 64) {
      consume(std::integral_constant<int, 64>{});
    } else {
      consume(std::integral_constant<int, kRowBytes>{});
    }
    consumed += tiles;
    const int m0 = block.m_block + wg_m * Shape::kWgM;
    const int n0 = block.n_block + wg_n * kWgN;
    if constexpr (kPersistent) {
      if (p.vector_store) {
        TmaStoreTile<T, kWgN>(p, &maps.output, acc, staging, 2 + warpgroup, m0, n0, ctid % 128);
      } else {
        WgmmaStoreDirect<T, kWgN>(p, acc, m0, n0, 0, 0, ctid % 128);
      }
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
        ParkAccumulators<kCount, Shape::kConsumerThreads>(acc, smem_base, ctid);
        ClusterSync();
        SumSharedChunks<kCount, Shape::kConsumerThreads>(smem_base, ctid, block.split, p.split_k);
        ClusterSync();  // every share is in rank 0's parking; no rank reads another any more
        if (block.split != 0) return;
        ReloadAccumulators<kCount, Shape::kConsumerThreads>(acc, smem_base, ctid);
        // Every consumer has its sums before a warpgroup stages its tile over the parking.
        asm volatile("bar.sync 1, %0;\n" ::"n"(Shape::kConsumerThreads) : "memory");
        out.split_k = 1;  // rank 0 holds the whole sum: the plain epilogue
      }
      if (p.vector_store) {
        TmaStoreTile<T, kWgN>(out, &maps.output, acc, staging, 2 + warpgroup, m0, n0, ctid % 128);
      } else {
        WgmmaStoreDirect<T, kWgN>(out, acc, m0, n0, block.group, 0, ctid % 128);
      }
    }
  }
  // The block's shared memory (the staging) must outlive the copy engine's reads of it; the
  // writes to global memory need no wait (the grid completes only once they have landed), so
  // the block leaves as soon as its staging has been read, not a write round trip later.
  if (ctid % 128 == 0) asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  // No block leaves while its peer may still release stages in it (remote arrivals).
  if constexpr (kMulticast > 1) {
    __syncwarp();
    ClusterSync();
  }
#endif
}

}  // namespace cuda
}  // namespace convserve
