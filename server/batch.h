// A batch: requests of one layer generation and one shape, merged along N into one launch, and
// the one place where requests are answered (so every answer is counted exactly once).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/conv_problem.h"
#include "server/inference.h"
#include "server/loaded_layer.h"
#include "server/metrics/metrics.h"

namespace convserve {

struct Batch {
  std::shared_ptr<const LoadedLayer> layer;
  ConvProblem problem;                     // problem.batch is the summed N of `requests`
  std::vector<InferenceRequest> requests;  // in merge order
  absl::Time launched_at;
};

// How a batch ran, for its replies and the metrics.
struct BatchRun {
  std::string device;
  std::string kernel_config;
  absl::Duration compute;  // copies + kernel
  absl::Duration kernel;   // kernel alone (equals compute on the CPU)
};

// Ends one request: records it in `metrics` (may be null) and calls its `done`. The only way
// requests are answered; `request.done` is consumed.
void AnswerRequest(InferenceRequest& request, absl::StatusOr<InferenceResult> result,
                   Metrics* metrics);

// Splits `merged_output` (the batch's whole output, in problem.output_layout) back into one
// result per request (N is outermost in both layouts, so each is a contiguous slice) and
// answers each. Also records the batch in `metrics`.
void CompleteBatch(Batch& batch, const char* merged_output, const BatchRun& run, Metrics* metrics);

// Answers every request of the batch with `status`.
void FailBatch(Batch& batch, const absl::Status& status, Metrics* metrics);

}  // namespace convserve
