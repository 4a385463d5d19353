#include "server/conv2d_service.h"

#include <chrono>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "server/forward_wire.h"
#include "server/layer_spec.h"

namespace convserve {

namespace {

// Translates a ForwardRequest into `out` (everything but `done`), checking the fields only the
// wire format can get wrong; the core checks the rest against the layer. On success the tensor
// bytes have moved from `wire` into `out.input`.
absl::Status FromWire(ForwardWireRequest& wire, grpc::CallbackServerContext& context,
                      InferenceRequest& out) {
  const v1::ForwardRequest& request = wire.request;
  out.layer = request.layer();
  if (!request.has_input()) return absl::InvalidArgumentError("input must be set");
  const v1::Tensor& input = request.input();
  absl::StatusOr<DataType> dtype = DataTypeFromProto(input.dtype(), "input.dtype");
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<Layout> layout = LayoutFromProto(input.layout(), "input.layout");
  if (!layout.ok()) return layout.status();
  absl::StatusOr<Layout> output_layout =
      LayoutFromProto(request.output_layout(), "output_layout", *layout);
  if (!output_layout.ok()) return output_layout.status();
  if (input.shape_size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("input.shape must have 4 dimensions [N, C, H, W], got ", input.shape_size()));
  }
  if (request.timeout_us() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout_us must be >= 0 (0: none), got ", request.timeout_us()));
  }
  for (int i = 0; i < 4; ++i) out.shape[i] = input.shape(i);
  out.dtype = *dtype;
  out.input_layout = *layout;
  out.output_layout = *output_layout;
  // Borrowed from gRPC's receive buffers: the executor's staging copy is the first copy.
  out.input = std::move(wire.input_data);
  out.accepted_at = absl::Now();
  if (context.deadline() != std::chrono::system_clock::time_point::max()) {
    out.deadline = absl::FromChrono(context.deadline());
  }
  if (request.timeout_us() > 0) {
    out.deadline =
        std::min(out.deadline, out.accepted_at + absl::Microseconds(request.timeout_us()));
  }
  out.is_cancelled = [call = &context] { return call->IsCancelled(); };
  out.api = Api::kNative;
  return absl::OkStatus();
}

// The reply's message without output.data, which SerializeForwardResponse adds uncopied.
v1::ForwardResponse ResponseFields(InferenceResult& result) {
  v1::ForwardResponse response;
  v1::Tensor* output = response.mutable_output();
  output->set_dtype(DataTypeToProto(result.dtype));
  output->set_layout(LayoutToProto(result.layout));
  for (int64_t d : result.shape) output->add_shape(d);
  v1::Timing* timing = response.mutable_timing();
  timing->set_queue_us(result.queue_us);
  timing->set_compute_us(result.compute_us);
  timing->set_total_us(result.total_us);
  response.set_batch_size(result.batch_size);
  response.set_kernel_config(std::move(result.kernel_config));
  response.set_device(std::move(result.device));
  return response;
}

}  // namespace

grpc::ServerUnaryReactor* Conv2dService::Forward(grpc::CallbackServerContext* context,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  absl::StatusOr<ForwardWireRequest> wire = ParseForwardRequest(*request);
  InferenceRequest inference;
  absl::Status status = wire.ok() ? FromWire(*wire, *context, inference) : wire.status();
  if (!status.ok()) {
    if (metrics_ != nullptr) {
      const std::string layer = wire.ok() ? wire->request.layer() : std::string();
      metrics_->Rejected(layer, RejectReason::kInvalid);
      metrics_->RequestFinished(layer, Api::kNative, status.code(), 0, 0);
    }
    reactor->Finish(ToGrpcStatus(status));
    return reactor;
  }
  inference.done = [reactor, response](absl::StatusOr<InferenceResult> result) {
    if (!result.ok()) {
      reactor->Finish(ToGrpcStatus(result.status()));
      return;
    }
    grpc::ByteBuffer reply =
        SerializeForwardResponse(ResponseFields(*result), std::move(result->output));
    response->Swap(&reply);
    reactor->Finish(grpc::Status::OK);
  };
  core_.Submit(std::move(inference));
  return reactor;
}

grpc::ServerUnaryReactor* Conv2dService::LoadLayer(grpc::CallbackServerContext* context,
                                                   const v1::LoadLayerRequest* request,
                                                   v1::LoadLayerResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kAdmin, reactor)) return reactor;
  management_.Post([this, reactor, request, response] {
    absl::StatusOr<v1::LayerInfo> info = core_.LoadLayer(*request);
    if (!info.ok()) {
      reactor->Finish(ToGrpcStatus(info.status()));
      return;
    }
    *response->mutable_layer() = *std::move(info);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* Conv2dService::UnloadLayer(grpc::CallbackServerContext* context,
                                                     const v1::UnloadLayerRequest* request,
                                                     v1::UnloadLayerResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kAdmin, reactor)) return reactor;
  reactor->Finish(ToGrpcStatus(core_.UnloadLayer(request->name())));
  return reactor;
}

grpc::ServerUnaryReactor* Conv2dService::ListLayers(grpc::CallbackServerContext* context,
                                                    const v1::ListLayersRequest* request,
                                                    v1::ListLayersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  for (LayerSnapshot& layer : core_.ListLayers()) {
    *response->add_layers() = std::move(layer.info);
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* Conv2dService::Tune(grpc::CallbackServerContext* context,
                                              const v1::TuneRequest* request,
                                              v1::TuneResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kAdmin, reactor)) return reactor;
  management_.Post([this, reactor, request, response] {
    absl::StatusOr<v1::TuneResponse> tuned = core_.Tune(*request);
    if (!tuned.ok()) {
      reactor->Finish(ToGrpcStatus(tuned.status()));
      return;
    }
    *response = *std::move(tuned);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace convserve
