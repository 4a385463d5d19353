// Many copies within one GPU's memory as one kernel launch: the executor's gather of a batch's
// inputs and scatter of its outputs when they live in GPU memory (a client's CUDA IPC region).
// Each cudaMemcpyAsync costs the host 2-5 us to issue, so a batch of 32 requests issuing one
// per tensor each way spent about 300 us issuing copies, with the GPU waiting behind them; one
// launch costs a few microseconds whatever the count.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/conv_engine.h"

namespace convserve {

struct DeviceCopy {
  void* dst;
  const void* src;
  size_t bytes;
};

// Enqueues every copy on `stream`. Both sides of each must be addressable by the stream's
// device (its own memory, or memory it maps); copies must not overlap one another. Any
// alignment works; 16-byte aligned pieces copy fastest. INTERNAL, with CUDA's text, when the
// launch fails.
absl::Status CopyWithinDevice(absl::Span<const DeviceCopy> copies, CudaStream stream);

}  // namespace convserve
