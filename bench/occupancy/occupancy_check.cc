// Achieved occupancy of one convserve kernel as the server's CUPTI sampler measures it, to hold
// against Nsight Compute on the same kernel and problem:
//
//   occupancy_check sampler  N C H W K R S STRIDE PAD   # prints the sampler's value (percent)
//   occupancy_check plain    N C H W K R S STRIDE PAD   # the same launches, no sampler, for
//     ncu --metrics sm__warps_active.avg.pct_of_peak_sustained_active
//         -k regex:ConvGemmKernel occupancy_check plain ...
//
// fp16, NHWC in and out, heuristic (untuned) configuration, random data.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/conv_engine.h"
#include "kernels/conv_problem.h"
#include "server/metrics/occupancy_sampler.h"

namespace convserve {
namespace {

constexpr int kWarmups = 3;
constexpr int kLaunches = 5;

int Fail(const std::string& what) {
  std::fprintf(stderr, "occupancy_check: %s\n", what.c_str());
  return 1;
}

int Main(int argc, char** argv) {
  if (argc != 11) {
    return Fail("usage: occupancy_check sampler|plain N C H W K R S STRIDE PAD");
  }
  const std::string mode = argv[1];
  int64_t v[9];
  for (int i = 0; i < 9; ++i) v[i] = std::atoll(argv[i + 2]);
  ConvProblem problem;
  problem.batch = v[0];
  problem.params.in_channels = v[1];
  problem.height = v[2];
  problem.width = v[3];
  problem.params.out_channels = v[4];
  problem.params.kernel_h = v[5];
  problem.params.kernel_w = v[6];
  problem.params.stride_h = problem.params.stride_w = v[7];
  problem.params.pad_h = problem.params.pad_w = v[8];
  problem.params.dtype = DataType::kFloat16;
  problem.input_layout = problem.output_layout = Layout::kNhwc;
  if (absl::Status s = ValidateProblem(problem); !s.ok()) return Fail(s.ToString());

  ConvEngineOptions options;
  options.background_tuning = false;
  absl::StatusOr<std::unique_ptr<ConvEngine>> engine = ConvEngine::Create(options);
  if (!engine.ok()) return Fail(engine.status().ToString());

  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> bits(0x3000, 0x3bff);  // fp16 in [0.125, 1)
  std::vector<uint16_t> weights(problem.params.weight_elements());
  for (uint16_t& w : weights) w = static_cast<uint16_t>(bits(rng));
  absl::StatusOr<std::shared_ptr<const PackedWeights>> packed =
      (*engine)->PackWeights(problem.params, weights.data(), nullptr);
  if (!packed.ok()) return Fail(packed.status().ToString());
  absl::StatusOr<ConvLaunch> launch = (*engine)->Plan(problem);
  if (!launch.ok()) return Fail(launch.status().ToString());

  std::vector<uint16_t> input(problem.input_elements());
  for (uint16_t& x : input) x = static_cast<uint16_t>(bits(rng));
  void *d_input = nullptr, *d_output = nullptr, *d_workspace = nullptr;
  cudaStream_t stream = nullptr;
  if (cudaMalloc(&d_input, problem.input_bytes()) != cudaSuccess ||
      cudaMalloc(&d_output, problem.output_bytes()) != cudaSuccess ||
      cudaMalloc(&d_workspace, std::max<int64_t>(launch->workspace_bytes, 1)) != cudaSuccess ||
      cudaMemcpy(d_input, input.data(), problem.input_bytes(), cudaMemcpyHostToDevice) !=
          cudaSuccess ||
      cudaStreamCreate(&stream) != cudaSuccess) {
    return Fail("CUDA setup failed");
  }
  auto run = [&] {
    return (*engine)->Run(problem, *launch, **packed, d_input, d_output, d_workspace, stream);
  };
  for (int i = 0; i < kWarmups; ++i) {
    if (absl::Status s = run(); !s.ok()) return Fail(s.ToString());
  }
  cudaStreamSynchronize(stream);

  const ConfigOccupancy occupancy = (*engine)->Occupancy(problem, *launch);
  std::printf("problem %s\nconfig %s (workspace %lld B) theoretical_pct %.2f\n",
              problem.ToString().c_str(), launch->config_name.c_str(),
              static_cast<long long>(launch->workspace_bytes),
              100.0 * occupancy.theoretical_occupancy);

  if (mode == "plain") {
    for (int i = 0; i < kLaunches; ++i) {
      if (absl::Status s = run(); !s.ok()) return Fail(s.ToString());
    }
    return cudaStreamSynchronize(stream) == cudaSuccess ? 0 : Fail("launch failed");
  }
  if (mode != "sampler") return Fail("mode must be sampler or plain");

  OccupancySamplerOptions sampler_options;
  sampler_options.interval = absl::ZeroDuration();
  std::unique_ptr<OccupancySampler> sampler = OccupancySampler::Create(sampler_options);
  if (!sampler->enabled()) return Fail("sampler off: " + sampler->disabled_reason());
  std::vector<double> values;
  for (int i = 0; i < kLaunches; ++i) {
    if (!sampler->ShouldSample(launch->config_name)) return Fail("ShouldSample said no");
    if (absl::Status s = sampler->Begin(stream); !s.ok()) return Fail(s.ToString());
    absl::Status ran = run();
    absl::StatusOr<double> achieved = sampler->End(stream);
    if (!ran.ok()) return Fail(ran.ToString());
    if (!achieved.ok()) return Fail(achieved.status().ToString());
    values.push_back(100.0 * *achieved);
    std::printf("sample %d achieved_pct %.2f\n", i, values.back());
  }
  std::sort(values.begin(), values.end());
  std::printf("sampler %s median_achieved_pct %.2f\n", launch->config_name.c_str(),
              values[values.size() / 2]);
  return 0;
}

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) { return convserve::Main(argc, argv); }
