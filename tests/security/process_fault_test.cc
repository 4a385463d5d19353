// Process-level fault tests: the real convserve-server binary as a child process on loopback
// ports (tests/e2e/server_process.h), CPU backend.
//  - A model repository with one truncated weights.npy: the server starts, that layer fails to
//    load with a message naming the file, the others load and compute correct results.
//  - SIGKILL under load, then a restart on the same --state_dir and --model_repository: every
//    call in flight at the kill ends with UNAVAILABLE (none hangs), the layers reload from the
//    repository and compute correct results, and the tuning cache file in the state directory
//    is intact and still serves its entries without measuring.
//  - The same crash on a GPU server after tuning (skipped without the CUDA engine or a GPU):
//    the restarted server lists the tuned choices from the file and re-tunes nothing.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "client/convert.h"
#include "common/npy.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "kernels/tuner.h"
#include "kernels/tuning_cache_file.h"
#include "tests/e2e/random_npy.h"
#include "tests/e2e/server_process.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;
using grpc::health::v1::HealthCheckResponse;

// One layer of a test repository: its spec and the operands written next to it.
struct RepoLayer {
  v1::LayerSpec spec;
  NpyArray weights;
  NpyArray bias;  // empty unless spec.has_bias
};

RepoLayer MakeLayer(const std::string& name, v1::DataType dtype, int64_t in_channels,
                    int64_t out_channels, int64_t kernel, bool bias, std::mt19937& rng) {
  RepoLayer layer;
  v1::LayerSpec& spec = layer.spec;
  spec.set_name(name);
  spec.set_dtype(dtype);
  if (dtype == v1::DATA_TYPE_FP32) spec.set_precision(v1::PRECISION_EXACT_FP32);
  spec.set_in_channels(in_channels);
  spec.set_out_channels(out_channels);
  spec.mutable_kernel()->set_h(kernel);
  spec.mutable_kernel()->set_w(kernel);
  spec.mutable_padding()->set_h(kernel / 2);
  spec.mutable_padding()->set_w(kernel / 2);
  spec.set_activation(v1::ACTIVATION_RELU);
  spec.set_has_bias(bias);
  const DataType host = *DataTypeFromProto(dtype);
  layer.weights = RandomArray(host, {out_channels, in_channels, kernel, kernel}, rng);
  if (bias) layer.bias = RandomArray(host, {out_channels}, rng);
  return layer;
}

// Writes `layer` as <root>/<name>/{config.pbtxt, weights.npy[, bias.npy]}.
void WriteLayer(const std::string& root, const RepoLayer& layer) {
  const fs::path dir = fs::path(root) / layer.spec.name();
  fs::create_directories(dir);
  std::string text;
  ASSERT_TRUE(google::protobuf::TextFormat::PrintToString(layer.spec, &text));
  std::ofstream(dir / "config.pbtxt") << text;
  ASSERT_TRUE(WriteNpyFile((dir / "weights.npy").string(), layer.weights).ok());
  if (layer.spec.has_bias()) {
    ASSERT_TRUE(WriteNpyFile((dir / "bias.npy").string(), layer.bias).ok());
  }
}

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args,
                                           const std::string& device = "cpu") {
  ServerProcessOptions options;
  options.binary = CONVSERVE_SERVER;
  options.device = device;
  options.args = std::move(args);  // later flags win, so --state_dir here replaces the default
  options.startup_timeout = absl::Minutes(3);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

Client MakeClient(const ServerProcess& server) {
  ClientOptions options;
  options.target = server.address();
  options.call_timeout = absl::Minutes(3);
  return Client(options);
}

// Polls the layer's health until SERVING: the server's own word that the layer can be used.
bool WaitLayerServing(Client& client, const std::string& layer) {
  const absl::Time deadline = absl::Now() + absl::Minutes(2);
  while (absl::Now() < deadline) {
    absl::StatusOr<HealthCheckResponse::ServingStatus> health = client.Health(layer);
    if (health.ok() && *health == HealthCheckResponse::SERVING) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

v1::ForwardRequest MakeRequest(const std::string& layer, const NpyArray& input) {
  v1::ForwardRequest request;
  request.set_layer(layer);
  *request.mutable_input() = *TensorFromNpy(input, Layout::kNchw);
  return request;
}

// Checks an NCHW output tensor against the fp64 reference of `layer` on `input` (NCHW).
void ExpectMatchesReference(const RepoLayer& layer, const NpyArray& input,
                            const v1::Tensor& output) {
  absl::StatusOr<ConvParams> params = ParamsFromSpec(layer.spec);
  ASSERT_TRUE(params.ok()) << params.status();
  ConvProblem problem{*params,        input.shape[0], input.shape[2],
                      input.shape[3], Layout::kNchw,  Layout::kNchw};
  absl::StatusOr<NpyArray> out = NpyFromTensor(output);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->shape, (std::vector<int64_t>{problem.batch, params->out_channels,
                                              problem.out_height(), problem.out_width()}));
  const std::vector<double> ref =
      ReferenceConv2dDouble(problem, input.data.data(), layer.weights.data.data(),
                            params->has_bias ? layer.bias.data.data() : nullptr);
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < out->elements(); ++i) {
    const double o = LoadAsDouble(out->dtype, out->data.data(), i);
    diff += (o - ref[i]) * (o - ref[i]);
    norm += ref[i] * ref[i];
  }
  const double tolerance = params->dtype == DataType::kFloat32   ? 1e-5
                           : params->dtype == DataType::kFloat16 ? 2e-3
                                                                 : 1e-2;
  EXPECT_LT(std::sqrt(diff / norm), tolerance) << layer.spec.name();
}

// One Forward on `layer` with a fresh input, checked against the reference.
void ExpectServesCorrectly(Client& client, const RepoLayer& layer, std::mt19937& rng) {
  const NpyArray input =
      RandomArray(*DataTypeFromProto(layer.spec.dtype()), {2, layer.spec.in_channels(), 9, 7}, rng);
  absl::StatusOr<v1::ForwardResponse> response =
      client.Forward(MakeRequest(layer.spec.name(), input));
  ASSERT_TRUE(response.ok()) << layer.spec.name() << ": " << response.status();
  ExpectMatchesReference(layer, input, response->output());
}

std::vector<std::string> LayerNames(Client& client) {
  absl::StatusOr<std::vector<v1::LayerInfo>> layers = client.ListLayers();
  EXPECT_TRUE(layers.ok()) << layers.status();
  std::vector<std::string> names;
  if (layers.ok()) {
    for (const v1::LayerInfo& layer : *layers) names.push_back(layer.spec().name());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Sends `count` Forward calls on `layer` at once, SIGKILLs `server` as soon as the first is
// answered, and checks that every call ends within a minute of the kill: computed correctly,
// or UNAVAILABLE. Returns how many ended UNAVAILABLE (-1 on a failed check).
int KillUnderLoad(ServerProcess& server, const RepoLayer& layer, int count,
                  const std::vector<int64_t>& input_shape, std::mt19937& rng) {
  Client client = MakeClient(server);
  const DataType dtype = *DataTypeFromProto(layer.spec.dtype());
  std::vector<NpyArray> inputs;
  std::vector<v1::ForwardRequest> requests;
  std::vector<v1::ForwardResponse> responses(count);
  std::vector<absl::Status> statuses(count);
  absl::Mutex mu;
  struct Progress {
    int answered = 0;
    int count = 0;
    bool Any() const { return answered >= 1; }
    bool All() const { return answered == count; }
  } progress{0, count};
  for (int i = 0; i < count; ++i) {
    inputs.push_back(RandomArray(dtype, input_shape, rng));
    requests.push_back(MakeRequest(layer.spec.name(), inputs.back()));
  }
  for (int i = 0; i < count; ++i) {
    // The deadline is far beyond the waits below: a call that never ends fails the test.
    client.ForwardAsync(requests[i], &responses[i], absl::Minutes(10), [&, i](absl::Status s) {
      absl::MutexLock lock(&mu);
      statuses[i] = std::move(s);
      ++progress.answered;
    });
  }
  // The first answer proves the server took the calls; the rest are queued or computing.
  {
    absl::MutexLock lock(&mu);
    if (!mu.AwaitWithTimeout(absl::Condition(&progress, &Progress::Any), absl::Minutes(5))) {
      ADD_FAILURE() << "no answer in 5 minutes; log:\n" << server.Log();
    }
  }
  if (!server.Signal(SIGKILL).ok()) {
    ADD_FAILURE() << "cannot signal the server";
    return -1;
  }
  absl::StatusOr<int> exit_code = server.Wait(absl::Minutes(1));
  EXPECT_TRUE(exit_code.ok()) << exit_code.status();
  if (exit_code.ok()) {
    EXPECT_EQ(*exit_code, 128 + SIGKILL);
  }
  {
    absl::MutexLock lock(&mu);
    if (!mu.AwaitWithTimeout(absl::Condition(&progress, &Progress::All), absl::Minutes(1))) {
      ADD_FAILURE() << progress.answered << " of " << count
                    << " calls answered a minute after the kill";
      return -1;
    }
  }
  int unavailable = 0;
  for (int i = 0; i < count; ++i) {
    if (statuses[i].ok()) {
      ExpectMatchesReference(layer, inputs[i], responses[i].output());
    } else {
      EXPECT_EQ(statuses[i].code(), absl::StatusCode::kUnavailable)
          << "request " << i << ": " << statuses[i];
      ++unavailable;
    }
  }
  std::printf("at the kill: %d of %d calls answered, %d ended UNAVAILABLE\n", count - unavailable,
              count, unavailable);
  return unavailable;
}

// (batch bucket, config) of each tuned choice, sorted.
[[maybe_unused]] std::vector<std::pair<int, std::string>> Choices(
    const google::protobuf::RepeatedPtrField<v1::TunedChoice>& tuned) {
  std::vector<std::pair<int, std::string>> choices;
  for (const v1::TunedChoice& choice : tuned) {
    choices.emplace_back(choice.batch_bucket(), choice.config());
  }
  std::sort(choices.begin(), choices.end());
  return choices;
}

TEST(ProcessFaultTest, TruncatedWeightsFailOnlyThatLayer) {
  const std::string root = MakeTempDir("convserve-truncated");
  ASSERT_FALSE(root.empty());
  const std::string repo = root + "/repo";
  std::mt19937 rng(11);
  const RepoLayer alpha = MakeLayer("alpha", v1::DATA_TYPE_FP32, 8, 8, 3, true, rng);
  const RepoLayer beta = MakeLayer("beta", v1::DATA_TYPE_FP16, 4, 6, 1, false, rng);
  const RepoLayer broken = MakeLayer("broken", v1::DATA_TYPE_FP32, 8, 8, 3, false, rng);
  for (const RepoLayer* layer : {&alpha, &beta, &broken}) WriteLayer(repo, *layer);
  // Cut the weights short: a copy interrupted mid-file. The header is intact, the data is not.
  const std::string weights_path = repo + "/broken/weights.npy";
  const std::string whole = ReadBytes(weights_path);
  ASSERT_GT(whole.size(), 200u);
  fs::resize_file(weights_path, whole.size() - 100);

  std::unique_ptr<ServerProcess> server = StartServer({"--model_repository=" + repo});
  ASSERT_NE(server, nullptr);
  Client client = MakeClient(*server);
  EXPECT_EQ(LayerNames(client), (std::vector<std::string>{"alpha", "beta"})) << server->Log();

  // The log names the layer directory, the file and what is wrong with it, and counts.
  const std::string log = server->Log();
  EXPECT_NE(log.find("layer directory " + repo + "/broken not loaded"), std::string::npos) << log;
  EXPECT_NE(log.find(weights_path + ": .npy data truncated"), std::string::npos) << log;
  EXPECT_NE(log.find("2 layers loaded, 1 failed"), std::string::npos) << log;

  // The failed layer is unknown to inference and to health checks; the others serve.
  absl::StatusOr<v1::ForwardResponse> refused =
      client.Forward(MakeRequest("broken", RandomArray(DataType::kFloat32, {1, 8, 5, 5}, rng)));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kNotFound) << refused.status();
  EXPECT_NE(refused.status().message().find("broken"), absl::string_view::npos);
  EXPECT_EQ(client.Health("broken").status().code(), absl::StatusCode::kNotFound);
  for (const RepoLayer* layer : {&alpha, &beta}) {
    ASSERT_TRUE(WaitLayerServing(client, layer->spec.name())) << server->Log();
    ExpectServesCorrectly(client, *layer, rng);
  }
  server.reset();
  fs::remove_all(root);
}

// Fills `path` the way the GPU engine does: a Tuner on that file, tuning each problem with a
// measurement that names a made-up config. Returns the configs chosen, by problem.
std::vector<std::string> SeedTuningCache(const std::string& path,
                                         const std::vector<ConvProblem>& problems) {
  TunerOptions options;
  options.fingerprint.gpu_name = "process_fault_test GPU";
  options.fingerprint.sm_count = 132;
  options.fingerprint.compute_capability = 90;
  options.cache_path = path;
  options.background_tuning = false;
  int measured = 0;
  Tuner tuner(options, [&measured](const ConvProblem&) {
    ++measured;
    return absl::StatusOr<std::vector<CandidateTime>>(std::vector<CandidateTime>{
        {absl::StrCat("config_", measured), 10.0 * measured, 0}, {"runner_up", 1000.0, 0}});
  });
  std::vector<std::string> configs;
  for (const ConvProblem& problem : problems) {
    absl::StatusOr<TunedEntry> entry = tuner.Tune(problem);
    EXPECT_TRUE(entry.ok()) << entry.status();
    configs.push_back(entry.ok() ? entry->config : "");
  }
  EXPECT_EQ(measured, static_cast<int>(problems.size()));
  return configs;
}

TEST(ProcessFaultTest, SigkillUnderLoadThenRestartReloadsLayersAndKeepsTuningCache) {
  const std::string root = MakeTempDir("convserve-sigkill");
  ASSERT_FALSE(root.empty());
  const std::string repo = root + "/repo";
  const std::string state = root + "/state";
  std::mt19937 rng(17);
  const RepoLayer alpha = MakeLayer("alpha", v1::DATA_TYPE_FP32, 8, 8, 3, true, rng);
  const RepoLayer beta = MakeLayer("beta", v1::DATA_TYPE_BF16, 4, 6, 1, true, rng);
  // Slow on the fp64 reference (64 -> 64 channels, 3x3, 48x48: ~0.2 GFLOP per request) and one
  // request per batch, so requests are still queued or computing when the first answer arrives.
  RepoLayer slow = MakeLayer("slow", v1::DATA_TYPE_FP32, 64, 64, 3, false, rng);
  slow.spec.mutable_batching()->set_max_batch_size(1);
  for (const RepoLayer* layer : {&alpha, &beta, static_cast<const RepoLayer*>(&slow)}) {
    WriteLayer(repo, *layer);
  }

  // The state directory holds the tuning cache (<state_dir>/tuning_cache.tsv). The CPU backend
  // neither tunes nor reads it (tuning needs a GPU), so it is seeded here through the same
  // Tuner the GPU engine uses; what this test checks is that a crash and a restart of the
  // server leave it intact and loadable.
  const std::string cache_path = state + "/tuning_cache.tsv";
  std::vector<ConvProblem> problems;
  for (const RepoLayer* layer : {&alpha, static_cast<const RepoLayer*>(&slow)}) {
    problems.push_back(
        ConvProblem{*ParamsFromSpec(layer->spec), 8, 48, 48, Layout::kNchw, Layout::kNchw});
  }
  const std::vector<std::string> configs = SeedTuningCache(cache_path, problems);
  const std::string cache_before = ReadBytes(cache_path);
  ASSERT_FALSE(cache_before.empty());

  const std::vector<std::string> args = {"--model_repository=" + repo, "--state_dir=" + state};
  std::unique_ptr<ServerProcess> first = StartServer(args);
  ASSERT_NE(first, nullptr);
  {
    Client client = MakeClient(*first);
    ASSERT_EQ(LayerNames(client), (std::vector<std::string>{"alpha", "beta", "slow"}));
    ASSERT_TRUE(WaitLayerServing(client, "slow")) << first->Log();
  }
  // One request per batch on the slow layer: after the first answer, the other seven are still
  // queued or computing when the kill lands.
  EXPECT_GE(KillUnderLoad(*first, slow, 8, {1, 64, 48, 48}, rng), 1)
      << "no call was in flight at the kill";

  // Restart on the same state and repository: everything loads again and computes correctly.
  std::unique_ptr<ServerProcess> second = StartServer(args);
  ASSERT_NE(second, nullptr);
  Client client = MakeClient(*second);
  EXPECT_EQ(LayerNames(client), (std::vector<std::string>{"alpha", "beta", "slow"}))
      << second->Log();
  EXPECT_NE(second->Log().find("3 layers loaded, 0 failed"), std::string::npos) << second->Log();
  for (const RepoLayer* layer : {&alpha, &beta}) {
    ASSERT_TRUE(WaitLayerServing(client, layer->spec.name())) << second->Log();
    ExpectServesCorrectly(client, *layer, rng);
  }
  ASSERT_TRUE(WaitLayerServing(client, "slow"));
  const NpyArray input = RandomArray(DataType::kFloat32, {1, 64, 10, 10}, rng);
  absl::StatusOr<v1::ForwardResponse> response = client.Forward(MakeRequest("slow", input));
  ASSERT_TRUE(response.ok()) << response.status();
  ExpectMatchesReference(slow, input, response->output());

  // The tuning cache: byte for byte what was there before the crash, every record parses, and a
  // tuner opened on it answers each problem from the file without measuring anything.
  EXPECT_EQ(ReadBytes(cache_path), cache_before);
  const tuning_cache::FileContents contents = tuning_cache::ReadFile(cache_path);
  EXPECT_TRUE(contents.warnings.empty()) << contents.warnings.front();
  EXPECT_EQ(contents.records.size(), problems.size());
  TunerOptions options;
  options.fingerprint =
      contents.records.empty() ? TuningFingerprint{} : contents.records.front().fingerprint;
  options.cache_path = cache_path;
  options.background_tuning = false;
  std::vector<std::string> warnings;
  options.log = [&warnings](const std::string& line) { warnings.push_back(line); };
  Tuner reopened(options, [](const ConvProblem& problem) {
    ADD_FAILURE() << "measured " << problem.ToString() << " although it is cached";
    return absl::StatusOr<std::vector<CandidateTime>>(absl::UnavailableError("no GPU"));
  });
  for (size_t i = 0; i < problems.size(); ++i) {
    absl::StatusOr<TunedEntry> entry = reopened.Tune(problems[i]);
    ASSERT_TRUE(entry.ok()) << entry.status();
    EXPECT_EQ(entry->config, configs[i]);
  }
  EXPECT_EQ(reopened.runs(), 0);
  EXPECT_TRUE(warnings.empty()) << warnings.front();
  second.reset();
  fs::remove_all(root);
}

TEST(ProcessFaultTest, GpuTuningCacheSurvivesSigkillAndIsReusedAfterRestart) {
#ifndef CONVSERVE_SERVER_HAS_CUDA_ENGINE
  GTEST_SKIP() << "convserve-server was built without the CUDA engine";
#else
  if (access("/dev/nvidiactl", F_OK) != 0) GTEST_SKIP() << "no GPU on this machine";
  const std::string root = MakeTempDir("convserve-gpu-sigkill");
  ASSERT_FALSE(root.empty());
  const std::string repo = root + "/repo";
  const std::string state = root + "/state";
  std::mt19937 rng(23);
  const RepoLayer layer = MakeLayer("gpu_fp16", v1::DATA_TYPE_FP16, 64, 64, 3, true, rng);
  WriteLayer(repo, layer);
  const std::vector<std::string> args = {"--model_repository=" + repo, "--state_dir=" + state};

  std::unique_ptr<ServerProcess> first = StartServer(args, "cuda:0");
  ASSERT_NE(first, nullptr);
  v1::TuneRequest tune;
  tune.set_layer(layer.spec.name());
  tune.add_batch_sizes(1);
  tune.add_batch_sizes(8);
  tune.mutable_input_size()->set_h(28);
  tune.mutable_input_size()->set_w(28);
  std::vector<std::pair<int, std::string>> tuned;
  {
    Client client = MakeClient(*first);
    absl::StatusOr<v1::TuneResponse> response = client.Tune(tune);
    ASSERT_TRUE(response.ok()) << response.status() << first->Log();
    tuned = Choices(response->tuned());
    ASSERT_EQ(tuned.size(), 2u);
  }
  const std::string cache_path = state + "/tuning_cache.tsv";
  const std::string cache_before = ReadBytes(cache_path);
  const tuning_cache::FileContents contents = tuning_cache::ReadFile(cache_path);
  EXPECT_TRUE(contents.warnings.empty()) << contents.warnings.front();
  EXPECT_GE(contents.records.size(), 2u);

  // A GPU answers fast, so calls may all finish before the kill lands; each must end one way
  // or the other, and none may hang.
  EXPECT_GE(KillUnderLoad(*first, layer, 64, {8, 64, 28, 28}, rng), 0);

  std::unique_ptr<ServerProcess> second = StartServer(args, "cuda:0");
  ASSERT_NE(second, nullptr);
  Client client = MakeClient(*second);
  ASSERT_TRUE(WaitLayerServing(client, layer.spec.name())) << second->Log();
  // The restarted server knows the tuned choices from the file alone...
  absl::StatusOr<v1::LayerInfo> info = client.GetLayer(layer.spec.name());
  ASSERT_TRUE(info.ok()) << info.status();
  const std::vector<std::pair<int, std::string>> listed = Choices(info->tuned());
  for (const auto& choice : tuned) {
    EXPECT_NE(std::find(listed.begin(), listed.end(), choice), listed.end())
        << "batch " << choice.first << " " << choice.second << " not reloaded from " << cache_path;
  }
  // ...tuning again returns them without measuring (a measurement would rewrite the file)...
  absl::StatusOr<v1::TuneResponse> again = client.Tune(tune);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(Choices(again->tuned()), tuned);
  EXPECT_EQ(ReadBytes(cache_path), cache_before);
  // ...and serves correct results with them.
  ExpectServesCorrectly(client, layer, rng);
  second.reset();
  fs::remove_all(root);
#endif
}

}  // namespace
}  // namespace convserve
