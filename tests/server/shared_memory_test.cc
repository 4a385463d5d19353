// Shared-memory tensors of the native service through a real gRPC channel to an in-process
// server on a loopback port, CPU backend: inputs and outputs in registered regions against the
// reference, concurrent requests in one region, every registration and Forward rejection,
// objects that shrink, status and unregistration, and a region unregistered under a queued
// request.
#include "client/shared_memory.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/layer_spec.h"
#include "tests/server/shared_memory_test_util.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::AsyncCall;
using ::convserve::testing::Forward;
using ::convserve::testing::ForwardAll;
using ::convserve::testing::ForwardFor;
using ::convserve::testing::Load;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::NewShmBuffer;
using ::convserve::testing::ReferenceOutput;
using ::convserve::testing::RegisterRequestFor;
using ::convserve::testing::RunningServer;
using ::convserve::testing::SharedMemoryServerOptions;
using ::convserve::testing::ShmName;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::StartServer;
using ::convserve::testing::TestServerOptions;
using ::convserve::testing::WaitQueued;
using ::testing::HasSubstr;

constexpr char kPoison = '\xCD';
// Names this test's shared-memory objects (ShmName, NewShmBuffer).
constexpr char kShmPrefix[] = "convserve-test";

// Removes a path this test created, on every way out of the test.
struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() { std::remove(path.c_str()); }
};

grpc::Status Register(RunningServer& s, const std::string& name, const std::string& key,
                      int64_t offset, int64_t byte_size) {
  grpc::ClientContext context;
  v1::RegisterSharedMemoryResponse response;
  return s.stub->RegisterSharedMemory(&context, RegisterRequestFor(name, key, offset, byte_size),
                                      &response);
}

grpc::Status Unregister(RunningServer& s, const std::string& name) {
  grpc::ClientContext context;
  v1::UnregisterSharedMemoryRequest request;
  request.set_name(name);
  v1::UnregisterSharedMemoryResponse response;
  return s.stub->UnregisterSharedMemory(&context, request, &response);
}

grpc::Status Status(RunningServer& s, const std::string& name,
                    v1::SharedMemoryStatusResponse* response) {
  grpc::ClientContext context;
  v1::SharedMemoryStatusRequest request;
  request.set_name(name);
  return s.stub->SharedMemoryStatus(&context, request, response);
}

// The names of the registered regions, in the order the server lists them.
std::vector<std::string> RegisteredNames(RunningServer& s) {
  v1::SharedMemoryStatusResponse response;
  grpc::Status status = Status(s, "", &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<std::string> names;
  for (const v1::RegisterSharedMemoryRequest& region : response.regions()) {
    names.push_back(region.name());
  }
  return names;
}

v1::SharedMemoryRange Range(const std::string& region, int64_t offset, int64_t byte_size) {
  v1::SharedMemoryRange range;
  range.set_region(region);
  range.set_offset(offset);
  range.set_byte_size(byte_size);
  return range;
}

std::tuple<std::string, int64_t, int64_t> Fields(const v1::SharedMemoryRange& range) {
  return {range.region(), range.offset(), range.byte_size()};
}

std::tuple<std::string, std::string, int64_t, int64_t> Fields(
    const v1::RegisterSharedMemoryRequest& region) {
  return {region.name(), region.key(), region.offset(), region.byte_size()};
}

// Moves the request's input elements to `at` and names them as `range_offset` of `region`.
void MoveInputTo(v1::ForwardRequest& request, char* at, const std::string& region,
                 int64_t range_offset) {
  const std::string& data = request.input().data();
  std::memcpy(at, data.data(), data.size());
  *request.mutable_input()->mutable_shared_memory() =
      Range(region, range_offset, static_cast<int64_t>(data.size()));
  request.mutable_input()->clear_data();
}

TEST(SharedMemoryTest, TensorsInSharedMemoryMatchTheReference) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(buffer, nullptr);
  // The registered range starts 4096 bytes into the object; request offsets are into the range.
  constexpr int64_t kBase = 4096;
  constexpr int64_t kInput = 100;
  constexpr int64_t kOutput = 16384;
  constexpr int64_t kSlack = 64;  // the output range is this much larger than the output
  ASSERT_TRUE(Register(s, "region", buffer->key(), kBase, 1 << 15).ok());
  char* const input_at = buffer->data() + kBase + kInput;
  char* const output_at = buffer->data() + kBase + kOutput;

  for (v1::DataType dtype : {v1::DATA_TYPE_FP32, v1::DATA_TYPE_BF16}) {
    const std::string layer = absl::StrCat("conv", static_cast<int>(dtype));
    const v1::LayerSpec spec = SmallSpec(layer, 8, dtype);
    const v1::LoadLayerRequest load = LoadRequestFor(spec, 7);
    ASSERT_TRUE(Load(s, load).ok());
    for (v1::Layout in : {v1::LAYOUT_NCHW, v1::LAYOUT_NHWC}) {
      const v1::Layout out = in == v1::LAYOUT_NCHW ? v1::LAYOUT_NHWC : v1::LAYOUT_NCHW;
      v1::ForwardRequest in_band = ForwardFor(layer, spec, 2, 9, 7, 100 + dtype * 3 + in, in);
      in_band.set_output_layout(out);
      const Layout in_layout = *LayoutFromProto(in, "in");
      const Layout out_layout = *LayoutFromProto(out, "out");
      const std::string expected =
          ReferenceOutput(load, in_band.input().data(), 2, 9, 7, in_layout, out_layout);
      const int64_t output_bytes = static_cast<int64_t>(expected.size());
      const v1::SharedMemoryRange output_range = Range("region", kOutput, output_bytes + kSlack);
      for (bool input_in_shm : {true, false}) {
        for (bool output_in_shm : {true, false}) {
          SCOPED_TRACE(absl::StrCat("dtype ", dtype, ", layout ", in, ", input in shm ",
                                    input_in_shm, ", output in shm ", output_in_shm));
          v1::ForwardRequest request = in_band;
          std::memset(input_at, 0, request.input().data().size());
          if (input_in_shm) MoveInputTo(request, input_at, "region", kInput);
          if (output_in_shm) *request.mutable_output_shared_memory() = output_range;
          std::memset(output_at, kPoison, static_cast<size_t>(output_bytes + kSlack));

          v1::ForwardResponse response;
          grpc::Status status = Forward(s, request, &response);
          ASSERT_TRUE(status.ok()) << status.error_message();
          const std::string written(output_at, static_cast<size_t>(output_bytes));
          const std::string after(output_at + output_bytes, kSlack);
          EXPECT_EQ(after, std::string(kSlack, kPoison)) << "written past the output";
          if (output_in_shm) {
            EXPECT_EQ(written, expected);
            EXPECT_TRUE(response.output().data().empty());
            EXPECT_TRUE(response.output().has_shared_memory());
            EXPECT_EQ(Fields(response.output().shared_memory()), Fields(output_range));
          } else {
            EXPECT_EQ(response.output().data(), expected);
            EXPECT_EQ(written, std::string(expected.size(), kPoison)) << "wrote the mapping";
            EXPECT_FALSE(response.output().has_shared_memory());
          }
          EXPECT_EQ(response.output().dtype(), dtype);
          EXPECT_EQ(response.output().layout(), out);
          EXPECT_THAT(response.output().shape(), ::testing::ElementsAre(2, 8, 9, 7));
          EXPECT_EQ(response.batch_size(), 2);
        }
      }
    }
  }
}

TEST(SharedMemoryTest, ConcurrentRequestsUseTheirOwnRanges) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(16);
  spec.mutable_batching()->set_max_queue_delay_us(5000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 11);
  ASSERT_TRUE(Load(s, load).ok());

  constexpr int kRequests = 16;
  constexpr int64_t kSlot = 16384;  // >= 3 x 8 x 10 x 10 fp32
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 2 * kRequests * kSlot);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(s, "shared", buffer->key(), 0, buffer->size()).ok());
  std::memset(buffer->data(), kPoison, static_cast<size_t>(buffer->size()));

  std::vector<v1::ForwardRequest> requests;
  std::vector<std::string> expected;
  std::vector<int64_t> output_offsets;
  for (int i = 0; i < kRequests; ++i) {
    const int64_t n = 1 + i % 3;
    v1::ForwardRequest request = ForwardFor("conv", spec, n, 10, 10, 500 + i);
    expected.push_back(
        ReferenceOutput(load, request.input().data(), n, 10, 10, Layout::kNchw, Layout::kNchw));
    // Inputs fill the first half of the region, outputs the second, in reverse order.
    MoveInputTo(request, buffer->data() + i * kSlot, "shared", i * kSlot);
    output_offsets.push_back((2 * kRequests - 1 - i) * kSlot);
    *request.mutable_output_shared_memory() =
        Range("shared", output_offsets.back(), static_cast<int64_t>(expected.back().size()));
    requests.push_back(std::move(request));
  }
  auto calls = ForwardAll(s, requests);
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(calls[i]->status.ok()) << i << ": " << calls[i]->status.error_message();
    EXPECT_TRUE(calls[i]->response.output().data().empty()) << i;
    EXPECT_EQ(Fields(calls[i]->response.output().shared_memory()),
              Fields(requests[i].output_shared_memory()))
        << i;
    EXPECT_EQ(std::string(buffer->data() + output_offsets[i], expected[i].size()), expected[i])
        << "request " << i;
    // Nothing was written between this output's end and the next slot.
    EXPECT_EQ(std::string(buffer->data() + output_offsets[i] + expected[i].size(),
                          kSlot - expected[i].size()),
              std::string(kSlot - expected[i].size(), kPoison))
        << "request " << i;
  }
}

// The output never travels in a message, so --max_message_bytes does not bound it.
TEST(SharedMemoryTest, OutputInSharedMemoryIsNotBoundByTheMessageLimit) {
  ServerOptions options = SharedMemoryServerOptions();
  options.max_message_bytes = 64 << 10;
  RunningServer s = StartServer(options);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 13);
  ASSERT_TRUE(Load(s, load).ok());
  // 2 x 8 x 64 x 64 fp32: 256 KiB in and out.
  v1::ForwardRequest request = ForwardFor("conv", spec, 2, 64, 64, 31);
  const std::string expected =
      ReferenceOutput(load, request.input().data(), 2, 64, 64, Layout::kNchw, Layout::kNchw);
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 20);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(s, "big", buffer->key(), 0, buffer->size()).ok());
  MoveInputTo(request, buffer->data(), "big", 0);

  v1::ForwardResponse response;
  grpc::Status in_band = Forward(s, request, &response);
  EXPECT_EQ(in_band.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(in_band.error_message(), HasSubstr("--max_message_bytes"));

  *request.mutable_output_shared_memory() =
      Range("big", 512 << 10, static_cast<int64_t>(expected.size()));
  grpc::Status status = Forward(s, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(std::string(buffer->data() + (512 << 10), expected.size()), expected);
}

TEST(SharedMemoryTest, OffUnlessTheServerAllowsIt) {
  EXPECT_FALSE(TestServerOptions().allow_shared_memory);
  RunningServer s = StartServer(TestServerOptions());
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 3)).ok());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(buffer, nullptr);

  grpc::Status registered = Register(s, "region", buffer->key(), 0, buffer->size());
  EXPECT_EQ(registered.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(registered.error_message(), HasSubstr("--allow_shared_memory"));
  v1::SharedMemoryStatusResponse listed;
  grpc::Status status = Status(s, "", &listed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("--allow_shared_memory"));
  grpc::Status unregistered = Unregister(s, "region");
  EXPECT_EQ(unregistered.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(unregistered.error_message(), HasSubstr("--allow_shared_memory"));

  v1::ForwardRequest input_in_shm = ForwardFor("conv", spec, 1, 6, 6, 5);
  MoveInputTo(input_in_shm, buffer->data(), "region", 0);
  v1::ForwardResponse response;
  grpc::Status forward = Forward(s, input_in_shm, &response);
  EXPECT_EQ(forward.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(forward.error_message(), HasSubstr("input.shared_memory is set"));
  EXPECT_THAT(forward.error_message(), HasSubstr("--allow_shared_memory"));

  v1::ForwardRequest output_in_shm = ForwardFor("conv", spec, 1, 6, 6, 5);
  *output_in_shm.mutable_output_shared_memory() = Range("region", 0, 4096);
  forward = Forward(s, output_in_shm, &response);
  EXPECT_EQ(forward.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(forward.error_message(), HasSubstr("output_shared_memory is set"));
}

struct RegisterRejection {
  std::string what;
  std::string name;
  std::string key;
  int64_t offset;
  int64_t byte_size;
  grpc::StatusCode code;
  std::string message;
};

TEST(SharedMemoryTest, EveryRegisterRejectionNamesTheProblem) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 4096);
  ASSERT_NE(buffer, nullptr);
  const std::string key = buffer->key();
  ASSERT_TRUE(Register(s, "taken", key, 0, 4096).ok());
  const std::string missing = "/" + ShmName(kShmPrefix, "missing");
  shm_unlink(missing.c_str());

  const std::vector<RegisterRejection> cases = {
      {"empty name", "", key, 0, 16, grpc::StatusCode::INVALID_ARGUMENT, "name must be set"},
      {"bad name", "a b", key, 0, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "name 'a b' may hold only"},
      {"long name", std::string(129, 'n'), key, 0, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "at most 128"},
      {"no key", "r", "", 0, 16, grpc::StatusCode::INVALID_ARGUMENT, "must be a shm_open name"},
      {"key without '/'", "r", key.substr(1), 0, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "must be a shm_open name"},
      {"key of only '/'", "r", "/", 0, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "must be a shm_open name"},
      {"key with a second '/'", "r", key + "/x", 0, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "key (after its '/')"},
      {"key into another directory", "r", "/../tmp", 0, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "key (after its '/')"},
      {"negative offset", "r", key, -1, 16, grpc::StatusCode::INVALID_ARGUMENT,
       "offset must be >= 0 and byte_size > 0, got -1 and 16"},
      {"zero byte_size", "r", key, 0, 0, grpc::StatusCode::INVALID_ARGUMENT,
       "offset must be >= 0 and byte_size > 0, got 0 and 0"},
      {"negative byte_size", "r", key, 0, -8, grpc::StatusCode::INVALID_ARGUMENT, "byte_size > 0"},
      {"overflowing range", "r", key, INT64_MAX, 1, grpc::StatusCode::INVALID_ARGUMENT,
       "offset + byte_size overflows"},
      {"missing object", "r", missing, 0, 16, grpc::StatusCode::NOT_FOUND,
       "cannot open shared-memory object " + missing},
      {"object smaller than the range", "r", key, 0, 4097, grpc::StatusCode::INVALID_ARGUMENT,
       "too small"},
      {"range past the object's end", "r", key, 4000, 97, grpc::StatusCode::INVALID_ARGUMENT,
       "is 4096 bytes, too small for offset 4000 + byte_size 97"},
      {"duplicate name", "taken", key, 0, 16, grpc::StatusCode::ALREADY_EXISTS,
       "a shared-memory region named 'taken' is registered"},
  };
  for (const RegisterRejection& c : cases) {
    grpc::Status status = Register(s, c.name, c.key, c.offset, c.byte_size);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.what;
  }
  // None of them registered anything, and the duplicate left the first registration alone.
  EXPECT_THAT(RegisteredNames(s), ::testing::ElementsAre("taken"));
  v1::SharedMemoryStatusResponse taken;
  ASSERT_TRUE(Status(s, "taken", &taken).ok());
  ASSERT_EQ(taken.regions_size(), 1);
  EXPECT_EQ(Fields(taken.regions(0)), std::make_tuple("taken", key, 0, 4096));
  // The exact fit is fine.
  EXPECT_TRUE(Register(s, "fits", key, 4000, 96).ok());
}

// The server opens only plain shared-memory objects, and never through a link: a key naming a
// symbolic link in /dev/shm would otherwise let a client read any file the server can.
TEST(SharedMemoryTest, RegisterRefusesLinksAndWhatIsNotAnObject) {
  RunningServer s = StartServer(SharedMemoryServerOptions());

  const std::string target = absl::StrCat(::testing::TempDir(), "/convserve-shm-target-", getpid());
  RemoveOnExit remove_target{target};
  {
    std::ofstream file(target, std::ios::binary);
    file << std::string(4096, 's');
  }
  const std::string link_name = ShmName(kShmPrefix, "link");
  const std::string link_path = "/dev/shm/" + link_name;
  std::remove(link_path.c_str());
  ASSERT_EQ(symlink(target.c_str(), link_path.c_str()), 0) << std::strerror(errno);
  RemoveOnExit remove_link{link_path};
  // The link resolves to a 4096-byte regular file, so only the no-follow rule refuses it.
  struct stat through_link {};
  ASSERT_EQ(stat(link_path.c_str(), &through_link), 0);
  ASSERT_TRUE(S_ISREG(through_link.st_mode));
  ASSERT_EQ(through_link.st_size, 4096);
  grpc::Status linked = Register(s, "linked", "/" + link_name, 0, 16);
  EXPECT_FALSE(linked.ok()) << "registered a symbolic link to " << target;
  EXPECT_THAT(linked.error_message(), HasSubstr(link_name));

  const std::string fifo_name = ShmName(kShmPrefix, "fifo");
  const std::string fifo_path = "/dev/shm/" + fifo_name;
  std::remove(fifo_path.c_str());
  ASSERT_EQ(mkfifo(fifo_path.c_str(), 0600), 0) << std::strerror(errno);
  RemoveOnExit remove_fifo{fifo_path};
  grpc::Status fifo = Register(s, "fifo", "/" + fifo_name, 0, 16);
  EXPECT_EQ(fifo.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << fifo.error_message();
  EXPECT_THAT(fifo.error_message(), HasSubstr("is not a plain shared-memory object"));

  const std::string dir_name = ShmName(kShmPrefix, "dir");
  const std::string dir_path = "/dev/shm/" + dir_name;
  std::remove(dir_path.c_str());
  ASSERT_EQ(mkdir(dir_path.c_str(), 0700), 0) << std::strerror(errno);
  RemoveOnExit remove_dir{dir_path};
  grpc::Status dir = Register(s, "dir", "/" + dir_name, 0, 16);
  EXPECT_EQ(dir.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << dir.error_message();
  EXPECT_THAT(dir.error_message(), HasSubstr(dir_name));

  EXPECT_THAT(RegisteredNames(s), ::testing::IsEmpty());
}

struct ForwardRejection {
  std::string what;
  std::function<void(v1::ForwardRequest&)> mutate;
  grpc::StatusCode code;
  std::string message;
};

TEST(SharedMemoryTest, EveryForwardRejectionNamesTheField) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 3);
  ASSERT_TRUE(Load(s, load).ok());
  constexpr int64_t kRegion = 1 << 16;
  constexpr int64_t kOutput = 1 << 15;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, kRegion);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(s, "r", buffer->key(), 0, kRegion).ok());

  // 1 x 8 x 6 x 6 fp32: 1152 bytes in and out.
  v1::ForwardRequest good = ForwardFor("conv", spec, 1, 6, 6, 5);
  const std::string input = good.input().data();
  const std::string expected = ReferenceOutput(load, input, 1, 6, 6, Layout::kNchw, Layout::kNchw);
  const int64_t bytes = static_cast<int64_t>(input.size());
  MoveInputTo(good, buffer->data(), "r", 0);
  *good.mutable_output_shared_memory() = Range("r", kOutput, bytes);
  std::memset(buffer->data() + kOutput, kPoison, static_cast<size_t>(kRegion - kOutput));

  const std::vector<ForwardRejection> cases = {
      {"unknown input region",
       [](auto& r) { r.mutable_input()->mutable_shared_memory()->set_region("nope"); },
       grpc::StatusCode::NOT_FOUND,
       "input.shared_memory.region: no shared-memory region named 'nope'"},
      {"empty input region",
       [](auto& r) { r.mutable_input()->mutable_shared_memory()->set_region(""); },
       grpc::StatusCode::NOT_FOUND, "input.shared_memory.region"},
      {"input past the region",
       [&](auto& r) { r.mutable_input()->mutable_shared_memory()->set_offset(kRegion - 100); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shared_memory: offset 65436 and byte_size 1152"},
      {"input offset negative",
       [](auto& r) { r.mutable_input()->mutable_shared_memory()->set_offset(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shared_memory: offset -1"},
      {"input offset overflowing",
       [](auto& r) { r.mutable_input()->mutable_shared_memory()->set_offset(INT64_MAX); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shared_memory: offset"},
      {"input byte_size zero",
       [](auto& r) { r.mutable_input()->mutable_shared_memory()->set_byte_size(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shared_memory: offset 0 and byte_size 0"},
      {"input in both places", [&](auto& r) { r.mutable_input()->set_data(input); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.data and input.shared_memory are both set"},
      {"input short of the shape",
       [&](auto& r) { r.mutable_input()->mutable_shared_memory()->set_byte_size(bytes - 4); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shared_memory.byte_size has 1148 bytes"},
      {"input beyond the shape",
       [&](auto& r) { r.mutable_input()->mutable_shared_memory()->set_byte_size(bytes + 4); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shared_memory.byte_size has 1156 bytes"},
      {"output range too small",
       [&](auto& r) { r.mutable_output_shared_memory()->set_byte_size(bytes - 1); },
       grpc::StatusCode::INVALID_ARGUMENT,
       "output_shared_memory (region 'r', byte_size 1151) is too small: the output is 1152"},
      {"unknown output region",
       [](auto& r) { r.mutable_output_shared_memory()->set_region("gone"); },
       grpc::StatusCode::NOT_FOUND,
       "output_shared_memory.region: no shared-memory region named 'gone'"},
      {"output past the region",
       [&](auto& r) { r.mutable_output_shared_memory()->set_offset(kRegion - 1); },
       grpc::StatusCode::INVALID_ARGUMENT, "output_shared_memory: offset 65535"},
      {"output byte_size zero", [](auto& r) { r.mutable_output_shared_memory()->set_byte_size(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "output_shared_memory: offset"},
  };
  for (const ForwardRejection& c : cases) {
    v1::ForwardRequest request = good;
    c.mutate(request);
    v1::ForwardResponse response;
    grpc::Status status = Forward(s, request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.what;
  }
  // None of them wrote an output.
  EXPECT_EQ(std::string(buffer->data() + kOutput, kRegion - kOutput),
            std::string(kRegion - kOutput, kPoison));
  // The request they were made from is served.
  v1::ForwardResponse response;
  grpc::Status status = Forward(s, good, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(std::string(buffer->data() + kOutput, expected.size()), expected);
}

TEST(SharedMemoryTest, AnObjectThatShrinksFailsTheRequestNotTheServer) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 3);
  ASSERT_TRUE(Load(s, load).ok());
  constexpr int64_t kSize = 1 << 16;
  constexpr int64_t kShrunk = 1 << 14;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, kSize);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(s, "r", buffer->key(), 0, kSize).ok());

  // Written before the shrink: past kShrunk the mapping faults afterwards.
  v1::ForwardRequest inside = ForwardFor("conv", spec, 1, 6, 6, 41);
  const std::string inside_expected =
      ReferenceOutput(load, inside.input().data(), 1, 6, 6, Layout::kNchw, Layout::kNchw);
  MoveInputTo(inside, buffer->data(), "r", 0);
  v1::ForwardRequest straddling = ForwardFor("conv", spec, 1, 6, 6, 42);
  MoveInputTo(straddling, buffer->data() + kShrunk - 100, "r", kShrunk - 100);
  v1::ForwardRequest beyond = ForwardFor("conv", spec, 1, 6, 6, 43);
  MoveInputTo(beyond, buffer->data() + kSize / 2, "r", kSize / 2);

  {
    const int fd = shm_open(buffer->key().c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const int truncated = ftruncate(fd, kShrunk);
    close(fd);
    ASSERT_EQ(truncated, 0) << std::strerror(errno);
  }
  for (const v1::ForwardRequest* request : {&straddling, &beyond}) {
    v1::ForwardResponse response;
    grpc::Status status = Forward(s, *request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("shrank"));
    EXPECT_THAT(status.error_message(), HasSubstr("region 'r'"));
  }
  // An output past the new end fails its request and does not grow the object back.
  {
    v1::ForwardRequest to_shrunk = inside;
    *to_shrunk.mutable_output_shared_memory() = Range("r", kSize / 2, kSize / 4);
    v1::ForwardResponse response;
    grpc::Status status = Forward(s, to_shrunk, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("shrank"));
    struct stat st {};
    const int fd = shm_open(buffer->key().c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(fstat(fd, &st), 0);
    close(fd);
    EXPECT_EQ(st.st_size, kShrunk);
  }
  // What is left of the object still serves, and so does the server.
  v1::ForwardResponse response;
  grpc::Status status = Forward(s, inside, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.output().data(), inside_expected);
  const v1::ForwardRequest in_band = ForwardFor("conv", spec, 2, 7, 7, 44);
  status = Forward(s, in_band, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.output().data(),
            ReferenceOutput(load, in_band.input().data(), 2, 7, 7, Layout::kNchw, Layout::kNchw));
}

TEST(SharedMemoryTest, AnInputOverTheLimitIsRefusedBeforeItIsRead) {
  ServerOptions options = SharedMemoryServerOptions();
  options.max_input_bytes = 4096;
  RunningServer s = StartServer(options);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 3)).ok());
  // Sparse: a server that read it before checking would allocate and copy a gigabyte.
  constexpr int64_t kHuge = int64_t{1} << 30;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, kHuge);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(s, "huge", buffer->key(), 0, kHuge).ok());
  v1::ForwardRequest request = ForwardFor("conv", spec, 1, 6, 6, 5);
  request.mutable_input()->clear_data();
  *request.mutable_input()->mutable_shared_memory() = Range("huge", 0, kHuge);
  v1::ForwardResponse response;
  const absl::Time start = absl::Now();
  grpc::Status status = Forward(s, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("input.shared_memory.byte_size"));
  EXPECT_THAT(status.error_message(), HasSubstr("--max_input_bytes"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST(SharedMemoryTest, StatusListsAndUnregisterRemoves) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 3)).ok());
  std::unique_ptr<SharedMemoryBuffer> a = NewShmBuffer(kShmPrefix, 1 << 16);
  std::unique_ptr<SharedMemoryBuffer> b = NewShmBuffer(kShmPrefix, 8192);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  v1::SharedMemoryStatusResponse listed;
  ASSERT_TRUE(Status(s, "", &listed).ok());
  EXPECT_EQ(listed.regions_size(), 0);
  // Registered out of order; listed by name.
  ASSERT_TRUE(Register(s, "zeta", a->key(), 4096, 1 << 15).ok());
  ASSERT_TRUE(Register(s, "alpha", b->key(), 0, 8192).ok());
  ASSERT_TRUE(Register(s, "mid", a->key(), 0, 4096).ok());
  listed.Clear();
  ASSERT_TRUE(Status(s, "", &listed).ok());
  ASSERT_EQ(listed.regions_size(), 3);
  EXPECT_EQ(Fields(listed.regions(0)), std::make_tuple("alpha", b->key(), 0, 8192));
  EXPECT_EQ(Fields(listed.regions(1)), std::make_tuple("mid", a->key(), 0, 4096));
  EXPECT_EQ(Fields(listed.regions(2)), std::make_tuple("zeta", a->key(), 4096, 1 << 15));

  v1::SharedMemoryStatusResponse one;
  ASSERT_TRUE(Status(s, "mid", &one).ok());
  ASSERT_EQ(one.regions_size(), 1);
  EXPECT_EQ(Fields(one.regions(0)), std::make_tuple("mid", a->key(), 0, 4096));
  grpc::Status unknown = Status(s, "nope", &one);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown.error_message(), HasSubstr("no shared-memory region named 'nope'"));

  // A request naming "mid" is served until it is unregistered.
  v1::ForwardRequest request = ForwardFor("conv", spec, 1, 6, 6, 9);
  MoveInputTo(request, a->data(), "mid", 0);
  v1::ForwardResponse response;
  grpc::Status before = Forward(s, request, &response);
  ASSERT_TRUE(before.ok()) << before.error_message();
  ASSERT_TRUE(Unregister(s, "mid").ok());
  grpc::Status after = Forward(s, request, &response);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(after.error_message(), HasSubstr("input.shared_memory.region"));
  grpc::Status status_gone = Status(s, "mid", &one);
  EXPECT_EQ(status_gone.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(RegisteredNames(s), ::testing::ElementsAre("alpha", "zeta"));

  for (const char* name : {"mid", "nope"}) {
    grpc::Status again = Unregister(s, name);
    EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND) << name;
    EXPECT_THAT(again.error_message(),
                HasSubstr(absl::StrCat("no shared-memory region named '", name, "'")));
  }
  EXPECT_THAT(RegisteredNames(s), ::testing::ElementsAre("alpha", "zeta"));

  // An empty name removes every region; the names are free again.
  ASSERT_TRUE(Unregister(s, "").ok());
  EXPECT_THAT(RegisteredNames(s), ::testing::IsEmpty());
  ASSERT_TRUE(Unregister(s, "").ok()) << "nothing to remove is fine";
  ASSERT_TRUE(Register(s, "mid", b->key(), 0, 8192).ok());
  EXPECT_THAT(RegisteredNames(s), ::testing::ElementsAre("mid"));
}

// A request holds the regions it names: unregistering one (even re-registering the name for
// another object, and removing the object) while the request waits in the queue does not
// change where it reads or writes.
TEST(SharedMemoryTest, UnregisteringDoesNotAffectAQueuedRequest) {
  RunningServer s = StartServer(SharedMemoryServerOptions());
  v1::LayerSpec spec = SmallSpec("conv", 8);
  // Nothing launches before two samples are queued (or ten seconds pass).
  spec.mutable_batching()->set_max_batch_size(2);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 17);
  ASSERT_TRUE(Load(s, load).ok());
  std::unique_ptr<SharedMemoryBuffer> first = NewShmBuffer(kShmPrefix, 1 << 16);
  std::unique_ptr<SharedMemoryBuffer> second = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(Register(s, "r", first->key(), 0, first->size()).ok());
  std::memset(first->data(), kPoison, static_cast<size_t>(first->size()));
  std::memset(second->data(), kPoison, static_cast<size_t>(second->size()));

  constexpr int64_t kOutput = 1 << 15;
  v1::ForwardRequest queued = ForwardFor("conv", spec, 1, 8, 8, 71);
  const std::string expected =
      ReferenceOutput(load, queued.input().data(), 1, 8, 8, Layout::kNchw, Layout::kNchw);
  MoveInputTo(queued, first->data(), "r", 0);
  *queued.mutable_output_shared_memory() =
      Range("r", kOutput, static_cast<int64_t>(expected.size()));
  const absl::Time start = absl::Now();
  AsyncCall call;
  s.stub->async()->Forward(&call.context, &queued, &call.response, [&call](grpc::Status status) {
    call.status = std::move(status);
    call.done.set_value();
  });
  WaitQueued(s, "conv", 1);

  ASSERT_TRUE(Unregister(s, "r").ok());
  ASSERT_EQ(shm_unlink(first->key().c_str()), 0) << std::strerror(errno);
  ASSERT_TRUE(Register(s, "r", second->key(), 0, second->size()).ok());

  // A second sample fills the batch.
  const v1::ForwardRequest other = ForwardFor("conv", spec, 1, 8, 8, 72);
  v1::ForwardResponse response;
  grpc::Status status = Forward(s, other, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.output().data(),
            ReferenceOutput(load, other.input().data(), 1, 8, 8, Layout::kNchw, Layout::kNchw));
  EXPECT_EQ(response.batch_size(), 2);

  call.done.get_future().wait();
  EXPECT_LT(absl::Now() - start, absl::Seconds(9)) << "launched by the delay, not when full";
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  EXPECT_EQ(call.response.batch_size(), 2);
  EXPECT_EQ(std::string(first->data() + kOutput, expected.size()), expected);
  EXPECT_EQ(std::string(second->data(), second->size()), std::string(second->size(), kPoison))
      << "wrote the object registered under the name later";
}

TEST(SharedMemoryTest, TheRegistryHasALimit) {
  constexpr int kLimit = 1024;  // SharedMemoryRegistry's default, which the server uses
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < 2 * kLimit) {
    GTEST_SKIP() << "needs " << 2 * kLimit << " file descriptors, has " << files.rlim_cur;
  }
  RunningServer s = StartServer(SharedMemoryServerOptions());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 4096);
  ASSERT_NE(buffer, nullptr);
  for (int i = 0; i < kLimit; ++i) {
    grpc::Status status = Register(s, absl::StrCat("r", i), buffer->key(), 0, 4096);
    ASSERT_TRUE(status.ok()) << i << ": " << status.error_message();
  }
  grpc::Status over = Register(s, "over", buffer->key(), 0, 4096);
  EXPECT_EQ(over.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(over.error_message(), HasSubstr("1024 shared-memory regions are registered"));
  ASSERT_TRUE(Unregister(s, "r7").ok());
  EXPECT_TRUE(Register(s, "over", buffer->key(), 0, 4096).ok());
  ASSERT_TRUE(Unregister(s, "").ok());
}

}  // namespace
}  // namespace convserve
