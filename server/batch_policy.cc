#include "server/batch_policy.h"

#include <algorithm>

namespace convserve {

BatchDecision DecideBatch(absl::Span<const int64_t> queued_samples, absl::Time oldest_accepted,
                          absl::Time now, const BatchingConfig& config, bool draining) {
  BatchDecision decision;
  if (queued_samples.empty()) return decision;

  int requests = 0;
  int64_t samples = 0;
  for (int64_t n : queued_samples) {
    if (requests > 0 && samples + n > config.max_batch_size) break;
    samples += n;
    ++requests;
  }
  const bool all_taken = requests == static_cast<int>(queued_samples.size());
  const bool full = samples >= config.max_batch_size || !all_taken;
  const bool preferred =
      all_taken && std::binary_search(config.preferred_batch_sizes.begin(),
                                      config.preferred_batch_sizes.end(), samples);
  const absl::Time delay_end = oldest_accepted + config.max_queue_delay;
  if (full || preferred || draining || now >= delay_end) {
    decision.launch = true;
    decision.requests = requests;
    decision.samples = samples;
    return decision;
  }
  decision.wake_at = delay_end;
  return decision;
}

}  // namespace convserve
