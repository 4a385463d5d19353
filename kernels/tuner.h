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
  int compute_capability = 0;   // 90
  int driver_version = 0;       // cudaDriverGetVersion
  std::string library_version;  // the conv library's configuration-table version
  std::string ToString() const;
};

// One measured candidate.
struct CandidateTime {
  std::string config;
  double time_us = 0;
  // GPU time spent timing this candidate (warm-up plus repetitions), when the engine reports
  // it; summed into TunedEntry::measure_gpu_seconds.
  double gpu_time_us = 0;
};

// The result kept for one key.
struct TunedEntry {
  std::string config;
  double time_us = 0;
  std::string runner_up;  // empty when only one configuration could run the problem
  double runner_up_time_us = 0;
  double measure_wall_seconds = 0;  // wall time of the MeasureFn call that produced this entry
  double measure_gpu_seconds = 0;   // sum of the candidates' gpu_time_us
};

struct TunerOptions {
  TuningFingerprint fingerprint;
  std::string cache_path;         // empty: memory only
  bool background_tuning = true;  // Choose() schedules untuned keys on a background thread
  // Keys waiting for background tuning, at most; further misses are not queued (a later miss
  // queues them again once there is room).
  int max_queued = 64;
  // Entries at which Choose() stops scheduling new keys, so that requests with ever-new spatial
  // sizes cannot grow the cache and its file without bound; Tune() still adds entries.
  int64_t max_entries = 4096;
  // Receives warnings (unreadable or corrupt cache file, failed saves, failed background tuning)
  // as single lines. Empty: written to stderr. Called from any thread, never under a lock.
  std::function<void(const std::string&)> log;
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
  // Lets the background tuning in progress finish and drops the keys still queued.
  ~Tuner();

  // The key a problem is cached under: the problem with batch replaced by its bucket.
  static std::string Key(const ConvProblem& problem);

  // Non-blocking: the cached choice for `problem`'s bucket, else the nearest tuned bucket of
  // the same shape; schedules the bucket for background tuning when it is not cached. nullopt
  // when nothing of this shape is tuned (use a heuristic default) or the problem is invalid.
  std::optional<TunedEntry> Choose(const ConvProblem& problem);

  // Blocking: tunes `problem`'s bucket unless cached, and saves the cache file. Concurrent calls
  // for one key measure once and all get its result. INVALID_ARGUMENT for an invalid problem or
  // when no candidate produced a usable time; otherwise MeasureFn's error, which is not cached.
  // A failed save is logged, not returned.
  absl::StatusOr<TunedEntry> Tune(const ConvProblem& problem);

  // Every cached entry whose problem has these params, with the problem it was tuned for.
  std::vector<std::pair<ConvProblem, TunedEntry>> EntriesFor(const ConvParams& params) const;

  // Blocks until the background queue is empty and no background tuning is running.
  void WaitIdle();

  int64_t runs() const;           // MeasureFn calls (keys measured), failed ones included
  int64_t cache_hits() const;     // Choose() found the exact bucket
  int64_t cache_misses() const;   // Choose() fell back to a nearest bucket or nullopt
  double tuning_seconds() const;  // wall seconds spent in MeasureFn

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace convserve
