#include "server/conv2d_service.h"

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "server/forward_wire.h"
#include "server/layer_spec.h"
#include "server/shared_memory.h"

namespace convserve {

namespace {

// A registered range a request names; FAILED_PRECONDITION when the server has no registry.
absl::StatusOr<SharedMemorySlice> ResolveRange(const SharedMemoryRegistry* registry,
                                               const v1::SharedMemoryRange& range,
                                               const char* what) {
  if (registry == nullptr) {
    return SharedMemoryOff(absl::StrCat(what, " is set but shared memory"));
  }
  return registry->Resolve(range.region(), range.offset(), range.byte_size(),
                           absl::StrCat(what, ".region"), what);
}

// Translates a ForwardRequest into `out` (everything but `done`), checking the fields only the
// wire format can get wrong; the core checks the rest against the layer. On success the tensor
// bytes have moved from `wire` into `out.input`, or been read from shared memory.
absl::Status FromWire(ForwardWireRequest& wire, const SharedMemoryRegistry* shared_memory,
                      UnaryCall& call, InferenceRequest& out) {
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
  if (input.has_shared_memory()) {
    if (!wire.input_data.empty()) {
      return absl::InvalidArgumentError(
          "input.data and input.shared_memory are both set; send the elements one way");
    }
    absl::StatusOr<SharedMemorySlice> slice =
        ResolveRange(shared_memory, input.shared_memory(), "input.shared_memory");
    if (!slice.ok()) return slice.status();
    // Read now, or referred to where the GPU copies it from (see shared_memory.h).
    absl::StatusOr<TensorBytes> bytes =
        shared_memory->Input(*slice, "input.shared_memory.byte_size");
    if (!bytes.ok()) return bytes.status();
    out.input = *std::move(bytes);
    out.input_field = "input.shared_memory.byte_size";
  } else {
    // Borrowed from gRPC's receive buffers: the executor's staging copy is the first copy.
    out.input = std::move(wire.input_data);
  }
  if (request.has_output_shared_memory()) {
    absl::StatusOr<SharedMemorySlice> slice =
        ResolveRange(shared_memory, request.output_shared_memory(), "output_shared_memory");
    if (!slice.ok()) return slice.status();
    out.output_sink =
        std::make_shared<SharedMemoryOutput>(*std::move(slice), "output_shared_memory");
  }
  out.accepted_at = absl::Now();
  if (call.context().deadline() != std::chrono::system_clock::time_point::max()) {
    out.deadline = absl::FromChrono(call.context().deadline());
  }
  if (request.timeout_us() > 0) {
    out.deadline =
        std::min(out.deadline, out.accepted_at + absl::Microseconds(request.timeout_us()));
  }
  // Asked only before the request is answered, while the call is alive.
  out.is_cancelled = [call = &call] { return call->cancelled(); };
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

void Conv2dService::RequestCall(grpc::ServerContext* context, grpc::ByteBuffer* request,
                                grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder,
                                grpc::ServerCompletionQueue* queue, void* tag) {
  RequestForward(context, request, responder, queue, queue, tag);
}

void Conv2dService::HandleCall(UnaryCall& call) {
  if (Denied(access_, call, AccessScope::kInference)) return;
  absl::StatusOr<ForwardWireRequest> wire = ParseForwardRequest(call.request());
  InferenceRequest inference;
  absl::Status status =
      wire.ok() ? FromWire(*wire, shared_memory_, call, inference) : wire.status();
  if (!status.ok()) {
    if (metrics_ != nullptr) {
      const std::string layer = wire.ok() ? wire->request.layer() : std::string();
      metrics_->Rejected(layer, RejectReason::kInvalid);
      metrics_->RequestFinished(layer, Api::kNative, status.code(), 0, 0);
    }
    call.Finish(ToGrpcStatus(status));
    return;
  }
  std::optional<v1::SharedMemoryRange> output_range;
  if (wire->request.has_output_shared_memory()) output_range = wire->request.output_shared_memory();
  inference.done = [call = &call, output_range = std::move(output_range)](
                       absl::StatusOr<InferenceResult> result) {
    if (!result.ok()) {
      call->Finish(ToGrpcStatus(result.status()));
      return;
    }
    v1::ForwardResponse fields = ResponseFields(*result);
    if (output_range) *fields.mutable_output()->mutable_shared_memory() = *output_range;
    call->Finish(SerializeForwardResponse(std::move(fields), std::move(result->output)));
  };
  core_.Submit(std::move(inference));
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

grpc::ServerUnaryReactor* Conv2dService::RegisterSharedMemory(
    grpc::CallbackServerContext* context, const v1::RegisterSharedMemoryRequest* request,
    v1::RegisterSharedMemoryResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  SharedMemoryRegionInfo info =
      request->has_cuda()
          ? SharedMemoryRegionInfo::Cuda(request->name(), request->cuda().ipc_handle(),
                                         request->cuda().device_id(), request->offset(),
                                         request->byte_size())
          : SharedMemoryRegionInfo(request->name(), "", request->offset(), request->byte_size());
  info.key = request->key();  // with cuda too: a region with both is refused as such
  reactor->Finish(ToGrpcStatus(convserve::RegisterSharedMemory(shared_memory_, std::move(info))));
  return reactor;
}

grpc::ServerUnaryReactor* Conv2dService::UnregisterSharedMemory(
    grpc::CallbackServerContext* context, const v1::UnregisterSharedMemoryRequest* request,
    v1::UnregisterSharedMemoryResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  reactor->Finish(ToGrpcStatus(convserve::UnregisterSharedMemory(shared_memory_, request->name())));
  return reactor;
}

grpc::ServerUnaryReactor* Conv2dService::SharedMemoryStatus(
    grpc::CallbackServerContext* context, const v1::SharedMemoryStatusRequest* request,
    v1::SharedMemoryStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> regions =
      convserve::SharedMemoryStatus(shared_memory_, request->name());
  for (const SharedMemoryRegionInfo& info :
       regions.value_or(std::vector<SharedMemoryRegionInfo>())) {
    v1::RegisterSharedMemoryRequest* region = response->add_regions();
    region->set_name(info.name);
    region->set_key(info.key);
    region->set_offset(info.offset);
    region->set_byte_size(info.byte_size);
    // The handle is not echoed: it is the capability to the client's memory.
    if (info.is_cuda()) region->mutable_cuda()->set_device_id(info.cuda_device);
  }
  reactor->Finish(ToGrpcStatus(regions.status()));
  return reactor;
}

}  // namespace convserve
