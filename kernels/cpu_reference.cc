// Direct convolution in double. Inputs are widened to double once, in NCHW, so the inner loop
// is plain multiply-adds over contiguous rows; work is split over (image, output channel) pairs.
#include "kernels/cpu_reference.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>

#include "kernels/host_numeric.h"

namespace convserve {
namespace {

std::vector<double> WidenToNchw(const ConvProblem& pb, const void* input) {
  const ConvParams& p = pb.params;
  std::vector<double> out(static_cast<size_t>(pb.input_elements()));
  int64_t i = 0;
  for (int64_t n = 0; n < pb.batch; ++n) {
    for (int64_t c = 0; c < p.in_channels; ++c) {
      for (int64_t h = 0; h < pb.height; ++h) {
        for (int64_t w = 0; w < pb.width; ++w) {
          out[i++] = LoadAsDouble(
              p.dtype, input,
              TensorOffset(pb.input_layout, p.in_channels, pb.height, pb.width, n, c, h, w));
        }
      }
    }
  }
  return out;
}

void RunParallel(int64_t tasks, int threads, const std::function<void(int64_t)>& body) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<int64_t>(threads, tasks));
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t t = next++; t < tasks; t = next++) body(t);
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
}

}  // namespace

std::vector<double> ReferenceConv2dDouble(const ConvProblem& pb, const void* input,
                                          const void* weights, const void* bias, int threads) {
  const ConvParams& p = pb.params;
  const int64_t out_h = pb.out_height();
  const int64_t out_w = pb.out_width();
  const int64_t cin_per_group = p.in_channels / p.groups;
  const int64_t cout_per_group = p.out_channels / p.groups;
  const std::vector<double> x = WidenToNchw(pb, input);
  std::vector<double> wt(static_cast<size_t>(p.weight_elements()));
  for (int64_t i = 0; i < p.weight_elements(); ++i) wt[i] = LoadAsDouble(p.dtype, weights, i);

  std::vector<double> y(static_cast<size_t>(pb.output_elements()));
  RunParallel(pb.batch * p.out_channels, threads, [&](int64_t task) {
    const int64_t n = task / p.out_channels;
    const int64_t k = task % p.out_channels;
    const int64_t group = k / cout_per_group;
    const double b = p.has_bias ? LoadAsDouble(p.dtype, bias, k) : 0.0;
    double* out_plane = &y[static_cast<size_t>(task * out_h * out_w)];
    std::fill(out_plane, out_plane + out_h * out_w, b);
    for (int64_t cg = 0; cg < cin_per_group; ++cg) {
      const int64_t c = group * cin_per_group + cg;
      const double* in_plane = &x[static_cast<size_t>((n * p.in_channels + c) * pb.height *
                                                      pb.width)];
      for (int64_t r = 0; r < p.kernel_h; ++r) {
        for (int64_t s = 0; s < p.kernel_w; ++s) {
          const double wv = wt[static_cast<size_t>(((k * cin_per_group + cg) * p.kernel_h + r) *
                                                       p.kernel_w +
                                                   s)];
          for (int64_t oh = 0; oh < out_h; ++oh) {
            const int64_t ih = oh * p.stride_h - p.pad_h + r * p.dilation_h;
            if (ih < 0 || ih >= pb.height) continue;
            const double* in_row = in_plane + ih * pb.width;
            double* out_row = out_plane + oh * out_w;
            for (int64_t ow = 0; ow < out_w; ++ow) {
              const int64_t iw = ow * p.stride_w - p.pad_w + s * p.dilation_w;
              if (iw >= 0 && iw < pb.width) out_row[ow] += wv * in_row[iw];
            }
          }
        }
      }
    }
    if (p.activation != Activation::kNone) {
      for (int64_t i = 0; i < out_h * out_w; ++i) {
        out_plane[i] = ApplyActivation(p.activation, out_plane[i]);
      }
    }
  });
  return y;
}

absl::Status ReferenceConv2d(const ConvProblem& pb, const void* input, const void* weights,
                             const void* bias, void* output, int threads) {
  if (absl::Status s = ValidateProblem(pb); !s.ok()) return s;
  const std::vector<double> y = ReferenceConv2dDouble(pb, input, weights, bias, threads);
  const ConvParams& p = pb.params;
  const int64_t out_h = pb.out_height();
  const int64_t out_w = pb.out_width();
  int64_t i = 0;
  for (int64_t n = 0; n < pb.batch; ++n) {
    for (int64_t k = 0; k < p.out_channels; ++k) {
      for (int64_t h = 0; h < out_h; ++h) {
        for (int64_t w = 0; w < out_w; ++w) {
          StoreFromDouble(p.dtype, output,
                          TensorOffset(pb.output_layout, p.out_channels, out_h, out_w, n, k, h, w),
                          y[static_cast<size_t>(i++)]);
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace convserve
