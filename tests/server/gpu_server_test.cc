// The real server on the GPU executor (skipped without a GPU): every dtype and layout against
// the fp64 reference by relative L2 error, concurrent requests merged into launches, the reply
// naming the CUDA device and the kernel configuration that ran, tensors in shared memory copied
// straight between the client's pages and the device, and tensors in a client's GPU memory
// (CUDA IPC, with the server in its own process).
#include <cuda_runtime_api.h>
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cuda_shared_memory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "server/layer_spec.h"
#include "tests/e2e/server_process.h"
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
using ::convserve::testing::RegisterRequestFor;
using ::convserve::testing::RunningServer;
using ::convserve::testing::SharedMemoryServerOptions;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::StartServer;
using ::convserve::testing::TestServerOptions;

// Relative L2 error of `output` (the server's bytes) against the fp64 reference.
double RelativeError(const v1::LoadLayerRequest& load, const v1::ForwardRequest& request,
                     const std::string& output) {
  const ConvParams params = *ParamsFromSpec(load.spec());
  ConvProblem problem;
  problem.params = params;
  problem.batch = request.input().shape(0);
  problem.height = request.input().shape(2);
  problem.width = request.input().shape(3);
  problem.input_layout = *LayoutFromProto(request.input().layout(), "layout");
  problem.output_layout = problem.input_layout;
  const std::vector<double> expected =
      ReferenceConv2dDouble(problem, request.input().data().data(), load.weights().data(),
                            params.has_bias ? load.bias().data() : nullptr, 1);
  double diff = 0;
  double norm = 0;
  const int64_t k = params.out_channels;
  const int64_t p = problem.out_height();
  const int64_t q = problem.out_width();
  for (int64_t n = 0; n < problem.batch; ++n) {
    for (int64_t c = 0; c < k; ++c) {
      for (int64_t h = 0; h < p; ++h) {
        for (int64_t w = 0; w < q; ++w) {
          const double want = expected[((n * k + c) * p + h) * q + w];
          const double got = LoadAsDouble(params.dtype, output.data(),
                                          TensorOffset(problem.output_layout, k, p, q, n, c, h, w));
          diff += (got - want) * (got - want);
          norm += want * want;
        }
      }
    }
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

// Moves `request`'s input out of the message into `region` at `offset` (where the caller put
// its bytes).
void InputInRegion(v1::ForwardRequest& request, const std::string& region, int64_t offset) {
  v1::SharedMemoryRange* in = request.mutable_input()->mutable_shared_memory();
  in->set_region(region);
  in->set_offset(offset);
  in->set_byte_size(static_cast<int64_t>(request.input().data().size()));
  request.mutable_input()->clear_data();
}

// Asks for `request`'s output in `region`: `byte_size` bytes at `offset`.
void OutputInRegion(v1::ForwardRequest& request, const std::string& region, int64_t offset,
                    int64_t byte_size) {
  v1::SharedMemoryRange* out = request.mutable_output_shared_memory();
  out->set_region(region);
  out->set_offset(offset);
  out->set_byte_size(byte_size);
}

TEST(GpuServerTest, ServesEveryDtypeWithinToleranceAndBatches) {
  ServerOptions options = TestServerOptions();
  options.device = "cuda:0";
  absl::StatusOr<std::unique_ptr<ConvServer>> probe = ConvServer::Create(options, nullptr);
  if (!probe.ok()) GTEST_SKIP() << "no usable GPU: " << probe.status();
  probe->reset();
  RunningServer s = StartServer(options);

  const struct {
    v1::DataType dtype;
    double tolerance;
  } cases[] = {{v1::DATA_TYPE_FP32, 1e-3}, {v1::DATA_TYPE_FP16, 2e-3}, {v1::DATA_TYPE_BF16, 1e-2}};
  for (const auto& c : cases) {
    v1::LayerSpec spec = SmallSpec("gpu", 64, c.dtype);
    spec.mutable_batching()->set_max_batch_size(8);
    spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
    const v1::LoadLayerRequest load = LoadRequestFor(spec, 17);
    {
      grpc::ClientContext context;
      v1::LoadLayerResponse response;
      grpc::Status status = s.stub->LoadLayer(&context, load, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_THAT(response.layer().device(), ::testing::HasSubstr("cuda:0"));
    }
    for (v1::Layout layout : {v1::LAYOUT_NCHW, v1::LAYOUT_NHWC}) {
      // Eight requests fill one batch of eight: they launch together, at once.
      std::vector<v1::ForwardRequest> requests;
      for (int i = 0; i < 8; ++i)
        requests.push_back(ForwardFor("gpu", spec, 1, 28, 28, 300 + i, layout));
      const std::vector<std::unique_ptr<AsyncCall>> calls = ForwardAll(s, requests);
      for (size_t i = 0; i < calls.size(); ++i) {
        ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
        const v1::ForwardResponse& response = calls[i]->response;
        EXPECT_EQ(response.batch_size(), 8);
        EXPECT_FALSE(response.kernel_config().empty());
        EXPECT_THAT(response.device(), ::testing::HasSubstr("cuda:0"));
        EXPECT_LT(RelativeError(load, requests[i], response.output().data()), c.tolerance)
            << v1::DataType_Name(c.dtype) << " " << v1::Layout_Name(layout) << " request " << i;
      }
    }
  }
}

// Lone requests (batches of one) replay each lane's captured graphs: two spatial sizes in turn,
// fresh inputs every time, then the layer replaced with other weights under the same name, so a
// graph that kept an old input, output or weight would answer wrongly. Both issue paths.
class GpuGraphTest : public ::testing::TestWithParam<bool> {};

TEST_P(GpuGraphTest, RepeatedShapesAndAReplacedLayerStayCorrect) {
  ServerOptions options = TestServerOptions();
  options.device = "cuda:0";
  options.cuda_graphs = GetParam();
  absl::StatusOr<std::unique_ptr<ConvServer>> probe = ConvServer::Create(options, nullptr);
  if (!probe.ok()) GTEST_SKIP() << "no usable GPU: " << probe.status();
  probe->reset();
  RunningServer s = StartServer(options);

  v1::LayerSpec spec = SmallSpec("graphs", 64, v1::DATA_TYPE_FP16);
  spec.mutable_batching()->set_max_batch_size(1);
  uint32_t seed = 1000;
  for (int weights_seed : {17, 18}) {
    const v1::LoadLayerRequest load = LoadRequestFor(spec, weights_seed);
    {
      grpc::ClientContext context;
      v1::LoadLayerResponse response;
      grpc::Status status = s.stub->LoadLayer(&context, load, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
    }
    for (int round = 0; round < 4; ++round) {
      for (int size : {28, 20}) {
        const v1::ForwardRequest request =
            ForwardFor("graphs", spec, 1, size, size, seed++, v1::LAYOUT_NHWC);
        grpc::ClientContext context;
        v1::ForwardResponse response;
        grpc::Status status = s.stub->Forward(&context, request, &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
        EXPECT_EQ(response.batch_size(), 1);
        EXPECT_GT(response.timing().compute_us(), 0);
        EXPECT_LT(RelativeError(load, request, response.output().data()), 2e-3)
            << "weights " << weights_seed << " round " << round << " size " << size;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(IssuePaths, GpuGraphTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Graphs" : "CallByCall";
                         });

// One lane and four: 24 lone requests in flight at once (batches of one, so every lane runs
// some), each with its own input, each answered with its own output.
TEST(GpuLanesTest, EveryLaneCountAnswersEachRequestWithItsOwnOutput) {
  for (int lanes : {1, 4}) {
    ServerOptions options = TestServerOptions();
    options.device = "cuda:0";
    options.gpu_lanes = lanes;
    absl::StatusOr<std::unique_ptr<ConvServer>> probe = ConvServer::Create(options, nullptr);
    if (!probe.ok()) GTEST_SKIP() << "no usable GPU: " << probe.status();
    probe->reset();
    RunningServer s = StartServer(options);

    v1::LayerSpec spec = SmallSpec("lanes", 64, v1::DATA_TYPE_FP16);
    spec.mutable_batching()->set_max_batch_size(1);
    const v1::LoadLayerRequest load = LoadRequestFor(spec, 23);
    const grpc::Status loaded = Load(s, load);
    ASSERT_TRUE(loaded.ok()) << loaded.error_message();
    std::vector<v1::ForwardRequest> requests;
    for (int i = 0; i < 24; ++i) {
      requests.push_back(ForwardFor("lanes", spec, 1, 28, 28, 700 + 100 * lanes + i,
                                    i % 2 == 0 ? v1::LAYOUT_NHWC : v1::LAYOUT_NCHW));
    }
    const std::vector<std::unique_ptr<AsyncCall>> calls = ForwardAll(s, requests);
    for (size_t i = 0; i < calls.size(); ++i) {
      ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
      EXPECT_EQ(calls[i]->response.batch_size(), 1);
      EXPECT_LT(RelativeError(load, requests[i], calls[i]->response.output().data()), 2e-3)
          << lanes << " lanes, request " << i;
    }
  }
}

// Eight requests in one batch, each with its input and/or output in one registered region (at
// an offset that is not page-aligned) or in band, so a launch mixes copies straight from and to
// the client's pages with staged ones; a round in each layout. Page-locked (the GPU default) and
// read and written by the server (--nopin_shared_memory).
class GpuSharedMemoryTest : public ::testing::TestWithParam<bool> {};

TEST_P(GpuSharedMemoryTest, MixedBatchesMatchTheReference) {
  ServerOptions options = SharedMemoryServerOptions();
  options.device = "cuda:0";
  options.pin_shared_memory = GetParam();
  absl::StatusOr<std::unique_ptr<ConvServer>> probe = ConvServer::Create(options, nullptr);
  if (!probe.ok()) GTEST_SKIP() << "no usable GPU: " << probe.status();
  probe->reset();
  RunningServer s = StartServer(options);

  v1::LayerSpec spec = SmallSpec("shm", 64, v1::DATA_TYPE_FP16);
  // Launched full, however the requests trickle in: no smaller preferred size.
  spec.mutable_batching()->set_max_batch_size(8);
  spec.mutable_batching()->add_preferred_batch_sizes(8);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 23);
  ASSERT_TRUE(Load(s, load).ok());

  constexpr int kRequests = 8;
  constexpr int64_t kBase = 1000;  // the registered range's offset in the object
  constexpr int64_t kSlot = 1 << 20;
  constexpr char kPoison = '\xCD';
  std::unique_ptr<SharedMemoryBuffer> buffer =
      NewShmBuffer("convserve-gpu", kBase + 2 * kRequests * kSlot);
  ASSERT_NE(buffer, nullptr);
  {
    grpc::ClientContext context;
    v1::RegisterSharedMemoryResponse response;
    grpc::Status status = s.stub->RegisterSharedMemory(
        &context, RegisterRequestFor("r", buffer->key(), kBase, 2 * kRequests * kSlot), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  char* const range = buffer->data() + kBase;
  for (int round = 0; round < 3; ++round) {
    std::vector<v1::ForwardRequest> in_band;  // the elements, for the reference
    std::vector<v1::ForwardRequest> requests;
    for (int i = 0; i < kRequests; ++i) {
      const v1::Layout layout = round == 1 ? v1::LAYOUT_NCHW : v1::LAYOUT_NHWC;
      in_band.push_back(ForwardFor("shm", spec, 1, 28, 28, 500 + 10 * round + i, layout));
      v1::ForwardRequest request = in_band.back();
      // Inputs in shared memory but for 4 and 5; outputs but for 6 and 7 (and 2 in round 1).
      const int64_t input_at = 2 * i * kSlot + 7 * i;
      const int64_t output_at = (2 * i + 1) * kSlot + 3 * i;
      std::memset(range + output_at, kPoison, kSlot / 2);
      if (i != 4 && i != 5) {
        const std::string& data = request.input().data();
        std::memcpy(range + input_at, data.data(), data.size());
        InputInRegion(request, "r", input_at);
      }
      if (i < 6 && !(round == 1 && i == 2)) OutputInRegion(request, "r", output_at, kSlot / 2);
      requests.push_back(std::move(request));
    }
    std::vector<std::unique_ptr<::convserve::testing::AsyncCall>> calls = ForwardAll(s, requests);
    for (int i = 0; i < kRequests; ++i) {
      SCOPED_TRACE(absl::StrCat("round ", round, ", request ", i));
      ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
      const v1::ForwardResponse& response = calls[i]->response;
      EXPECT_EQ(response.batch_size(), kRequests);
      std::string output = response.output().data();
      const int64_t output_at = (2 * i + 1) * kSlot + 3 * i;
      if (requests[i].has_output_shared_memory()) {
        EXPECT_TRUE(output.empty());
        const size_t bytes = 64 * 28 * 28 * 2;
        output.assign(range + output_at, bytes);
        EXPECT_EQ(range[output_at + static_cast<int64_t>(bytes)], kPoison) << "written past";
      } else {
        EXPECT_EQ(range[output_at], kPoison) << "wrote the unused output slot";
      }
      EXPECT_LT(RelativeError(load, in_band[i], output), 2e-3);
    }
  }

  // A client that shrinks its object under a registered region must not take the server down:
  // pinned pages stay valid for the copy engines (the request succeeds on what they held), and
  // the descriptor path fails the request.
  {
    const int fd = shm_open(buffer->key().c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(ftruncate(fd, 0), 0) << std::strerror(errno);
    close(fd);
  }
  v1::ForwardRequest after = ForwardFor("shm", spec, 1, 28, 28, 600, v1::LAYOUT_NHWC);
  InputInRegion(after, "r", 0);
  OutputInRegion(after, "r", kSlot, kSlot / 2);
  v1::ForwardResponse response;
  grpc::Status status = Forward(s, after, &response);
  if (GetParam()) {
    EXPECT_TRUE(status.ok()) << status.error_message();
  } else {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  }
  const v1::ForwardRequest in_band_after = ForwardFor("shm", spec, 1, 28, 28, 601);
  status = Forward(s, in_band_after, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(RelativeError(load, in_band_after, response.output().data()), 2e-3);
}

// GPU memory of the client's process, shared through CUDA IPC (which needs the server in
// another process: convserve-server itself): batches mixing in-band tensors with inputs and
// outputs in the region, at offsets that are not aligned, against the fp64 reference; outputs
// written exactly where asked; bad registrations refused with the field they got wrong and the
// server serving on; the status not echoing the handle; the allocation registered twice, and
// served from the second region after the first is unregistered.
TEST(GpuCudaSharedMemoryTest, BatchesFromAndToTheClientsGpuMemory) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no usable GPU";
  }
  ServerProcessOptions process;
  process.binary = CONVSERVE_SERVER;
  process.device = "cuda:0";
  process.args = {"--allow_shared_memory"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(process);
  ASSERT_TRUE(server.ok()) << server.status();
  RunningServer s;
  s.channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  s.stub = v1::Conv2d::NewStub(s.channel);

  v1::LayerSpec spec = SmallSpec("ipc", 64, v1::DATA_TYPE_FP16);
  spec.mutable_batching()->set_max_batch_size(8);
  spec.mutable_batching()->add_preferred_batch_sizes(8);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 29);
  ASSERT_TRUE(Load(s, load).ok());

  constexpr int kRequests = 8;
  constexpr int64_t kBase = 4096 + 12;  // the registered range's offset in the allocation
  constexpr int64_t kSlot = 1 << 20;
  constexpr int64_t kRange = 2 * kRequests * kSlot;
  absl::StatusOr<std::unique_ptr<CudaSharedMemoryBuffer>> buffer =
      CudaSharedMemoryBuffer::Create(0, kBase + kRange);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  CudaSharedMemoryBuffer& gpu = **buffer;
  auto register_region = [&](const std::string& name, const std::string& handle, int device,
                             int64_t offset, int64_t byte_size) {
    v1::RegisterSharedMemoryRequest request;
    request.set_name(name);
    request.set_offset(offset);
    request.set_byte_size(byte_size);
    request.mutable_cuda()->set_ipc_handle(handle);
    request.mutable_cuda()->set_device_id(device);
    grpc::ClientContext context;
    v1::RegisterSharedMemoryResponse response;
    return s.stub->RegisterSharedMemory(&context, request, &response);
  };
  {
    grpc::Status status = register_region("g", gpu.ipc_handle(), 0, kBase, kRange);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  const std::string poison(kSlot, '\xCD');
  auto run_round = [&](int round, const std::string& region) {
    std::vector<v1::ForwardRequest> in_band;  // the elements, for the reference
    std::vector<v1::ForwardRequest> requests;
    for (int i = 0; i < kRequests; ++i) {
      in_band.push_back(ForwardFor("ipc", spec, 1, 28, 28, 700 + 10 * round + i,
                                   round == 0 ? v1::LAYOUT_NHWC : v1::LAYOUT_NCHW));
      v1::ForwardRequest request = in_band.back();
      // Inputs in GPU memory but for 4 and 5; outputs but for 6 and 7.
      const int64_t input_at = 2 * i * kSlot + 6 * i;
      const int64_t output_at = (2 * i + 1) * kSlot + 2 * i;
      ASSERT_TRUE(gpu.Upload(kBase + output_at, poison.data(), kSlot / 2).ok());
      if (i != 4 && i != 5) {
        const std::string& data = request.input().data();
        ASSERT_TRUE(
            gpu.Upload(kBase + input_at, data.data(), static_cast<int64_t>(data.size())).ok());
        InputInRegion(request, region, input_at);
      }
      if (i < 6) OutputInRegion(request, region, output_at, kSlot / 2);
      requests.push_back(std::move(request));
    }
    std::vector<std::unique_ptr<::convserve::testing::AsyncCall>> calls = ForwardAll(s, requests);
    for (int i = 0; i < kRequests; ++i) {
      SCOPED_TRACE(absl::StrCat("round ", round, ", request ", i));
      ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
      const v1::ForwardResponse& response = calls[i]->response;
      EXPECT_EQ(response.batch_size(), kRequests);
      std::string output = response.output().data();
      const int64_t output_at = (2 * i + 1) * kSlot + 2 * i;
      const int64_t bytes = 64 * 28 * 28 * 2;
      std::string slot(static_cast<size_t>(bytes) + 1, '\0');
      ASSERT_TRUE(gpu.Download(kBase + output_at, slot.data(), bytes + 1).ok());
      if (i < 6) {
        EXPECT_TRUE(output.empty());
        output = slot.substr(0, static_cast<size_t>(bytes));
        EXPECT_EQ(slot.back(), '\xCD') << "written past the output";
      } else {
        EXPECT_EQ(slot.front(), '\xCD') << "wrote the unused output slot";
      }
      EXPECT_LT(RelativeError(load, in_band[i], output), 2e-3);
    }
  };
  run_round(0, "g");
  run_round(1, "g");

  // Refused registrations name what is wrong; none may fault the device.
  EXPECT_EQ(register_region("past", gpu.ipc_handle(), 0, kBase, kRange + 1).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(register_region("short", gpu.ipc_handle().substr(1), 0, 0, 16).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(register_region("junk", std::string(64, '\x5A'), 0, 0, 16).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(register_region("nodev", gpu.ipc_handle(), 99, 0, 16).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  {
    v1::SharedMemoryStatusRequest request;
    grpc::ClientContext context;
    v1::SharedMemoryStatusResponse response;
    ASSERT_TRUE(s.stub->SharedMemoryStatus(&context, request, &response).ok());
    ASSERT_EQ(response.regions_size(), 1);
    EXPECT_EQ(response.regions(0).name(), "g");
    EXPECT_TRUE(response.regions(0).has_cuda());
    EXPECT_TRUE(response.regions(0).cuda().ipc_handle().empty());
  }
  // Still serving: a full batch (the layer's preferred size) in band.
  const v1::ForwardRequest in_band_after = ForwardFor("ipc", spec, 1, 28, 28, 800);
  std::vector<v1::ForwardRequest> last(kRequests, in_band_after);
  std::vector<std::unique_ptr<::convserve::testing::AsyncCall>> calls = ForwardAll(s, last);
  ASSERT_TRUE(calls[0]->status.ok()) << calls[0]->status.error_message();
  EXPECT_LT(RelativeError(load, in_band_after, calls[0]->response.output().data()), 2e-3);
  // The same allocation registered a second time (CUDA counts the server's opens of one
  // handle): unregistering the first region must leave the second one mapped.
  {
    grpc::Status status = register_region("g2", gpu.ipc_handle(), 0, kBase, kRange);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  auto unregister = [&](const std::string& name) {
    v1::UnregisterSharedMemoryRequest request;
    request.set_name(name);
    grpc::ClientContext context;
    v1::UnregisterSharedMemoryResponse unregistered;
    return s.stub->UnregisterSharedMemory(&context, request, &unregistered);
  };
  EXPECT_TRUE(unregister("g").ok());
  run_round(2, "g2");
  EXPECT_TRUE(unregister("g2").ok());
  EXPECT_THAT((*server)->Log(), ::testing::Not(::testing::HasSubstr("is broken after")));
}

INSTANTIATE_TEST_SUITE_P(Copies, GpuSharedMemoryTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "PageLocked" : "ThroughTheServer";
                         });

}  // namespace
}  // namespace convserve
