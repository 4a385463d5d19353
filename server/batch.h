// A batch: requests of one layer generation and one shape, merged along N into one launch, and
// the one place where requests are answered (so every answer is counted exactly once).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/conv_problem.h"
#include "server/inference.h"
#include "server/loaded_layer.h"
#include "server/metrics/metrics.h"
#include "server/work_queue.h"

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
  // The executor's host time before CompleteBatch, which adds split and answer and reports
  // all five (Metrics::ExecutorStages): `staging` from taking the batch to the first device
  // work issued, `enqueue` issuing the copies and kernel, `wait` from then until the host saw
  // the batch done. An executor without a stage leaves it zero.
  absl::Duration staging;
  absl::Duration enqueue;
  absl::Duration wait;
};

// Threads that help an executor answer the requests of one batch in parallel. Answering runs a
// request's `done`, which for a gRPC call serialises and writes the reply on the calling thread
// (for a 401 KB reply, 100-200 us), so an executor thread answering a batch of 30 alone holds its
// launch slot for milliseconds. Thread-safe; the destructor first answers what was handed over.
class AnswerThreads {
 public:
  explicit AnswerThreads(int threads);
  int size() const { return static_cast<int>(queues_.size()); }
  // Runs `work` on the next thread in turn, after what that thread was given before.
  void Post(absl::AnyInvocable<void() &&> work);

 private:
  std::vector<std::unique_ptr<WorkQueue>> queues_;
  std::atomic<size_t> next_{0};
};

// Ends one request: records it in `metrics` (may be null) and calls its `done`. The only way
// requests are answered; `request.done` is consumed.
void AnswerRequest(InferenceRequest& request, absl::StatusOr<InferenceResult> result,
                   Metrics* metrics);

// Splits `merged_output` (the batch's whole output, in problem.output_layout) back into one
// result per request (N is outermost in both layouts, so each is a contiguous slice), or into
// the request's OutputSink, and answers each. Also records the batch in `metrics`.
// `merged_output` is read before this returns. With `helpers` (may be null), a batch of several
// requests is answered in parts: the first part on the calling thread, the others on the
// helpers, so this returns (and the caller can free its lane) after the copies and one part; a
// lone request is answered here.
void CompleteBatch(Batch& batch, const char* merged_output, const BatchRun& run, Metrics* metrics,
                   AnswerThreads* helpers = nullptr);

// Answers every request of the batch with `status`.
void FailBatch(Batch& batch, const absl::Status& status, Metrics* metrics);

}  // namespace convserve
