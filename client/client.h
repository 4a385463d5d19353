// The C++ client of convserve's native API (convserve.v1.Conv2d) plus the standard gRPC health
// service. Every call returns absl::Status / StatusOr carrying the server's canonical code and
// message (common/grpc_status.h), so callers see NOT_FOUND, INVALID_ARGUMENT naming the field,
// RESOURCE_EXHAUSTED, UNAVAILABLE (server unreachable or draining) and so on unchanged.
//
// One Client holds one channel. The target may name several servers ("ipv4:10.0.0.1:50051,
// 10.0.0.2:50051", or a DNS name with several addresses): calls are then spread over all of
// them with round-robin load balancing. A Client is thread-safe; share one across threads.
// Clients with equal options share one TCP connection per server (gRPC's global subchannel
// pool); give each a distinct channel_tag for a connection of its own.
#pragma once

#include <grpcpp/channel.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls_credentials.h"
#include "convserve/v1/conv2d.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace convserve {

struct ClientOptions {
  // "host:port", "dns:///name:port", or "ipv4:127.0.0.1:5001,127.0.0.1:5002".
  std::string target = "127.0.0.1:50051";
  // Largest message sent or received (the server has its own limit, 64 MiB by default);
  // a 32x64x224x224 fp32 tensor is 392 MiB.
  int max_message_bytes = 512 << 20;
  // round_robin spreads calls over every resolved address; pick_first sticks to one.
  bool round_robin = true;
  // Deadline of quick calls (Forward, ListLayers, UnloadLayer, Health).
  absl::Duration call_timeout = absl::Seconds(60);
  // Deadline of calls that may auto-tune on the server (LoadLayer with warm-up sizes, Tune).
  absl::Duration tune_timeout = absl::Minutes(30);
  // TLS (mutual when cert and key are set); all empty: plaintext. Files that cannot be used
  // make every call fail with INVALID_ARGUMENT (check first with MakeChannelCredentials).
  ClientTlsFiles tls;
  // Sent as "authorization: Bearer <token>" on every call when set: the server's admin token
  // for LoadLayer, UnloadLayer and Tune, its inference token (or the admin one) for the rest.
  std::string token;
  // Set as a channel argument when non-zero. gRPC reuses one connection for channels whose
  // arguments are equal, so Clients with distinct tags each open their own TCP connection
  // (a load generator spreading calls over several connections needs this).
  int channel_tag = 0;
  // Fixed HTTP/2 stream receive window for replies, bytes (common/http2_window.h); 0: gRPC's
  // default (64 KiB grown by BDP probing).
  int stream_window_bytes = 0;
};

class Client {
 public:
  // Creates the channel; connecting happens lazily on the first call (or WaitForConnected).
  explicit Client(ClientOptions options);

  const ClientOptions& options() const { return options_; }

  // Blocks until the channel has a connected server or `timeout` passes (then false).
  bool WaitForConnected(absl::Duration timeout);

  // Loads or atomically replaces a layer. `weights` are OIHW raw elements of spec.dtype,
  // `bias` [out_channels] elements (empty unless spec.has_bias).
  absl::StatusOr<convserve::v1::LayerInfo> LoadLayer(
      const convserve::v1::LoadLayerRequest& request);
  absl::StatusOr<convserve::v1::LayerInfo> LoadLayer(const convserve::v1::LayerSpec& spec,
                                                     std::string weights, std::string bias = "");
  // Reads a model repository layer directory (client/layer_directory.h) and loads it.
  absl::StatusOr<convserve::v1::LayerInfo> LoadLayerFromDirectory(const std::string& dir);

  absl::Status UnloadLayer(const std::string& name);
  absl::StatusOr<std::vector<convserve::v1::LayerInfo>> ListLayers();
  // The layer named `name`; NOT_FOUND when the server has no such layer.
  absl::StatusOr<convserve::v1::LayerInfo> GetLayer(const std::string& name);

  // One forward pass. `timeout` overrides options().call_timeout when positive.
  absl::StatusOr<convserve::v1::ForwardResponse> Forward(
      const convserve::v1::ForwardRequest& request, absl::Duration timeout = absl::ZeroDuration());

  // Starts a forward pass and returns at once. `done` runs exactly once, on a gRPC thread, with
  // the outcome; `request` and `response` must stay alive until then. `done` must not block.
  void ForwardAsync(const convserve::v1::ForwardRequest& request,
                    convserve::v1::ForwardResponse* response, absl::Duration timeout,
                    std::function<void(absl::Status)> done);

  // Shared memory (the server must run with --allow_shared_memory; see client/shared_memory.h
  // for making an object): registers bytes [offset, offset + byte_size) of the shm_open object
  // `key` under `name`, which Forward requests then name in SharedMemoryRange.region.
  absl::Status RegisterSharedMemory(const std::string& name, const std::string& key, int64_t offset,
                                    int64_t byte_size);
  // The same for GPU memory on the server's host (a GPU server only; see
  // client/cuda_shared_memory.h): bytes [offset, offset + byte_size) of the allocation the
  // 64-byte cudaIpcMemHandle_t `ipc_handle` names, on CUDA device `device_id`.
  absl::Status RegisterCudaSharedMemory(const std::string& name, const std::string& ipc_handle,
                                        int device_id, int64_t offset, int64_t byte_size);
  // Empty `name`: every region.
  absl::Status UnregisterSharedMemory(const std::string& name);
  absl::StatusOr<std::vector<convserve::v1::RegisterSharedMemoryRequest>> SharedMemoryStatus(
      const std::string& name = "");

  absl::StatusOr<convserve::v1::TuneResponse> Tune(const convserve::v1::TuneRequest& request);

  // grpc.health.v1 Check: "" is the server as a whole, a layer's name its readiness. NOT_FOUND
  // for a name the server does not know.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "");

 private:
  // A context whose deadline is now + `timeout`.
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<convserve::v1::Conv2d::Stub> conv2d_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

}  // namespace convserve
