// convserve-server: parses flags into ServerOptions, builds the server, serves until SIGINT or
// SIGTERM, then shuts down gracefully (accepted requests are answered) and exits 0.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/malloc_tuning.h"
#include "common/mutex_mode.h"
#include "server/log.h"
#include "server/metrics/metrics.h"
#include "server/server.h"
#include "server/server_options.h"
#ifdef CONVSERVE_HAVE_KSERVE
#include "server/kserve/kserve_service.h"
#endif

namespace {
const convserve::ServerOptions kDefaults;
const convserve::BatchingDefaults kBatching;

// A token from --<name> or, when that is empty, the first line of --<name>_file; false (with
// the reason on stderr) when the file cannot be read or holds no token.
bool ReadToken(const char* name, const std::string& flag, const std::string& file,
               std::string* token) {
  *token = flag;
  if (!token->empty() || file.empty()) return true;
  std::ifstream in(file);
  std::getline(in, *token);
  *token = std::string(absl::StripAsciiWhitespace(*token));
  if (!in.fail() && !token->empty()) return true;
  std::fprintf(stderr, "--%s_file: no token in '%s'\n", name, file.c_str());
  return false;
}
}  // namespace

ABSL_FLAG(std::string, listen, kDefaults.listen, "gRPC address to serve on (host:port)");
ABSL_FLAG(std::string, metrics_listen, kDefaults.metrics_listen,
          "address of the Prometheus /metrics endpoint (host:port); empty disables it");
ABSL_FLAG(std::string, model_repository, "",
          "directory with one sub-directory per layer (config.pbtxt, weights.npy, optional "
          "bias.npy) loaded at start; empty starts with no layers");
ABSL_FLAG(std::string, device, kDefaults.device,
          "auto (GPU 0 when usable, else the CPU reference backend), cpu, or cuda:N");
ABSL_FLAG(std::string, devices, "",
          "several executors, replacing --device (which must then stay auto): all (every "
          "visible CUDA GPU), or a comma list of GPUs (0,1 or cuda:0,cuda:2) or of CPU "
          "reference executors (cpu,cpu); batches go to the least-loaded healthy one");
ABSL_FLAG(int64_t, max_message_bytes, kDefaults.max_message_bytes,
          "largest gRPC message received or sent, in bytes");
ABSL_FLAG(int64_t, max_input_bytes, kDefaults.max_input_bytes,
          "largest Forward input tensor accepted, in bytes (larger: RESOURCE_EXHAUSTED)");
ABSL_FLAG(int64_t, max_resident_bytes, kDefaults.max_resident_bytes,
          "resident weight bytes of all layers together (a load over it: RESOURCE_EXHAUSTED)");
ABSL_FLAG(int64_t, max_layer_bytes, kDefaults.max_layer_bytes,
          "weight bytes of one layer (a load over it: RESOURCE_EXHAUSTED)");
ABSL_FLAG(int32_t, max_batch_size, kBatching.max_batch_size,
          "default samples per merged launch (a layer's spec.batching overrides it)");
ABSL_FLAG(int64_t, max_queue_delay_us, kBatching.max_queue_delay_us,
          "default longest wait of a request for others to batch with, in microseconds");
ABSL_FLAG(std::string, preferred_batch_sizes, "",
          "default comma-separated batch sizes that launch at once when reached with nothing "
          "else waiting, e.g. 8,16,32");
ABSL_FLAG(int64_t, max_queue_requests, kBatching.max_queue_requests,
          "requests queued per layer before new ones get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_queue_bytes, kBatching.max_queue_bytes,
          "input bytes queued per layer before new requests get RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, state_dir, kDefaults.state_dir,
          "directory for state kept across restarts (the tuning cache)");
ABSL_FLAG(std::string, tuning_cache, "",
          "file of auto-tuning results kept across restarts; default <state_dir>/tuning_cache.tsv");
ABSL_FLAG(int32_t, cpu_threads, kDefaults.cpu_threads,
          "threads of the CPU reference backend; 0 means one per core");
ABSL_FLAG(int64_t, shutdown_grace_ms, kDefaults.shutdown_grace_ms,
          "on SIGINT/SIGTERM, how long to wait for accepted requests before cancelling them");

ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the gRPC port; with --tls_key it serves TLS only");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle; set: mutual TLS, clients must present a certificate it signed");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the bearer token LoadLayer, UnloadLayer and Tune require; none: open");
ABSL_FLAG(std::string, admin_token, "",
          "the admin token itself (visible in the process list: prefer --admin_token_file)");
ABSL_FLAG(std::string, inference_token_file, "",
          "file holding the bearer token inference calls require (the admin token works too); "
          "none: inference is open");
ABSL_FLAG(std::string, inference_token, "",
          "the inference token itself (prefer --inference_token_file)");
ABSL_FLAG(int32_t, max_concurrent_streams, 0,
          "concurrent calls per client connection; 0: gRPC's default");
ABSL_FLAG(int32_t, grpc_stream_window_bytes, kDefaults.transport.stream_window_bytes,
          "fixed HTTP/2 stream receive window for requests, bytes, with BDP probing off; 0: "
          "gRPC's default (64 KiB grown by probing). See docs/operations.md");
ABSL_FLAG(int32_t, grpc_forward_threads, kDefaults.transport.forward_threads,
          "threads, each with its own completion queue, that receive Forward and KServe "
          "ModelInfer calls and send their replies (0 to 1024); 0: one per core");

ABSL_FLAG(bool, cuda_graphs, kDefaults.cuda_graphs,
          "issue each batch's kernels and output copy as one CUDA graph launch, captured once "
          "per problem shape on each executor lane; false issues them call by call");
ABSL_FLAG(int32_t, gpu_lanes, kDefaults.gpu_lanes,
          "batches in flight on each GPU at once (1 to 8), each with its own stream, staging "
          "buffers and thread; two let one batch's copies overlap the other's kernel");
ABSL_FLAG(bool, allow_shared_memory, kDefaults.allow_shared_memory,
          "serve RegisterSharedMemory and tensors in POSIX shared memory, for clients on this "
          "host (they may name any shared-memory object this server's user can open)");
ABSL_FLAG(bool, pin_shared_memory, kDefaults.pin_shared_memory,
          "with --allow_shared_memory on a GPU: page-lock each registered region so that its "
          "tensors are copied straight between it and the GPU; off: the server reads and "
          "writes them itself");
ABSL_FLAG(absl::Duration, occupancy_sample_interval, absl::Seconds(60),
          "how often one GPU launch's achieved occupancy is measured with CUPTI (at most one "
          "launch per interval, and only after the GPU went 100 ms without a launch: starting "
          "and ending a sample stall every CUDA call ~105 ms on an H100); 0 turns the sampler "
          "off");

int main(int argc, char** argv) {
  convserve::KeepLargeBuffersMapped();
  convserve::TurnOffMutexDeadlockDetection();
  absl::SetProgramUsageMessage(
      "serves conv2d layers over gRPC (convserve.v1.Conv2d, KServe v2, "
      "health, reflection), batching concurrent requests into tuned GPU launches.");
  // --help lists the flags defined here (Abseil's default looks for a file named after the
  // binary).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);

  convserve::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.model_repository = absl::GetFlag(FLAGS_model_repository);
  options.device = absl::GetFlag(FLAGS_device);
  options.devices = absl::GetFlag(FLAGS_devices);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_input_bytes = absl::GetFlag(FLAGS_max_input_bytes);
  options.max_resident_bytes = absl::GetFlag(FLAGS_max_resident_bytes);
  options.max_layer_bytes = absl::GetFlag(FLAGS_max_layer_bytes);
  options.batching.max_batch_size = absl::GetFlag(FLAGS_max_batch_size);
  options.batching.max_queue_delay_us = absl::GetFlag(FLAGS_max_queue_delay_us);
  options.batching.max_queue_requests = absl::GetFlag(FLAGS_max_queue_requests);
  options.batching.max_queue_bytes = absl::GetFlag(FLAGS_max_queue_bytes);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.tuning_cache = absl::GetFlag(FLAGS_tuning_cache);
  options.cpu_threads = absl::GetFlag(FLAGS_cpu_threads);
  options.shutdown_grace_ms = absl::GetFlag(FLAGS_shutdown_grace_ms);
  options.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  options.gpu_lanes = absl::GetFlag(FLAGS_gpu_lanes);
  options.allow_shared_memory = absl::GetFlag(FLAGS_allow_shared_memory);
  options.pin_shared_memory = absl::GetFlag(FLAGS_pin_shared_memory);
  if (options.allow_shared_memory) {
    // Each registered region holds a descriptor open: allow as many as the system lets us.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
      files.rlim_cur = files.rlim_max;
      setrlimit(RLIMIT_NOFILE, &files);
    }
  }
  options.occupancy_sample_interval_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_occupancy_sample_interval));
  options.security.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.security.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.security.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.security.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.transport.stream_window_bytes = absl::GetFlag(FLAGS_grpc_stream_window_bytes);
  options.transport.forward_threads = absl::GetFlag(FLAGS_grpc_forward_threads);
  if (!ReadToken("admin_token", absl::GetFlag(FLAGS_admin_token),
                 absl::GetFlag(FLAGS_admin_token_file), &options.security.admin_token) ||
      !ReadToken("inference_token", absl::GetFlag(FLAGS_inference_token),
                 absl::GetFlag(FLAGS_inference_token_file), &options.security.inference_token)) {
    return 2;
  }
  for (absl::string_view size :
       absl::StrSplit(absl::GetFlag(FLAGS_preferred_batch_sizes), ',', absl::SkipEmpty())) {
    int value = 0;
    if (!absl::SimpleAtoi(size, &value) || value < 1 || value > options.batching.max_batch_size) {
      std::fprintf(stderr, "--preferred_batch_sizes: '%s' is not a size in [1, %d]\n",
                   std::string(size).c_str(), options.batching.max_batch_size);
      return 2;
    }
    options.batching.preferred_batch_sizes.push_back(value);
  }
  if (options.batching.max_batch_size < 1 || options.batching.max_queue_delay_us < 0 ||
      options.batching.max_queue_requests < 1 || options.batching.max_queue_bytes < 1 ||
      options.max_message_bytes < 1 || options.max_message_bytes > (int64_t{1} << 31) - 1) {
    std::fprintf(stderr,
                 "--max_batch_size, --max_queue_requests and --max_queue_bytes must be >= 1, "
                 "--max_queue_delay_us >= 0 and --max_message_bytes in [1, 2^31)\n");
    return 2;
  }
  if (options.transport.stream_window_bytes != 0 && options.transport.stream_window_bytes < 65535) {
    std::fprintf(stderr, "--grpc_stream_window_bytes must be 0 (gRPC's default) or >= 65535\n");
    return 2;
  }
  if (options.transport.forward_threads < 0 || options.transport.forward_threads > 1024) {
    std::fprintf(stderr, "--grpc_forward_threads must be 0 (one per core) to 1024\n");
    return 2;
  }

  // A crash (SIGSEGV, SIGABRT, ...) writes its signal and a symbolised stack to stderr before the
  // process dies, so the log says where. (SIGTERM is blocked below, so shutdown stays graceful.)
  absl::InitializeSymbolizer(argv[0]);
  absl::InstallFailureSignalHandler(absl::FailureSignalHandlerOptions());

  // Block the shutdown signals in every thread (they inherit the mask); main waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<std::unique_ptr<convserve::Metrics>> metrics =
      convserve::Metrics::Create(options.metrics_listen);
  if (!metrics.ok()) {
    convserve::LogError("metrics: ", metrics.status().ToString());
    return 1;
  }

  // Declared before the server so they outlive it.
  std::vector<std::unique_ptr<grpc::Service>> extra_services;
  absl::StatusOr<std::unique_ptr<convserve::ConvServer>> server =
      convserve::ConvServer::Create(options, metrics->get());
  if (!server.ok()) {
    convserve::LogError("cannot start: ", server.status().ToString());
    // A bad flag value (e.g. --devices) is a usage error, like the checks above.
    return server.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
#ifdef CONVSERVE_HAVE_KSERVE
  extra_services.push_back(std::make_unique<convserve::KserveService>(
      (*server)->core(), "convserve", convserve::KserveService::BuildVersion(), (*server)->access(),
      (*server)->shared_memory()));
#endif
  std::vector<grpc::Service*> services;
  for (const auto& service : extra_services) services.push_back(service.get());
  if (absl::Status started = (*server)->Start(services); !started.ok()) {
    convserve::LogError("cannot start: ", started.ToString());
    return 1;
  }

  int signal = 0;
  sigwait(&signals, &signal);
  convserve::LogInfo("received ", signal == SIGINT ? "SIGINT" : "SIGTERM",
                     "; shutting down gracefully");
  (*server)->Shutdown();
  return 0;
}
