// Triton's system shared-memory extension on the KServe v2 front-end, through a real gRPC
// channel to an in-process server (CPU backend) that serves the native API and KServe on one
// port: the extension in ServerMetadata, SystemSharedMemoryRegister / Status / Unregister and
// their one registry with the native API, ModelInfer and ModelStreamInfer with tensors in
// registered regions against the reference, and every rejection by code and field name. Also
// ModelInfer on the server's completion queues: a call cancelled while it waits to be batched.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/shared_memory.h"
#include "common/wire_enums.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/kserve/kserve_service.h"
#include "server/server.h"
#include "tests/server/shared_memory_test_util.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::NewShmBuffer;
using ::convserve::testing::NewShmKey;
using ::convserve::testing::RandomTensor;
using ::convserve::testing::ReferenceOutput;
using ::convserve::testing::RegisterRequestFor;
using ::convserve::testing::SharedMemoryServerOptions;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::TestServerOptions;
using inference::GRPCInferenceService;
using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

using ParameterMap = google::protobuf::Map<std::string, InferParameter>;

constexpr char kPoison = '\xCD';
constexpr char kRegion[] = "shared_memory_region";
constexpr char kByteSize[] = "shared_memory_byte_size";
constexpr char kOffset[] = "shared_memory_offset";
// Names this test's shared-memory objects (NewShmKey, NewShmBuffer).
constexpr char kShmPrefix[] = "convserve-kstest";

// An in-process server with the KServe front-end registered next to the native service, as
// server/main.cc builds it, and stubs of both APIs on one channel.
struct KserveServer {
  // Declared first so it is destroyed last: it must outlive the grpc::Server it is on.
  std::unique_ptr<KserveService> kserve;
  std::unique_ptr<ConvServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Conv2d::Stub> native;
  std::unique_ptr<GRPCInferenceService::Stub> stub;
};

std::unique_ptr<KserveServer> StartKserveServer(const ServerOptions& options) {
  auto s = std::make_unique<KserveServer>();
  absl::StatusOr<std::unique_ptr<ConvServer>> server = ConvServer::Create(options, nullptr);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return nullptr;
  s->server = *std::move(server);
  EXPECT_EQ(s->server->shared_memory() != nullptr, options.allow_shared_memory);
  s->kserve =
      std::make_unique<KserveService>(s->server->core(), "convserve", KserveService::BuildVersion(),
                                      s->server->access(), s->server->shared_memory());
  absl::Status started = s->server->Start({s->kserve.get()});
  EXPECT_TRUE(started.ok()) << started;
  if (!started.ok()) return nullptr;
  s->channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", s->server->port()),
                                   grpc::InsecureChannelCredentials());
  s->native = v1::Conv2d::NewStub(s->channel);
  s->stub = GRPCInferenceService::NewStub(s->channel);
  return s;
}

std::unique_ptr<grpc::ClientContext> Context() {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return context;
}

// ---- The native API ----

grpc::Status Load(KserveServer& s, const v1::LoadLayerRequest& request) {
  v1::LoadLayerResponse ignored;
  return s.native->LoadLayer(Context().get(), request, &ignored);
}

grpc::Status NativeRegister(KserveServer& s, const std::string& name, const std::string& key,
                            int64_t offset, int64_t byte_size) {
  v1::RegisterSharedMemoryResponse response;
  return s.native->RegisterSharedMemory(
      Context().get(), RegisterRequestFor(name, key, offset, byte_size), &response);
}

// The native API's registered regions by name: (key, offset, byte_size).
std::map<std::string, std::tuple<std::string, int64_t, int64_t>> NativeRegions(KserveServer& s) {
  v1::SharedMemoryStatusRequest request;
  v1::SharedMemoryStatusResponse response;
  grpc::Status status = s.native->SharedMemoryStatus(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::map<std::string, std::tuple<std::string, int64_t, int64_t>> out;
  for (const v1::RegisterSharedMemoryRequest& region : response.regions()) {
    out[region.name()] = {region.key(), region.offset(), region.byte_size()};
  }
  return out;
}

// ---- The KServe API ----

grpc::Status Register(KserveServer& s, const std::string& name, const std::string& key,
                      uint64_t offset, uint64_t byte_size) {
  inference::SystemSharedMemoryRegisterRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_offset(offset);
  request.set_byte_size(byte_size);
  inference::SystemSharedMemoryRegisterResponse response;
  return s.stub->SystemSharedMemoryRegister(Context().get(), request, &response);
}

grpc::Status Unregister(KserveServer& s, const std::string& name) {
  inference::SystemSharedMemoryUnregisterRequest request;
  request.set_name(name);
  inference::SystemSharedMemoryUnregisterResponse response;
  return s.stub->SystemSharedMemoryUnregister(Context().get(), request, &response);
}

grpc::Status Status(KserveServer& s, const std::string& name,
                    inference::SystemSharedMemoryStatusResponse* response) {
  inference::SystemSharedMemoryStatusRequest request;
  request.set_name(name);
  return s.stub->SystemSharedMemoryStatus(Context().get(), request, response);
}

// The KServe API's registered regions by name: (key, offset, byte_size); each entry's own name
// must be its key in the map.
std::map<std::string, std::tuple<std::string, int64_t, int64_t>> KserveRegions(KserveServer& s) {
  inference::SystemSharedMemoryStatusResponse response;
  grpc::Status status = Status(s, "", &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::map<std::string, std::tuple<std::string, int64_t, int64_t>> out;
  for (const auto& [name, region] : response.regions()) {
    EXPECT_EQ(region.name(), name);
    out[name] = {region.key(), static_cast<int64_t>(region.offset()),
                 static_cast<int64_t>(region.byte_size())};
  }
  return out;
}

std::vector<std::string> Extensions(KserveServer& s) {
  inference::ServerMetadataRequest request;
  inference::ServerMetadataResponse response;
  grpc::Status status = s.stub->ServerMetadata(Context().get(), request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return {response.extensions().begin(), response.extensions().end()};
}

grpc::Status Infer(KserveServer& s, const ModelInferRequest& request,
                   ModelInferResponse* response) {
  response->Clear();
  return s.stub->ModelInfer(Context().get(), request, response);
}

// A request for `model` with one input of `shape` (its own row-major order) and no data yet.
ModelInferRequest RequestFor(const std::string& model, const std::string& datatype,
                             const std::vector<int64_t>& shape) {
  ModelInferRequest request;
  request.set_model_name(model);
  request.set_id("req");
  auto& input = *request.add_inputs();
  input.set_name("input");
  input.set_datatype(datatype);
  for (int64_t dim : shape) input.add_shape(dim);
  return request;
}

// Names [offset, offset + byte_size) of `region` in `parameters`; no offset parameter when
// `offset` is empty; byte_size as uint64_param when `unsigned_size`.
void SetSharedMemory(ParameterMap& parameters, const std::string& region, int64_t byte_size,
                     std::optional<int64_t> offset, bool unsigned_size = false) {
  parameters[kRegion].set_string_param(region);
  if (unsigned_size) {
    parameters[kByteSize].set_uint64_param(static_cast<uint64_t>(byte_size));
  } else {
    parameters[kByteSize].set_int64_param(byte_size);
  }
  if (offset.has_value()) {
    parameters[kOffset].set_int64_param(*offset);
  } else {
    parameters.erase(kOffset);
  }
}

ParameterMap& OutputParameters(ModelInferRequest& request) {
  if (request.outputs_size() == 0) request.add_outputs()->set_name("output");
  return *request.mutable_outputs(0)->mutable_parameters();
}

// The shared-memory parameters of a map, as (region, byte_size, offset) with -1 for absent
// integers and "" for an absent region; integers of either signedness.
std::tuple<std::string, int64_t, int64_t> SharedMemoryParameters(const ParameterMap& parameters) {
  auto integer = [&](const char* name) -> int64_t {
    auto it = parameters.find(name);
    if (it == parameters.end()) return -1;
    return it->second.parameter_choice_case() == InferParameter::kUint64Param
               ? static_cast<int64_t>(it->second.uint64_param())
               : it->second.int64_param();
  };
  auto region = parameters.find(kRegion);
  return {region == parameters.end() ? "" : region->second.string_param(), integer(kByteSize),
          integer(kOffset)};
}

const char* DatatypeOf(v1::DataType dtype) {
  return dtype == v1::DATA_TYPE_FP32 ? "FP32" : dtype == v1::DATA_TYPE_FP16 ? "FP16" : "BF16";
}

TEST(KserveSharedMemoryTest, ServerMetadataListsTheExtensionOnlyWhenOn) {
  std::unique_ptr<KserveServer> on = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(on, nullptr);
  EXPECT_THAT(Extensions(*on), Contains("system_shared_memory"));
  on.reset();
  std::unique_ptr<KserveServer> off = StartKserveServer(TestServerOptions());
  ASSERT_NE(off, nullptr);
  EXPECT_THAT(Extensions(*off), Not(Contains("system_shared_memory")));
}

// The CPU backend has no GPU to hold CUDA regions: both APIs refuse them as such, ServerMetadata
// does not offer the extension, and the CUDA status is empty while system regions exist.
// (gpu_server_test serves them on a GPU.)
TEST(KserveSharedMemoryTest, CudaRegionsAreRefusedWithoutAGpu) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  EXPECT_THAT(Extensions(*s), Not(Contains("cuda_shared_memory")));
  inference::CudaSharedMemoryRegisterRequest request;
  request.set_name("g");
  request.set_raw_handle(std::string(64, '\x01'));
  request.set_device_id(0);
  request.set_byte_size(4096);
  inference::CudaSharedMemoryRegisterResponse response;
  grpc::Status status = s->stub->CudaSharedMemoryRegister(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("GPU"));

  v1::RegisterSharedMemoryRequest native;
  native.set_name("g");
  native.set_byte_size(4096);
  native.mutable_cuda()->set_ipc_handle(std::string(64, '\x01'));
  v1::RegisterSharedMemoryResponse native_response;
  status = s->native->RegisterSharedMemory(Context().get(), native, &native_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  // A malformed handle is named before the backend is.
  native.mutable_cuda()->set_ipc_handle("short");
  status = s->native->RegisterSharedMemory(Context().get(), native, &native_response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("cuda.ipc_handle is 5 bytes"));

  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 4096);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(NativeRegister(*s, "host", buffer->key(), 0, 4096).ok());
  inference::CudaSharedMemoryStatusResponse cuda_status;
  status = s->stub->CudaSharedMemoryStatus(
      Context().get(), inference::CudaSharedMemoryStatusRequest(), &cuda_status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(cuda_status.regions().empty());
  // Unregistering every CUDA region leaves the system one.
  inference::CudaSharedMemoryUnregisterResponse unregistered;
  ASSERT_TRUE(s->stub
                  ->CudaSharedMemoryUnregister(Context().get(),
                                               inference::CudaSharedMemoryUnregisterRequest(),
                                               &unregistered)
                  .ok());
  EXPECT_EQ(NativeRegions(*s).count("host"), 1u);
}

TEST(KserveSharedMemoryTest, RegisterStatusAndUnregisterShareTheNativeRegistry) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  std::unique_ptr<SharedMemoryBuffer> a = NewShmBuffer(kShmPrefix, 1 << 16);
  std::unique_ptr<SharedMemoryBuffer> b = NewShmBuffer(kShmPrefix, 8192);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);

  EXPECT_THAT(KserveRegions(*s), IsEmpty());
  ASSERT_TRUE(Register(*s, "zeta", a->key(), 4096, 1 << 15).ok());
  ASSERT_TRUE(Register(*s, "alpha", b->key(), 0, 8192).ok());
  using Entry = std::pair<const std::string, std::tuple<std::string, int64_t, int64_t>>;
  const Entry zeta{"zeta", {a->key(), 4096, 1 << 15}};
  const Entry alpha{"alpha", {b->key(), 0, 8192}};
  EXPECT_THAT(KserveRegions(*s), UnorderedElementsAre(zeta, alpha));
  // One registry: the native API sees the KServe registrations and the other way round.
  EXPECT_THAT(NativeRegions(*s), UnorderedElementsAre(zeta, alpha));
  ASSERT_TRUE(NativeRegister(*s, "native", a->key(), 0, 4096).ok());
  const Entry native{"native", {a->key(), 0, 4096}};
  EXPECT_THAT(KserveRegions(*s), UnorderedElementsAre(zeta, alpha, native));

  // One region by name.
  inference::SystemSharedMemoryStatusResponse one;
  ASSERT_TRUE(Status(*s, "native", &one).ok());
  ASSERT_EQ(one.regions_size(), 1);
  ASSERT_EQ(one.regions().count("native"), 1u);
  const auto& listed = one.regions().at("native");
  EXPECT_EQ(listed.name(), "native");
  EXPECT_EQ(listed.key(), a->key());
  EXPECT_EQ(listed.offset(), 0u);
  EXPECT_EQ(listed.byte_size(), 4096u);
  grpc::Status unknown = Status(*s, "nope", &one);
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(unknown.error_message(), HasSubstr("no system shared-memory region named 'nope'"));

  // Registration errors are the registry's.
  grpc::Status duplicate = Register(*s, "alpha", b->key(), 0, 16);
  EXPECT_EQ(duplicate.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(duplicate.error_message(), HasSubstr("'alpha' is registered"));
  const std::string missing = NewShmKey(kShmPrefix);
  grpc::Status gone = Register(*s, "missing", missing, 0, 16);
  EXPECT_EQ(gone.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(gone.error_message(), HasSubstr("cannot open shared-memory object " + missing));
  grpc::Status too_big = Register(*s, "big", b->key(), 4096, 8192);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_big.error_message(), HasSubstr("too small for offset 4096 + byte_size 8192"));
  // uint64 values past INT64_MAX are refused, not wrapped into a valid range.
  grpc::Status huge_offset = Register(*s, "big", b->key(), UINT64_MAX, 16);
  EXPECT_EQ(huge_offset.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(huge_offset.error_message(), HasSubstr("offset must be >= 0"));
  grpc::Status huge_size = Register(*s, "big", b->key(), 0, uint64_t{1} << 63);
  EXPECT_EQ(huge_size.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(huge_size.error_message(), HasSubstr("byte_size > 0"));
  grpc::Status bad_name = Register(*s, "a b", b->key(), 0, 16);
  EXPECT_EQ(bad_name.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(KserveRegions(*s), UnorderedElementsAre(zeta, alpha, native));

  // Unregistering one, through either API.
  ASSERT_TRUE(Unregister(*s, "zeta").ok());
  EXPECT_THAT(NativeRegions(*s), UnorderedElementsAre(alpha, native));
  {
    v1::UnregisterSharedMemoryRequest request;
    request.set_name("alpha");
    v1::UnregisterSharedMemoryResponse response;
    ASSERT_TRUE(s->native->UnregisterSharedMemory(Context().get(), request, &response).ok());
  }
  EXPECT_THAT(KserveRegions(*s), UnorderedElementsAre(native));
  for (const char* name : {"zeta", "nope"}) {
    grpc::Status again = Unregister(*s, name);
    EXPECT_EQ(again.error_code(), grpc::StatusCode::NOT_FOUND) << name;
    EXPECT_THAT(again.error_message(),
                HasSubstr(absl::StrCat("no system shared-memory region named '", name, "'")));
  }

  // An empty name: all of them; the names are free again.
  ASSERT_TRUE(Register(*s, "zeta", a->key(), 4096, 1 << 15).ok());
  ASSERT_TRUE(Unregister(*s, "").ok());
  EXPECT_THAT(KserveRegions(*s), IsEmpty());
  EXPECT_THAT(NativeRegions(*s), IsEmpty());
  EXPECT_TRUE(Unregister(*s, "").ok()) << "nothing to remove is fine";
  ASSERT_TRUE(Register(*s, "alpha", a->key(), 0, 8192).ok());
  EXPECT_THAT(NativeRegions(*s), UnorderedElementsAre(Entry{"alpha", {a->key(), 0, 8192}}));
}

// A region the native API registered serves a KServe request, and one unregistered through
// KServe no longer serves native ones.
TEST(KserveSharedMemoryTest, RegionsServeBothApis) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 5);
  ASSERT_TRUE(Load(*s, load).ok());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(NativeRegister(*s, "r", buffer->key(), 0, 1 << 16).ok());

  const std::string input = RandomTensor(8 * 6 * 6, DataType::kFloat32, 3);
  const std::string expected = ReferenceOutput(load, input, 1, 6, 6, Layout::kNchw, Layout::kNchw);
  std::memcpy(buffer->data(), input.data(), input.size());
  ModelInferRequest request = RequestFor("conv", "FP32", {1, 8, 6, 6});
  SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "r",
                  static_cast<int64_t>(input.size()), 0);
  ModelInferResponse response;
  grpc::Status status = Infer(*s, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0), expected);

  ASSERT_TRUE(Unregister(*s, "r").ok());
  status = Infer(*s, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("inputs[0].parameters.shared_memory_region"));
  v1::ForwardRequest forward;
  forward.set_layer("conv");
  forward.mutable_input()->set_dtype(v1::DATA_TYPE_FP32);
  for (int64_t dim : {1, 8, 6, 6}) forward.mutable_input()->add_shape(dim);
  auto* range = forward.mutable_input()->mutable_shared_memory();
  range->set_region("r");
  range->set_byte_size(static_cast<int64_t>(input.size()));
  v1::ForwardResponse forwarded;
  status = s->native->Forward(Context().get(), forward, &forwarded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("input.shared_memory.region"));
}

TEST(KserveSharedMemoryTest, ModelInferTensorsInSharedMemoryMatchTheReference) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(buffer, nullptr);
  // The registered range starts 4096 bytes into the object; parameter offsets are into it.
  constexpr int64_t kBase = 4096;
  constexpr int64_t kInput = 100;
  constexpr int64_t kOutput = 16384;
  constexpr int64_t kSlack = 64;  // the output range is this much larger than the output
  ASSERT_TRUE(Register(*s, "region", buffer->key(), kBase, 1 << 15).ok());
  char* const input_at = buffer->data() + kBase + kInput;
  char* const output_at = buffer->data() + kBase + kOutput;
  constexpr int64_t n = 2, c = 8, h = 9, w = 7;

  for (v1::DataType dtype : {v1::DATA_TYPE_FP32, v1::DATA_TYPE_FP16}) {
    const std::string layer = absl::StrCat("conv_", DatatypeOf(dtype));
    const v1::LayerSpec spec = SmallSpec(layer, c, dtype);
    const v1::LoadLayerRequest load = LoadRequestFor(spec, 7);
    ASSERT_TRUE(Load(*s, load).ok());
    const DataType type = *DataTypeFromProto(dtype, "dtype");
    for (Layout layout : {Layout::kNchw, Layout::kNhwc}) {
      const bool nhwc = layout == Layout::kNhwc;
      const std::string input = RandomTensor(n * c * h * w, type, 100 + dtype * 3 + nhwc);
      const std::string expected = ReferenceOutput(load, input, n, h, w, layout, layout);
      const int64_t input_bytes = static_cast<int64_t>(input.size());
      const int64_t output_bytes = static_cast<int64_t>(expected.size());
      const std::vector<int64_t> shape =
          nhwc ? std::vector<int64_t>{n, h, w, c} : std::vector<int64_t>{n, c, h, w};
      for (bool input_in_shm : {true, false}) {
        for (bool output_in_shm : {true, false}) {
          SCOPED_TRACE(absl::StrCat(DatatypeOf(dtype), nhwc ? " NHWC" : " NCHW", ", input in shm ",
                                    input_in_shm, ", output in shm ", output_in_shm));
          ModelInferRequest request = RequestFor(layer, DatatypeOf(dtype), shape);
          // NHWC through the input's own parameter; the output follows the input.
          if (nhwc) {
            (*request.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("NHWC");
          }
          std::memset(input_at, 0, input.size());
          if (input_in_shm) {
            std::memcpy(input_at, input.data(), input.size());
            SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "region", input_bytes,
                            kInput);
          } else {
            request.add_raw_input_contents(input);
          }
          if (output_in_shm) {
            SetSharedMemory(OutputParameters(request), "region", output_bytes + kSlack, kOutput);
          }
          std::memset(output_at, kPoison, static_cast<size_t>(output_bytes + kSlack));

          ModelInferResponse response;
          grpc::Status status = Infer(*s, request, &response);
          ASSERT_TRUE(status.ok()) << status.error_message();
          const std::string written(output_at, static_cast<size_t>(output_bytes));
          EXPECT_EQ(std::string(output_at + output_bytes, kSlack), std::string(kSlack, kPoison))
              << "written past the output";
          EXPECT_EQ(response.model_name(), layer);
          EXPECT_EQ(response.id(), "req");
          ASSERT_EQ(response.outputs_size(), 1);
          const ModelInferResponse::InferOutputTensor& output = response.outputs(0);
          EXPECT_EQ(output.name(), "output");
          EXPECT_EQ(output.datatype(), DatatypeOf(dtype));
          EXPECT_EQ(std::vector<int64_t>(output.shape().begin(), output.shape().end()), shape);
          EXPECT_FALSE(output.has_contents());
          if (nhwc) {
            ASSERT_EQ(output.parameters().count("layout"), 1u);
            EXPECT_EQ(output.parameters().at("layout").string_param(), "NHWC");
          } else {
            EXPECT_EQ(output.parameters().count("layout"), 0u);
          }
          if (output_in_shm) {
            EXPECT_EQ(written, expected);
            EXPECT_EQ(response.raw_output_contents_size(), 0);
            EXPECT_EQ(SharedMemoryParameters(output.parameters()),
                      std::make_tuple(std::string("region"), output_bytes + kSlack, kOutput));
            EXPECT_EQ(output.parameters().at(kRegion).parameter_choice_case(),
                      InferParameter::kStringParam);
          } else {
            ASSERT_EQ(response.raw_output_contents_size(), 1);
            EXPECT_EQ(response.raw_output_contents(0), expected);
            EXPECT_EQ(written, std::string(expected.size(), kPoison)) << "wrote the mapping";
            EXPECT_EQ(SharedMemoryParameters(output.parameters()),
                      std::make_tuple(std::string(), int64_t{-1}, int64_t{-1}));
          }
          EXPECT_EQ(response.parameters().at("batch_size").int64_param(), n);
        }
      }
    }
  }
}

// Triton's clients leave shared_memory_offset out when it is 0; some send byte_size as uint64.
TEST(KserveSharedMemoryTest, OffsetDefaultsToZeroAndByteSizeMayBeUnsigned) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 9);
  ASSERT_TRUE(Load(*s, load).ok());
  const std::string input = RandomTensor(8 * 6 * 6, DataType::kFloat32, 21);
  const std::string expected = ReferenceOutput(load, input, 1, 6, 6, Layout::kNchw, Layout::kNchw);
  const int64_t bytes = static_cast<int64_t>(input.size());
  ASSERT_EQ(bytes, static_cast<int64_t>(expected.size()));
  // Two regions of one object: "in" at 0, "out" 8192 bytes in; poison everywhere else.
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 16384);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(*s, "in", buffer->key(), 0, 8192).ok());
  ASSERT_TRUE(Register(*s, "out", buffer->key(), 8192, 8192).ok());

  for (bool unsigned_size : {false, true}) {
    SCOPED_TRACE(unsigned_size ? "uint64 byte_size" : "int64 byte_size");
    std::memset(buffer->data(), kPoison, static_cast<size_t>(buffer->size()));
    std::memcpy(buffer->data(), input.data(), input.size());
    ModelInferRequest request = RequestFor("conv", "FP32", {1, 8, 6, 6});
    SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "in", bytes, std::nullopt,
                    unsigned_size);
    SetSharedMemory(OutputParameters(request), "out", bytes, std::nullopt, unsigned_size);
    ModelInferResponse response;
    grpc::Status status = Infer(*s, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(std::string(buffer->data() + 8192, expected.size()), expected);
    EXPECT_EQ(std::string(buffer->data() + 8192 + bytes, 8192 - bytes),
              std::string(8192 - bytes, kPoison));
    EXPECT_EQ(response.raw_output_contents_size(), 0);
    ASSERT_EQ(response.outputs_size(), 1);
    const ParameterMap& echoed = response.outputs(0).parameters();
    // Echoed as sent: no offset parameter appears.
    EXPECT_EQ(SharedMemoryParameters(echoed), std::make_tuple(std::string("out"), bytes, -1));
    ASSERT_EQ(echoed.count(kByteSize), 1u);
    EXPECT_EQ(echoed.at(kByteSize).parameter_choice_case(),
              unsigned_size ? InferParameter::kUint64Param : InferParameter::kInt64Param);
  }
}

TEST(KserveSharedMemoryTest, StreamRequestsWriteTheirOwnRanges) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(16);
  spec.mutable_batching()->set_max_queue_delay_us(5000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 11);
  ASSERT_TRUE(Load(*s, load).ok());

  constexpr int kRequests = 12;
  constexpr int64_t kSlot = 16384;  // >= 3 x 8 x 10 x 10 fp32
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 2 * kRequests * kSlot);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(*s, "shared", buffer->key(), 0, buffer->size()).ok());
  std::memset(buffer->data(), kPoison, static_cast<size_t>(buffer->size()));

  std::vector<ModelInferRequest> requests;
  std::vector<std::string> expected;
  std::vector<int64_t> output_offsets;
  for (int i = 0; i < kRequests; ++i) {
    const int64_t n = 1 + i % 3;
    const std::string input = RandomTensor(n * 8 * 10 * 10, DataType::kFloat32, 500 + i);
    expected.push_back(ReferenceOutput(load, input, n, 10, 10, Layout::kNchw, Layout::kNchw));
    ModelInferRequest request = RequestFor("conv", "FP32", {n, 8, 10, 10});
    request.set_id(absl::StrCat("r", i));
    // Inputs fill the first half of the region, outputs the second, in reverse order; every
    // third request sends its input in the message instead.
    if (i % 3 == 2) {
      request.add_raw_input_contents(input);
    } else {
      std::memcpy(buffer->data() + i * kSlot, input.data(), input.size());
      SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "shared",
                      static_cast<int64_t>(input.size()), i * kSlot);
    }
    output_offsets.push_back((2 * kRequests - 1 - i) * kSlot);
    SetSharedMemory(OutputParameters(request), "shared",
                    static_cast<int64_t>(expected.back().size()), output_offsets.back());
    requests.push_back(std::move(request));
  }
  // One request that fails on the stream without ending it.
  ModelInferRequest unknown = requests[0];
  unknown.set_id("unknown");
  (*unknown.mutable_inputs(0)->mutable_parameters())[kRegion].set_string_param("gone");

  std::unique_ptr<grpc::ClientContext> context = Context();
  auto stream = s->stub->ModelStreamInfer(context.get());
  for (const ModelInferRequest& request : requests) ASSERT_TRUE(stream->Write(request));
  ASSERT_TRUE(stream->Write(unknown));
  ASSERT_TRUE(stream->WritesDone());
  std::map<std::string, ModelInferResponse> responses;
  std::string unknown_error;
  ModelStreamInferResponse message;
  while (stream->Read(&message)) {
    if (message.infer_response().id() == "unknown") {
      unknown_error = message.error_message();
      continue;
    }
    EXPECT_EQ(message.error_message(), "") << message.infer_response().id();
    responses[message.infer_response().id()] = message.infer_response();
  }
  grpc::Status finished = stream->Finish();
  ASSERT_TRUE(finished.ok()) << finished.error_message();

  EXPECT_THAT(unknown_error, HasSubstr("NOT_FOUND"));
  EXPECT_THAT(unknown_error,
              HasSubstr("inputs[0].parameters.shared_memory_region: no shared-memory region "
                        "named 'gone'"));
  ASSERT_EQ(responses.size(), static_cast<size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    SCOPED_TRACE(absl::StrCat("request ", i));
    const ModelInferResponse& response = responses[absl::StrCat("r", i)];
    EXPECT_EQ(response.raw_output_contents_size(), 0);
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(SharedMemoryParameters(response.outputs(0).parameters()),
              SharedMemoryParameters(requests[i].outputs(0).parameters()));
    EXPECT_EQ(response.outputs(0).shape(0), 1 + i % 3);
    EXPECT_EQ(std::string(buffer->data() + output_offsets[i], expected[i].size()), expected[i]);
    // Nothing was written between this output's end and the next slot.
    EXPECT_EQ(std::string(buffer->data() + output_offsets[i] + expected[i].size(),
                          kSlot - expected[i].size()),
              std::string(kSlot - expected[i].size(), kPoison));
  }
}

struct InferRejection {
  std::string what;
  std::function<void(ModelInferRequest&)> mutate;
  grpc::StatusCode code;
  std::vector<std::string> messages;  // each must be in the error message
};

TEST(KserveSharedMemoryTest, EveryModelInferRejectionNamesTheField) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 3);
  ASSERT_TRUE(Load(*s, load).ok());
  constexpr int64_t kRegionSize = 1 << 16;
  constexpr int64_t kOutput = 1 << 15;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, kRegionSize);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(*s, "r", buffer->key(), 0, kRegionSize).ok());
  std::memset(buffer->data(), kPoison, static_cast<size_t>(kRegionSize));

  // 1 x 8 x 6 x 6 fp32: 1152 bytes in and out.
  const std::string input = RandomTensor(8 * 6 * 6, DataType::kFloat32, 1);
  const std::string expected = ReferenceOutput(load, input, 1, 6, 6, Layout::kNchw, Layout::kNchw);
  const int64_t bytes = static_cast<int64_t>(input.size());
  ASSERT_EQ(bytes, 1152);
  std::memcpy(buffer->data(), input.data(), input.size());
  ModelInferRequest good = RequestFor("conv", "FP32", {1, 8, 6, 6});
  SetSharedMemory(*good.mutable_inputs(0)->mutable_parameters(), "r", bytes, 0);
  SetSharedMemory(OutputParameters(good), "r", bytes, kOutput);

  auto in = [](ModelInferRequest& r) -> ParameterMap& {
    return *r.mutable_inputs(0)->mutable_parameters();
  };
  auto out = [](ModelInferRequest& r) -> ParameterMap& { return OutputParameters(r); };
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  const std::vector<InferRejection> cases = {
      {"input region without byte_size",
       [&](auto& r) { in(r).erase(kByteSize); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_byte_size: required with shared_memory_region"}},
      {"input byte_size without region",
       [&](auto& r) { in(r).erase(kRegion); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_region: required with"}},
      {"input offset alone",
       [&](auto& r) {
         in(r).erase(kRegion);
         in(r).erase(kByteSize);
       },
       kInvalid,
       {"inputs[0].parameters.shared_memory_region: required with"}},
      {"input region not a string",
       [&](auto& r) { in(r)[kRegion].set_int64_param(1); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_region: must be a string"}},
      {"input byte_size a string",
       [&](auto& r) { in(r)[kByteSize].set_string_param("1152"); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_byte_size: must be an int64"}},
      {"input byte_size a double",
       [&](auto& r) { in(r)[kByteSize].set_double_param(1152); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_byte_size: must be an int64"}},
      {"input byte_size past INT64_MAX",
       [&](auto& r) { in(r)[kByteSize].set_uint64_param(UINT64_MAX); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_byte_size: 18446744073709551615 is too large"}},
      {"input offset a bool",
       [&](auto& r) { in(r)[kOffset].set_bool_param(true); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_offset: must be an int64"}},
      {"unknown input region",
       [&](auto& r) { in(r)[kRegion].set_string_param("gone"); },
       grpc::StatusCode::NOT_FOUND,
       {"inputs[0].parameters.shared_memory_region: no shared-memory region named 'gone'"}},
      {"input byte_size short of the tensor",
       [&](auto& r) { in(r)[kByteSize].set_int64_param(bytes - 4); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_byte_size: expected 1152 bytes for FP32 [1, 8, 6, 6], "
        "got 1148"}},
      {"input byte_size beyond the tensor",
       [&](auto& r) { in(r)[kByteSize].set_int64_param(bytes + 4); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_byte_size: expected 1152 bytes", "got 1156"}},
      {"input also in raw_input_contents",
       [&](auto& r) { r.add_raw_input_contents(input); },
       kInvalid,
       {"raw_input_contents: must be empty when inputs[0] is in shared memory"}},
      {"input also in contents",
       [&](auto& r) {
         for (int i = 0; i < 8 * 6 * 6; ++i) {
           r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(0.5f);
         }
       },
       kInvalid,
       {"inputs[0].contents: must be unset when inputs[0] is in shared memory"}},
      {"input past the region's end",
       [&](auto& r) { in(r)[kOffset].set_int64_param(kRegionSize - 4); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_offset and shared_memory_byte_size: offset 65532"}},
      {"negative input offset",
       [&](auto& r) { in(r)[kOffset].set_int64_param(-1); },
       kInvalid,
       {"inputs[0].parameters.shared_memory_offset and shared_memory_byte_size: offset -1"}},
      {"output region without byte_size",
       [&](auto& r) { out(r).erase(kByteSize); },
       kInvalid,
       {"outputs[0].parameters.shared_memory_byte_size: required with shared_memory_region"}},
      {"output byte_size without region",
       [&](auto& r) { out(r).erase(kRegion); },
       kInvalid,
       {"outputs[0].parameters.shared_memory_region: required with"}},
      {"output region not a string",
       [&](auto& r) { out(r)[kRegion].set_bool_param(true); },
       kInvalid,
       {"outputs[0].parameters.shared_memory_region: must be a string"}},
      {"output byte_size a string",
       [&](auto& r) { out(r)[kByteSize].set_string_param("x"); },
       kInvalid,
       {"outputs[0].parameters.shared_memory_byte_size: must be an int64"}},
      {"unknown output region",
       [&](auto& r) { out(r)[kRegion].set_string_param("gone"); },
       grpc::StatusCode::NOT_FOUND,
       {"outputs[0].parameters.shared_memory_region: no shared-memory region named 'gone'"}},
      {"output range too small",
       [&](auto& r) { out(r)[kByteSize].set_int64_param(bytes - 1); },
       kInvalid,
       {"outputs[0].parameters", "byte_size 1151", "too small", "the output is 1152 bytes"}},
      {"output past the region's end",
       [&](auto& r) { out(r)[kOffset].set_int64_param(kRegionSize - 1); },
       kInvalid,
       {"outputs[0].parameters.shared_memory_offset and shared_memory_byte_size: offset 65535"}},
      {"output byte_size zero",
       [&](auto& r) { out(r)[kByteSize].set_int64_param(0); },
       kInvalid,
       {"outputs[0].parameters.shared_memory_offset and shared_memory_byte_size: offset",
        "byte_size must be > 0"}},
  };
  for (const InferRejection& c : cases) {
    ModelInferRequest request = good;
    c.mutate(request);
    ModelInferResponse response;
    grpc::Status status = Infer(*s, request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    for (const std::string& message : c.messages) {
      EXPECT_THAT(status.error_message(), HasSubstr(message)) << c.what;
    }
  }
  // None of them wrote an output.
  EXPECT_EQ(std::string(buffer->data() + kOutput, kRegionSize - kOutput),
            std::string(kRegionSize - kOutput, kPoison));
  // The request they were made from is served.
  ModelInferResponse response;
  grpc::Status status = Infer(*s, good, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(std::string(buffer->data() + kOutput, expected.size()), expected);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
}

TEST(KserveSharedMemoryTest, AnInputOverTheLimitIsRefused) {
  ServerOptions options = SharedMemoryServerOptions();
  options.max_input_bytes = 4096;
  std::unique_ptr<KserveServer> s = StartKserveServer(options);
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  ASSERT_TRUE(Load(*s, LoadRequestFor(spec, 3)).ok());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(*s, "r", buffer->key(), 0, 1 << 16).ok());
  // 1 x 8 x 16 x 16 fp32: 8192 bytes.
  ModelInferRequest request = RequestFor("conv", "FP32", {1, 8, 16, 16});
  SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "r", 8192, 0);
  ModelInferResponse response;
  grpc::Status status = Infer(*s, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("inputs[0]"));
  EXPECT_THAT(status.error_message(), HasSubstr("--max_input_bytes"));

  // Within the limit, the same region serves.
  ModelInferRequest small = RequestFor("conv", "FP32", {1, 8, 8, 8});
  SetSharedMemory(*small.mutable_inputs(0)->mutable_parameters(), "r", 2048, 0);
  status = Infer(*s, small, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// Neither tensor travels in a message, so --max_message_bytes bounds neither.
TEST(KserveSharedMemoryTest, TensorsInSharedMemoryAreNotBoundByTheMessageLimit) {
  ServerOptions options = SharedMemoryServerOptions();
  options.max_message_bytes = 64 << 10;
  std::unique_ptr<KserveServer> s = StartKserveServer(options);
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 13);
  ASSERT_TRUE(Load(*s, load).ok());
  // 2 x 8 x 64 x 64 fp32: 256 KiB in and out.
  const std::string input = RandomTensor(2 * 8 * 64 * 64, DataType::kFloat32, 31);
  const std::string expected =
      ReferenceOutput(load, input, 2, 64, 64, Layout::kNchw, Layout::kNchw);
  const int64_t bytes = static_cast<int64_t>(input.size());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 20);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(*s, "big", buffer->key(), 0, buffer->size()).ok());
  std::memcpy(buffer->data(), input.data(), input.size());
  ModelInferRequest request = RequestFor("conv", "FP32", {2, 8, 64, 64});
  SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "big", bytes, 0);

  ModelInferResponse response;
  grpc::Status in_band = Infer(*s, request, &response);
  EXPECT_EQ(in_band.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(in_band.error_message(), HasSubstr("--max_message_bytes"));

  SetSharedMemory(OutputParameters(request), "big", bytes, 512 << 10);
  grpc::Status status = Infer(*s, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(std::string(buffer->data() + (512 << 10), expected.size()), expected);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
}

TEST(KserveSharedMemoryTest, AnObjectThatShrinksFailsTheRequestNotTheServer) {
  std::unique_ptr<KserveServer> s = StartKserveServer(SharedMemoryServerOptions());
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 3);
  ASSERT_TRUE(Load(*s, load).ok());
  constexpr int64_t kSize = 1 << 16;
  constexpr int64_t kShrunk = 1 << 14;
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, kSize);
  ASSERT_NE(buffer, nullptr);
  ASSERT_TRUE(Register(*s, "r", buffer->key(), 0, kSize).ok());
  const std::string input = RandomTensor(8 * 6 * 6, DataType::kFloat32, 41);
  const int64_t bytes = static_cast<int64_t>(input.size());
  std::memcpy(buffer->data(), input.data(), input.size());
  std::memcpy(buffer->data() + kSize / 2, input.data(), input.size());
  {
    const int fd = shm_open(buffer->key().c_str(), O_RDWR, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const int truncated = ftruncate(fd, kShrunk);
    close(fd);
    ASSERT_EQ(truncated, 0) << std::strerror(errno);
  }

  ModelInferRequest beyond = RequestFor("conv", "FP32", {1, 8, 6, 6});
  SetSharedMemory(*beyond.mutable_inputs(0)->mutable_parameters(), "r", bytes, kSize / 2);
  ModelInferResponse response;
  grpc::Status status = Infer(*s, beyond, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("shrank"));

  // An output past the new end fails its request and does not grow the object back.
  ModelInferRequest inside = RequestFor("conv", "FP32", {1, 8, 6, 6});
  SetSharedMemory(*inside.mutable_inputs(0)->mutable_parameters(), "r", bytes, 0);
  ModelInferRequest to_shrunk = inside;
  SetSharedMemory(OutputParameters(to_shrunk), "r", bytes, kSize / 2);
  status = Infer(*s, to_shrunk, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("shrank"));
  struct stat st {};
  {
    const int fd = shm_open(buffer->key().c_str(), O_RDONLY, 0);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    ASSERT_EQ(fstat(fd, &st), 0);
    close(fd);
  }
  EXPECT_EQ(st.st_size, kShrunk);

  // What is left of the object still serves.
  status = Infer(*s, inside, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0),
            ReferenceOutput(load, input, 1, 6, 6, Layout::kNchw, Layout::kNchw));
}

// The three calls need the inference token when the server has one, as ModelInfer does.
TEST(KserveSharedMemoryTest, TheCallsNeedTheInferenceToken) {
  ServerOptions options = SharedMemoryServerOptions();
  options.security.inference_token = "inference-secret-kstest";
  std::unique_ptr<KserveServer> s = StartKserveServer(options);
  ASSERT_NE(s, nullptr);
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 4096);
  ASSERT_NE(buffer, nullptr);
  for (const std::string token : {"", "wrong", "inference-secret-kstest"}) {
    SCOPED_TRACE(absl::StrCat("token '", token, "'"));
    const grpc::StatusCode expected = token == options.security.inference_token
                                          ? grpc::StatusCode::OK
                                          : grpc::StatusCode::UNAUTHENTICATED;
    auto context = [&] {
      std::unique_ptr<grpc::ClientContext> c = Context();
      if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
      return c;
    };
    inference::SystemSharedMemoryRegisterRequest registration;
    registration.set_name("r");
    registration.set_key(buffer->key());
    registration.set_byte_size(4096);
    inference::SystemSharedMemoryRegisterResponse registered;
    EXPECT_EQ(s->stub->SystemSharedMemoryRegister(context().get(), registration, &registered)
                  .error_code(),
              expected);
    inference::SystemSharedMemoryStatusRequest status_request;
    inference::SystemSharedMemoryStatusResponse status_response;
    EXPECT_EQ(s->stub->SystemSharedMemoryStatus(context().get(), status_request, &status_response)
                  .error_code(),
              expected);
    inference::SystemSharedMemoryUnregisterRequest unregistration;
    unregistration.set_name("r");
    inference::SystemSharedMemoryUnregisterResponse unregistered;
    EXPECT_EQ(s->stub->SystemSharedMemoryUnregister(context().get(), unregistration, &unregistered)
                  .error_code(),
              expected);
  }
}

TEST(KserveSharedMemoryTest, OffUnlessTheServerAllowsIt) {
  std::unique_ptr<KserveServer> s = StartKserveServer(TestServerOptions());
  ASSERT_NE(s, nullptr);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 3);
  ASSERT_TRUE(Load(*s, load).ok());
  std::unique_ptr<SharedMemoryBuffer> buffer = NewShmBuffer(kShmPrefix, 1 << 16);
  ASSERT_NE(buffer, nullptr);

  grpc::Status registered = Register(*s, "r", buffer->key(), 0, 1 << 16);
  EXPECT_EQ(registered.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(registered.error_message(), HasSubstr("--allow_shared_memory"));
  inference::SystemSharedMemoryStatusResponse listed;
  grpc::Status status = Status(*s, "", &listed);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("--allow_shared_memory"));
  grpc::Status unregistered = Unregister(*s, "");
  EXPECT_EQ(unregistered.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(unregistered.error_message(), HasSubstr("--allow_shared_memory"));

  const std::string input = RandomTensor(8 * 6 * 6, DataType::kFloat32, 4);
  ModelInferRequest input_in_shm = RequestFor("conv", "FP32", {1, 8, 6, 6});
  SetSharedMemory(*input_in_shm.mutable_inputs(0)->mutable_parameters(), "r", 1152, 0);
  ModelInferResponse response;
  status = Infer(*s, input_in_shm, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("inputs[0].parameters.shared_memory_region"));
  EXPECT_THAT(status.error_message(), HasSubstr("--allow_shared_memory"));

  ModelInferRequest output_in_shm = RequestFor("conv", "FP32", {1, 8, 6, 6});
  output_in_shm.add_raw_input_contents(input);
  SetSharedMemory(OutputParameters(output_in_shm), "r", 1152, 0);
  status = Infer(*s, output_in_shm, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("outputs[0].parameters.shared_memory_region"));
  EXPECT_THAT(status.error_message(), HasSubstr("--allow_shared_memory"));

  // On a stream, the same answer as the request's error message.
  {
    std::unique_ptr<grpc::ClientContext> context = Context();
    auto stream = s->stub->ModelStreamInfer(context.get());
    ASSERT_TRUE(stream->Write(output_in_shm));
    ASSERT_TRUE(stream->WritesDone());
    ModelStreamInferResponse message;
    ASSERT_TRUE(stream->Read(&message));
    EXPECT_THAT(message.error_message(), HasSubstr("FAILED_PRECONDITION"));
    EXPECT_THAT(message.error_message(), HasSubstr("--allow_shared_memory"));
    EXPECT_FALSE(stream->Read(&message));
    EXPECT_TRUE(stream->Finish().ok());
  }

  // Without the parameters, the server serves as usual.
  output_in_shm.mutable_outputs(0)->mutable_parameters()->clear();
  status = Infer(*s, output_in_shm, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0),
            ReferenceOutput(load, input, 1, 6, 6, Layout::kNchw, Layout::kNchw));
}

// ModelInfer is served on the server's completion queues (server/unary_call_queues.h), which
// learn of a cancellation from gRPC's done notification: a call the client cancels while it waits
// for company is answered CANCELLED and leaves the layer's queue long before its launch.
TEST(KserveSharedMemoryTest, CancelledModelInferLeavesTheQueueBeforeLaunch) {
  std::unique_ptr<KserveServer> s = StartKserveServer(TestServerOptions());
  ASSERT_NE(s, nullptr);
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(64);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  ASSERT_TRUE(Load(*s, LoadRequestFor(spec, 5)).ok());
  auto queued = [&s] {
    std::optional<LayerSnapshot> layer = s->server->core().FindLayer("conv");
    return layer.has_value() ? layer->queued_requests : -1;
  };
  auto wait_queued = [&queued](int64_t count) {
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (queued() != count && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
    return queued() == count;
  };

  ModelInferRequest request = RequestFor("conv", "FP32", {1, 8, 8, 8});
  request.add_raw_input_contents(RandomTensor(8 * 8 * 8, DataType::kFloat32, 6));
  std::unique_ptr<grpc::ClientContext> context = Context();
  ModelInferResponse response;
  std::promise<grpc::Status> answered;
  s->stub->async()->ModelInfer(context.get(), &request, &response,
                               [&answered](grpc::Status status) { answered.set_value(status); });
  ASSERT_TRUE(wait_queued(1));
  const absl::Time start = absl::Now();
  context->TryCancel();
  EXPECT_EQ(answered.get_future().get().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(wait_queued(0));
  EXPECT_LT(absl::Now() - start, absl::Seconds(9)) << "left only when the delay launched it";
}

}  // namespace
}  // namespace convserve
