// The Hopper kind (KernelKind::kWgmma): the same implicit GEMM as ConvGemmKernel, with the
// multiply on warpgroup MMA (wgmma.mma_async, sm_90a) reading both operands straight from
// shared memory, so no ldmatrix and no fragment registers; each warpgroup (4 warps) owns a
// 64 x kWgN accumulator tile. Operands arrive by cp.async (the A gather needs per-row zero
// fill for padding, which cp.async's src-size gives for free) into a kStages ring.
//
// Shared memory: each stage holds A [block_m][128 B] then B [block_n][128 B]; a row is one
// k tile (64 fp16/bf16 or 32 fp32 elements) laid out in the 128-byte swizzle wgmma reads:
// 16-byte chunk j of row r sits at chunk j ^ (r % 8). Stages are 1024-byte aligned (one swizzle
// atom is 8 rows x 128 B), so the swizzle phase is the address's own bits.
//
// Pipeline, per k tile i: wait for tile i's copies (fp32: round them to TF32), fence them to the
// async proxy, barrier; issue the copies of tile i + kStages - 2 into the stage wgmma i - 2 read
// (every warpgroup finished it before the barrier); issue wgmma i; wait until only wgmma i is in
// flight. So one wgmma batch overlaps the next tile's barrier and copies.
#pragma once

#include <type_traits>

#include "kernels/cuda/conv_kernels.cuh"
#include "kernels/cuda/wgmma_ops.cuh"

namespace convserve {
namespace cuda {

// Shared-memory bytes of one operand row: one k tile, the width of the 128-byte swizzle.
inline constexpr int kWgmmaRowBytes = 128;

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages>
struct WgmmaShape {
  static constexpr int kWgM = 64;  // rows of one wgmma, and of one warpgroup's tile
  static constexpr int kWgsM = kBlockM / kWgM;
  static constexpr int kWgsN = kBlockN / kWgN;
  static constexpr int kThreads = kWgsM * kWgsN * 128;
  static constexpr int kRowBytes = kWgmmaRowBytes;
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  static constexpr int kBlockK = kRowBytes / static_cast<int>(sizeof(T));
  static constexpr int kRowsPerPass = kThreads / (kRowBytes / 16);
  static constexpr int kARows = kBlockM / kRowsPerPass;
  static constexpr int kBRows = kBlockN / kRowsPerPass;
  static constexpr int kStageBytes = (kBlockM + kBlockN) * kRowBytes;
  // + 1024: the dynamic shared window is only 16-byte aligned; the kernel aligns it up.
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024;
  static constexpr int kPrefetch = kStages - 2;   // tiles in flight ahead of the one computed
  static constexpr int kAccumulators = kWgN / 2;  // fp32 registers per thread
  // Two resident blocks when the accumulators leave room (<= 128 registers per thread).
  static constexpr int kMinBlocks = kWgN <= 128 ? 2 : 1;

  static_assert(kBlockM % kWgM == 0 && kBlockN % kWgN == 0, "warpgroups must tile the block");
  static_assert(kWgN == 64 || kWgN == 128 || kWgN == 256, "wgmma N of 64, 128 or 256");
  static_assert(kRowsPerPass % 8 == 0, "a thread's swizzle phase must be the same every pass");
  static_assert(kBlockM % kRowsPerPass == 0 && kBlockN % kRowsPerPass == 0,
                "every thread loads the same number of rows");
  static_assert(kStages >= 3, "two stages are busy (computed, being freed) besides the loads");
  static_assert(StagedTile<T, kWgM, kWgN>::kBytes * kWgsM * kWgsN <= kStages * kStageBytes,
                "the staged epilogue tiles must fit in the pipeline buffers");
};

// Shared-memory matrix descriptor of a K-major operand whose rows are `row_bytes` (32, 64 or 128)
// wide in the swizzle of that width: start address, stride between 8-row groups (8 rows), and
// the layout type (1: 128-byte, 2: 64-byte, 3: 32-byte swizzle); the leading offset is unused
// for these layouts.
__device__ __forceinline__ uint64_t SwizzledKMajorDescriptor(uint32_t smem_address, int row_bytes) {
  const uint64_t layout = row_bytes == 128 ? 1 : row_bytes == 64 ? 2 : 3;
  return static_cast<uint64_t>((smem_address & 0x3FFFF) >> 4) | (uint64_t{1} << 16) |
         (static_cast<uint64_t>(8 * row_bytes >> 4) << 32) | (layout << 62);
}

// wgmma's TF32 reads the top 19 bits of each fp32 operand (truncation); the other kinds round
// to nearest (cvt.rna), which halves the error. So each thread rounds the chunks it copied, in
// shared memory, before they are published to the async proxy.
template <int kRows>
__device__ __forceinline__ void RoundChunksToTf32(uint32_t first, int row_stride) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const uint32_t address = first + i * row_stride;
    uint32_t v[4];
    asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v[0]), "=r"(v[1]), "=r"(v[2]), "=r"(v[3])
                 : "r"(address));
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = ToTf32(v[e]);
    asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(address), "r"(v[0]), "r"(v[1]),
                 "r"(v[2]), "r"(v[3]));
  }
}

// Keeps the compiler from moving accumulator reads or writes across wgmma issue and wait.
template <int kCount>
__device__ __forceinline__ void FenceAccumulators(float (&acc)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}

// One k tile of a warpgroup's wgmma: its 64-row slice of A and kWgN-row slice of B in the stage
// at `stage` (A block_m rows, then B), one instruction per 32 bytes of k, committed as a group;
// returns once only this group may still be in flight, so the previous tile's stage is free.
// A's 128 bytes of k per row may instead lie in 128 / kARowBytes slabs of block_m rows of
// kARowBytes each (the TMA kind's taps of 16 or 32 channels), slab after slab.
template <typename T, int kWgN, int kARowBytes = kWgmmaRowBytes>
__device__ __forceinline__ void WgmmaTile(float (&acc)[kWgN / 2], uint32_t stage, int block_m,
                                          int wg_m, int wg_n) {
  constexpr int kRowBytes = kWgmmaRowBytes;
  static_assert(kARowBytes == 32 || kARowBytes == 64 || kARowBytes == 128, "a swizzle width");
  const uint32_t a_tile = stage + wg_m * 64 * kARowBytes;
  const uint32_t b_tile = stage + block_m * kRowBytes + wg_n * kWgN * kRowBytes;
  FenceAccumulators(acc);
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
  for (int ks = 0; ks < kRowBytes / 32; ++ks) {
    const uint32_t a = a_tile + ks * 32 / kARowBytes * block_m * kARowBytes + ks * 32 % kARowBytes;
    Wgmma<T, kWgN>::Run(acc, SwizzledKMajorDescriptor(a, kARowBytes),
                        SwizzledKMajorDescriptor(b_tile + ks * 32, kRowBytes));
  }
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
  asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
  FenceAccumulators(acc);
}

// Accumulator layout of m64nN: warp w of the warpgroup holds rows 16w..16w+15; register
// 4j + 2h + e is row 16w + lane/4 + 8h, column 8j + 2(lane%4) + e (as mma.sync's m16n8).
//
// Stores one warpgroup's 64 x kWgN accumulator tile from registers, pair by pair (NCHW output,
// workspace split-K partials, unaligned channel counts).
template <typename T, int kWgN>
__device__ __forceinline__ void WgmmaStoreDirect(const KernelParams& p,
                                                 const float (&acc)[kWgN / 2], int m0, int n0,
                                                 int group, int split, int wg_thread) {
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  const int channel0 = group * p.group_k;
  DispatchActivation(StoresPartials(p) ? 0 : p.activation, [&](auto tag) {
    constexpr int kAct = decltype(tag)::value;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const OutputRow row = MakeOutputRow(p, m0 + warp * 16 + lane / 4 + half * 8, split);
      if (!row.valid) continue;
#pragma unroll
      for (int j = 0; j < kWgN / 8; ++j) {
        const int n = n0 + j * 8 + 2 * (lane % 4);
        if (n >= p.group_k) continue;
        const bool two = n + 1 < p.group_k;
        StorePair<T, kAct>(p, row, channel0 + n, acc[4 * j + 2 * half], acc[4 * j + 2 * half + 1],
                           BiasOf<T>(p, channel0 + n), two ? BiasOf<T>(p, channel0 + n + 1) : 0.f,
                           two);
      }
    }
  });
}

// Stores one warpgroup's 64 x kWgN accumulator tile (the cp.async kinds' epilogue). With
// p.vector_store the tile is staged in slice `slot` of `buffers` (the caller has made sure no
// warpgroup still reads them), synchronised on named barrier `barrier` by this warpgroup's 128
// threads and stored in 16-byte vectors; otherwise it is stored from registers.
template <typename T, int kWgN>
__device__ __forceinline__ void WgmmaStoreTile(const KernelParams& p, const float (&acc)[kWgN / 2],
                                               uint8_t* buffers, int slot, int barrier, int m0,
                                               int n0, int group, int split, int wg_thread) {
  const int warp = wg_thread / 32;
  const int lane = wg_thread % 32;
  const int channel0 = group * p.group_k;
  if (p.vector_store) {
    using Staged = StagedTile<T, 64, kWgN>;
    uint8_t* tile = buffers + slot * Staged::kBytes;
    DispatchActivation(p.activation, [&](auto tag) {
      constexpr int kAct = decltype(tag)::value;
      // Column pair by column pair, so each bias pair is read once for the thread's two rows.
#pragma unroll
      for (int j = 0; j < kWgN / 8; ++j) {
        const int c = j * 8 + 2 * (lane % 4);
        if (n0 + c >= p.group_k) continue;
        const int channel = channel0 + n0 + c;
        const float bias0 = BiasOf<T>(p, channel);
        const float bias1 = BiasOf<T>(p, channel + 1);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int r = warp * 16 + lane / 4 + half * 8;
          Staged::Put(tile, r, c, ActivateToT<T, kAct>(p, acc[4 * j + 2 * half] + bias0),
                      ActivateToT<T, kAct>(p, acc[4 * j + 2 * half + 1] + bias1));
        }
      }
    });
    asm volatile("bar.sync %0, 128;\n" ::"r"(barrier) : "memory");
    Staged::template Store<128>(tile, p, m0, n0, channel0 + n0, wg_thread);
    return;
  }
  WgmmaStoreDirect<T, kWgN>(p, acc, m0, n0, group, split, wg_thread);
}

template <typename T, int kBlockM, int kBlockN, int kWgN, int kStages>
__global__ void __launch_bounds__((WgmmaShape<T, kBlockM, kBlockN, kWgN, kStages>::kThreads),
                                  (WgmmaShape<T, kBlockM, kBlockN, kWgN, kStages>::kMinBlocks))
    ConvWgmmaKernel(const __grid_constant__ KernelParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Shape = WgmmaShape<T, kBlockM, kBlockN, kWgN, kStages>;
  constexpr int kBlockK = Shape::kBlockK;
  constexpr int kRowBytes = Shape::kRowBytes;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const uint32_t smem_base = (SmemAddress(smem_raw) + 1023u) & ~1023u;

  const int tid = threadIdx.x;
  // Split slices let their reduction kernel be scheduled early, as ConvGemmKernel does.
  if (p.split_k > 1) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
  const GemmBlock block = GemmBlock::Locate(p, kBlockM, kBlockN, kBlockK);
  const int m_block = block.m_block, n_block = block.n_block;
  const int group = block.group, kt_begin = block.kt_begin, kt_end = block.kt_end;

  // Each thread copies 16-byte chunk `vcol` of rows row0, row0 + kRowsPerPass, ...; the
  // swizzled chunk position is the same for all of them (kRowsPerPass is a multiple of 8).
  const int vcol = tid % (kRowBytes / 16);
  const int row0 = tid / (kRowBytes / 16);
  const uint32_t chunk_offset = row0 * kRowBytes + ((vcol ^ (row0 % 8)) * 16);
  InputRows<T, Shape::kARows, Shape::kRowsPerPass> a_rows;
  a_rows.Init(p, m_block + row0, group, kt_begin * kBlockK + vcol * Shape::kVec);
  WeightRows<T, Shape::kBRows, Shape::kRowsPerPass> b_rows;
  b_rows.Init(p, n_block + row0, group, kt_begin * kBlockK + vcol * Shape::kVec);
  const T* input = static_cast<const T*>(p.input);
  const T* weight = static_cast<const T*>(p.weight);

  auto load_tile = [&](int stage, bool active) {
    const uint32_t a_dst = smem_base + stage * Shape::kStageBytes + chunk_offset;
    a_rows.Load(p, input, active, a_dst, Shape::kRowsPerPass * kRowBytes, kBlockK);
    b_rows.Load(p, weight, active, a_dst + kBlockM * kRowBytes, Shape::kRowsPerPass * kRowBytes,
                kBlockK);
  };

  const int warpgroup = tid / 128;
  const int wg_m = warpgroup % Shape::kWgsM;
  const int wg_n = warpgroup / Shape::kWgsM;
  float acc[Shape::kAccumulators];
#pragma unroll
  for (int i = 0; i < Shape::kAccumulators; ++i) acc[i] = 0.f;

#pragma unroll
  for (int s = 0; s < Shape::kPrefetch; ++s) {
    load_tile(s, kt_begin + s < kt_end);
    CpAsyncCommit();
  }
  int read_stage = 0;
  int write_stage = Shape::kPrefetch;
#pragma unroll 1
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    CpAsyncWait<Shape::kPrefetch - 1>();
    if constexpr (std::is_same_v<T, float>) {
      const uint32_t mine = smem_base + read_stage * Shape::kStageBytes + chunk_offset;
      constexpr int kPass = Shape::kRowsPerPass * kRowBytes;
      RoundChunksToTf32<Shape::kARows>(mine, kPass);
      RoundChunksToTf32<Shape::kBRows>(mine + kBlockM * kRowBytes, kPass);
    }
    // cp.async wrote through the generic proxy; wgmma reads through the async proxy.
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    load_tile(write_stage, kt + Shape::kPrefetch < kt_end);
    CpAsyncCommit();

    WgmmaTile<T, kWgN>(acc, smem_base + read_stage * Shape::kStageBytes, kBlockM, wg_m, wg_n);
    read_stage = read_stage + 1 == kStages ? 0 : read_stage + 1;
    write_stage = write_stage + 1 == kStages ? 0 : write_stage + 1;
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  FenceAccumulators(acc);
  CpAsyncWait<0>();

  if (p.vector_store) __syncthreads();  // every warpgroup's wgmma is done with the buffers
  WgmmaStoreTile<T, kWgN>(p, acc, smem_raw + (smem_base - SmemAddress(smem_raw)), warpgroup,
                          1 + warpgroup, m_block + wg_m * Shape::kWgM, n_block + wg_n * kWgN, group,
                          block.split, tid % 128);
#endif
}

}  // namespace cuda
}  // namespace convserve
