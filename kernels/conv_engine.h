// The CUDA conv library's public face for one GPU: weights in, problem description in, tuned
// launch out. The server reaches the kernels only through this header (and cpu_reference.h for
// machines without a GPU); tile configurations, kernel kinds and the tuner's internals stay
// behind it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/conv_problem.h"

// Forward-declared so users of this header need not include the CUDA runtime headers.
struct CUstream_st;

namespace convserve {

using CudaStream = CUstream_st*;

// Device-resident weights and bias of one layer, already transformed into the layout every
// kernel kind that may run them wants. Immutable; share freely between threads.
class PackedWeights {
 public:
  virtual ~PackedWeights() = default;
  virtual const ConvParams& params() const = 0;
  // Device memory held, in bytes.
  virtual int64_t resident_bytes() const = 0;
};

// What ConvEngine::Plan chose for one problem: which configuration runs it and the workspace it
// needs. Cheap to copy.
struct ConvLaunch {
  int config_index = -1;       // into the engine's configuration table
  std::string config_name;     // e.g. "b128x128x32_w64x64_s3"
  int64_t workspace_bytes = 0;  // device scratch Run needs (split-K partial sums, layout
                                // conversion); 0 for most
  bool tuned = false;          // measured for this shape, rather than a heuristic default
};

// One measured choice, for introspection (ListLayers, the Tune RPC) and logs.
struct TuningResult {
  ConvProblem problem;  // the tuned problem; batch is the bucket's batch size
  std::string config;
  double time_us = 0;
  std::string runner_up;  // empty when only one configuration could run the problem
  double runner_up_time_us = 0;
  double tuning_seconds = 0;  // GPU-side time spent measuring
};

// Static and measured facts of one configuration, for the metrics.
struct ConfigOccupancy {
  std::string config;
  int registers_per_thread = 0;
  int shared_bytes_per_block = 0;
  int spill_bytes = 0;  // local memory per thread
  int threads_per_block = 0;
  double theoretical_occupancy = 0;  // active warps / max warps per SM, 0..1
};

struct TunerCounters {
  int64_t runs = 0;          // keys tuned
  int64_t cache_hits = 0;    // Plan found a tuned entry
  int64_t cache_misses = 0;  // Plan fell back to a nearest bucket or heuristic
  double seconds = 0;        // wall seconds spent tuning
};

struct ConvEngineOptions {
  int device = 0;
  // File that keeps tuning results across restarts; empty keeps them in memory only.
  std::string tuning_cache_path;
  // When Plan meets an untuned shape, tune it on a background thread (else only on Tune()).
  bool background_tuning = true;
};

// One per GPU. Thread-safe: any number of threads may call any method concurrently.
class ConvEngine {
 public:
  // Selects the device and builds the configuration table. FAILED_PRECONDITION when no usable
  // GPU is present, with the CUDA error text.
  static absl::StatusOr<std::unique_ptr<ConvEngine>> Create(const ConvEngineOptions& options);
  virtual ~ConvEngine() = default;

  // "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)".
  virtual std::string device_name() const = 0;
  virtual int64_t device_memory_total() const = 0;
  virtual int64_t device_memory_used() const = 0;

  // Copies host OIHW weights (and bias, when params.has_bias) to the device and transforms them.
  // Blocks until resident. INVALID_ARGUMENT for bad params, RESOURCE_EXHAUSTED when device
  // memory runs out.
  virtual absl::StatusOr<std::shared_ptr<const PackedWeights>> PackWeights(
      const ConvParams& params, const void* weights_oihw, const void* bias) = 0;

  // Chooses the configuration for `problem`: the tuned one when the problem's batch bucket is
  // cached, else the nearest tuned bucket's or a heuristic default, scheduling the bucket for
  // background tuning. Never waits for tuning. INVALID_ARGUMENT when no configuration can run it.
  virtual absl::StatusOr<ConvLaunch> Plan(const ConvProblem& problem) = 0;

  // Measures every configuration that can run `problem` (batch rounded to its bucket) and
  // caches the fastest, unless already cached; blocks until done. Concurrent calls for the same
  // key tune once.
  virtual absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) = 0;

  // Enqueues the launch on `stream`: `input` and `output` are device pointers in the problem's
  // layouts, `workspace` at least launch.workspace_bytes. Returns the launch error, if any; the
  // kernel's own completion is the stream's business.
  virtual absl::Status Run(const ConvProblem& problem, const ConvLaunch& launch,
                           const PackedWeights& weights, const void* input, void* output,
                           void* workspace, CudaStream stream) = 0;

  // Every cached tuning result whose problem has these params.
  virtual std::vector<TuningResult> TunedFor(const ConvParams& params) const = 0;
  virtual TunerCounters tuner_counters() const = 0;
  // Resource usage and theoretical occupancy of `launch`'s configuration on `problem`.
  virtual ConfigOccupancy Occupancy(const ConvProblem& problem, const ConvLaunch& launch) const = 0;
};

}  // namespace convserve
