// Everything configurable about a server, as plain values. main() copies its flags in here;
// libraries and tests never read flags.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace convserve {

// Server-wide dynamic-batching defaults; a layer's LayerSpec.batching overrides the first three.
struct BatchingDefaults {
  int max_batch_size = 32;           // samples (sum of request N) per launch
  int64_t max_queue_delay_us = 500;  // how long the oldest request may wait for company
  std::vector<int> preferred_batch_sizes;
  int64_t max_queue_requests = 1024;           // per layer
  int64_t max_queue_bytes = int64_t{1} << 30;  // input bytes queued per layer
};

// Transport security and access control of the gRPC port (docs/hardening.md).
struct SecurityOptions {
  std::string tls_cert_file;       // PEM; with tls_key_file: TLS, else plaintext
  std::string tls_key_file;        // PEM
  std::string tls_client_ca_file;  // PEM; set: mutual TLS (clients need a certificate it signed)
  std::string admin_token;         // set: LoadLayer, UnloadLayer and Tune need it
  std::string inference_token;     // set: Forward, ListLayers and KServe inference need it
  int max_concurrent_streams = 0;  // per connection; 0: gRPC's default
};

// HTTP/2 transport settings of the gRPC port (common/http2_window.h, docs/operations.md).
struct TransportOptions {
  // Fixed stream receive window for requests, bytes, BDP probing off; 0: gRPC's own flow control
  // (64 KiB grown by BDP probing), which answered a lone 401 KB request ~30% sooner on the H100
  // host and matched a fixed window under load (bench/results/2026-12-06-window-sweep-h100).
  int stream_window_bytes = 0;
  // Threads (each with its own completion queue) that receive Forward and ModelInfer calls and
  // send their replies (server/unary_call_queues.h); <= 0: one per core.
  int forward_threads = 0;
};

inline constexpr int kMaxGpuLanes = 8;

struct ServerOptions {
  std::string listen = "0.0.0.0:50051";
  std::string metrics_listen = "0.0.0.0:9464";
  std::string model_repository;  // empty: start with no layers
  std::string device = "auto";   // auto | cpu | cuda:N
  // Several executors: "all" GPUs, or a comma list ("0,1", "cuda:0,cuda:2", "cpu,cpu"); empty:
  // one executor as `device` says. Set, `device` must stay "auto" (server/device.h).
  std::string devices;
  // gRPC receive/send limit; fits a 1x64x224x224 fp32 tensor (12.25 MiB) with headroom.
  int64_t max_message_bytes = int64_t{64} << 20;
  int64_t max_input_bytes = int64_t{48} << 20;     // per Forward request
  int64_t max_resident_bytes = int64_t{16} << 30;  // all layers' weights together
  int64_t max_layer_bytes = int64_t{2} << 30;      // one layer's weights
  BatchingDefaults batching;
  std::string state_dir = "./state";
  std::string tuning_cache;  // empty: <state_dir>/tuning_cache.tsv
  int cpu_threads = 0;       // CPU reference backend threads; <= 0 means one per core
  // How long graceful shutdown waits for accepted requests before cancelling the rest.
  int64_t shutdown_grace_ms = 30000;
  SecurityOptions security;
  TransportOptions transport;
  // How often the CUPTI sampler measures one GPU launch's achieved occupancy; <= 0 turns it off.
  int64_t occupancy_sample_interval_ms = 60000;
  // Issue each batch's kernels and copy out as one CUDA graph launch (captured per problem).
  bool cuda_graphs = true;
  // Batches in flight on each GPU at once, each lane with its own stream, staging buffers and
  // thread: with two, one batch's copies overlap the other's kernel. More lanes help when the
  // host's per-batch work (staging, issuing, answering), not the GPU, is what a batch waits for.
  int gpu_lanes = 2;  // 1 to kMaxGpuLanes
  // Serve RegisterSharedMemory and tensors in shared memory (convserve.v1's SharedMemoryRange):
  // for clients on this host, who then send no tensor bytes. Off by default: a client can then
  // name any shared-memory object the server's user may open.
  bool allow_shared_memory = false;
  // On a GPU, page-lock registered regions so that batches copy tensors straight between them
  // and the device (shared_memory.h); off: the server reads and writes them (pread, pwrite).
  bool pin_shared_memory = true;
};

}  // namespace convserve
