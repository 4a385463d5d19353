// Translation between the wire API's enums and specs and the conv library's plain structs, with
// the validation that names the offending field. Shared by the native service, the model
// repository loader and the serving core.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/wire_enums.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"
#include "server/batch_policy.h"
#include "server/server_options.h"

namespace convserve {

// INVALID_ARGUMENT naming `field` unless `value` is a known, set enum value.
absl::StatusOr<DataType> DataTypeFromProto(int value, const std::string& field);
// LAYOUT_DEFAULT maps to `default_layout`.
absl::StatusOr<Layout> LayoutFromProto(int value, const std::string& field,
                                       Layout default_layout = Layout::kNchw);

// [A-Za-z0-9_.-]{1,128}; INVALID_ARGUMENT naming `field` otherwise.
absl::Status ValidateLayerName(const std::string& name, const std::string& field);

// The layer's ConvParams from its spec (unset stride/dilation/groups mean 1), fully validated:
// INVALID_ARGUMENT naming the "spec.*" field.
absl::StatusOr<ConvParams> ParamsFromSpec(const convserve::v1::LayerSpec& spec);

// The layer's batching knobs: spec.batching where set, else the server-wide defaults.
// INVALID_ARGUMENT naming the "spec.batching.*" field for negative or oversized values.
absl::StatusOr<BatchingConfig> BatchingFromSpec(const convserve::v1::LayerSpec& spec,
                                                const BatchingDefaults& defaults);

}  // namespace convserve
