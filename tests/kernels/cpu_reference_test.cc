// The CPU reference against an independent formula: every output element computed on its own,
// straight from the definition, with inputs read through the layout's stride formula. Covers
// every shape in coverage.tsv, every dtype, both layouts each way, and every activation.
#include "kernels/cpu_reference.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"
#include "kernels/host_numeric.h"
#include "kernels/shape_table.h"

namespace convserve {
namespace {

std::vector<NamedShape> CoverageShapes() {
  auto shapes = ReadShapeTable(std::string(CONVSERVE_TEST_DATA) + "/coverage.tsv");
  EXPECT_TRUE(shapes.ok()) << shapes.status();
  return shapes.ok() ? *shapes : std::vector<NamedShape>{};
}

std::string RandomTensor(DataType dtype, int64_t elements, std::mt19937_64& rng) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::string bytes(static_cast<size_t>(elements * DataTypeSize(dtype)), '\0');
  for (int64_t i = 0; i < elements; ++i) StoreFromDouble(dtype, bytes.data(), i, normal(rng));
  return bytes;
}

// out[n][k][oh][ow] = act(bias[k] + sum_{c in group(k), r, s} x[n][c][ih][iw] * w[k][c'][r][s])
double DirectFormula(const ConvProblem& pb, const std::string& x, const std::string& w,
                     const std::string& b, int64_t n, int64_t k, int64_t oh, int64_t ow) {
  const ConvParams& p = pb.params;
  const int64_t cpg = p.in_channels / p.groups;
  const int64_t g = k / (p.out_channels / p.groups);
  double acc = p.has_bias ? LoadAsDouble(p.dtype, b.data(), k) : 0.0;
  for (int64_t cl = 0; cl < cpg; ++cl) {
    for (int64_t r = 0; r < p.kernel_h; ++r) {
      for (int64_t s = 0; s < p.kernel_w; ++s) {
        const int64_t ih = oh * p.stride_h + r * p.dilation_h - p.pad_h;
        const int64_t iw = ow * p.stride_w + s * p.dilation_w - p.pad_w;
        if (ih < 0 || iw < 0 || ih >= pb.height || iw >= pb.width) continue;
        const int64_t c = g * cpg + cl;
        const int64_t xi = pb.input_layout == Layout::kNchw
                               ? ((n * p.in_channels + c) * pb.height + ih) * pb.width + iw
                               : ((n * pb.height + ih) * pb.width + iw) * p.in_channels + c;
        const int64_t wi = ((k * cpg + cl) * p.kernel_h + r) * p.kernel_w + s;
        acc += LoadAsDouble(p.dtype, x.data(), xi) * LoadAsDouble(p.dtype, w.data(), wi);
      }
    }
  }
  return ApplyActivation(p.activation, acc);
}

struct Case {
  DataType dtype;
  Layout in_layout;
  Layout out_layout;
  Activation activation;
};

class CpuReferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuReferenceTest, MatchesDirectFormulaOnEveryCoverageShape) {
  const Case c = GetParam();
  std::mt19937_64 rng(std::random_device{}());
  for (NamedShape shape : CoverageShapes()) {
    SCOPED_TRACE(shape.name);
    ConvProblem& pb = shape.problem;
    pb.params.dtype = c.dtype;
    pb.params.activation = c.activation;
    pb.input_layout = c.in_layout;
    pb.output_layout = c.out_layout;
    const std::string x = RandomTensor(c.dtype, pb.input_elements(), rng);
    const std::string w = RandomTensor(c.dtype, pb.params.weight_elements(), rng);
    const std::string b = RandomTensor(c.dtype, pb.params.out_channels, rng);

    const std::vector<double> ref = ReferenceConv2dDouble(pb, x.data(), w.data(), b.data(), 2);
    // Poisoned output: NaN in every element, so an unwritten one fails.
    std::string out(static_cast<size_t>(pb.output_bytes()), '\xff');
    ASSERT_TRUE(ReferenceConv2d(pb, x.data(), w.data(), b.data(), out.data(), 2).ok());

    const int64_t P = pb.out_height(), Q = pb.out_width(), K = pb.params.out_channels;
    double max_err = 0;
    for (int64_t n = 0; n < pb.batch; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t oh = 0; oh < P; ++oh) {
          for (int64_t ow = 0; ow < Q; ++ow) {
            const double want = DirectFormula(pb, x, w, b, n, k, oh, ow);
            const double got_double = ref[static_cast<size_t>(((n * K + k) * P + oh) * Q + ow)];
            max_err = std::max(max_err, std::abs(got_double - want) / (1.0 + std::abs(want)));
            const double got_rounded = LoadAsDouble(
                c.dtype, out.data(), TensorOffset(pb.output_layout, K, P, Q, n, k, oh, ow));
            // Rounding to the storage type is the only difference allowed.
            const double ulp = c.dtype == DataType::kFloat32   ? 1.2e-7
                               : c.dtype == DataType::kFloat16 ? 9.8e-4
                                                               : 7.9e-3;
            ASSERT_NEAR(got_rounded, want, ulp * (std::abs(want) + 1e-3))
                << "n=" << n << " k=" << k << " oh=" << oh << " ow=" << ow;
          }
        }
      }
    }
    EXPECT_LT(max_err, 1e-12);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllDtypesLayoutsActivations, CpuReferenceTest,
    ::testing::Values(Case{DataType::kFloat32, Layout::kNchw, Layout::kNchw, Activation::kNone},
                      Case{DataType::kFloat32, Layout::kNhwc, Layout::kNchw, Activation::kRelu},
                      Case{DataType::kFloat16, Layout::kNchw, Layout::kNhwc, Activation::kSilu},
                      Case{DataType::kBFloat16, Layout::kNhwc, Layout::kNhwc,
                           Activation::kGeluTanh},
                      Case{DataType::kFloat32, Layout::kNhwc, Layout::kNhwc,
                           Activation::kSigmoid},
                      Case{DataType::kFloat16, Layout::kNhwc, Layout::kNchw, Activation::kTanh}));

TEST(CpuReferenceValidationTest, RejectsOutputSmallerThanOnePixel) {
  ConvProblem pb;
  pb.params.in_channels = 1;
  pb.params.out_channels = 1;
  pb.params.kernel_h = pb.params.kernel_w = 5;
  pb.batch = 1;
  pb.height = pb.width = 3;
  float x[9] = {}, w[25] = {}, y[1] = {};
  absl::Status s = ReferenceConv2d(pb, x, w, nullptr, y);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("output size"), absl::string_view::npos) << s;
}

TEST(HostNumericTest, HalfAndBf16RoundTripAndRound) {
  for (float f : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333333f}) {
    EXPECT_NEAR(HalfBitsToFloat(FloatToHalfBits(f)), f, std::abs(f) * 1e-3) << f;
    EXPECT_NEAR(Bf16BitsToFloat(FloatToBf16Bits(f)), f, std::abs(f) * 8e-3) << f;
  }
  EXPECT_EQ(FloatToHalfBits(1e6f), 0x7c00);   // overflow to inf
  EXPECT_EQ(FloatToHalfBits(1e-9f), 0x0000);  // underflow to zero
  EXPECT_EQ(FloatToHalfBits(1.0f + 1.0f / 2048), 0x3c00);  // tie rounds to even
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(std::nanf("")))));
}

}  // namespace
}  // namespace convserve
