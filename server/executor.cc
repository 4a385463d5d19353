#include "server/executor.h"

namespace convserve {

bool LaunchSlots::Acquire(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto has_free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return free_ > 0; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&has_free), timeout)) return false;
  --free_;
  return true;
}

void LaunchSlots::Release() {
  absl::MutexLock lock(&mu_);
  ++free_;
}

}  // namespace convserve
