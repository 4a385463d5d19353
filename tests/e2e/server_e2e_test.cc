// End to end on the CPU backend: the real convserve-server on loopback ports, driven by
// convserve-cli and the client library, outputs checked against the fp64 CPU reference.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "client/convert.h"
#include "client/layer_directory.h"
#include "common/npy.h"
#include "gtest/gtest.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "tests/e2e/random_npy.h"
#include "tests/e2e/server_process.h"

namespace convserve {
namespace {

namespace v1 = convserve::v1;

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args = {}) {
  ServerProcessOptions options;
  options.binary = CONVSERVE_SERVER;
  options.args = std::move(args);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

// Runs convserve-cli against `server` (nullptr: no --target) and returns what it did.
CommandResult Cli(const ServerProcess* server, std::vector<std::string> args) {
  std::vector<std::string> argv = {CONVSERVE_CLI};
  argv.insert(argv.end(), args.begin(), args.end());
  if (server != nullptr) argv.push_back("--target=" + server->address());
  absl::StatusOr<CommandResult> result = RunCommand(argv);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : CommandResult{};
}

void WriteNpy(const std::string& path, const NpyArray& array) {
  ASSERT_TRUE(WriteNpyFile(path, array).ok()) << path;
}

// ||out - ref|| / ||ref||, `out` an .npy array in `out_layout` memory order, `ref` NCHW.
double RelativeL2(const NpyArray& out, Layout out_layout, const std::vector<double>& ref,
                  const ConvProblem& problem) {
  const int64_t n = problem.batch, k = problem.params.out_channels, p = problem.out_height(),
                q = problem.out_width();
  double diff = 0, norm = 0;
  for (int64_t in = 0; in < n; ++in) {
    for (int64_t ik = 0; ik < k; ++ik) {
      for (int64_t ip = 0; ip < p; ++ip) {
        for (int64_t iq = 0; iq < q; ++iq) {
          const double r = ref[static_cast<size_t>(((in * k + ik) * p + ip) * q + iq)];
          const double o = LoadAsDouble(out.dtype, out.data.data(),
                                        TensorOffset(out_layout, k, p, q, in, ik, ip, iq));
          diff += (o - r) * (o - r);
          norm += r * r;
        }
      }
    }
  }
  return std::sqrt(diff / norm);
}

double Tolerance(DataType dtype, bool exact_fp32) {
  switch (dtype) {
    case DataType::kFloat32:
      return exact_fp32 ? 1e-5 : 1e-3;
    case DataType::kFloat16:
      return 2e-3;
    case DataType::kBFloat16:
      return 1e-2;
  }
  return 0;
}

// Checks `output_path` (what the CLI wrote) against the reference conv of the given operands.
void ExpectMatchesReference(const std::string& output_path, const ConvParams& params,
                            const NpyArray& input, Layout input_layout, Layout output_layout,
                            const std::string& weights, const std::string& bias) {
  absl::StatusOr<NpyArray> output = ReadNpyFile(output_path, params.dtype == DataType::kBFloat16);
  ASSERT_TRUE(output.ok()) << output.status();
  ConvProblem problem;
  problem.params = params;
  problem.input_layout = input_layout;
  problem.output_layout = output_layout;
  const auto& s = input.shape;
  problem.batch = s[0];
  problem.height = input_layout == Layout::kNchw ? s[2] : s[1];
  problem.width = input_layout == Layout::kNchw ? s[3] : s[2];
  const std::vector<int64_t> want =
      output_layout == Layout::kNchw
          ? std::vector<int64_t>{problem.batch, params.out_channels, problem.out_height(),
                                 problem.out_width()}
          : std::vector<int64_t>{problem.batch, problem.out_height(), problem.out_width(),
                                 params.out_channels};
  ASSERT_EQ(output->shape, want);
  ASSERT_EQ(output->dtype, params.dtype);
  const std::vector<double> ref = ReferenceConv2dDouble(problem, input.data.data(), weights.data(),
                                                        params.has_bias ? bias.data() : nullptr);
  EXPECT_LT(RelativeL2(*output, output_layout, ref, problem),
            Tolerance(params.dtype, params.fp32_math == Fp32Math::kExact));
}

struct CliCase {
  std::string name;
  DataType dtype;
  std::vector<std::string> spec_flags;
  Layout input_layout;
  Layout output_layout;
  bool bias;
};

void PrintTo(const CliCase& c, std::ostream* os) { *os << c.name; }

class CliConvTest : public testing::TestWithParam<CliCase> {};

// load (from flags, weights converted from fp32 .npy) -> list -> health -> infer -> compare ->
// unload -> infer fails NOT_FOUND -> health fails.
TEST_P(CliConvTest, LoadInferUnloadMatchesReference) {
  const CliCase& c = GetParam();
  std::unique_ptr<ServerProcess> server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string dir = server->work_dir();
  std::mt19937 rng(7);

  const int64_t groups = 2, in_channels = 6, out_channels = 4;
  const NpyArray weights32 =
      RandomArray(DataType::kFloat32, {out_channels, in_channels / groups, 3, 3}, rng);
  const NpyArray bias32 = RandomArray(DataType::kFloat32, {out_channels}, rng);
  WriteNpy(dir + "/w.npy", weights32);
  WriteNpy(dir + "/b.npy", bias32);
  std::vector<std::string> load = {"load", "--layer=" + c.name, "--weights=" + dir + "/w.npy",
                                   absl::StrCat("--dtype=", DataTypeName(c.dtype)),
                                   absl::StrCat("--groups=", groups)};
  if (c.bias) load.push_back("--bias=" + dir + "/b.npy");
  load.insert(load.end(), c.spec_flags.begin(), c.spec_flags.end());
  CommandResult loaded = Cli(server.get(), load);
  ASSERT_EQ(loaded.exit_code, 0) << loaded.err << server->Log();

  CommandResult listed = Cli(server.get(), {"list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find(c.name), std::string::npos) << listed.out;
  CommandResult health = Cli(server.get(), {"health", "--layer=" + c.name});
  EXPECT_EQ(health.exit_code, 0) << health.err;
  EXPECT_NE(health.out.find("SERVING"), std::string::npos) << health.out;

  const NpyArray input =
      RandomArray(c.dtype,
                  c.input_layout == Layout::kNchw ? std::vector<int64_t>{2, in_channels, 9, 11}
                                                  : std::vector<int64_t>{2, 9, 11, in_channels},
                  rng);
  WriteNpy(dir + "/x.npy", input);
  CommandResult inferred =
      Cli(server.get(),
          {"infer", "--layer=" + c.name, "--input=" + dir + "/x.npy", "--output=" + dir + "/y.npy",
           absl::StrCat("--input_layout=", LayoutName(c.input_layout)),
           absl::StrCat("--output_layout=", LayoutName(c.output_layout))});
  ASSERT_EQ(inferred.exit_code, 0) << inferred.err << server->Log();
  EXPECT_NE(inferred.out.find("batch 2"), std::string::npos) << inferred.out;
  EXPECT_NE(inferred.out.find("device cpu"), std::string::npos) << inferred.out;

  absl::StatusOr<std::vector<v1::LayerInfo>> layers = [&] {
    ClientOptions options;
    options.target = server->address();
    return Client(options).ListLayers();
  }();
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), 1u);
  absl::StatusOr<ConvParams> params = ParamsFromSpec(layers->front().spec());
  ASSERT_TRUE(params.ok()) << params.status();
  ExpectMatchesReference(dir + "/y.npy", *params, input, c.input_layout, c.output_layout,
                         CastNpy(weights32, c.dtype).data, CastNpy(bias32, c.dtype).data);

  CommandResult unloaded = Cli(server.get(), {"unload", "--layer=" + c.name});
  EXPECT_EQ(unloaded.exit_code, 0) << unloaded.err;
  CommandResult gone =
      Cli(server.get(),
          {"infer", "--layer=" + c.name, "--input=" + dir + "/x.npy", "--output=" + dir + "/y2.npy",
           absl::StrCat("--input_layout=", LayoutName(c.input_layout))});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("NOT_FOUND"), std::string::npos) << gone.err;
  EXPECT_NE(Cli(server.get(), {"health", "--layer=" + c.name}).exit_code, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Layers, CliConvTest,
    testing::Values(CliCase{"fp32_exact_relu",
                            DataType::kFloat32,
                            {"--padding=1", "--activation=relu", "--precision=exact_fp32"},
                            Layout::kNchw,
                            Layout::kNchw,
                            true},
                    CliCase{"fp16_strided_silu_nhwc_in",
                            DataType::kFloat16,
                            {"--stride=2", "--padding=1x0", "--activation=silu"},
                            Layout::kNhwc,
                            Layout::kNchw,
                            true},
                    CliCase{"bf16_dilated_gelu_nhwc_out",
                            DataType::kBFloat16,
                            {"--dilation=2", "--padding=2", "--activation=gelu_tanh"},
                            Layout::kNchw,
                            Layout::kNhwc,
                            false}),
    [](const testing::TestParamInfo<CliCase>& info) { return info.param.name; });

// The demo repository, as scripts/run-server.sh serves it: generated by the script, loaded at
// start, one layer loaded again by the CLI from its directory.
TEST(ServerE2eTest, DemoRepositoryServesAndMatchesReference) {
  const std::string repo = MakeTempDir("convserve-demo") + "/repo";
  absl::StatusOr<CommandResult> made = RunCommand(
      {"/usr/bin/python3", CONVSERVE_SOURCE_DIR "/scripts/make-demo-repository.py", repo});
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_EQ(made->exit_code, 0) << made->err << "(python3-numpy comes with install-deps.sh)";

  std::unique_ptr<ServerProcess> server = StartServer({"--model_repository=" + repo});
  ASSERT_NE(server, nullptr);
  CommandResult listed = Cli(server.get(), {"list"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  for (const char* name : {"demo_conv3x3", "demo_conv1x1_fp32", "demo_dw3x3_bf16"}) {
    EXPECT_NE(listed.out.find(name), std::string::npos) << listed.out << server->Log();
  }

  absl::StatusOr<v1::LoadLayerRequest> layer = ReadRepositoryLayer(repo + "/demo_conv3x3");
  ASSERT_TRUE(layer.ok()) << layer.status();
  absl::StatusOr<ConvParams> params = ParamsFromSpec(layer->spec());
  ASSERT_TRUE(params.ok()) << params.status();
  std::mt19937 rng(3);
  const NpyArray input = RandomArray(DataType::kFloat16, {2, 64, 20, 20}, rng);
  WriteNpy(server->work_dir() + "/x.npy", input);
  CommandResult inferred = Cli(
      server.get(), {"infer", "--layer=demo_conv3x3", "--input=" + server->work_dir() + "/x.npy",
                     "--output=" + server->work_dir() + "/y.npy"});
  ASSERT_EQ(inferred.exit_code, 0) << inferred.err;
  ExpectMatchesReference(server->work_dir() + "/y.npy", *params, input, Layout::kNchw,
                         Layout::kNchw, layer->weights(), layer->bias());

  CommandResult reloaded =
      Cli(server.get(), {"load", "--layer_dir=" + repo + "/demo_dw3x3_bf16", "--layer=second_dw"});
  EXPECT_EQ(reloaded.exit_code, 0) << reloaded.err;
  EXPECT_NE(Cli(server.get(), {"list"}).out.find("second_dw"), std::string::npos);
  std::filesystem::remove_all(std::filesystem::path(repo).parent_path());
}

// Every failure the CLI can meet ends with a message naming the problem and a non-zero exit.
TEST(ServerE2eTest, CliErrorsExitNonZeroWithClearMessages) {
  std::unique_ptr<ServerProcess> server = StartServer();
  ASSERT_NE(server, nullptr);
  const std::string dir = server->work_dir();
  std::mt19937 rng(1);
  WriteNpy(dir + "/x.npy", RandomArray(DataType::kFloat32, {1, 3, 4, 4}, rng));

  CommandResult unknown =
      Cli(server.get(), {"infer", "--layer=no_such_layer", "--input=" + dir + "/x.npy",
                         "--output=" + dir + "/y.npy"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("NOT_FOUND"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("no_such_layer"), std::string::npos) << unknown.err;

  { std::ofstream(dir + "/garbage.npy") << "this is not numpy"; }
  CommandResult garbage =
      Cli(server.get(),
          {"infer", "--layer=x", "--input=" + dir + "/garbage.npy", "--output=" + dir + "/y.npy"});
  EXPECT_EQ(garbage.exit_code, 1);
  EXPECT_NE(garbage.err.find("garbage.npy"), std::string::npos) << garbage.err;
  EXPECT_NE(garbage.err.find("not an .npy file"), std::string::npos) << garbage.err;

  const std::string whole = SerializeNpy(RandomArray(DataType::kFloat32, {1, 3, 4, 4}, rng));
  { std::ofstream(dir + "/short.npy", std::ios::binary) << whole.substr(0, whole.size() - 8); }
  CommandResult truncated =
      Cli(server.get(),
          {"infer", "--layer=x", "--input=" + dir + "/short.npy", "--output=" + dir + "/y.npy"});
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(truncated.err.find("truncated"), std::string::npos) << truncated.err;

  CommandResult missing_file =
      Cli(server.get(), {"load", "--layer=l", "--weights=" + dir + "/absent.npy"});
  EXPECT_EQ(missing_file.exit_code, 1);
  EXPECT_NE(missing_file.err.find("absent.npy"), std::string::npos) << missing_file.err;

  CommandResult tune_unknown = Cli(server.get(), {"tune", "--layer=no_such_layer"});
  EXPECT_EQ(tune_unknown.exit_code, 1);
  EXPECT_NE(tune_unknown.err.find("NOT_FOUND"), std::string::npos) << tune_unknown.err;

  const int dead_port = PickFreePort();
  CommandResult down = Cli(nullptr, {"list", absl::StrCat("--target=127.0.0.1:", dead_port)});
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("UNAVAILABLE"), std::string::npos) << down.err;
  EXPECT_NE(down.err.find("is convserve-server running"), std::string::npos) << down.err;

  EXPECT_EQ(Cli(server.get(), {}).exit_code, 2);
  CommandResult bad_command = Cli(server.get(), {"frobnicate"});
  EXPECT_EQ(bad_command.exit_code, 2);
  EXPECT_NE(bad_command.err.find("unknown command 'frobnicate'"), std::string::npos);
  CommandResult no_layer = Cli(server.get(), {"infer", "--input=" + dir + "/x.npy"});
  EXPECT_EQ(no_layer.exit_code, 2);
  EXPECT_NE(no_layer.err.find("--layer"), std::string::npos) << no_layer.err;
  CommandResult two_places =
      Cli(server.get(), {"perf", "--layer=x", "--shared_memory", "--cuda_shared_memory=0"});
  EXPECT_EQ(two_places.exit_code, 2);
  EXPECT_NE(two_places.err.find("--cuda_shared_memory"), std::string::npos) << two_places.err;
}

// Loads a small fp32 layer through the client library; returns its weights.
std::string LoadSmallLayer(const ServerProcess& server, const std::string& name, int64_t channels,
                           float weight_value) {
  v1::LayerSpec spec;
  spec.set_name(name);
  spec.set_in_channels(channels);
  spec.set_out_channels(channels);
  spec.mutable_kernel()->set_h(1);
  spec.mutable_kernel()->set_w(1);
  spec.set_dtype(v1::DATA_TYPE_FP32);
  spec.set_precision(v1::PRECISION_EXACT_FP32);
  spec.mutable_input_size()->set_h(8);
  spec.mutable_input_size()->set_w(8);
  std::string weights(static_cast<size_t>(channels * channels * 4), '\0');
  for (int64_t i = 0; i < channels * channels; ++i) {
    StoreFromDouble(DataType::kFloat32, weights.data(), i, weight_value);
  }
  ClientOptions options;
  options.target = server.address();
  absl::StatusOr<v1::LayerInfo> loaded = Client(options).LoadLayer(spec, weights);
  EXPECT_TRUE(loaded.ok()) << loaded.status();
  return weights;
}

TEST(ServerE2eTest, PerfReportsThroughputLatencyAndBatchesTuneNeedsGpu) {
  std::unique_ptr<ServerProcess> server = StartServer();
  ASSERT_NE(server, nullptr);
  LoadSmallLayer(*server, "perf_layer", 4, 0.5f);
  const std::string csv_path = server->work_dir() + "/perf.csv";
  CommandResult perf = Cli(server.get(), {"perf", "--layer=perf_layer", "--concurrency=1,4",
                                          "--duration_s=1", "--warmup_s=0.2", "--out=" + csv_path});
  ASSERT_EQ(perf.exit_code, 0) << perf.err << perf.out;
  std::ifstream in(csv_path);
  std::string header, line;
  ASSERT_TRUE(std::getline(in, header));
  const std::vector<std::string> columns = absl::StrSplit(header, ',');
  auto column = [&](const std::string& name) {
    return std::find(columns.begin(), columns.end(), name) - columns.begin();
  };
  int rows = 0;
  while (std::getline(in, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ',');
    ASSERT_EQ(fields.size(), columns.size()) << line;
    EXPECT_GT(std::stod(fields[column("throughput_rps")]), 0) << line;
    EXPECT_GT(std::stod(fields[column("latency_p99_us")]), 0) << line;
    EXPECT_LE(std::stod(fields[column("latency_p99_us")]),
              std::stod(fields[column("latency_p999_us")]))
        << line;
    EXPECT_LE(std::stod(fields[column("latency_p999_us")]),
              std::stod(fields[column("latency_max_us")]))
        << line;
    EXPECT_EQ(std::stoi(fields[column("errors")]), 0) << line;
    EXPECT_FALSE(fields[column("batch_sizes")].empty()) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 2);

  // Tuning is GPU work: the CPU backend refuses it by name.
  CommandResult tuned = Cli(server.get(), {"tune", "--layer=perf_layer", "--batch=1,8"});
  EXPECT_EQ(tuned.exit_code, 1);
  EXPECT_NE(tuned.err.find("FAILED_PRECONDITION"), std::string::npos) << tuned.err;
}

// SIGTERM while requests are being computed: every request gets exactly one answer (its
// correct result, or UNAVAILABLE if it arrived after the drain began) and the server exits 0.
TEST(ServerE2eTest, SigtermDrainsAcceptedRequests) {
  std::unique_ptr<ServerProcess> server = StartServer();
  ASSERT_NE(server, nullptr);
  // 64 -> 64 channels, 3x3 on 48x48: about 0.1 GFLOP per image, slow on the fp64 reference.
  v1::LayerSpec spec;
  spec.set_name("slow");
  spec.set_in_channels(64);
  spec.set_out_channels(64);
  spec.mutable_kernel()->set_h(3);
  spec.mutable_kernel()->set_w(3);
  spec.set_dtype(v1::DATA_TYPE_FP32);
  spec.set_precision(v1::PRECISION_EXACT_FP32);
  std::mt19937 rng(5);
  const NpyArray weights = RandomArray(DataType::kFloat32, {64, 64, 3, 3}, rng);
  ClientOptions options;
  options.target = server->address();
  options.call_timeout = absl::Minutes(5);
  Client client(options);
  ASSERT_TRUE(client.LoadLayer(spec, weights.data).ok());
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  ASSERT_TRUE(params.ok());

  constexpr int kRequests = 6;
  std::vector<NpyArray> inputs;
  std::vector<v1::ForwardRequest> requests(kRequests);
  std::vector<v1::ForwardResponse> responses(kRequests);
  std::vector<absl::Status> statuses(kRequests);
  absl::Mutex mu;
  int answered = 0;
  for (int i = 0; i < kRequests; ++i) {
    inputs.push_back(RandomArray(DataType::kFloat32, {1, 64, 48, 48}, rng));
    absl::StatusOr<v1::Tensor> tensor = TensorFromNpy(inputs.back(), Layout::kNchw);
    ASSERT_TRUE(tensor.ok());
    requests[i].set_layer("slow");
    *requests[i].mutable_input() = *tensor;
  }
  for (int i = 0; i < kRequests; ++i) {
    client.ForwardAsync(requests[i], &responses[i], absl::Minutes(5), [&, i](absl::Status s) {
      absl::MutexLock lock(&mu);
      statuses[i] = s;
      ++answered;
    });
  }
  // Requests reach a loopback server within milliseconds; a second covers a loaded machine.
  absl::SleepFor(absl::Seconds(1));
  ASSERT_TRUE(server->Signal(SIGTERM).ok());
  absl::StatusOr<int> exit_code = server->Wait(absl::Minutes(4));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << server->Log();
  EXPECT_EQ(*exit_code, 0) << server->Log();
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(
                                        +[](int* n) { return *n == kRequests; }, &answered),
                                    absl::Seconds(30)));
  }
  int ok = 0;
  for (int i = 0; i < kRequests; ++i) {
    if (statuses[i].ok()) {
      ++ok;
      ConvProblem problem{*params, 1, 48, 48, Layout::kNchw, Layout::kNchw};
      const std::vector<double> ref =
          ReferenceConv2dDouble(problem, inputs[i].data.data(), weights.data.data(), nullptr);
      absl::StatusOr<NpyArray> out = NpyFromTensor(responses[i].output());
      ASSERT_TRUE(out.ok()) << out.status();
      EXPECT_LT(RelativeL2(*out, Layout::kNchw, ref, problem), 1e-5) << "request " << i;
    } else {
      EXPECT_EQ(statuses[i].code(), absl::StatusCode::kUnavailable)
          << "request " << i << ": " << statuses[i];
    }
  }
  EXPECT_GE(ok, 1) << "no request in flight at SIGTERM was finished; log:\n" << server->Log();
}

// A crash leaves its trace: the server's failure handler writes the signal and a stack to the
// log before the process dies of that signal (operators find where from the log alone).
TEST(ServerE2eTest, CrashWritesTheSignalAndAStackToTheLog) {
  std::unique_ptr<ServerProcess> server = StartServer();
  ASSERT_TRUE(server->Signal(SIGSEGV).ok());
  absl::StatusOr<int> exit_code = server->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status() << server->Log();
  EXPECT_EQ(*exit_code, 128 + SIGSEGV) << server->Log();
  const std::string log = server->Log();
  EXPECT_NE(log.find("*** SIGSEGV received"), std::string::npos) << log;
  EXPECT_NE(log.find("PC: @"), std::string::npos) << log;
}

// A client given both servers' addresses spreads its calls over both. Each server holds the
// layer with different weights, so every answer tells which server computed it.
TEST(ServerE2eTest, RoundRobinSpreadsCallsOverTwoServers) {
  std::unique_ptr<ServerProcess> a = StartServer();
  std::unique_ptr<ServerProcess> b = StartServer();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  LoadSmallLayer(*a, "rr", 1, 1.0f);
  LoadSmallLayer(*b, "rr", 1, 2.0f);

  ClientOptions options;
  options.target = absl::StrCat("ipv4:", a->address(), ",", b->address());
  Client client(options);
  ASSERT_TRUE(client.WaitForConnected(absl::Seconds(30)));
  v1::ForwardRequest request;
  request.set_layer("rr");
  NpyArray ones;
  ones.shape = {1, 1, 2, 2};
  ones.data.resize(16);
  for (int i = 0; i < 4; ++i) StoreFromDouble(DataType::kFloat32, ones.data.data(), i, 1.0);
  *request.mutable_input() = *TensorFromNpy(ones, Layout::kNchw);

  // Round robin only uses connected servers, so the first calls may all go to whichever
  // connected first; within a few hundred calls both must have answered.
  int from_a = 0, from_b = 0, calls = 0;
  for (; calls < 400 && (calls < 40 || from_a == 0 || from_b == 0); ++calls) {
    absl::StatusOr<v1::ForwardResponse> response = client.Forward(request);
    ASSERT_TRUE(response.ok()) << response.status();
    const double value = LoadAsDouble(DataType::kFloat32, response->output().data().data(), 0);
    if (value == 1.0) ++from_a;
    if (value == 2.0) ++from_b;
  }
  EXPECT_EQ(from_a + from_b, calls);
  EXPECT_GT(from_a, 0);
  EXPECT_GT(from_b, 0);

  // The CLI takes the same multi-address target.
  CommandResult listed = Cli(nullptr, {"list", "--target=" + options.target});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_NE(listed.out.find("rr"), std::string::npos);
}

}  // namespace
}  // namespace convserve
