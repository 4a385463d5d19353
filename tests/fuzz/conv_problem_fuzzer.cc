// Fuzzes request validation in the conv library (kernels/conv_problem.h): whatever numbers a
// client sends, ValidateParams / ValidateProblem either reject them with a message or accept a
// problem whose derived sizes (output size, element and byte counts, GEMM view, name) are
// positive and computed without overflow (UBSan aborts on signed overflow).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>

#include "kernels/conv_problem.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// Mostly small values (where the interesting divisibility and output-size cases are), sometimes
// anything at all (where the overflow cases are).
int64_t Dimension(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return in.ConsumeIntegralInRange<int64_t>(-2, 8);
    case 1:
      return in.ConsumeIntegralInRange<int64_t>(0, 4096);
    case 2:
      return int64_t{1} << in.ConsumeIntegralInRange<int>(0, 62);
    default:
      return in.ConsumeIntegral<int64_t>();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace convserve;
  FuzzedDataProvider in(data, size);
  ConvProblem problem;
  ConvParams& p = problem.params;
  p.in_channels = Dimension(in);
  p.out_channels = Dimension(in);
  p.kernel_h = Dimension(in);
  p.kernel_w = Dimension(in);
  p.stride_h = Dimension(in);
  p.stride_w = Dimension(in);
  p.pad_h = Dimension(in);
  p.pad_w = Dimension(in);
  p.dilation_h = Dimension(in);
  p.dilation_w = Dimension(in);
  p.groups = Dimension(in);
  p.dtype = static_cast<DataType>(in.ConsumeIntegralInRange<int>(0, 2));
  p.fp32_math = static_cast<Fp32Math>(in.ConsumeIntegralInRange<int>(0, 1));
  p.has_bias = in.ConsumeBool();
  p.activation = static_cast<Activation>(in.ConsumeIntegralInRange<int>(0, 5));
  problem.batch = Dimension(in);
  problem.height = Dimension(in);
  problem.width = Dimension(in);
  problem.input_layout = static_cast<Layout>(in.ConsumeIntegralInRange<int>(0, 1));
  problem.output_layout = static_cast<Layout>(in.ConsumeIntegralInRange<int>(0, 1));

  const absl::Status params_status = ValidateParams(p);
  if (params_status.ok()) {
    FUZZ_CHECK(p.weight_elements() > 0);
    FUZZ_CHECK(p.weight_bytes() > 0);
    FUZZ_CHECK(p.bias_bytes() >= 0);
  } else {
    FUZZ_CHECK(params_status.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!params_status.message().empty());
  }

  const absl::Status status = ValidateProblem(problem);
  if (!status.ok()) {
    FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!status.message().empty());
    return 0;
  }
  FUZZ_CHECK(params_status.ok());
  FUZZ_CHECK(problem.out_height() >= 1 && problem.out_width() >= 1);
  FUZZ_CHECK(problem.input_bytes() > 0 && problem.output_bytes() > 0);
  FUZZ_CHECK(problem.gemm_m() > 0 && problem.gemm_n() > 0 && problem.gemm_k() > 0);
  // The GEMM view covers exactly the output and the weights.
  FUZZ_CHECK(problem.gemm_m() * problem.gemm_n() * p.groups == problem.output_elements());
  FUZZ_CHECK(problem.gemm_n() * problem.gemm_k() * p.groups == p.weight_elements());
  FUZZ_CHECK(problem.flops() > 0);
  FUZZ_CHECK(!problem.ToString().empty());
  return 0;
}
