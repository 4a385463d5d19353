// GPU memory this process allocates and shares with a convserve server on the same host through
// CUDA IPC, so that tensors go neither over the wire nor over PCIe: register it with
// Client::RegisterCudaSharedMemory (ipc_handle(), device()), put inputs in it (Upload, or any
// kernel of this process), name its ranges in ForwardRequest (input.shared_memory,
// output_shared_memory) and read outputs from it (Download) once the reply has come. The
// server's writes are complete when it replies.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace convserve {

class CudaSharedMemoryBuffer {
 public:
  // cudaMalloc of `byte_size` bytes on CUDA device `device`, and its IPC handle. UNAVAILABLE
  // without a usable GPU.
  static absl::StatusOr<std::unique_ptr<CudaSharedMemoryBuffer>> Create(int device,
                                                                        int64_t byte_size);
  ~CudaSharedMemoryBuffer();  // frees the memory: unregister it from the server first
  CudaSharedMemoryBuffer(const CudaSharedMemoryBuffer&) = delete;
  CudaSharedMemoryBuffer& operator=(const CudaSharedMemoryBuffer&) = delete;

  const std::string& ipc_handle() const { return ipc_handle_; }  // 64 bytes
  int device() const { return device_; }
  int64_t size() const { return size_; }
  void* device_data() const { return data_; }

  // Synchronous copies between host memory and bytes [offset, offset + bytes) of the buffer.
  absl::Status Upload(int64_t offset, const void* host, int64_t bytes) const;
  absl::Status Download(int64_t offset, void* host, int64_t bytes) const;

 private:
  CudaSharedMemoryBuffer(int device, void* data, int64_t size, std::string ipc_handle)
      : device_(device), data_(data), size_(size), ipc_handle_(std::move(ipc_handle)) {}
  absl::Status CheckRange(int64_t offset, int64_t bytes) const;

  const int device_;
  void* const data_;
  const int64_t size_;
  const std::string ipc_handle_;
};

}  // namespace convserve
