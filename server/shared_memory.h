// Shared-memory regions that clients on the server's host register (convserve.v1's
// RegisterSharedMemory), and the reads and writes of tensors in them.
//
// A region is a byte range of a POSIX shared-memory object (shm_open). How the server moves a
// tensor in or out of it depends on the backend:
// - On a GPU, the range is mapped and page-locked for the copy engines (HostMemoryPinner):
//   a batch copies each tensor straight between the client's memory and the device, with no
//   host copy. The server never loads or stores through that mapping itself: if the client
//   shrinks the object, the pinned pages stay valid for the copy engines, while a CPU access
//   would fault (SIGBUS) and take the server down.
// - Otherwise (the CPU backend, or pinning failed) the server keeps only the descriptor:
//   inputs are read with pread and outputs written with pwrite, so a client that shrinks the
//   object gets that request failed.
// Unregistering a region takes it out of the registry; requests already holding it finish
// with it.
#pragma once

#include <cstdint>
#include <functional>
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
#include "server/tensor_bytes.h"

namespace convserve {

// Page-locks host memory for the GPUs' copy engines, so that a batch copies a tensor in a
// registered region straight to or from the device. The CUDA executors provide one
// (cudaHostRegister); the CPU backend has none.
class HostMemoryPinner {
 public:
  virtual ~HostMemoryPinner() = default;
  // `read_only`: the memory is mapped without write permission.
  virtual absl::Status Pin(void* data, size_t bytes, bool read_only) = 0;
  virtual void Unpin(void* data) = 0;
};

struct SharedMemoryRegionInfo {
  std::string name;
  std::string key;     // the shm_open name
  int64_t offset = 0;  // of the registered range in the object
  int64_t byte_size = 0;
};

class SharedMemoryRegion {
 public:
  // Opens `info.key` (read-write, or read-only when the object allows no more) and checks that
  // the object holds the range. With a `pinner`, also maps the range and page-locks it; when
  // that fails the region works through its descriptor alone (pinned() is false).
  static absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> Open(
      SharedMemoryRegionInfo info, std::shared_ptr<HostMemoryPinner> pinner = nullptr);
  ~SharedMemoryRegion();
  SharedMemoryRegion(const SharedMemoryRegion&) = delete;
  SharedMemoryRegion& operator=(const SharedMemoryRegion&) = delete;

  const SharedMemoryRegionInfo& info() const { return info_; }
  bool writable() const { return writable_; }
  bool pinned() const { return pinned_ != nullptr; }

  // The page-locked address of byte `offset` of the registered range, for device copies only
  // (never to be loaded from or stored to by the server: see the top of this file); null when
  // not pinned().
  char* pinned_at(int64_t offset) const { return pinned_ == nullptr ? nullptr : pinned_ + offset; }

  // `bytes` bytes at `offset` into the registered range, which the caller has checked holds
  // them. FAILED_PRECONDITION when the object has shrunk since it was registered (a write
  // would otherwise grow it back).
  absl::StatusOr<std::string> Read(int64_t offset, int64_t bytes) const;
  absl::Status Write(int64_t offset, const char* data, int64_t bytes) const;

 private:
  SharedMemoryRegion(SharedMemoryRegionInfo info, int fd, bool writable)
      : info_(std::move(info)), fd_(fd), writable_(writable) {}
  // Maps and pins the range; leaves the region unpinned when either fails.
  void MapAndPin(std::shared_ptr<HostMemoryPinner> pinner);

  const SharedMemoryRegionInfo info_;
  const int fd_;
  const bool writable_;
  // Set by MapAndPin: the whole mapping (from a page boundary) and the range's first byte in it.
  std::shared_ptr<HostMemoryPinner> pinner_;
  void* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  char* pinned_ = nullptr;
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
  char* page_locked_destination() override { return slice_.region->pinned_at(slice_.offset); }
  std::string Describe() const override;

 private:
  SharedMemorySlice slice_;
  std::string field_;
};

// What is registered, for the metrics.
struct SharedMemoryTotals {
  int64_t regions = 0;
  int64_t registered_bytes = 0;
  int64_t page_locked_bytes = 0;
};

class SharedMemoryRegistry {
 public:
  // `max_input_bytes`: the most one request may read (the server's --max_input_bytes, checked
  // before reading); `pinner`: page-locks regions for the GPUs (null: descriptors only);
  // `max_regions`: how many may be registered at once.
  explicit SharedMemoryRegistry(int64_t max_input_bytes,
                                std::shared_ptr<HostMemoryPinner> pinner = nullptr,
                                int max_regions = 1024)
      : max_input_bytes_(max_input_bytes), pinner_(std::move(pinner)), max_regions_(max_regions) {}

  // Called with the new totals after every change that registration makes, under the
  // registry's lock (so calls come in order): keep it cheap. Set before the first Register.
  void set_observer(std::function<void(const SharedMemoryTotals&)> observer);

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
  absl::StatusOr<SharedMemorySlice> Resolve(const std::string& region, int64_t offset,
                                            int64_t byte_size, absl::string_view region_field,
                                            absl::string_view range_field) const;

  // A request's input from `slice`: RESOURCE_EXHAUSTED naming `size_field` over
  // max_input_bytes (checked before reading); else, from a pinned region, the range itself
  // (TensorBytes::PageLocked, holding the region), or the bytes as SharedMemoryRegion::Read.
  absl::StatusOr<TensorBytes> Input(const SharedMemorySlice& slice,
                                    absl::string_view size_field) const;

 private:
  const int64_t max_input_bytes_;
  const std::shared_ptr<HostMemoryPinner> pinner_;
  const int max_regions_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const SharedMemoryRegion>> regions_ ABSL_GUARDED_BY(mu_);
  std::function<void(const SharedMemoryTotals&)> observer_ ABSL_GUARDED_BY(mu_);
  // Reports the totals to the observer, if any.
  void ObserveLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
};

// What both front-ends answer on a registry that may be null (shared memory off: then
// FAILED_PRECONDITION naming --allow_shared_memory).
absl::Status SharedMemoryOff(absl::string_view what = "shared memory");
absl::Status RegisterSharedMemory(SharedMemoryRegistry* registry, SharedMemoryRegionInfo info);
absl::Status UnregisterSharedMemory(SharedMemoryRegistry* registry, const std::string& name);
absl::StatusOr<std::vector<SharedMemoryRegionInfo>> SharedMemoryStatus(
    const SharedMemoryRegistry* registry, const std::string& name);

}  // namespace convserve
