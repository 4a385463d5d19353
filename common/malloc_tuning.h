// glibc malloc settings for processes that move large tensors through gRPC. By default glibc
// serves blocks over 128 KiB with a fresh mmap and gives freed memory at the top of a thread's
// arena back to the kernel (madvise), so every 400 KB message is page-faulted in anew on
// every call. Measured with the echo server at concurrency 1 on the 2-core development VM:
// 4.5 ms of server CPU per request, almost all of it page faults, against 0.3 ms with freed
// blocks kept (bench/batching/NOTES.md). Header-only: the server, the echo server and the
// CLI call it first thing in main().
#pragma once

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace convserve {

// Blocks below 32 MiB (glibc's largest mmap threshold) come from the heap, and up to 64 MiB of
// freed memory per arena stays mapped for the next request instead of being trimmed. The
// price is resident memory that does not shrink after a burst. No-op without glibc.
inline void KeepLargeBuffersMapped() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

}  // namespace convserve
