#include "client/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace convserve {

absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> SharedMemoryBuffer::Create(std::string key,
                                                                               int64_t byte_size) {
  if (byte_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("byte_size must be > 0, got ", byte_size));
  }
  const int fd = shm_open(key.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int error = errno;
    const std::string what =
        absl::StrCat("cannot create shared-memory object ", key, ": ", std::strerror(error));
    return error == EEXIST ? absl::AlreadyExistsError(what) : absl::InvalidArgumentError(what);
  }
  void* data = MAP_FAILED;
  if (ftruncate(fd, static_cast<off_t>(byte_size)) == 0) {
    data = mmap(nullptr, static_cast<size_t>(byte_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  const int error = errno;
  close(fd);  // the mapping keeps the object
  if (data == MAP_FAILED) {
    shm_unlink(key.c_str());
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot size and map ", byte_size, " bytes of ", key, ": ", std::strerror(error)));
  }
  return std::unique_ptr<SharedMemoryBuffer>(
      new SharedMemoryBuffer(std::move(key), static_cast<char*>(data), byte_size));
}

SharedMemoryBuffer::~SharedMemoryBuffer() {
  munmap(data_, static_cast<size_t>(size_));
  shm_unlink(key_.c_str());
}

}  // namespace convserve
