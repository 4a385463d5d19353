// Fuzzes server/forward_wire.h's request parser against protobuf's own: for any bytes, cut into
// up to four pieces at fuzzed offsets, both must refuse them, or both accept them with the same
// message, input.data borrowed from the bytes (tests/server/forward_wire_oracle.h).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_check.h"
#include "tests/server/forward_wire_oracle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  std::vector<size_t> cuts(in.ConsumeIntegralInRange<size_t>(0, 3));
  for (size_t& cut : cuts) cut = in.ConsumeIntegral<uint16_t>();
  const std::string bytes = in.ConsumeRemainingBytesAsString();
  const std::string diff = convserve::testing::CompareWithProtobuf(bytes, cuts);
  if (!diff.empty()) std::fprintf(stderr, "%s\n", diff.c_str());
  FUZZ_CHECK(diff.empty());
  return 0;
}
