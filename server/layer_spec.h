// The server's side of a LayerSpec: its batching knobs. The conv parameters and the enum
// conversions are the rules every side shares (common/layer_spec_rules.h, common/wire_enums.h),
// included here so server code finds everything about a spec through one header.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/layer_spec_rules.h"
#include "common/wire_enums.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"
#include "server/batch_policy.h"
#include "server/server_options.h"

namespace convserve {

// The layer's batching knobs: spec.batching where set, else the server-wide defaults.
// INVALID_ARGUMENT naming the "spec.batching.*" field for negative or oversized values.
absl::StatusOr<BatchingConfig> BatchingFromSpec(const convserve::v1::LayerSpec& spec,
                                                const BatchingDefaults& defaults);

}  // namespace convserve
