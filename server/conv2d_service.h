// The native gRPC service convserve.v1.Conv2d. Each handler checks the proto's fields, hands the
// work to the serving core and returns; the reply is finished later from whichever thread
// completes the work. No handler blocks a gRPC thread: LoadLayer and Tune (which wait on the
// device) run on a management thread.
// - Forward, the hot path, is served on completion queues (server/unary_call_queues.h) as gRPC's
//   raw method: it reads and writes its messages with server/forward_wire.h, so the tensors are
//   not copied on the way in or out.
// - The other methods use the callback API.
#pragma once

#include "convserve/v1/conv2d.grpc.pb.h"
#include "server/access_control.h"
#include "server/conv2d_service_base.h"
#include "server/metrics/metrics.h"
#include "server/serving_core.h"
#include "server/shared_memory.h"
#include "server/unary_call_queues.h"
#include "server/work_queue.h"

namespace convserve {

class Conv2dService final : public Conv2dServiceBase, public UnaryCallHandler {
 public:
  // `core`, `metrics` (may be null), `access` (null: every call allowed) and `shared_memory`
  // (null: shared memory off) must outlive the gRPC server this is registered with.
  Conv2dService(ServingCore& core, Metrics* metrics, const AccessControl* access = nullptr,
                SharedMemoryRegistry* shared_memory = nullptr)
      : core_(core), metrics_(metrics), access_(access), shared_memory_(shared_memory) {}

  grpc::ServerUnaryReactor* LoadLayer(grpc::CallbackServerContext* context,
                                      const convserve::v1::LoadLayerRequest* request,
                                      convserve::v1::LoadLayerResponse* response) override;
  grpc::ServerUnaryReactor* UnloadLayer(grpc::CallbackServerContext* context,
                                        const convserve::v1::UnloadLayerRequest* request,
                                        convserve::v1::UnloadLayerResponse* response) override;
  grpc::ServerUnaryReactor* ListLayers(grpc::CallbackServerContext* context,
                                       const convserve::v1::ListLayersRequest* request,
                                       convserve::v1::ListLayersResponse* response) override;
  // UnaryCallHandler: Forward, for the server's UnaryCallQueues.
  void RequestCall(grpc::ServerContext* context, grpc::ByteBuffer* request,
                   grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder,
                   grpc::ServerCompletionQueue* queue, void* tag) override;
  void HandleCall(UnaryCall& call) override;
  grpc::ServerUnaryReactor* Tune(grpc::CallbackServerContext* context,
                                 const convserve::v1::TuneRequest* request,
                                 convserve::v1::TuneResponse* response) override;
  grpc::ServerUnaryReactor* RegisterSharedMemory(
      grpc::CallbackServerContext* context,
      const convserve::v1::RegisterSharedMemoryRequest* request,
      convserve::v1::RegisterSharedMemoryResponse* response) override;
  grpc::ServerUnaryReactor* UnregisterSharedMemory(
      grpc::CallbackServerContext* context,
      const convserve::v1::UnregisterSharedMemoryRequest* request,
      convserve::v1::UnregisterSharedMemoryResponse* response) override;
  grpc::ServerUnaryReactor* SharedMemoryStatus(
      grpc::CallbackServerContext* context, const convserve::v1::SharedMemoryStatusRequest* request,
      convserve::v1::SharedMemoryStatusResponse* response) override;

 private:
  ServingCore& core_;
  Metrics* const metrics_;
  const AccessControl* const access_;
  SharedMemoryRegistry* const shared_memory_;
  WorkQueue management_;
};

}  // namespace convserve
