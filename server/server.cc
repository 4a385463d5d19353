#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/http2_window.h"
#include "common/tls_credentials.h"
#include "server/device.h"
#include "server/log.h"
#include "server/model_repository.h"

namespace convserve {

absl::StatusOr<std::unique_ptr<ConvServer>> ConvServer::Create(const ServerOptions& options,
                                                               Metrics* metrics) {
  absl::StatusOr<std::vector<std::unique_ptr<Executor>>> executors =
      CreateExecutors(options, metrics);
  if (!executors.ok()) return executors.status();
  auto core = std::make_unique<ServingCoreImpl>(options, *std::move(executors), metrics);
  if (!options.model_repository.empty()) {
    absl::StatusOr<RepositoryLoad> loaded = LoadModelRepository(options.model_repository, *core);
    if (!loaded.ok()) return loaded.status();
  }
  return std::unique_ptr<ConvServer>(new ConvServer(options, metrics, std::move(core)));
}

ConvServer::ConvServer(const ServerOptions& options, Metrics* metrics,
                       std::unique_ptr<ServingCoreImpl> core)
    : options_(options),
      metrics_(metrics),
      core_(std::move(core)),
      access_(std::make_unique<AccessControl>(
          AccessTokens{options.security.admin_token, options.security.inference_token}, metrics)),
      shared_memory_(
          options.allow_shared_memory
              ? std::make_unique<SharedMemoryRegistry>(
                    options.max_input_bytes,
                    options.pin_shared_memory ? core_->executors().front()->MakeHostMemoryPinner()
                                              : nullptr,
                    /*max_regions=*/1024, core_->executors().front()->MakeCudaIpcImporter())
              : nullptr) {
  if (shared_memory_ != nullptr && metrics_ != nullptr) {
    shared_memory_->set_observer([metrics = metrics_](const SharedMemoryTotals& totals) {
      metrics->SetSharedMemory(totals.regions, totals.registered_bytes, totals.page_locked_bytes,
                               totals.gpu_bytes);
    });
  }
}

ConvServer::~ConvServer() { Shutdown(); }

absl::Status ConvServer::Start(const std::vector<grpc::Service*>& extra_services) {
  // Each device's gauge is set before the server answers health checks, from the snapshot the
  // health loop then compares against, so a device that breaks meanwhile is still a change.
  std::vector<bool> device_healthy;
  for (const auto& executor : core_->executors()) {
    device_healthy.push_back(executor->healthy());
    if (metrics_ != nullptr) {
      metrics_->SetDeviceHealthy(executor->device_name(), device_healthy.back());
    }
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials({options_.security.tls_cert_file, options_.security.tls_key_file,
                             options_.security.tls_client_ca_file});
  if (!credentials.ok()) return credentials.status();
  service_ = std::make_unique<Conv2dService>(*core_, metrics_, access_.get(), shared_memory_.get());
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, *credentials, &port_);
  if (options_.security.max_concurrent_streams > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                               options_.security.max_concurrent_streams);
  }
  for (const auto& [name, value] : Http2WindowChannelArgs(options_.transport.stream_window_bytes)) {
    builder.AddChannelArgument(name, value);
  }
  builder.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  builder.RegisterService(service_.get());
  for (grpc::Service* service : extra_services) builder.RegisterService(service);
  std::vector<UnaryCallHandler*> queued_calls = {service_.get()};
  for (grpc::Service* service : extra_services) {
    if (auto* handler = dynamic_cast<UnaryCallHandler*>(service)) queued_calls.push_back(handler);
  }
  call_queues_ = std::make_unique<UnaryCallQueues>(builder, std::move(queued_calls),
                                                   options_.transport.forward_threads);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    if (server_ != nullptr) server_->Shutdown();  // gRPC's server goes before its queues
    server_.reset();
    call_queues_.reset();  // shuts its queues down and drains them
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen));
  }
  call_queues_->Start();
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  for (const LayerSnapshot& layer : core_->ListLayers()) {
    health->SetServingStatus(layer.name, layer.info.ready());
  }
  core_->set_health_callback([health](const std::string& service, bool serving) {
    health->SetServingStatus(service, serving);
  });
  health->SetServingStatus("", core_->ready());
  health_thread_ = std::thread([this, device_healthy = std::move(device_healthy)]() mutable {
    HealthLoop(std::move(device_healthy));
  });
  LogInfo("listening on ", options_.listen, " (port ", port_, ")");
  return absl::OkStatus();
}

// The overall status follows the core: SERVING while at least one device is healthy. Polled
// because a device breaks inside a batch, far from any health code; each device's change is
// logged once and published as convserve_device_healthy.
void ConvServer::HealthLoop(std::vector<bool> device_healthy) {
  const auto& executors = core_->executors();
  bool last = core_->ready();
  while (!stop_health_.WaitForNotificationWithTimeout(absl::Milliseconds(200))) {
    for (size_t i = 0; i < executors.size(); ++i) {
      if (executors[i]->healthy() == device_healthy[i]) continue;
      device_healthy[i] = !device_healthy[i];
      if (metrics_ != nullptr) {
        metrics_->SetDeviceHealthy(executors[i]->device_name(), device_healthy[i]);
      }
      const size_t healthy =
          static_cast<size_t>(std::count(device_healthy.begin(), device_healthy.end(), true));
      if (device_healthy[i]) {
        LogInfo(executors[i]->device_name(), " is healthy again; ", healthy, " of ",
                executors.size(), " devices serve");
      } else {
        LogError(executors[i]->device_name(), " is unhealthy and gets no more batches; ", healthy,
                 " of ", executors.size(), " devices serve");
      }
    }
    const bool now = core_->ready();
    if (now != last) {
      server_->GetHealthCheckService()->SetServingStatus("", now);
      if (!now) LogError("the server is no longer ready (every device failed, or shutdown)");
      last = now;
    }
  }
}

void ConvServer::Shutdown() {
  if (shut_down_.exchange(true)) return;
  if (server_ != nullptr) {
    stop_health_.Notify();
    health_thread_.join();
    server_->GetHealthCheckService()->SetServingStatus("", false);
    // New requests are refused from here on and the batchers launch what they hold at once;
    // gRPC then stops accepting calls and waits until every accepted one is answered.
    core_->BeginShutdown();
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(options_.shutdown_grace_ms));
  }
  core_->Shutdown();
  // Every queued call has been finished by now: the queues can go.
  if (call_queues_ != nullptr) call_queues_->Shutdown();
  if (server_ != nullptr) server_->Wait();
  LogInfo("server stopped");
}

}  // namespace convserve
