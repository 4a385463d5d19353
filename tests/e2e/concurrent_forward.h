// Load from several clients against a real server process: many forward calls in flight at
// once, spread over clients that each have their own channel, and each reply's error against
// the fp64 reference. Shared by the multi-executor tests (two CPU executors, every GPU).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "common/npy.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"

namespace convserve {

// What ForwardConcurrently sent and got back, by call index.
struct ConcurrentForwards {
  std::vector<NpyArray> inputs;  // NCHW
  std::vector<convserve::v1::ForwardResponse> responses;
  std::vector<absl::Status> statuses;
};

// Sends `calls` forward calls for `layer`, each with its own random NCHW input of `dtype` and
// `input_shape` drawn in turn from `rng`, all in flight at once: call i goes through the i %
// `clients`-th of `clients` Clients made from `options` (deadline options.call_timeout).
// Returns once every call is answered, whatever its status; DEADLINE_EXCEEDED when they are not
// all answered within `wait` (calls still in flight then keep their own state alive), or the
// error of turning an input into a tensor.
absl::StatusOr<ConcurrentForwards> ForwardConcurrently(const ClientOptions& options, int clients,
                                                       const std::string& layer, DataType dtype,
                                                       const std::vector<int64_t>& input_shape,
                                                       int calls, std::mt19937& rng,
                                                       absl::Duration wait);

// ||output - reference|| / ||reference||, where the reference is `params` (no bias) applied in
// fp64 to the NCHW `input` with the OIHW `weights`, and `output` is NCHW. INVALID_ARGUMENT when
// `output` cannot be read or its element count is not the reference's.
absl::StatusOr<double> RelativeErrorToReference(const ConvParams& params, const NpyArray& input,
                                                const NpyArray& weights,
                                                convserve::v1::Tensor output);

}  // namespace convserve
