// The registry's regions that the copy engines reach, without a GPU:
// - a pinner that page-locks with mlock (what cudaHostRegister also does, besides telling the
//   driver) checks the mapping of an unaligned range, the page-locked input and output a
//   request gets, the fallback to the descriptor when pinning fails, and that a region is
//   unpinned only after the last request holding it is done;
// - an importer whose "handles" name host allocations it made (where CUDA IPC would name GPU
//   memory) checks CUDA regions: their range against the allocation, the addresses requests
//   get, the fields a refusal names, the kinds status and unregister cover, and the close.
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/shared_memory.h"
#include "tests/server/shared_memory_test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::NewShmBuffer;

constexpr char kShmPrefix[] = "convserve-pin-test";

// Page-locks with mlock, or refuses every call when `fail`; records what is locked.
class MlockPinner final : public HostMemoryPinner {
 public:
  explicit MlockPinner(bool fail = false) : fail_(fail) {}
  absl::Status Pin(void* data, size_t bytes, bool read_only) override {
    if (fail_) return absl::FailedPreconditionError("refused by the test");
    if (mlock(data, bytes) != 0) return absl::InternalError(std::strerror(errno));
    absl::MutexLock lock(&mu_);
    pinned_.push_back({data, bytes, read_only});
    return absl::OkStatus();
  }
  void Unpin(void* data) override {
    absl::MutexLock lock(&mu_);
    for (auto it = pinned_.begin(); it != pinned_.end(); ++it) {
      if (it->data == data) {
        munlock(it->data, it->bytes);
        pinned_.erase(it);
        return;
      }
    }
    ADD_FAILURE() << "Unpin of memory that is not pinned";
  }
  struct Pinned {
    void* data;
    size_t bytes;
    bool read_only;
  };
  std::vector<Pinned> pinned() {
    absl::MutexLock lock(&mu_);
    return pinned_;
  }

 private:
  const bool fail_;
  absl::Mutex mu_;
  std::vector<Pinned> pinned_ ABSL_GUARDED_BY(mu_);
};

TEST(SharedMemoryPinTest, AnUnalignedRangeIsPinnedAndRequestsGetItsPages) {
  constexpr int64_t kSize = 5 * 4096;
  constexpr int64_t kOffset = 4096 + 100;  // the range starts 100 bytes into the second page
  constexpr int64_t kBytes = 2 * 4096;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, kSize);
  ASSERT_NE(buffer, nullptr);
  for (int64_t i = 0; i < kSize; ++i) buffer->data()[i] = static_cast<char>(i * 7 + 3);
  auto pinner = std::make_shared<MlockPinner>();
  SharedMemoryRegistry registry(/*max_input_bytes=*/1 << 20, pinner);
  ASSERT_TRUE(registry.Register({"r", buffer->key(), kOffset, kBytes}).ok());

  // One mapping from the page holding the range's first byte to its last byte, writable.
  ASSERT_EQ(pinner->pinned().size(), 1u);
  EXPECT_EQ(pinner->pinned()[0].bytes, static_cast<size_t>(100 + kBytes));
  EXPECT_FALSE(pinner->pinned()[0].read_only);

  absl::StatusOr<SharedMemorySlice> in = registry.Resolve("r", 50, 1000, "in.region", "in");
  ASSERT_TRUE(in.ok()) << in.status();
  ASSERT_TRUE(in->region->pinned());
  absl::StatusOr<TensorBytes> input = registry.Input(*in, "in.byte_size");
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_TRUE(input->for_copy_engine());
  EXPECT_EQ(input->size(), 1000u);
  // The bytes the device would copy are the object's, at offset + 50, through the pinned pages.
  EXPECT_EQ(input->copy_engine_data(), static_cast<char*>(pinner->pinned()[0].data) + 100 + 50);
  EXPECT_EQ(std::memcmp(input->copy_engine_data(), buffer->data() + kOffset + 50, 1000), 0);

  absl::StatusOr<SharedMemorySlice> out = registry.Resolve("r", 4000, 2000, "out.region", "out");
  ASSERT_TRUE(out.ok()) << out.status();
  SharedMemoryOutput sink(*out, "out");
  ASSERT_NE(sink.copy_engine_destination(), nullptr);
  // What a device copy stores there is the client's: the same object, another mapping.
  std::memset(sink.copy_engine_destination(), 0x5A, 2000);
  EXPECT_EQ(buffer->data()[kOffset + 4000], 0x5A);
  EXPECT_EQ(buffer->data()[kOffset + 5999], 0x5A);
  EXPECT_NE(buffer->data()[kOffset + 6000], 0x5A);

  // Unregistered, the region stays pinned while requests hold it, and is unpinned after.
  ASSERT_TRUE(registry.Unregister("r").ok());
  in->region.reset();
  EXPECT_EQ(pinner->pinned().size(), 1u);
  *input = TensorBytes();
  EXPECT_EQ(pinner->pinned().size(), 1u);
  out->region.reset();
  sink = SharedMemoryOutput(SharedMemorySlice{}, "gone");
  EXPECT_TRUE(pinner->pinned().empty());
}

TEST(SharedMemoryPinTest, WhenPinningFailsTheRegionWorksThroughItsDescriptor) {
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 8192);
  ASSERT_NE(buffer, nullptr);
  std::memcpy(buffer->data() + 10, "elements", 8);
  SharedMemoryRegistry registry(/*max_input_bytes=*/1 << 20,
                                std::make_shared<MlockPinner>(/*fail=*/true));
  ASSERT_TRUE(registry.Register({"r", buffer->key(), 0, 8192}).ok());
  absl::StatusOr<SharedMemorySlice> slice = registry.Resolve("r", 10, 8, "in.region", "in");
  ASSERT_TRUE(slice.ok()) << slice.status();
  EXPECT_FALSE(slice->region->pinned());
  absl::StatusOr<TensorBytes> input = registry.Input(*slice, "in.byte_size");
  ASSERT_TRUE(input.ok()) << input.status();
  EXPECT_FALSE(input->for_copy_engine());
  EXPECT_EQ(input->ToString(), "elements");
  EXPECT_EQ(SharedMemoryOutput(*slice, "out").copy_engine_destination(), nullptr);
}

TEST(SharedMemoryPinTest, TheInputBoundHoldsForPinnedRegions) {
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 8192);
  ASSERT_NE(buffer, nullptr);
  SharedMemoryRegistry registry(/*max_input_bytes=*/4096, std::make_shared<MlockPinner>());
  ASSERT_TRUE(registry.Register({"r", buffer->key(), 0, 8192}).ok());
  absl::StatusOr<SharedMemorySlice> slice = registry.Resolve("r", 0, 4097, "in.region", "in");
  ASSERT_TRUE(slice.ok()) << slice.status();
  absl::StatusOr<TensorBytes> input = registry.Input(*slice, "in.byte_size");
  EXPECT_EQ(input.status().code(), absl::StatusCode::kResourceExhausted) << input.status();
}

// Opens "handles" that name allocations it made: 64 bytes, the first 8 the allocation's index.
// Records what is open.
class HostImporter final : public CudaIpcImporter {
 public:
  // An allocation of `bytes` and the handle naming it.
  std::string Allocate(int64_t bytes) {
    absl::MutexLock lock(&mu_);
    allocations_.push_back(std::make_unique<std::vector<char>>(static_cast<size_t>(bytes)));
    std::string handle(kHandleBytes, '\0');
    const uint64_t index = allocations_.size() - 1;
    std::memcpy(handle.data(), &index, sizeof(index));
    return handle;
  }
  char* base(size_t index) {
    absl::MutexLock lock(&mu_);
    return allocations_[index]->data();
  }
  absl::StatusOr<Opened> Open(absl::string_view handle, int device) override {
    uint64_t index = 0;
    std::memcpy(&index, handle.data(), sizeof(index));
    absl::MutexLock lock(&mu_);
    if (device != 0 || index >= allocations_.size()) {
      return absl::InvalidArgumentError("cuda.ipc_handle does not open");
    }
    ++open_;
    return Opened{allocations_[index]->data(), static_cast<int64_t>(allocations_[index]->size())};
  }
  void Close(char* data, int device) override {
    absl::MutexLock lock(&mu_);
    --open_;
  }
  int open() {
    absl::MutexLock lock(&mu_);
    return open_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::unique_ptr<std::vector<char>>> allocations_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;
};

SharedMemoryRegionInfo CudaRegion(const std::string& name, const std::string& handle,
                                  int64_t offset, int64_t byte_size, int device = 0) {
  return SharedMemoryRegionInfo::Cuda(name, handle, device, offset, byte_size);
}

TEST(SharedMemoryCudaRegionTest, RequestsGetTheAllocationsAddressesAndTheCloseWaitsForThem) {
  auto importer = std::make_shared<HostImporter>();
  const std::string handle = importer->Allocate(10000);
  SharedMemoryRegistry registry(/*max_input_bytes=*/1 << 20, nullptr, 1024, importer);
  EXPECT_TRUE(registry.takes_cuda());
  ASSERT_TRUE(registry.Register(CudaRegion("g", handle, 100, 9000)).ok());
  EXPECT_EQ(importer->open(), 1);

  absl::StatusOr<SharedMemorySlice> in = registry.Resolve("g", 50, 1000, "in.region", "in");
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_FALSE(in->region->pinned());  // not page-locked host memory
  absl::StatusOr<TensorBytes> input = registry.Input(*in, "in.byte_size");
  ASSERT_TRUE(input.ok()) << input.status();
  ASSERT_TRUE(input->for_copy_engine());
  EXPECT_EQ(input->copy_engine_data(), importer->base(0) + 100 + 50);
  SharedMemoryOutput sink(*registry.Resolve("g", 8000, 1000, "out.region", "out"), "out");
  EXPECT_EQ(sink.copy_engine_destination(), importer->base(0) + 100 + 8000);
  // The server never reads or writes GPU memory itself.
  EXPECT_EQ(in->region->Read(0, 8).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sink.Write("x", 1).code(), absl::StatusCode::kFailedPrecondition);

  // Each front-end's status and unregister calls cover their kind only (one namespace).
  EXPECT_TRUE(registry.Status("", SharedMemoryKind::kHost)->empty());
  ASSERT_EQ(registry.Status("", SharedMemoryKind::kCuda)->size(), 1u);
  EXPECT_EQ(registry.Status("g", SharedMemoryKind::kHost).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.Unregister("g", SharedMemoryKind::kHost).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(registry.Unregister("", SharedMemoryKind::kHost).ok());
  EXPECT_EQ(registry.Status("").value().size(), 1u);
  ASSERT_TRUE(registry.Unregister("", SharedMemoryKind::kCuda).ok());
  EXPECT_TRUE(registry.Status("").value().empty());

  // Closed once the last request holding it is done.
  EXPECT_EQ(importer->open(), 1);
  in->region.reset();
  *input = TensorBytes();
  EXPECT_EQ(importer->open(), 1);
  sink = SharedMemoryOutput(SharedMemorySlice{}, "gone");
  EXPECT_EQ(importer->open(), 0);
}

TEST(SharedMemoryCudaRegionTest, RefusalsNameWhatIsWrong) {
  auto importer = std::make_shared<HostImporter>();
  const std::string handle = importer->Allocate(4096);
  SharedMemoryRegistry registry(/*max_input_bytes=*/1 << 20, nullptr, 1024, importer);
  auto refused = [&](SharedMemoryRegionInfo info, absl::StatusCode code, const char* names) {
    const absl::Status status = registry.Register(std::move(info));
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_NE(status.message().find(names), absl::string_view::npos) << status;
  };
  // Past the allocation: the range is checked against what the handle names, and the handle
  // closed again.
  refused(CudaRegion("g", handle, 1, 4096), absl::StatusCode::kInvalidArgument, "4096 bytes");
  refused(CudaRegion("g", handle, 4097, 1), absl::StatusCode::kInvalidArgument, "allocation");
  EXPECT_EQ(importer->open(), 0);
  refused(CudaRegion("g", handle.substr(1), 0, 16), absl::StatusCode::kInvalidArgument,
          "cuda.ipc_handle is 63 bytes");
  refused(CudaRegion("g", handle, 0, 16, -1), absl::StatusCode::kInvalidArgument, "cuda.device_id");
  refused(CudaRegion("g", handle, 0, 16, 3), absl::StatusCode::kInvalidArgument, "does not open");
  SharedMemoryRegionInfo both = CudaRegion("g", handle, 0, 16);
  both.key = "/convserve-x";
  refused(both, absl::StatusCode::kInvalidArgument, "key and cuda");
  refused(CudaRegion("g", handle, 0, 0), absl::StatusCode::kInvalidArgument, "byte_size");
  ASSERT_TRUE(registry.Register(CudaRegion("g", handle, 0, 4096)).ok());
  refused(CudaRegion("g", handle, 0, 16), absl::StatusCode::kAlreadyExists, "'g'");

  // Without a GPU there is no importer: CUDA regions are refused as such.
  SharedMemoryRegistry cpu(/*max_input_bytes=*/1 << 20);
  EXPECT_FALSE(cpu.takes_cuda());
  const absl::Status status = cpu.Register(CudaRegion("g", handle, 0, 16));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_NE(status.message().find("GPU"), absl::string_view::npos) << status;
}

}  // namespace
}  // namespace convserve
