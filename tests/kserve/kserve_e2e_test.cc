// End-to-end tests of the KServe v2 API against the real convserve-server (CPU backend) run as
// a subprocess: every RPC, results against the fp64 CPU reference by relative L2 error, raw and
// fp32_contents tensors, NHWC through the layout parameter, errors by code and message, and
// many requests in flight on one ModelStreamInfer stream. Layers are loaded through the native
// API, as an operator would.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/wire_enums.h"
#include "convserve/v1/conv2d.grpc.pb.h"
#include "kernels/conv_problem.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "tests/e2e/server_process.h"
#include "tests/metrics/http_get.h"

namespace convserve {
namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;
using ::testing::HasSubstr;

constexpr int64_t kMaxInputBytes = 256 * 1024;  // the server's --max_input_bytes

// A layer this suite loads, with its weights kept to compute the reference.
struct TestLayer {
  std::string name;
  ConvParams params;
  std::string weights;  // OIHW, params.dtype
  std::string bias;     // [K], params.dtype; empty without bias
  double tolerance;     // relative L2 error allowed for its dtype
};

std::string TailOf(const std::string& log) {
  return log.size() > 4000 ? log.substr(log.size() - 4000) : log;
}

std::mt19937& Rng() {
  static std::mt19937 rng(std::random_device{}());
  return rng;
}

// `count` uniform values in [-1, 1] stored as `dtype`.
std::string RandomTensor(DataType dtype, int64_t count) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::string data(static_cast<size_t>(count * DataTypeSize(dtype)), '\0');
  for (int64_t i = 0; i < count; ++i) StoreFromDouble(dtype, data.data(), i, dist(Rng()));
  return data;
}

const char* KserveDatatype(DataType dtype) {
  return dtype == DataType::kFloat32 ? "FP32" : dtype == DataType::kFloat16 ? "FP16" : "BF16";
}

class KserveE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ServerProcessOptions options;
    options.binary = CONVSERVE_SERVER_BINARY;
    options.args = {absl::StrCat("--max_input_bytes=", kMaxInputBytes)};
    absl::StatusOr<std::unique_ptr<ServerProcess>> started = ServerProcess::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = started->release();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));

    layers_ = new std::map<std::string, TestLayer>();
    ConvParams fp32;  // 3x3, padding 1, bias + ReLU, exact FP32 arithmetic
    fp32.in_channels = 4;
    fp32.out_channels = 8;
    fp32.kernel_h = fp32.kernel_w = 3;
    fp32.pad_h = fp32.pad_w = 1;
    fp32.has_bias = true;
    fp32.activation = Activation::kRelu;
    fp32.fp32_math = Fp32Math::kExact;
    Load("k_fp32", fp32, 1e-5);
    ConvParams fp16;  // stride 2, asymmetric kernel, bias
    fp16.in_channels = 6;
    fp16.out_channels = 5;
    fp16.kernel_h = 3;
    fp16.kernel_w = 2;
    fp16.stride_h = fp16.stride_w = 2;
    fp16.pad_h = 1;
    fp16.has_bias = true;
    fp16.dtype = DataType::kFloat16;
    Load("k_fp16", fp16, 2e-3);
    ConvParams bf16;  // grouped 1x1 with dilation irrelevant, no bias, SiLU
    bf16.in_channels = 4;
    bf16.out_channels = 6;
    bf16.kernel_h = bf16.kernel_w = 1;
    bf16.groups = 2;
    bf16.activation = Activation::kSilu;
    bf16.dtype = DataType::kBFloat16;
    Load("k_bf16", bf16, 1e-2);
  }

  static void TearDownTestSuite() {
    delete channel_;
    delete layers_;
    delete server_;  // kills the server
    channel_ = nullptr;
    layers_ = nullptr;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(channel_ != nullptr && layers_ != nullptr && layers_->size() == 3)
        << "the server did not start or a layer did not load";
  }

  void TearDown() override {
    if (HasFailure() && server_ != nullptr) {
      std::printf("--- convserve-server log (tail) ---\n%s\n", TailOf(server_->Log()).c_str());
    }
  }

  static void Load(const std::string& name, const ConvParams& params, double tolerance) {
    TestLayer layer{name, params, RandomTensor(params.dtype, params.weight_elements()),
                    params.has_bias ? RandomTensor(params.dtype, params.out_channels) : "",
                    tolerance};
    v1::LoadLayerRequest request;
    v1::LayerSpec& spec = *request.mutable_spec();
    spec.set_name(name);
    spec.set_in_channels(params.in_channels);
    spec.set_out_channels(params.out_channels);
    spec.mutable_kernel()->set_h(params.kernel_h);
    spec.mutable_kernel()->set_w(params.kernel_w);
    spec.mutable_stride()->set_h(params.stride_h);
    spec.mutable_stride()->set_w(params.stride_w);
    spec.mutable_padding()->set_h(params.pad_h);
    spec.mutable_padding()->set_w(params.pad_w);
    spec.mutable_dilation()->set_h(params.dilation_h);
    spec.mutable_dilation()->set_w(params.dilation_w);
    spec.set_groups(params.groups);
    spec.set_dtype(DataTypeToProto(params.dtype));
    if (params.dtype == DataType::kFloat32 && params.fp32_math == Fp32Math::kExact) {
      spec.set_precision(v1::PRECISION_EXACT_FP32);
    }
    spec.set_has_bias(params.has_bias);
    spec.set_activation(params.activation == Activation::kRelu   ? v1::ACTIVATION_RELU
                        : params.activation == Activation::kSilu ? v1::ACTIVATION_SILU
                                                                 : v1::ACTIVATION_NONE);
    request.set_weights(layer.weights);
    request.set_bias(layer.bias);
    auto stub = v1::Conv2d::NewStub(*channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    v1::LoadLayerResponse response;
    const grpc::Status status = stub->LoadLayer(&context, request, &response);
    ASSERT_TRUE(status.ok()) << name << ": " << status.error_message();
    (*layers_)[name] = std::move(layer);
  }

  static std::unique_ptr<GRPCInferenceService::Stub> Stub() {
    return GRPCInferenceService::NewStub(*channel_);
  }

  static void SetDeadline(grpc::ClientContext& context, int seconds = 120) {
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  }

  // A request for `layer` with a random [n, C, h, w] input in `layout`; the NCHW-ordered
  // shape and the raw input are kept in `case_out` for the reference.
  struct Case {
    std::string layer;
    ConvProblem problem;
    std::string input;  // problem.input_layout order
  };
  static ModelInferRequest MakeRequest(const std::string& layer_name, int64_t n, int64_t h,
                                       int64_t w, Layout layout, Case& c,
                                       const std::string& id = "") {
    const TestLayer& layer = layers_->at(layer_name);
    c.layer = layer_name;
    c.problem.params = layer.params;
    c.problem.batch = n;
    c.problem.height = h;
    c.problem.width = w;
    c.problem.input_layout = c.problem.output_layout = layout;
    c.input = RandomTensor(layer.params.dtype, c.problem.input_elements());
    ModelInferRequest request;
    request.set_model_name(layer_name);
    request.set_id(id);
    auto& input = *request.add_inputs();
    input.set_name("input");
    input.set_datatype(KserveDatatype(layer.params.dtype));
    const int64_t channels = layer.params.in_channels;
    const std::vector<int64_t> shape = layout == Layout::kNhwc
                                           ? std::vector<int64_t>{n, h, w, channels}
                                           : std::vector<int64_t>{n, channels, h, w};
    for (int64_t dim : shape) input.add_shape(dim);
    if (layout == Layout::kNhwc) (*request.mutable_parameters())["layout"].set_string_param("NHWC");
    request.add_raw_input_contents(c.input);
    return request;
  }

  // Checks `response` against the fp64 reference of `c`: name, datatype, row-major shape in
  // the output layout, and relative L2 error within the layer's tolerance.
  static void ExpectMatchesReference(const Case& c, const ModelInferResponse& response) {
    const TestLayer& layer = layers_->at(c.layer);
    const ConvProblem& p = c.problem;
    EXPECT_EQ(response.model_name(), c.layer);
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).name(), "output");
    EXPECT_EQ(response.outputs(0).datatype(), KserveDatatype(layer.params.dtype));
    const int64_t k = p.params.out_channels, oh = p.out_height(), ow = p.out_width();
    const std::vector<int64_t> expected_shape = p.output_layout == Layout::kNhwc
                                                    ? std::vector<int64_t>{p.batch, oh, ow, k}
                                                    : std::vector<int64_t>{p.batch, k, oh, ow};
    EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(),
                                   response.outputs(0).shape().end()),
              expected_shape);
    ASSERT_EQ(response.raw_output_contents_size(), 1);
    const std::string& out = response.raw_output_contents(0);
    ASSERT_EQ(static_cast<int64_t>(out.size()), p.output_bytes());

    const std::vector<double> reference =
        ReferenceConv2dDouble(p, c.input.data(), layer.weights.data(),
                              layer.bias.empty() ? nullptr : layer.bias.data(), 1);
    double err2 = 0.0, ref2 = 0.0;
    for (int64_t n = 0; n < p.batch; ++n) {
      for (int64_t kk = 0; kk < k; ++kk) {
        for (int64_t y = 0; y < oh; ++y) {
          for (int64_t x = 0; x < ow; ++x) {
            const double want = reference[((n * k + kk) * oh + y) * ow + x];
            const double got = LoadAsDouble(p.params.dtype, out.data(),
                                            TensorOffset(p.output_layout, k, oh, ow, n, kk, y, x));
            err2 += (got - want) * (got - want);
            ref2 += want * want;
          }
        }
      }
    }
    ASSERT_GT(ref2, 0.0);
    EXPECT_LT(std::sqrt(err2 / ref2), layer.tolerance) << c.layer << " " << p.ToString();
  }

  static ModelInferResponse InferOk(const ModelInferRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context);
    ModelInferResponse response;
    const grpc::Status status = Stub()->ModelInfer(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
    return response;
  }

  static grpc::Status InferStatus(const ModelInferRequest& request) {
    grpc::ClientContext context;
    SetDeadline(context);
    ModelInferResponse response;
    return Stub()->ModelInfer(&context, request, &response);
  }

  static ServerProcess* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static std::map<std::string, TestLayer>* layers_;
};

ServerProcess* KserveE2eTest::server_ = nullptr;
std::shared_ptr<grpc::Channel>* KserveE2eTest::channel_ = nullptr;
std::map<std::string, TestLayer>* KserveE2eTest::layers_ = nullptr;

TEST_F(KserveE2eTest, ServerLiveReadyAndMetadata) {
  auto stub = Stub();
  {
    grpc::ClientContext context;
    SetDeadline(context);
    inference::ServerLiveResponse response;
    ASSERT_TRUE(stub->ServerLive(&context, {}, &response).ok());
    EXPECT_TRUE(response.live());
  }
  {
    grpc::ClientContext context;
    SetDeadline(context);
    inference::ServerReadyResponse response;
    ASSERT_TRUE(stub->ServerReady(&context, {}, &response).ok());
    EXPECT_TRUE(response.ready());
  }
  {
    grpc::ClientContext context;
    SetDeadline(context);
    inference::ServerMetadataResponse response;
    ASSERT_TRUE(stub->ServerMetadata(&context, {}, &response).ok());
    EXPECT_EQ(response.name(), "convserve");
    EXPECT_FALSE(response.version().empty());
  }
}

TEST_F(KserveE2eTest, ModelReadyAndMetadata) {
  auto stub = Stub();
  auto ready = [&](const std::string& name, const std::string& version) {
    grpc::ClientContext context;
    SetDeadline(context);
    inference::ModelReadyRequest request;
    request.set_name(name);
    request.set_version(version);
    inference::ModelReadyResponse response;
    const grpc::Status status = stub->ModelReady(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.ready();
  };
  for (const auto& [name, layer] : *layers_) {
    EXPECT_TRUE(ready(name, "")) << name;
    EXPECT_TRUE(ready(name, "1")) << name;
    EXPECT_FALSE(ready(name, "2")) << name;
  }
  EXPECT_FALSE(ready("no_such_model", ""));

  grpc::ClientContext context;
  SetDeadline(context);
  inference::ModelMetadataRequest request;
  request.set_name("k_fp16");
  inference::ModelMetadataResponse metadata;
  ASSERT_TRUE(stub->ModelMetadata(&context, request, &metadata).ok());
  EXPECT_EQ(metadata.name(), "k_fp16");
  EXPECT_THAT(metadata.versions(), ::testing::ElementsAre("1"));
  EXPECT_FALSE(metadata.platform().empty());
  ASSERT_EQ(metadata.inputs_size(), 1);
  EXPECT_EQ(metadata.inputs(0).name(), "input");
  EXPECT_EQ(metadata.inputs(0).datatype(), "FP16");
  EXPECT_THAT(metadata.inputs(0).shape(), ::testing::ElementsAre(-1, 6, -1, -1));
  ASSERT_EQ(metadata.outputs_size(), 1);
  EXPECT_EQ(metadata.outputs(0).name(), "output");
  EXPECT_EQ(metadata.outputs(0).datatype(), "FP16");
  EXPECT_THAT(metadata.outputs(0).shape(), ::testing::ElementsAre(-1, 5, -1, -1));

  for (const auto& [name, version] :
       std::vector<std::pair<std::string, std::string>>{{"no_such_model", ""}, {"k_fp16", "3"}}) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    inference::ModelMetadataRequest bad;
    bad.set_name(name);
    bad.set_version(version);
    inference::ModelMetadataResponse ignored;
    const grpc::Status status = stub->ModelMetadata(&ctx, bad, &ignored);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(status.error_message(), HasSubstr(name));
  }
}

TEST_F(KserveE2eTest, RawInputsOfEveryDatatypeMatchTheReference) {
  for (const auto& [name, layer] : *layers_) {
    Case c;
    const ModelInferRequest request = MakeRequest(name, 2, 9, 7, Layout::kNchw, c, "raw-" + name);
    const ModelInferResponse response = InferOk(request);
    EXPECT_EQ(response.id(), "raw-" + name);
    EXPECT_EQ(response.model_version(), "1");
    ExpectMatchesReference(c, response);
  }
}

TEST_F(KserveE2eTest, Fp32ContentsMatchTheReference) {
  Case c;
  ModelInferRequest request = MakeRequest("k_fp32", 1, 6, 5, Layout::kNchw, c);
  request.clear_raw_input_contents();
  auto* contents = request.mutable_inputs(0)->mutable_contents();
  for (int64_t i = 0; i < c.problem.input_elements(); ++i) {
    contents->add_fp32_contents(
        static_cast<float>(LoadAsDouble(DataType::kFloat32, c.input.data(), i)));
  }
  ExpectMatchesReference(c, InferOk(request));
}

TEST_F(KserveE2eTest, NhwcThroughTheLayoutParameter) {
  for (const auto& [name, layer] : *layers_) {  // request-level "layout": NHWC in and out
    Case c;
    ExpectMatchesReference(c, InferOk(MakeRequest(name, 3, 5, 8, Layout::kNhwc, c)));
  }
  // Input-level NHWC with an NCHW output requested through the output's parameters.
  Case c;
  ModelInferRequest request = MakeRequest("k_fp32", 2, 7, 4, Layout::kNhwc, c);
  request.mutable_parameters()->clear();
  (*request.mutable_inputs(0)->mutable_parameters())["layout"].set_string_param("NHWC");
  auto& output = *request.add_outputs();
  output.set_name("output");
  (*output.mutable_parameters())["layout"].set_string_param("NCHW");
  c.problem.output_layout = Layout::kNchw;
  ExpectMatchesReference(c, InferOk(request));
}

TEST_F(KserveE2eTest, ErrorsHaveTheNativeCodesAndNameTheField) {
  Case c;
  const ModelInferRequest good = MakeRequest("k_fp32", 1, 4, 4, Layout::kNchw, c);
  auto expect = [&](const ModelInferRequest& request, grpc::StatusCode code,
                    const std::string& text) {
    const grpc::Status status = InferStatus(request);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(text));
  };
  {
    ModelInferRequest r = good;
    r.set_model_name("no_such_model");
    expect(r, grpc::StatusCode::NOT_FOUND, "no_such_model");
  }
  {
    ModelInferRequest r = good;
    r.mutable_inputs(0)->set_datatype("INT8");
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].datatype");
  }
  {
    ModelInferRequest r = good;
    r.mutable_inputs(0)->mutable_shape()->RemoveLast();
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].shape");
  }
  {
    ModelInferRequest r = good;
    r.mutable_raw_input_contents(0)->append("xx");
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "raw_input_contents[0]");
  }
  {
    ModelInferRequest r = good;
    (*r.mutable_parameters())["layout"].set_string_param("HWCN");
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "parameters.layout");
  }
  {
    ModelInferRequest r = good;
    r.mutable_inputs(0)->set_name("image");
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].name");
  }
  {  // validated by the serving core against the layer: wrong channel count
    ModelInferRequest r = good;
    r.mutable_inputs(0)->set_shape(1, 3);
    r.mutable_raw_input_contents(0)->resize(1 * 3 * 4 * 4 * 4);
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].shape[1] (C)");
  }
  {  // the same for an NHWC input names the last dimension
    Case nhwc;
    ModelInferRequest r = MakeRequest("k_fp32", 1, 4, 4, Layout::kNhwc, nhwc);
    r.mutable_inputs(0)->set_shape(3, 3);
    r.mutable_raw_input_contents(0)->resize(1 * 4 * 4 * 3 * 4);
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].shape[3] (C)");
  }
  {  // the layer is FP32
    ModelInferRequest r = good;
    r.mutable_inputs(0)->set_datatype("FP16");
    r.mutable_raw_input_contents(0)->resize(c.input.size() / 2);
    expect(r, grpc::StatusCode::INVALID_ARGUMENT, "inputs[0].datatype");
  }
  {  // over --max_input_bytes
    Case big;
    const ModelInferRequest r = MakeRequest("k_fp32", 1, 128, 130, Layout::kNchw, big);
    ASSERT_GT(big.problem.input_bytes(), kMaxInputBytes);
    const grpc::Status status = InferStatus(r);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  }
}

TEST_F(KserveE2eTest, ManyRequestsInFlightOnOneStream) {
  constexpr int kRequests = 240;
  grpc::ClientContext context;
  SetDeadline(context, 300);
  auto stub = Stub();
  auto stream = stub->ModelStreamInfer(&context);
  const std::vector<std::string> names = {"k_fp32", "k_fp16", "k_bf16"};

  // Write everything before reading anything back: the server must keep them all in flight.
  std::map<std::string, Case> cases;
  for (int i = 0; i < kRequests; ++i) {
    const std::string id = absl::StrCat("s", i);
    Case& c = cases[id];
    ModelInferRequest request = MakeRequest(names[i % names.size()], 1 + i % 3, 4 + i % 5, 5,
                                            i % 4 == 1 ? Layout::kNhwc : Layout::kNchw, c, id);
    if (i % 10 == 7) request.mutable_inputs(0)->set_datatype("INT8");  // fails alone
    ASSERT_TRUE(stream->Write(request)) << i;
  }
  ASSERT_TRUE(stream->WritesDone());

  std::map<std::string, int> answers;
  ModelStreamInferResponse response;
  while (stream->Read(&response)) {
    const std::string& id = response.infer_response().id();
    ASSERT_TRUE(cases.count(id)) << "unknown id '" << id << "'";
    ++answers[id];
    const int i = std::stoi(id.substr(1));
    if (i % 10 == 7) {
      EXPECT_THAT(response.error_message(), HasSubstr("INVALID_ARGUMENT"));
      EXPECT_THAT(response.error_message(), HasSubstr("inputs[0].datatype"));
      EXPECT_EQ(response.infer_response().model_name(), cases[id].layer);
    } else {
      ASSERT_EQ(response.error_message(), "") << id;
      ExpectMatchesReference(cases[id], response.infer_response());
    }
  }
  const grpc::Status status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answers.size(), cases.size());
  for (const auto& [id, count] : answers) EXPECT_EQ(count, 1) << id;
}

TEST_F(KserveE2eTest, StreamBeyondItsOutstandingLimitAnswersEveryRequestOnce) {
  // More requests than one stream may keep outstanding (512), written by one thread while
  // another reads: the server pauses reading instead of buffering without bound.
  constexpr int kRequests = 1500;
  grpc::ClientContext context;
  SetDeadline(context, 300);
  auto stub = Stub();
  auto stream = stub->ModelStreamInfer(&context);
  Case c;
  ModelInferRequest request = MakeRequest("k_fp32", 1, 3, 3, Layout::kNchw, c);
  std::thread writer([&] {
    for (int i = 0; i < kRequests; ++i) {
      request.set_id(std::to_string(i));
      if (!stream->Write(request)) return;
    }
    stream->WritesDone();
  });
  std::vector<int> answers(kRequests, 0);
  ModelStreamInferResponse response;
  int received = 0;
  while (stream->Read(&response)) {
    ASSERT_EQ(response.error_message(), "");
    ++answers.at(std::stoi(response.infer_response().id()));
    if (++received % 97 == 0) ExpectMatchesReference(c, response.infer_response());
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  for (int i = 0; i < kRequests; ++i) EXPECT_EQ(answers[i], 1) << i;
}

TEST_F(KserveE2eTest, CancelledStreamLeavesTheServerServing) {
  {
    grpc::ClientContext context;
    auto stub = Stub();
    auto stream = stub->ModelStreamInfer(&context);
    for (int i = 0; i < 64; ++i) {
      Case c;
      if (!stream->Write(MakeRequest("k_fp16", 2, 16, 16, Layout::kNchw, c))) break;
    }
    context.TryCancel();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  Case c;
  ExpectMatchesReference(c, InferOk(MakeRequest("k_fp16", 1, 5, 5, Layout::kNchw, c)));
}

TEST_F(KserveE2eTest, RequestsShowInMetricsWithTheKserveLabel) {
  Case c;
  InferOk(MakeRequest("k_bf16", 1, 4, 4, Layout::kNchw, c));
  absl::StatusOr<HttpResponse> scraped = HttpGet(server_->metrics_port(), "/metrics");
  ASSERT_TRUE(scraped.ok()) << scraped.status();
  ASSERT_EQ(scraped->status, 200);
  const std::string& body = scraped->body;
  bool found = false;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (absl::StartsWith(line, "convserve_requests_total{") &&
        absl::StrContains(line, "api=\"kserve\"") && absl::StrContains(line, "layer=\"k_bf16\"") &&
        absl::StrContains(line, "status=\"OK\"")) {
      found = true;
    }
  }
  EXPECT_TRUE(found) << body.substr(0, 4000);
}

}  // namespace
}  // namespace convserve
