// Lock-free striped counters and histograms (see striped.h).
#include "server/metrics/striped.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>

namespace convserve::metrics_internal {

int ThisThreadStripe() {
  static std::atomic<int> next{0};
  thread_local const int stripe = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return stripe;
}

StripedCounters::StripedCounters(int size)
    : size_(size),
      lines_per_stripe_((size + kCellsPerLine - 1) / kCellsPerLine),
      lines_(new Line[static_cast<size_t>(kStripes) * lines_per_stripe_]) {}

uint64_t StripedCounters::Value(int index) const {
  uint64_t total = 0;
  for (int s = 0; s < kStripes; ++s) total += Cell(s, index).load(std::memory_order_relaxed);
  return total;
}

StripedHistogram::StripedHistogram(const BucketBounds* bounds)
    : bounds_(bounds), stripes_(new Stripe[kStripes]) {
  assert(bounds_->size() <= static_cast<size_t>(kMaxBuckets));
  assert(std::is_sorted(bounds_->begin(), bounds_->end()));
}

void StripedHistogram::Observe(double value) {
  if (std::isnan(value)) return;  // would poison the sum forever
  // Prometheus buckets are "less than or equal": the first bound >= value.
  const size_t bucket =
      std::lower_bound(bounds_->begin(), bounds_->end(), value) - bounds_->begin();
  Stripe& stripe = stripes_[ThisThreadStripe()];
  stripe.counts[bucket].fetch_add(1, std::memory_order_relaxed);
  // Only threads sharing this stripe contend here, so the loop almost never repeats.
  double sum = stripe.sum.load(std::memory_order_relaxed);
  while (!stripe.sum.compare_exchange_weak(sum, sum + value, std::memory_order_relaxed)) {
  }
}

prometheus::ClientMetric::Histogram StripedHistogram::Snapshot() const {
  const size_t buckets = bounds_->size() + 1;
  std::vector<uint64_t> counts(buckets, 0);
  double sum = 0;
  for (int s = 0; s < kStripes; ++s) {
    for (size_t b = 0; b < buckets; ++b) {
      counts[b] += stripes_[s].counts[b].load(std::memory_order_relaxed);
    }
    sum += stripes_[s].sum.load(std::memory_order_relaxed);
  }
  prometheus::ClientMetric::Histogram out;
  out.bucket.reserve(buckets);
  uint64_t cumulative = 0;
  for (size_t b = 0; b < buckets; ++b) {
    cumulative += counts[b];
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound =
        b < bounds_->size() ? (*bounds_)[b] : std::numeric_limits<double>::infinity();
    out.bucket.push_back(bucket);
  }
  out.sample_count = cumulative;
  out.sample_sum = sum;
  return out;
}

}  // namespace convserve::metrics_internal
