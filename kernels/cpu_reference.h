// The CPU reference conv2d: direct convolution accumulated in double, multithreaded, correct for
// every parameter combination ConvProblem can express. It is the test oracle for the CUDA
// kernels and the backend that serves when no GPU is present.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "kernels/conv_problem.h"

namespace convserve {

// Computes act(conv(input, weights) + bias) in double and returns it as NCHW doubles, before
// any rounding to the problem's dtype. `input` is in problem.input_layout, `weights` OIHW and
// `bias` ([out_channels], may be null when !has_bias) in problem.params.dtype. `threads` <= 0
// means one per hardware thread. The problem must have passed ValidateProblem.
std::vector<double> ReferenceConv2dDouble(const ConvProblem& problem, const void* input,
                                          const void* weights, const void* bias,
                                          int threads = 0);

// Same, rounded to problem.params.dtype and written to `output` in problem.output_layout.
// Returns INVALID_ARGUMENT when the problem fails validation.
absl::Status ReferenceConv2d(const ConvProblem& problem, const void* input, const void* weights,
                             const void* bias, void* output, int threads = 0);

// Index of element (n, c, h, w) of an [N, C, H, W] tensor stored in `layout`.
inline int64_t TensorOffset(Layout layout, int64_t c_dim, int64_t h_dim, int64_t w_dim,
                            int64_t n, int64_t c, int64_t h, int64_t w) {
  return layout == Layout::kNchw ? ((n * c_dim + c) * h_dim + h) * w_dim + w
                                 : ((n * h_dim + h) * w_dim + w) * c_dim + c;
}

}  // namespace convserve
