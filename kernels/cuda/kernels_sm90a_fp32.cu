// Hopper kernels: the kWgmma rows of kConfigTable for fp32 inputs (TF32 tensor cores); built
// for sm_90a only, like kernels_sm90a.cu.
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

void FillKernelsWgmmaFp32(KernelTable& table) {
  FillKernels<float, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31>(table);
}

}  // namespace cuda
}  // namespace convserve
