// Shared-memory regions that clients on the server's host register (convserve.v1's
// RegisterSharedMemory, KServe's System/CudaSharedMemoryRegister), and the reads and writes of
// tensors in them.
//
// A host region is a byte range of a POSIX shared-memory object (shm_open). How the server
// moves a tensor in or out of it depends on the backend:
// - On a GPU, the range is mapped and page-locked for the copy engines (HostMemoryPinner):
//   a batch copies each tensor straight between the client's memory and the device, with no
//   host copy. The server never loads or stores through that mapping itself: if the client
//   shrinks the object, the pinned pages stay valid for the copy engines, while a CPU access
//   would fault (SIGBUS) and take the server down.
// - Otherwise (the CPU backend, or pinning failed) the server keeps only the descriptor:
//   inputs are read with pread and outputs written with pwrite, so a client that shrinks the
//   object gets that request failed.
// A CUDA region is a byte range of GPU memory another process allocated and shared through
// CUDA IPC (CudaIpcImporter); only GPU servers take them, and batches copy device to device.
// The importer checks the range against the allocation, so no copy leaves it; a client that
// frees the memory keeps it mapped for the server (CUDA IPC's rule) until it is unregistered.
// Unregistering a region takes it out of the registry; requests already holding it finish
// with it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
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

// Opens GPU memory that another process on the host shared through CUDA IPC, for the copy
// engines. The CUDA executors provide one; the CPU backend has none.
class CudaIpcImporter {
 public:
  // The 64 bytes of a cudaIpcMemHandle_t.
  static constexpr size_t kHandleBytes = 64;
  virtual ~CudaIpcImporter() = default;
  // The device address of the allocation `handle` names, opened on CUDA device `device`, and
  // the allocation's size. INVALID_ARGUMENT for a device that does not exist or a handle that
  // does not open (freed, from this process, or not a handle).
  struct Opened {
    char* data = nullptr;
    int64_t allocation_bytes = 0;
  };
  virtual absl::StatusOr<Opened> Open(absl::string_view handle, int device) = 0;
  virtual void Close(char* data, int device) = 0;
};

struct SharedMemoryRegionInfo {
  SharedMemoryRegionInfo() = default;
  // A host region.
  SharedMemoryRegionInfo(std::string name, std::string key, int64_t offset, int64_t byte_size)
      : name(std::move(name)), key(std::move(key)), offset(offset), byte_size(byte_size) {}
  // A CUDA region: `byte_size` bytes at `offset` of the allocation `ipc_handle` names on `device`.
  static SharedMemoryRegionInfo Cuda(std::string name, std::string ipc_handle, int device,
                                     int64_t offset, int64_t byte_size) {
    SharedMemoryRegionInfo info(std::move(name), "", offset, byte_size);
    info.cuda = true;
    info.cuda_ipc_handle = std::move(ipc_handle);
    info.cuda_device = device;
    return info;
  }

  std::string name;
  std::string key;     // the shm_open name; empty for a CUDA region
  int64_t offset = 0;  // of the registered range in the object (or the CUDA allocation)
  int64_t byte_size = 0;
  // A CUDA region (`cuda`): the cudaIpcMemHandle_t's bytes and the device holding the memory.
  bool cuda = false;
  std::string cuda_ipc_handle;
  int cuda_device = -1;
  bool is_cuda() const { return cuda; }
};

class SharedMemoryRegion {
 public:
  // Opens `info.key` (read-write, or read-only when the object allows no more) and checks that
  // the object holds the range. With a `pinner`, also maps the range and page-locks it; when
  // that fails the region works through its descriptor alone (pinned() is false).
  static absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> Open(
      SharedMemoryRegionInfo info, std::shared_ptr<HostMemoryPinner> pinner = nullptr);
  // Opens the CUDA region `info` (is_cuda()) with `importer`; INVALID_ARGUMENT when the range
  // does not fit in the allocation.
  static absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> OpenCuda(
      SharedMemoryRegionInfo info, std::shared_ptr<CudaIpcImporter> importer);
  ~SharedMemoryRegion();
  SharedMemoryRegion(const SharedMemoryRegion&) = delete;
  SharedMemoryRegion& operator=(const SharedMemoryRegion&) = delete;

  const SharedMemoryRegionInfo& info() const { return info_; }
  bool writable() const { return writable_; }
  // Page-locked host memory (a host region that MapAndPin pinned).
  bool pinned() const { return copy_engine_ != nullptr && !info_.is_cuda(); }

  // The address at which the GPUs' copy engines reach byte `offset` of the registered range:
  // in page-locked host memory or in GPU memory. Only for device copies, never loaded from or
  // stored to by the server (see the top of this file); null for a host region not pinned.
  char* copy_engine_at(int64_t offset) const {
    return copy_engine_ == nullptr ? nullptr : copy_engine_ + offset;
  }
  // The GPU whose memory copy_engine_at() points into, or kHostMemory.
  int copy_engine_device() const { return info_.is_cuda() ? info_.cuda_device : kHostMemory; }

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
  // Set by OpenCuda: the importer and the allocation's base address it opened.
  std::shared_ptr<CudaIpcImporter> importer_;
  char* cuda_allocation_ = nullptr;
  // The range's first byte for the copy engines (pinned host or GPU memory), or null.
  char* copy_engine_ = nullptr;
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
  char* copy_engine_destination() override { return slice_.region->copy_engine_at(slice_.offset); }
  int copy_engine_device() const override { return slice_.region->copy_engine_device(); }
  std::string Describe() const override;

 private:
  SharedMemorySlice slice_;
  std::string field_;
};

// Which regions a status or unregister call covers: KServe has a call of each for each kind,
// convserve.v1 one for both.
enum class SharedMemoryKind { kAny, kHost, kCuda };

// What is registered, for the metrics.
struct SharedMemoryTotals {
  int64_t regions = 0;
  int64_t registered_bytes = 0;   // every region's range
  int64_t page_locked_bytes = 0;  // host regions pinned for the copy engines
  int64_t gpu_bytes = 0;          // CUDA regions
};

class SharedMemoryRegistry {
 public:
  // `max_input_bytes`: the most one request may read (the server's --max_input_bytes, checked
  // before reading); `pinner`: page-locks regions for the GPUs (null: descriptors only);
  // `max_regions`: how many may be registered at once.
  // `cuda_importer`: opens CUDA regions (null: they are refused).
  explicit SharedMemoryRegistry(int64_t max_input_bytes,
                                std::shared_ptr<HostMemoryPinner> pinner = nullptr,
                                int max_regions = 1024,
                                std::shared_ptr<CudaIpcImporter> cuda_importer = nullptr)
      : max_input_bytes_(max_input_bytes),
        pinner_(std::move(pinner)),
        cuda_importer_(std::move(cuda_importer)),
        max_regions_(max_regions) {}

  // Whether CUDA regions can be registered (the server runs on GPUs).
  bool takes_cuda() const { return cuda_importer_ != nullptr; }

  // Called with the new totals after every change that registration makes, under the
  // registry's lock (so calls come in order): keep it cheap. Set before the first Register.
  void set_observer(std::function<void(const SharedMemoryTotals&)> observer);

  // INVALID_ARGUMENT for a bad name, key, handle or range, ALREADY_EXISTS for a name in use,
  // NOT_FOUND for a missing object, PERMISSION_DENIED when the server may not open it,
  // RESOURCE_EXHAUSTED past max_regions, FAILED_PRECONDITION for a CUDA region on a server
  // without a GPU.
  absl::Status Register(SharedMemoryRegionInfo info);
  // Empty `name`: every region of `kind`. NOT_FOUND for a name not registered as `kind`.
  absl::Status Unregister(const std::string& name, SharedMemoryKind kind = SharedMemoryKind::kAny);
  // Empty `name`: every region of `kind`, sorted by name.
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> Status(
      const std::string& name, SharedMemoryKind kind = SharedMemoryKind::kAny) const;

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
  const std::shared_ptr<CudaIpcImporter> cuda_importer_;
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
absl::Status UnregisterSharedMemory(SharedMemoryRegistry* registry, const std::string& name,
                                    SharedMemoryKind kind = SharedMemoryKind::kAny);
absl::StatusOr<std::vector<SharedMemoryRegionInfo>> SharedMemoryStatus(
    const SharedMemoryRegistry* registry, const std::string& name,
    SharedMemoryKind kind = SharedMemoryKind::kAny);

}  // namespace convserve
