#include "server/batch.h"

#include <utility>

#include "absl/time/clock.h"

namespace convserve {

void AnswerRequest(InferenceRequest& request, absl::StatusOr<InferenceResult> result,
                   Metrics* metrics) {
  if (metrics != nullptr) {
    const double total = absl::ToDoubleSeconds(absl::Now() - request.accepted_at);
    const double queue = result.ok() ? static_cast<double>(result->queue_us) * 1e-6 : 0.0;
    metrics->RequestFinished(request.layer, request.api, result.status().code(), total, queue);
  }
  if (request.done) std::move(request.done)(std::move(result));
  request.done = nullptr;
}

void CompleteBatch(Batch& batch, const char* merged_output, const BatchRun& run, Metrics* metrics) {
  const ConvProblem& problem = batch.problem;
  if (metrics != nullptr) {
    metrics->BatchExecuted(batch.layer->name, run.device, run.kernel_config,
                           static_cast<int>(problem.batch), absl::ToDoubleSeconds(run.compute),
                           absl::ToDoubleSeconds(run.kernel));
  }
  const int64_t sample_bytes = problem.output_bytes() / problem.batch;
  int64_t offset = 0;
  const absl::Time now = absl::Now();
  for (InferenceRequest& request : batch.requests) {
    const int64_t bytes = request.shape[0] * sample_bytes;
    InferenceResult result;
    result.output.assign(merged_output + offset, static_cast<size_t>(bytes));
    offset += bytes;
    result.shape[0] = request.shape[0];
    result.shape[1] = problem.params.out_channels;
    result.shape[2] = problem.out_height();
    result.shape[3] = problem.out_width();
    result.dtype = problem.params.dtype;
    result.layout = problem.output_layout;
    result.queue_us = absl::ToInt64Microseconds(batch.launched_at - request.accepted_at);
    result.compute_us = absl::ToInt64Microseconds(run.compute);
    result.total_us = absl::ToInt64Microseconds(now - request.accepted_at);
    result.batch_size = static_cast<int>(problem.batch);
    result.kernel_config = run.kernel_config;
    result.device = run.device;
    AnswerRequest(request, std::move(result), metrics);
  }
}

void FailBatch(Batch& batch, const absl::Status& status, Metrics* metrics) {
  for (InferenceRequest& request : batch.requests) AnswerRequest(request, status, metrics);
}

}  // namespace convserve
