// Hopper kernels: the kWgmmaTma rows of kConfigTable (fp16 and bf16) that launch a block per
// output tile, sm_90a only like kernels_sm90a.cu; in a file of their own so the files compile
// side by side (the rest are in kernels_sm90a_tma_b.cu).
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

static_assert(AllOfKind<KernelKind::kWgmmaTma, 32, 33, 34, 35, 36, 37, 38, 39, 40>(),
              "update the row list with the table");

void FillKernelsWgmmaTmaFp16A(KernelTable& table) {
  FillKernels<__half, 32, 33, 34, 35, 36, 37, 38, 39, 40>(table);
}

void FillKernelsWgmmaTmaBf16A(KernelTable& table) {
  FillKernels<__nv_bfloat16, 32, 33, 34, 35, 36, 37, 38, 39, 40>(table);
}

}  // namespace cuda
}  // namespace convserve
