// CUPTI attached to the process only while an occupancy sample needs it. While attached, CUPTI's
// driver hooks cost every launch of the process host time (~20-40 us more to issue a batch on the
// H100: bench/results/2026-12-06-stages-h100 and 2026-12-07_cupti_detach); detaching it
// (cuptiFinalize) removes that. Also the CUPTI plumbing the sampler shares with it.
#pragma once

#include <cupti_result.h>

#include <cstring>

#include "absl/status/status.h"

// Declares a CUPTI params struct with its size set, as every CUPTI profiler call wants.
#define CONVSERVE_CUPTI_PARAMS(type, name) \
  type name;                               \
  std::memset(&name, 0, sizeof(name));     \
  name.structSize = type##_STRUCT_SIZE

namespace convserve {

// A CUPTI result as a Status whose code says whether it can ever work here.
absl::Status CuptiStatus(CUptiResult result, const char* call);

// Counts the holders (the samplers of all devices, while sampling) of CUPTI's profiler. The
// first Acquire attaches CUPTI and initializes the profiler; the last Release deinitializes it
// and detaches CUPTI. Where detaching fails (another CUPTI client in the process, say) CUPTI stays
// attached from then on, as if this never detached. Thread-safe.
class CuptiAttachment {
 public:
  static absl::Status Acquire();
  // OK when CUPTI left the process or another holder keeps it; else why it stays attached.
  static absl::Status Release();

  // The steps, for probes that try them one by one (bench/occupancy/occupancy_check.cc).
  // cuptiFinalize at the exit of a cudaGetDevice call of this thread, where CUPTI wants it.
  static absl::Status Finalize();
  // After Finalize the profiler API alone does not bring CUPTI back (cuptiProfilerInitialize
  // returns CUPTI_ERROR_NOT_INITIALIZED, measured on the H100); a subscription of the callback
  // API, which initializes CUPTI lazily, does. Subscribes and unsubscribes at once.
  static absl::Status Reinitialize();
};

}  // namespace convserve
