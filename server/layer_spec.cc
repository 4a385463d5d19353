// The batching knobs of a LayerSpec, checked and merged with the server-wide defaults.
#include "server/layer_spec.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace convserve {

absl::StatusOr<BatchingConfig> BatchingFromSpec(const v1::LayerSpec& spec,
                                                const BatchingDefaults& defaults) {
  const v1::BatchingOptions& b = spec.batching();
  if (b.max_batch_size() < 0 || b.max_batch_size() > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("spec.batching.max_batch_size must be in [0, 4096] (0: server default), got ",
                     b.max_batch_size()));
  }
  if (b.max_queue_delay_us() < 0 || b.max_queue_delay_us() > 10'000'000) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.batching.max_queue_delay_us must be in [0, 10000000] (0: server default), got ",
        b.max_queue_delay_us()));
  }
  BatchingConfig config;
  config.max_batch_size = b.max_batch_size() > 0 ? b.max_batch_size() : defaults.max_batch_size;
  config.max_queue_delay = absl::Microseconds(
      b.max_queue_delay_us() > 0 ? b.max_queue_delay_us() : defaults.max_queue_delay_us);
  if (b.preferred_batch_sizes_size() > 0) {
    config.preferred_batch_sizes.assign(b.preferred_batch_sizes().begin(),
                                        b.preferred_batch_sizes().end());
  } else {
    config.preferred_batch_sizes = defaults.preferred_batch_sizes;
  }
  for (int size : config.preferred_batch_sizes) {
    if (size < 1 || size > config.max_batch_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.batching.preferred_batch_sizes must each be in [1, max_batch_size=",
                       config.max_batch_size, "], got ", size));
    }
  }
  std::sort(config.preferred_batch_sizes.begin(), config.preferred_batch_sizes.end());
  config.max_queue_requests = defaults.max_queue_requests;
  config.max_queue_bytes = defaults.max_queue_bytes;
  return config;
}

}  // namespace convserve
