// conv_bench: for each shape of a TSV, each batch and dtype, times every configuration of the
// CUDA table and cuDNN's best algorithm (found by timing, NHWC and NCHW) in the same process,
// with the L2 flushed before every timed run, and prints a table plus JSON.
//
//   conv_bench [--shapes=tests/data/resnet50.tsv] [--batches=1,8,32] [--dtypes=fp16,bf16,fp32]
//              [--reps=25] [--json=out.json] [--configs=NAME,...] [--no-cudnn]
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/conv/launch_floor.h"
#include "kernels/cuda/conv_runner.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/helper_kernels.h"
#include "kernels/cuda/tile_config.h"
#include "kernels/shape_table.h"

namespace convserve {
namespace {

using cuda::DeviceBuffer;

#define CHECK_CUDA(call)                                                                        \
  do {                                                                                          \
    const cudaError_t e = (call);                                                               \
    if (e != cudaSuccess) {                                                                     \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e)); \
      std::exit(1);                                                                             \
    }                                                                                           \
  } while (0)
#define CHECK_CUDNN(call)                                                                        \
  do {                                                                                           \
    const cudnnStatus_t s = (call);                                                              \
    if (s != CUDNN_STATUS_SUCCESS) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudnnGetErrorString(s)); \
      std::exit(1);                                                                              \
    }                                                                                            \
  } while (0)

struct Options {
  std::string shapes = std::string(CONVSERVE_TEST_DATA) + "/resnet50.tsv";
  std::vector<int> batches = {1, 8, 32};
  std::vector<std::string> dtypes = {"fp16", "bf16", "fp32"};
  int reps = 25;
  std::string json;
  std::vector<std::string> configs;  // empty: every configuration
  bool cudnn = true;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    if (key == "--shapes") {
      o.shapes = value;
    } else if (key == "--batches") {
      o.batches.clear();
      for (absl::string_view b : absl::StrSplit(value, ',')) {
        int n = 0;
        if (absl::SimpleAtoi(b, &n)) o.batches.push_back(n);
      }
    } else if (key == "--dtypes") {
      o.dtypes = absl::StrSplit(value, ',');
    } else if (key == "--reps") {
      o.reps = std::max(3, std::atoi(value.c_str()));
    } else if (key == "--json") {
      o.json = value;
    } else if (key == "--configs") {
      o.configs = absl::StrSplit(value, ',');
    } else if (key == "--no-cudnn") {
      o.cudnn = false;
    } else {
      std::fprintf(stderr,
                   "usage: conv_bench [--shapes=TSV] [--batches=1,8,32] [--dtypes=fp16,bf16,fp32] "
                   "[--reps=N] [--json=PATH] [--configs=NAME,...] [--no-cudnn]\n");
      std::exit(2);
    }
  }
  return o;
}

DataType ParseDtype(const std::string& s) {
  if (s == "fp16") return DataType::kFloat16;
  if (s == "bf16") return DataType::kBFloat16;
  return DataType::kFloat32;
}

// A JSON number, or null where there is none (a competitor not run: --no-cudnn).
std::string JsonNumber(double value) {
  return std::isfinite(value) ? absl::StrCat(value) : std::string("null");
}

// Times `launch` with the L2 flushed before each run; returns the median in microseconds.
template <typename Fn>
double TimeMedian(Fn&& launch, int reps, void* flush, size_t flush_bytes, cudaStream_t stream,
                  cudaEvent_t start, cudaEvent_t stop) {
  for (int i = 0; i < 3; ++i) launch();  // warm-up
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaMemsetAsync(flush, i & 0xff, flush_bytes, stream));
    CHECK_CUDA(cudaEventRecord(start, stream));
    launch();
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2] * 1000.0;
}

struct CudnnResult {
  double time_us = INFINITY;
  std::string algo;
};

cudnnDataType_t CudnnType(DataType d) {
  switch (d) {
    case DataType::kFloat16:
      return CUDNN_DATA_HALF;
    case DataType::kBFloat16:
      return CUDNN_DATA_BFLOAT16;
    case DataType::kFloat32:
      return CUDNN_DATA_FLOAT;
  }
  return CUDNN_DATA_FLOAT;
}

// cuDNN's best forward algorithm for `problem` in `format`: candidates from
// cudnnFindConvolutionForwardAlgorithmEx, the top few re-timed like our kernels.
CudnnResult TimeCudnn(cudnnHandle_t handle, const ConvProblem& problem, cudnnTensorFormat_t format,
                      void* input, void* weights, void* output, void* workspace,
                      size_t workspace_bytes, int reps, void* flush, size_t flush_bytes,
                      cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop) {
  const ConvParams& p = problem.params;
  const cudnnDataType_t type = CudnnType(p.dtype);
  cudnnTensorDescriptor_t x_desc, y_desc;
  cudnnFilterDescriptor_t w_desc;
  cudnnConvolutionDescriptor_t conv_desc;
  CHECK_CUDNN(cudnnCreateTensorDescriptor(&x_desc));
  CHECK_CUDNN(cudnnCreateTensorDescriptor(&y_desc));
  CHECK_CUDNN(cudnnCreateFilterDescriptor(&w_desc));
  CHECK_CUDNN(cudnnCreateConvolutionDescriptor(&conv_desc));
  CHECK_CUDNN(cudnnSetTensor4dDescriptor(
      x_desc, format, type, static_cast<int>(problem.batch), static_cast<int>(p.in_channels),
      static_cast<int>(problem.height), static_cast<int>(problem.width)));
  CHECK_CUDNN(cudnnSetFilter4dDescriptor(w_desc, type, format, static_cast<int>(p.out_channels),
                                         static_cast<int>(p.in_channels / p.groups),
                                         static_cast<int>(p.kernel_h),
                                         static_cast<int>(p.kernel_w)));
  CHECK_CUDNN(cudnnSetConvolution2dDescriptor(
      conv_desc, static_cast<int>(p.pad_h), static_cast<int>(p.pad_w), static_cast<int>(p.stride_h),
      static_cast<int>(p.stride_w), static_cast<int>(p.dilation_h), static_cast<int>(p.dilation_w),
      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CHECK_CUDNN(cudnnSetConvolutionGroupCount(conv_desc, static_cast<int>(p.groups)));
  CHECK_CUDNN(cudnnSetConvolutionMathType(
      conv_desc, p.dtype == DataType::kFloat32 ? CUDNN_DEFAULT_MATH : CUDNN_TENSOR_OP_MATH));
  CHECK_CUDNN(cudnnSetTensor4dDescriptor(
      y_desc, format, type, static_cast<int>(problem.batch), static_cast<int>(p.out_channels),
      static_cast<int>(problem.out_height()), static_cast<int>(problem.out_width())));
  constexpr int kMaxAlgos = 8;
  cudnnConvolutionFwdAlgoPerf_t perf[kMaxAlgos];
  int found = 0;
  CudnnResult best;
  if (cudnnFindConvolutionForwardAlgorithmEx(handle, x_desc, input, w_desc, weights, conv_desc,
                                             y_desc, output, kMaxAlgos, &found, perf, workspace,
                                             workspace_bytes) == CUDNN_STATUS_SUCCESS) {
    int timed = 0;
    for (int i = 0; i < found && timed < 4; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > workspace_bytes) continue;
      ++timed;
      const float alpha = 1.f, beta = 0.f;
      const cudnnConvolutionFwdAlgo_t algo = perf[i].algo;
      // Run each algorithm with the math type Find measured it with.
      CHECK_CUDNN(cudnnSetConvolutionMathType(conv_desc, perf[i].mathType));
      const double t = TimeMedian(
          [&] {
            CHECK_CUDNN(cudnnConvolutionForward(handle, &alpha, x_desc, input, w_desc, weights,
                                                conv_desc, algo, workspace, workspace_bytes, &beta,
                                                y_desc, output));
          },
          reps, flush, flush_bytes, stream, start, stop);
      if (t < best.time_us) {
        best.time_us = t;
        best.algo = absl::StrCat("algo", static_cast<int>(algo),
                                 perf[i].mathType == CUDNN_TENSOR_OP_MATH ? "_tc" : "");
      }
    }
  }
  cudnnDestroyTensorDescriptor(x_desc);
  cudnnDestroyTensorDescriptor(y_desc);
  cudnnDestroyFilterDescriptor(w_desc);
  cudnnDestroyConvolutionDescriptor(conv_desc);
  return best;
}

int Main(int argc, char** argv) {
  const Options options = ParseArgs(argc, argv);
  auto shapes = ReadShapeTable(options.shapes);
  if (!shapes.ok()) {
    std::fprintf(stderr, "%s\n", std::string(shapes.status().message()).c_str());
    return 1;
  }
  auto device = cuda::PrepareDevice(0);
  if (!device.ok()) {
    std::fprintf(stderr, "no GPU: %s\n", std::string(device.status().message()).c_str());
    return 1;
  }
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  cudnnHandle_t handle;
  CHECK_CUDNN(cudnnCreate(&handle));
  CHECK_CUDNN(cudnnSetStream(handle, stream));
  const size_t flush_bytes = static_cast<size_t>(std::max<int64_t>(device->l2_bytes, 1 << 20)) * 2;
  const size_t cudnn_ws_bytes = size_t{512} << 20;
  DeviceBuffer flush = *DeviceBuffer::Allocate(static_cast<int64_t>(flush_bytes));
  DeviceBuffer cudnn_ws = *DeviceBuffer::Allocate(static_cast<int64_t>(cudnn_ws_bytes));

  std::printf("# %s, %d SMs, cuDNN %zu; median of %d runs, L2 flushed before each\n",
              device->name.c_str(), device->sm_count, cudnnGetVersion(), options.reps);
  std::printf("%-22s %3s %-4s %-28s %9s %7s %9s %9s %-10s %7s %7s %9s\n", "shape", "N", "type",
              "best config", "ours_us", "TFLOP/s", "dnn_nhwc", "dnn_nchw", "dnn_algo", "TFLOP/s",
              "ratio", "ours_nchw");
  std::string json = "{\"device\": \"" + device->name +
                     "\", \"cudnn_version\": " + std::to_string(cudnnGetVersion()) +
                     ", \"launch_floor_us\": {";
  // What the timing itself costs: an empty kernel, flushed and timed like every layer below.
  std::printf("# launch floor (empty kernel, same timing):");
  for (const LaunchFloorCase& floor_case : kLaunchFloorCases) {
    const double t = TimeMedian([&] { CHECK_CUDA(LaunchEmptyKernel(floor_case, stream)); },
                                options.reps, flush.get(), flush_bytes, stream, start, stop);
    std::printf(" %s %.2f us%s", floor_case.name, t,
                &floor_case == &kLaunchFloorCases[std::size(kLaunchFloorCases) - 1] ? "\n" : ",");
    absl::StrAppend(&json, &floor_case == kLaunchFloorCases ? "" : ", ", "\"", floor_case.name,
                    "\": ", t);
  }
  absl::StrAppend(&json, "}, \"results\": [\n");
  std::map<std::string, std::vector<double>> ratios;  // "fp16 N=32" -> ratios
  bool first_json = true;
  for (const std::string& dtype_name : options.dtypes) {
    for (int batch : options.batches) {
      for (const NamedShape& shape : *shapes) {
        ConvProblem problem = shape.problem;
        problem.batch = batch;
        problem.params.dtype = ParseDtype(dtype_name);
        problem.input_layout = problem.output_layout = Layout::kNhwc;
        const ConvParams& params = problem.params;
        const int64_t elem = DataTypeSize(params.dtype);
        DeviceBuffer input = *DeviceBuffer::Allocate(problem.input_bytes());
        DeviceBuffer output = *DeviceBuffer::Allocate(problem.output_bytes());
        DeviceBuffer raw_w = *DeviceBuffer::Allocate(params.weight_bytes());
        DeviceBuffer gemm_w = *DeviceBuffer::Allocate(cuda::PackedGemmBytes(params));
        DeviceBuffer dw_w = *DeviceBuffer::Allocate(cuda::PackedDepthwiseBytes(params));
        CHECK_CUDA(
            cuda::LaunchFillRandom(params.dtype, input.get(), problem.input_elements(), 1, stream));
        CHECK_CUDA(
            cuda::LaunchFillRandom(params.dtype, raw_w.get(), params.weight_elements(), 2, stream));
        if (!cuda::PackWeightsOnDevice(params, raw_w.get(), gemm_w.get(), dw_w.get(), stream)
                 .ok()) {
          return 1;
        }
        const cuda::DeviceWeights weights{gemm_w.get(), dw_w.get(), nullptr};
        std::string config_json;
        double best_us = INFINITY;
        int best_config = -1;
        for (int c = 0; c < cuda::kNumConfigs; ++c) {
          if (!cuda::CanImplement(c, problem, *device)) continue;
          if (!options.configs.empty() &&
              std::find(options.configs.begin(), options.configs.end(),
                        cuda::ConfigName(cuda::kConfigTable[c])) == options.configs.end()) {
            continue;
          }
          DeviceBuffer ws = *DeviceBuffer::Allocate(cuda::WorkspaceBytes(c, problem));
          const double t = TimeMedian(
              [&] {
                if (!cuda::LaunchConv(c, problem, weights, input.get(), output.get(), ws.get(),
                                      stream)
                         .ok()) {
                  std::exit(1);
                }
              },
              options.reps, flush.get(), flush_bytes, stream, start, stop);
          const std::string name = cuda::ConfigName(cuda::kConfigTable[c]);
          absl::StrAppend(&config_json, config_json.empty() ? "" : ", ", "\"", name, "\": ", t);
          if (t < best_us) {
            best_us = t;
            best_config = c;
          }
        }
        // Our NCHW path (input transpose + kernel with NCHW stores) with the best NHWC config.
        double ours_nchw_us = INFINITY;
        if (best_config >= 0) {
          ConvProblem nchw = problem;
          nchw.input_layout = nchw.output_layout = Layout::kNchw;
          DeviceBuffer ws = *DeviceBuffer::Allocate(cuda::WorkspaceBytes(best_config, nchw));
          ours_nchw_us = TimeMedian(
              [&] {
                if (!cuda::LaunchConv(best_config, nchw, weights, input.get(), output.get(),
                                      ws.get(), stream)
                         .ok()) {
                  std::exit(1);
                }
              },
              options.reps, flush.get(), flush_bytes, stream, start, stop);
        }
        CudnnResult nhwc, nchw;
        if (options.cudnn) {
          nhwc = TimeCudnn(handle, problem, CUDNN_TENSOR_NHWC, input.get(), raw_w.get(),
                           output.get(), cudnn_ws.get(), cudnn_ws_bytes, options.reps, flush.get(),
                           flush_bytes, stream, start, stop);
          nchw = TimeCudnn(handle, problem, CUDNN_TENSOR_NCHW, input.get(), raw_w.get(),
                           output.get(), cudnn_ws.get(), cudnn_ws_bytes, options.reps, flush.get(),
                           flush_bytes, stream, start, stop);
        }
        const CudnnResult& dnn = nhwc.time_us <= nchw.time_us ? nhwc : nchw;
        const double flops = problem.flops();
        const double ratio = dnn.time_us / best_us;  // > 1: we are faster
        if (std::isfinite(ratio)) {
          ratios[absl::StrCat(dtype_name, " N=", batch)].push_back(ratio);
        }
        const std::string best_name =
            best_config >= 0 ? cuda::ConfigName(cuda::kConfigTable[best_config]) : "-";
        std::printf(
            "%-22s %3d %-4s %-28s %9.1f %7.1f %9.1f %9.1f %-10s %7.1f %7.2f %9.1f\n",
            shape.name.c_str(), batch, dtype_name.c_str(), best_name.c_str(), best_us,
            flops / best_us * 1e-6, nhwc.time_us, nchw.time_us,
            (nhwc.time_us <= nchw.time_us ? "nhwc:" + dnn.algo : "nchw:" + dnn.algo).c_str(),
            flops / dnn.time_us * 1e-6, ratio, ours_nchw_us);
        std::fflush(stdout);
        absl::StrAppend(
            &json, first_json ? "" : ",\n", "{\"shape\": \"", shape.name, "\", \"n\": ", batch,
            ", \"dtype\": \"", dtype_name, "\", \"gflop\": ", flops * 1e-9, ", \"best_config\": \"",
            best_name, "\", \"best_us\": ", JsonNumber(best_us),
            ", \"ours_nchw_us\": ", JsonNumber(ours_nchw_us),
            ", \"cudnn_nhwc_us\": ", JsonNumber(nhwc.time_us), ", \"cudnn_nhwc_algo\": \"",
            nhwc.algo, "\", \"cudnn_nchw_us\": ", JsonNumber(nchw.time_us),
            ", \"cudnn_nchw_algo\": \"", nchw.algo, "\", \"ratio_vs_cudnn\": ", JsonNumber(ratio),
            ", \"configs\": {", config_json, "}}");
        first_json = false;
        (void)elem;
      }
    }
  }
  absl::StrAppend(&json, "\n], \"geomean_ratio_vs_cudnn\": {");
  std::printf("\n# geometric mean of cuDNN-best time / our best time (> 1: faster than cuDNN)\n");
  bool first = true;
  for (const auto& [key, values] : ratios) {
    double log_sum = 0;
    for (double r : values) log_sum += std::log(r);
    const double geo = std::exp(log_sum / values.size());
    std::printf("%-12s %.3f  (%zu shapes)\n", key.c_str(), geo, values.size());
    absl::StrAppend(&json, first ? "" : ", ", "\"", key, "\": ", geo);
    first = false;
  }
  absl::StrAppend(&json, "}}\n");
  if (!options.json.empty()) {
    FILE* f = std::fopen(options.json.c_str(), "w");
    if (f != nullptr) {
      std::fputs(json.c_str(), f);
      std::fclose(f);
    }
  }
  cudnnDestroy(handle);
  return 0;
}

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) { return convserve::Main(argc, argv); }
