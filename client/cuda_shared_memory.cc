#include "client/cuda_shared_memory.h"

#include <cuda_runtime_api.h>

#include <utility>

#include "absl/strings/str_cat.h"

namespace convserve {
namespace {

absl::Status CudaError(cudaError_t error, const char* what) {
  cudaGetLastError();  // not sticky: clear it for later calls
  return absl::UnavailableError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaSharedMemoryBuffer>> CudaSharedMemoryBuffer::Create(
    int device, int64_t byte_size) {
  if (byte_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("byte_size must be > 0, got ", byte_size));
  }
  if (cudaError_t error = cudaSetDevice(device); error != cudaSuccess) {
    return CudaError(error, "cudaSetDevice");
  }
  void* data = nullptr;
  if (cudaError_t error = cudaMalloc(&data, static_cast<size_t>(byte_size)); error != cudaSuccess) {
    return CudaError(error, "cudaMalloc");
  }
  cudaIpcMemHandle_t handle;
  if (cudaError_t error = cudaIpcGetMemHandle(&handle, data); error != cudaSuccess) {
    cudaFree(data);
    return CudaError(error, "cudaIpcGetMemHandle");
  }
  return std::unique_ptr<CudaSharedMemoryBuffer>(new CudaSharedMemoryBuffer(
      device, data, byte_size,
      std::string(reinterpret_cast<const char*>(&handle), sizeof(handle))));
}

CudaSharedMemoryBuffer::~CudaSharedMemoryBuffer() {
  cudaSetDevice(device_);
  cudaFree(data_);
}

absl::Status CudaSharedMemoryBuffer::CheckRange(int64_t offset, int64_t bytes) const {
  if (offset < 0 || bytes < 0 || offset > size_ || bytes > size_ - offset) {
    return absl::OutOfRangeError(absl::StrCat("bytes [", offset, ", ", offset, " + ", bytes,
                                              ") are outside the ", size_, "-byte buffer"));
  }
  return absl::OkStatus();
}

absl::Status CudaSharedMemoryBuffer::Upload(int64_t offset, const void* host, int64_t bytes) const {
  if (absl::Status s = CheckRange(offset, bytes); !s.ok()) return s;
  cudaSetDevice(device_);
  if (cudaError_t error = cudaMemcpy(static_cast<char*>(data_) + offset, host,
                                     static_cast<size_t>(bytes), cudaMemcpyHostToDevice);
      error != cudaSuccess) {
    return CudaError(error, "cudaMemcpy (upload)");
  }
  return absl::OkStatus();
}

absl::Status CudaSharedMemoryBuffer::Download(int64_t offset, void* host, int64_t bytes) const {
  if (absl::Status s = CheckRange(offset, bytes); !s.ok()) return s;
  cudaSetDevice(device_);
  if (cudaError_t error = cudaMemcpy(host, static_cast<const char*>(data_) + offset,
                                     static_cast<size_t>(bytes), cudaMemcpyDeviceToHost);
      error != cudaSuccess) {
    return CudaError(error, "cudaMemcpy (download)");
  }
  return absl::OkStatus();
}

}  // namespace convserve
