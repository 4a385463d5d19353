// Type-erased handles to the instantiated kernels: one per (configuration, dtype), filled by
// the instantiation files (kernels_*.cu) from kConfigTable. Internal to kernels/cuda.
#pragma once

#include <cuda_runtime.h>

#include "kernels/conv_problem.h"
#include "kernels/cuda/kernel_params.h"
#include "kernels/cuda/tile_config.h"

namespace convserve {
namespace cuda {

struct KernelHandle {
  const void* func = nullptr;  // the __global__ function; null: no kernel for this dtype
  int threads = 0;
  int smem_bytes = 0;  // dynamic shared memory per block
  // The mma.sync kinds' split slices can sum inside a cluster on sm_90 (GemmShape::kClusterSplit).
  bool cluster_split = false;
  // Launches with the grid the kind needs for `params`.
  cudaError_t (*launch)(const KernelParams& params, cudaStream_t stream) = nullptr;
};

// The handle of configuration `config` for `dtype`; func is null when the configuration has no
// kernel for that dtype (SIMT is fp32 only).
const KernelHandle& GetKernel(int config, DataType dtype);

// Filled by the instantiation files; each covers some configurations of one dtype.
using KernelTable = KernelHandle[kNumConfigs];
void FillKernelsFp16A(KernelTable& table);
void FillKernelsFp16B(KernelTable& table);
void FillKernelsBf16A(KernelTable& table);
void FillKernelsBf16B(KernelTable& table);
void FillKernelsFp32A(KernelTable& table);
void FillKernelsFp32B(KernelTable& table);
// The kWgmma rows; built only when the build targets sm_90 (CONVSERVE_HAVE_WGMMA), as sm_90a
// code that runs on compute capability 9.0 devices alone.
void FillKernelsWgmmaFp16(KernelTable& table);
void FillKernelsWgmmaBf16(KernelTable& table);
void FillKernelsWgmmaFp32(KernelTable& table);
// The kWgmmaTma rows (fp16 and bf16 only), likewise sm_90a, in two files.
void FillKernelsWgmmaTmaFp16A(KernelTable& table);
void FillKernelsWgmmaTmaBf16A(KernelTable& table);
void FillKernelsWgmmaTmaFp16B(KernelTable& table);
void FillKernelsWgmmaTmaBf16B(KernelTable& table);

}  // namespace cuda
}  // namespace convserve
