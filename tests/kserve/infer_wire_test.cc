// server/kserve/infer_wire.h against protobuf's own parser and serialiser: random ModelInfer
// requests (parameters, inputs, outputs, several raw entries) cut into random pieces, every
// truncation and random byte changes of a request; and replies read back by protobuf.
#include "server/kserve/infer_wire.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "tests/server/wire_oracle.h"

namespace convserve::kserve {
namespace {

using ::convserve::testing::Canonical;
using ::convserve::testing::CheckEveryTruncation;
using ::convserve::testing::CheckRandomByteChanges;
using ::convserve::testing::CompareInferWithProtobuf;
using ::convserve::testing::Flatten;
using ::inference::ModelInferRequest;
using ::inference::ModelInferResponse;

class InferWireTest : public ::testing::Test {
 protected:
  InferWireTest() : seed_(std::random_device{}()), rng_(seed_) {}

  std::string RandomBytes(size_t size) {
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>(rng_());
    return bytes;
  }

  ModelInferRequest RandomRequest(size_t max_raw) {
    ModelInferRequest request;
    request.set_model_name("layer_" + std::to_string(rng_() % 100));
    if (rng_() % 2) request.set_model_version("1");
    request.set_id(std::to_string(rng_()));
    (*request.mutable_parameters())["timeout"].set_int64_param(rng_() % 100000);
    (*request.mutable_parameters())["layout"].set_string_param(rng_() % 2 ? "NHWC" : "NCHW");
    ModelInferRequest::InferInputTensor& input = *request.add_inputs();
    input.set_name("input");
    input.set_datatype(rng_() % 2 ? "FP16" : "FP32");
    for (int i = 0; i < 4; ++i) input.add_shape(static_cast<int64_t>(1 + rng_() % 64));
    if (rng_() % 3 == 0) input.mutable_contents()->add_fp32_contents(1.5f);
    request.add_outputs()->set_name("output");
    const int raws = static_cast<int>(rng_() % 4);
    for (int i = 0; i < raws; ++i)
      request.add_raw_input_contents(RandomBytes(rng_() % (max_raw + 1)));
    return request;
  }

  std::vector<size_t> RandomCuts(size_t size, int max_cuts) {
    return testing::RandomCuts(rng_, size, max_cuts);
  }

  const uint32_t seed_;
  std::mt19937 rng_;
};

TEST_F(InferWireTest, RandomRequestsInRandomPiecesMatchProtobuf) {
  for (int round = 0; round < 300; ++round) {
    const std::string bytes = RandomRequest(round < 200 ? 64 : 50000).SerializeAsString();
    ASSERT_EQ(CompareInferWithProtobuf(bytes, RandomCuts(bytes.size(), 12)), "")
        << "round " << round << ", seed " << seed_;
  }
}

TEST_F(InferWireTest, BorrowsEachRawEntryInOrder) {
  ModelInferRequest request = RandomRequest(0);
  request.clear_raw_input_contents();
  request.add_raw_input_contents(RandomBytes(3000));
  request.add_raw_input_contents("");
  request.add_raw_input_contents(RandomBytes(10));
  const std::string bytes = request.SerializeAsString();
  absl::StatusOr<InferWireRequest> parsed = ParseModelInferRequest({bytes}, nullptr);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->raw_input_contents.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(parsed->raw_input_contents[i].ToString(), request.raw_input_contents(i));
  }
  EXPECT_EQ(parsed->raw_input_contents[0].pieces()[0].data(),
            bytes.data() + bytes.find(request.raw_input_contents(0)));
  EXPECT_EQ(parsed->request.raw_input_contents_size(), 0);
  EXPECT_EQ(parsed->request.inputs(0).shape_size(), 4);
}

TEST_F(InferWireTest, EveryTruncationIsJudgedAsProtobufJudgesIt) {
  EXPECT_EQ(
      CheckEveryTruncation(CompareInferWithProtobuf, RandomRequest(30).SerializeAsString(), rng_),
      "")
      << "seed " << seed_;
}

TEST_F(InferWireTest, RandomByteChangesAreJudgedAsProtobufJudgesThem) {
  EXPECT_EQ(CheckRandomByteChanges(
                CompareInferWithProtobuf, [&] { return RandomRequest(16).SerializeAsString(); },
                3000, rng_),
            "")
      << "seed " << seed_;
}

TEST_F(InferWireTest, MalformedRequestsSayWhat) {
  absl::StatusOr<InferWireRequest> parsed =
      ParseModelInferRequest({std::string("\x3a\x10short")}, nullptr);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(parsed.status().message(),
            "the request is not a valid inference.ModelInferRequest: field runs past its end at "
            "byte 2");
}

TEST_F(InferWireTest, RepliesReadBackWithProtobuf) {
  for (const std::vector<size_t>& sizes :
       std::vector<std::vector<size_t>>{{}, {0}, {401408}, {5, 0, 127, 128}}) {
    ModelInferResponse response;
    response.set_model_name("conv");
    response.set_model_version("1");
    response.set_id("id-7");
    (*response.mutable_parameters())["batch_size"].set_int64_param(3);
    ModelInferResponse::InferOutputTensor& output = *response.add_outputs();
    output.set_name("output");
    output.set_datatype("FP16");
    for (int64_t d : {1, 64, 56, 56}) output.add_shape(d);
    std::vector<std::string> raws;
    for (size_t size : sizes) raws.push_back(RandomBytes(size));
    ModelInferResponse expected = response;
    for (const std::string& raw : raws) expected.add_raw_output_contents(raw);

    const std::string bytes = Flatten(SerializeModelInferResponse(response, raws));
    ModelInferResponse read;
    ASSERT_TRUE(read.ParseFromString(bytes));
    EXPECT_EQ(Canonical(read), Canonical(expected)) << sizes.size() << " entries";
    EXPECT_EQ(bytes, expected.SerializeAsString()) << sizes.size() << " entries";
  }
}

}  // namespace
}  // namespace convserve::kserve
