// Hopper kernels: the kWgmmaTma rows of kConfigTable (fp16 and bf16), sm_90a only like
// kernels_sm90a.cu; in a file of their own so the two compile side by side.
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

static_assert(AllOfKind<KernelKind::kWgmmaTma, 32, 33, 34, 35, 36, 37, 38, 39, 40>() &&
                  kNumConfigs == 41,
              "update the row list with the table");

void FillKernelsWgmmaTmaFp16(KernelTable& table) {
  FillKernels<__half, 32, 33, 34, 35, 36, 37, 38, 39, 40>(table);
}

void FillKernelsWgmmaTmaBf16(KernelTable& table) {
  FillKernels<__nv_bfloat16, 32, 33, 34, 35, 36, 37, 38, 39, 40>(table);
}

}  // namespace cuda
}  // namespace convserve
