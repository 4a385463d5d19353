// Conversions between the wire types of convserve.v1 and the host-side types the client works
// with (NpyArray), plus the names users type on command lines ("fp16", "nhwc", "3x3"). Shared by
// the client library, convserve-cli and the echo server. The enum conversions and the
// LayerSpec -> ConvParams rules are the server's own (common/wire_enums.h,
// common/layer_spec_rules.h), included here for the client's callers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/layer_spec_rules.h"
#include "common/npy.h"
#include "common/wire_enums.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"

namespace convserve {

// Command-line names, case-insensitive: "fp32" | "fp16" | "bf16"; "nchw" | "nhwc";
// "none" | "relu" | "silu" | "gelu_tanh" | "sigmoid" | "tanh"; "tf32" | "exact_fp32".
// INVALID_ARGUMENT listing the accepted names.
absl::StatusOr<convserve::v1::DataType> ParseDataType(absl::string_view name);
absl::StatusOr<convserve::v1::Layout> ParseLayout(absl::string_view name);
absl::StatusOr<convserve::v1::Activation> ParseActivation(absl::string_view name);
absl::StatusOr<convserve::v1::Precision> ParsePrecision(absl::string_view name);
// "3x5" is h=3, w=5; "3" is 3x3.
absl::StatusOr<convserve::v1::Size2d> ParseSize2d(absl::string_view text);
// "1,8,32" (empty string: empty list); each >= 1.
absl::StatusOr<std::vector<int32_t>> ParseIntList(absl::string_view text);

// An activation tensor as the wire carries it, from an .npy array holding it in memory order:
// a [N, C, H, W] array for NCHW, [N, H, W, C] for NHWC. INVALID_ARGUMENT unless 4-D.
absl::StatusOr<convserve::v1::Tensor> TensorFromNpy(NpyArray array, Layout layout);
// The inverse: an .npy array in the tensor's memory order ([N, H, W, C] for NHWC). The data is
// moved out of `tensor`. INVALID_ARGUMENT when the shape, dtype or byte length is inconsistent.
absl::StatusOr<NpyArray> NpyFromTensor(convserve::v1::Tensor tensor);

// Converts every element to `dtype` (round to nearest even); a no-op when it already is.
NpyArray CastNpy(const NpyArray& array, DataType dtype);

}  // namespace convserve
