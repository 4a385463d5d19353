#include "tests/server/shared_memory_test_util.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/server/test_util.h"

namespace convserve::testing {

ServerOptions SharedMemoryServerOptions() {
  ServerOptions options = TestServerOptions();
  options.allow_shared_memory = true;
  return options;
}

std::string ShmName(const std::string& prefix, const std::string& tag) {
  return absl::StrCat(prefix, "-", getpid(), "-", tag);
}

std::string NewShmKey(const std::string& prefix) {
  static std::atomic<int> next{0};
  return "/" + ShmName(prefix, std::to_string(next++));
}

std::unique_ptr<SharedMemoryBuffer> NewShmBuffer(const std::string& prefix, int64_t size) {
  const std::string key = NewShmKey(prefix);
  shm_unlink(key.c_str());  // left over by a crashed process of the same pid, if any
  absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
      SharedMemoryBuffer::Create(key, size);
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  return buffer.ok() ? *std::move(buffer) : nullptr;
}

v1::RegisterSharedMemoryRequest RegisterRequestFor(const std::string& name, const std::string& key,
                                                   int64_t offset, int64_t byte_size) {
  v1::RegisterSharedMemoryRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_offset(offset);
  request.set_byte_size(byte_size);
  return request;
}

}  // namespace convserve::testing
