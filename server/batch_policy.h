// The dynamic batcher's decision, as a pure function of one queue's state and the clock, so it
// can be tested with a fake clock. The batcher (batcher.h) owns the queues and calls this; it
// never decides anything itself.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/time/time.h"
#include "absl/types/span.h"

namespace convserve {

// One layer's batching knobs, resolved against the server-wide defaults.
struct BatchingConfig {
  int max_batch_size = 32;  // samples (sum of request N) per launch
  absl::Duration max_queue_delay = absl::Microseconds(500);
  std::vector<int> preferred_batch_sizes;  // ascending
  int64_t max_queue_requests = 1024;       // admission bounds of the layer's queues together
  int64_t max_queue_bytes = int64_t{1} << 30;
};

struct BatchDecision {
  bool launch = false;
  int requests = 0;     // when launching: how many requests from the front of the queue
  int64_t samples = 0;  // their summed N (the launch's batch size)
  // When not launching: when to decide again if nothing arrives (InfiniteFuture: idle).
  absl::Time wake_at = absl::InfiniteFuture();
};

// Decides for one queue (requests of one shape, oldest first), given each request's N in queue
// order and the oldest request's arrival time. The candidate batch is the longest prefix whose N
// sum stays within max_batch_size (at least one request, so an oversized request runs alone).
// Launch when:
//   - the candidate is full: it reached max_batch_size, or the next request does not fit;
//   - the candidate is all that is queued and its size is a preferred batch size;
//   - `draining` (shutdown: no new company will come);
//   - the oldest request has waited max_queue_delay.
// Otherwise wait until the oldest request's delay runs out. Once this says launch, the batcher
// keeps that queue due while it waits for a launch slot (Batcher::Queue::due).
BatchDecision DecideBatch(absl::Span<const int64_t> queued_samples, absl::Time oldest_accepted,
                          absl::Time now, const BatchingConfig& config, bool draining = false);

}  // namespace convserve
