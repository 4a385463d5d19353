// Achieved occupancy of one convserve kernel as the server's CUPTI sampler measures it, to hold
// against Nsight Compute on the same kernel and problem:
//
//   occupancy_check sampler  N C H W K R S STRIDE PAD   # prints the sampler's value (percent)
//   occupancy_check plain    N C H W K R S STRIDE PAD   # the same launches, no sampler, for
//     ncu --metrics sm__warps_active.avg.pct_of_peak_sustained_active
//         -k regex:ConvGemmKernel occupancy_check plain ...
//   occupancy_check tax      N C H W K R S STRIDE PAD   # host time of a launch with CUPTI
//     never loaded, detached by the sampler, and attached (as it stayed between samples before)
//   occupancy_check reattach-STRATEGY N C H W K R S STRIDE PAD   # whether the profiler comes
//     back after cuptiFinalize, and the host time of a launch in each state (Reattach below)
//
// fp16, NHWC in and out, heuristic (untuned) configuration, random data.
#include <cuda_runtime.h>
#include <cupti_activity.h>
#include <cupti_profiler_target.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/conv_engine.h"
#include "kernels/conv_problem.h"
#include "server/metrics/cupti_attachment.h"
#include "server/metrics/occupancy_sampler.h"

namespace convserve {
namespace {

constexpr int kWarmups = 3;
constexpr int kLaunches = 5;

int Fail(const std::string& what) {
  std::fprintf(stderr, "occupancy_check: %s\n", what.c_str());
  return 1;
}

// Host time of one call of `issue` (which enqueues work on `stream`): median and mean over
// kRounds x kPerRound calls, the stream drained between rounds so the queue never fills.
struct HostCost {
  double median_us = 0;
  double mean_us = 0;
};
template <typename Issue>
HostCost MeasureHostCost(Issue issue, cudaStream_t stream) {
  constexpr int kRounds = 40;
  constexpr int kPerRound = 100;
  std::vector<double> us;
  us.reserve(kRounds * kPerRound);
  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < kPerRound; ++i) {
      const auto start = std::chrono::steady_clock::now();
      issue();
      us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
              .count());
    }
    cudaStreamSynchronize(stream);
  }
  HostCost cost;
  for (double v : us) cost.mean_us += v / us.size();
  std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
  cost.median_us = us[us.size() / 2];
  return cost;
}

double MicrosSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
      .count();
}

// Which call brings CUPTI back after cuptiFinalize: the profiler raw, before and after
// `strategy` (none, subscribe: CuptiAttachment::Reinitialize, timestamp: cuptiGetTimestamp,
// sleep: 200 ms), with the host cost of a launch measured by `phase` in each state.
template <typename Phase>
int Reattach(const std::string& strategy, Phase phase) {
  auto initialize = [] {
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Initialize_Params, params);
    return CuptiStatus(cuptiProfilerInitialize(&params), "cuptiProfilerInitialize");
  };
  auto deinitialize = [] {
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_DeInitialize_Params, params);
    return CuptiStatus(cuptiProfilerDeInitialize(&params), "cuptiProfilerDeInitialize");
  };
  std::printf("first initialize: %s\n", initialize().ToString().c_str());
  phase("profiler_initialized");
  std::printf("deinitialize: %s\n", deinitialize().ToString().c_str());
  phase("profiler_deinitialized");
  std::printf("finalize: %s\n", CuptiAttachment::Finalize().ToString().c_str());
  phase("finalized");
  if (strategy == "subscribe") {
    std::printf("subscribe: %s\n", CuptiAttachment::Reinitialize().ToString().c_str());
  } else if (strategy == "timestamp") {
    uint64_t timestamp = 0;
    std::printf("timestamp: %s\n",
                CuptiStatus(cuptiGetTimestamp(&timestamp), "cuptiGetTimestamp").ToString().c_str());
  } else if (strategy == "sleep") {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  } else if (strategy != "none") {
    return Fail("unknown strategy " + strategy);
  }
  const auto start = std::chrono::steady_clock::now();
  const absl::Status again = initialize();
  std::printf("reattach-%s: initialize again: %s (%.0f us)\n", strategy.c_str(),
              again.ToString().c_str(), MicrosSince(start));
  if (!again.ok()) return 1;
  phase("initialized_again");
  deinitialize().IgnoreError();
  std::printf("finalize again: %s\n", CuptiAttachment::Finalize().ToString().c_str());
  phase("finalized_again");
  return 0;
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
  const bool reattach = mode.rfind("reattach-", 0) == 0;
  if (mode != "sampler" && mode != "tax" && !reattach) {
    return Fail("mode must be sampler, plain, tax or reattach-{none,subscribe,timestamp,sleep}");
  }

  if (mode == "tax" || reattach) {
    // What the executor issues per batch: the kernel call by call, the same captured as a graph
    // (its usual path), and an event.
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t graph_exec = nullptr;
    cudaEvent_t event = nullptr;
    if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess ||
        !run().ok() || cudaStreamEndCapture(stream, &graph) != cudaSuccess ||
        cudaGraphInstantiate(&graph_exec, graph, 0) != cudaSuccess ||
        cudaEventCreateWithFlags(&event, cudaEventDisableTiming) != cudaSuccess) {
      return Fail("graph or event setup failed");
    }
    auto phase = [&](const char* name) {
      const HostCost kernel = MeasureHostCost([&] { run().IgnoreError(); }, stream);
      const HostCost graph_launch =
          MeasureHostCost([&] { cudaGraphLaunch(graph_exec, stream); }, stream);
      const HostCost record = MeasureHostCost([&] { cudaEventRecord(event, stream); }, stream);
      std::printf(
          "%-28s host us per call, median (mean): kernel %.2f (%.2f)  graph %.2f (%.2f)  "
          "event %.2f (%.2f)\n",
          name, kernel.median_us, kernel.mean_us, graph_launch.median_us, graph_launch.mean_us,
          record.median_us, record.mean_us);
    };
    phase("cupti_never_loaded");
    if (reattach) return Reattach(mode.substr(9), phase);
    OccupancySamplerOptions tax_options;
    tax_options.interval = absl::ZeroDuration();
    std::unique_ptr<OccupancySampler> sampler = OccupancySampler::Create(tax_options);
    if (!sampler->enabled()) return Fail("sampler off: " + sampler->disabled_reason());
    phase("sampler_created");
    for (int i = 0; i < kLaunches; ++i) {
      auto t = std::chrono::steady_clock::now();
      if (!sampler->ArmAndWait(absl::Seconds(30))) return Fail("not armed");
      const double arm_us = MicrosSince(t);
      if (i + 1 == kLaunches) phase("armed");  // CUPTI in, as the old sampler kept it always
      if (!sampler->ShouldSample(launch->config_name)) return Fail("ShouldSample said no");
      t = std::chrono::steady_clock::now();
      if (absl::Status s = sampler->Begin(stream); !s.ok()) return Fail(s.ToString());
      const double begin_us = MicrosSince(t);
      absl::Status ran = run();
      t = std::chrono::steady_clock::now();
      absl::StatusOr<double> achieved = sampler->End(stream);
      const double end_us = MicrosSince(t);
      t = std::chrono::steady_clock::now();
      sampler->WaitUntilDisarmed();
      const double disarm_us = MicrosSince(t);
      if (!ran.ok()) return Fail(ran.ToString());
      if (!achieved.ok()) return Fail(achieved.status().ToString());
      std::printf(
          "sample %d achieved_pct %.2f  host us: arm (worker) %.0f  begin %.0f  end %.0f  "
          "disarm (worker) %.0f\n",
          i, 100.0 * *achieved, arm_us, begin_us, end_us, disarm_us);
    }
    phase("detached_after_samples");
    if (!sampler->enabled()) return Fail("sampler off: " + sampler->disabled_reason());
    return 0;
  }

  OccupancySamplerOptions sampler_options;
  sampler_options.interval = absl::ZeroDuration();
  std::unique_ptr<OccupancySampler> sampler = OccupancySampler::Create(sampler_options);
  if (!sampler->enabled()) return Fail("sampler off: " + sampler->disabled_reason());
  std::vector<double> values;
  for (int i = 0; i < kLaunches; ++i) {
    if (!sampler->ArmAndWait(absl::Seconds(30))) return Fail("not armed");
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
