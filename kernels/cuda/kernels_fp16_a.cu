// Fp16 kernels: the small and mid tiles and their split-K rows of kConfigTable.
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

void FillKernelsFp16A(KernelTable& table) {
  FillKernels<__half, 0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 57, 58, 59, 60, 61, 62>(table);
}

}  // namespace cuda
}  // namespace convserve
