// The model repository: a directory with one sub-directory per layer, each holding
//   config.pbtxt  a text-format convserve.v1.LayerSpec (name defaults to the directory's name),
//   weights.npy   OIHW weights in the spec's dtype (bf16 as '<u2' raw bits),
//   bias.npy      [out_channels], present exactly when spec.has_bias.
// Loaded once at start: a bad layer is logged by name and skipped; the others still load.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "convserve/v1/conv2d.pb.h"
#include "server/serving_core.h"

namespace convserve {

// Reads one layer directory into the LoadLayer request it describes. INVALID_ARGUMENT or
// NOT_FOUND naming the file and what is wrong with it.
absl::StatusOr<convserve::v1::LoadLayerRequest> ReadLayerDirectory(const std::string& dir);

struct RepositoryLoad {
  std::vector<std::string> loaded;  // layer names
  std::vector<std::string> failed;  // "<dir>: <reason>"
};

// Loads every layer directory under `root` (in name order) into `core`. NOT_FOUND when `root`
// is not a readable directory; per-layer failures are logged and listed, not returned.
absl::StatusOr<RepositoryLoad> LoadModelRepository(const std::string& root, ServingCore& core);

}  // namespace convserve
