// LayerSpec -> ConvParams. Enum fields arrive as ints (proto3 enums are open), so every switch
// refuses values it does not know.
#include "common/layer_spec_rules.h"

#include "absl/strings/str_cat.h"
#include "common/wire_enums.h"

namespace convserve {

absl::Status ValidateLayerName(const std::string& name, const std::string& field) {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " must be set"));
  if (name.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " is ", name.size(), " characters long; at most 128 allowed"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " '", name, "' may hold only letters, digits, '_', '.' and '-'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ConvParams> ParamsFromSpec(const v1::LayerSpec& spec) {
  if (absl::Status s = ValidateLayerName(spec.name(), "spec.name"); !s.ok()) return s;
  if (!spec.has_kernel()) {
    return absl::InvalidArgumentError("spec.kernel must be set (h and w, each >= 1)");
  }
  ConvParams p;
  p.in_channels = spec.in_channels();
  p.out_channels = spec.out_channels();
  p.kernel_h = spec.kernel().h();
  p.kernel_w = spec.kernel().w();
  p.stride_h = spec.stride().h() == 0 ? 1 : spec.stride().h();
  p.stride_w = spec.stride().w() == 0 ? 1 : spec.stride().w();
  p.pad_h = spec.padding().h();
  p.pad_w = spec.padding().w();
  p.dilation_h = spec.dilation().h() == 0 ? 1 : spec.dilation().h();
  p.dilation_w = spec.dilation().w() == 0 ? 1 : spec.dilation().w();
  p.groups = spec.groups() == 0 ? 1 : spec.groups();
  absl::StatusOr<DataType> dtype = DataTypeFromProto(spec.dtype(), "spec.dtype");
  if (!dtype.ok()) return dtype.status();
  p.dtype = *dtype;
  switch (spec.precision()) {
    case v1::PRECISION_DEFAULT:
    case v1::PRECISION_TF32:
      p.fp32_math = Fp32Math::kTf32;
      break;
    case v1::PRECISION_EXACT_FP32:
      p.fp32_math = Fp32Math::kExact;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("spec.precision has unknown value ", spec.precision()));
  }
  if (spec.precision() != v1::PRECISION_DEFAULT && p.dtype != DataType::kFloat32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "spec.precision applies to FP32 layers only; this layer is ", DataTypeName(p.dtype)));
  }
  p.has_bias = spec.has_bias();
  switch (spec.activation()) {
    case v1::ACTIVATION_NONE:
      p.activation = Activation::kNone;
      break;
    case v1::ACTIVATION_RELU:
      p.activation = Activation::kRelu;
      break;
    case v1::ACTIVATION_SILU:
      p.activation = Activation::kSilu;
      break;
    case v1::ACTIVATION_GELU_TANH:
      p.activation = Activation::kGeluTanh;
      break;
    case v1::ACTIVATION_SIGMOID:
      p.activation = Activation::kSigmoid;
      break;
    case v1::ACTIVATION_TANH:
      p.activation = Activation::kTanh;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("spec.activation has unknown value ", spec.activation()));
  }
  if (spec.stride().h() < 0 || spec.stride().w() < 0) {
    return absl::InvalidArgumentError("spec.stride must be >= 1 (or 0 for the default 1)");
  }
  if (spec.dilation().h() < 0 || spec.dilation().w() < 0) {
    return absl::InvalidArgumentError("spec.dilation must be >= 1 (or 0 for the default 1)");
  }
  if (spec.groups() < 0) {
    return absl::InvalidArgumentError("spec.groups must be >= 1 (or 0 for the default 1)");
  }
  if (absl::Status s = ValidateParams(p); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("spec.", s.message()));
  }
  if (spec.input_size().h() < 0 || spec.input_size().w() < 0) {
    return absl::InvalidArgumentError("spec.input_size must be non-negative");
  }
  for (int b : spec.warmup_batch_sizes()) {
    if (b < 1 || b > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("spec.warmup_batch_sizes must each be in [1, 4096], got ", b));
    }
  }
  if (spec.warmup_batch_sizes_size() > 0 &&
      (spec.input_size().h() == 0 || spec.input_size().w() == 0)) {
    return absl::InvalidArgumentError("spec.warmup_batch_sizes needs spec.input_size");
  }
  return p;
}

}  // namespace convserve
