// Reading and writing NumPy .npy files (format versions 1.0-3.0, C order), the tensor format of
// the model repository and the CLI: what numpy.save writes from torch_tensor.numpy().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/conv_problem.h"

namespace convserve {

struct NpyArray {
  DataType dtype = DataType::kFloat32;
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian elements, C order
  int64_t elements() const;
};

// Parses a whole .npy file held in memory. Accepts '<f4', '<f2' and bfloat16 saved as '<V2' or
// '<u2' raw bits (NumPy has no bfloat16; callers that know the tensor is bf16 pass
// bf16_from_uint16). Fortran order, big-endian and other dtypes are INVALID_ARGUMENT naming
// what was found; a truncated file is INVALID_ARGUMENT with the byte counts.
absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes, bool bf16_from_uint16 = false);
absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path, bool bf16_from_uint16 = false);

// Serialises as format 1.0. bf16 is written as '<u2' raw bits.
std::string SerializeNpy(const NpyArray& array);
absl::Status WriteNpyFile(const std::string& path, const NpyArray& array);

}  // namespace convserve
