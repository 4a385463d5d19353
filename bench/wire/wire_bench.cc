// Host cost per message of the Forward and ModelInfer calls' request parse and reply
// serialisation with a 401,408-byte tensor (1x64x56x56 fp16, the batching benchmark's layer):
// the zero-copy codecs against protobuf through gRPC's SerializationTraits, which is what
// gRPC's generated code runs. The request arrives as 32 KiB slices, as gRPC's reads hand it over.
// Each reply iteration first copies the output out of a "staging" buffer into a fresh string,
// the executor's split copy, which both paths pay. Requests rotate over 16 distinct received
// messages (6.4 MB, more than a core's L2) so the sources are not all cache-hot; malloc is tuned
// as in the server (common/malloc_tuning.h) and gRPC stays initialised throughout.
//   build/bench/wire/wire_bench --benchmark_min_time=0.5
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/malloc_tuning.h"
#include "convserve/v1/conv2d.pb.h"
#include "grpc/grpc.h"
#include "grpcpp/impl/codegen/proto_utils.h"  // gRPC's SerializationTraits for protobuf
#include "kserve/grpc_predict_v2.pb.h"
#include "server/forward_wire.h"
#include "server/kserve/infer_wire.h"

namespace convserve {
namespace {

constexpr size_t kTensorBytes = 64 * 56 * 56 * 2;
constexpr size_t kSliceBytes = 32 << 10;

const std::string& Tensor() {
  static const std::string* tensor = [] {
    auto* bytes = new std::string(kTensorBytes, '\0');
    for (size_t i = 0; i < bytes->size(); ++i) (*bytes)[i] = static_cast<char>(i * 131 + 7);
    return bytes;
  }();
  return *tensor;
}

grpc::ByteBuffer Received(const std::string& serialized) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < serialized.size(); at += kSliceBytes) {
    slices.emplace_back(serialized.data() + at, std::min(kSliceBytes, serialized.size() - at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

template <typename Message>
grpc::ByteBuffer ProtobufSerialize(const Message& message) {
  grpc::ByteBuffer out;
  bool own = false;
  (void)grpc::SerializationTraits<Message>::Serialize(message, &out, &own);
  return out;
}

template <typename Message>
bool ProtobufParse(const grpc::ByteBuffer& received, Message& message) {
  grpc::ByteBuffer shared(received);
  return grpc::SerializationTraits<Message>::Deserialize(&shared, &message).ok();
}

constexpr int kReceived = 16;

// kReceived distinct copies of the message `make` receives.
std::vector<grpc::ByteBuffer> Rotation(grpc::ByteBuffer (*make)()) {
  std::vector<grpc::ByteBuffer> received(kReceived);
  for (grpc::ByteBuffer& buffer : received) buffer = make();
  return received;
}

grpc::ByteBuffer ForwardRequestBytes() {
  v1::ForwardRequest request;
  request.set_layer("demo_conv3x3");
  request.mutable_input()->set_dtype(v1::DATA_TYPE_FP16);
  for (int64_t d : {1, 64, 56, 56}) request.mutable_input()->add_shape(d);
  request.mutable_input()->set_data(Tensor());
  return Received(request.SerializeAsString());
}

v1::ForwardResponse ForwardResponseFields() {
  v1::ForwardResponse response;
  response.mutable_output()->set_dtype(v1::DATA_TYPE_FP16);
  for (int64_t d : {1, 64, 56, 56}) response.mutable_output()->add_shape(d);
  response.mutable_timing()->set_compute_us(45);
  response.set_batch_size(1);
  response.set_kernel_config("b32x64x64_w16x16_s4");
  response.set_device("cuda:0 (NVIDIA H100 80GB HBM3)");
  return response;
}

void BM_ForwardRequest_Protobuf(benchmark::State& state) {
  const std::vector<grpc::ByteBuffer> received = Rotation(ForwardRequestBytes);
  size_t next = 0;
  for (auto _ : state) {
    v1::ForwardRequest request;
    if (!ProtobufParse(received[next++ % kReceived], request)) state.SkipWithError("failed");
    std::string data = std::move(*request.mutable_input()->mutable_data());
    benchmark::DoNotOptimize(data.data());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

void BM_ForwardRequest_Wire(benchmark::State& state) {
  const std::vector<grpc::ByteBuffer> received = Rotation(ForwardRequestBytes);
  size_t next = 0;
  for (auto _ : state) {
    absl::StatusOr<ForwardWireRequest> request = ParseForwardRequest(received[next++ % kReceived]);
    if (!request.ok()) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(request->input_data.pieces().data());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

void BM_ForwardReply_Protobuf(benchmark::State& state) {
  const v1::ForwardResponse fields = ForwardResponseFields();
  for (auto _ : state) {
    v1::ForwardResponse response = fields;
    response.mutable_output()->set_data(std::string(Tensor()));  // the split copy
    grpc::ByteBuffer reply = ProtobufSerialize(response);
    benchmark::DoNotOptimize(reply.Length());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

void BM_ForwardReply_Wire(benchmark::State& state) {
  const v1::ForwardResponse fields = ForwardResponseFields();
  for (auto _ : state) {
    grpc::ByteBuffer reply = SerializeForwardResponse(fields, std::string(Tensor()));
    benchmark::DoNotOptimize(reply.Length());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

grpc::ByteBuffer ModelInferRequestBytes() {
  inference::ModelInferRequest request;
  request.set_model_name("demo_conv3x3");
  request.set_id("42");
  inference::ModelInferRequest::InferInputTensor& input = *request.add_inputs();
  input.set_name("input");
  input.set_datatype("FP16");
  for (int64_t d : {1, 64, 56, 56}) input.add_shape(d);
  request.add_raw_input_contents(Tensor());
  return Received(request.SerializeAsString());
}

inference::ModelInferResponse ModelInferResponseFields() {
  inference::ModelInferResponse response;
  response.set_model_name("demo_conv3x3");
  response.set_model_version("1");
  response.set_id("42");
  inference::ModelInferResponse::InferOutputTensor& output = *response.add_outputs();
  output.set_name("output");
  output.set_datatype("FP16");
  for (int64_t d : {1, 64, 56, 56}) output.add_shape(d);
  (*response.mutable_parameters())["compute_us"].set_int64_param(45);
  (*response.mutable_parameters())["kernel_config"].set_string_param("b32x64x64_w16x16_s4");
  return response;
}

void BM_ModelInferRequest_Protobuf(benchmark::State& state) {
  const std::vector<grpc::ByteBuffer> received = Rotation(ModelInferRequestBytes);
  size_t next = 0;
  for (auto _ : state) {
    inference::ModelInferRequest request;
    if (!ProtobufParse(received[next++ % kReceived], request)) state.SkipWithError("failed");
    std::string data = std::move(*request.mutable_raw_input_contents(0));
    benchmark::DoNotOptimize(data.data());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

void BM_ModelInferRequest_Wire(benchmark::State& state) {
  const std::vector<grpc::ByteBuffer> received = Rotation(ModelInferRequestBytes);
  size_t next = 0;
  for (auto _ : state) {
    absl::StatusOr<kserve::InferWireRequest> request =
        kserve::ParseModelInferRequest(received[next++ % kReceived]);
    if (!request.ok()) state.SkipWithError("parse failed");
    benchmark::DoNotOptimize(request->raw_input_contents.data());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

void BM_ModelInferReply_Protobuf(benchmark::State& state) {
  const inference::ModelInferResponse fields = ModelInferResponseFields();
  for (auto _ : state) {
    inference::ModelInferResponse response = fields;
    response.add_raw_output_contents(std::string(Tensor()));  // the split copy
    grpc::ByteBuffer reply = ProtobufSerialize(response);
    benchmark::DoNotOptimize(reply.Length());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

void BM_ModelInferReply_Wire(benchmark::State& state) {
  const inference::ModelInferResponse fields = ModelInferResponseFields();
  for (auto _ : state) {
    std::vector<std::string> raw;
    raw.emplace_back(Tensor());  // the split copy
    grpc::ByteBuffer reply = kserve::SerializeModelInferResponse(fields, std::move(raw));
    benchmark::DoNotOptimize(reply.Length());
  }
  state.SetBytesProcessed(state.iterations() * kTensorBytes);
}

BENCHMARK(BM_ForwardRequest_Protobuf);
BENCHMARK(BM_ForwardRequest_Wire);
BENCHMARK(BM_ForwardReply_Protobuf);
BENCHMARK(BM_ForwardReply_Wire);
BENCHMARK(BM_ModelInferRequest_Protobuf);
BENCHMARK(BM_ModelInferRequest_Wire);
BENCHMARK(BM_ModelInferReply_Protobuf);
BENCHMARK(BM_ModelInferReply_Wire);

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) {
  convserve::KeepLargeBuffersMapped();
  grpc_init();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  grpc_shutdown();
  return 0;
}
