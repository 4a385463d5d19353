// KServe v2 handlers: each one translates its proto, asks the serving core and answers through
// the call's default reactor; ModelInfer answers from the core's done callback, so no gRPC
// thread waits on inference.
#include "server/kserve/kserve_service.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "server/kserve/call_deadline.h"
#include "server/kserve/infer_codec.h"
#include "server/kserve/infer_wire.h"
#include "server/kserve/stream_infer_reactor.h"

namespace convserve {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Status ModelNotFound(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("name: required");
  return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
}

}  // namespace

std::string KserveService::BuildVersion() { return CONVSERVE_VERSION; }

KserveService::KserveService(ServingCore& core, std::string server_name, std::string server_version,
                             const AccessControl* access, SharedMemoryRegistry* shared_memory)
    : core_(core),
      server_name_(std::move(server_name)),
      server_version_(std::move(server_version)),
      access_(access),
      shared_memory_(shared_memory) {}

grpc::ServerUnaryReactor* KserveService::ServerLive(grpc::CallbackServerContext* context,
                                                    const inference::ServerLiveRequest*,
                                                    inference::ServerLiveResponse* response) {
  response->set_live(true);  // answering at all is the proof
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KserveService::ServerReady(grpc::CallbackServerContext* context,
                                                     const inference::ServerReadyRequest*,
                                                     inference::ServerReadyResponse* response) {
  response->set_ready(core_.ready());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KserveService::ModelReady(grpc::CallbackServerContext* context,
                                                    const inference::ModelReadyRequest* request,
                                                    inference::ModelReadyResponse* response) {
  if (request->name().empty()) return FinishNow(context, ModelNotFound(""));
  const std::optional<LayerSnapshot> layer = core_.FindLayer(request->name());
  response->set_ready(layer.has_value() && layer->info.ready() && core_.ready() &&
                      kserve::CheckModelVersion(request->name(), request->version()).ok());
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KserveService::ServerMetadata(
    grpc::CallbackServerContext* context, const inference::ServerMetadataRequest*,
    inference::ServerMetadataResponse* response) {
  response->set_name(server_name_);
  response->set_version(server_version_);
  if (shared_memory_ != nullptr) response->add_extensions("system_shared_memory");
  if (shared_memory_ != nullptr && shared_memory_->takes_cuda()) {
    response->add_extensions("cuda_shared_memory");
  }
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* KserveService::ModelMetadata(
    grpc::CallbackServerContext* context, const inference::ModelMetadataRequest* request,
    inference::ModelMetadataResponse* response) {
  const std::optional<LayerSnapshot> layer = core_.FindLayer(request->name());
  if (!layer.has_value()) return FinishNow(context, ModelNotFound(request->name()));
  if (absl::Status status = kserve::CheckModelVersion(request->name(), request->version());
      !status.ok()) {
    return FinishNow(context, status);
  }
  kserve::EncodeModelMetadata(*layer, *response);
  return FinishNow(context, absl::OkStatus());
}

void KserveService::RequestCall(grpc::ServerContext* context, grpc::ByteBuffer* request,
                                grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder,
                                grpc::ServerCompletionQueue* queue, void* tag) {
  RequestModelInfer(context, request, responder, queue, queue, tag);
}

void KserveService::HandleCall(UnaryCall& call) {
  if (Denied(access_, call, AccessScope::kInference)) return;
  absl::StatusOr<kserve::InferWireRequest> wire = kserve::ParseModelInferRequest(call.request());
  InferenceRequest inference;
  absl::Status status =
      wire.ok() ? kserve::DecodeInferRequest(wire->request, std::move(wire->raw_input_contents),
                                             kserve::DeadlineOf(call.context()), inference,
                                             shared_memory_)
                : wire.status();
  if (!status.ok()) {
    call.Finish(ToGrpcStatus(status));
    return;
  }
  // Asked only before the request is answered, while the call is alive.
  inference.is_cancelled = [call = &call] { return call->cancelled(); };
  inference.done = [call = &call, model = wire->request.model_name(), id = wire->request.id(),
                    layout = inference.input_layout,
                    output_shared_memory = kserve::OutputSharedMemoryParameters(wire->request)](
                       absl::StatusOr<InferenceResult> result) {
    if (!result.ok()) {
      call->Finish(ToGrpcStatus(kserve::InKserveTerms(result.status(), layout)));
      return;
    }
    inference::ModelInferResponse fields;
    std::string output = kserve::EncodeInferResponseFields(model, id, *std::move(result), fields,
                                                           output_shared_memory);
    std::vector<std::string> raw_output_contents;
    if (output_shared_memory.empty()) raw_output_contents.push_back(std::move(output));
    call->Finish(kserve::SerializeModelInferResponse(fields, std::move(raw_output_contents)));
  };
  core_.Submit(std::move(inference));
}

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
KserveService::ModelStreamInfer(grpc::CallbackServerContext* context) {
  if (access_ != nullptr) {
    if (grpc::Status status = access_->Check(*context, AccessScope::kInference); !status.ok()) {
      return new DeniedStream<inference::ModelInferRequest, inference::ModelStreamInferResponse>(
          std::move(status));
    }
  }
  return new kserve::StreamInferReactor(core_, context, shared_memory_);
}

grpc::ServerUnaryReactor* KserveService::SystemSharedMemoryStatus(
    grpc::CallbackServerContext* context, const inference::SystemSharedMemoryStatusRequest* request,
    inference::SystemSharedMemoryStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> regions =
      SharedMemoryStatus(shared_memory_, request->name(), SharedMemoryKind::kHost);
  for (const SharedMemoryRegionInfo& info :
       regions.value_or(std::vector<SharedMemoryRegionInfo>())) {
    auto& region = (*response->mutable_regions())[info.name];
    region.set_name(info.name);
    region.set_key(info.key);
    region.set_offset(static_cast<uint64_t>(info.offset));
    region.set_byte_size(static_cast<uint64_t>(info.byte_size));
  }
  reactor->Finish(ToGrpcStatus(regions.status()));
  return reactor;
}

grpc::ServerUnaryReactor* KserveService::SystemSharedMemoryRegister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryRegisterRequest* request,
    inference::SystemSharedMemoryRegisterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  // uint64 on this wire: values past INT64_MAX become negative and are refused as such.
  reactor->Finish(ToGrpcStatus(RegisterSharedMemory(
      shared_memory_, {request->name(), request->key(), static_cast<int64_t>(request->offset()),
                       static_cast<int64_t>(request->byte_size())})));
  return reactor;
}

grpc::ServerUnaryReactor* KserveService::SystemSharedMemoryUnregister(
    grpc::CallbackServerContext* context,
    const inference::SystemSharedMemoryUnregisterRequest* request,
    inference::SystemSharedMemoryUnregisterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  reactor->Finish(ToGrpcStatus(
      UnregisterSharedMemory(shared_memory_, request->name(), SharedMemoryKind::kHost)));
  return reactor;
}

grpc::ServerUnaryReactor* KserveService::CudaSharedMemoryStatus(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryStatusRequest* request,
    inference::CudaSharedMemoryStatusResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  absl::StatusOr<std::vector<SharedMemoryRegionInfo>> regions =
      SharedMemoryStatus(shared_memory_, request->name(), SharedMemoryKind::kCuda);
  for (const SharedMemoryRegionInfo& info :
       regions.value_or(std::vector<SharedMemoryRegionInfo>())) {
    auto& region = (*response->mutable_regions())[info.name];
    region.set_name(info.name);
    region.set_device_id(static_cast<uint64_t>(info.cuda_device));
    region.set_byte_size(static_cast<uint64_t>(info.byte_size));
  }
  reactor->Finish(ToGrpcStatus(regions.status()));
  return reactor;
}

grpc::ServerUnaryReactor* KserveService::CudaSharedMemoryRegister(
    grpc::CallbackServerContext* context, const inference::CudaSharedMemoryRegisterRequest* request,
    inference::CudaSharedMemoryRegisterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  // byte_size past INT64_MAX is refused as negative; a device_id out of int range as -1.
  const int device = request->device_id() < 0 || request->device_id() > INT32_MAX
                         ? -1
                         : static_cast<int>(request->device_id());
  SharedMemoryRegionInfo info =
      SharedMemoryRegionInfo::Cuda(request->name(), request->raw_handle(), device, 0,
                                   static_cast<int64_t>(request->byte_size()));
  reactor->Finish(ToGrpcStatus(RegisterSharedMemory(shared_memory_, std::move(info))));
  return reactor;
}

grpc::ServerUnaryReactor* KserveService::CudaSharedMemoryUnregister(
    grpc::CallbackServerContext* context,
    const inference::CudaSharedMemoryUnregisterRequest* request,
    inference::CudaSharedMemoryUnregisterResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (Denied(access_, context, AccessScope::kInference, reactor)) return reactor;
  reactor->Finish(ToGrpcStatus(
      UnregisterSharedMemory(shared_memory_, request->name(), SharedMemoryKind::kCuda)));
  return reactor;
}

}  // namespace convserve
