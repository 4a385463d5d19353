// Client: one channel, two stubs, every gRPC status mapped through common/grpc_status.h.
#include "client/client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "client/layer_directory.h"
#include "common/grpc_status.h"
#include "common/http2_window.h"

namespace convserve {
namespace {

// Not read by gRPC; only makes channel arguments (and so connections) distinct.
constexpr char kChannelTagArg[] = "convserve.channel_tag";

}  // namespace

Client::Client(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  if (options_.round_robin) args.SetLoadBalancingPolicyName("round_robin");
  AddTlsChannelArguments(options_.tls, args);
  if (options_.channel_tag != 0) args.SetInt(kChannelTagArg, options_.channel_tag);
  for (const auto& [name, value] : Http2WindowChannelArgs(options_.stream_window_bytes)) {
    args.SetInt(name, value);
  }
  // Unusable TLS files give null credentials, and gRPC then makes a channel whose every call
  // fails: never a silent fall-back to plaintext.
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(options_.tls);
  channel_ =
      grpc::CreateCustomChannel(options_.target, credentials.ok() ? *credentials : nullptr, args);
  conv2d_ = v1::Conv2d::NewStub(channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
}

std::unique_ptr<grpc::ClientContext> Client::NewContext(absl::Duration timeout) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (!options_.token.empty()) context->AddMetadata("authorization", "Bearer " + options_.token);
  return context;
}

bool Client::WaitForConnected(absl::Duration timeout) {
  return channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
}

absl::StatusOr<v1::LayerInfo> Client::LoadLayer(const v1::LoadLayerRequest& request) {
  v1::LoadLayerResponse response;
  auto context = NewContext(options_.tune_timeout);
  absl::Status status = FromGrpcStatus(conv2d_->LoadLayer(context.get(), request, &response));
  if (!status.ok()) return status;
  return std::move(*response.mutable_layer());
}

absl::StatusOr<v1::LayerInfo> Client::LoadLayer(const v1::LayerSpec& spec, std::string weights,
                                                std::string bias) {
  v1::LoadLayerRequest request;
  *request.mutable_spec() = spec;
  request.set_weights(std::move(weights));
  request.set_bias(std::move(bias));
  return LoadLayer(request);
}

absl::StatusOr<v1::LayerInfo> Client::LoadLayerFromDirectory(const std::string& dir) {
  absl::StatusOr<v1::LoadLayerRequest> request = ReadRepositoryLayer(dir);
  if (!request.ok()) return request.status();
  return LoadLayer(*request);
}

absl::Status Client::UnloadLayer(const std::string& name) {
  v1::UnloadLayerRequest request;
  request.set_name(name);
  v1::UnloadLayerResponse response;
  auto context = NewContext(options_.call_timeout);
  return FromGrpcStatus(conv2d_->UnloadLayer(context.get(), request, &response));
}

absl::Status Client::RegisterSharedMemory(const std::string& name, const std::string& key,
                                          int64_t offset, int64_t byte_size) {
  v1::RegisterSharedMemoryRequest request;
  request.set_name(name);
  request.set_key(key);
  request.set_offset(offset);
  request.set_byte_size(byte_size);
  v1::RegisterSharedMemoryResponse response;
  auto context = NewContext(options_.call_timeout);
  return FromGrpcStatus(conv2d_->RegisterSharedMemory(context.get(), request, &response));
}

absl::Status Client::RegisterCudaSharedMemory(const std::string& name,
                                              const std::string& ipc_handle, int device_id,
                                              int64_t offset, int64_t byte_size) {
  v1::RegisterSharedMemoryRequest request;
  request.set_name(name);
  request.set_offset(offset);
  request.set_byte_size(byte_size);
  request.mutable_cuda()->set_ipc_handle(ipc_handle);
  request.mutable_cuda()->set_device_id(device_id);
  v1::RegisterSharedMemoryResponse response;
  auto context = NewContext(options_.call_timeout);
  return FromGrpcStatus(conv2d_->RegisterSharedMemory(context.get(), request, &response));
}

absl::Status Client::UnregisterSharedMemory(const std::string& name) {
  v1::UnregisterSharedMemoryRequest request;
  request.set_name(name);
  v1::UnregisterSharedMemoryResponse response;
  auto context = NewContext(options_.call_timeout);
  return FromGrpcStatus(conv2d_->UnregisterSharedMemory(context.get(), request, &response));
}

absl::StatusOr<std::vector<v1::RegisterSharedMemoryRequest>> Client::SharedMemoryStatus(
    const std::string& name) {
  v1::SharedMemoryStatusRequest request;
  request.set_name(name);
  v1::SharedMemoryStatusResponse response;
  auto context = NewContext(options_.call_timeout);
  absl::Status status =
      FromGrpcStatus(conv2d_->SharedMemoryStatus(context.get(), request, &response));
  if (!status.ok()) return status;
  return std::vector<v1::RegisterSharedMemoryRequest>(
      std::make_move_iterator(response.mutable_regions()->begin()),
      std::make_move_iterator(response.mutable_regions()->end()));
}

absl::StatusOr<std::vector<v1::LayerInfo>> Client::ListLayers() {
  v1::ListLayersResponse response;
  auto context = NewContext(options_.call_timeout);
  absl::Status status =
      FromGrpcStatus(conv2d_->ListLayers(context.get(), v1::ListLayersRequest(), &response));
  if (!status.ok()) return status;
  return std::vector<v1::LayerInfo>(std::make_move_iterator(response.mutable_layers()->begin()),
                                    std::make_move_iterator(response.mutable_layers()->end()));
}

absl::StatusOr<v1::LayerInfo> Client::GetLayer(const std::string& name) {
  absl::StatusOr<std::vector<v1::LayerInfo>> layers = ListLayers();
  if (!layers.ok()) return layers.status();
  for (v1::LayerInfo& layer : *layers) {
    if (layer.spec().name() == name) return std::move(layer);
  }
  return absl::NotFoundError(absl::StrCat("layer '", name, "' is not loaded on ", options_.target));
}

absl::StatusOr<v1::ForwardResponse> Client::Forward(const v1::ForwardRequest& request,
                                                    absl::Duration timeout) {
  v1::ForwardResponse response;
  auto context = NewContext(timeout > absl::ZeroDuration() ? timeout : options_.call_timeout);
  absl::Status status = FromGrpcStatus(conv2d_->Forward(context.get(), request, &response));
  if (!status.ok()) return status;
  return response;
}

void Client::ForwardAsync(const v1::ForwardRequest& request, v1::ForwardResponse* response,
                          absl::Duration timeout, std::function<void(absl::Status)> done) {
  // The context must live until the call ends; the completion callback owns it.
  grpc::ClientContext* context =
      NewContext(timeout > absl::ZeroDuration() ? timeout : options_.call_timeout).release();
  conv2d_->async()->Forward(context, &request, response,
                            [context, done = std::move(done)](grpc::Status status) {
                              delete context;
                              done(FromGrpcStatus(status));
                            });
}

absl::StatusOr<v1::TuneResponse> Client::Tune(const v1::TuneRequest& request) {
  v1::TuneResponse response;
  auto context = NewContext(options_.tune_timeout);
  absl::Status status = FromGrpcStatus(conv2d_->Tune(context.get(), request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Client::Health(
    const std::string& service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  auto context = NewContext(options_.call_timeout);
  absl::Status status = FromGrpcStatus(health_->Check(context.get(), request, &response));
  if (!status.ok()) return status;
  return response.status();
}

}  // namespace convserve
