// A whole convserve server in one object: executors for the chosen device, the serving core,
// the model repository, and the gRPC server with the native Conv2d service, the standard health
// service (overall and per layer) and reflection. main() and the end-to-end tests use it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "server/access_control.h"
#include "server/conv2d_service.h"
#include "server/metrics/metrics.h"
#include "server/server_options.h"
#include "server/serving_core_impl.h"
#include "server/unary_call_queues.h"

namespace convserve {

class ConvServer {
 public:
  // Creates the executors and the core and loads options.model_repository (when set; a missing
  // repository is NOT_FOUND, bad layers in it are only logged). `metrics` may be null and must
  // outlive the server.
  static absl::StatusOr<std::unique_ptr<ConvServer>> Create(const ServerOptions& options,
                                                            Metrics* metrics);
  // Shutdown() if still running.
  ~ConvServer();

  ServingCoreImpl& core() { return *core_; }
  // The token checks of options.security, for front-ends registered through Start().
  const AccessControl* access() const { return access_.get(); }
  // The clients' shared-memory regions, for the KServe front-end to share; null unless
  // options.allow_shared_memory.
  SharedMemoryRegistry* shared_memory() const { return shared_memory_.get(); }

  // Binds options.listen ("127.0.0.1:0" picks a free port) and serves the native service plus
  // `extra_services` (not owned; they must outlive the server). An extra service that is also a
  // UnaryCallHandler (the KServe front-end) has its handler's method served on the same
  // completion queues as Forward. UNAVAILABLE when binding fails.
  absl::Status Start(const std::vector<grpc::Service*>& extra_services = {});
  // The port bound by Start().
  int port() const { return port_; }

  // Graceful: stops accepting calls, answers every accepted request (waiting up to
  // options.shutdown_grace_ms), then stops the core. Idempotent.
  void Shutdown();

 private:
  ConvServer(const ServerOptions& options, Metrics* metrics, std::unique_ptr<ServingCoreImpl> core);
  // Polls the executors' health until Shutdown(); `device_healthy` is the state last published.
  void HealthLoop(std::vector<bool> device_healthy);

  const ServerOptions options_;
  Metrics* const metrics_;
  std::unique_ptr<ServingCoreImpl> core_;
  std::unique_ptr<AccessControl> access_;
  // Null unless options.allow_shared_memory.
  std::unique_ptr<SharedMemoryRegistry> shared_memory_;
  std::unique_ptr<Conv2dService> service_;
  // Declared before server_: gRPC's server goes before its completion queues.
  std::unique_ptr<UnaryCallQueues> call_queues_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Notification stop_health_;
  std::thread health_thread_;
  std::atomic<bool> shut_down_{false};
};

}  // namespace convserve
