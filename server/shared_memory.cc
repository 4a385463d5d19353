#include "server/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/layer_spec_rules.h"

namespace convserve {
namespace {

std::string Describe(const SharedMemoryRegionInfo& info) {
  if (info.is_cuda()) {
    return absl::StrCat("CUDA shared-memory region '", info.name, "' (device ", info.cuda_device,
                        ")");
  }
  return absl::StrCat("shared-memory region '", info.name, "' (", info.key, ")");
}

absl::Status NotForTheCpu(const SharedMemoryRegionInfo& info) {
  return absl::FailedPreconditionError(
      absl::StrCat(Describe(info), " is GPU memory, which only the GPU executors copy"));
}

// Opening by name must not follow links: a key naming a symbolic link in /dev/shm would
// otherwise let a client read any file the server can.
int OpenObject(const std::string& key, int flags) {
  return shm_open(key.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, 0);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> SharedMemoryRegion::Open(
    SharedMemoryRegionInfo info, std::shared_ptr<HostMemoryPinner> pinner) {
  bool writable = true;
  int fd = OpenObject(info.key, O_RDWR);
  if (fd < 0 && (errno == EACCES || errno == EPERM)) {
    writable = false;
    fd = OpenObject(info.key, O_RDONLY);
  }
  if (fd < 0) {
    const int error = errno;
    const std::string what =
        absl::StrCat("cannot open shared-memory object ", info.key, ": ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(what);
    if (error == EACCES || error == EPERM) return absl::PermissionDeniedError(what);
    return absl::InvalidArgumentError(what);
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("shared-memory object ", info.key, " is not a plain shared-memory object"));
  }
  if (st.st_size < info.offset + info.byte_size) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat("shared-memory object ", info.key, " is ",
                                                   st.st_size, " bytes, too small for offset ",
                                                   info.offset, " + byte_size ", info.byte_size));
  }
  std::shared_ptr<SharedMemoryRegion> region(new SharedMemoryRegion(std::move(info), fd, writable));
  if (pinner != nullptr) region->MapAndPin(std::move(pinner));
  return region;
}

absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> SharedMemoryRegion::OpenCuda(
    SharedMemoryRegionInfo info, std::shared_ptr<CudaIpcImporter> importer) {
  absl::StatusOr<CudaIpcImporter::Opened> opened =
      importer->Open(info.cuda_ipc_handle, info.cuda_device);
  if (!opened.ok()) return opened.status();
  if (opened->allocation_bytes < info.offset ||
      info.byte_size > opened->allocation_bytes - info.offset) {
    importer->Close(opened->data, info.cuda_device);
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", info.offset, " + byte_size ", info.byte_size,
                     " does not fit in the CUDA allocation the handle names, which is ",
                     opened->allocation_bytes, " bytes"));
  }
  std::shared_ptr<SharedMemoryRegion> region(
      new SharedMemoryRegion(std::move(info), /*fd=*/-1, /*writable=*/true));
  region->importer_ = std::move(importer);
  region->cuda_allocation_ = opened->data;
  region->copy_engine_ = opened->data + region->info_.offset;
  return region;
}

void SharedMemoryRegion::MapAndPin(std::shared_ptr<HostMemoryPinner> pinner) {
  // mmap wants a page-aligned file offset: map from the page holding the range's first byte.
  const int64_t page = sysconf(_SC_PAGESIZE);
  const int64_t start = info_.offset / page * page;
  const size_t bytes = static_cast<size_t>(info_.offset - start + info_.byte_size);
  void* mapping = mmap(nullptr, bytes, writable_ ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                       fd_, static_cast<off_t>(start));
  if (mapping == MAP_FAILED) return;
  if (!pinner->Pin(mapping, bytes, /*read_only=*/!writable_).ok()) {
    munmap(mapping, bytes);
    return;
  }
  pinner_ = std::move(pinner);
  mapping_ = mapping;
  mapping_bytes_ = bytes;
  copy_engine_ = static_cast<char*>(mapping) + (info_.offset - start);
}

SharedMemoryRegion::~SharedMemoryRegion() {
  if (cuda_allocation_ != nullptr) importer_->Close(cuda_allocation_, info_.cuda_device);
  if (mapping_ != nullptr) {
    pinner_->Unpin(mapping_);
    munmap(mapping_, mapping_bytes_);
  }
  if (fd_ >= 0) close(fd_);
}

absl::StatusOr<std::string> SharedMemoryRegion::Read(int64_t offset, int64_t bytes) const {
  if (info_.is_cuda()) return NotForTheCpu(info_);
  std::string out(static_cast<size_t>(bytes), '\0');
  int64_t done = 0;
  while (done < bytes) {
    const ssize_t n = pread(fd_, out.data() + done, static_cast<size_t>(bytes - done),
                            static_cast<off_t>(info_.offset + offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::InternalError(
          absl::StrCat("reading ", Describe(info_), ": ", std::strerror(errno)));
    }
    if (n == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(Describe(info_), " ends before byte ", offset + bytes,
                       " of its registered range: the object shrank after it was registered"));
    }
    done += n;
  }
  return out;
}

absl::Status SharedMemoryRegion::Write(int64_t offset, const char* data, int64_t bytes) const {
  if (info_.is_cuda()) return NotForTheCpu(info_);
  if (!writable_) {
    return absl::PermissionDeniedError(
        absl::StrCat(Describe(info_), " is read-only to the server; it cannot take an output"));
  }
  struct stat st {};
  if (fstat(fd_, &st) != 0 || st.st_size < info_.offset + offset + bytes) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(info_), " is now ", st.st_size, " bytes, too small for ", bytes,
                     " bytes at offset ", offset, ": the object shrank after it was registered"));
  }
  int64_t done = 0;
  while (done < bytes) {
    const ssize_t n = pwrite(fd_, data + done, static_cast<size_t>(bytes - done),
                             static_cast<off_t>(info_.offset + offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return absl::InternalError(
          absl::StrCat("writing ", Describe(info_), ": ", std::strerror(errno)));
    }
    done += n;
  }
  return absl::OkStatus();
}

absl::Status SharedMemoryOutput::Write(const char* data, int64_t bytes) {
  return slice_.region->Write(slice_.offset, data, bytes);
}

std::string SharedMemoryOutput::Describe() const {
  return absl::StrCat(field_, " (region '", slice_.region->info().name, "', byte_size ",
                      slice_.byte_size, ")");
}

namespace {

// A CUDA region's fields, before anything is opened.
absl::Status ValidateCudaRegion(const SharedMemoryRegionInfo& info, bool have_importer) {
  if (!info.key.empty()) {
    return absl::InvalidArgumentError(
        "key and cuda are both set: a region is a shared-memory object or GPU memory, not both");
  }
  if (info.cuda_ipc_handle.size() != CudaIpcImporter::kHandleBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda.ipc_handle is ", info.cuda_ipc_handle.size(),
                     " bytes; a cudaIpcMemHandle_t is ", CudaIpcImporter::kHandleBytes));
  }
  if (info.cuda_device < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda.device_id must be >= 0, got ", info.cuda_device));
  }
  if (!have_importer) {
    return absl::FailedPreconditionError(
        "CUDA shared memory needs a GPU: this server runs on the CPU backend");
  }
  return absl::OkStatus();
}

absl::Status ValidateHostRegionKey(const SharedMemoryRegionInfo& info) {
  if (info.key.size() < 2 || info.key[0] != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("key '", info.key,
                     "' must be a shm_open name: '/' followed by letters, digits, '_', '.' "
                     "or '-'"));
  }
  if (absl::Status s = ValidateLayerName(info.key.substr(1), "key (after its '/')"); !s.ok()) {
    return s;
  }
  if (info.key == "/." || info.key == "/..") {
    return absl::InvalidArgumentError(absl::StrCat("key '", info.key, "' names no object"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SharedMemoryRegistry::Register(SharedMemoryRegionInfo info) {
  if (absl::Status s = ValidateLayerName(info.name, "name"); !s.ok()) return s;
  if (absl::Status s = info.is_cuda() ? ValidateCudaRegion(info, cuda_importer_ != nullptr)
                                      : ValidateHostRegionKey(info);
      !s.ok()) {
    return s;
  }
  if (info.offset < 0 || info.byte_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("offset must be >= 0 and byte_size > 0, got ",
                                                   info.offset, " and ", info.byte_size));
  }
  if (info.byte_size > INT64_MAX - info.offset) {
    return absl::InvalidArgumentError("offset + byte_size overflows");
  }
  {
    absl::MutexLock lock(&mu_);
    if (regions_.count(info.name) > 0) {
      return absl::AlreadyExistsError(absl::StrCat("a shared-memory region named '", info.name,
                                                   "' is registered; unregister it first"));
    }
    if (static_cast<int>(regions_.size()) >= max_regions_) {
      return absl::ResourceExhaustedError(
          absl::StrCat(max_regions_, " shared-memory regions are registered, the server's limit"));
    }
  }
  // Opened outside the lock: a slow open must not stall the requests resolving ranges.
  absl::StatusOr<std::shared_ptr<const SharedMemoryRegion>> region =
      info.is_cuda() ? SharedMemoryRegion::OpenCuda(info, cuda_importer_)
                     : SharedMemoryRegion::Open(info, pinner_);
  if (!region.ok()) return region.status();
  absl::MutexLock lock(&mu_);
  if (!regions_.emplace(info.name, *std::move(region)).second) {
    return absl::AlreadyExistsError(absl::StrCat("a shared-memory region named '", info.name,
                                                 "' is registered; unregister it first"));
  }
  ObserveLocked();
  return absl::OkStatus();
}

void SharedMemoryRegistry::set_observer(std::function<void(const SharedMemoryTotals&)> observer) {
  absl::MutexLock lock(&mu_);
  observer_ = std::move(observer);
  ObserveLocked();
}

void SharedMemoryRegistry::ObserveLocked() {
  if (!observer_) return;
  SharedMemoryTotals totals;
  for (const auto& [name, region] : regions_) {
    ++totals.regions;
    totals.registered_bytes += region->info().byte_size;
    if (region->pinned()) totals.page_locked_bytes += region->info().byte_size;
    if (region->info().is_cuda()) totals.gpu_bytes += region->info().byte_size;
  }
  observer_(totals);
}

namespace {

bool OfKind(const SharedMemoryRegionInfo& info, SharedMemoryKind kind) {
  return kind == SharedMemoryKind::kAny || info.is_cuda() == (kind == SharedMemoryKind::kCuda);
}

absl::Status NoSuchRegion(const std::string& name, SharedMemoryKind kind) {
  const char* what = kind == SharedMemoryKind::kCuda   ? "CUDA shared-memory"
                     : kind == SharedMemoryKind::kHost ? "system shared-memory"
                                                       : "shared-memory";
  return absl::NotFoundError(absl::StrCat("no ", what, " region named '", name, "' is registered"));
}

}  // namespace

absl::Status SharedMemoryRegistry::Unregister(const std::string& name, SharedMemoryKind kind) {
  absl::MutexLock lock(&mu_);
  if (name.empty()) {
    for (auto it = regions_.begin(); it != regions_.end();) {
      it = OfKind(it->second->info(), kind) ? regions_.erase(it) : std::next(it);
    }
  } else {
    auto found = regions_.find(name);
    if (found == regions_.end() || !OfKind(found->second->info(), kind)) {
      return NoSuchRegion(name, kind);
    }
    regions_.erase(found);
  }
  ObserveLocked();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<SharedMemoryRegionInfo>> SharedMemoryRegistry::Status(
    const std::string& name, SharedMemoryKind kind) const {
  absl::MutexLock lock(&mu_);
  std::vector<SharedMemoryRegionInfo> out;
  for (const auto& [region_name, region] : regions_) {
    if ((name.empty() || name == region_name) && OfKind(region->info(), kind)) {
      out.push_back(region->info());
    }
  }
  if (!name.empty() && out.empty()) return NoSuchRegion(name, kind);
  return out;
}

absl::StatusOr<TensorBytes> SharedMemoryRegistry::Input(const SharedMemorySlice& slice,
                                                        absl::string_view size_field) const {
  if (slice.byte_size > max_input_bytes_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(size_field, " is ", slice.byte_size, " bytes, over the server's limit of ",
                     max_input_bytes_, " bytes per request (--max_input_bytes)"));
  }
  if (const char* reachable = slice.region->copy_engine_at(slice.offset); reachable != nullptr) {
    return TensorBytes::ForCopyEngine(reachable, static_cast<size_t>(slice.byte_size), slice.region,
                                      slice.region->copy_engine_device());
  }
  absl::StatusOr<std::string> bytes = slice.region->Read(slice.offset, slice.byte_size);
  if (!bytes.ok()) return bytes.status();
  return TensorBytes(*std::move(bytes));
}

absl::StatusOr<SharedMemorySlice> SharedMemoryRegistry::Resolve(
    const std::string& region, int64_t offset, int64_t byte_size, absl::string_view region_field,
    absl::string_view range_field) const {
  SharedMemorySlice slice;
  {
    absl::MutexLock lock(&mu_);
    auto found = regions_.find(region);
    if (found == regions_.end()) {
      return absl::NotFoundError(absl::StrCat(region_field, ": no shared-memory region named '",
                                              region, "' is registered"));
    }
    slice.region = found->second;
  }
  const int64_t size = slice.region->info().byte_size;
  if (offset < 0 || byte_size <= 0 || offset > size || byte_size > size - offset) {
    return absl::InvalidArgumentError(absl::StrCat(
        range_field, ": offset ", offset, " and byte_size ", byte_size, " do not fit in region '",
        region, "', which is ", size, " bytes (byte_size must be > 0)"));
  }
  slice.offset = offset;
  slice.byte_size = byte_size;
  return slice;
}

absl::Status SharedMemoryOff(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, " is off on this server (start it with --allow_shared_memory)"));
}

absl::Status RegisterSharedMemory(SharedMemoryRegistry* registry, SharedMemoryRegionInfo info) {
  return registry == nullptr ? SharedMemoryOff() : registry->Register(std::move(info));
}

absl::Status UnregisterSharedMemory(SharedMemoryRegistry* registry, const std::string& name,
                                    SharedMemoryKind kind) {
  return registry == nullptr ? SharedMemoryOff() : registry->Unregister(name, kind);
}

absl::StatusOr<std::vector<SharedMemoryRegionInfo>> SharedMemoryStatus(
    const SharedMemoryRegistry* registry, const std::string& name, SharedMemoryKind kind) {
  if (registry == nullptr) return SharedMemoryOff();
  return registry->Status(name, kind);
}

}  // namespace convserve
