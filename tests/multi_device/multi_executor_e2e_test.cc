// The real convserve-server with two CPU reference executors (--devices=cpu,cpu) on loopback
// ports: many concurrent clients with distinct inputs, every reply checked against the fp64
// reference, and the server's own /metrics proving that batches ran on both executors. Also
// the start-up errors of bad --device/--devices combinations.
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
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

// Per device label: the value of `family`{layer=`layer`} summed over kernel configurations.
std::map<std::string, double> PerDevice(const std::string& page, const std::string& family,
                                        const std::string& layer) {
  std::map<std::string, double> values;
  for (absl::string_view line : absl::StrSplit(page, '\n')) {
    if (!absl::ConsumePrefix(&line, family + "{")) continue;
    const size_t close = line.rfind('}');
    if (close == absl::string_view::npos) continue;
    const absl::string_view labels = line.substr(0, close);
    if (!absl::StrContains(labels, "layer=\"" + layer + "\"")) continue;
    const size_t device_at = labels.find("device=\"");
    if (device_at == absl::string_view::npos) continue;
    const absl::string_view rest = labels.substr(device_at + 8);
    const std::string device(rest.substr(0, rest.find('"')));
    double value = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(line.substr(close + 1)), &value)) {
      values[device] += value;
    }
  }
  return values;
}

TEST(MultiExecutorE2eTest, ConcurrentClientsAreServedCorrectlyOnBothExecutors) {
  ServerProcessOptions options;
  options.binary = CONVSERVE_SERVER;
  options.device = "auto";  // --devices replaces it
  options.args = {"--devices=cpu,cpu", "--cpu_threads=1", "--max_batch_size=8"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  const v1::LayerSpec spec = Conv3x3Spec("mconv", 16, v1::DATA_TYPE_FP16);
  std::mt19937 rng(11);
  const NpyArray weights = RandomArray(DataType::kFloat16, {16, 16, 3, 3}, rng);
  ClientOptions client_options;
  client_options.target = (*server)->address();
  client_options.call_timeout = absl::Minutes(2);
  absl::StatusOr<v1::LayerInfo> loaded = Client(client_options).LoadLayer(spec, weights.data);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->device(), HasSubstr("cpu:0 (reference, 1 threads)"));
  EXPECT_THAT(loaded->device(), HasSubstr("cpu:1 (reference, 1 threads)"));
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  ASSERT_TRUE(params.ok()) << params.status();

  // Every client has its own channel and keeps all its calls in flight at once.
  constexpr int kClients = 8;
  constexpr int kCallsPerClient = 16;
  constexpr int kCalls = kClients * kCallsPerClient;
  absl::StatusOr<ConcurrentForwards> calls =
      ForwardConcurrently(client_options, kClients, "mconv", DataType::kFloat16, {1, 16, 16, 16},
                          kCalls, rng, absl::Minutes(3));
  ASSERT_TRUE(calls.ok()) << calls.status();

  std::map<std::string, int> replies_per_device;
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(calls->statuses[i].ok()) << "call " << i << ": " << calls->statuses[i];
    absl::StatusOr<double> error =
        RelativeErrorToReference(*params, calls->inputs[i], weights, calls->responses[i].output());
    ASSERT_TRUE(error.ok()) << "call " << i << ": " << error.status();
    EXPECT_LT(*error, 2e-3) << "call " << i;
    ++replies_per_device[calls->responses[i].device()];
  }
  EXPECT_EQ(replies_per_device.size(), 2u);

  // The server's own account: batches on both executors, every sample counted once.
  absl::StatusOr<HttpResponse> page = HttpGet((*server)->metrics_port(), "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->status, 200);
  const std::map<std::string, double> batches =
      PerDevice(page->body, "convserve_batch_size_count", "mconv");
  const std::map<std::string, double> samples =
      PerDevice(page->body, "convserve_batch_size_sum", "mconv");
  ASSERT_EQ(batches.size(), 2u) << page->body;
  double total_samples = 0;
  for (const auto& [device, count] : batches) {
    EXPECT_GE(count, 1) << device;
    EXPECT_EQ(samples.at(device), replies_per_device[device]) << device;
    total_samples += samples.at(device);
  }
  EXPECT_EQ(total_samples, kCalls);
  EXPECT_THAT((*server)->Log(), HasSubstr("serving on cpu:0 (reference, 1 threads), cpu:1"));
}

// Runs the server binary with `flags` and returns what it did (it exits before serving).
CommandResult RunServer(std::vector<std::string> flags) {
  std::vector<std::string> argv = {CONVSERVE_SERVER, "--listen=127.0.0.1:0", "--metrics_listen="};
  argv.insert(argv.end(), flags.begin(), flags.end());
  absl::StatusOr<CommandResult> result = RunCommand(argv, absl::Seconds(60));
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : CommandResult{};
}

TEST(MultiExecutorE2eTest, BadDeviceFlagsStopTheServerWithAUsageError) {
  struct Case {
    std::vector<std::string> flags;
    const char* message;
  };
  const Case cases[] = {
      {{"--device=cpu", "--devices=cpu,cpu"},
       "INVALID_ARGUMENT: --device=cpu and --devices=cpu,cpu both choose devices"},
      {{"--devices=gpu0"}, "--devices=gpu0: 'gpu0' is not a device"},
      {{"--devices=-1"}, "--devices=-1: GPU ordinal -1 is negative"},
      {{"--devices=cpu,,cpu"}, "--devices=cpu,,cpu: has an empty entry"},
      {{"--devices=cpu,0"}, "lists both GPUs and cpu"},
  };
  for (const Case& c : cases) {
    const CommandResult result = RunServer(c.flags);
    EXPECT_EQ(result.exit_code, 2) << c.flags.back() << "\n" << result.err;
    EXPECT_THAT(result.out + result.err, HasSubstr(c.message)) << c.flags.back();
  }
}

}  // namespace
}  // namespace convserve
