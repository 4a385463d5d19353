// The real convserve-server with --devices=all (skipped without a GPU): concurrent clients with
// distinct inputs, every reply within the fp16 tolerance of the fp64 reference, and batches on
// every visible GPU (with one GPU: the same server as --device=cuda:0). On a machine with
// several GPUs this is the correctness half of issue 11; bench/multi_gpu/run.sh measures speed.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "client/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/concurrent_forward.h"
#include "tests/e2e/conv3x3_spec.h"
#include "tests/e2e/random_npy.h"
#include "tests/e2e/server_process.h"
#include "tests/metrics/http_get.h"

namespace convserve {
namespace {

namespace v1 = convserve::v1;
using ::testing::HasSubstr;
using ::testing::StartsWith;

int VisibleGpus() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

TEST(MultiGpuServerTest, DevicesAllServesCorrectlyOnEveryGpu) {
  const int gpus = VisibleGpus();
  if (gpus == 0) GTEST_SKIP() << "no CUDA GPU visible";
  ServerProcessOptions options;
  options.binary = CONVSERVE_SERVER;
  options.device = "auto";
  options.args = {"--devices=all", "--max_batch_size=8", "--occupancy_sample_interval=0"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  constexpr int kChannels = 64;
  constexpr int kSize = 28;
  const v1::LayerSpec spec = Conv3x3Spec("mgpu", kChannels, v1::DATA_TYPE_FP16);
  std::mt19937 rng(23);
  const NpyArray weights = RandomArray(DataType::kFloat16, {kChannels, kChannels, 3, 3}, rng);
  ClientOptions client_options;
  client_options.target = (*server)->address();
  client_options.call_timeout = absl::Minutes(2);
  absl::StatusOr<v1::LayerInfo> loaded = Client(client_options).LoadLayer(spec, weights.data);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (int g = 0; g < gpus; ++g) EXPECT_THAT(loaded->device(), HasSubstr(absl::StrCat("cuda:", g)));
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  ASSERT_TRUE(params.ok()) << params.status();

  constexpr int kClients = 4;
  constexpr int kCalls = 64;
  absl::StatusOr<ConcurrentForwards> calls =
      ForwardConcurrently(client_options, kClients, "mgpu", DataType::kFloat16,
                          {1, kChannels, kSize, kSize}, kCalls, rng, absl::Minutes(3));
  ASSERT_TRUE(calls.ok()) << calls.status();
  std::map<std::string, int> per_device;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(calls->statuses[i].ok()) << "call " << i << ": " << calls->statuses[i];
    const std::string& device = calls->responses[i].device();
    absl::StatusOr<double> error =
        RelativeErrorToReference(*params, calls->inputs[i], weights, calls->responses[i].output());
    ASSERT_TRUE(error.ok()) << "call " << i << ": " << error.status();
    EXPECT_LT(*error, 2e-3) << "call " << i << " on " << device;
    EXPECT_THAT(device, StartsWith("cuda:"));
    ++per_device[device];
  }
  // At least kCalls / 8 batches; ties go in turn, so the first `gpus` of them cover every GPU.
  EXPECT_EQ(per_device.size(), static_cast<size_t>(std::min(gpus, kCalls / 8)));

  absl::StatusOr<HttpResponse> page = HttpGet((*server)->metrics_port(), "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  for (const auto& [device, replies] : per_device) {
    EXPECT_THAT(page->body,
                HasSubstr(absl::StrCat("convserve_batch_size_count{device=\"", device, "\"")))
        << replies << " replies";
  }
}

}  // namespace
}  // namespace convserve
