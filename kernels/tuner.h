// Per-shape auto-tuning bookkeeping: which configuration is fastest for each problem key, kept
// in memory and in a file across restarts, with one tuning per key however many callers ask.
// Knows nothing of CUDA: the engine hands it a function that times candidates.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/conv_problem.h"

namespace convserve {

// Rounds a batch size up to its tuning bucket: the next power of two.
int64_t BatchBucket(int64_t batch);

// Identifies the hardware and software a tuning result is valid for. Entries recorded under a
// different fingerprint are ignored.
struct TuningFingerprint {
  std::string gpu_name;  // "NVIDIA H100 80GB HBM3"
  int sm_count = 0;
  int compute_capability = 0;  // 90
  int driver_version = 0;      // cudaDriverGetVersion
  std::string library_version;  // the conv library's configuration-table version
  std::string ToString() const;
};

// One measured candidate.
struct CandidateTime {
  std::string config;
  double time_us = 0;
};

// The result kept for one key.
struct TunedEntry {
  std::string config;
  double time_us = 0;
  std::string runner_up;
  double runner_up_time_us = 0;
};

struct TunerOptions {
  TuningFingerprint fingerprint;
  std::string cache_path;         // empty: memory only
  bool background_tuning = true;  // Choose() schedules untuned keys on a background thread
};

// Thread-safe.
class Tuner {
 public:
  // Times each candidate configuration for `problem` and returns their times; candidates that
  // fail are left out. Supplied by the engine; called on the tuning thread.
  using MeasureFn = std::function<absl::StatusOr<std::vector<CandidateTime>>(const ConvProblem&)>;

  // Loads the cache file when there is one. A missing file is an empty cache; an unreadable or
  // corrupt one logs a warning and starts empty (it is rewritten on the next save).
  Tuner(TunerOptions options, MeasureFn measure);
  ~Tuner();  // waits for background tuning to finish

  // The key a problem is cached under: the problem with batch replaced by its bucket.
  static std::string Key(const ConvProblem& problem);

  // Non-blocking: the cached choice for `problem`'s bucket, else the nearest tuned bucket of
  // the same shape; schedules the bucket for background tuning when it is not cached. nullopt
  // when nothing of this shape is tuned (use a heuristic default).
  std::optional<TunedEntry> Choose(const ConvProblem& problem);

  // Blocking: tunes `problem`'s bucket unless cached, and saves the cache file. Concurrent calls
  // for one key measure once and all get its result.
  absl::StatusOr<TunedEntry> Tune(const ConvProblem& problem);

  // Every cached entry whose problem has these params, with the problem it was tuned for.
  std::vector<std::pair<ConvProblem, TunedEntry>> EntriesFor(const ConvParams& params) const;

  int64_t runs() const;
  int64_t cache_hits() const;
  int64_t cache_misses() const;
  double tuning_seconds() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace convserve
