// CUDA errors as absl::Status, and RAII owners for device memory, events and streams. The one
// place the conv library turns a cudaError_t into a Status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace convserve {
namespace cuda {

// OK for cudaSuccess; otherwise RESOURCE_EXHAUSTED for allocation failures, INTERNAL for the
// rest, with `what` and CUDA's own text in the message.
absl::Status CudaStatus(cudaError_t error, const char* what);

// Abseil 20220623 has no RETURN_IF_ERROR; this is ours, for the CUDA library only.
#define CONVSERVE_RETURN_IF_ERROR(expr)  \
  do {                                   \
    const absl::Status _status = (expr); \
    if (!_status.ok()) return _status;   \
  } while (0)
#define CONVSERVE_CUDA_RETURN_IF_ERROR(call) \
  CONVSERVE_RETURN_IF_ERROR(::convserve::cuda::CudaStatus((call), #call))

// Owns one cudaMalloc allocation. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static absl::StatusOr<DeviceBuffer> Allocate(int64_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { Reset(); }

  void* get() const { return ptr_; }
  int64_t bytes() const { return bytes_; }
  void Reset();

 private:
  void* ptr_ = nullptr;
  int64_t bytes_ = 0;
};

// Owns a cudaEvent_t (timing enabled). Move-only.
class CudaEvent {
 public:
  static absl::StatusOr<CudaEvent> Create();
  CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&&) = delete;
  CudaEvent(const CudaEvent&) = delete;
  ~CudaEvent() {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  cudaEvent_t get() const { return event_; }

 private:
  explicit CudaEvent(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_ = nullptr;
};

// Owns a non-blocking cudaStream_t. Move-only.
class CudaStreamOwner {
 public:
  static absl::StatusOr<CudaStreamOwner> Create();
  CudaStreamOwner(CudaStreamOwner&& other) noexcept
      : stream_(std::exchange(other.stream_, nullptr)) {}
  CudaStreamOwner& operator=(CudaStreamOwner&&) = delete;
  CudaStreamOwner(const CudaStreamOwner&) = delete;
  ~CudaStreamOwner() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t get() const { return stream_; }

 private:
  explicit CudaStreamOwner(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_ = nullptr;
};

}  // namespace cuda
}  // namespace convserve
