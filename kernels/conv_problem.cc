// Validation and naming for ConvParams / ConvProblem.
#include "kernels/conv_problem.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace convserve {
namespace {

constexpr int64_t kMaxDim = int64_t{1} << 31;

absl::Status Positive(const char* field, int64_t value) {
  if (value <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be >= 1, got ", value));
  }
  if (value >= kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is too large: ", value));
  }
  return absl::OkStatus();
}

// Multiplies non-negative values, failing instead of overflowing.
absl::Status CheckedProduct(const char* what, std::initializer_list<int64_t> factors) {
  int64_t product = 1;
  for (int64_t f : factors) {
    if (f != 0 && product > std::numeric_limits<int64_t>::max() / f) {
      return absl::InvalidArgumentError(absl::StrCat(what, " element count overflows int64"));
    }
    product *= f;
  }
  return absl::OkStatus();
}

}  // namespace

int DataTypeSize(DataType dtype) { return dtype == DataType::kFloat32 ? 4 : 2; }

const char* DataTypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return "fp32";
    case DataType::kFloat16:
      return "fp16";
    case DataType::kBFloat16:
      return "bf16";
  }
  return "?";
}

const char* LayoutName(Layout layout) { return layout == Layout::kNchw ? "nchw" : "nhwc"; }

const char* ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return "none";
    case Activation::kRelu:
      return "relu";
    case Activation::kSilu:
      return "silu";
    case Activation::kGeluTanh:
      return "gelu_tanh";
    case Activation::kSigmoid:
      return "sigmoid";
    case Activation::kTanh:
      return "tanh";
  }
  return "?";
}

absl::Status ValidateParams(const ConvParams& p) {
  for (const auto& [field, value] : {std::pair<const char*, int64_t>{"in_channels", p.in_channels},
                                     {"out_channels", p.out_channels},
                                     {"kernel.h", p.kernel_h},
                                     {"kernel.w", p.kernel_w},
                                     {"stride.h", p.stride_h},
                                     {"stride.w", p.stride_w},
                                     {"dilation.h", p.dilation_h},
                                     {"dilation.w", p.dilation_w},
                                     {"groups", p.groups}}) {
    if (absl::Status s = Positive(field, value); !s.ok()) return s;
  }
  if (p.pad_h < 0 || p.pad_w < 0 || p.pad_h >= kMaxDim || p.pad_w >= kMaxDim) {
    return absl::InvalidArgumentError(
        absl::StrCat("padding must be in [0, 2^31), got (", p.pad_h, ", ", p.pad_w, ")"));
  }
  if (p.in_channels % p.groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("groups (", p.groups,
                                                   ") must divide in_channels (", p.in_channels,
                                                   ")"));
  }
  if (p.out_channels % p.groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("groups (", p.groups,
                                                   ") must divide out_channels (", p.out_channels,
                                                   ")"));
  }
  return CheckedProduct("weights", {p.out_channels, p.in_channels / p.groups, p.kernel_h,
                                    p.kernel_w, int64_t{4}});
}

absl::Status ValidateProblem(const ConvProblem& problem) {
  if (absl::Status s = ValidateParams(problem.params); !s.ok()) return s;
  if (absl::Status s = Positive("input batch (N)", problem.batch); !s.ok()) return s;
  if (absl::Status s = Positive("input height (H)", problem.height); !s.ok()) return s;
  if (absl::Status s = Positive("input width (W)", problem.width); !s.ok()) return s;
  if (problem.out_height() < 1 || problem.out_width() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output size would be ", problem.out_height(), "x", problem.out_width(),
        ": input ", problem.height, "x", problem.width, " is too small for the kernel, stride,",
        " padding and dilation"));
  }
  const ConvParams& p = problem.params;
  if (absl::Status s = CheckedProduct("input", {problem.batch, p.in_channels, problem.height,
                                                problem.width, int64_t{4}});
      !s.ok()) {
    return s;
  }
  return CheckedProduct("output", {problem.batch, p.out_channels, problem.out_height(),
                                   problem.out_width(), int64_t{4}});
}

std::string ConvProblem::ToString() const {
  const ConvParams& p = params;
  return absl::StrCat("n", batch, "_c", p.in_channels, "_h", height, "_w", width, "_k",
                      p.out_channels, "_r", p.kernel_h, "_s", p.kernel_w, "_u", p.stride_h, "x",
                      p.stride_w, "_p", p.pad_h, "x", p.pad_w, "_d", p.dilation_h, "x",
                      p.dilation_w, "_g", p.groups, "_", DataTypeName(p.dtype),
                      p.dtype == DataType::kFloat32 && p.fp32_math == Fp32Math::kExact ? "x" : "",
                      "_", LayoutName(input_layout), "_", LayoutName(output_layout),
                      p.has_bias ? "_bias" : "", "_", ActivationName(p.activation));
}

}  // namespace convserve
