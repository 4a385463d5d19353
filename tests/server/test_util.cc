#include "tests/server/test_util.h"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <optional>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "server/layer_spec.h"
#include "tests/e2e/conv3x3_spec.h"

namespace convserve::testing {

v1::LayerSpec SmallSpec(const std::string& name, int64_t channels, v1::DataType dtype) {
  v1::LayerSpec spec = Conv3x3Spec(name, channels, dtype);
  spec.set_has_bias(true);
  spec.set_activation(v1::ACTIVATION_RELU);
  return spec;
}

std::string RandomTensor(int64_t elements, DataType dtype, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::string out(static_cast<size_t>(elements * DataTypeSize(dtype)), '\0');
  for (int64_t i = 0; i < elements; ++i) {
    const float value = dist(rng);
    if (dtype == DataType::kFloat32) {
      std::memcpy(&out[i * 4], &value, 4);
    } else {
      const uint16_t bits =
          dtype == DataType::kFloat16 ? FloatToHalfBits(value) : FloatToBf16Bits(value);
      std::memcpy(&out[i * 2], &bits, 2);
    }
  }
  return out;
}

v1::LoadLayerRequest LoadRequestFor(const v1::LayerSpec& spec, uint64_t seed) {
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  EXPECT_TRUE(params.ok()) << params.status();
  v1::LoadLayerRequest request;
  *request.mutable_spec() = spec;
  request.set_weights(RandomTensor(params->weight_elements(), params->dtype, seed));
  if (params->has_bias) {
    request.set_bias(RandomTensor(params->out_channels, params->dtype, seed + 1));
  }
  return request;
}

std::string ReferenceOutput(const v1::LoadLayerRequest& load, const std::string& input, int64_t n,
                            int64_t h, int64_t w, Layout in_layout, Layout out_layout) {
  absl::StatusOr<ConvParams> params = ParamsFromSpec(load.spec());
  EXPECT_TRUE(params.ok()) << params.status();
  ConvProblem problem;
  problem.params = *params;
  problem.batch = n;
  problem.height = h;
  problem.width = w;
  problem.input_layout = in_layout;
  problem.output_layout = out_layout;
  std::string output(static_cast<size_t>(problem.output_bytes()), '\0');
  absl::Status status =
      ReferenceConv2d(problem, input.data(), load.weights().data(),
                      params->has_bias ? load.bias().data() : nullptr, output.data(), 1);
  EXPECT_TRUE(status.ok()) << status;
  return output;
}

InferenceRequest InferenceRequestFor(const std::string& layer, std::string input, int64_t n,
                                     int64_t channels, int64_t h, int64_t w) {
  InferenceRequest request;
  request.layer = layer;
  request.shape[0] = n;
  request.shape[1] = channels;
  request.shape[2] = h;
  request.shape[3] = w;
  request.input = TensorBytes(std::move(input));
  return request;
}

v1::ForwardRequest ForwardFor(const std::string& layer, const v1::LayerSpec& spec, int64_t n,
                              int64_t h, int64_t w, uint64_t seed, v1::Layout layout) {
  v1::ForwardRequest request;
  request.set_layer(layer);
  v1::Tensor* input = request.mutable_input();
  input->set_dtype(spec.dtype());
  input->set_layout(layout);
  for (int64_t d : {n, spec.in_channels(), h, w}) input->add_shape(d);
  const DataType dtype = *DataTypeFromProto(spec.dtype(), "dtype");
  input->set_data(RandomTensor(n * spec.in_channels() * h * w, dtype, seed));
  return request;
}

ServerOptions TestServerOptions() {
  ServerOptions options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.device = "cpu";
  options.cpu_threads = 2;
  options.shutdown_grace_ms = 60000;
  return options;
}

RunningServer StartServer(const ServerOptions& options) {
  RunningServer running;
  absl::StatusOr<std::unique_ptr<ConvServer>> server = ConvServer::Create(options, nullptr);
  EXPECT_TRUE(server.ok()) << server.status();
  if (!server.ok()) return running;
  running.server = *std::move(server);
  absl::Status started = running.server->Start();
  EXPECT_TRUE(started.ok()) << started;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  running.channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", running.server->port()),
                                              grpc::InsecureChannelCredentials(), args);
  running.stub = v1::Conv2d::NewStub(running.channel);
  return running;
}

grpc::Status Load(RunningServer& s, const v1::LoadLayerRequest& request,
                  v1::LoadLayerResponse* response) {
  grpc::ClientContext context;
  v1::LoadLayerResponse ignored;
  return s.stub->LoadLayer(&context, request, response ? response : &ignored);
}

grpc::Status Forward(RunningServer& s, const v1::ForwardRequest& request,
                     v1::ForwardResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  return s.stub->Forward(&context, request, response);
}

std::unique_ptr<AsyncCall> StartForward(RunningServer& s, const v1::ForwardRequest& request) {
  auto call = std::make_unique<AsyncCall>();
  AsyncCall* raw = call.get();
  s.stub->async()->Forward(&raw->context, &request, &raw->response, [raw](grpc::Status status) {
    raw->status = std::move(status);
    raw->done.set_value();
  });
  return call;
}

std::vector<std::unique_ptr<AsyncCall>> ForwardAll(
    RunningServer& s, const std::vector<v1::ForwardRequest>& requests) {
  std::vector<std::unique_ptr<AsyncCall>> calls;
  for (const v1::ForwardRequest& request : requests) calls.push_back(StartForward(s, request));
  for (auto& call : calls) call->done.get_future().wait();
  return calls;
}

void WaitQueued(RunningServer& s, const std::string& layer, int64_t queued) {
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (absl::Now() < give_up) {
    std::optional<LayerSnapshot> snapshot = s.server->core().FindLayer(layer);
    if (snapshot && snapshot->queued_requests == queued) return;
    absl::SleepFor(absl::Milliseconds(5));
  }
  FAIL() << "layer " << layer << " never had " << queued << " queued requests";
}

}  // namespace convserve::testing
