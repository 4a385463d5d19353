// Fuzzes the zero-copy codecs' request parsers against protobuf's own: for any bytes, cut into
// up to four pieces at fuzzed offsets, read as a convserve.v1.ForwardRequest (server/
// forward_wire.h) or an inference.ModelInferRequest (server/kserve/infer_wire.h), both parsers
// must refuse them, or both accept them with the same message, the tensors borrowed from the
// bytes (tests/server/wire_oracle.h).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/fuzz/fuzz_check.h"
#include "tests/server/wire_oracle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const bool kserve = in.ConsumeBool();
  std::vector<size_t> cuts(in.ConsumeIntegralInRange<size_t>(0, 3));
  for (size_t& cut : cuts) cut = in.ConsumeIntegral<uint16_t>();
  const std::string bytes = in.ConsumeRemainingBytesAsString();
  const std::string diff = kserve ? convserve::testing::CompareInferWithProtobuf(bytes, cuts)
                                  : convserve::testing::CompareWithProtobuf(bytes, cuts);
  if (!diff.empty()) std::fprintf(stderr, "%s\n", diff.c_str());
  FUZZ_CHECK(diff.empty());
  return 0;
}
