// A POSIX shared-memory object this process creates and maps, for passing tensors to a server
// on the same host without sending them: register it with Client::RegisterSharedMemory, write
// inputs into it, name its ranges in ForwardRequest (input.shared_memory, output_shared_memory)
// and read outputs from it once the reply has come.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace convserve {

class SharedMemoryBuffer {
 public:
  // Creates the object `key` ("/" and a name; it must not exist yet), sized `byte_size` and
  // readable and writable by this user only, and maps it. Removed and unmapped on destruction.
  static absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> Create(std::string key,
                                                                    int64_t byte_size);
  ~SharedMemoryBuffer();
  SharedMemoryBuffer(const SharedMemoryBuffer&) = delete;
  SharedMemoryBuffer& operator=(const SharedMemoryBuffer&) = delete;

  const std::string& key() const { return key_; }
  char* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  SharedMemoryBuffer(std::string key, char* data, int64_t size)
      : key_(std::move(key)), data_(data), size_(size) {}

  const std::string key_;
  char* const data_;
  const int64_t size_;
};

}  // namespace convserve
