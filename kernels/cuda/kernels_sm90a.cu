// Hopper kernels: the kWgmma rows of kConfigTable for fp16 and bf16 (fp32 is in
// kernels_sm90a_fp32.cu). Built for sm_90a only (wgmma exists only there); see
// kernels/cuda/CMakeLists.txt.
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

static_assert(AllOfKind<KernelKind::kWgmma, 20, 21, 22, 23, 24, 25, 26, 27, 28>() &&
                  AllOfKind<KernelKind::kWgmmaWs, 29, 30, 31>(),
              "update the row lists with the table");

void FillKernelsWgmmaFp16(KernelTable& table) {
  FillKernels<__half, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31>(table);
}

void FillKernelsWgmmaBf16(KernelTable& table) {
  FillKernels<__nv_bfloat16, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31>(table);
}

}  // namespace cuda
}  // namespace convserve
