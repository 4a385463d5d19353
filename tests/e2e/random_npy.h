// Test data for the process tests: arrays of uniform random values in [-1, 1), rounded to the
// dtype, ready to write as .npy files or send as tensors.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/npy.h"
#include "kernels/host_numeric.h"

namespace convserve {

inline NpyArray RandomArray(DataType dtype, std::vector<int64_t> shape, std::mt19937& rng) {
  NpyArray array;
  array.dtype = dtype;
  array.shape = std::move(shape);
  array.data.resize(static_cast<size_t>(array.elements() * DataTypeSize(dtype)));
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  for (int64_t i = 0; i < array.elements(); ++i) {
    StoreFromDouble(dtype, array.data.data(), i, uniform(rng));
  }
  return array;
}

}  // namespace convserve
