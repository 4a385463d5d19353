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
//   occupancy_check stall    N C H W K R S STRIDE PAD   # what arming and disarming a sample
//     cost the other threads: lanes launch and wait as the executor's do while the sampler
//     takes a sample a second; each CUPTI step with the lane iterations it overlapped (Stall)
//
// fp16, NHWC in and out, heuristic (untuned) configuration, random data.
#include <cuda_runtime.h>
#include <cupti_activity.h>
#include <cupti_profiler_target.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
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

// One lane iteration of Stall: a launch (through SampledLaunch, as the executor's lanes do) and
// the wait for it.
struct LaneIteration {
  absl::Time begin;
  absl::Time end;
  bool sampled = false;
  double ms() const { return absl::ToDoubleMilliseconds(end - begin); }
};
struct SamplerStep {
  std::string name;
  absl::Time begin;
  absl::Time end;
};

// kStallLanes threads launch `run` on their own streams back to back for kStallSeconds while the
// sampler (a sample a second) arms, samples and disarms; then, for each CUPTI step, how long it
// took and the longest lane iteration that overlapped it, against the iterations that overlapped
// no step. A step that stalls other threads' CUDA calls shows as iterations as long as itself.
template <typename Run>
int Stall(Run run, const std::string& config, int64_t output_bytes, int64_t workspace_bytes) {
  constexpr int kStallLanes = 4;
  constexpr absl::Duration kStallSeconds = absl::Seconds(6);
  absl::Mutex steps_mu;
  std::vector<SamplerStep> steps;
  OccupancySamplerOptions options;
  options.interval = absl::Seconds(1);
  options.quiet_period = absl::ZeroDuration();  // the lanes never pause: arm into their launches
  options.on_step = [&](std::string_view name, absl::Time begin, absl::Time end) {
    absl::MutexLock lock(&steps_mu);
    steps.push_back({std::string(name), begin, end});
  };
  std::unique_ptr<OccupancySampler> sampler = OccupancySampler::Create(options);
  if (!sampler->enabled()) return Fail("sampler off: " + sampler->disabled_reason());
  {
    absl::MutexLock lock(&steps_mu);
    steps.clear();  // Create's probe, before any lane ran
  }

  absl::Mutex launch_mu;  // the executor's: shared per launch, exclusive for the sampled one
  std::vector<std::vector<LaneIteration>> lanes(kStallLanes);
  std::vector<double> achieved;
  absl::Mutex achieved_mu;
  std::atomic<bool> failed{false};
  const absl::Time stop_at = absl::Now() + kStallSeconds;
  std::vector<std::thread> threads;
  for (int lane = 0; lane < kStallLanes; ++lane) {
    threads.emplace_back([&, lane] {
      cudaStream_t stream = nullptr;
      void *output = nullptr, *workspace = nullptr;
      if (cudaStreamCreate(&stream) != cudaSuccess ||
          cudaMalloc(&output, output_bytes) != cudaSuccess ||
          cudaMalloc(&workspace, std::max<int64_t>(workspace_bytes, 1)) != cudaSuccess) {
        failed = true;
        return;
      }
      while (absl::Now() < stop_at && !failed) {
        LaneIteration it;
        it.begin = absl::Now();
        {
          SampledLaunch launch(sampler.get(), &launch_mu, config, stream);
          if (!run(output, workspace, stream).ok()) failed = true;
          it.sampled = launch.sampling();
          absl::StatusOr<double> value = launch.Finish();
          if (value.ok()) {
            absl::MutexLock lock(&achieved_mu);
            achieved.push_back(100.0 * *value);
          }
        }
        if (cudaStreamSynchronize(stream) != cudaSuccess) failed = true;
        it.end = absl::Now();
        lanes[lane].push_back(it);
      }
      cudaFree(output);
      cudaFree(workspace);
      cudaStreamDestroy(stream);
    });
  }
  for (std::thread& t : threads) t.join();
  sampler->WaitUntilDisarmed();
  if (failed) return Fail("a lane's launch failed");

  absl::MutexLock lock(&steps_mu);
  std::vector<double> free_ms;  // iterations that overlapped no step and took no sample
  size_t total = 0;
  for (const auto& lane : lanes) {
    total += lane.size();
    for (const LaneIteration& it : lane) {
      const bool overlaps = std::any_of(steps.begin(), steps.end(), [&](const SamplerStep& st) {
        return it.begin < st.end && st.begin < it.end;
      });
      if (!overlaps && !it.sampled) free_ms.push_back(it.ms());
    }
  }
  if (free_ms.empty()) return Fail("no lane iteration outside the sampler's steps");
  std::sort(free_ms.begin(), free_ms.end());
  std::printf(
      "stall: %d lanes, %zu iterations; outside the steps (%zu): median %.3f ms  p99 %.3f ms  "
      "max %.3f ms\n",
      kStallLanes, total, free_ms.size(), free_ms[free_ms.size() / 2],
      free_ms[free_ms.size() * 99 / 100], free_ms.back());
  for (const auto& lane : lanes) {
    for (const LaneIteration& it : lane) {
      if (it.sampled) std::printf("stall: sampled launch, its lane's iteration %.3f ms\n", it.ms());
    }
  }
  std::sort(steps.begin(), steps.end(),
            [](const SamplerStep& a, const SamplerStep& b) { return a.begin < b.begin; });
  for (const SamplerStep& st : steps) {
    double longest = 0;
    int overlapping = 0, inside = 0;
    for (const auto& lane : lanes) {
      for (const LaneIteration& it : lane) {
        if (!(it.begin < st.end && st.begin < it.end)) continue;
        ++overlapping;
        if (it.begin >= st.begin && it.end <= st.end) ++inside;
        longest = std::max(longest, it.ms());
      }
    }
    std::printf(
        "stall: step %-20s %9.3f ms  lane iterations overlapping %6d (inside %6d), longest "
        "%9.3f ms\n",
        st.name.c_str(), absl::ToDoubleMilliseconds(st.end - st.begin), overlapping, inside,
        longest);
  }
  for (double value : achieved) std::printf("stall: achieved_pct %.2f\n", value);
  return achieved.empty() ? Fail("no sample was taken") : 0;
}

int Main(int argc, char** argv) {
  if (argc != 11) {
    return Fail(
        "usage: occupancy_check sampler|plain|tax|stall|reattach-S N C H W K R S STRIDE PAD");
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
  if (mode == "stall") {
    return Stall(
        [&](void* output, void* workspace, cudaStream_t lane_stream) {
          return (*engine)->Run(problem, *launch, **packed, d_input, output, workspace,
                                lane_stream);
        },
        launch->config_name, problem.output_bytes(), launch->workspace_bytes);
  }
  const bool reattach = mode.rfind("reattach-", 0) == 0;
  if (mode != "sampler" && mode != "tax" && !reattach) {
    return Fail(
        "mode must be sampler, plain, tax, stall or reattach-{none,subscribe,timestamp,sleep}");
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
