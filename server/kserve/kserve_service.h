// The KServe v2 / Open Inference Protocol front-end: inference.GRPCInferenceService on top of the
// serving core, so its requests share the native API's batching, tuning and metrics (labelled
// api="kserve"). ModelInfer is served on the server's completion queues, like the native
// Forward (server/unary_call_queues.h); the other methods on gRPC's callback API. Pass it to
// ConvServer::Start, which registers it and its ModelInfer on the same server.
#pragma once

#include <string>

#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/access_control.h"
#include "server/serving_core.h"
#include "server/shared_memory.h"
#include "server/unary_call_queues.h"

namespace convserve {

// Every method on the callback API but ModelInfer, which is asynchronous and raw. Built up from
// the synchronous base: a method marked callback first keeps its callback handler when marked raw.
using InferenceService = inference::GRPCInferenceService;
using KserveServiceBase = InferenceService::WithCallbackMethod_ServerLive<
    InferenceService::WithCallbackMethod_ServerReady<InferenceService::WithCallbackMethod_ModelReady<
        InferenceService::WithCallbackMethod_ServerMetadata<
            InferenceService::WithCallbackMethod_ModelMetadata<
                InferenceService::WithRawMethod_ModelInfer<
                    InferenceService::WithCallbackMethod_ModelStreamInfer<
                        InferenceService::WithCallbackMethod_SystemSharedMemoryStatus<
                            InferenceService::WithCallbackMethod_SystemSharedMemoryRegister<
                                InferenceService::WithCallbackMethod_SystemSharedMemoryUnregister<
                                    InferenceService::WithCallbackMethod_CudaSharedMemoryStatus<
                                        InferenceService::
                                            WithCallbackMethod_CudaSharedMemoryRegister<
                                                InferenceService::
                                                    WithCallbackMethod_CudaSharedMemoryUnregister<
                                                        InferenceService::Service>>>>>>>>>>>>>;

// Thread-safe; handlers validate, submit and return without blocking. `core` must outlive the
// service and the grpc::Server it is registered on.
class KserveService final : public KserveServiceBase, public UnaryCallHandler {
 public:
  // `server_name` and `server_version` are what ServerMetadata reports; by default
  // "convserve" and the version of this build.
  // `access` (null: every call allowed) gates ModelInfer, ModelStreamInfer and the shared-memory
  // calls with the inference token; the liveness, readiness and metadata calls stay open for
  // probes. `shared_memory` (null: the extension is off) holds the clients' regions, shared with
  // the native service.
  explicit KserveService(ServingCore& core, std::string server_name = "convserve",
                         std::string server_version = BuildVersion(),
                         const AccessControl* access = nullptr,
                         SharedMemoryRegistry* shared_memory = nullptr);

  // The project version this library was built from, e.g. "0.1.0".
  static std::string BuildVersion();

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* context,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* context,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  // An unknown model or version is not an error here: it is simply not ready.
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* context,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* context,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  // NOT_FOUND for an unknown model or version.
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* context,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  // UnaryCallHandler: ModelInfer, for the server's UnaryCallQueues. Answers when the core's done
  // callback fires: the result, or the status that ended the request (NOT_FOUND,
  // INVALID_ARGUMENT naming the field, RESOURCE_EXHAUSTED, ...). gRPC's raw method: the messages
  // are read and written with server/kserve/infer_wire.h, so the tensors are not copied by
  // protobuf.
  void RequestCall(grpc::ServerContext* context, grpc::ByteBuffer* request,
                   grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder,
                   grpc::ServerCompletionQueue* queue, void* tag) override;
  void HandleCall(UnaryCall& call) override;
  // Every request read gets one response message, in completion order; a failed request's
  // message carries error_message and the stream goes on.
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
  ModelStreamInfer(grpc::CallbackServerContext* context) override;
  // Triton's system shared-memory extension (FAILED_PRECONDITION when it is off).
  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryStatusRequest* request,
      inference::SystemSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryRegisterRequest* request,
      inference::SystemSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::SystemSharedMemoryUnregisterRequest* request,
      inference::SystemSharedMemoryUnregisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryStatus(
      grpc::CallbackServerContext* context, const inference::CudaSharedMemoryStatusRequest* request,
      inference::CudaSharedMemoryStatusResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryRegister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryRegisterRequest* request,
      inference::CudaSharedMemoryRegisterResponse* response) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryUnregister(
      grpc::CallbackServerContext* context,
      const inference::CudaSharedMemoryUnregisterRequest* request,
      inference::CudaSharedMemoryUnregisterResponse* response) override;

 private:
  ServingCore& core_;
  const std::string server_name_;
  const std::string server_version_;
  const AccessControl* const access_;
  SharedMemoryRegistry* const shared_memory_;
};

}  // namespace convserve
