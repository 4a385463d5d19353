#include "tests/e2e/concurrent_forward.h"

#include <cmath>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/convert.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "tests/e2e/random_npy.h"

namespace convserve {

namespace v1 = convserve::v1;

namespace {

// Owned jointly by the caller and every call's callback, so that calls still in flight after a
// timed-out wait write into live memory.
struct CallState {
  std::vector<v1::ForwardRequest> requests;
  std::vector<v1::ForwardResponse> responses;
  std::vector<absl::Status> statuses;
  absl::Mutex mu;
  int answered = 0;

  bool AllAnswered() const { return answered == static_cast<int>(requests.size()); }
};

}  // namespace

absl::StatusOr<ConcurrentForwards> ForwardConcurrently(const ClientOptions& options, int clients,
                                                       const std::string& layer, DataType dtype,
                                                       const std::vector<int64_t>& input_shape,
                                                       int calls, std::mt19937& rng,
                                                       absl::Duration wait) {
  std::vector<std::unique_ptr<Client>> channels;
  for (int c = 0; c < clients; ++c) channels.push_back(std::make_unique<Client>(options));
  ConcurrentForwards result;
  auto state = std::make_shared<CallState>();
  state->requests.resize(calls);
  state->responses.resize(calls);
  state->statuses.assign(calls, absl::UnknownError("unanswered"));
  for (int i = 0; i < calls; ++i) {
    result.inputs.push_back(RandomArray(dtype, input_shape, rng));
    absl::StatusOr<v1::Tensor> tensor = TensorFromNpy(result.inputs.back(), Layout::kNchw);
    if (!tensor.ok()) return tensor.status();
    state->requests[i].set_layer(layer);
    *state->requests[i].mutable_input() = *std::move(tensor);
  }
  for (int i = 0; i < calls; ++i) {
    channels[i % clients]->ForwardAsync(state->requests[i], &state->responses[i],
                                        absl::ZeroDuration(), [state, i](absl::Status s) {
                                          absl::MutexLock lock(&state->mu);
                                          state->statuses[i] = std::move(s);
                                          ++state->answered;
                                        });
  }
  absl::MutexLock lock(&state->mu);
  if (!state->mu.AwaitWithTimeout(absl::Condition(state.get(), &CallState::AllAnswered), wait)) {
    return absl::DeadlineExceededError(absl::StrCat(
        state->answered, " of ", calls, " calls answered in ", absl::FormatDuration(wait)));
  }
  result.responses = std::move(state->responses);
  result.statuses = std::move(state->statuses);
  return result;
}

absl::StatusOr<double> RelativeErrorToReference(const ConvParams& params, const NpyArray& input,
                                                const NpyArray& weights, v1::Tensor output) {
  const ConvProblem problem{params,         input.shape[0], input.shape[2],
                            input.shape[3], Layout::kNchw,  Layout::kNchw};
  const std::vector<double> ref =
      ReferenceConv2dDouble(problem, input.data.data(), weights.data.data(), nullptr);
  absl::StatusOr<NpyArray> out = NpyFromTensor(std::move(output));
  if (!out.ok()) return out.status();
  if (out->elements() != static_cast<int64_t>(ref.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("output has ", out->elements(), " elements, the reference ", ref.size()));
  }
  double diff = 0, norm = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double o = LoadAsDouble(out->dtype, out->data.data(), static_cast<int64_t>(i));
    diff += (o - ref[i]) * (o - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / norm);
}

}  // namespace convserve
