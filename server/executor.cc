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
  SlotSignal* signal = nullptr;
  {
    absl::MutexLock lock(&mu_);
    ++free_;
    signal = signal_;
  }
  if (signal != nullptr) signal->Notify();
}

int LaunchSlots::free() const {
  absl::MutexLock lock(&mu_);
  return free_;
}

void LaunchSlots::set_signal(SlotSignal* signal) {
  absl::MutexLock lock(&mu_);
  signal_ = signal;
}

uint64_t SlotSignal::generation() const {
  absl::MutexLock lock(&mu_);
  return generation_;
}

void SlotSignal::Notify() {
  absl::MutexLock lock(&mu_);
  ++generation_;
}

bool SlotSignal::WaitForChange(uint64_t seen, absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return generation_ != seen; };
  return mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
}

}  // namespace convserve
