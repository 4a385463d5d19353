// Lock-free counters and histograms for the serving hot path. prometheus-cpp's Histogram takes
// a mutex per Observe; these instead spread updates over cache-line-sized stripes picked per
// thread, so concurrent observers of the same series neither lock nor share a cache line (with
// up to kStripes threads). A scrape sums the stripes.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "prometheus/client_metric.h"

namespace convserve::metrics_internal {

inline constexpr int kStripes = 16;
inline constexpr int kCacheLine = 64;

// This thread's stripe in [0, kStripes): threads are dealt stripes round-robin on first use.
int ThisThreadStripe();

// A fixed number of monotonic uint64 counters (e.g. one per status code). Thread-safe.
class StripedCounters {
 public:
  explicit StripedCounters(int size);
  StripedCounters(const StripedCounters&) = delete;
  StripedCounters& operator=(const StripedCounters&) = delete;

  int size() const { return size_; }
  void Add(int index, uint64_t delta = 1) {
    Cell(ThisThreadStripe(), index).fetch_add(delta, std::memory_order_relaxed);
  }
  // The sum over stripes; a scrape concurrent with Add sees each Add either whole or not at all.
  uint64_t Value(int index) const;

 private:
  static constexpr int kCellsPerLine = kCacheLine / sizeof(std::atomic<uint64_t>);
  struct alignas(kCacheLine) Line {
    std::atomic<uint64_t> cells[kCellsPerLine] = {};
  };
  std::atomic<uint64_t>& Cell(int stripe, int index) const {
    return lines_[stripe * lines_per_stripe_ + index / kCellsPerLine].cells[index % kCellsPerLine];
  }

  int size_;
  int lines_per_stripe_;
  std::unique_ptr<Line[]> lines_;  // stripe-major; a stripe starts on its own cache line
};

// Upper bounds of a histogram's finite buckets, ascending; +Inf is implicit.
using BucketBounds = std::vector<double>;

// A Prometheus histogram with fixed bounds. Thread-safe; Observe never locks or allocates.
class StripedHistogram {
 public:
  static constexpr int kMaxBuckets = 23;  // finite bounds

  // `bounds` (at most kMaxBuckets) must outlive the histogram.
  explicit StripedHistogram(const BucketBounds* bounds);
  StripedHistogram(const StripedHistogram&) = delete;
  StripedHistogram& operator=(const StripedHistogram&) = delete;

  void Observe(double value);
  // Cumulative buckets as the exposition format wants them; count equals the +Inf bucket.
  prometheus::ClientMetric::Histogram Snapshot() const;

 private:
  // Per stripe: one count per bucket (the last is +Inf), then the sum of observations.
  struct alignas(kCacheLine) Stripe {
    std::atomic<uint64_t> counts[kMaxBuckets + 1] = {};
    std::atomic<double> sum{0.0};
  };
  const BucketBounds* bounds_;
  std::unique_ptr<Stripe[]> stripes_;  // kStripes of them
};

}  // namespace convserve::metrics_internal
