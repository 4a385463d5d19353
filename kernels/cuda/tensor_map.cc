// See tensor_map.h. The encode functions are driver API; they are looked up through the runtime
// (cudaGetDriverEntryPointByVersion) so that the library never links libcuda, which machines
// without a GPU driver (CI) do not have.
#include "kernels/cuda/tensor_map.h"

#include <cudaTypedefs.h>

#include <cstdint>

namespace convserve {
namespace cuda {
namespace {

struct EncodeFunctions {
  PFN_cuTensorMapEncodeIm2col_v12000 im2col = nullptr;
  PFN_cuTensorMapEncodeTiled_v12000 tiled = nullptr;
};

const EncodeFunctions& Functions() {
  static const EncodeFunctions functions = [] {
    EncodeFunctions f;
    void* im2col = nullptr;
    void* tiled = nullptr;
    cudaDriverEntryPointQueryResult found_im2col = cudaDriverEntryPointSymbolNotFound;
    cudaDriverEntryPointQueryResult found_tiled = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeIm2col", &im2col, 12000,
                                         cudaEnableDefault, &found_im2col) == cudaSuccess &&
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &tiled, 12000, cudaEnableDefault,
                                         &found_tiled) == cudaSuccess &&
        found_im2col == cudaDriverEntryPointSuccess && found_tiled == cudaDriverEntryPointSuccess) {
      f.im2col = reinterpret_cast<PFN_cuTensorMapEncodeIm2col_v12000>(im2col);
      f.tiled = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(tiled);
    }
    return f;
  }();
  return functions;
}

}  // namespace

cudaError_t EncodeTmaOperands(const KernelParams& p, bool bf16, int block_m, int block_n,
                              TmaOperands* maps) {
  const EncodeFunctions& encode = Functions();
  if (encode.im2col == nullptr || encode.tiled == nullptr) return cudaErrorNotSupported;
  const CUtensorMapDataType type =
      bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  constexpr uint64_t kElement = 2;
  constexpr cuuint32_t kRowElements = 128 / kElement;  // one 128-byte swizzle row of k

  // The input: dims innermost first. The bounding box is where the top-left filter tap may sit
  // (Im2colLowerCorner, Im2colUpperCorner), walked with the conv stride; the k tile's tap (s, r)
  // is added per copy as the im2col offset. A copy moves one tap's 64 channels into 128-byte
  // swizzled rows, or all C = 16 or 32 channels of a narrow tap into rows of C * 2 bytes in the
  // swizzle of that width.
  const cuuint64_t in_dims[4] = {
      static_cast<cuuint64_t>(p.channels), static_cast<cuuint64_t>(p.width),
      static_cast<cuuint64_t>(p.height), static_cast<cuuint64_t>(p.batch)};
  const cuuint64_t in_strides[3] = {
      kElement * p.channels, kElement * p.channels * p.width,
      kElement * p.channels * p.width * static_cast<cuuint64_t>(p.height)};
  const int lower[2] = {Im2colLowerCorner(p.pad_w), Im2colLowerCorner(p.pad_h)};
  const int upper[2] = {Im2colUpperCorner(p.width, p.out_w, p.stride_w, p.pad_w),
                        Im2colUpperCorner(p.height, p.out_h, p.stride_h, p.pad_h)};
  const cuuint32_t tap_channels = p.channels < static_cast<int>(kRowElements)
                                      ? static_cast<cuuint32_t>(p.channels)
                                      : kRowElements;
  const CUtensorMapSwizzle tap_swizzle = tap_channels * kElement == 32 ? CU_TENSOR_MAP_SWIZZLE_32B
                                         : tap_channels * kElement == 64
                                             ? CU_TENSOR_MAP_SWIZZLE_64B
                                             : CU_TENSOR_MAP_SWIZZLE_128B;
  const cuuint32_t in_steps[4] = {1, static_cast<cuuint32_t>(p.stride_w),
                                  static_cast<cuuint32_t>(p.stride_h), 1};
  if (encode.im2col(&maps->input, type, 4, const_cast<void*>(p.input), in_dims, in_strides, lower,
                    upper, tap_channels, static_cast<cuuint32_t>(block_m), in_steps,
                    CU_TENSOR_MAP_INTERLEAVE_NONE, tap_swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                    CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
    return cudaErrorInvalidValue;
  }

  // The packed weights [K][k_pad]: rows past K read as zeros.
  const cuuint64_t w_dims[2] = {static_cast<cuuint64_t>(p.k_pad),
                                static_cast<cuuint64_t>(p.out_channels)};
  const cuuint64_t w_strides[1] = {kElement * p.k_pad};
  const cuuint32_t w_box[2] = {kRowElements, static_cast<cuuint32_t>(block_n)};
  const cuuint32_t w_steps[2] = {1, 1};
  if (encode.tiled(&maps->weight, type, 2, const_cast<void*>(p.weight), w_dims, w_strides, w_box,
                   w_steps, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
    return cudaErrorInvalidValue;
  }

  // The NHWC output [M][K] (vector_store: K a multiple of 8, 16-byte aligned), written by the
  // epilogue one warpgroup tile (64 rows) and 64 channels at a time; stores past M or K are
  // dropped by the copy engine.
  if (!p.vector_store) return cudaSuccess;
  const cuuint64_t out_dims[2] = {static_cast<cuuint64_t>(p.out_channels),
                                  static_cast<cuuint64_t>(p.gemm_m)};
  const cuuint64_t out_strides[1] = {kElement * p.out_channels};
  const cuuint32_t out_box[2] = {kRowElements, 64};
  if (encode.tiled(&maps->output, type, 2, p.output, out_dims, out_strides, out_box, w_steps,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                   CU_TENSOR_MAP_L2_PROMOTION_NONE,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
    return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace convserve
