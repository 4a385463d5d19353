// The warp-specialised Hopper kind (KernelKind::kWgmmaWs): ConvWgmmaKernel's operands,
// swizzle and wgmma, with the copies and the multiplies on different warpgroups so that
// neither waits for the other at a block-wide barrier. Warpgroup 0 produces: it gathers A and
// B tiles into the stage ring with cp.async and, once a tile's copies have landed, fences them
// to the async proxy and arrives on the stage's "full" mbarrier. The other warpgroups consume:
// each waits for "full", runs its wgmma batch, and once that batch is retired (wgmma.wait_group
// leaves only the next one in flight) arrives on the stage's "empty" mbarrier, which the
// producer waits for before reusing the stage.
#pragma once

#include <type_traits>

#include "kernels/cuda/wgmma_kernel.cuh"

namespace convserve {
namespace cuda {

// The block both warp-specialised kinds share: WgmmaShape's consumer warpgroups plus one
// producer warpgroup; the stage ring, then two mbarriers (full, empty) per stage.
template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages>
struct WgmmaSpecialisedShape : WgmmaShape<T, kBlockM, kBlockN, kWgN, kStages> {
  using Base = WgmmaShape<T, kBlockM, kBlockN, kWgN, kStages>;
  static constexpr int kConsumers = Base::kWgsM * Base::kWgsN;
  static constexpr int kConsumerThreads = kConsumers * 128;
  static constexpr int kThreads = kConsumerThreads + 128;  // + the producer warpgroup
  static constexpr int kBarrierOffset = kStages * Base::kStageBytes;
  static constexpr int kSmemBytes = kBarrierOffset + kStages * 16 + 1024;
  static_assert(kStages >= 3, "a stage being released, one being read, one being filled");
};

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages>
struct WgmmaWsShape : WgmmaSpecialisedShape<T, kBlockM, kBlockN, kWgN, kStages> {
  // The producer's 128 threads copy every row: 16 rows per pass of 8 16-byte chunks.
  static constexpr int kRowsPerPass = 128 / (kWgmmaRowBytes / 16);
  static constexpr int kARows = kBlockM / kRowsPerPass;
  static constexpr int kBRows = kBlockN / kRowsPerPass;
  // Tiles a producer thread keeps in flight before it publishes the oldest. At most
  // kStages - 2: the producer waits for the release of tile i - kStages before copying tile i,
  // and the consumers release it only after they received tile i - kStages + 1.
  static constexpr int kLag = kStages - 2 < 3 ? kStages - 2 : 3;
};

__device__ __forceinline__ void MbarrierInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void MbarrierArrive(uint32_t bar) {
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar)
               : "memory");
}
// Waits until the phase of parity `parity` of the barrier has completed.
__device__ __forceinline__ void MbarrierWait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

// A consumer warp's release of a ring stage, once its wgmma batch reading the stage is retired
// (every lane passed wgmma.wait_group): one lane arrives for the warp, so the "empty" barriers
// count consumer warps, not threads. With kBlocks > 1 (the TMA kind's multicast pairs) both
// blocks' producers write into this block's stage, so lane r arrives on rank r's barrier. The
// arrival keeps the default .cta-scope release: it orders only this warp's retired wgmma reads
// before the producer's next copy, which waits for the phase; a .cluster-scope release would
// fence every arrival, every k tile.
template <int kBlocks = 1>
__device__ __forceinline__ void ReleaseStage(uint32_t bar) {
  __syncwarp();
  const int lane = static_cast<int>(threadIdx.x % 32);
  if constexpr (kBlocks == 1) {
    if (lane == 0) MbarrierArrive(bar);
  } else if (lane < kBlocks) {
    uint32_t remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(bar), "r"(lane));
    asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\n" ::"r"(remote) : "memory");
  }
}

// The consumer side of both warp-specialised kinds, for one warpgroup: zeroes the accumulators,
// runs the wgmma of each of `tiles` k tiles once its stage is "full" and releases the stage
// ("empty") once that batch is retired (wgmma.wait_group leaves only the next one in flight);
// returns with every wgmma complete and every stage released. `first` counts the k tiles the
// ring carried before these (a persistent block's earlier output tiles): it sets the stages and
// the barrier phases. kARowBytes: A's layout in the stage, as for WgmmaTile. kBlocks: the blocks
// whose producers fill the stage (ReleaseStage).
template <typename T, int kWgN, int kStages, int kStageBytes, int kARowBytes = kWgmmaRowBytes,
          int kBlocks = 1>
__device__ __forceinline__ void ConsumeRing(float (&acc)[kWgN / 2], uint32_t ring,
                                            uint32_t full_bar, uint32_t empty_bar, int first,
                                            int tiles, int block_m, int wg_m, int wg_n) {
#pragma unroll
  for (int i = 0; i < kWgN / 2; ++i) acc[i] = 0.f;
#pragma unroll 1
  for (int i = first; i < first + tiles; ++i) {
    const int stage = i % kStages;
    MbarrierWait(full_bar + 8 * stage, (i / kStages) & 1);
    WgmmaTile<T, kWgN, kARowBytes>(acc, ring + stage * kStageBytes, block_m, wg_m, wg_n);
    // The batch of tile i - 1 is retired: its stage may be refilled.
    if (i > first) ReleaseStage<kBlocks>(empty_bar + 8 * ((i - 1) % kStages));
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  FenceAccumulators(acc);
  if (tiles > 0) ReleaseStage<kBlocks>(empty_bar + 8 * ((first + tiles - 1) % kStages));
}

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages>
__global__ void __launch_bounds__((WgmmaWsShape<T, kBlockM, kBlockN, kWgN, kStages>::kThreads), 1)
    ConvWgmmaWsKernel(const __grid_constant__ KernelParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaWsShape<T, kBlockM, kBlockN, kWgN, kStages>;
  constexpr int kBlockK = Shape::kBlockK;
  constexpr int kRowBytes = Shape::kRowBytes;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t smem_base = (SmemAddress(smem_raw) + 1023u) & ~1023u;
  const uint32_t full_bar = smem_base + Shape::kBarrierOffset;  // + 8 * stage
  const uint32_t empty_bar = full_bar + kStages * 8;

  const int tid = threadIdx.x;
  const GemmBlock block = GemmBlock::Locate(p, kBlockM, kBlockN, kBlockK);
  const int m_block = block.m_block, n_block = block.n_block;
  const int group = block.group, kt_begin = block.kt_begin;
  const int tiles = max(0, block.kt_end - kt_begin);

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      MbarrierInit(full_bar + 8 * s, 128);
      MbarrierInit(empty_bar + 8 * s, Shape::kConsumerThreads / 32);  // ReleaseStage
    }
  }
  __syncthreads();

  if (tid < 128) {
    // Producer warpgroup.
    const int vcol = tid % (kRowBytes / 16);
    const int row0 = tid / (kRowBytes / 16);
    const uint32_t chunk_offset = row0 * kRowBytes + ((vcol ^ (row0 % 8)) * 16);
    InputRows<T, Shape::kARows, Shape::kRowsPerPass> a_rows;
    a_rows.Init(p, m_block + row0, group, kt_begin * kBlockK + vcol * Shape::kVec);
    WeightRows<T, Shape::kBRows, Shape::kRowsPerPass> b_rows;
    b_rows.Init(p, n_block + row0, group, kt_begin * kBlockK + vcol * Shape::kVec);
    const T* input = static_cast<const T*>(p.input);
    const T* weight = static_cast<const T*>(p.weight);
    constexpr int kPass = Shape::kRowsPerPass * kRowBytes;
    // Publishes tile i: its copies have landed (the caller waited), so round fp32 to TF32,
    // fence to the async proxy and arrive.
    auto publish = [&](int i) {
      const int stage = i % kStages;
      if constexpr (std::is_same_v<T, float>) {
        const uint32_t mine = smem_base + stage * Shape::kStageBytes + chunk_offset;
        RoundChunksToTf32<Shape::kARows>(mine, kPass);
        RoundChunksToTf32<Shape::kBRows>(mine + kBlockM * kRowBytes, kPass);
      }
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      MbarrierArrive(full_bar + 8 * stage);
    };
#pragma unroll 1
    for (int i = 0; i < tiles; ++i) {
      const int stage = i % kStages;
      if (i >= kStages) MbarrierWait(empty_bar + 8 * stage, ((i / kStages) - 1) & 1);
      const uint32_t a_dst = smem_base + stage * Shape::kStageBytes + chunk_offset;
      a_rows.Load(p, input, true, a_dst, kPass, kBlockK);
      b_rows.Load(p, weight, true, a_dst + kBlockM * kRowBytes, kPass, kBlockK);
      CpAsyncCommit();
      if (i >= Shape::kLag) {
        CpAsyncWait<Shape::kLag>();
        publish(i - Shape::kLag);
      }
    }
    CpAsyncWait<0>();
#pragma unroll 1
    for (int i = max(0, tiles - Shape::kLag); i < tiles; ++i) publish(i);
    return;
  }

  // Consumer warpgroups.
  const int ctid = tid - 128;
  const int warpgroup = ctid / 128;
  const int wg_m = warpgroup % Shape::kWgsM;
  const int wg_n = warpgroup / Shape::kWgsM;
  float acc[Shape::kAccumulators];
  ConsumeRing<T, kWgN, kStages, Shape::kStageBytes>(acc, smem_base, full_bar, empty_bar, 0, tiles,
                                                    kBlockM, wg_m, wg_n);

  // Every consumer's wgmma is done reading the ring before any warpgroup stages its tile (the
  // producer wrote its last tile before the last "full" arrival, which every consumer passed).
  if (p.vector_store) asm volatile("bar.sync 1, %0;\n" ::"n"(Shape::kConsumerThreads) : "memory");
  WgmmaStoreTile<T, kWgN>(p, acc, smem_raw + (smem_base - SmemAddress(smem_raw)), warpgroup,
                          2 + warpgroup, m_block + wg_m * Shape::kWgM, n_block + wg_n * kWgN, group,
                          block.split, ctid % 128);
#endif
}

}  // namespace cuda
}  // namespace convserve
