// The occupancy sampler: its sampling policy with explicit times (no GPU), and on a GPU the
// achieved occupancy of two spin kernels whose occupancy is known from their launch shape.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/metrics/occupancy_sampler.h"

namespace convserve {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1'000'000);

TEST(OccupancySamplePolicyTest, AtMostOneSamplePerInterval) {
  OccupancySamplePolicy policy(absl::Seconds(10));
  EXPECT_TRUE(policy.ShouldSample("a", kT0));
  policy.Finished();
  EXPECT_FALSE(policy.ShouldSample("b", kT0 + absl::Seconds(9)));
  EXPECT_TRUE(policy.ShouldSample("b", kT0 + absl::Seconds(10)));
  policy.Finished();
}

TEST(OccupancySamplePolicyTest, NoSecondSampleWhileOneIsInProgress) {
  OccupancySamplePolicy policy(absl::Seconds(1));
  EXPECT_TRUE(policy.ShouldSample("a", kT0));
  EXPECT_FALSE(policy.ShouldSample("b", kT0 + absl::Seconds(5)));
  policy.Finished();
  EXPECT_TRUE(policy.ShouldSample("b", kT0 + absl::Seconds(5)));
}

TEST(OccupancySamplePolicyTest, DueOnceTheIntervalPassedAndPostponable) {
  OccupancySamplePolicy policy(absl::Seconds(10));
  EXPECT_TRUE(policy.Due(kT0));
  ASSERT_TRUE(policy.ShouldSample("a", kT0));
  policy.Finished();
  EXPECT_FALSE(policy.Due(kT0 + absl::Seconds(9)));
  EXPECT_TRUE(policy.Due(kT0 + absl::Seconds(10)));
  // An armed sampler that saw no launch to take puts the next sample off by an interval.
  policy.Postpone(kT0 + absl::Seconds(11));
  EXPECT_FALSE(policy.Due(kT0 + absl::Seconds(20)));
  EXPECT_FALSE(policy.ShouldSample("a", kT0 + absl::Seconds(20)));
  EXPECT_TRUE(policy.Due(kT0 + absl::Seconds(21)));
}

TEST(OccupancySamplePolicyTest, ARareConfigurationGetsItsTurn) {
  OccupancySamplePolicy policy(absl::Seconds(10));
  ASSERT_TRUE(policy.ShouldSample("busy", kT0));
  policy.Finished();
  ASSERT_TRUE(policy.ShouldSample("rare", kT0 + absl::Seconds(10)));
  policy.Finished();
  // Two configurations known: each waits 2 intervals for its own refresh, so a busy one does
  // not take every slot.
  EXPECT_FALSE(policy.ShouldSample("busy", kT0 + absl::Seconds(15)));
  EXPECT_TRUE(policy.ShouldSample("busy", kT0 + absl::Seconds(20)));
  policy.Finished();
  EXPECT_FALSE(policy.ShouldSample("busy", kT0 + absl::Seconds(30)));
  EXPECT_TRUE(policy.ShouldSample("rare", kT0 + absl::Seconds(30)));
  policy.Finished();
}

bool HaveGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(OccupancySamplerTest, WithoutAGpuItIsOffAndSaysWhy) {
  if (HaveGpu()) GTEST_SKIP() << "a GPU is present";
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok());
  std::vector<std::string> logged;
  OccupancySamplerOptions options;
  options.metrics = metrics->get();
  options.log = [&](bool warning, std::string_view line) {
    EXPECT_TRUE(warning);
    logged.emplace_back(line);
  };
  std::unique_ptr<OccupancySampler> sampler = OccupancySampler::Create(options);
  EXPECT_FALSE(sampler->enabled());
  EXPECT_FALSE(sampler->disabled_reason().empty());
  EXPECT_FALSE(sampler->ShouldSample("cfg"));
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find("occupancy sampler on cuda:0 is off"), std::string::npos) << logged[0];
  EXPECT_NE((*metrics)->Scrape().find("convserve_occupancy_sampler_enabled{device=\"cuda:0\"} 0"),
            std::string::npos);
}

// Every thread spins for `cycles` clock cycles, so all blocks of a wave stay resident together.
// Dynamic shared memory is only reserved (it limits blocks per SM), never touched.
__global__ void Spin(long long cycles, int* sink) {
  __shared__ int scratch[32];
  const long long start = clock64();
  int x = threadIdx.x;
  while (clock64() - start < cycles) x = x * 3 + 1;
  scratch[threadIdx.x % 32] = x;
  if (x == 42) sink[0] = scratch[0];
}

// A stream and a word for Spin to write, released at scope exit.
struct SpinStream {
  SpinStream() {
    EXPECT_EQ(cudaMalloc(&sink, sizeof(int)), cudaSuccess);
    EXPECT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  }
  ~SpinStream() {
    cudaStreamDestroy(stream);
    cudaFree(sink);
  }
  int* sink = nullptr;
  cudaStream_t stream = nullptr;
};

// The GPU tests' sampler; null, with the reason in *skip, where this machine may not read GPU
// counters (the driver keeps them to admin users). Any other failure to start fails the test.
std::unique_ptr<OccupancySampler> CreateOrSkip(const OccupancySamplerOptions& options,
                                               std::string* skip) {
  std::unique_ptr<OccupancySampler> sampler = OccupancySampler::Create(options);
  if (!sampler->enabled() && sampler->disabled_reason().find("PERMISSION_DENIED") == 0) {
    *skip = sampler->disabled_reason();
    return nullptr;
  }
  EXPECT_TRUE(sampler->enabled()) << sampler->disabled_reason();
  return sampler;
}

struct Shape {
  int threads;
  int shared_bytes;
};

// Achieved occupancy of one Spin launch of exactly one full wave, and its theoretical value.
void Measure(OccupancySampler& sampler, const Shape& shape, double* achieved, double* theoretical) {
  int device = 0, sms = 0, max_threads = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&max_threads, cudaDevAttrMaxThreadsPerMultiProcessor, device),
            cudaSuccess);
  ASSERT_EQ(
      cudaFuncSetAttribute(Spin, cudaFuncAttributeMaxDynamicSharedMemorySize, shape.shared_bytes),
      cudaSuccess);
  int blocks_per_sm = 0;
  ASSERT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, Spin, shape.threads,
                                                          shape.shared_bytes),
            cudaSuccess);
  *theoretical = double(blocks_per_sm * shape.threads) / max_threads;
  SpinStream spin;
  int* sink = spin.sink;
  cudaStream_t stream = spin.stream;
  // Printed, to see what a sample costs: arming on the worker (attach CUPTI, enable the range
  // profiler, start its pass), then on the sampled launch's thread Begin (waits for the device to
  // drain, opens the range) and End (waits for the stream, closes and decodes the range), then
  // disarming.
  const absl::Time arm = absl::Now();
  ASSERT_TRUE(sampler.ArmAndWait(absl::Seconds(30))) << sampler.disabled_reason();
  // The worker has started the profiler's pass; a full-occupancy launch now, before the range
  // opens, must not count (it would pull the low-occupancy shapes' figure up).
  Spin<<<sms*(max_threads / 256), 256, 0, stream>>>(2'000'000, sink);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_TRUE(sampler.ShouldSample("spin")) << sampler.disabled_reason();
  const absl::Time begin = absl::Now();
  ASSERT_TRUE(sampler.Begin(stream).ok());
  const absl::Duration begin_took = absl::Now() - begin;
  Spin<<<sms * blocks_per_sm, shape.threads, shape.shared_bytes, stream>>>(2'000'000, sink);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  absl::StatusOr<double> value = sampler.End(stream);
  ASSERT_TRUE(value.ok()) << value.status();
  const absl::Time ended = absl::Now();
  sampler.WaitUntilDisarmed();  // the next sample attaches CUPTI again
  std::printf(
      "sample host time: arm %.0f us, Begin %.0f us, Begin to End %.0f us, disarm %.0f us\n",
      absl::ToDoubleMicroseconds(begin - arm), absl::ToDoubleMicroseconds(begin_took),
      absl::ToDoubleMicroseconds(ended - begin), absl::ToDoubleMicroseconds(absl::Now() - ended));
  *achieved = *value;
}

TEST(OccupancySamplerTest, AgreesWithTheLaunchShapeOnTheGpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok());
  OccupancySamplerOptions options;
  options.metrics = metrics->get();
  options.interval = absl::ZeroDuration();
  std::string skip;
  std::unique_ptr<OccupancySampler> sampler = CreateOrSkip(options, &skip);
  if (sampler == nullptr) GTEST_SKIP() << skip;
  ASSERT_TRUE(sampler->enabled());
  // A full SM, and one where shared memory caps it at two blocks of 128 threads; each twice, as
  // every sample attaches CUPTI anew after the previous one detached it.
  for (const Shape& shape :
       {Shape{256, 0}, Shape{128, 96 * 1024}, Shape{256, 0}, Shape{128, 96 * 1024}}) {
    double achieved = -1, theoretical = -1;
    Measure(*sampler, shape, &achieved, &theoretical);
    std::printf("threads %d shared %d: theoretical %.3f achieved %.3f\n", shape.threads,
                shape.shared_bytes, theoretical, achieved);
    // One full wave of blocks that all spin equally long: achieved tracks theoretical closely.
    EXPECT_NEAR(achieved, theoretical, 0.08);
  }
  EXPECT_NE((*metrics)->Scrape().find("convserve_occupancy_sampler_enabled{device=\"cuda:0\"} 1"),
            std::string::npos);
}

// The server's path: no sampled launch waits for CUPTI, and CUPTI's stalling calls wait for a
// pause in the launches. A launch that finds a sample due asks the worker to arm and is not
// sampled; the worker arms only once no launch came for the quiet period, and a later launch is
// sampled.
TEST(OccupancySamplerTest, ArmsOnTheWorkerInAPauseAndSamplesALaterLaunch) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  OccupancySamplerOptions options;
  options.interval = absl::ZeroDuration();
  options.quiet_period = absl::Milliseconds(100);
  std::string skip;
  std::unique_ptr<OccupancySampler> sampler = CreateOrSkip(options, &skip);
  if (sampler == nullptr) GTEST_SKIP() << skip;
  ASSERT_TRUE(sampler->enabled());
  SpinStream spin;
  int* sink = spin.sink;
  cudaStream_t stream = spin.stream;

  // A launch every millisecond for 600 ms: a sample is due all along, and never armed.
  EXPECT_FALSE(sampler->ShouldSample("spin"));
  const absl::Time busy_from = absl::Now();
  while (absl::Now() - busy_from < absl::Milliseconds(600)) {
    ASSERT_FALSE(sampler->ShouldSample("spin"));
    ASSERT_FALSE(sampler->armed());
    absl::SleepFor(absl::Milliseconds(1));
  }
  // The launches stop: the worker arms after the quiet period.
  const absl::Time last_launch = absl::Now();
  while (!sampler->armed() && absl::Now() - last_launch < absl::Seconds(30)) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_TRUE(sampler->armed()) << sampler->disabled_reason();
  const absl::Duration paused = absl::Now() - last_launch;
  std::printf("armed %.0f ms after the last launch\n", absl::ToDoubleMilliseconds(paused));
  EXPECT_GE(paused, absl::Milliseconds(100));
  ASSERT_TRUE(sampler->ShouldSample("spin")) << sampler->disabled_reason();
  ASSERT_TRUE(sampler->Begin(stream).ok());
  Spin<<<1, 32, 0, stream>>>(100'000, sink);
  absl::StatusOr<double> value = sampler->End(stream);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_GT(*value, 0.0);
  sampler->WaitUntilDisarmed();
  EXPECT_FALSE(sampler->ShouldSample("spin"));  // detached again: it asks, and is not sampled
  EXPECT_TRUE(sampler->enabled());
}

// While the device is idle an armed sampler stays armed, for the first launch after the lull.
// When launches come but none is due (here: the configuration was sampled within the interval)
// it gives CUPTI back after the armed window.
TEST(OccupancySamplerTest, StaysArmedWhileIdleAndGivesBackWhenNoLaunchIsDue) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  OccupancySamplerOptions options;
  options.interval = absl::Hours(1);
  std::string skip;
  std::unique_ptr<OccupancySampler> sampler = CreateOrSkip(options, &skip);
  if (sampler == nullptr) GTEST_SKIP() << skip;
  ASSERT_TRUE(sampler->enabled());
  SpinStream spin;
  int* sink = spin.sink;
  cudaStream_t stream = spin.stream;

  ASSERT_TRUE(sampler->ArmAndWait(absl::Seconds(30))) << sampler->disabled_reason();
  ASSERT_TRUE(sampler->ShouldSample("spin"));
  ASSERT_TRUE(sampler->Begin(stream).ok());
  Spin<<<1, 32, 0, stream>>>(100'000, sink);
  ASSERT_TRUE(sampler->End(stream).ok());
  sampler->WaitUntilDisarmed();

  ASSERT_TRUE(sampler->ArmAndWait(absl::Seconds(30))) << sampler->disabled_reason();
  absl::SleepFor(absl::Milliseconds(1500));  // longer than the armed window, with no launch
  EXPECT_TRUE(sampler->armed());
  const absl::Time launching = absl::Now();
  while (sampler->armed() && absl::Now() - launching < absl::Seconds(30)) {
    ASSERT_FALSE(sampler->ShouldSample("spin"));  // sampled a moment ago: due in an hour
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_FALSE(sampler->armed());
  EXPECT_LT(absl::Now() - launching, absl::Seconds(3));
  sampler->WaitUntilDisarmed();
  EXPECT_TRUE(sampler->enabled());
}

}  // namespace
}  // namespace convserve
