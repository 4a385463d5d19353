#include "server/batch.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "absl/types/span.h"

namespace convserve {

AnswerThreads::AnswerThreads(int threads) {
  for (int i = 0; i < std::max(threads, 1); ++i) queues_.push_back(std::make_unique<WorkQueue>());
}

void AnswerThreads::Post(absl::AnyInvocable<void() &&> work) {
  queues_[next_.fetch_add(1, std::memory_order_relaxed) % queues_.size()]->Post(std::move(work));
}

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

namespace {

// The results of `requests`, whose outputs follow one another from `output`: each copied into
// its result, or written to the request's sink (only that request fails when the sink refuses),
// unless the executor delivered it there already.
std::vector<absl::StatusOr<InferenceResult>> SplitOutputs(absl::Span<InferenceRequest> requests,
                                                          const char* output, int64_t sample_bytes,
                                                          const InferenceResult& common,
                                                          absl::Time launched_at, absl::Time now) {
  std::vector<absl::StatusOr<InferenceResult>> results;
  results.reserve(requests.size());
  for (InferenceRequest& request : requests) {
    const int64_t bytes = request.shape[0] * sample_bytes;
    const char* mine = output;
    output += bytes;
    if (request.output_sink != nullptr && !request.output_delivered) {
      // A client that has gone (cancelled, or past its deadline) may already have reused the
      // range for its next call: leave it alone.
      if (request.is_cancelled && request.is_cancelled()) {
        results.push_back(absl::CancelledError(
            "the call ended (cancelled or past its deadline) before its output was written"));
        continue;
      }
      if (absl::Status written = request.output_sink->Write(mine, bytes); !written.ok()) {
        results.push_back(std::move(written));
        continue;
      }
    }
    InferenceResult result = common;
    if (request.output_sink == nullptr) result.output.assign(mine, static_cast<size_t>(bytes));
    result.shape[0] = request.shape[0];
    result.queue_us = absl::ToInt64Microseconds(launched_at - request.accepted_at);
    result.total_us = absl::ToInt64Microseconds(now - request.accepted_at);
    results.push_back(std::move(result));
  }
  return results;
}

}  // namespace

void CompleteBatch(Batch& batch, const char* merged_output, const BatchRun& run, Metrics* metrics,
                   AnswerThreads* helpers) {
  const ConvProblem& problem = batch.problem;
  if (metrics != nullptr) {
    metrics->BatchExecuted(batch.layer->name, run.device, run.kernel_config,
                           static_cast<int>(problem.batch), absl::ToDoubleSeconds(run.compute),
                           absl::ToDoubleSeconds(run.kernel));
  }
  const int64_t sample_bytes = problem.output_bytes() / problem.batch;
  const absl::Time now = absl::Now();
  ExecutorStageSeconds stages;
  stages.staging = absl::ToDoubleSeconds(run.staging);
  stages.enqueue = absl::ToDoubleSeconds(run.enqueue);
  stages.wait = absl::ToDoubleSeconds(run.wait);
  InferenceResult common;  // what every request's result shares
  common.shape[1] = problem.params.out_channels;
  common.shape[2] = problem.out_height();
  common.shape[3] = problem.out_width();
  common.dtype = problem.params.dtype;
  common.layout = problem.output_layout;
  common.compute_us = absl::ToInt64Microseconds(run.compute);
  common.batch_size = static_cast<int>(problem.batch);
  common.kernel_config = run.kernel_config;
  common.device = run.device;

  // Every output is copied here, before this returns (the caller reuses `merged_output`); the
  // answers go out in parts: `parts` - 1 to the helpers, the first answered here.
  const size_t count = batch.requests.size();
  std::vector<absl::StatusOr<InferenceResult>> results = SplitOutputs(
      absl::MakeSpan(batch.requests), merged_output, sample_bytes, common, batch.launched_at, now);
  const absl::Time split_done = absl::Now();
  stages.split = absl::ToDoubleSeconds(split_done - now);
  const size_t parts = helpers == nullptr
                           ? 1
                           : std::clamp<size_t>(count, 1, static_cast<size_t>(helpers->size()) + 1);
  const size_t part_size = (count + parts - 1) / parts;
  for (size_t begin = part_size; begin < count; begin += part_size) {
    const size_t end = std::min(count, begin + part_size);
    std::vector<InferenceRequest> requests(std::make_move_iterator(batch.requests.begin() + begin),
                                           std::make_move_iterator(batch.requests.begin() + end));
    std::vector<absl::StatusOr<InferenceResult>> part(
        std::make_move_iterator(results.begin() + begin),
        std::make_move_iterator(results.begin() + end));
    helpers->Post([requests = std::move(requests), part = std::move(part), metrics]() mutable {
      for (size_t i = 0; i < requests.size(); ++i) {
        AnswerRequest(requests[i], std::move(part[i]), metrics);
      }
    });
  }
  for (size_t i = 0; i < std::min(count, part_size); ++i) {
    AnswerRequest(batch.requests[i], std::move(results[i]), metrics);
  }
  if (metrics != nullptr) {
    stages.answer = absl::ToDoubleSeconds(absl::Now() - split_done);
    metrics->ExecutorStages(batch.layer->name, run.device, stages);
  }
}

void FailBatch(Batch& batch, const absl::Status& status, Metrics* metrics) {
  for (InferenceRequest& request : batch.requests) AnswerRequest(request, status, metrics);
}

}  // namespace convserve
