// The registry's page-locked regions without a GPU: a pinner that page-locks with mlock (what
// cudaHostRegister also does, besides telling the driver) checks the mapping of an unaligned
// range, the page-locked input and output a request gets, the fallback to the descriptor when
// pinning fails, and that a region is unpinned only after the last request holding it is done.
#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
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
  ASSERT_TRUE(input->page_locked());
  EXPECT_EQ(input->size(), 1000u);
  // The bytes the device would copy are the object's, at offset + 50, through the pinned pages.
  EXPECT_EQ(input->page_locked_data(), static_cast<char*>(pinner->pinned()[0].data) + 100 + 50);
  EXPECT_EQ(std::memcmp(input->page_locked_data(), buffer->data() + kOffset + 50, 1000), 0);

  absl::StatusOr<SharedMemorySlice> out = registry.Resolve("r", 4000, 2000, "out.region", "out");
  ASSERT_TRUE(out.ok()) << out.status();
  SharedMemoryOutput sink(*out, "out");
  ASSERT_NE(sink.page_locked_destination(), nullptr);
  // What a device copy stores there is the client's: the same object, another mapping.
  std::memset(sink.page_locked_destination(), 0x5A, 2000);
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
  EXPECT_FALSE(input->page_locked());
  EXPECT_EQ(input->ToString(), "elements");
  EXPECT_EQ(SharedMemoryOutput(*slice, "out").page_locked_destination(), nullptr);
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

}  // namespace
}  // namespace convserve
