// Large host copies split over the calling thread and a few helper threads. Merging a batch's
// inputs into pinned staging memory is a plain memcpy, but one core copies a 401 KB tensor at
// about 8.5 GB/s on the H100 host (47 us per request, bench/results/2026-12-06-stages-h100),
// and the copy sits on the request's critical path; several cores share it.
#pragma once

#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace convserve {

class ParallelCopier {
 public:
  struct Range {
    void* dst;
    const void* src;
    size_t bytes;
  };
  // Pieces are at least this long: below it a helper's wake-up costs more than it saves.
  static constexpr size_t kMinPieceBytes = 128 * 1024;

  explicit ParallelCopier(int helpers);
  // Joins the helpers (after the copy in progress, if any).
  ~ParallelCopier();
  ParallelCopier(const ParallelCopier&) = delete;
  ParallelCopier& operator=(const ParallelCopier&) = delete;

  int helpers() const { return static_cast<int>(threads_.size()); }

  // Copies every range (which must not overlap) and returns once all bytes are in place. The
  // calling thread copies too: pieces are claimed one at a time by whichever thread is free, so
  // busy or slow helpers delay nothing but their own piece. Thread-safe; concurrent calls share
  // the helpers.
  void Copy(absl::Span<const Range> ranges);

 private:
  struct Job;
  void HelperLoop();

  absl::Mutex mu_;
  std::vector<std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);  // with pieces left to claim
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace convserve
