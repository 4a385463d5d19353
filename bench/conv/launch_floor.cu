#include "bench/conv/launch_floor.h"

namespace convserve {
namespace {

// Does nothing: the time measured around it is the launch and timing floor.
__global__ void EmptyKernel() {}

}  // namespace

cudaError_t LaunchEmptyKernel(const LaunchFloorCase& shape, cudaStream_t stream) {
  if (shape.dynamic_smem_bytes > 0) {
    const cudaError_t error = cudaFuncSetAttribute(
        EmptyKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shape.dynamic_smem_bytes);
    if (error != cudaSuccess) return error;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(shape.blocks);
  config.blockDim = dim3(shape.threads);
  config.dynamicSmemBytes = static_cast<size_t>(shape.dynamic_smem_bytes);
  config.stream = stream;
  cudaLaunchAttribute cluster = {};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = static_cast<unsigned>(shape.cluster);
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = 1;
  if (shape.cluster > 1) {
    config.attrs = &cluster;
    config.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&config, EmptyKernel);
}

}  // namespace convserve
