// The tuner: an in-memory map from problem key to measured choice, single-flight measurement,
// and one background worker for keys that Choose() met untuned. The cache file's format lives in
// kernels/tuning_cache_file.cc; what to keep from it and when to write it is decided here.
#include "kernels/tuner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <map>
#include <set>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernels/tuning_cache_file.h"

namespace convserve {
namespace {

bool SameParams(const ConvParams& a, const ConvParams& b) {
  return a.in_channels == b.in_channels && a.out_channels == b.out_channels &&
         a.kernel_h == b.kernel_h && a.kernel_w == b.kernel_w && a.stride_h == b.stride_h &&
         a.stride_w == b.stride_w && a.pad_h == b.pad_h && a.pad_w == b.pad_w &&
         a.dilation_h == b.dilation_h && a.dilation_w == b.dilation_w && a.groups == b.groups &&
         a.dtype == b.dtype && a.fp32_math == b.fp32_math && a.has_bias == b.has_bias &&
         a.activation == b.activation;
}

bool SameFingerprint(const TuningFingerprint& a, const TuningFingerprint& b) {
  return a.gpu_name == b.gpu_name && a.sm_count == b.sm_count &&
         a.compute_capability == b.compute_capability && a.driver_version == b.driver_version &&
         a.library_version == b.library_version;
}

// Same GPU model: a record for it under another driver or library version is stale, not foreign.
bool SameGpu(const TuningFingerprint& a, const TuningFingerprint& b) {
  return a.gpu_name == b.gpu_name && a.sm_count == b.sm_count &&
         a.compute_capability == b.compute_capability;
}

// Everything of the key except the batch bucket: the entries of one shape share it.
std::string ShapeKey(const ConvProblem& problem) {
  ConvProblem shape = problem;
  shape.batch = 0;
  return shape.ToString();
}

using tuning_cache::Record;

void LogToStderr(const std::string& line) {
  std::fprintf(stderr, "convserve tuner: %s\n", line.c_str());
}

}  // namespace

int64_t BatchBucket(int64_t batch) {
  constexpr int64_t kLargestBucket = int64_t{1} << 62;
  if (batch <= 1) return 1;
  if (batch > kLargestBucket) return kLargestBucket;
  int64_t bucket = 1;
  while (bucket < batch) bucket <<= 1;
  return bucket;
}

std::string TuningFingerprint::ToString() const {
  return absl::StrCat(gpu_name.empty() ? "unknown GPU" : gpu_name, ", ", sm_count, " SMs, sm_",
                      compute_capability, ", driver ", driver_version, ", library ",
                      library_version.empty() ? "?" : library_version);
}

class Tuner::Impl {
 public:
  Impl(TunerOptions options, MeasureFn measure)
      : options_(std::move(options)), measure_(std::move(measure)) {
    if (!options_.log) options_.log = LogToStderr;
    if (options_.cache_path.empty()) return;
    tuning_cache::RemoveStaleTemporaryFiles(options_.cache_path);
    tuning_cache::FileContents file = tuning_cache::ReadFile(options_.cache_path);
    for (const std::string& warning : file.warnings) options_.log(warning);
    absl::MutexLock lock(&mu_);
    for (Record& record : file.records) AdoptLocked(std::move(record));
  }

  ~Impl() {
    std::thread worker;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      queue_.clear();
      queued_.clear();
      worker = std::move(worker_);
    }
    if (worker.joinable()) worker.join();
  }

  std::optional<TunedEntry> Choose(const ConvProblem& problem) {
    if (!ValidateProblem(problem).ok()) return std::nullopt;
    ConvProblem bucketed = problem;
    bucketed.batch = BatchBucket(problem.batch);
    const std::string shape_key = ShapeKey(bucketed);
    std::optional<TunedEntry> chosen;
    std::string warning;
    {
      absl::MutexLock lock(&mu_);
      auto shape = cache_.find(shape_key);
      if (shape != cache_.end()) {
        auto exact = shape->second.find(bucketed.batch);
        if (exact != shape->second.end()) {
          ++hits_;
          return exact->second.entry;
        }
      }
      ++misses_;
      warning = ScheduleLocked(bucketed);
      if (shape != cache_.end()) chosen = NearestLocked(shape->second, bucketed.batch);
    }
    if (!warning.empty()) options_.log(warning);
    return chosen;
  }

  absl::StatusOr<TunedEntry> Tune(const ConvProblem& problem) {
    if (absl::Status s = ValidateProblem(problem); !s.ok()) return s;
    ConvProblem bucketed = problem;
    bucketed.batch = BatchBucket(problem.batch);
    const std::string key = bucketed.ToString();
    std::shared_ptr<Flight> flight;
    {
      absl::MutexLock lock(&mu_);
      if (const Cached* cached = FindLocked(bucketed)) return cached->entry;
      auto it = in_flight_.find(key);
      if (it != in_flight_.end()) {
        // Someone is measuring this key: wait for their result instead of measuring again.
        flight = it->second;
        mu_.Await(absl::Condition(&flight->done));
        return flight->result;
      }
      flight = std::make_shared<Flight>();
      in_flight_.emplace(key, flight);
    }
    absl::StatusOr<TunedEntry> result = Measure(bucketed, key);
    int64_t generation = 0;
    {
      absl::MutexLock lock(&mu_);
      ++runs_;
      if (result.ok()) {
        tuning_seconds_ += result->measure_wall_seconds;
        InsertLocked(bucketed, *result, /*replace=*/true);
        generation = generation_;
        failed_.erase(key);
      }
      flight->result = result;
      flight->done = true;
      in_flight_.erase(key);
    }
    if (result.ok()) {
      if (absl::Status s = Save(generation); !s.ok()) options_.log(std::string(s.message()));
    }
    return result;
  }

  std::vector<std::pair<ConvProblem, TunedEntry>> EntriesFor(const ConvParams& params) const {
    std::vector<std::pair<ConvProblem, TunedEntry>> out;
    absl::MutexLock lock(&mu_);
    for (const auto& [shape, buckets] : cache_) {
      for (const auto& [bucket, cached] : buckets) {
        if (SameParams(cached.problem.params, params)) {
          out.emplace_back(cached.problem, cached.entry);
        }
      }
    }
    return out;
  }

  void WaitIdle() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
          return self->stopping_ || (self->queue_.empty() && !self->worker_busy_);
        },
        this));
  }

  int64_t runs() const {
    absl::MutexLock lock(&mu_);
    return runs_;
  }
  int64_t cache_hits() const {
    absl::MutexLock lock(&mu_);
    return hits_;
  }
  int64_t cache_misses() const {
    absl::MutexLock lock(&mu_);
    return misses_;
  }
  double tuning_seconds() const {
    absl::MutexLock lock(&mu_);
    return tuning_seconds_;
  }

 private:
  struct Cached {
    ConvProblem problem;  // batch is the bucket
    TunedEntry entry;
  };
  // One measurement in progress; callers asking for the same key wait on `done`.
  struct Flight {
    bool done = false;
    absl::StatusOr<TunedEntry> result = absl::UnknownError("tuning did not finish");
  };
  // failed_ is forgotten when it grows past this, so that keys failing for transient reasons get
  // another chance and hostile shapes cannot grow it without bound.
  static constexpr size_t kMaxRememberedFailures = 1024;

  static int Log2(int64_t bucket) {
    int log = 0;
    while (bucket > 1) {
      bucket >>= 1;
      ++log;
    }
    return log;
  }

  // The entry of the bucket nearest `bucket` by log2 distance; on a tie the smaller bucket's,
  // whose tiles still fill the GPU at the larger batch, where the larger one's may leave SMs
  // idle at the smaller.
  static std::optional<TunedEntry> NearestLocked(const std::map<int64_t, Cached>& buckets,
                                                 int64_t bucket) {
    const int target = Log2(bucket);
    const Cached* best = nullptr;
    int best_distance = 0;
    for (const auto& [candidate, cached] : buckets) {  // ascending, so ties keep the smaller
      const int distance = std::abs(Log2(candidate) - target);
      if (best == nullptr || distance < best_distance) {
        best = &cached;
        best_distance = distance;
      }
    }
    if (best == nullptr) return std::nullopt;
    return best->entry;
  }

  const Cached* FindLocked(const ConvProblem& bucketed) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto shape = cache_.find(ShapeKey(bucketed));
    if (shape == cache_.end()) return nullptr;
    auto it = shape->second.find(bucketed.batch);
    return it == shape->second.end() ? nullptr : &it->second;
  }

  void InsertLocked(const ConvProblem& bucketed, const TunedEntry& entry, bool replace)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto [it, inserted] =
        cache_[ShapeKey(bucketed)].try_emplace(bucketed.batch, Cached{bucketed, entry});
    if (inserted) {
      ++entries_;
    } else if (replace) {
      it->second = Cached{bucketed, entry};
    } else {
      return;
    }
    ++generation_;
  }

  // Takes a record read from the file: ours into the cache (unless measured here already), other
  // GPUs' kept to be written back, this GPU's under another driver or library dropped as stale.
  void AdoptLocked(Record record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (SameFingerprint(record.fingerprint, options_.fingerprint)) {
      InsertLocked(record.problem, record.entry, /*replace=*/false);
    } else if (!SameGpu(record.fingerprint, options_.fingerprint)) {
      const TuningFingerprint& f = record.fingerprint;
      ForeignId id{f.gpu_name,       f.sm_count,        f.compute_capability,
                   f.driver_version, f.library_version, record.problem.ToString()};
      foreign_[std::move(id)] = std::move(record);
    }
  }

  // Queues `bucketed` for the worker unless it is queued, being tuned, failed before, or the
  // queue or cache is full. Returns a warning to log (after the lock is released), or "".
  std::string ScheduleLocked(const ConvProblem& bucketed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!options_.background_tuning || stopping_) return "";
    if (static_cast<int64_t>(queue_.size()) >= std::max(options_.max_queued, 1)) return "";
    if (entries_ >= options_.max_entries) {
      if (warned_full_) return "";
      warned_full_ = true;
      return absl::StrCat("tuning cache holds ", entries_,
                          " entries (max_entries): new keys are tuned only by Tune() from now on");
    }
    std::string key = bucketed.ToString();
    if (queued_.count(key) || in_flight_.count(key) || failed_.count(key)) return "";
    queue_.push_back(bucketed);
    queued_.insert(std::move(key));
    if (!worker_.joinable()) worker_ = std::thread([this] { WorkerLoop(); });
    return "";
  }

  void WorkerLoop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(
          +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->queue_.empty();
          },
          this));
      if (stopping_) return;
      ConvProblem problem = queue_.front();
      queue_.pop_front();
      const std::string key = problem.ToString();
      queued_.erase(key);
      worker_busy_ = true;
      mu_.Unlock();
      absl::StatusOr<TunedEntry> result = Tune(problem);
      if (!result.ok()) {
        options_.log(absl::StrCat("background tuning of ", key,
                                  " failed: ", result.status().ToString(),
                                  "; not retried in the background until a Tune() call"));
      }
      mu_.Lock();
      if (!result.ok()) {
        if (failed_.size() >= kMaxRememberedFailures) failed_.clear();
        failed_.insert(key);
      }
      worker_busy_ = false;
    }
  }

  // Calls the engine's MeasureFn and keeps the fastest and the runner-up.
  absl::StatusOr<TunedEntry> Measure(const ConvProblem& bucketed, const std::string& key) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<CandidateTime>> times =
        absl::InternalError("measure function did not run");
    try {
      times = measure_(bucketed);
    } catch (const std::exception& e) {
      times = absl::InternalError(absl::StrCat("measure function threw: ", e.what()));
    } catch (...) {
      times = absl::InternalError("measure function threw");
    }
    const double wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (!times.ok()) {
      return absl::Status(times.status().code(),
                          absl::StrCat("tuning ", key, ": ", times.status().message()));
    }
    // The fastest time per configuration; unusable measurements are dropped.
    std::map<std::string, double> best_per_config;
    double gpu_us = 0;
    for (const CandidateTime& c : *times) {
      if (std::isfinite(c.gpu_time_us) && c.gpu_time_us > 0) gpu_us += c.gpu_time_us;
      if (c.config.empty() || !std::isfinite(c.time_us) || c.time_us < 0) continue;
      auto [it, inserted] = best_per_config.emplace(c.config, c.time_us);
      if (!inserted) it->second = std::min(it->second, c.time_us);
    }
    if (best_per_config.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tuning ", key, ": no configuration could run the problem"));
    }
    std::vector<std::pair<double, std::string>> ranked;
    for (const auto& [config, time_us] : best_per_config) ranked.emplace_back(time_us, config);
    std::sort(ranked.begin(), ranked.end());
    TunedEntry entry;
    entry.config = ranked[0].second;
    entry.time_us = ranked[0].first;
    if (ranked.size() > 1) {
      entry.runner_up = ranked[1].second;
      entry.runner_up_time_us = ranked[1].first;
    }
    entry.measure_wall_seconds = wall_seconds;
    entry.measure_gpu_seconds = gpu_us * 1e-6;
    return entry;
  }

  // Rewrites the cache file with every entry, unless a rewrite that started after cache
  // generation `generation` already did (concurrent tunings then share one write). Merges first
  // what other Tuner instances or processes sharing the file wrote since, so that they do not
  // erase each other's entries. Errors are for the caller to log, outside the locks.
  absl::Status Save(int64_t generation) {
    if (options_.cache_path.empty()) return absl::OkStatus();
    absl::MutexLock save_lock(&save_mu_);
    if (saved_generation_ >= generation) return absl::OkStatus();
    // Other Tuners on this file (one per GPU of a server, other processes) merge and write one
    // at a time: without it, two saves that read the file before either wrote drop each other's
    // new entries.
    tuning_cache::DirectoryLock file_lock(options_.cache_path);
    // Its warnings were given at load.
    tuning_cache::FileContents file = tuning_cache::ReadFile(options_.cache_path);
    std::string contents = tuning_cache::Header();
    int64_t snapshot_generation = 0;
    {
      absl::MutexLock lock(&mu_);
      for (Record& record : file.records) AdoptLocked(std::move(record));
      snapshot_generation = generation_;
      // A record too long for the reader (only possible with absurd names) is left out rather
      // than written to be rejected at the next load.
      auto append = [&contents](const Record& record) {
        std::string line = tuning_cache::FormatRecord(record);
        if (line.size() <= tuning_cache::kMaxLineBytes) absl::StrAppend(&contents, line, "\n");
      };
      for (const auto& [shape, buckets] : cache_) {
        for (const auto& [bucket, cached] : buckets) {
          append(Record{options_.fingerprint, cached.problem, cached.entry});
        }
      }
      for (const auto& [id, record] : foreign_) append(record);
    }
    if (absl::Status s = tuning_cache::WriteFileAtomically(options_.cache_path, contents);
        !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat("tuning cache ", options_.cache_path, ": not saved: ", s.message(),
                                 "; results are kept in memory"));
    }
    saved_generation_ = snapshot_generation;
    return absl::OkStatus();
  }

  TunerOptions options_;
  const MeasureFn measure_;

  mutable absl::Mutex mu_;
  // Shape key (the problem key without batch) -> bucket -> entry, for this fingerprint.
  std::map<std::string, std::map<int64_t, Cached>> cache_ ABSL_GUARDED_BY(mu_);
  int64_t entries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by every change to cache_
  // Other GPUs' records from the file, written back unchanged.
  using ForeignId = std::tuple<std::string, int, int, int, std::string, std::string>;
  std::map<ForeignId, Record> foreign_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Flight>> in_flight_ ABSL_GUARDED_BY(mu_);
  std::deque<ConvProblem> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> queued_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> failed_ ABSL_GUARDED_BY(mu_);  // background tuning failed
  bool warned_full_ ABSL_GUARDED_BY(mu_) = false;
  bool worker_busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_ ABSL_GUARDED_BY(mu_);
  int64_t runs_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  double tuning_seconds_ ABSL_GUARDED_BY(mu_) = 0;

  // Serializes file rewrites so that a later snapshot is never overwritten by an earlier one.
  absl::Mutex save_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  int64_t saved_generation_ ABSL_GUARDED_BY(save_mu_) = 0;  // of the last snapshot written
};

Tuner::Tuner(TunerOptions options, MeasureFn measure)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(measure))) {}
Tuner::~Tuner() = default;

std::string Tuner::Key(const ConvProblem& problem) {
  ConvProblem bucketed = problem;
  bucketed.batch = BatchBucket(problem.batch);
  return bucketed.ToString();
}

std::optional<TunedEntry> Tuner::Choose(const ConvProblem& problem) {
  return impl_->Choose(problem);
}
absl::StatusOr<TunedEntry> Tuner::Tune(const ConvProblem& problem) { return impl_->Tune(problem); }
std::vector<std::pair<ConvProblem, TunedEntry>> Tuner::EntriesFor(const ConvParams& params) const {
  return impl_->EntriesFor(params);
}
void Tuner::WaitIdle() { impl_->WaitIdle(); }
int64_t Tuner::runs() const { return impl_->runs(); }
int64_t Tuner::cache_hits() const { return impl_->cache_hits(); }
int64_t Tuner::cache_misses() const { return impl_->cache_misses(); }
double Tuner::tuning_seconds() const { return impl_->tuning_seconds(); }

}  // namespace convserve
