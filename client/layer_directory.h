// The model repository format: a directory with one sub-directory per layer, each holding
//   config.pbtxt  a text-format convserve.v1.LayerSpec (name defaults to the directory's name)
//   weights.npy   [out_channels, in_channels / groups, kernel.h, kernel.w] (OIHW) in the spec's
//                 dtype; bf16 saved as uint16 bits (NumPy has no bfloat16)
//   bias.npy      [out_channels] in the spec's dtype; present exactly when has_bias is true
// scripts/make-demo-repository.py writes it; `convserve-cli load` and the echo server read it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "convserve/v1/conv2d.pb.h"

namespace convserve {

// Reads one layer directory into the LoadLayer request that loads it. NOT_FOUND for a missing
// config.pbtxt or weights.npy; INVALID_ARGUMENT naming the file and what is wrong with it
// (unparsable config, a weight shape or dtype that does not match the spec, bias.npy present
// or missing against has_bias).
absl::StatusOr<convserve::v1::LoadLayerRequest> ReadRepositoryLayer(const std::string& dir);

// The layer directories of a repository (sub-directories holding a config.pbtxt), sorted.
// NOT_FOUND when `repository` is not a directory.
absl::StatusOr<std::vector<std::string>> ListRepositoryLayers(const std::string& repository);

}  // namespace convserve
