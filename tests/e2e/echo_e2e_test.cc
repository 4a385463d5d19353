// The echo server and the client library against it: the wire contract's shapes, errors, and
// `convserve-cli perf` producing real numbers over a real socket.
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "client/client.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"

namespace convserve {
namespace {

namespace v1 = convserve::v1;

std::unique_ptr<ServerProcess> StartEcho() {
  ServerProcessOptions options;
  options.binary = CONVSERVE_ECHO_SERVER;
  options.convserve_flags = false;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

v1::LayerSpec Spec(const std::string& name) {
  v1::LayerSpec spec;
  spec.set_name(name);
  spec.set_in_channels(8);
  spec.set_out_channels(16);
  spec.mutable_kernel()->set_h(3);
  spec.mutable_kernel()->set_w(3);
  spec.mutable_stride()->set_h(2);
  spec.mutable_stride()->set_w(2);
  spec.mutable_padding()->set_h(1);
  spec.mutable_padding()->set_w(1);
  spec.set_dtype(v1::DATA_TYPE_FP16);
  spec.mutable_input_size()->set_h(16);
  spec.mutable_input_size()->set_w(16);
  return spec;
}

v1::ForwardRequest Request(const std::string& layer, int64_t n) {
  v1::ForwardRequest request;
  request.set_layer(layer);
  v1::Tensor& input = *request.mutable_input();
  input.set_dtype(v1::DATA_TYPE_FP16);
  for (int64_t d : {n, int64_t{8}, int64_t{16}, int64_t{16}}) input.add_shape(d);
  input.mutable_data()->resize(static_cast<size_t>(n * 8 * 16 * 16 * 2));
  return request;
}

TEST(EchoE2eTest, ClientCallsAnswerWithTheRealOutputSize) {
  std::unique_ptr<ServerProcess> server = StartEcho();
  ASSERT_NE(server, nullptr);
  ClientOptions options;
  options.target = server->address();
  Client client(options);

  absl::StatusOr<v1::LayerInfo> loaded =
      client.LoadLayer(Spec("echo3x3"), std::string(16 * 8 * 3 * 3 * 2, '\0'));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->spec().name(), "echo3x3");

  absl::StatusOr<v1::ForwardResponse> response = client.Forward(Request("echo3x3", 3));
  ASSERT_TRUE(response.ok()) << response.status();
  const v1::Tensor& output = response->output();
  ASSERT_EQ(output.shape_size(), 4);
  EXPECT_EQ(output.shape(0), 3);
  EXPECT_EQ(output.shape(1), 16);
  EXPECT_EQ(output.shape(2), 8);  // (16 + 2 - 3) / 2 + 1
  EXPECT_EQ(output.shape(3), 8);
  EXPECT_EQ(output.data().size(), 3u * 16 * 8 * 8 * 2);
  EXPECT_EQ(response->batch_size(), 3);

  absl::StatusOr<v1::ForwardResponse> missing = client.Forward(Request("absent", 1));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("absent"), std::string::npos);

  v1::ForwardRequest short_input = Request("echo3x3", 1);
  short_input.mutable_input()->mutable_data()->resize(10);
  EXPECT_EQ(client.Forward(short_input).status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<std::vector<v1::LayerInfo>> layers = client.ListLayers();
  ASSERT_TRUE(layers.ok()) << layers.status();
  ASSERT_EQ(layers->size(), 1u);
  EXPECT_TRUE(client.UnloadLayer("echo3x3").ok());
  EXPECT_EQ(client.UnloadLayer("echo3x3").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client.GetLayer("echo3x3").status().code(), absl::StatusCode::kNotFound);
}

TEST(EchoE2eTest, PerfMeasuresTheTransportFloor) {
  std::unique_ptr<ServerProcess> server = StartEcho();
  ASSERT_NE(server, nullptr);
  ClientOptions options;
  options.target = server->address();
  Client client(options);
  ASSERT_TRUE(client.LoadLayer(Spec("floor"), std::string(16 * 8 * 3 * 3 * 2, '\0')).ok());

  const std::string json_path = server->work_dir() + "/perf.json";
  absl::StatusOr<CommandResult> perf = RunCommand(
      {CONVSERVE_CLI, "perf", "--target=" + server->address(), "--layer=floor", "--concurrency=1,4",
       "--rate=50", "--batch=1,2", "--duration_s=1", "--warmup_s=0.2", "--out=" + json_path});
  ASSERT_TRUE(perf.ok()) << perf.status();
  ASSERT_EQ(perf->exit_code, 0) << perf->err;
  EXPECT_NE(perf->out.find("req/s"), std::string::npos) << perf->out;

  std::ifstream in(json_path);
  std::stringstream json;
  json << in.rdbuf();
  google::protobuf::ListValue rows;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.str(), &rows).ok()) << json.str();
  ASSERT_EQ(rows.values_size(), 6);  // 2 batch sizes x (2 concurrencies + 1 rate)
  for (const google::protobuf::Value& row : rows.values()) {
    const auto& fields = row.struct_value().fields();
    EXPECT_GT(fields.at("throughput_rps").number_value(), 0) << json.str();
    EXPECT_EQ(fields.at("errors").number_value(), 0) << json.str();
    EXPECT_GT(fields.at("latency_us").struct_value().fields().at("p50").number_value(), 0);
    if (fields.at("mode").string_value() == "rate") {
      // The senders (one per connection) keep to the schedule: 50 a second, no more, no less.
      EXPECT_NEAR(fields.at("ok").number_value(), 50, 10) << json.str();
      EXPECT_EQ(fields.at("not_sent").number_value(), 0) << json.str();
    }
    // The echo answers each request alone, so the batch it reports is the request's own N.
    const auto& batches = fields.at("batch_sizes").struct_value().fields();
    ASSERT_EQ(batches.size(), 1u) << json.str();
    EXPECT_EQ(batches.begin()->first,
              absl::StrCat(static_cast<int>(fields.at("batch").number_value())));
  }
}

// Local ports of this machine's established TCP connections to 127.0.0.1:`port`, read from
// /proc/net/tcp and tcp6 (gRPC dials IPv4 through IPv6 sockets with v4-mapped addresses).
// Addresses are hex, "<address>:<port>"; state 01 is ESTABLISHED.
std::set<int> ConnectionsTo(int port) {
  std::set<int> local_ports;
  const std::string loopback_port = absl::StrFormat("0100007F:%04X", port);
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state;
      fields >> slot >> local >> remote >> state;
      if (state != "01" || !absl::EndsWith(remote, loopback_port)) continue;
      local_ports.insert(std::stoi(local.substr(local.find(':') + 1), nullptr, 16));
    }
  }
  return local_ports;
}

TEST(EchoE2eTest, DistinctChannelTagsOpenDistinctConnectionsAndPerfUsesThem) {
  std::unique_ptr<ServerProcess> server = StartEcho();
  ASSERT_NE(server, nullptr);
  // Connections already open (the start-up health check's may linger) are not counted.
  const std::set<int> before = ConnectionsTo(server->port());
  ClientOptions options;
  options.target = server->address();
  options.channel_tag = 1;
  Client first(options);
  Client same_tag(options);
  options.channel_tag = 2;
  Client second(options);
  ASSERT_TRUE(first.LoadLayer(Spec("spread"), std::string(16 * 8 * 3 * 3 * 2, '\0')).ok());
  for (Client* client : {&first, &same_tag, &second}) {
    absl::StatusOr<v1::ForwardResponse> response = client->Forward(Request("spread", 1));
    ASSERT_TRUE(response.ok()) << response.status();
  }
  std::set<int> opened;
  for (int port : ConnectionsTo(server->port())) {
    if (before.count(port) == 0) opened.insert(port);
  }
  EXPECT_EQ(opened.size(), 2u) << "equal tags share a connection, distinct tags do not";

  // The CLI spreads a closed-loop level over min(concurrency, --connections) connections and
  // says so; every call succeeds.
  const std::string json_path = server->work_dir() + "/spread.json";
  absl::StatusOr<CommandResult> perf =
      RunCommand({CONVSERVE_CLI, "perf", "--target=" + server->address(), "--layer=spread",
                  "--concurrency=1,4", "--connections=2", "--duration_s=0.5", "--warmup_s=0.1",
                  "--out=" + json_path});
  ASSERT_TRUE(perf.ok()) << perf.status();
  ASSERT_EQ(perf->exit_code, 0) << perf->err;
  std::ifstream in(json_path);
  std::stringstream json;
  json << in.rdbuf();
  google::protobuf::ListValue rows;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.str(), &rows).ok()) << json.str();
  ASSERT_EQ(rows.values_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const auto& fields = rows.values(i).struct_value().fields();
    EXPECT_EQ(fields.at("connections").number_value(), i == 0 ? 1 : 2) << json.str();
    EXPECT_GT(fields.at("ok").number_value(), 0) << json.str();
    EXPECT_EQ(fields.at("errors").number_value(), 0) << json.str();
  }

  absl::StatusOr<CommandResult> bad =
      RunCommand({CONVSERVE_CLI, "perf", "--target=" + server->address(), "--layer=spread",
                  "--connections=0"});
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->exit_code, 2) << bad->err;
  EXPECT_NE(bad->err.find("--connections"), std::string::npos) << bad->err;
}

// A test binary moved without its build tree (a gpu-bundle on the device machine) finds the
// server by file name on PATH when the compiled-in path is gone.
TEST(EchoE2eTest, StartsTheServerFromPathWhenItsBuildPathIsGone) {
  const std::string build_path = CONVSERVE_ECHO_SERVER;
  const std::string dir = build_path.substr(0, build_path.rfind('/'));
  const char* old_path = getenv("PATH");
  const std::string saved = old_path != nullptr ? old_path : "";
  ASSERT_EQ(setenv("PATH", (dir + ":" + saved).c_str(), 1), 0);
  ServerProcessOptions options;
  options.binary = "/nonexistent-build-tree/convserve-echo-server";
  options.convserve_flags = false;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  setenv("PATH", saved.c_str(), 1);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Signal(SIGTERM).ok());
  absl::StatusOr<int> exit_code = (*server)->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << (*server)->Log();

  // Neither there nor on PATH: a clear failure naming the exec, not a hang.
  options.binary = "/nonexistent-build-tree/convserve-no-such-server";
  options.startup_timeout = absl::Seconds(10);
  server = ServerProcess::Start(options);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("exec failed"), std::string::npos) << server.status();
}

TEST(EchoE2eTest, ServerStopsOnSigterm) {
  std::unique_ptr<ServerProcess> server = StartEcho();
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->Signal(SIGTERM).ok());
  absl::StatusOr<int> exit_code = server->Wait(absl::Seconds(30));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << server->Log();
}

}  // namespace
}  // namespace convserve
