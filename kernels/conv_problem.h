// The conv2d problem description shared by every part of the conv library: the layer's fixed
// parameters (ConvParams) plus one request's batch, spatial size and layouts (ConvProblem).
// Plain structs; validation and derived sizes live here so every backend agrees on them.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace convserve {

enum class DataType : uint8_t { kFloat32, kFloat16, kBFloat16 };
// How FP32 layers multiply: TF32 tensor cores (the default, like PyTorch with cuDNN) or exact
// FP32 FMA. Ignored for FP16/BF16, which always accumulate in FP32.
enum class Fp32Math : uint8_t { kTf32, kExact };
enum class Layout : uint8_t { kNchw, kNhwc };
enum class Activation : uint8_t { kNone, kRelu, kSilu, kGeluTanh, kSigmoid, kTanh };

// Bytes per element.
int DataTypeSize(DataType dtype);
const char* DataTypeName(DataType dtype);  // "fp32", "fp16", "bf16"
const char* LayoutName(Layout layout);     // "nchw", "nhwc"
const char* ActivationName(Activation activation);

// A layer's fixed parameters. Weights are [out_channels, in_channels / groups, kernel_h,
// kernel_w] (PyTorch's OIHW).
struct ConvParams {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t kernel_h = 0;
  int64_t kernel_w = 0;
  int64_t stride_h = 1;
  int64_t stride_w = 1;
  int64_t pad_h = 0;
  int64_t pad_w = 0;
  int64_t dilation_h = 1;
  int64_t dilation_w = 1;
  int64_t groups = 1;
  DataType dtype = DataType::kFloat32;
  Fp32Math fp32_math = Fp32Math::kTf32;
  bool has_bias = false;
  Activation activation = Activation::kNone;

  int64_t weight_elements() const {
    return out_channels * (in_channels / groups) * kernel_h * kernel_w;
  }
  int64_t weight_bytes() const { return weight_elements() * DataTypeSize(dtype); }
  int64_t bias_bytes() const { return has_bias ? out_channels * DataTypeSize(dtype) : 0; }
  // True when each group has exactly one input and one output channel per multiplier
  // (depthwise: groups == in_channels).
  bool is_depthwise() const { return groups > 1 && groups == in_channels; }
};

// Checks ranges and divisibility. INVALID_ARGUMENT with a message naming the field.
absl::Status ValidateParams(const ConvParams& params);

// One forward pass: a layer's parameters applied to an [batch, in_channels, height, width]
// input. Shapes are always [N, C, H, W]; the layouts say how they are stored.
struct ConvProblem {
  ConvParams params;
  int64_t batch = 0;
  int64_t height = 0;
  int64_t width = 0;
  Layout input_layout = Layout::kNchw;
  Layout output_layout = Layout::kNchw;

  int64_t out_height() const {
    return (height + 2 * params.pad_h - params.dilation_h * (params.kernel_h - 1) - 1) /
               params.stride_h +
           1;
  }
  int64_t out_width() const {
    return (width + 2 * params.pad_w - params.dilation_w * (params.kernel_w - 1) - 1) /
               params.stride_w +
           1;
  }
  int64_t input_elements() const { return batch * params.in_channels * height * width; }
  int64_t output_elements() const {
    return batch * params.out_channels * out_height() * out_width();
  }
  int64_t input_bytes() const { return input_elements() * DataTypeSize(params.dtype); }
  int64_t output_bytes() const { return output_elements() * DataTypeSize(params.dtype); }
  // Implicit-GEMM view, per group: M = N*P*Q, N = K/groups, K = (C/groups)*R*S.
  int64_t gemm_m() const { return batch * out_height() * out_width(); }
  int64_t gemm_n() const { return params.out_channels / params.groups; }
  int64_t gemm_k() const {
    return params.in_channels / params.groups * params.kernel_h * params.kernel_w;
  }
  // Multiply-adds count as two operations.
  double flops() const {
    return 2.0 * static_cast<double>(gemm_m()) * static_cast<double>(gemm_n()) *
           static_cast<double>(gemm_k()) * static_cast<double>(params.groups);
  }
  // "n32_c64_h56_w56_k64_r3_s3_u1_v1_p1_q1_d1_e1_g1_fp16_nhwc_nhwc" style; stable, for logs
  // and cache keys.
  std::string ToString() const;
};

// Validates params plus the problem's batch and spatial size: positive dimensions, an output
// of at least 1x1, and no element count that overflows int64. INVALID_ARGUMENT naming the field.
absl::Status ValidateProblem(const ConvProblem& problem);

}  // namespace convserve
