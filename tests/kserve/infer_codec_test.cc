// The KServe v2 <-> serving-core translation rules (server/kserve/infer_codec.h), without a
// server: what each request field becomes, and which field each error names.
#include "server/kserve/infer_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
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
    ModelInferRequest r = RawRequest({int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 20, 4});
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

}  // namespace
}  // namespace convserve::kserve
