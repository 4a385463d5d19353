#include "server/batch.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

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

void CompleteBatch(Batch& batch, const char* merged_output, const BatchRun& run, Metrics* metrics,
                   AnswerThreads* helpers) {
  const ConvProblem& problem = batch.problem;
  if (metrics != nullptr) {
    metrics->BatchExecuted(batch.layer->name, run.device, run.kernel_config,
                           static_cast<int>(problem.batch), absl::ToDoubleSeconds(run.compute),
                           absl::ToDoubleSeconds(run.kernel));
  }
  const int64_t sample_bytes = problem.output_bytes() / problem.batch;
  int64_t offset = 0;
  const absl::Time now = absl::Now();
  ExecutorStageSeconds stages;
  stages.staging = absl::ToDoubleSeconds(run.staging);
  stages.enqueue = absl::ToDoubleSeconds(run.enqueue);
  stages.wait = absl::ToDoubleSeconds(run.wait);
  std::vector<InferenceResult> results;
  results.reserve(batch.requests.size());
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
    results.push_back(std::move(result));
  }
  const absl::Time split_done = absl::Now();
  stages.split = absl::ToDoubleSeconds(split_done - now);
  // Answer in parts: `parts` - 1 go to the helpers, the first is answered here.
  const size_t count = batch.requests.size();
  const size_t parts = helpers == nullptr
                           ? 1
                           : std::clamp<size_t>(count, 1, static_cast<size_t>(helpers->size()) + 1);
  const size_t part_size = (count + parts - 1) / parts;
  for (size_t begin = part_size; begin < count; begin += part_size) {
    const size_t end = std::min(count, begin + part_size);
    std::vector<InferenceRequest> requests(std::make_move_iterator(batch.requests.begin() + begin),
                                           std::make_move_iterator(batch.requests.begin() + end));
    std::vector<InferenceResult> part(std::make_move_iterator(results.begin() + begin),
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
    metrics->ExecutorStages(run.device, stages);
  }
}

void FailBatch(Batch& batch, const absl::Status& status, Metrics* metrics) {
  for (InferenceRequest& request : batch.requests) AnswerRequest(request, status, metrics);
}

}  // namespace convserve
