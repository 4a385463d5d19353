// The conv kernels themselves: the implicit-GEMM template (tensor cores through mma.sync, or
// FFMA for exact fp32), the direct depthwise kernel, and the small helpers around them (split-K
// reduction, NCHW->NHWC input transpose, weight packing). Included only by the instantiation
// files and conv_kernels.cu; everything here is a template or static.
//
// Implicit GEMM, per group g: C[m][n] = sum_k A[m][k] * B[n][k], with
//   m = (image, p, q) over the output pixels, n = output channel within the group,
//   k = (r, s, c) with c fastest, so an NHWC input row of a filter tap is contiguous in k.
// A is gathered from the NHWC input on the fly; B is the packed weight [g][n][k_pad].
// Shared memory holds STAGES (A, B) slices of block_k bytes-equivalent; rows are padded by 16
// bytes so the 8 row addresses of every ldmatrix fall in distinct bank quads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cluster_reduce.cuh"
#include "kernels/cuda/kernel_params.h"
#include "kernels/cuda/tile_config.h"

namespace convserve {
namespace cuda {

// ---- element conversion -------------------------------------------------------------------

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// The activation as a compile-time choice: the GEMM epilogue is instantiated per activation
// behind one uniform switch (DispatchActivation), because a run-time switch per element was
// if-converted into ~28K straight-line instructions (every activation evaluated, then selected)
// that thrashed the instruction cache and dominated the large tiles' run time.
template <int kActivation>
__device__ __forceinline__ float ActivateFixed(float x) {
  if constexpr (kActivation == 1) {  // relu
    return fmaxf(x, 0.f);
  } else if constexpr (kActivation == 2) {  // silu
    return x / (1.f + __expf(-x));
  } else if constexpr (kActivation == 3) {  // gelu, tanh approximation
    const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.f + tanhf(inner));
  } else if constexpr (kActivation == 4) {  // sigmoid
    return 1.f / (1.f + __expf(-x));
  } else if constexpr (kActivation == 5) {  // tanh
    return tanhf(x);
  } else {
    return x;
  }
}

// Run-time activation, for the one-output-per-thread kernels where code size does not matter.
__device__ __forceinline__ float Activate(int activation, float x) {
  switch (activation) {
    case 1:
      return ActivateFixed<1>(x);
    case 2:
      return ActivateFixed<2>(x);
    case 3:
      return ActivateFixed<3>(x);
    case 4:
      return ActivateFixed<4>(x);
    case 5:
      return ActivateFixed<5>(x);
    default:
      return x;
  }
}

template <int kActivation>
struct ActivationTag {
  static constexpr int value = kActivation;
};

// Calls fn(ActivationTag<a>{}) for the run-time activation a: one uniform branch per kernel.
// NONE and RELU (the common cases) get their own compiled epilogue; the others share one with
// the run-time switch (ActivationTag<-1>), which bounds compile time (each compiled epilogue
// adds ~40% to an instantiation file) at the cost of a slower epilogue for those activations.
template <typename Fn>
__device__ __forceinline__ void DispatchActivation(int activation, Fn&& fn) {
  switch (activation) {
    case 0:
      fn(ActivationTag<0>{});
      break;
    case 1:
      fn(ActivationTag<1>{});
      break;
    default:
      fn(ActivationTag<-1>{});
      break;
  }
}

// ---- PTX wrappers --------------------------------------------------------------------------

__device__ __forceinline__ uint32_t SmemAddress(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// 16-byte global->shared copy; src_bytes == 0 writes zeros (padding, out-of-range rows).
__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void LdMatrixX4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

__device__ __forceinline__ uint32_t ToTf32(uint32_t bits) {
  uint32_t out;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(out) : "f"(__uint_as_float(bits)));
  return out;
}

// D += A * B for one m16n8k16 (fp16/bf16) or m16n8k8 (tf32) tile.
template <typename T>
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void Mma<__half>(float (&d)[4], const uint32_t (&a)[4],
                                            const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void Mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                   const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void Mma<float>(float (&d)[4], const uint32_t (&a)[4],
                                           const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(ToTf32(a[0])), "r"(ToTf32(a[1])), "r"(ToTf32(a[2])), "r"(ToTf32(a[3])),
        "r"(ToTf32(b[0])), "r"(ToTf32(b[1])));
}

// ---- epilogue ------------------------------------------------------------------------------

// Where output row m (one output pixel) lives: element (m, channel) is at base + channel * step.
struct OutputRow {
  int64_t base;
  int64_t step;
  bool valid;
};

// Whether a launch's GEMM blocks store fp32 partial sums for the split-K reduction kernel: split
// slices that do not sum inside a cluster (KernelParams::cluster_split).
__device__ __forceinline__ bool StoresPartials(const KernelParams& p) {
  return p.split_k > 1 && !p.cluster_split;
}

__device__ __forceinline__ OutputRow MakeOutputRow(const KernelParams& p, int m, int split) {
  OutputRow row;
  row.valid = m < p.gemm_m;
  if (StoresPartials(p)) {
    row.base = (static_cast<int64_t>(split) * p.gemm_m + m) * p.out_channels;
    row.step = 1;
  } else if (!p.output_nchw) {
    row.base = static_cast<int64_t>(m) * p.out_channels;
    row.step = 1;
  } else {
    int pq;
    const int image = p.div_pq.DivMod(m, &pq);
    row.base = static_cast<int64_t>(image) * p.out_channels * p.div_pq.divisor + pq;
    row.step = p.div_pq.divisor;
  }
  return row;
}

// The bias of output channel `channel` (0 when the layer has none).
template <typename T>
__device__ __forceinline__ float BiasOf(const KernelParams& p, int channel) {
  return p.bias != nullptr ? ToFloat(static_cast<const T*>(p.bias)[channel]) : 0.f;
}

// Activation and rounding to T of a value that has its bias. kActivation < 0: the run-time
// p.activation (DispatchActivation compiles only some activations in).
template <typename T, int kActivation = -1>
__device__ __forceinline__ T ActivateToT(const KernelParams& p, float v) {
  if constexpr (kActivation < 0) {
    return FromFloat<T>(Activate(p.activation, v));
  } else {
    return FromFloat<T>(ActivateFixed<kActivation>(v));
  }
}

// Final value of one output element: bias, activation, rounding to T.
template <typename T, int kActivation = -1>
__device__ __forceinline__ T FinishValue(const KernelParams& p, int channel, float v) {
  return ActivateToT<T, kActivation>(p, v + BiasOf<T>(p, channel));
}

// Stores channels `channel` and `channel + 1` (when `two`) of one row; b0 and b1 are their
// biases (unused for partial sums).
template <typename T, int kActivation>
__device__ __forceinline__ void StorePair(const KernelParams& p, const OutputRow& row, int channel,
                                          float v0, float v1, float b0, float b1, bool two) {
  if (StoresPartials(p)) {
    float* dst = p.partials + row.base + channel;
    if (two && ((row.base + channel) & 1) == 0) {
      *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
    } else {
      dst[0] = v0;
      if (two) dst[1] = v1;
    }
    return;
  }
  T* out = static_cast<T*>(p.output);
  const T r0 = ActivateToT<T, kActivation>(p, v0 + b0);
  if (two && row.step == 1 && sizeof(T) == 2 && ((row.base + channel) & 1) == 0) {
    const T r1 = ActivateToT<T, kActivation>(p, v1 + b1);
    uint16_t lo, hi;
    memcpy(&lo, &r0, 2);
    memcpy(&hi, &r1, 2);
    *reinterpret_cast<uint32_t*>(out + row.base + channel) = lo | (static_cast<uint32_t>(hi) << 16);
    return;
  }
  out[row.base + channel * row.step] = r0;
  if (two) out[row.base + (channel + 1) * row.step] = ActivateToT<T, kActivation>(p, v1 + b1);
}

// The epilogue for NHWC outputs without split-K (KernelParams::vector_store): a tile's threads
// write their finished values (bias, activation, rounding) into a [kRows][kCols] staging tile in
// shared memory, then copy it out row by row in 16-byte stores, so each warp store covers whole
// 128-byte lines instead of 8 rows x 16 bytes. Rows are padded by 16 bytes: the fragment
// writes of one warp (8 rows x 4 column pairs) then fall in distinct banks.
template <typename T, int kRows, int kCols>
struct StagedTile {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  static constexpr int kChunksPerRow = kCols / kVec;
  static constexpr int kRowBytes = kCols * static_cast<int>(sizeof(T)) + 16;
  static constexpr int kBytes = kRows * kRowBytes;
  static_assert(kCols % kVec == 0, "whole 16-byte chunks per row");

  // Columns c and c + 1 of row r (c even), as one store.
  __device__ __forceinline__ static void Put(uint8_t* tile, int r, int c, T v0, T v1) {
    struct alignas(2 * sizeof(T)) Pair {
      T lo, hi;
    };
    *reinterpret_cast<Pair*>(tile + r * kRowBytes + c * sizeof(T)) = Pair{v0, v1};
  }

  // Copies the tile to the output with kThreads threads: row r is output pixel m0 + r, column c
  // is channel channel0 + c, which exists while n0 + c < group_k (group_k is a multiple of kVec).
  // The trip count and strides are compile-time, so the loop unrolls into independent loads
  // and stores.
  template <int kThreads>
  __device__ __forceinline__ static void Store(const uint8_t* tile, const KernelParams& p, int m0,
                                               int n0, int channel0, int thread) {
    static_assert(kRows * kChunksPerRow % kThreads == 0, "whole passes over the tile");
    T* out = static_cast<T*>(p.output);
#pragma unroll
    for (int pass = 0; pass < kRows * kChunksPerRow / kThreads; ++pass) {
      const int i = pass * kThreads + thread;
      const int r = i / kChunksPerRow;
      const int c = (i - r * kChunksPerRow) * kVec;
      if (m0 + r >= p.gemm_m || n0 + c >= p.group_k) continue;
      const uint4 v = *reinterpret_cast<const uint4*>(tile + r * kRowBytes + c * sizeof(T));
      *reinterpret_cast<uint4*>(out + static_cast<int64_t>(m0 + r) * p.out_channels + channel0 +
                                c) = v;
    }
  }
};

// Where a GEMM block works: grid = (M tiles, N tiles, groups x split-K slices); its k tiles
// are [kt_begin, kt_end) of the slice.
struct GemmBlock {
  int m_block, n_block, group, split, kt_begin, kt_end;

  __device__ __forceinline__ static GemmBlock Locate(const KernelParams& p, int block_m,
                                                     int block_n, int block_k) {
    GemmBlock b;
    b.m_block = blockIdx.x * block_m;
    b.n_block = blockIdx.y * block_n;
    b.group = p.div_split_k.DivMod(static_cast<int>(blockIdx.z), &b.split);
    const int total_k_tiles = (p.k_pad + block_k - 1) / block_k;
    b.kt_begin = b.split * p.k_tiles_per_split;
    b.kt_end = min(total_k_tiles, b.kt_begin + p.k_tiles_per_split);
    return b;
  }

  // Output tile `tile` of a persistent block's walk over the (M tiles x n_tiles) grid of an
  // ungrouped, unsplit GEMM, N tiles fastest: the blocks in flight together share A rows in L2.
  __device__ __forceinline__ static GemmBlock LocateTile(const KernelParams& p, int tile,
                                                         int n_tiles, int block_m, int block_n,
                                                         int block_k) {
    GemmBlock b;
    const int m_tile = tile / n_tiles;
    b.m_block = m_tile * block_m;
    b.n_block = (tile - m_tile * n_tiles) * block_n;
    b.group = 0;
    b.split = 0;
    b.kt_begin = 0;
    b.kt_end = (p.k_pad + block_k - 1) / block_k;
    return b;
  }
};

// ---- operand loaders -----------------------------------------------------------------------

// The A operand (the implicit im2col of the NHWC input) as one thread loads it: column `vcol`
// (kVec reduction elements, 16 bytes) of rows row0, row0 + kRowsPerPass, ... of the block's M
// tile. Each row's output pixel is decoded once, into its input origin; the thread's filter tap
// (r, s, c) is shared by its rows and advances per k tile, so a row's source is its origin plus
// the tap's offset: two adds and two compares per 16-byte copy. (Computing (h * W + w) * C per
// row and tile instead made the integer work ~3x the tensor-core instructions of the main loop,
// Nsight Compute on the 128 x 128 row at N = 32, 2026-12-06.)
// The 16-byte copies need C/groups to be a multiple of kVec, so that a vector never straddles
// two filter taps; the element-gather kinds use only the decoded rows (image, ih, iw).
template <typename T, int kRows, int kRowsPerPass>
struct InputRows {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));
  int64_t image[kRows];   // element offset of the row's image and group
  int64_t origin[kRows];  // element offset of the row's input origin (ih, iw); 0 past M
  int ih[kRows];          // input origin of the row's output pixel
  int iw[kRows];
  int c, s, r;       // this thread's reduction position (filter tap r, s; channel c)
  int tap_h, tap_w;  // r * dil_h, s * dil_w
  int64_t tap;       // element offset of (tap_h, tap_w, c) from a row's origin

  __device__ __forceinline__ void Init(const KernelParams& p, int m_first, int group, int k) {
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int m = m_first + i * kRowsPerPass;
      if (m < p.gemm_m) {
        int pq, oq;
        const int img = p.div_pq.DivMod(m, &pq);
        const int op = p.div_out_w.DivMod(pq, &oq);
        image[i] = static_cast<int64_t>(img) * p.height * p.width * p.channels +
                   static_cast<int64_t>(group) * p.group_c;
        ih[i] = op * p.stride_h - p.pad_h;
        iw[i] = oq * p.stride_w - p.pad_w;
        origin[i] = image[i] + (static_cast<int64_t>(ih[i]) * p.width + iw[i]) * p.channels;
      } else {
        image[i] = 0;
        origin[i] = 0;
        ih[i] = -(1 << 29);  // never in range
        iw[i] = 0;
      }
    }
    r = p.div_kernel_w.DivMod(p.div_group_c.DivMod(k, &c), &s);
    UpdateTap(p);
  }

  __device__ __forceinline__ void UpdateTap(const KernelParams& p) {
    tap_h = r * p.dil_h;
    tap_w = s * p.dil_w;
    tap = (static_cast<int64_t>(tap_h) * p.width + tap_w) * p.channels + c;
  }

  // Issues this thread's 16-byte copies of one k tile, row i to dst + i * row_stride (shared
  // memory bytes); padding, rows past M and inactive tiles (past the last) are zero-filled.
  __device__ __forceinline__ void Load(const KernelParams& p, const T* input, bool active,
                                       uint32_t dst, int row_stride, int block_k) {
    const bool tap_ok = active && r < p.kernel_h;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const bool ok = tap_ok &&
                      static_cast<unsigned>(ih[i] + tap_h) < static_cast<unsigned>(p.height) &&
                      static_cast<unsigned>(iw[i] + tap_w) < static_cast<unsigned>(p.width);
      CpAsync16(dst + i * row_stride, input + (ok ? origin[i] + tap : 0), ok ? 16 : 0);
    }
    c += block_k;
    while (c >= p.group_c) {
      c -= p.group_c;
      if (++s == p.kernel_w) {
        s = 0;
        ++r;
      }
    }
    UpdateTap(p);
  }
};

// The B operand as one thread loads it: 16-byte column of rows row0, row0 + kRowsPerPass, ...
// of the block's N tile in the packed weight [groups][K/groups][k_pad]. The rows are evenly
// spaced, so one offset and a count of real rows describe them all (fewer live registers than
// an offset per row, which the 128-register kernels rematerialised every tile).
template <typename T, int kRows, int kRowsPerPass>
struct WeightRows {
  int64_t offset;  // element offset of the thread's first row
  int valid_rows;  // rows i < valid_rows are output channels of the group
  int k;           // this thread's reduction position

  __device__ __forceinline__ void Init(const KernelParams& p, int n_first, int group, int k0) {
    valid_rows = n_first < p.group_k
                     ? min(kRows, (p.group_k - n_first + kRowsPerPass - 1) / kRowsPerPass)
                     : 0;
    offset = (static_cast<int64_t>(group) * p.group_k + n_first) * p.k_pad;
    k = k0;
  }

  __device__ __forceinline__ void Load(const KernelParams& p, const T* weight, bool active,
                                       uint32_t dst, int row_stride, int block_k) {
    const bool k_ok = active && k < p.k_pad;
    const int64_t at = offset + k;
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      // Inactive (past the last tile) or out of range: a zero-byte copy, no branch.
      const bool ok = k_ok && i < valid_rows;
      const int64_t row_at = at + static_cast<int64_t>(i * kRowsPerPass) * p.k_pad;
      CpAsync16(dst + i * row_stride, weight + (ok ? row_at : 0), ok ? 16 : 0);
    }
    k += block_k;
  }
};

// ---- implicit GEMM -------------------------------------------------------------------------

template <typename T, int kBlockM, int kBlockN, int kBlockKBytes, int kWarpM, int kWarpN,
          int kStages, KernelKind kKind>
struct GemmShape {
  static constexpr bool kGather = kKind != KernelKind::kTensorOp;  // element-wise A loads
  static constexpr bool kSimt = kKind == KernelKind::kSimt;
  static constexpr int kWarpsM = kBlockM / kWarpM;
  static constexpr int kWarpsN = kBlockN / kWarpN;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16 bytes
  static constexpr int kBlockK = kBlockKBytes / static_cast<int>(sizeof(T));
  static constexpr int kRowBytes = kBlockKBytes + 16;  // padded shared-memory row
  static constexpr int kVecPerRow = kBlockKBytes / 16;
  static constexpr int kRowsPerPass = kThreads / kVecPerRow;
  static constexpr int kARows = kBlockM / kRowsPerPass;  // A rows each thread loads
  static constexpr int kBRows = kBlockN / kRowsPerPass;
  static constexpr int kStageBytes = (kBlockM + kBlockN) * kRowBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  // Split slices can sum inside a cluster (sm_90) when the block's fp32 tile fits in the drained
  // pipeline's shared memory.
  static constexpr bool kClusterSplit = kBlockM * kBlockN * 4 <= kSmemBytes;

  static_assert(kBlockM % kWarpM == 0 && kBlockN % kWarpN == 0, "warps must tile the block");
  static_assert(kThreads % kVecPerRow == 0, "threads must cover whole rows");
  static_assert(kBlockM % kRowsPerPass == 0 && kBlockN % kRowsPerPass == 0,
                "every thread loads the same number of rows");
  static_assert(kBlockKBytes % 32 == 0, "a k step of the MMA is 32 bytes");
  static_assert(kStages >= 2, "the pipeline needs two stages at least");
  static_assert(kSimt || (kWarpM % 16 == 0 && kWarpN % 16 == 0), "MMA warp tile");
  static_assert(!kSimt || (kWarpM == 32 && kWarpN == 16 && sizeof(T) == 4),
                "SIMT: fp32, 32x16 warp tile of 4x4 per lane");
};

// kSplitRow: compiled for a split-K row, with the cluster reduction. The unsplit rows get their
// own kernels without it: carrying that code cost them 3-6% in the main loop on the H100
// (bench/results/2026-12-06_mma_cluster_split, run 2).
template <typename T, int kBlockM, int kBlockN, int kBlockKBytes, int kWarpM, int kWarpN,
          int kStages, KernelKind kKind, bool kSplitRow>
__global__ void __launch_bounds__(
    (GemmShape<T, kBlockM, kBlockN, kBlockKBytes, kWarpM, kWarpN, kStages, kKind>::kThreads))
    ConvGemmKernel(const __grid_constant__ KernelParams p) {
  using Shape = GemmShape<T, kBlockM, kBlockN, kBlockKBytes, kWarpM, kWarpN, kStages, kKind>;
  constexpr int kVec = Shape::kVec;
  constexpr int kBlockK = Shape::kBlockK;
  constexpr int kRowBytes = Shape::kRowBytes;
  extern __shared__ __align__(128) uint8_t smem[];

  const int tid = threadIdx.x;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Split slices: the reduction kernel, a programmatic dependent (LaunchSplitKReduce), may be
  // scheduled once every block of this grid has started; it waits for this grid's results.
  if (StoresPartials(p)) asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  const GemmBlock block = GemmBlock::Locate(p, kBlockM, kBlockN, kBlockK);
  // Named copies: lambdas below capture them (C++17 lambdas cannot capture structured bindings).
  const int m_block = block.m_block, n_block = block.n_block;
  const int group = block.group, split = block.split;
  const int kt_begin = block.kt_begin, kt_end = block.kt_end;

  const T* input = static_cast<const T*>(p.input);
  const T* weight = static_cast<const T*>(p.weight);

  // Each thread loads one 16-byte column `vcol` of rows row0, row0 + kRowsPerPass, ...
  const int vcol = tid % Shape::kVecPerRow;
  const int row0 = tid / Shape::kVecPerRow;

  InputRows<T, Shape::kARows, Shape::kRowsPerPass> a_rows;
  a_rows.Init(p, m_block + row0, group, kt_begin * kBlockK + vcol * kVec);
  WeightRows<T, Shape::kBRows, Shape::kRowsPerPass> b_rows;
  b_rows.Init(p, n_block + row0, group, kt_begin * kBlockK + vcol * kVec);
  int a_k = kt_begin * kBlockK + vcol * kVec;  // element gather's reduction position

  const uint32_t smem_base = SmemAddress(smem);

  auto load_tile = [&](int stage, bool active) {
    const uint32_t a_dst = smem_base + stage * Shape::kStageBytes + row0 * kRowBytes + vcol * 16;
    const uint32_t b_dst = a_dst + kBlockM * kRowBytes;
    if constexpr (!Shape::kGather) {
      a_rows.Load(p, input, active, a_dst, Shape::kRowsPerPass * kRowBytes, kBlockK);
    } else if (active) {
      // Element gather: decode each of this thread's kVec reduction indices once, then read
      // every row's element with a bounds check. Plain loads, stored to shared memory.
      int tap_h[kVec], tap_w[kVec];
      int64_t tap_off[kVec];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const int k = a_k + j;
        if (k < p.gemm_k) {
          int c, s;
          const int r = p.div_kernel_w.DivMod(p.div_group_c.DivMod(k, &c), &s);
          tap_h[j] = r * p.dil_h;
          tap_w[j] = s * p.dil_w;
          tap_off[j] = (static_cast<int64_t>(tap_h[j]) * p.width + tap_w[j]) * p.channels + c;
        } else {
          tap_h[j] = -(1 << 29);
          tap_w[j] = 0;
          tap_off[j] = 0;
        }
      }
#pragma unroll
      for (int i = 0; i < Shape::kARows; ++i) {
        const T* base = input + a_rows.image[i] +
                        (static_cast<int64_t>(a_rows.ih[i]) * p.width + a_rows.iw[i]) * p.channels;
        alignas(16) T vals[kVec];
#pragma unroll
        for (int j = 0; j < kVec; ++j) {
          const int ih = a_rows.ih[i] + tap_h[j];
          const int iw = a_rows.iw[i] + tap_w[j];
          const bool ok = static_cast<unsigned>(ih) < static_cast<unsigned>(p.height) &&
                          static_cast<unsigned>(iw) < static_cast<unsigned>(p.width);
          vals[j] = ok ? base[tap_off[j]] : FromFloat<T>(0.f);
        }
        const uint4 packed = *reinterpret_cast<const uint4*>(vals);
        asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(
                         a_dst + i * Shape::kRowsPerPass * kRowBytes),
                     "r"(packed.x), "r"(packed.y), "r"(packed.z), "r"(packed.w));
      }
    }
    a_k += kBlockK;
    b_rows.Load(p, weight, active, b_dst, Shape::kRowsPerPass * kRowBytes, kBlockK);
  };

  const int warp = tid / 32;
  const int lane = tid % 32;
  const int warp_m = warp % Shape::kWarpsM;
  const int warp_n = warp / Shape::kWarpsM;

  // Accumulators: MMA fragments, or a 4x4 block per lane for SIMT.
  constexpr int kMi = Shape::kSimt ? 4 : kWarpM / 16;
  constexpr int kNi = Shape::kSimt ? 4 : kWarpN / 8;
  constexpr int kAccPer = Shape::kSimt ? 1 : 4;
  float acc[kMi][kNi][kAccPer];
#pragma unroll
  for (int i = 0; i < kMi; ++i)
#pragma unroll
    for (int j = 0; j < kNi; ++j)
#pragma unroll
      for (int e = 0; e < kAccPer; ++e) acc[i][j][e] = 0.f;

  // One loop fills the pipeline and runs it: its first kStages - 1 steps only load (the
  // prologue), each later step waits for the oldest stage, refills the stage read one step
  // before and multiplies. At N = 1 each block runs its path once with the L2 flushed, so every
  // instruction is a cold fetch ("no instruction" led the stalls, Nsight Compute 2026-12-06):
  // a separately unrolled prologue held kStages - 1 more copies of the loader.
  int read_stage = 0;
  int write_stage = 0;
  // Not unrolled: the body is large, and unrolled copies overflow the instruction cache
  // (Nsight Compute showed 62% of stalls as "no instruction" before this pragma).
#pragma unroll 1
  for (int step = 0, kt = kt_begin - (kStages - 1); kt < kt_end; ++step, ++kt) {
    const bool multiply = step >= kStages - 1;
    if (multiply) {
      CpAsyncWait<kStages - 2>();
      // The stage written now was read in the previous step, which every thread has left.
      __syncthreads();
    }
    load_tile(write_stage, kt + kStages - 1 < kt_end);
    CpAsyncCommit();
    write_stage = write_stage + 1 == kStages ? 0 : write_stage + 1;
    if (!multiply) continue;

    const uint32_t a_stage = smem_base + read_stage * Shape::kStageBytes;
    const uint32_t b_stage = a_stage + kBlockM * kRowBytes;
    if constexpr (!Shape::kSimt) {
      // Fragments of k step ks (32 bytes of k) from the stage.
      const auto load_fragments = [&](int ks, uint32_t(&a_frag)[kMi][4],
                                      uint32_t(&b_frag)[kNi][2]) {
#pragma unroll
        for (int mi = 0; mi < kMi; ++mi) {
          const int row = warp_m * kWarpM + mi * 16 + (lane % 16);
          LdMatrixX4(a_frag[mi], a_stage + row * kRowBytes + ks * 32 + (lane / 16) * 16);
        }
#pragma unroll
        for (int nj = 0; nj < kNi / 2; ++nj) {
          const int row = warp_n * kWarpN + nj * 16 + (lane % 8) + (lane / 16) * 8;
          uint32_t r[4];
          LdMatrixX4(r, b_stage + row * kRowBytes + ks * 32 + ((lane / 8) % 2) * 16);
          b_frag[2 * nj][0] = r[0];
          b_frag[2 * nj][1] = r[1];
          b_frag[2 * nj + 1][0] = r[2];
          b_frag[2 * nj + 1][1] = r[3];
        }
      };
      // Double-buffered: step ks + 1's ldmatrix are issued before step ks's multiplies, so
      // their latency hides under the tensor-core work instead of stalling the warp
      // (ldmatrix and mma are volatile asm and issue in program order).
      constexpr int kSteps = kBlockKBytes / 32;
      uint32_t a_frag[2][kMi][4];
      uint32_t b_frag[2][kNi][2];
      load_fragments(0, a_frag[0], b_frag[0]);
#pragma unroll
      for (int ks = 0; ks < kSteps; ++ks) {
        if (ks + 1 < kSteps) load_fragments(ks + 1, a_frag[(ks + 1) % 2], b_frag[(ks + 1) % 2]);
#pragma unroll
        for (int mi = 0; mi < kMi; ++mi)
#pragma unroll
          for (int ni = 0; ni < kNi; ++ni) {
            Mma<T>(acc[mi][ni], a_frag[ks % 2][mi], b_frag[ks % 2][ni]);
          }
      }
    } else {
      // SIMT: lane (lm, ln) owns rows lm*4.. and columns ln*4.. of the warp's 32x16 tile.
      const float* a_tile = reinterpret_cast<const float*>(smem + read_stage * Shape::kStageBytes);
      const float* b_tile = a_tile + kBlockM * kRowBytes / 4;
      const int lm = lane % 8;
      const int ln = lane / 8;
#pragma unroll
      for (int k4 = 0; k4 < kBlockK / 4; ++k4) {
        float4 a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          a[i] = *reinterpret_cast<const float4*>(
              a_tile + (warp_m * 32 + lm * 4 + i) * (kRowBytes / 4) + k4 * 4);
          b[i] = *reinterpret_cast<const float4*>(
              b_tile + (warp_n * 16 + ln * 4 + i) * (kRowBytes / 4) + k4 * 4);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            acc[i][j][0] = fmaf(a[i].x, b[j].x, acc[i][j][0]);
            acc[i][j][0] = fmaf(a[i].y, b[j].y, acc[i][j][0]);
            acc[i][j][0] = fmaf(a[i].z, b[j].z, acc[i][j][0]);
            acc[i][j][0] = fmaf(a[i].w, b[j].w, acc[i][j][0]);
          }
      }
    }
    read_stage = read_stage + 1 == kStages ? 0 : read_stage + 1;
  }
  CpAsyncWait<0>();

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // The split slices of this tile are one cluster (p.cluster_split): they sum in distributed
  // shared memory into slice 0 (cluster rank = split), which alone runs the epilogue, with the
  // whole sum (cluster_reduce.cuh). No partials in the workspace, no reduction kernel.
  if constexpr (kSplitRow && Shape::kClusterSplit) {
    if (p.cluster_split) {
      constexpr int kCount = kMi * kNi * kAccPer;
      float(&flat)[kCount] = *reinterpret_cast<float(*)[kCount]>(&acc[0][0][0]);
      __syncthreads();  // every warp is done reading the last stage
      ParkAccumulators<kCount, Shape::kThreads>(flat, smem_base, tid);
      ClusterSync();
      SumSharedChunks<kCount, Shape::kThreads>(smem_base, tid, split, p.split_k);
      ClusterSync();  // every share is in slice 0's parking; no slice reads another any more
      if (split != 0) return;
      ReloadAccumulators<kCount, Shape::kThreads>(flat, smem_base, tid);
    }
  }
#endif

  const int channel0 = group * p.group_k;
  // A lane's columns are the same in every row it stores: their biases are read once, not per
  // element (the per-element loads were a tenth of the N = 1 epilogue).
  constexpr int kBiasCols = Shape::kSimt ? 1 : kNi;
  float bias[kBiasCols][2];
#pragma unroll
  for (int ni = 0; ni < kBiasCols; ++ni) {
    const int n = n_block + warp_n * kWarpN + ni * 8 + 2 * (lane % 4);
    bias[ni][0] = !Shape::kSimt && n < p.group_k ? BiasOf<T>(p, channel0 + n) : 0.f;
    bias[ni][1] = !Shape::kSimt && n + 1 < p.group_k ? BiasOf<T>(p, channel0 + n + 1) : 0.f;
  }
  // Staged epilogue where the block's tile fits in the pipeline's shared memory.
  using Staged = StagedTile<T, kBlockM, kBlockN>;
  if constexpr (!Shape::kSimt && Staged::kBytes <= Shape::kSmemBytes) {
    if (p.vector_store) {
      __syncthreads();  // every warp is done reading the last stage
      DispatchActivation(p.activation, [&](auto tag) {
        constexpr int kAct = decltype(tag)::value;
#pragma unroll
        for (int mi = 0; mi < kMi; ++mi)
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const int r = warp_m * kWarpM + mi * 16 + lane / 4 + half * 8;
#pragma unroll
            for (int ni = 0; ni < kNi; ++ni) {
              const int c = warp_n * kWarpN + ni * 8 + 2 * (lane % 4);
              if (n_block + c >= p.group_k) continue;
              Staged::Put(smem, r, c, ActivateToT<T, kAct>(p, acc[mi][ni][half * 2] + bias[ni][0]),
                          ActivateToT<T, kAct>(p, acc[mi][ni][half * 2 + 1] + bias[ni][1]));
            }
          }
      });
      __syncthreads();
      Staged::template Store<Shape::kThreads>(smem, p, m_block, n_block, channel0 + n_block, tid);
      return;
    }
  }
  // Epilogue straight from registers; split-K slices store raw sums (the reduction finishes).
  DispatchActivation(StoresPartials(p) ? 0 : p.activation, [&](auto tag) {
    constexpr int kAct = decltype(tag)::value;
    if constexpr (!Shape::kSimt) {
      const int g = lane / 4;
      const int t = lane % 4;
#pragma unroll
      for (int mi = 0; mi < kMi; ++mi)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int m = m_block + warp_m * kWarpM + mi * 16 + g + half * 8;
          const OutputRow row = MakeOutputRow(p, m, split);
          if (!row.valid) continue;
#pragma unroll
          for (int ni = 0; ni < kNi; ++ni) {
            const int n = n_block + warp_n * kWarpN + ni * 8 + 2 * t;
            if (n >= p.group_k) continue;
            StorePair<T, kAct>(p, row, channel0 + n, acc[mi][ni][half * 2],
                               acc[mi][ni][half * 2 + 1], bias[ni][0], bias[ni][1],
                               n + 1 < p.group_k);
          }
        }
    } else {
      const int lm = lane % 8;
      const int ln = lane / 8;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = m_block + warp_m * 32 + lm * 4 + i;
        const OutputRow row = MakeOutputRow(p, m, split);
        if (!row.valid) continue;
#pragma unroll
        for (int j = 0; j < 4; j += 2) {
          const int n = n_block + warp_n * 16 + ln * 4 + j;
          if (n >= p.group_k) continue;
          StorePair<T, kAct>(
              p, row, channel0 + n, acc[i][j][0], acc[i][j + 1][0], BiasOf<T>(p, channel0 + n),
              n + 1 < p.group_k ? BiasOf<T>(p, channel0 + n + 1) : 0.f, n + 1 < p.group_k);
        }
      }
    }
  });
}

// ---- direct depthwise ----------------------------------------------------------------------

// One output element per thread, channels fastest so a warp reads contiguous NHWC channels.
// Weights are packed [R][S][K]. Exact fp32 arithmetic for every dtype.
template <typename T, int kThreads>
__global__ void __launch_bounds__(kThreads)
    DepthwiseKernel(const __grid_constant__ KernelParams p) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t total = static_cast<int64_t>(p.gemm_m) * p.out_channels;
  if (index >= total) return;
  const int k = static_cast<int>(index % p.out_channels);
  const int m = static_cast<int>(index / p.out_channels);
  const int pq_count = p.out_h * p.out_w;
  const int image = m / pq_count;
  const int pq = m - image * pq_count;
  const int op = pq / p.out_w;
  const int oq = pq - op * p.out_w;
  const int c = k / p.depth_multiplier;
  const T* input = static_cast<const T*>(p.input) +
                   static_cast<int64_t>(image) * p.height * p.width * p.channels + c;
  const T* weight = static_cast<const T*>(p.weight) + k;
  float acc = 0.f;
  for (int r = 0; r < p.kernel_h; ++r) {
    const int ih = op * p.stride_h - p.pad_h + r * p.dil_h;
    if (static_cast<unsigned>(ih) >= static_cast<unsigned>(p.height)) continue;
    for (int s = 0; s < p.kernel_w; ++s) {
      const int iw = oq * p.stride_w - p.pad_w + s * p.dil_w;
      if (static_cast<unsigned>(iw) >= static_cast<unsigned>(p.width)) continue;
      acc = fmaf(ToFloat(input[(static_cast<int64_t>(ih) * p.width + iw) * p.channels]),
                 ToFloat(weight[(r * p.kernel_w + s) * p.out_channels]), acc);
    }
  }
  const OutputRow row = MakeOutputRow(p, m, 0);
  static_cast<T*>(p.output)[row.base + k * row.step] = FinishValue<T>(p, k, acc);
}

}  // namespace cuda
}  // namespace convserve
