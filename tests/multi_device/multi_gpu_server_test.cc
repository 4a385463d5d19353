// The real convserve-server with --devices=all (skipped without a GPU): concurrent clients with
// distinct inputs, every reply within the fp16 tolerance of the fp64 reference, and batches on
// every visible GPU (with one GPU: the same server as --device=cuda:0). On a machine with
// several GPUs this is the correctness half of issue 11; bench/multi_gpu/run.sh measures speed.
#include <cuda_runtime_api.h>

#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "client/convert.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
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
  v1::LayerSpec spec;
  spec.set_name("mgpu");
  spec.set_in_channels(kChannels);
  spec.set_out_channels(kChannels);
  spec.mutable_kernel()->set_h(3);
  spec.mutable_kernel()->set_w(3);
  spec.mutable_padding()->set_h(1);
  spec.mutable_padding()->set_w(1);
  spec.set_dtype(v1::DATA_TYPE_FP16);
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
  std::vector<std::unique_ptr<Client>> clients;
  for (int c = 0; c < kClients; ++c) clients.push_back(std::make_unique<Client>(client_options));
  std::vector<NpyArray> inputs;
  std::vector<v1::ForwardRequest> requests(kCalls);
  std::vector<v1::ForwardResponse> responses(kCalls);
  std::vector<absl::Status> statuses(kCalls, absl::UnknownError("unanswered"));
  for (int i = 0; i < kCalls; ++i) {
    inputs.push_back(RandomArray(DataType::kFloat16, {1, kChannels, kSize, kSize}, rng));
    absl::StatusOr<v1::Tensor> tensor = TensorFromNpy(inputs.back(), Layout::kNchw);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    requests[i].set_layer("mgpu");
    *requests[i].mutable_input() = *tensor;
  }
  absl::Mutex mu;
  int answered = 0;
  for (int i = 0; i < kCalls; ++i) {
    clients[i % kClients]->ForwardAsync(requests[i], &responses[i], absl::Minutes(2),
                                        [&, i](absl::Status s) {
                                          absl::MutexLock lock(&mu);
                                          statuses[i] = std::move(s);
                                          ++answered;
                                        });
  }
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                        +[](int* n) { return *n == kCalls; }, &answered),
                                    absl::Minutes(3)));
  }
  std::map<std::string, int> per_device;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(statuses[i].ok()) << "call " << i << ": " << statuses[i];
    ConvProblem problem{*params, 1, kSize, kSize, Layout::kNchw, Layout::kNchw};
    const std::vector<double> ref =
        ReferenceConv2dDouble(problem, inputs[i].data.data(), weights.data.data(), nullptr);
    absl::StatusOr<NpyArray> out = NpyFromTensor(responses[i].output());
    ASSERT_TRUE(out.ok()) << out.status();
    double diff = 0, norm = 0;
    for (size_t e = 0; e < ref.size(); ++e) {
      const double o = LoadAsDouble(out->dtype, out->data.data(), static_cast<int64_t>(e));
      diff += (o - ref[e]) * (o - ref[e]);
      norm += ref[e] * ref[e];
    }
    EXPECT_LT(std::sqrt(diff / norm), 2e-3) << "call " << i << " on " << responses[i].device();
    EXPECT_THAT(responses[i].device(), StartsWith("cuda:"));
    ++per_device[responses[i].device()];
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
