#include "server/parallel_copy.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

namespace convserve {

// One Copy() call: its pieces, claimed through `next`; `left` counts the pieces not yet copied.
struct ParallelCopier::Job {
  std::vector<Range> pieces;
  std::atomic<size_t> next{0};
  absl::Mutex mu;
  size_t left ABSL_GUARDED_BY(mu) = 0;

  // Claims and copies pieces until none is left to claim; false when there was none.
  bool CopySome() {
    bool copied = false;
    for (size_t i = next.fetch_add(1, std::memory_order_relaxed); i < pieces.size();
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      std::memcpy(pieces[i].dst, pieces[i].src, pieces[i].bytes);
      absl::MutexLock lock(&mu);
      --left;
      copied = true;
    }
    return copied;
  }
  bool claimed_all() const { return next.load(std::memory_order_relaxed) >= pieces.size(); }
};

ParallelCopier::ParallelCopier(int helpers) {
  for (int i = 0; i < helpers; ++i) threads_.emplace_back([this] { HelperLoop(); });
}

ParallelCopier::~ParallelCopier() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

void ParallelCopier::Copy(absl::Span<const Range> ranges) {
  size_t total = 0;
  for (const Range& range : ranges) total += range.bytes;
  const size_t max_pieces = static_cast<size_t>(helpers()) + 1;
  const size_t piece_bytes = std::max(kMinPieceBytes, (total + max_pieces - 1) / max_pieces);
  if (helpers() == 0 || total < 2 * kMinPieceBytes) {
    for (const Range& range : ranges) std::memcpy(range.dst, range.src, range.bytes);
    return;
  }
  auto job = std::make_shared<Job>();
  for (const Range& range : ranges) {
    for (size_t offset = 0; offset < range.bytes; offset += piece_bytes) {
      const size_t bytes = std::min(piece_bytes, range.bytes - offset);
      job->pieces.push_back(Range{static_cast<char*>(range.dst) + offset,
                                  static_cast<const char*>(range.src) + offset, bytes});
    }
  }
  {
    absl::MutexLock lock(&job->mu);
    job->left = job->pieces.size();
  }
  {
    absl::MutexLock lock(&mu_);
    jobs_.push_back(job);
  }
  job->CopySome();
  {
    absl::MutexLock lock(&mu_);
    jobs_.erase(std::remove(jobs_.begin(), jobs_.end(), job), jobs_.end());
  }
  // Pieces a helper claimed may still be in flight.
  absl::MutexLock lock(&job->mu);
  job->mu.Await(absl::Condition(
      +[](size_t* left) ABSL_NO_THREAD_SAFETY_ANALYSIS { return *left == 0; }, &job->left));
}

void ParallelCopier::HelperLoop() {
  while (true) {
    std::shared_ptr<Job> job;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        if (stopping_) return true;
        for (const auto& j : jobs_) {
          if (!j->claimed_all()) return true;
        }
        return false;
      };
      mu_.Await(absl::Condition(&has_work));
      for (const auto& j : jobs_) {
        if (!j->claimed_all()) {
          job = j;
          break;
        }
      }
      // Nothing left to claim: the callers took the rest meanwhile.
      if (job == nullptr) {
        if (stopping_) return;
        continue;
      }
    }
    job->CopySome();
  }
}

}  // namespace convserve
