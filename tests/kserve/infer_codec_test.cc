// The KServe v2 <-> serving-core translation rules (server/kserve/infer_codec.h), without a
// server: what each request field becomes, and which field each error names.
#include "server/kserve/infer_codec.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace convserve::kserve {
namespace {

using inference::ModelInferRequest;
using ::testing::HasSubstr;

// A valid FP32 request for `model` with an [N, C, H, W] (or NHWC-ordered) shape and raw data.
ModelInferRequest RawRequest(const std::vector<int64_t>& shape,
                             const std::string& datatype = "FP32", int element_bytes = 4) {
  ModelInferRequest request;
  request.set_model_name("conv");
  request.set_id("req-1");
  auto& input = *request.add_inputs();
  input.set_name("input");
  input.set_datatype(datatype);
  int64_t elements = 1;
  for (int64_t dim : shape) {
    input.add_shape(dim);
    elements *= dim;
  }
  std::string data(static_cast<size_t>(elements * element_bytes), '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7);
  request.add_raw_input_contents(std::move(data));
  return request;
}

absl::Status Decode(ModelInferRequest& request, InferenceRequest& out) {
  return DecodeInferRequest(request, absl::InfiniteFuture(), out);
}

void ExpectInvalid(ModelInferRequest request, const std::string& field) {
  InferenceRequest out;
  const absl::Status status = Decode(request, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(field + ":")) << status;
}

void SetParameter(google::protobuf::Map<std::string, inference::InferParameter>& parameters,
                  const std::string& name, const std::string& value) {
  parameters[name].set_string_param(value);
}

TEST(InferCodecTest, RawFp32MovesBytesAndKeepsNchw) {
  ModelInferRequest request = RawRequest({2, 3, 4, 5});
  const std::string expected = request.raw_input_contents(0);
  InferenceRequest out;
  ASSERT_TRUE(Decode(request, out).ok());
  EXPECT_EQ(out.layer, "conv");
  EXPECT_EQ(out.api, Api::kKserve);
  EXPECT_EQ(out.dtype, DataType::kFloat32);
  EXPECT_EQ(out.input_layout, Layout::kNchw);
  EXPECT_EQ(out.output_layout, Layout::kNchw);
  EXPECT_EQ(std::vector<int64_t>(out.shape, out.shape + 4), (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(out.input.ToString(), expected);
  EXPECT_EQ(out.deadline, absl::InfiniteFuture());
}

TEST(InferCodecTest, Fp32ContentsBecomeLittleEndianBytes) {
  ModelInferRequest request = RawRequest({1, 2, 1, 2});
  request.clear_raw_input_contents();
  auto* contents = request.mutable_inputs(0)->mutable_contents();
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 1e-3f};
  for (float v : values) contents->add_fp32_contents(v);
  InferenceRequest out;
  ASSERT_TRUE(Decode(request, out).ok());
  const std::string input = out.input.ToString();
  ASSERT_EQ(input.size(), values.size() * 4);
  EXPECT_EQ(std::memcmp(input.data(), values.data(), input.size()), 0);
}

TEST(InferCodecTest, HalfAndBf16TakeTwoBytesPerElement) {
  for (const char* datatype : {"FP16", "BF16"}) {
    ModelInferRequest request = RawRequest({1, 2, 3, 3}, datatype, 2);
    InferenceRequest out;
    ASSERT_TRUE(Decode(request, out).ok()) << datatype;
    EXPECT_EQ(out.dtype,
              std::string(datatype) == "FP16" ? DataType::kFloat16 : DataType::kBFloat16);
    EXPECT_EQ(out.input.size(), 36u);
  }
}

TEST(InferCodecTest, NhwcShapeIsTheTensorsRowMajorShape) {
  ModelInferRequest request = RawRequest({2, 4, 5, 3});  // N, H, W, C
  SetParameter(*request.mutable_parameters(), "layout", "nhwc");
  InferenceRequest out;
  ASSERT_TRUE(Decode(request, out).ok());
  EXPECT_EQ(out.input_layout, Layout::kNhwc);
  EXPECT_EQ(out.output_layout, Layout::kNhwc);
  EXPECT_EQ(std::vector<int64_t>(out.shape, out.shape + 4), (std::vector<int64_t>{2, 3, 4, 5}));
}

TEST(InferCodecTest, MostSpecificLayoutParameterWins) {
  {  // input-level NHWC; the output follows the input
    ModelInferRequest request = RawRequest({1, 4, 4, 3});
    SetParameter(*request.mutable_inputs(0)->mutable_parameters(), "layout", "NHWC");
    InferenceRequest out;
    ASSERT_TRUE(Decode(request, out).ok());
    EXPECT_EQ(out.input_layout, Layout::kNhwc);
    EXPECT_EQ(out.output_layout, Layout::kNhwc);
  }
  {  // request NHWC, input overrides to NCHW, output keeps the request's NHWC
    ModelInferRequest request = RawRequest({1, 3, 4, 4});
    SetParameter(*request.mutable_parameters(), "layout", "NHWC");
    SetParameter(*request.mutable_inputs(0)->mutable_parameters(), "layout", "NCHW");
    InferenceRequest out;
    ASSERT_TRUE(Decode(request, out).ok());
    EXPECT_EQ(out.input_layout, Layout::kNchw);
    EXPECT_EQ(out.output_layout, Layout::kNhwc);
  }
  {  // a requested output's own layout
    ModelInferRequest request = RawRequest({1, 3, 4, 4});
    auto& output = *request.add_outputs();
    output.set_name("output");
    SetParameter(*output.mutable_parameters(), "layout", "NHWC");
    InferenceRequest out;
    ASSERT_TRUE(Decode(request, out).ok());
    EXPECT_EQ(out.input_layout, Layout::kNchw);
    EXPECT_EQ(out.output_layout, Layout::kNhwc);
  }
}

TEST(InferCodecTest, TimeoutParameterBoundsTheDeadline) {
  ModelInferRequest request = RawRequest({1, 1, 1, 1});
  (*request.mutable_parameters())["timeout"].set_int64_param(250000);
  InferenceRequest out;
  ASSERT_TRUE(Decode(request, out).ok());
  EXPECT_EQ(out.deadline, out.accepted_at + absl::Milliseconds(250));

  ModelInferRequest sooner = RawRequest({1, 1, 1, 1});
  (*sooner.mutable_parameters())["timeout"].set_int64_param(250000);
  const absl::Time grpc_deadline = absl::Now() + absl::Milliseconds(10);
  InferenceRequest out2;
  ASSERT_TRUE(DecodeInferRequest(sooner, grpc_deadline, out2).ok());
  EXPECT_EQ(out2.deadline, grpc_deadline);
}

TEST(InferCodecTest, ErrorsNameTheField) {
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.clear_model_name();
    ExpectInvalid(r, "model_name");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.add_inputs()->set_name("extra");
    ExpectInvalid(r, "inputs");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.mutable_inputs(0)->set_name("x");
    ExpectInvalid(r, "inputs[0].name");
  }
  ExpectInvalid(RawRequest({1, 3, 4, 4}, "INT8", 1), "inputs[0].datatype");
  ExpectInvalid(RawRequest({3, 4, 4}), "inputs[0].shape");
  ExpectInvalid(RawRequest({1, 3, 0, 4}), "inputs[0].shape[2]");
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.mutable_raw_input_contents(0)->pop_back();
    ExpectInvalid(r, "raw_input_contents[0]");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.add_raw_input_contents("x");
    ExpectInvalid(r, "raw_input_contents");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
    ExpectInvalid(r, "inputs[0].contents");
  }
  {
    ModelInferRequest r = RawRequest({1, 1, 1, 2}, "FP16", 2);
    r.clear_raw_input_contents();
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(2.0f);
    ExpectInvalid(r, "inputs[0].contents");
  }
  {
    ModelInferRequest r = RawRequest({1, 1, 1, 2});
    r.clear_raw_input_contents();
    r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(1.0f);
    ExpectInvalid(r, "inputs[0].contents.fp32_contents");
  }
  {
    ModelInferRequest r = RawRequest({1, 1, 1, 2});
    r.clear_raw_input_contents();
    ExpectInvalid(r, "inputs[0]");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    SetParameter(*r.mutable_parameters(), "layout", "CHWN");
    ExpectInvalid(r, "parameters.layout");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    (*r.mutable_inputs(0)->mutable_parameters())["layout"].set_int64_param(1);
    ExpectInvalid(r, "inputs[0].parameters.layout");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.add_outputs()->set_name("logits");
    ExpectInvalid(r, "outputs[0].name");
  }
  {
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    (*r.mutable_parameters())["timeout"].set_int64_param(-5);
    ExpectInvalid(r, "parameters.timeout");
  }
  {
    // A shape whose byte count overflows int64 (2^62 elements of 4 bytes), set on a small
    // request: the helper cannot build data of that size.
    ModelInferRequest r = RawRequest({1, 3, 4, 4});
    r.mutable_inputs(0)->clear_shape();
    for (int64_t dim : {int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 20, int64_t{4}}) {
      r.mutable_inputs(0)->add_shape(dim);
    }
    r.mutable_raw_input_contents(0)->clear();
    ExpectInvalid(r, "inputs[0].shape");
  }
}

TEST(InferCodecTest, UnknownVersionIsNotFound) {
  ModelInferRequest r = RawRequest({1, 1, 1, 1});
  r.set_model_version("2");
  InferenceRequest out;
  const absl::Status status = Decode(r, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("'conv'"));
  r.set_model_version("1");
  EXPECT_TRUE(Decode(r, out).ok());
}

TEST(InferCodecTest, CoreMessagesAreRenamedToThisApisFields) {
  const absl::Status channels =
      absl::InvalidArgumentError("input.shape[1] (C) is 3 but layer 'conv' has in_channels 4");
  EXPECT_EQ(InKserveTerms(channels, Layout::kNchw).message(),
            "inputs[0].shape[1] (C) is 3 but layer 'conv' has in_channels 4");
  EXPECT_EQ(InKserveTerms(channels, Layout::kNhwc).message(),
            "inputs[0].shape[3] (C) is 3 but layer 'conv' has in_channels 4");
  EXPECT_EQ(InKserveTerms(absl::InvalidArgumentError("input.dtype is fp16 but ..."), Layout::kNchw)
                .message(),
            "inputs[0].datatype is fp16 but ...");
  EXPECT_EQ(InKserveTerms(absl::InvalidArgumentError("input.shape: output is empty"), Layout::kNchw)
                .message(),
            "inputs[0].shape: output is empty");
  const absl::Status other = absl::ResourceExhaustedError("input is 9 bytes, over the limit");
  EXPECT_EQ(InKserveTerms(other, Layout::kNchw), other);
  const absl::Status unrelated = absl::InvalidArgumentError("something else");
  EXPECT_EQ(InKserveTerms(unrelated, Layout::kNhwc), unrelated);
}

TEST(InferCodecTest, ResponseCarriesShapeLayoutAndTiming) {
  InferenceResult result;
  result.shape[0] = 2;
  result.shape[1] = 8;
  result.shape[2] = 3;
  result.shape[3] = 5;
  result.dtype = DataType::kFloat16;
  result.layout = Layout::kNhwc;
  result.output = std::string(2 * 8 * 3 * 5 * 2, 'x');
  result.batch_size = 6;
  result.kernel_config = "cpu_reference";
  inference::ModelInferResponse response;
  EncodeInferResponse("conv", "id-9", result, response);
  EXPECT_EQ(response.model_name(), "conv");
  EXPECT_EQ(response.model_version(), "1");
  EXPECT_EQ(response.id(), "id-9");
  ASSERT_EQ(response.outputs_size(), 1);
  EXPECT_EQ(response.outputs(0).name(), "output");
  EXPECT_EQ(response.outputs(0).datatype(), "FP16");
  EXPECT_EQ(
      std::vector<int64_t>(response.outputs(0).shape().begin(), response.outputs(0).shape().end()),
      (std::vector<int64_t>{2, 3, 5, 8}));
  ASSERT_EQ(response.raw_output_contents_size(), 1);
  EXPECT_EQ(response.raw_output_contents(0), result.output);
  EXPECT_EQ(response.parameters().at("batch_size").int64_param(), 6);
  EXPECT_EQ(response.parameters().at("kernel_config").string_param(), "cpu_reference");
}

TEST(InferCodecTest, MetadataMarksVaryingDimensions) {
  LayerSnapshot layer;
  layer.name = "conv";
  layer.params.in_channels = 3;
  layer.params.out_channels = 16;
  layer.params.dtype = DataType::kBFloat16;
  inference::ModelMetadataResponse metadata;
  EncodeModelMetadata(layer, metadata);
  EXPECT_EQ(metadata.name(), "conv");
  ASSERT_EQ(metadata.versions_size(), 1);
  EXPECT_EQ(metadata.versions(0), "1");
  ASSERT_EQ(metadata.inputs_size(), 1);
  EXPECT_EQ(metadata.inputs(0).name(), "input");
  EXPECT_EQ(metadata.inputs(0).datatype(), "BF16");
  EXPECT_EQ(
      std::vector<int64_t>(metadata.inputs(0).shape().begin(), metadata.inputs(0).shape().end()),
      (std::vector<int64_t>{-1, 3, -1, -1}));
  ASSERT_EQ(metadata.outputs_size(), 1);
  EXPECT_EQ(metadata.outputs(0).name(), "output");
  EXPECT_EQ(
      std::vector<int64_t>(metadata.outputs(0).shape().begin(), metadata.outputs(0).shape().end()),
      (std::vector<int64_t>{-1, 16, -1, -1}));
}

// ---- Shared memory (Triton's system shared-memory extension) ----

// A POSIX shared-memory object of `size` zero bytes, unique in this process, removed on
// destruction.
class ShmObject {
 public:
  explicit ShmObject(int64_t size) {
    static int next = 0;
    key_ = "/convserve-kstest-codec-" + std::to_string(getpid()) + "-" + std::to_string(next++);
    shm_unlink(key_.c_str());
    fd_ = shm_open(key_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    EXPECT_GE(fd_, 0) << key_ << ": " << std::strerror(errno);
    EXPECT_EQ(ftruncate(fd_, size), 0) << std::strerror(errno);
  }
  ~ShmObject() {
    close(fd_);
    shm_unlink(key_.c_str());
  }
  const std::string& key() const { return key_; }
  void Put(int64_t offset, const std::string& bytes) const {
    EXPECT_EQ(pwrite(fd_, bytes.data(), bytes.size(), offset), static_cast<ssize_t>(bytes.size()));
  }
  std::string Get(int64_t offset, int64_t size) const {
    std::string out(static_cast<size_t>(size), '\0');
    EXPECT_EQ(pread(fd_, out.data(), out.size(), offset), static_cast<ssize_t>(size));
    return out;
  }

 private:
  std::string key_;
  int fd_ = -1;
};

void SetSharedMemory(ParameterMap& parameters, const std::string& region, int64_t byte_size,
                     int64_t offset) {
  parameters["shared_memory_region"].set_string_param(region);
  parameters["shared_memory_byte_size"].set_int64_param(byte_size);
  parameters["shared_memory_offset"].set_int64_param(offset);
}

// A registry with region "r": 4096 bytes, 64 bytes into a fresh object.
class SharedMemoryCodecTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(registry_.Register({"r", object_.key(), 64, 4096}).ok()); }
  absl::Status Decode(ModelInferRequest& request, InferenceRequest& out) {
    return DecodeInferRequest(request, absl::InfiniteFuture(), out, &registry_);
  }

  ShmObject object_{8192};
  SharedMemoryRegistry registry_{1 << 20};
};

TEST_F(SharedMemoryCodecTest, InputIsReadFromTheRegion) {
  ModelInferRequest request = RawRequest({1, 2, 3, 4});
  const std::string data = request.raw_input_contents(0);
  request.clear_raw_input_contents();
  object_.Put(64 + 100, data);
  SetSharedMemory(*request.mutable_inputs(0)->mutable_parameters(), "r",
                  static_cast<int64_t>(data.size()), 100);
  InferenceRequest out;
  const absl::Status status = Decode(request, out);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(out.input.ToString(), data);
  EXPECT_EQ(out.output_sink, nullptr);
  EXPECT_TRUE(OutputSharedMemoryParameters(request).empty());
}

TEST_F(SharedMemoryCodecTest, OutputBecomesASinkOnTheRange) {
  ModelInferRequest request = RawRequest({1, 2, 3, 4});
  auto& output = *request.add_outputs();
  output.set_name("output");
  SetParameter(*output.mutable_parameters(), "layout", "NHWC");
  SetSharedMemory(*output.mutable_parameters(), "r", 200, 1000);
  InferenceRequest out;
  const absl::Status status = Decode(request, out);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(out.output_layout, Layout::kNhwc);
  ASSERT_NE(out.output_sink, nullptr);
  EXPECT_EQ(out.output_sink->capacity(), 200);
  EXPECT_THAT(out.output_sink->Describe(), HasSubstr("outputs[0].parameters"));
  EXPECT_THAT(out.output_sink->Describe(), HasSubstr("region 'r'"));
  const std::string bytes(96, 'o');
  ASSERT_TRUE(out.output_sink->Write(bytes.data(), 96).ok());
  EXPECT_EQ(object_.Get(64 + 1000, 96), bytes);
  EXPECT_EQ(object_.Get(64 + 1096, 8), std::string(8, '\0'));

  // The response's output carries the three parameters back (and the layout), nothing raw.
  const ParameterMap echoed = OutputSharedMemoryParameters(request);
  EXPECT_EQ(echoed.size(), 3u);
  EXPECT_EQ(echoed.count("layout"), 0u);
  InferenceResult result;
  for (int i = 0; i < 4; ++i) result.shape[i] = 1 + i;
  result.layout = Layout::kNhwc;
  inference::ModelInferResponse response;
  EncodeInferResponse("conv", "id", result, response, echoed);
  EXPECT_EQ(response.raw_output_contents_size(), 0);
  ASSERT_EQ(response.outputs_size(), 1);
  const auto& parameters = response.outputs(0).parameters();
  EXPECT_EQ(parameters.at("shared_memory_region").string_param(), "r");
  EXPECT_EQ(parameters.at("shared_memory_byte_size").int64_param(), 200);
  EXPECT_EQ(parameters.at("shared_memory_offset").int64_param(), 1000);
  EXPECT_EQ(parameters.at("layout").string_param(), "NHWC");
  inference::ModelInferResponse fields;
  EXPECT_EQ(EncodeInferResponseFields("conv", "id", result, fields, echoed), "");
  EXPECT_EQ(fields.raw_output_contents_size(), 0);
}

// Of several requested outputs (all "output"), the last decides, for the sink and for what the
// response echoes alike.
TEST_F(SharedMemoryCodecTest, TheLastRequestedOutputDecides) {
  for (bool last_in_shm : {false, true}) {
    ModelInferRequest request = RawRequest({1, 2, 3, 4});
    for (bool in_shm : {!last_in_shm, last_in_shm}) {
      auto& output = *request.add_outputs();
      output.set_name("output");
      if (in_shm) SetSharedMemory(*output.mutable_parameters(), "r", 200, 0);
    }
    InferenceRequest out;
    ASSERT_TRUE(Decode(request, out).ok());
    EXPECT_EQ(out.output_sink != nullptr, last_in_shm);
    EXPECT_EQ(OutputSharedMemoryParameters(request).empty(), !last_in_shm);
  }
}

TEST_F(SharedMemoryCodecTest, RejectionsNameTheParameter) {
  auto expect = [&](ModelInferRequest request, absl::StatusCode code, const std::string& text) {
    InferenceRequest out;
    const absl::Status status = Decode(request, out);
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(text)) << status;
  };
  ModelInferRequest good = RawRequest({1, 2, 3, 4});
  const int64_t bytes = static_cast<int64_t>(good.raw_input_contents(0).size());
  good.clear_raw_input_contents();
  SetSharedMemory(*good.mutable_inputs(0)->mutable_parameters(), "r", bytes, 0);
  {
    InferenceRequest out;
    ASSERT_TRUE(Decode(good, out).ok());
  }
  {
    ModelInferRequest r = good;
    r.mutable_inputs(0)->mutable_parameters()->erase("shared_memory_byte_size");
    expect(r, absl::StatusCode::kInvalidArgument, "inputs[0].parameters.shared_memory_byte_size:");
  }
  {
    ModelInferRequest r = good;
    r.mutable_inputs(0)->mutable_parameters()->erase("shared_memory_region");
    expect(r, absl::StatusCode::kInvalidArgument, "inputs[0].parameters.shared_memory_region:");
  }
  {
    ModelInferRequest r = good;
    (*r.mutable_inputs(0)->mutable_parameters())["shared_memory_byte_size"].set_uint64_param(
        static_cast<uint64_t>(bytes));
    InferenceRequest out;
    EXPECT_TRUE(Decode(r, out).ok()) << "uint64 byte_size";
  }
  {
    ModelInferRequest r = good;
    (*r.mutable_inputs(0)->mutable_parameters())["shared_memory_region"].set_string_param("x");
    expect(r, absl::StatusCode::kNotFound, "inputs[0].parameters.shared_memory_region:");
  }
  {
    ModelInferRequest r = good;
    (*r.mutable_inputs(0)->mutable_parameters())["shared_memory_byte_size"].set_int64_param(bytes +
                                                                                            2);
    expect(r, absl::StatusCode::kInvalidArgument, "inputs[0].parameters.shared_memory_byte_size:");
  }
  {
    ModelInferRequest r = good;
    (*r.mutable_inputs(0)->mutable_parameters())["shared_memory_offset"].set_int64_param(4001);
    expect(r, absl::StatusCode::kInvalidArgument,
           "inputs[0].parameters.shared_memory_offset and shared_memory_byte_size:");
  }
  {
    ModelInferRequest r = good;
    r.add_raw_input_contents(std::string(static_cast<size_t>(bytes), '\0'));
    expect(r, absl::StatusCode::kInvalidArgument, "raw_input_contents:");
  }
  {
    ModelInferRequest r = good;
    for (int64_t i = 0; i < bytes / 4; ++i) {
      r.mutable_inputs(0)->mutable_contents()->add_fp32_contents(0);
    }
    expect(r, absl::StatusCode::kInvalidArgument, "inputs[0].contents:");
  }
  {
    SharedMemoryRegistry small(bytes - 1);
    ASSERT_TRUE(small.Register({"r", object_.key(), 0, 4096}).ok());
    ModelInferRequest r = good;
    InferenceRequest out;
    const absl::Status status = DecodeInferRequest(r, absl::InfiniteFuture(), out, &small);
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("--max_input_bytes"));
  }
}

TEST(InferCodecTest, SharedMemoryWithoutARegistryIsFailedPrecondition) {
  ModelInferRequest input = RawRequest({1, 2, 3, 4});
  input.clear_raw_input_contents();
  SetSharedMemory(*input.mutable_inputs(0)->mutable_parameters(), "r", 96, 0);
  ModelInferRequest output = RawRequest({1, 2, 3, 4});
  output.add_outputs()->set_name("output");
  SetSharedMemory(*output.mutable_outputs(0)->mutable_parameters(), "r", 96, 0);
  for (auto& [request, field] : std::vector<std::pair<ModelInferRequest, std::string>>{
           {input, "inputs[0]."}, {output, "outputs[0]."}}) {
    InferenceRequest out;
    const absl::Status status = Decode(request, out);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr(field + "parameters.shared_memory_region is set"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("--allow_shared_memory"));
  }
}

}  // namespace
}  // namespace convserve::kserve
