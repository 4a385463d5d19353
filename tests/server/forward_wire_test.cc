// server/forward_wire.h against protobuf's own parser and serialiser: random requests cut into
// random pieces, unknown fields and groups, repeated fields, every truncation and random byte
// changes of a request; and replies read back by protobuf.
#include "server/forward_wire.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "tests/server/wire_oracle.h"

namespace convserve {
namespace {

using testing::CheckEveryTruncation;
using testing::CheckRandomByteChanges;
using testing::CompareWithProtobuf;
using testing::Flatten;

class ForwardWireTest : public ::testing::Test {
 protected:
  ForwardWireTest() : seed_(std::random_device{}()), rng_(seed_) {}

  void SetUp() override { RecordProperty("seed", std::to_string(seed_)); }

  std::string RandomBytes(size_t size) {
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>(rng_());
    return bytes;
  }

  v1::ForwardRequest RandomRequest(size_t max_data) {
    v1::ForwardRequest request;
    request.set_layer("layer_" + std::to_string(rng_() % 1000));
    v1::Tensor& input = *request.mutable_input();
    input.set_dtype(static_cast<v1::DataType>(rng_() % 4));
    input.set_layout(static_cast<v1::Layout>(rng_() % 3));
    for (int i = 0; i < 4; ++i) input.add_shape(static_cast<int64_t>(rng_() % 300));
    input.set_data(RandomBytes(rng_() % (max_data + 1)));
    request.set_output_layout(static_cast<v1::Layout>(rng_() % 3));
    request.set_timeout_us(static_cast<int64_t>(rng_() % 100000));
    return request;
  }

  std::vector<size_t> RandomCuts(size_t size, int max_cuts) {
    return testing::RandomCuts(rng_, size, max_cuts);
  }

  // Hand-encoded fields, for what protobuf's serialiser never writes.
  static std::string Tag(uint32_t field, uint32_t wire_type) {
    std::string out;
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.WriteTag(field << 3 | wire_type);
    coded.Trim();
    return out;
  }
  static std::string Varint(uint64_t value) {
    std::string out;
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.WriteVarint64(value);
    coded.Trim();
    return out;
  }
  static std::string Delimited(uint32_t field, const std::string& body) {
    return Tag(field, 2) + Varint(body.size()) + body;
  }

  const uint32_t seed_;
  std::mt19937 rng_;
};

TEST_F(ForwardWireTest, RandomRequestsInRandomPiecesMatchProtobuf) {
  for (int round = 0; round < 300; ++round) {
    const std::string bytes = RandomRequest(round < 200 ? 64 : 70000).SerializeAsString();
    const std::string diff = CompareWithProtobuf(bytes, RandomCuts(bytes.size(), 12));
    ASSERT_EQ(diff, "") << "round " << round << ", seed " << seed_;
  }
}

TEST_F(ForwardWireTest, BorrowsTheDataWithoutCopying) {
  v1::ForwardRequest request = RandomRequest(0);
  request.mutable_input()->set_data(RandomBytes(4096));
  const std::string bytes = request.SerializeAsString();
  // Two pieces cut inside the data: the data comes back as views of both.
  const size_t data_at = bytes.find(request.input().data());
  ASSERT_NE(data_at, std::string::npos);
  const std::vector<absl::string_view> pieces = {absl::string_view(bytes).substr(0, data_at + 1000),
                                                 absl::string_view(bytes).substr(data_at + 1000)};
  absl::StatusOr<ForwardWireRequest> parsed = ParseForwardRequest(pieces, nullptr);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->input_data.pieces().size(), 2u);
  EXPECT_EQ(parsed->input_data.pieces()[0].data(), bytes.data() + data_at);
  EXPECT_EQ(parsed->input_data.pieces()[1].data(), bytes.data() + data_at + 1000);
  EXPECT_EQ(parsed->input_data.ToString(), request.input().data());
  EXPECT_TRUE(parsed->request.input().data().empty());
}

TEST_F(ForwardWireTest, UnknownFieldsAndGroupsAreKeptAsProtobufKeepsThem) {
  v1::ForwardRequest request = RandomRequest(100);
  const std::string group = Tag(7, 3) + Tag(1, 0) + Varint(5) + Tag(8, 3) + Tag(2, 5) +
                            std::string(4, 'x') + Tag(8, 4) + Tag(7, 4);
  const std::string unknown = Tag(20, 0) + Varint(uint64_t{1} << 40) + Tag(21, 1) +
                              std::string(8, 'y') + Delimited(22, "zz") + Tag(23, 5) +
                              std::string(4, 'w') + group;
  // Inside input too, around its data; and input.data and layer with the wrong wire type.
  const std::string tensor =
      unknown + request.input().SerializeAsString() + group + Tag(4, 0) + Varint(3);
  const std::string bytes = unknown + Delimited(1, request.layer()) + Delimited(2, tensor) +
                            Tag(2, 0) + Varint(9) + unknown;
  for (int round = 0; round < 50; ++round) {
    ASSERT_EQ(CompareWithProtobuf(bytes, RandomCuts(bytes.size(), 8)), "") << "seed " << seed_;
  }
}

TEST_F(ForwardWireTest, RepeatedInputsMergeAsInProtobuf) {
  const v1::ForwardRequest a = RandomRequest(300);
  const v1::ForwardRequest b = RandomRequest(300);
  v1::Tensor no_data = b.input();
  no_data.clear_data();
  // Shapes concatenate; the last data wins, an input without data keeps the earlier one.
  for (const std::string& bytes :
       {a.SerializeAsString() + b.SerializeAsString(),
        a.SerializeAsString() + Delimited(2, no_data.SerializeAsString()),
        a.SerializeAsString() + Delimited(2, Delimited(4, ""))}) {
    ASSERT_EQ(CompareWithProtobuf(bytes, RandomCuts(bytes.size(), 6)), "") << "seed " << seed_;
  }
}

TEST_F(ForwardWireTest, EveryTruncationIsJudgedAsProtobufJudgesIt) {
  EXPECT_EQ(CheckEveryTruncation(CompareWithProtobuf, RandomRequest(40).SerializeAsString(), rng_),
            "")
      << "seed " << seed_;
}

TEST_F(ForwardWireTest, RandomByteChangesAreJudgedAsProtobufJudgesThem) {
  EXPECT_EQ(
      CheckRandomByteChanges(
          CompareWithProtobuf, [&] { return RandomRequest(24).SerializeAsString(); }, 3000, rng_),
      "")
      << "seed " << seed_;
}

TEST_F(ForwardWireTest, MalformedRequestsNameWhatIsWrong) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {Tag(2, 2) + Varint(100) + "short", "runs past"},
      {Tag(1, 2) + std::string(10, '\xff'), "varint"},
      {Tag(5, 3) + Tag(1, 0) + Varint(1), "truncated"},
      {Tag(5, 3) + Tag(6, 4), "mismatched end group"},
      {Tag(5, 4), "end group without a start"},
      {Tag(5, 6), "invalid wire type"},
      {std::string(1, '\0'), "invalid field number"},
      {Tag(2, 2) + Varint(uint64_t{1} << 31), "2 GiB"},
      {Delimited(1, "\xc3\x28"), "not UTF-8"},
  };
  for (const auto& [bytes, words] : cases) {
    absl::StatusOr<ForwardWireRequest> parsed = ParseForwardRequest({bytes}, nullptr);
    ASSERT_FALSE(parsed.ok()) << words;
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(words), absl::string_view::npos)
        << parsed.status().message();
    EXPECT_EQ(CompareWithProtobuf(bytes, {}), "") << words;
  }
}

TEST_F(ForwardWireTest, RepliesReadBackWithProtobuf) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{401408}}) {
    v1::ForwardResponse response;
    v1::Tensor& output = *response.mutable_output();
    output.set_dtype(v1::DATA_TYPE_FP16);
    output.set_layout(v1::LAYOUT_NHWC);
    for (int64_t d : {1, 64, 56, 56}) output.add_shape(d);
    response.mutable_timing()->set_queue_us(12);
    response.mutable_timing()->set_compute_us(345);
    response.mutable_timing()->set_total_us(6789);
    response.set_batch_size(3);
    response.set_kernel_config("b32x64x64_w16x16_s4");
    response.set_device("cuda:0 (test)");
    const std::string data = RandomBytes(size);
    const grpc::ByteBuffer buffer = SerializeForwardResponse(response, data);

    v1::ForwardResponse read;
    ASSERT_TRUE(read.ParseFromString(Flatten(buffer))) << size;
    v1::ForwardResponse expected = response;
    expected.mutable_output()->set_data(data);
    EXPECT_EQ(read.SerializeAsString(), expected.SerializeAsString()) << size;
    // Byte for byte what protobuf writes (same field order).
    EXPECT_EQ(Flatten(buffer), expected.SerializeAsString()) << size;
  }
}

}  // namespace
}  // namespace convserve
