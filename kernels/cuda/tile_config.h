// The one table of kernel configurations. Every instantiated kernel, its name, the tuner's
// candidate list and the GPU test's parameter list come from kConfigTable; adding a row here
// (and bumping kConfigTableVersion) is the whole job of adding a configuration.
#pragma once

#include <cstdint>
#include <string>

namespace convserve {
namespace cuda {

// How a configuration reads its operands and multiplies.
enum class KernelKind : uint8_t {
  // Implicit GEMM on tensor cores (mma.sync), 16-byte cp.async loads: C/groups must be a
  // multiple of the vector width (8 for fp16/bf16, 4 for fp32).
  kTensorOp,
  // Same tiles and tensor cores, but the input gather works element by element, so any
  // C/groups (C = 3 stems, odd grouped layers) runs.
  kFewChannels,
  // Exact fp32 with FFMA (no TF32 rounding); vector or element gathers as needed. FP32 only.
  kSimt,
  // Direct depthwise convolution (groups == C), memory-bound, one output per thread.
  kDepthwise,
  // Hopper only (sm_90a): the kTensorOp GEMM on warpgroup MMA (wgmma) from 128-byte-swizzled
  // shared memory. warp_m x warp_n is one warpgroup's tile (warp_m = 64); block_k must be 64.
  // Same vector-width condition as kTensorOp.
  kWgmma,
  // kWgmma with warp specialisation: one producer warpgroup copies, the others multiply,
  // synchronised by mbarriers instead of block-wide barriers.
  kWgmmaWs,
  // kWgmmaWs fed by the tensor memory accelerator (im2col and tiled tensor maps) instead of
  // cp.async, with the producer's registers handed to the consumers. fp16/bf16, groups == 1,
  // C a multiple of 64.
  kWgmmaTma,
};

// One row of the table. block_k counts 16-bit elements: fp32 kernels move the same bytes per
// stage (block_k / 2 floats), so one row means one shared-memory footprint for every dtype.
struct TileConfig {
  KernelKind kind;
  int block_m;  // output pixels per block (threads per block for kDepthwise)
  int block_n;  // output channels per block
  int block_k;  // reduction slice per pipeline stage, in 16-bit elements
  int warp_m;   // a warp's tile (a warpgroup's for kWgmma)
  int warp_n;
  int stages;   // cp.async pipeline depth
  int split_k;  // > 1: the reduction is cut into this many slices (summed as SplitSumOf says)
  // kWgmmaTma only: one block per SM walks many output tiles, so the producer copies the next
  // tile's operands while the consumers store this one (no split-K).
  bool persistent = false;
  // kWgmmaTma only: 2 = blocks in clusters of two along M that multicast their shared weight
  // tile, each copying half of it (not persistent, no split-K).
  int multicast = 1;

  constexpr int warps() const {
    if (kind == KernelKind::kDepthwise) return block_m / 32;
    const int tiles = (block_m / warp_m) * (block_n / warp_n);
    if (kind == KernelKind::kWgmmaWs || kind == KernelKind::kWgmmaTma) {
      return 4 * tiles + 4;  // + the producer warpgroup
    }
    return kind == KernelKind::kWgmma ? 4 * tiles : tiles;
  }
  constexpr int threads() const { return warps() * 32; }
};

// clang-format off
inline constexpr TileConfig kConfigTable[] = {
    // kind                      bm   bn   bk  wm  wn  st sk
    // Small-M tiles for batch 1 and late layers (M = 49..196 at N = 1).
    {KernelKind::kTensorOp,      32,  64,  64, 32, 32, 4, 1},
    {KernelKind::kTensorOp,      64,  64,  32, 32, 32, 4, 1},
    {KernelKind::kTensorOp,      64,  64,  64, 32, 32, 3, 1},
    {KernelKind::kTensorOp,      64, 128,  32, 32, 64, 4, 1},
    {KernelKind::kTensorOp,     128,  64,  32, 64, 32, 4, 1},
    // Large tiles for batch 8..32.
    {KernelKind::kTensorOp,     128, 128,  32, 64, 64, 4, 1},
    {KernelKind::kTensorOp,     128, 128,  32, 64, 32, 4, 1},
    {KernelKind::kTensorOp,     128, 128,  64, 64, 64, 3, 1},
    {KernelKind::kTensorOp,     128, 256,  32, 64, 64, 3, 1},
    {KernelKind::kTensorOp,     256, 128,  32, 64, 64, 3, 1},
    // Split-K for small M*N with a long reduction (late layers at batch 1).
    {KernelKind::kTensorOp,      32,  64,  64, 32, 32, 4, 4},
    {KernelKind::kTensorOp,      64,  64,  64, 32, 32, 3, 2},
    {KernelKind::kTensorOp,      64,  64,  64, 32, 32, 3, 4},
    {KernelKind::kTensorOp,      64, 128,  32, 32, 64, 4, 8},
    // C = 3 stems and channels that are not a multiple of the vector width.
    {KernelKind::kFewChannels,   64,  64,  32, 32, 32, 3, 1},
    {KernelKind::kFewChannels,  128,  64,  32, 64, 32, 3, 1},
    // Exact fp32 (FFMA).
    {KernelKind::kSimt,          64,  64,  32, 32, 16, 3, 1},
    {KernelKind::kSimt,          64,  64,  32, 32, 16, 3, 4},
    // Depthwise, direct.
    {KernelKind::kDepthwise,    128,   1,   1,  1,  1, 1, 1},
    {KernelKind::kDepthwise,    256,   1,   1,  1,  1, 1, 1},
    // Hopper warpgroup MMA: one warpgroup per 64 x warp_n tile.
    {KernelKind::kWgmma,         64,  64,  64, 64,  64, 6, 1},
    {KernelKind::kWgmma,         64, 128,  64, 64, 128, 5, 1},
    {KernelKind::kWgmma,        128,  64,  64, 64,  64, 5, 1},
    {KernelKind::kWgmma,        128, 128,  64, 64, 128, 4, 1},
    {KernelKind::kWgmma,        128, 128,  64, 64, 128, 3, 1},
    {KernelKind::kWgmma,        128, 256,  64, 64, 256, 4, 1},
    {KernelKind::kWgmma,         64, 128,  64, 64, 128, 5, 4},
    {KernelKind::kWgmma,         64,  64,  64, 64,  64, 6, 8},
    {KernelKind::kWgmma,        128, 128,  64, 64, 128, 4, 2},
    // Hopper, warp-specialised.
    {KernelKind::kWgmmaWs,      128, 128,  64, 64, 128, 4, 1},
    {KernelKind::kWgmmaWs,      128, 128,  64, 64, 128, 6, 1},
    {KernelKind::kWgmmaWs,      128,  64,  64, 64,  64, 6, 1},
    // Hopper, TMA-fed: two consumer warpgroups for the large tiles, one for the small.
    {KernelKind::kWgmmaTma,     128, 128,  64, 64, 128, 6, 1},
    {KernelKind::kWgmmaTma,     128, 256,  64, 64, 256, 4, 1},
    {KernelKind::kWgmmaTma,     128,  64,  64, 64,  64, 8, 1},
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 6, 1},
    {KernelKind::kWgmmaTma,      64,  64,  64, 64,  64, 6, 1},
    {KernelKind::kWgmmaTma,     128, 128,  64, 64, 128, 6, 2},
    {KernelKind::kWgmmaTma,      64,  64,  64, 64,  64, 6, 8},
    // Shallower rings, two blocks per SM: for short reductions (1x1, C <= 256), whose time is
    // the output store. (Not 128 x 128: two blocks of 384 threads leave 80 registers at entry,
    // and ptxas allocates for that cap, not for the consumers' setmaxnreg share.)
    {KernelKind::kWgmmaTma,     128,  64,  64, 64,  64, 4, 1},
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 4, 1},
    // Persistent TMA rows: the epilogue is staged outside the ring, which the producer is
    // already refilling, so stores overlap the next tile's copies (ring + staging <= 227 KB).
    //                                                          persistent
    {KernelKind::kWgmmaTma,     128, 256,  64, 64, 256, 3, 1, true},
    {KernelKind::kWgmmaTma,     128, 128,  64, 64, 128, 5, 1, true},
    {KernelKind::kWgmmaTma,     128,  64,  64, 64,  64, 6, 1, true},
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 6, 1, true},
    // More cluster split-K for grids far under one wave: late 3x3 layers at N = 8 (28 tiles of
    // 64 x 128) and the 1x1 layers with 8-16 k tiles at N = 1 (14-26 tiles of 64 x 64).
    {KernelKind::kWgmmaTma,      64,  64,  64, 64,  64, 6, 2},
    {KernelKind::kWgmmaTma,      64,  64,  64, 64,  64, 6, 4},
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 6, 4},
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 6, 8},
    // Two-way cluster split-K with two blocks per SM: the late layers at N = 32 (M = 1568,
    // 100-104 tiles of 64 x 128 or 128 x 64, 32-72 k tiles each) fill one wave of 264 slots.
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 4, 2},
    {KernelKind::kWgmmaTma,     128,  64,  64, 64,  64, 4, 2},
    // Weight multicast over block pairs: L2 serves each B tile once per two blocks, for the
    // copy-bound 3x3 and wide 1x1 layers at N = 8..32 (Nsight: stalls waiting on the ring).
    //                                                          persistent multicast
    {KernelKind::kWgmmaTma,      64, 128,  64, 64, 128, 4, 1, false, 2},
    {KernelKind::kWgmmaTma,     128,  64,  64, 64,  64, 4, 1, false, 2},
    {KernelKind::kWgmmaTma,     128, 128,  64, 64, 128, 6, 1, false, 2},
    {KernelKind::kWgmmaTma,     128, 256,  64, 64, 256, 4, 1, false, 2},
    // mma.sync rows appended after the rest, so that every row above keeps its index.
    // 64-element k tiles on the N = 32 workhorse (128 x 128, 64 x 32 warp tiles): half the
    // barriers per multiply; 110 KB, so two blocks per SM as with b128x128x32_w64x32_s4.
    {KernelKind::kTensorOp,     128, 128,  64, 64, 32, 3, 1},
    // The same, split four ways: l4_3x3_512 at N = 32 has 52 such tiles (M = 1568) for 264 block
    // slots, each a chain of 72 k tiles (55 -> 48 us; two ways never won, so no sk2 row).
    {KernelKind::kTensorOp,     128, 128,  64, 64, 32, 3, 4},
    // Eight-way split of the 64 x 64 row for the deep 1x1 layers at N = 1 (K = 1024-2048, one M
    // tile, 8-16 N tiles): four ways leave 32-64 blocks for 132 SMs, each a chain of 4-8 k tiles.
    {KernelKind::kTensorOp,      64,  64,  64, 32, 32, 3, 8},
    // Deeper pipelines of the small tiles for N = 1, where a block's chain is 4-16 k tiles of
    // cold loads and 2-3 in flight leave it waiting on each few; both stay under sm_89's 99 KB.
    {KernelKind::kTensorOp,      32,  64,  64, 32, 32, 7, 1},
    {KernelKind::kTensorOp,      64,  64,  64, 32, 32, 5, 1},
    // The small tiles with more, smaller warp tiles, for N = 1: there a block is alone on its SM
    // and its warps are issue-bound (Nsight Compute on l2_1x1_512to128, 2026-12-06: "selected"
    // and fixed-latency waits 63% of stalls, loads 0.4%), so the 2-warp 32 x 64 tile used half
    // of the SM's four schedulers and each warp ran ~2,900 instructions. Twice the warps halve
    // each warp's share of the loads, the multiplies and the epilogue: best mma.sync row on 14
    // of 20 layers at N = 1 (7.55 us under Nsight where the 2-warp row took 9.82).
    {KernelKind::kTensorOp,      32,  64,  64, 16, 32, 4, 1},
    {KernelKind::kTensorOp,      32,  64,  64, 16, 32, 4, 4},
    {KernelKind::kTensorOp,      32,  64,  64, 16, 16, 4, 1},
    // (The 64 x 64 tile on eight warps, w32x16 with 5 stages or split eight ways, was never the
    // best row of any layer, dtype or batch: bench/results/2026-12-06_cold_path, run 2.)
};
// clang-format on

inline constexpr int kNumConfigs = static_cast<int>(sizeof(kConfigTable) / sizeof(TileConfig));

// Multicast pairs: TMA rows only, neither persistent nor split (their clusters are the pairs).
constexpr bool MulticastRowsArePairs() {
  for (const TileConfig& c : kConfigTable) {
    if (c.multicast == 1) continue;
    if (c.multicast != 2 || c.kind != KernelKind::kWgmmaTma || c.persistent || c.split_k != 1) {
      return false;
    }
  }
  return true;
}
static_assert(MulticastRowsArePairs(), "a multicast row that is not a plain TMA pair");

// Bumped whenever the table or a kernel changes, so stale tuning results are ignored.
inline constexpr const char* kConfigTableVersion = "convserve-cuda-19";

// "b128x128x32_w64x64_s3", plus "_sk4" for split-K, "_fewch", "_simt", "_wgmma", "_wgmma_ws",
// "_wgmma_tma", then "_persistent" or "_mc2"; "b256_dw" for depthwise.
std::string ConfigName(const TileConfig& config);

}  // namespace cuda
}  // namespace convserve
