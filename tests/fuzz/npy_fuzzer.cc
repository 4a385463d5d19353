// Fuzzes the .npy reader (common/npy.h) that reads model-repository weights and CLI tensors:
// any bytes must parse or fail with a status, never crash, and what parses must describe its
// data exactly and survive a write/read round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/npy.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (bool bf16_from_uint16 : {false, true}) {
    absl::StatusOr<convserve::NpyArray> array = convserve::ParseNpy(bytes, bf16_from_uint16);
    if (!array.ok()) {
      FUZZ_CHECK(!array.status().message().empty());
      continue;
    }
    for (int64_t d : array->shape) FUZZ_CHECK(d >= 0);
    FUZZ_CHECK(static_cast<int64_t>(array->data.size()) ==
               array->elements() * convserve::DataTypeSize(array->dtype));
    absl::StatusOr<convserve::NpyArray> again =
        convserve::ParseNpy(convserve::SerializeNpy(*array), bf16_from_uint16);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(again->dtype == array->dtype);
    FUZZ_CHECK(again->shape == array->shape);
    FUZZ_CHECK(again->data == array->data);
  }
  return 0;
}
