// The native service through a real gRPC channel to an in-process server on a loopback port,
// CPU backend: results against the reference, every validation rejection, batching, overload,
// deadlines, cancellation, atomic replace and health.
#include <grpc/compression.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/layer_spec.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::AsyncCall;
using ::convserve::testing::Forward;
using ::convserve::testing::ForwardAll;
using ::convserve::testing::ForwardFor;
using ::convserve::testing::Load;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::ReferenceOutput;
using ::convserve::testing::RunningServer;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::StartForward;
using ::convserve::testing::StartServer;
using ::convserve::testing::TestServerOptions;
using ::convserve::testing::WaitQueued;
using ::testing::HasSubstr;

TEST(Conv2dServiceTest, ForwardMatchesTheReferenceInEveryLayoutAndDtype) {
  RunningServer s = StartServer(TestServerOptions());
  for (v1::DataType dtype : {v1::DATA_TYPE_FP32, v1::DATA_TYPE_FP16, v1::DATA_TYPE_BF16}) {
    const v1::LayerSpec spec = SmallSpec("conv", 8, dtype);
    const v1::LoadLayerRequest load = LoadRequestFor(spec, 7);
    ASSERT_TRUE(Load(s, load).ok());
    for (v1::Layout in : {v1::LAYOUT_NCHW, v1::LAYOUT_NHWC}) {
      for (v1::Layout out : {v1::LAYOUT_DEFAULT, v1::LAYOUT_NCHW, v1::LAYOUT_NHWC}) {
        v1::ForwardRequest request = ForwardFor("conv", spec, 2, 9, 7, 100 + in * 3 + out, in);
        request.set_output_layout(out);
        v1::ForwardResponse response;
        grpc::Status status = Forward(s, request, &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
        const Layout in_layout = *LayoutFromProto(in, "in");
        const Layout out_layout = *LayoutFromProto(out, "out", in_layout);
        EXPECT_EQ(response.output().data(),
                  ReferenceOutput(load, request.input().data(), 2, 9, 7, in_layout, out_layout));
        EXPECT_EQ(response.output().dtype(), dtype);
        EXPECT_EQ(response.output().layout(), LayoutToProto(out_layout));
        EXPECT_THAT(response.output().shape(), ::testing::ElementsAre(2, 8, 9, 7));
        EXPECT_GE(response.batch_size(), 2);
        EXPECT_EQ(response.kernel_config(), "cpu_reference");
        EXPECT_THAT(response.device(), HasSubstr("cpu"));
        EXPECT_GE(response.timing().total_us(), response.timing().queue_us());
      }
    }
  }
}

TEST(Conv2dServiceTest, ListUnloadAndHealth) {
  RunningServer s = StartServer(TestServerOptions());
  const v1::LayerSpec spec = SmallSpec("listed", 4);
  v1::LoadLayerResponse loaded;
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 1), &loaded).ok());
  EXPECT_TRUE(loaded.layer().ready());
  EXPECT_EQ(loaded.layer().resident_bytes(), 4 * 4 * 9 * 4 + 4 * 4);

  grpc::ClientContext list_context;
  v1::ListLayersResponse list;
  ASSERT_TRUE(s.stub->ListLayers(&list_context, {}, &list).ok());
  ASSERT_EQ(list.layers_size(), 1);
  EXPECT_EQ(list.layers(0).spec().name(), "listed");
  EXPECT_EQ(list.layers(0).spec().in_channels(), 4);
  EXPECT_THAT(list.layers(0).device(), HasSubstr("cpu (reference"));
  EXPECT_GT(list.layers(0).generation(), 0u);

  auto health = grpc::health::v1::Health::NewStub(s.channel);
  auto check = [&](const std::string& service) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(&context, request, &response);
    return status.ok() ? response.status() : grpc::health::v1::HealthCheckResponse::UNKNOWN;
  };
  EXPECT_EQ(check(""), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(check("listed"), grpc::health::v1::HealthCheckResponse::SERVING);

  grpc::ClientContext unload_context;
  v1::UnloadLayerRequest unload;
  unload.set_name("listed");
  v1::UnloadLayerResponse unloaded;
  ASSERT_TRUE(s.stub->UnloadLayer(&unload_context, unload, &unloaded).ok());
  EXPECT_EQ(check("listed"), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  v1::ForwardResponse response;
  EXPECT_EQ(Forward(s, ForwardFor("listed", spec, 1, 4, 4, 1), &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext again;
  EXPECT_EQ(s.stub->UnloadLayer(&again, unload, &unloaded).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

struct Rejection {
  std::string what;
  std::function<void(v1::ForwardRequest&)> mutate;
  grpc::StatusCode code;
  std::string message;
};

TEST(Conv2dServiceTest, EveryForwardRejectionNamesTheField) {
  ServerOptions options = TestServerOptions();
  options.max_input_bytes = 1 << 20;
  RunningServer s = StartServer(options);
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 3)).ok());
  v1::LayerSpec nopad = SmallSpec("nopad", 8);
  nopad.clear_padding();
  ASSERT_TRUE(Load(s, LoadRequestFor(nopad, 3)).ok());

  const std::vector<Rejection> cases = {
      {"no layer", [](auto& r) { r.set_layer(""); }, grpc::StatusCode::INVALID_ARGUMENT,
       "layer must be set"},
      {"bad layer name", [](auto& r) { r.set_layer("a b"); }, grpc::StatusCode::INVALID_ARGUMENT,
       "layer 'a b' may hold only"},
      {"unknown layer", [](auto& r) { r.set_layer("nope"); }, grpc::StatusCode::NOT_FOUND,
       "layer 'nope' is not loaded"},
      {"no input", [](auto& r) { r.clear_input(); }, grpc::StatusCode::INVALID_ARGUMENT,
       "input must be set"},
      {"unset dtype", [](auto& r) { r.mutable_input()->set_dtype(v1::DATA_TYPE_UNSPECIFIED); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.dtype must be set"},
      {"unknown dtype",
       [](auto& r) { r.mutable_input()->set_dtype(static_cast<v1::DataType>(42)); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.dtype has unknown value 42"},
      {"wrong dtype", [](auto& r) { r.mutable_input()->set_dtype(v1::DATA_TYPE_FP16); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.dtype is fp16 but layer 'conv' takes fp32"},
      {"unknown layout", [](auto& r) { r.mutable_input()->set_layout(static_cast<v1::Layout>(9)); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.layout has unknown value 9"},
      {"unknown output layout", [](auto& r) { r.set_output_layout(static_cast<v1::Layout>(5)); },
       grpc::StatusCode::INVALID_ARGUMENT, "output_layout has unknown value 5"},
      {"3-d shape", [](auto& r) { r.mutable_input()->mutable_shape()->RemoveLast(); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shape must have 4 dimensions"},
      {"zero N", [](auto& r) { r.mutable_input()->set_shape(0, 0); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shape[0] (N) must be positive, got 0"},
      {"negative H", [](auto& r) { r.mutable_input()->set_shape(2, -3); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shape[2] (H) must be positive, got -3"},
      {"wrong C", [](auto& r) { r.mutable_input()->set_shape(1, 3); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shape[1] (C) is 3 but layer 'conv' has"},
      {"overflowing shape",
       [](auto& r) {
         r.mutable_input()->set_shape(0, int64_t{1} << 40);
         r.mutable_input()->set_shape(2, int64_t{1} << 30);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "input.shape"},
      {"output size zero",
       [](auto& r) {
         r.set_layer("nopad");
         r.mutable_input()->set_shape(2, 2);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "output size would be 0x"},
      {"short data", [](auto& r) { r.mutable_input()->mutable_data()->pop_back(); },
       grpc::StatusCode::INVALID_ARGUMENT, "input.data has"},
      {"negative timeout", [](auto& r) { r.set_timeout_us(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "timeout_us must be >= 0"},
      {"over the input limit",
       [](auto& r) {
         r.mutable_input()->set_shape(0, 64);
         r.mutable_input()->set_shape(2, 32);
         r.mutable_input()->set_shape(3, 32);
       },
       grpc::StatusCode::RESOURCE_EXHAUSTED, "--max_input_bytes"},
  };
  for (const Rejection& c : cases) {
    v1::ForwardRequest request = ForwardFor("conv", spec, 1, 6, 6, 5);
    c.mutate(request);
    v1::ForwardResponse response;
    grpc::Status status = Forward(s, request, &response);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.what;
  }
  // The server still serves after all that.
  v1::ForwardResponse response;
  EXPECT_TRUE(Forward(s, ForwardFor("conv", spec, 1, 6, 6, 5), &response).ok());
}

// Forward reads its request off the wire itself (server/forward_wire.h): bytes that are not a
// ForwardRequest get INVALID_ARGUMENT saying where; a gzip-compressed request and one whose
// tensor spans many receive slices are read like any other.
TEST(Conv2dServiceTest, ForwardReadsTheWireItself) {
  RunningServer s = StartServer(TestServerOptions());
  const v1::LayerSpec spec = SmallSpec("conv", 8);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 11);
  ASSERT_TRUE(Load(s, load).ok());

  grpc::GenericStub generic(s.channel);
  auto call_raw = [&](const std::string& bytes) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, "/convserve.v1.Conv2d/Forward", grpc::StubOptions(), &request,
                      &response, [&done](grpc::Status status) { done.set_value(status); });
    return done.get_future().get();
  };
  const v1::ForwardRequest good = ForwardFor("conv", spec, 1, 6, 6, 21);
  const std::string good_bytes = good.SerializeAsString();
  for (const auto& [bytes, words] : std::vector<std::pair<std::string, std::string>>{
           {good_bytes.substr(0, good_bytes.size() - 7), "runs past its end"},
           {std::string("\x0a\x04") + "conv\x1f", "invalid wire type 7"},
           {std::string("\x0a\x02\xc3\x28"), "not UTF-8"}}) {
    grpc::Status status = call_raw(bytes);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << words;
    EXPECT_THAT(status.error_message(), HasSubstr(words));
  }
  EXPECT_TRUE(call_raw(good_bytes).ok());

  // 2 x 8 x 64 x 64 fp32: 256 KB of input, many receive slices; sent gzip-compressed too.
  const v1::ForwardRequest big = ForwardFor("conv", spec, 2, 64, 64, 22);
  const std::string expected =
      ReferenceOutput(load, big.input().data(), 2, 64, 64, Layout::kNchw, Layout::kNchw);
  for (bool compress : {false, true}) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    if (compress) context.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    v1::ForwardResponse response;
    grpc::Status status = s.stub->Forward(&context, big, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.output().data(), expected) << "compressed: " << compress;
  }
}

struct LoadRejection {
  std::string what;
  std::function<void(v1::LoadLayerRequest&)> mutate;
  grpc::StatusCode code;
  std::string message;
};

TEST(Conv2dServiceTest, EveryLoadRejectionNamesTheField) {
  ServerOptions options = TestServerOptions();
  options.max_layer_bytes = 100'000;
  options.max_resident_bytes = 150'000;
  RunningServer s = StartServer(options);
  const std::vector<LoadRejection> cases = {
      {"no name", [](auto& r) { r.mutable_spec()->clear_name(); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.name must be set"},
      {"bad name", [](auto& r) { r.mutable_spec()->set_name("x/y"); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.name 'x/y' may hold only"},
      {"no kernel", [](auto& r) { r.mutable_spec()->clear_kernel(); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.kernel must be set"},
      {"zero in_channels", [](auto& r) { r.mutable_spec()->set_in_channels(0); },
       grpc::StatusCode::INVALID_ARGUMENT, "in_channels"},
      {"groups not dividing", [](auto& r) { r.mutable_spec()->set_groups(3); },
       grpc::StatusCode::INVALID_ARGUMENT, "groups (3) must divide in_channels"},
      {"negative padding", [](auto& r) { r.mutable_spec()->mutable_padding()->set_h(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "padding"},
      {"unset dtype", [](auto& r) { r.mutable_spec()->set_dtype(v1::DATA_TYPE_UNSPECIFIED); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.dtype must be set"},
      {"precision on fp16",
       [](auto& r) {
         r.mutable_spec()->set_dtype(v1::DATA_TYPE_FP16);
         r.mutable_spec()->set_precision(v1::PRECISION_EXACT_FP32);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.precision applies to FP32 layers only"},
      {"unknown activation",
       [](auto& r) { r.mutable_spec()->set_activation(static_cast<v1::Activation>(77)); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.activation has unknown value 77"},
      {"short weights", [](auto& r) { r.mutable_weights()->pop_back(); },
       grpc::StatusCode::INVALID_ARGUMENT, "weights has"},
      {"missing bias", [](auto& r) { r.clear_bias(); }, grpc::StatusCode::INVALID_ARGUMENT,
       "bias has 0 bytes"},
      {"unwanted bias", [](auto& r) { r.mutable_spec()->set_has_bias(false); },
       grpc::StatusCode::INVALID_ARGUMENT, "bias is set but spec.has_bias is false"},
      {"negative max_batch_size",
       [](auto& r) { r.mutable_spec()->mutable_batching()->set_max_batch_size(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.batching.max_batch_size"},
      {"preferred over max",
       [](auto& r) {
         r.mutable_spec()->mutable_batching()->set_max_batch_size(4);
         r.mutable_spec()->mutable_batching()->add_preferred_batch_sizes(8);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.batching.preferred_batch_sizes"},
      {"warm-up without input size", [](auto& r) { r.mutable_spec()->add_warmup_batch_sizes(8); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.warmup_batch_sizes needs spec.input_size"},
  };
  for (const LoadRejection& c : cases) {
    v1::LoadLayerRequest request = LoadRequestFor(SmallSpec("conv", 8), 1);
    c.mutate(request);
    grpc::Status status = Load(s, request);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message)) << c.what;
  }
  // 64x64x3x3 fp32 = 147456 bytes: over the per-layer limit.
  grpc::Status big = Load(s, LoadRequestFor(SmallSpec("big", 64), 1));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.error_message(), HasSubstr("--max_layer_bytes"));
  // 40x40x3x3 fp32 = 57600 (+160 bias) each: two fit in 150000, a third does not.
  ASSERT_TRUE(Load(s, LoadRequestFor(SmallSpec("a", 40), 1)).ok());
  ASSERT_TRUE(Load(s, LoadRequestFor(SmallSpec("b", 40), 1)).ok());
  grpc::Status third = Load(s, LoadRequestFor(SmallSpec("c", 40), 1));
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(third.error_message(), HasSubstr("--max_resident_bytes"));

  // Unload and Tune validate too; Tune needs a GPU.
  grpc::ClientContext unload_context;
  v1::UnloadLayerResponse unloaded;
  EXPECT_EQ(s.stub->UnloadLayer(&unload_context, {}, &unloaded).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext tune_context;
  v1::TuneRequest tune;
  tune.set_layer("a");
  tune.add_batch_sizes(8);
  v1::TuneResponse tuned;
  grpc::Status tune_status = s.stub->Tune(&tune_context, tune, &tuned);
  EXPECT_EQ(tune_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(tune_status.error_message(), HasSubstr("CPU reference backend"));
  grpc::ClientContext tune_missing_context;
  tune.set_layer("missing");
  EXPECT_EQ(s.stub->Tune(&tune_missing_context, tune, &tuned).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// 24 clients, each with its own inputs, mixed N and layouts, merged into batches: every client
// gets exactly its own result. With `forward_threads` Forward queues (server/unary_call_queues.h).
void ExpectEachOfManyClientsGetsItsOwnResult(int forward_threads) {
  ServerOptions options = TestServerOptions();
  options.transport.forward_threads = forward_threads;
  RunningServer s = StartServer(options);
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(16);
  spec.mutable_batching()->set_max_queue_delay_us(5000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 11);
  ASSERT_TRUE(Load(s, load).ok());

  constexpr int kClients = 24;
  constexpr int kRequestsEach = 4;
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < kRequestsEach; ++i) {
        const int64_t n = 1 + (c + i) % 2;
        const v1::Layout layout = (c % 2) ? v1::LAYOUT_NHWC : v1::LAYOUT_NCHW;
        const v1::ForwardRequest request =
            ForwardFor("conv", spec, n, 10, 10, 1000 + c * kRequestsEach + i, layout);
        v1::ForwardResponse response;
        if (!Forward(s, request, &response).ok()) {
          ++failed;
          continue;
        }
        const Layout l = *LayoutFromProto(layout, "layout");
        if (response.output().data() !=
            ReferenceOutput(load, request.input().data(), n, 10, 10, l, l)) {
          ++wrong;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
}

TEST(Conv2dServiceTest, ManyConcurrentClientsEachGetTheirOwnResult) {
  ExpectEachOfManyClientsGetsItsOwnResult(/*forward_threads=*/0);  // one per core
}

// One queue thread receives all 24 clients' calls and sends every reply.
TEST(Conv2dServiceTest, OneForwardThreadServesManyConcurrentClients) {
  ExpectEachOfManyClientsGetsItsOwnResult(/*forward_threads=*/1);
}

// More queue threads than cores, each with calls requested ahead, all idle but one or two.
TEST(Conv2dServiceTest, ManyForwardThreadsServeManyConcurrentClients) {
  ExpectEachOfManyClientsGetsItsOwnResult(/*forward_threads=*/16);
}

TEST(Conv2dServiceTest, ConcurrentRequestsMergeIntoOneLaunch) {
  RunningServer s = StartServer(TestServerOptions());
  v1::LayerSpec spec = SmallSpec("conv", 8);
  // Nothing launches before four samples are queued (or ten seconds pass).
  spec.mutable_batching()->set_max_batch_size(4);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 5);
  ASSERT_TRUE(Load(s, load).ok());
  std::vector<v1::ForwardRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(ForwardFor("conv", spec, 1, 8, 8, 50 + i));
  const absl::Time start = absl::Now();
  auto calls = ForwardAll(s, requests);
  EXPECT_LT(absl::Now() - start, absl::Seconds(9)) << "launched by the delay, not when full";
  for (size_t i = 0; i < calls.size(); ++i) {
    ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
    EXPECT_EQ(calls[i]->response.batch_size(), 4);
    EXPECT_EQ(
        calls[i]->response.output().data(),
        ReferenceOutput(load, requests[i].input().data(), 1, 8, 8, Layout::kNchw, Layout::kNchw));
  }
}

TEST(Conv2dServiceTest, PreferredBatchSizeLaunchesWithoutWaiting) {
  RunningServer s = StartServer(TestServerOptions());
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(8);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  spec.mutable_batching()->add_preferred_batch_sizes(3);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 5)).ok());
  // One request of N=2 and one of N=1: three samples, preferred, nothing else waiting.
  std::vector<v1::ForwardRequest> requests = {ForwardFor("conv", spec, 2, 8, 8, 1),
                                              ForwardFor("conv", spec, 1, 8, 8, 2)};
  const absl::Time start = absl::Now();
  auto calls = ForwardAll(s, requests);
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
  for (auto& call : calls) {
    ASSERT_TRUE(call->status.ok()) << call->status.error_message();
    EXPECT_EQ(call->response.batch_size(), 3);
  }
}

// A queue that came due at a preferred size while the executor was busy stays due as requests
// join it: when the slot frees, they launch together at once, not after the queue delay.
TEST(Conv2dServiceTest, RequestsJoiningADueQueueLaunchWithItWhenASlotFrees) {
  RunningServer s = StartServer(TestServerOptions());
  // The CPU executor has one launch slot; a large batch on another layer holds it a while.
  const v1::LayerSpec heavy_spec = SmallSpec("heavy", 32);
  ASSERT_TRUE(Load(s, LoadRequestFor(heavy_spec, 3)).ok());
  v1::LayerSpec spec = SmallSpec("eager", 8);
  spec.mutable_batching()->set_max_batch_size(8);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  spec.mutable_batching()->add_preferred_batch_sizes(1);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 5)).ok());
  Executor& executor = *s.server->core().executors().front();

  const v1::ForwardRequest heavy_request = ForwardFor("heavy", heavy_spec, 32, 64, 64, 1);
  std::unique_ptr<AsyncCall> heavy = StartForward(s, heavy_request);
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (executor.free_slots() > 0 && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(executor.free_slots(), 0) << "the heavy batch never took the slot";

  // The first request alone is a preferred size (due); three more join while the slot is held.
  std::vector<v1::ForwardRequest> requests;
  for (int i = 0; i < 4; ++i) requests.push_back(ForwardFor("eager", spec, 1, 8, 8, 10 + i));
  const absl::Time start = absl::Now();
  std::vector<std::unique_ptr<AsyncCall>> calls;
  for (const v1::ForwardRequest& request : requests) {
    calls.push_back(StartForward(s, request));
    WaitQueued(s, "eager", static_cast<int64_t>(calls.size()));
  }
  ASSERT_EQ(executor.free_slots(), 0) << "the heavy batch ended too soon for this test";
  heavy->done.get_future().wait();
  ASSERT_TRUE(heavy->status.ok()) << heavy->status.error_message();
  for (size_t i = 0; i < calls.size(); ++i) {
    calls[i]->done.get_future().wait();
    ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
    EXPECT_EQ(calls[i]->response.batch_size(), 4) << "request " << i;
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(9)) << "the due queue waited out its delay";
}

TEST(Conv2dServiceTest, FullQueueRejectsAtOnceAndExpiredRequestsAreAnswered) {
  ServerOptions options = TestServerOptions();
  options.batching.max_queue_requests = 2;
  RunningServer s = StartServer(options);
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(64);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 5)).ok());

  // Two requests with a 1.5 s server-side timeout wait for company that never comes.
  std::vector<std::unique_ptr<AsyncCall>> waiting;
  std::vector<v1::ForwardRequest> requests(2);
  for (int i = 0; i < 2; ++i) {
    requests[i] = ForwardFor("conv", spec, 1, 8, 8, 60 + i);
    requests[i].set_timeout_us(1'500'000);
    auto call = std::make_unique<AsyncCall>();
    AsyncCall* raw = call.get();
    s.stub->async()->Forward(&raw->context, &requests[i], &raw->response,
                             [raw](grpc::Status status) {
                               raw->status = std::move(status);
                               raw->done.set_value();
                             });
    waiting.push_back(std::move(call));
  }
  WaitQueued(s, "conv", 2);
  v1::ForwardResponse response;
  const absl::Time start = absl::Now();
  grpc::Status full = Forward(s, ForwardFor("conv", spec, 1, 8, 8, 70), &response);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "rejected at once";
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(full.error_message(), HasSubstr("queue is full"));
  for (auto& call : waiting) {
    call->done.get_future().wait();
    EXPECT_EQ(call->status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_THAT(call->status.error_message(), HasSubstr("deadline passed after"));
  }
  WaitQueued(s, "conv", 0);
}

TEST(Conv2dServiceTest, CancelledRequestsLeaveTheQueueBeforeLaunch) {
  ServerOptions options = TestServerOptions();
  options.batching.max_queue_requests = 1;
  RunningServer s = StartServer(options);
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(64);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  ASSERT_TRUE(Load(s, LoadRequestFor(spec, 5)).ok());

  const v1::ForwardRequest request = ForwardFor("conv", spec, 1, 8, 8, 80);
  AsyncCall call;
  s.stub->async()->Forward(&call.context, &request, &call.response, [&call](grpc::Status status) {
    call.status = std::move(status);
    call.done.set_value();
  });
  WaitQueued(s, "conv", 1);
  const absl::Time start = absl::Now();
  call.context.TryCancel();
  call.done.get_future().wait();
  EXPECT_EQ(call.status.error_code(), grpc::StatusCode::CANCELLED);
  // The server notices and frees the queue long before the ten-second delay would launch it.
  WaitQueued(s, "conv", 0);
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
}

TEST(Conv2dServiceTest, ReplacingALayerDuringTrafficIsAtomic) {
  RunningServer s = StartServer(TestServerOptions());
  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_queue_delay_us(2000);
  const v1::LoadLayerRequest first = LoadRequestFor(spec, 100);
  const v1::LoadLayerRequest second = LoadRequestFor(spec, 200);
  v1::LoadLayerResponse loaded_first;
  ASSERT_TRUE(Load(s, first, &loaded_first).ok());

  std::atomic<bool> replaced{false};
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<int> neither{0};
  std::atomic<int> stale_after_replace{0};
  std::atomic<int> answered_second{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; !stop.load(); ++i) {
        const bool sent_after_replace = replaced.load();
        const v1::ForwardRequest request = ForwardFor("conv", spec, 1, 6, 6, c * 100000 + i);
        v1::ForwardResponse response;
        grpc::Status status = Forward(s, request, &response);
        if (!status.ok()) {
          ++errors;
          continue;
        }
        const std::string& out = response.output().data();
        const bool is_first = out == ReferenceOutput(first, request.input().data(), 1, 6, 6,
                                                     Layout::kNchw, Layout::kNchw);
        const bool is_second = out == ReferenceOutput(second, request.input().data(), 1, 6, 6,
                                                      Layout::kNchw, Layout::kNchw);
        if (!is_first && !is_second) ++neither;
        if (sent_after_replace && !is_second) ++stale_after_replace;
        if (sent_after_replace && is_second) ++answered_second;
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(300));
  v1::LoadLayerResponse loaded_second;
  ASSERT_TRUE(Load(s, second, &loaded_second).ok());
  replaced = true;
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (answered_second.load() < 20 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  stop = true;
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(neither.load(), 0);
  EXPECT_EQ(stale_after_replace.load(), 0);
  EXPECT_GE(answered_second.load(), 20);
  EXPECT_GT(loaded_second.layer().generation(), loaded_first.layer().generation());
}

}  // namespace
}  // namespace convserve
