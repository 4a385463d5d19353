// The one set of rules that turns a wire LayerSpec into the conv library's ConvParams: which
// fields must be set, what unset ones default to, which combinations are refused. The server
// (LoadLayer, the model repository), the client library and convserve-cli all call these, so a
// spec the client accepts is a spec the server accepts, with the same message.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"

namespace convserve {

// [A-Za-z0-9_.-]{1,128}; INVALID_ARGUMENT naming `field` otherwise.
absl::Status ValidateLayerName(const std::string& name, const std::string& field);

// The layer's ConvParams from its spec, fully validated. The name must be set (callers that
// derive it, e.g. from a directory or a flag, fill it in first); unset stride, dilation and
// groups mean 1; `precision` applies to FP32 layers only; `warmup_batch_sizes` needs
// `input_size`. INVALID_ARGUMENT naming the "spec.*" field otherwise.
absl::StatusOr<ConvParams> ParamsFromSpec(const convserve::v1::LayerSpec& spec);

}  // namespace convserve
