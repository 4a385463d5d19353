// Teaches ThreadSanitizer what Abseil's synchronization does in a TSan build against Debian's
// uninstrumented libabsl (docs/hardening.md). TSan sees only instrumented code and pthreads,
// so every absl::Mutex critical section would look like a data race. The TSan build links with
// -Wl,--wrap for the absl::Mutex / CondVar / Notification entry points our code calls, and each
// wrapper tells TSan about the happens-before edge the real function creates:
//   unlocking = __tsan_release(mutex), locking = __tsan_acquire(mutex),
//   Notify = release on the notification's flag, which WaitForNotification* and the inline
//   (instrumented) HasBeenNotified acquire.
// absl evaluates absl::Condition callbacks inside Lock/Unlock/Await, i.e. before the wrapper
// can say the lock is held; the wrappers ignore memory accesses made inside the real calls,
// which hides only accesses in those callbacks (reads of the guarded state by construction).
// Races between our own threads that do not involve these locks are still reported.
#include <atomic>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

// From the TSan runtime (clang's and GCC's alike).
extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
}

namespace {

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Notification;
using absl::Time;

// Ignores this thread's memory accesses for the lifetime of the guard (synchronization still
// counts).
struct IgnoreAccesses {
  IgnoreAccesses() {
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
  }
  ~IgnoreAccesses() {
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
  }
};

// Notification's flag follows its Mutex (absl 20220623 layout); HasBeenNotified acquire-loads it.
static_assert(sizeof(Mutex) == sizeof(intptr_t), "unexpected absl::Mutex layout");
void* FlagOf(const Notification* n) {
  return const_cast<char*>(reinterpret_cast<const char*>(n)) + sizeof(Mutex);
}

}  // namespace

#define REAL(name) __real_##name
#define WRAP(name) __wrap_##name

extern "C" {
// Mangled names of absl::debian3 (Debian's inline namespace for Abseil 20220623).
// Mutex
void REAL(_ZN4absl7debian35Mutex4LockEv)(Mutex*);
void REAL(_ZN4absl7debian35Mutex6UnlockEv)(Mutex*);
bool REAL(_ZN4absl7debian35Mutex7TryLockEv)(Mutex*);
void REAL(_ZN4absl7debian35Mutex10ReaderLockEv)(Mutex*);
void REAL(_ZN4absl7debian35Mutex12ReaderUnlockEv)(Mutex*);
bool REAL(_ZN4absl7debian35Mutex13ReaderTryLockEv)(Mutex*);
void REAL(_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE)(Mutex*, const Condition&);
void REAL(_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE)(Mutex*, const Condition&);
bool REAL(_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE)(
    Mutex*, const Condition&, Duration);
bool REAL(_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE)(
    Mutex*, const Condition&, Time);
void REAL(_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE)(Mutex*, const Condition&);
bool REAL(_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE)(
    Mutex*, const Condition&, Duration);
bool REAL(_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE)(Mutex*,
                                                                                 const Condition&,
                                                                                 Time);
void REAL(_ZN4absl7debian319ReleasableMutexLock7ReleaseEv)(absl::ReleasableMutexLock*);
// CondVar
void REAL(_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE)(CondVar*, Mutex*);
bool REAL(_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE)(CondVar*, Mutex*,
                                                                                Duration);
bool REAL(_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE)(CondVar*, Mutex*,
                                                                             Time);
// Notification
void REAL(_ZN4absl7debian312Notification6NotifyEv)(Notification*);
void REAL(_ZNK4absl7debian312Notification19WaitForNotificationEv)(const Notification*);
bool REAL(_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE)(
    const Notification*, Duration);
bool REAL(_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE)(
    const Notification*, Time);

void WRAP(_ZN4absl7debian35Mutex4LockEv)(Mutex* mu) {
  REAL(_ZN4absl7debian35Mutex4LockEv)(mu);
  __tsan_acquire(mu);
}
void WRAP(_ZN4absl7debian35Mutex6UnlockEv)(Mutex* mu) {
  __tsan_release(mu);
  IgnoreAccesses ignore;  // the unlocker evaluates waiters' Conditions
  REAL(_ZN4absl7debian35Mutex6UnlockEv)(mu);
}
bool WRAP(_ZN4absl7debian35Mutex7TryLockEv)(Mutex* mu) {
  const bool locked = REAL(_ZN4absl7debian35Mutex7TryLockEv)(mu);
  if (locked) __tsan_acquire(mu);
  return locked;
}
void WRAP(_ZN4absl7debian35Mutex10ReaderLockEv)(Mutex* mu) {
  REAL(_ZN4absl7debian35Mutex10ReaderLockEv)(mu);
  __tsan_acquire(mu);
}
void WRAP(_ZN4absl7debian35Mutex12ReaderUnlockEv)(Mutex* mu) {
  __tsan_release(mu);
  IgnoreAccesses ignore;
  REAL(_ZN4absl7debian35Mutex12ReaderUnlockEv)(mu);
}
bool WRAP(_ZN4absl7debian35Mutex13ReaderTryLockEv)(Mutex* mu) {
  const bool locked = REAL(_ZN4absl7debian35Mutex13ReaderTryLockEv)(mu);
  if (locked) __tsan_acquire(mu);
  return locked;
}
void WRAP(_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE)(Mutex* mu, const Condition& cond) {
  {
    IgnoreAccesses ignore;
    REAL(_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE)(mu, cond);
  }
  __tsan_acquire(mu);
}
void WRAP(_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE)(Mutex* mu,
                                                                    const Condition& cond) {
  {
    IgnoreAccesses ignore;
    REAL(_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE)(mu, cond);
  }
  __tsan_acquire(mu);
}
bool WRAP(_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE)(
    Mutex* mu, const Condition& cond, Duration timeout) {
  bool result;
  {
    IgnoreAccesses ignore;
    result = REAL(_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE)(
        mu, cond, timeout);
  }
  __tsan_acquire(mu);  // held on return either way
  return result;
}
bool WRAP(_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE)(
    Mutex* mu, const Condition& cond, Time deadline) {
  bool result;
  {
    IgnoreAccesses ignore;
    result = REAL(_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE)(
        mu, cond, deadline);
  }
  __tsan_acquire(mu);
  return result;
}
void WRAP(_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE)(Mutex* mu, const Condition& cond) {
  __tsan_release(mu);
  {
    IgnoreAccesses ignore;
    REAL(_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE)(mu, cond);
  }
  __tsan_acquire(mu);
}
bool WRAP(_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE)(
    Mutex* mu, const Condition& cond, Duration timeout) {
  __tsan_release(mu);
  bool result;
  {
    IgnoreAccesses ignore;
    result = REAL(_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE)(
        mu, cond, timeout);
  }
  __tsan_acquire(mu);
  return result;
}
bool WRAP(_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE)(
    Mutex* mu, const Condition& cond, Time deadline) {
  __tsan_release(mu);
  bool result;
  {
    IgnoreAccesses ignore;
    result = REAL(_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE)(mu, cond,
                                                                                         deadline);
  }
  __tsan_acquire(mu);
  return result;
}
void WRAP(_ZN4absl7debian319ReleasableMutexLock7ReleaseEv)(absl::ReleasableMutexLock* lock) {
  // The lock's only member is the Mutex* it holds (nullptr once released).
  Mutex* mu = *reinterpret_cast<Mutex**>(lock);
  if (mu != nullptr) __tsan_release(mu);
  IgnoreAccesses ignore;
  REAL(_ZN4absl7debian319ReleasableMutexLock7ReleaseEv)(lock);
}
void WRAP(_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE)(CondVar* cv, Mutex* mu) {
  __tsan_release(mu);
  {
    IgnoreAccesses ignore;
    REAL(_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE)(cv, mu);
  }
  __tsan_acquire(mu);
}
bool WRAP(_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE)(CondVar* cv,
                                                                                Mutex* mu,
                                                                                Duration timeout) {
  __tsan_release(mu);
  bool result;
  {
    IgnoreAccesses ignore;
    result =
        REAL(_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE)(cv, mu, timeout);
  }
  __tsan_acquire(mu);
  return result;
}
bool WRAP(_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE)(CondVar* cv, Mutex* mu,
                                                                             Time deadline) {
  __tsan_release(mu);
  bool result;
  {
    IgnoreAccesses ignore;
    result =
        REAL(_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE)(cv, mu, deadline);
  }
  __tsan_acquire(mu);
  return result;
}
void WRAP(_ZN4absl7debian312Notification6NotifyEv)(Notification* n) {
  __tsan_release(FlagOf(n));
  REAL(_ZN4absl7debian312Notification6NotifyEv)(n);
}
void WRAP(_ZNK4absl7debian312Notification19WaitForNotificationEv)(const Notification* n) {
  REAL(_ZNK4absl7debian312Notification19WaitForNotificationEv)(n);
  __tsan_acquire(FlagOf(n));
}
bool WRAP(_ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE)(
    const Notification* n, Duration timeout) {
  const bool notified = REAL(
      _ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE)(n, timeout);
  if (notified) __tsan_acquire(FlagOf(n));
  return notified;
}
bool WRAP(_ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE)(
    const Notification* n, Time deadline) {
  const bool notified = REAL(
      _ZNK4absl7debian312Notification31WaitForNotificationWithDeadlineENS0_4TimeE)(n, deadline);
  if (notified) __tsan_acquire(FlagOf(n));
  return notified;
}
}  // extern "C"
