// Fp32 kernels: the large tiles, few-channel, SIMT and depthwise rows of kConfigTable.
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

void FillKernelsFp32B(KernelTable& table) {
  FillKernels<float, 6, 7, 8, 9, 14, 15, 16, 17, 18, 19, 55, 56>(table);
}

}  // namespace cuda
}  // namespace convserve
