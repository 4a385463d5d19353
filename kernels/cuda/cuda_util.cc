// See cuda_util.h.
#include "kernels/cuda/cuda_util.h"

#include "absl/strings/str_cat.h"

namespace convserve {
namespace cuda {

absl::Status CudaStatus(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(what, ": ", cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

absl::StatusOr<DeviceBuffer> DeviceBuffer::Allocate(int64_t bytes) {
  DeviceBuffer buffer;
  if (bytes <= 0) return buffer;
  CONVSERVE_CUDA_RETURN_IF_ERROR(cudaMalloc(&buffer.ptr_, static_cast<size_t>(bytes)));
  buffer.bytes_ = bytes;
  return buffer;
}

void DeviceBuffer::Reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

absl::StatusOr<CudaEvent> CudaEvent::Create() {
  cudaEvent_t event = nullptr;
  CONVSERVE_CUDA_RETURN_IF_ERROR(cudaEventCreate(&event));
  return CudaEvent(event);
}

absl::StatusOr<CudaStreamOwner> CudaStreamOwner::Create() {
  cudaStream_t stream = nullptr;
  CONVSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return CudaStreamOwner(stream);
}

}  // namespace cuda
}  // namespace convserve
