// Every configuration of the CUDA table x every shape of tests/data/coverage.tsv,
// wide_channels.tsv and space_to_depth.tsv x every dtype (fp16, bf16, fp32 via TF32, exact fp32),
// against the fp64 CPU reference by relative L2 error. Fresh random data every run (the seed is
// printed), outputs poisoned with NaN, input and output layouts and the activation varied over the
// shapes. Plus the public ConvEngine path: pack, tune, plan, run. Skips when no GPU is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "kernels/conv_engine.h"
#include "kernels/cpu_reference.h"
#include "kernels/cuda/conv_runner.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/tile_config.h"
#include "kernels/host_numeric.h"
#include "kernels/shape_table.h"

namespace convserve {
namespace {

// The shape lists: $CONVSERVE_TEST_DATA when set (a bundle run elsewhere), else the source tree's.
std::string TestDataDir() {
  const char* env = std::getenv("CONVSERVE_TEST_DATA");
  return env != nullptr ? env : CONVSERVE_TEST_DATA;
}

bool HasGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

struct Variant {
  DataType dtype;
  Fp32Math math;
  double tolerance;
  const char* name;
};
constexpr Variant kVariants[] = {
    {DataType::kFloat16, Fp32Math::kTf32, 2e-3, "fp16"},
    {DataType::kBFloat16, Fp32Math::kTf32, 1e-2, "bf16"},
    {DataType::kFloat32, Fp32Math::kTf32, 1e-3, "tf32"},
    {DataType::kFloat32, Fp32Math::kExact, 1e-5, "fp32"},
};
constexpr Activation kActivations[] = {Activation::kNone,    Activation::kRelu,
                                       Activation::kSilu,    Activation::kGeluTanh,
                                       Activation::kSigmoid, Activation::kTanh};

std::vector<uint8_t> RandomTensor(DataType dtype, int64_t elements, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  std::vector<uint8_t> data(elements * DataTypeSize(dtype));
  for (int64_t i = 0; i < elements; ++i) StoreFromDouble(dtype, data.data(), i, dist(rng));
  return data;
}

template <typename T>
T Unwrap(absl::StatusOr<T> value) {
  EXPECT_TRUE(value.ok()) << value.status();
  return *std::move(value);
}

// Relative L2 error of a device result in `problem`'s output layout against the NCHW reference;
// infinity when any element is NaN (unwritten) or infinite.
double RelativeL2(const ConvProblem& problem, const std::vector<uint8_t>& out,
                  const std::vector<double>& ref) {
  const int64_t k_dim = problem.params.out_channels, p_dim = problem.out_height(),
                q_dim = problem.out_width();
  double num = 0, den = 0;
  for (int64_t n = 0; n < problem.batch; ++n)
    for (int64_t k = 0; k < k_dim; ++k)
      for (int64_t p = 0; p < p_dim; ++p)
        for (int64_t q = 0; q < q_dim; ++q) {
          const double r = ref[((n * k_dim + k) * p_dim + p) * q_dim + q];
          const double v =
              LoadAsDouble(problem.params.dtype, out.data(),
                           TensorOffset(problem.output_layout, k_dim, p_dim, q_dim, n, k, p, q));
          if (!std::isfinite(v)) return INFINITY;
          num += (v - r) * (v - r);
          den += r * r;
        }
  return std::sqrt(num / std::max(den, 1e-30));
}

// The fp64 reference of `problem` on the data `seed` draws, computed once per process: every
// configuration sees the same data for a (shape, dtype), so the CPU work does not grow with
// the table.
const std::vector<double>& Reference(const ConvProblem& problem, uint64_t seed,
                                     const std::vector<uint8_t>& input,
                                     const std::vector<uint8_t>& weights,
                                     const std::vector<uint8_t>& bias) {
  static std::map<std::string, std::vector<double>> cache;
  const std::string key = std::to_string(seed) + " " + problem.ToString();
  auto it = cache.find(key);
  if (it == cache.end()) {
    it = cache
             .emplace(key, ReferenceConv2dDouble(problem, input.data(), weights.data(),
                                                 problem.params.has_bias ? bias.data() : nullptr))
             .first;
  }
  return it->second;
}

// Runs `config` on `problem` with fresh random data and returns the relative L2 error.
double RunOnce(int config, const ConvProblem& problem, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const ConvParams& params = problem.params;
  const std::vector<uint8_t> input = RandomTensor(params.dtype, problem.input_elements(), rng);
  const std::vector<uint8_t> weights = RandomTensor(params.dtype, params.weight_elements(), rng);
  const std::vector<uint8_t> bias = RandomTensor(params.dtype, params.out_channels, rng);
  const std::vector<double>& ref = Reference(problem, seed, input, weights, bias);

  using cuda::DeviceBuffer;
  DeviceBuffer d_in = Unwrap(DeviceBuffer::Allocate(problem.input_bytes()));
  DeviceBuffer d_out = Unwrap(DeviceBuffer::Allocate(problem.output_bytes()));
  DeviceBuffer d_raw = Unwrap(DeviceBuffer::Allocate(params.weight_bytes()));
  DeviceBuffer d_gemm = Unwrap(DeviceBuffer::Allocate(cuda::PackedGemmBytes(params)));
  DeviceBuffer d_dw = Unwrap(DeviceBuffer::Allocate(cuda::PackedDepthwiseBytes(params)));
  DeviceBuffer d_bias = Unwrap(DeviceBuffer::Allocate(params.bias_bytes()));
  DeviceBuffer d_ws = Unwrap(DeviceBuffer::Allocate(cuda::WorkspaceBytes(config, problem)));
  EXPECT_EQ(cudaMemcpy(d_in.get(), input.data(), input.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d_raw.get(), weights.data(), weights.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  if (params.has_bias) {
    EXPECT_EQ(cudaMemcpy(d_bias.get(), bias.data(), params.bias_bytes(), cudaMemcpyHostToDevice),
              cudaSuccess);
  }
  EXPECT_TRUE(
      cuda::PackWeightsOnDevice(params, d_raw.get(), d_gemm.get(), d_dw.get(), nullptr).ok());
  const cuda::DeviceWeights w{d_gemm.get(), d_dw.get(), d_bias.get()};
  // The workspace starts as garbage, and a second launch reuses it as the first left it: the
  // server's lanes reuse theirs.
  const int64_t workspace_bytes = cuda::WorkspaceBytes(config, problem);
  const int launches = workspace_bytes > 0 ? 2 : 1;
  if (workspace_bytes > 0) {
    EXPECT_EQ(cudaMemset(d_ws.get(), static_cast<int>(seed % 251), workspace_bytes), cudaSuccess);
  }
  double worst = 0;
  for (int launch = 0; launch < launches; ++launch) {
    EXPECT_EQ(cudaMemset(d_out.get(), 0xff, problem.output_bytes()), cudaSuccess);  // NaN poison
    const absl::Status launched =
        cuda::LaunchConv(config, problem, w, d_in.get(), d_out.get(), d_ws.get(), nullptr);
    EXPECT_TRUE(launched.ok()) << launched;
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<uint8_t> out(problem.output_bytes());
    EXPECT_EQ(cudaMemcpy(out.data(), d_out.get(), out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    worst = std::max(worst, RelativeL2(problem, out, ref));
  }
  return worst;
}

class ConfigTest : public ::testing::TestWithParam<int> {};

TEST_P(ConfigTest, MatchesCpuReferenceOnCoverageShapes) {
  if (!HasGpu()) GTEST_SKIP() << "no CUDA GPU";
  const int config = GetParam();
  const cuda::DeviceInfo device = Unwrap(cuda::PrepareDevice(0));
  auto shapes = Unwrap(ReadShapeTable(TestDataDir() + "/coverage.tsv"));
  for (const char* file : {"/wide_channels.tsv", "/space_to_depth.tsv"}) {
    for (auto& shape : Unwrap(ReadShapeTable(TestDataDir() + file))) {
      shapes.push_back(std::move(shape));
    }
  }
  // Fresh data every run, but one seed for the whole run: every configuration then sees the
  // same data per (shape, dtype), and Reference computes each fp64 result once.
  static const uint64_t seed = std::random_device()();
  std::printf("[ seed ] %llu\n", static_cast<unsigned long long>(seed));
  int runs = 0;
  for (const Variant& variant : kVariants) {
    double worst = 0;
    int variant_runs = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      ConvProblem problem = shapes[i].problem;
      problem.params.dtype = variant.dtype;
      problem.params.fp32_math = variant.math;
      problem.params.activation = kActivations[i % 6];
      problem.input_layout = i % 2 ? Layout::kNhwc : Layout::kNchw;
      problem.output_layout = (i / 2) % 2 ? Layout::kNhwc : Layout::kNchw;
      if (!cuda::CanImplement(config, problem, device)) continue;
      const double error = RunOnce(config, problem, seed + i);
      EXPECT_LT(error, variant.tolerance)
          << shapes[i].name << " " << variant.name << " " << problem.ToString() << " act "
          << ActivationName(problem.params.activation);
      worst = std::max(worst, error);
      ++variant_runs;
    }
    if (variant_runs > 0) {
      std::printf("[ error ] %-32s %-4s shapes %2d  max rel L2 %.3g (tol %.0e)\n",
                  cuda::ConfigName(cuda::kConfigTable[config]).c_str(), variant.name, variant_runs,
                  worst, variant.tolerance);
    }
    runs += variant_runs;
  }
  EXPECT_GT(runs, 0) << "configuration runs no coverage shape";
}

INSTANTIATE_TEST_SUITE_P(AllConfigs, ConfigTest, ::testing::Range(0, cuda::kNumConfigs),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return cuda::ConfigName(cuda::kConfigTable[info.param]);
                         });

// The public path the server uses: pack, tune, plan (now tuned), run, occupancy.
TEST(ConvEngineTest, TunePlanRunMatchesReference) {
  if (!HasGpu()) GTEST_SKIP() << "no CUDA GPU";
  ConvEngineOptions options;
  options.background_tuning = false;
  auto engine = Unwrap(ConvEngine::Create(options));
  ConvProblem problem;
  problem.params.in_channels = 64;
  problem.params.out_channels = 96;
  problem.params.kernel_h = problem.params.kernel_w = 3;
  problem.params.pad_h = problem.params.pad_w = 1;
  problem.params.dtype = DataType::kFloat16;
  problem.params.has_bias = true;
  problem.params.activation = Activation::kRelu;
  problem.batch = 3;
  problem.height = 20;
  problem.width = 18;
  problem.input_layout = Layout::kNhwc;
  problem.output_layout = Layout::kNchw;

  std::mt19937_64 rng(std::random_device{}());
  const auto input = RandomTensor(DataType::kFloat16, problem.input_elements(), rng);
  const auto weights = RandomTensor(DataType::kFloat16, problem.params.weight_elements(), rng);
  const auto bias = RandomTensor(DataType::kFloat16, problem.params.out_channels, rng);
  auto packed = Unwrap(engine->PackWeights(problem.params, weights.data(), bias.data()));
  EXPECT_GE(packed->resident_bytes(), problem.params.weight_bytes());

  const TuningResult tuned = Unwrap(engine->Tune(problem));
  EXPECT_FALSE(tuned.config.empty());
  EXPECT_GT(tuned.time_us, 0);
  EXPECT_EQ(tuned.problem.batch, 4);
  std::printf("[ tune ] %s: %s %.1f us (runner-up %s %.1f us), %.2f ms GPU\n",
              problem.ToString().c_str(), tuned.config.c_str(), tuned.time_us,
              tuned.runner_up.c_str(), tuned.runner_up_time_us, tuned.tuning_seconds * 1e3);
  const ConvLaunch launch = Unwrap(engine->Plan(problem));
  EXPECT_TRUE(launch.tuned);
  EXPECT_EQ(launch.config_name, tuned.config);
  EXPECT_EQ(engine->TunedFor(problem.params).size(), 1u);

  using cuda::DeviceBuffer;
  DeviceBuffer d_in = Unwrap(DeviceBuffer::Allocate(problem.input_bytes()));
  DeviceBuffer d_out = Unwrap(DeviceBuffer::Allocate(problem.output_bytes()));
  DeviceBuffer d_ws = Unwrap(DeviceBuffer::Allocate(launch.workspace_bytes));
  ASSERT_EQ(cudaMemcpy(d_in.get(), input.data(), input.size(), cudaMemcpyHostToDevice),
            cudaSuccess);
  ASSERT_EQ(cudaMemset(d_out.get(), 0xff, problem.output_bytes()), cudaSuccess);
  ASSERT_TRUE(
      engine->Run(problem, launch, *packed, d_in.get(), d_out.get(), d_ws.get(), nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint8_t> out(problem.output_bytes());
  ASSERT_EQ(cudaMemcpy(out.data(), d_out.get(), out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  const auto ref = ReferenceConv2dDouble(problem, input.data(), weights.data(), bias.data());
  EXPECT_LT(RelativeL2(problem, out, ref), 2e-3);

  const ConfigOccupancy occ = engine->Occupancy(problem, launch);
  EXPECT_GT(occ.registers_per_thread, 0);
  EXPECT_GT(occ.threads_per_block, 0);
  EXPECT_GT(occ.theoretical_occupancy, 0);
  EXPECT_LE(occ.theoretical_occupancy, 1.0);
  EXPECT_EQ(occ.spill_bytes, 0);

  // Wrong-layer weights are refused, not run.
  ConvProblem other = problem;
  other.params.out_channels = 32;
  EXPECT_FALSE(
      engine->Run(other, launch, *packed, d_in.get(), d_out.get(), d_ws.get(), nullptr).ok());
}

TEST(ConvEngineTest, EveryConfigurationReportsResources) {
  if (!HasGpu()) GTEST_SKIP() << "no CUDA GPU";
  const cuda::DeviceInfo device = Unwrap(cuda::PrepareDevice(0));
  ConvProblem problem;
  problem.params.in_channels = problem.params.out_channels = problem.params.groups = 64;
  problem.params.kernel_h = problem.params.kernel_w = 3;
  problem.batch = 1;
  problem.height = problem.width = 14;
  for (DataType dtype : {DataType::kFloat16, DataType::kBFloat16, DataType::kFloat32}) {
    problem.params.dtype = dtype;
    for (int i = 0; i < cuda::kNumConfigs; ++i) {
      const ConfigOccupancy occ = cuda::QueryOccupancy(i, problem);
      if (occ.threads_per_block == 0) continue;  // no kernel for this dtype (SIMT)
      std::printf("[ resources ] %-30s %-4s regs %3d smem %6d spill %d threads %3d occ %.2f\n",
                  occ.config.c_str(), DataTypeName(dtype), occ.registers_per_thread,
                  occ.shared_bytes_per_block, occ.spill_bytes, occ.threads_per_block,
                  occ.theoretical_occupancy);
      EXPECT_EQ(occ.spill_bytes, 0) << occ.config;
      if (occ.shared_bytes_per_block <= device.max_smem_per_block) {
        EXPECT_GT(occ.theoretical_occupancy, 0) << occ.config;
      }
    }
  }
}

}  // namespace
}  // namespace convserve
