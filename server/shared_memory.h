// Shared-memory regions that clients on the server's host register (convserve.v1's
// RegisterSharedMemory), and the reads and writes of tensors in them.
//
// A region is a byte range of a POSIX shared-memory object (shm_open). The server keeps the
// object's file descriptor, not a mapping: inputs are read with pread and outputs written with
// pwrite, so a client that shrinks the object while a request uses it gets that request failed;
// a mapping would fault (SIGBUS) and take the server down. Unregistering a
// region takes it out of the registry; requests already holding it finish with it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/inference.h"

namespace convserve {

struct SharedMemoryRegionInfo {
  std::string name;
  std::string key;     // the shm_open name
  int64_t offset = 0;  // of the registered range in the object
  int64_t byte_size = 0;
};

class SharedMemoryRegion {
 public:
  // Opens `info.key` (read-write, or read-only when the object allows no more) and checks that
  // the object holds the range.
  static absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> Open(
      SharedMemoryRegionInfo info);
  ~SharedMemoryRegion();
  SharedMemoryRegion(const SharedMemoryRegion&) = delete;
  SharedMemoryRegion& operator=(const SharedMemoryRegion&) = delete;

  const SharedMemoryRegionInfo& info() const { return info_; }
  bool writable() const { return writable_; }

  // `bytes` bytes at `offset` into the registered range, which the caller has checked holds
  // them. FAILED_PRECONDITION when the object has shrunk since it was registered (a write
  // would otherwise grow it back).
  absl::StatusOr<std::string> Read(int64_t offset, int64_t bytes) const;
  absl::Status Write(int64_t offset, const char* data, int64_t bytes) const;

 private:
  SharedMemoryRegion(SharedMemoryRegionInfo info, int fd, bool writable)
      : info_(std::move(info)), fd_(fd), writable_(writable) {}

  const SharedMemoryRegionInfo info_;
  const int fd_;
  const bool writable_;
};

// A checked range of a registered region, as a request refers to it.
struct SharedMemorySlice {
  std::shared_ptr<const SharedMemoryRegion> region;
  int64_t offset = 0;
  int64_t byte_size = 0;
};

// A request's output written to a slice instead of returned in the reply.
class SharedMemoryOutput final : public OutputSink {
 public:
  // `field` names the request's field for the range in messages.
  SharedMemoryOutput(SharedMemorySlice slice, std::string field)
      : slice_(std::move(slice)), field_(std::move(field)) {}
  int64_t capacity() const override { return slice_.byte_size; }
  absl::Status Write(const char* data, int64_t bytes) override;
  std::string Describe() const override;

 private:
  SharedMemorySlice slice_;
  std::string field_;
};

class SharedMemoryRegistry {
 public:
  // `max_input_bytes`: the most one request may read (the server's --max_input_bytes, checked
  // before reading); `max_regions`: how many may be registered at once.
  explicit SharedMemoryRegistry(int64_t max_input_bytes, int max_regions = 1024)
      : max_input_bytes_(max_input_bytes), max_regions_(max_regions) {}

  // INVALID_ARGUMENT for a bad name, key or range, ALREADY_EXISTS for a name in use, NOT_FOUND
  // for a missing object, PERMISSION_DENIED when the server may not open it, RESOURCE_EXHAUSTED
  // past max_regions.
  absl::Status Register(SharedMemoryRegionInfo info);
  // Empty `name`: every region. NOT_FOUND for a name not registered.
  absl::Status Unregister(const std::string& name);
  // Empty `name`: every region, sorted by name.
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> Status(const std::string& name) const;

  // The range [offset, offset + byte_size) of the region `region`. Messages name the request's
  // fields: `region_field` for an unknown region (NOT_FOUND), `range_field` for a range outside
  // it (INVALID_ARGUMENT), e.g. "input.shared_memory.region" and "input.shared_memory".
  // A request's input from `slice`: RESOURCE_EXHAUSTED naming `size_field` over
  // max_input_bytes (checked before reading), else the bytes as SharedMemoryRegion::Read.
  absl::StatusOr<std::string> ReadInput(const SharedMemorySlice& slice,
                                        absl::string_view size_field) const;

  absl::StatusOr<SharedMemorySlice> Resolve(const std::string& region, int64_t offset,
                                            int64_t byte_size, absl::string_view region_field,
                                            absl::string_view range_field) const;

 private:
  const int64_t max_input_bytes_;
  const int max_regions_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const SharedMemoryRegion>> regions_ ABSL_GUARDED_BY(mu_);
};

// What both front-ends answer on a registry that may be null (shared memory off: then
// FAILED_PRECONDITION naming --allow_shared_memory).
absl::Status SharedMemoryOff(absl::string_view what = "shared memory");
absl::Status RegisterSharedMemory(SharedMemoryRegistry* registry, SharedMemoryRegionInfo info);
absl::Status UnregisterSharedMemory(SharedMemoryRegistry* registry, const std::string& name);
absl::StatusOr<std::vector<SharedMemoryRegionInfo>> SharedMemoryStatus(
    const SharedMemoryRegistry* registry, const std::string& name);

}  // namespace convserve
