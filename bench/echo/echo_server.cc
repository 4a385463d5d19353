// convserve-echo-server: the transport floor for `convserve-cli perf`. It speaks
// convserve.v1.Conv2d with the same payloads as convserve-server: LoadLayer keeps the spec (the
// weights are checked for size and dropped), Forward checks the input against the layer and
// answers with an output tensor of the size the real conv would produce, without computing
// anything. What perf measures against it is gRPC, protobuf and the copies: the cost every
// Forward pays before any kernel runs. By default Forward's messages go through protobuf as
// gRPC's generated code would (a copy of each tensor in and out); with --zero_copy_forward they
// go through server/forward_wire.h as convserve-server's do (no copy of either). Forward is
// received and answered on completion queues, as convserve-server's is
// (server/unary_call_queues.h, --grpc_forward_threads).
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/convert.h"
#include "client/layer_directory.h"
#include "common/grpc_status.h"
#include "common/http2_window.h"
#include "common/malloc_tuning.h"
#include "common/mutex_mode.h"
#include "convserve/v1/conv2d.grpc.pb.h"
#include "server/conv2d_service_base.h"
#include "server/forward_wire.h"
#include "server/unary_call_queues.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50052", "gRPC address to serve on (host:port)");
ABSL_FLAG(std::string, model_repository, "", "layer directories to load at start (specs only)");
ABSL_FLAG(int32_t, max_message_mb, 512, "largest gRPC message received or sent, MiB");
ABSL_FLAG(int32_t, grpc_stream_window_bytes, 0,
          "fixed HTTP/2 stream receive window for requests, bytes (0: gRPC's default); keep it "
          "equal to convserve-server's (same default) so the floor pays the same transport costs");
ABSL_FLAG(bool, zero_copy_forward, false,
          "read and write Forward's messages without copying the tensors, as convserve-server "
          "does; false: through protobuf messages, as gRPC's generated code does");
ABSL_FLAG(int32_t, grpc_forward_threads, 0,
          "threads, each with its own completion queue, that receive Forward calls and send "
          "their replies; 0: one per core (convserve-server's default)");

namespace convserve {
namespace {

namespace v1 = convserve::v1;

constexpr char kDevice[] = "echo (no compute)";

class EchoService final : public Conv2dServiceBase, public UnaryCallHandler {
 public:
  explicit EchoService(bool zero_copy_forward) : zero_copy_forward_(zero_copy_forward) {}

  absl::StatusOr<v1::LayerInfo> Load(const v1::LoadLayerRequest& request) {
    absl::StatusOr<ConvParams> params = ParamsFromSpec(request.spec());
    if (!params.ok()) return params.status();
    if (request.spec().name().empty()) return absl::InvalidArgumentError("spec.name is empty");
    if (static_cast<int64_t>(request.weights().size()) != params->weight_bytes() ||
        static_cast<int64_t>(request.bias().size()) != params->bias_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "weights/bias are ", request.weights().size(), "/", request.bias().size(),
          " bytes; the spec needs ", params->weight_bytes(), "/", params->bias_bytes()));
    }
    absl::MutexLock lock(&mu_);
    Layer& layer = layers_[request.spec().name()];
    layer.params = *params;
    *layer.info.mutable_spec() = request.spec();
    layer.info.set_resident_bytes(0);
    layer.info.set_device(kDevice);
    layer.info.set_ready(true);
    layer.info.set_generation(++generation_);
    return layer.info;
  }

  grpc::ServerUnaryReactor* LoadLayer(grpc::CallbackServerContext* context,
                                      const v1::LoadLayerRequest* request,
                                      v1::LoadLayerResponse* response) override {
    absl::StatusOr<v1::LayerInfo> info = Load(*request);
    if (info.ok()) *response->mutable_layer() = *std::move(info);
    return Finish(context, info.status());
  }

  grpc::ServerUnaryReactor* UnloadLayer(grpc::CallbackServerContext* context,
                                        const v1::UnloadLayerRequest* request,
                                        v1::UnloadLayerResponse*) override {
    absl::MutexLock lock(&mu_);
    return Finish(
        context, layers_.erase(request->name()) == 1
                     ? absl::OkStatus()
                     : absl::NotFoundError(absl::StrCat("no layer named '", request->name(), "'")));
  }

  grpc::ServerUnaryReactor* ListLayers(grpc::CallbackServerContext* context,
                                       const v1::ListLayersRequest*,
                                       v1::ListLayersResponse* response) override {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, layer] : layers_) *response->add_layers() = layer.info;
    return Finish(context, absl::OkStatus());
  }

  void RequestCall(grpc::ServerContext* context, grpc::ByteBuffer* request,
                   grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder,
                   grpc::ServerCompletionQueue* queue, void* tag) override {
    RequestForward(context, request, responder, queue, queue, tag);
  }

  // Forward, on a queue's thread.
  void HandleCall(UnaryCall& call) override {
    const absl::Time accepted = absl::Now();
    absl::StatusOr<ForwardWireRequest> wire = Read(call.request());
    if (!wire.ok()) {
      call.Finish(ToGrpcStatus(wire.status()));
      return;
    }
    absl::StatusOr<ConvProblem> problem = Check(wire->request, wire->input_data.size());
    if (!problem.ok()) {
      call.Finish(ToGrpcStatus(problem.status()));
      return;
    }
    v1::ForwardResponse reply;
    v1::Tensor& output = *reply.mutable_output();
    output.set_dtype(wire->request.input().dtype());
    output.set_layout(wire->request.output_layout() == v1::LAYOUT_DEFAULT
                          ? wire->request.input().layout()
                          : wire->request.output_layout());
    for (int64_t d : {problem->batch, problem->params.out_channels, problem->out_height(),
                      problem->out_width()}) {
      output.add_shape(d);
    }
    reply.set_batch_size(static_cast<int32_t>(problem->batch));
    reply.set_kernel_config("echo");
    reply.set_device(kDevice);
    reply.mutable_timing()->set_total_us(absl::ToInt64Microseconds(absl::Now() - accepted));
    call.Finish(
        Write(std::move(reply), std::string(static_cast<size_t>(problem->output_bytes()), '\0')));
  }

  grpc::ServerUnaryReactor* Tune(grpc::CallbackServerContext* context, const v1::TuneRequest*,
                                 v1::TuneResponse*) override {
    return Finish(context, absl::UnimplementedError("the echo server does not tune"));
  }

 private:
  struct Layer {
    ConvParams params;
    v1::LayerInfo info;
  };

  static grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context,
                                          const absl::Status& status) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }

  absl::StatusOr<ForwardWireRequest> Read(const grpc::ByteBuffer& request) const {
    if (zero_copy_forward_) return ParseForwardRequest(request);
    ForwardWireRequest wire;
    grpc::ByteBuffer shared(request);  // gRPC's deserialiser consumes its buffer
    if (!grpc::SerializationTraits<v1::ForwardRequest>::Deserialize(&shared, &wire.request).ok()) {
      return absl::InvalidArgumentError("the request is not a valid convserve.v1.ForwardRequest");
    }
    wire.input_data = TensorBytes(std::move(*wire.request.mutable_input()->mutable_data()));
    return wire;
  }

  grpc::ByteBuffer Write(v1::ForwardResponse reply, std::string data) const {
    if (zero_copy_forward_) return SerializeForwardResponse(std::move(reply), std::move(data));
    reply.mutable_output()->set_data(std::move(data));
    grpc::ByteBuffer written;
    bool own_buffer = false;
    (void)grpc::SerializationTraits<v1::ForwardResponse>::Serialize(reply, &written, &own_buffer);
    return written;
  }

  // The checks that decide the output size: the layer exists, the input's dtype, channels and
  // byte length fit it.
  absl::StatusOr<ConvProblem> Check(const v1::ForwardRequest& request, size_t data_bytes) {
    ConvProblem problem;
    {
      absl::MutexLock lock(&mu_);
      auto it = layers_.find(request.layer());
      if (it == layers_.end()) {
        return absl::NotFoundError(absl::StrCat("no layer named '", request.layer(), "'"));
      }
      problem.params = it->second.params;
    }
    const v1::Tensor& input = request.input();
    if (input.shape_size() != 4) {
      return absl::InvalidArgumentError("input.shape must be [N, C, H, W]");
    }
    if (input.dtype() != DataTypeToProto(problem.params.dtype)) {
      return absl::InvalidArgumentError("input.dtype does not match the layer's dtype");
    }
    if (input.shape(1) != problem.params.in_channels) {
      return absl::InvalidArgumentError(absl::StrCat("input.shape[1] is ", input.shape(1),
                                                     "; the layer has ", problem.params.in_channels,
                                                     " channels"));
    }
    problem.batch = input.shape(0);
    problem.height = input.shape(2);
    problem.width = input.shape(3);
    if (absl::Status valid = ValidateProblem(problem); !valid.ok()) return valid;
    if (static_cast<int64_t>(data_bytes) != problem.input_bytes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input.data is ", data_bytes, " bytes; the shape needs ", problem.input_bytes()));
    }
    return problem;
  }

  const bool zero_copy_forward_;
  absl::Mutex mu_;
  std::map<std::string, Layer> layers_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

int Main(int argc, char** argv) {
  KeepLargeBuffersMapped();  // as convserve-server does, so the floor is comparable
  absl::SetProgramUsageMessage(
      "convserve-echo-server: answers convserve.v1.Conv2d Forward calls with correctly sized, "
      "uncomputed outputs, to measure the transport floor with `convserve-cli perf`.");
  absl::ParseCommandLine(argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  EchoService service(absl::GetFlag(FLAGS_zero_copy_forward));
  const std::string repository = absl::GetFlag(FLAGS_model_repository);
  if (!repository.empty()) {
    absl::StatusOr<std::vector<std::string>> dirs = ListRepositoryLayers(repository);
    if (!dirs.ok()) {
      std::fprintf(stderr, "echo: %s\n", dirs.status().ToString().c_str());
      return 1;
    }
    for (const std::string& dir : *dirs) {
      absl::StatusOr<v1::LoadLayerRequest> request = ReadRepositoryLayer(dir);
      absl::StatusOr<v1::LayerInfo> loaded =
          request.ok() ? service.Load(*request) : request.status();
      if (!loaded.ok()) {
        std::fprintf(stderr, "echo: %s: %s\n", dir.c_str(), loaded.status().ToString().c_str());
        return 1;
      }
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_mb) << 20);
  builder.SetMaxSendMessageSize(absl::GetFlag(FLAGS_max_message_mb) << 20);
  for (const auto& [name, value] :
       Http2WindowChannelArgs(absl::GetFlag(FLAGS_grpc_stream_window_bytes))) {
    builder.AddChannelArgument(name, value);
  }
  builder.RegisterService(&service);
  UnaryCallQueues queues(builder, {&service}, absl::GetFlag(FLAGS_grpc_forward_threads));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "echo: cannot listen on %s\n", absl::GetFlag(FLAGS_listen).c_str());
    return 1;
  }
  queues.Start();
  std::fprintf(stderr, "echo: serving on %s\n", absl::GetFlag(FLAGS_listen).c_str());

  int signal = 0;
  sigwait(&signals, &signal);
  std::fprintf(stderr, "echo: signal %d, shutting down\n", signal);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  queues.Shutdown();
  return 0;
}

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) {
  convserve::TurnOffMutexDeadlockDetection();
  return convserve::Main(argc, argv);
}
