// Fault tests on the real server (in process, loopback port): a client that goes away
// mid-request, and a layer unloaded while requests for it are queued. Every accepted request
// must get exactly one answer, and the server must keep serving.
#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "server/server.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

// A layer whose requests wait `delay_us` in the queue for company (max batch 64), so a test
// can act on them while they are queued.
v1::LayerSpec SlowSpec(const std::string& name, int64_t delay_us) {
  v1::LayerSpec spec = testing::SmallSpec(name, 4);
  spec.mutable_batching()->set_max_queue_delay_us(delay_us);
  spec.mutable_batching()->set_max_batch_size(64);
  return spec;
}

// The value of the series `name{...layer="<layer>"...}` in a scrape, 0 when absent.
double Series(const std::string& scrape, const std::string& name, const std::string& layer) {
  double total = 0;
  for (absl::string_view line : absl::StrSplit(scrape, '\n')) {
    if (!absl::StartsWith(line, name + "{") ||
        line.find("layer=\"" + layer + "\"") == absl::string_view::npos) {
      continue;
    }
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) total += value;
  }
  return total;
}

struct Answers {
  absl::Mutex mu;
  std::vector<grpc::Status> statuses ABSL_GUARDED_BY(mu);
  int calls ABSL_GUARDED_BY(mu) = 0;
};

TEST(FaultTest, ClientThatDisconnectsMidRequestIsCountedAndTheServerKeepsServing) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok());
  absl::StatusOr<std::unique_ptr<ConvServer>> server =
      ConvServer::Create(testing::TestServerOptions(), metrics->get());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->Start().ok());
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::Conv2d::NewStub(channel);
  const v1::LayerSpec spec = SlowSpec("slow", 1'500'000);
  {
    grpc::ClientContext context;
    v1::LoadLayerResponse loaded;
    ASSERT_TRUE(stub->LoadLayer(&context, testing::LoadRequestFor(spec, 7), &loaded).ok());
  }

  // The request waits in the queue for 1.5 s; the client gives up after 0.3 s.
  grpc::ClientContext context;
  const v1::ForwardRequest request = testing::ForwardFor("slow", spec, 1, 8, 8, 11);
  v1::ForwardResponse response;
  std::promise<grpc::Status> done;
  stub->async()->Forward(&context, &request, &response,
                         [&done](grpc::Status status) { done.set_value(std::move(status)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  context.TryCancel();
  EXPECT_EQ(done.get_future().get().error_code(), grpc::StatusCode::CANCELLED);

  // The server notices before launching it and counts it cancelled.
  double cancelled = 0;
  for (int i = 0; i < 200 && cancelled < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancelled = Series((*metrics)->Scrape(), "convserve_cancelled_requests_total", "slow");
  }
  EXPECT_EQ(cancelled, 1);

  // And goes on serving, the right numbers included.
  const v1::ForwardRequest next = testing::ForwardFor("slow", spec, 2, 8, 8, 12);
  grpc::ClientContext next_context;
  v1::ForwardResponse next_response;
  ASSERT_TRUE(stub->Forward(&next_context, next, &next_response).ok());
  EXPECT_EQ(next_response.output().data(),
            testing::ReferenceOutput(testing::LoadRequestFor(spec, 7), next.input().data(), 2, 8, 8,
                                     Layout::kNchw, Layout::kNchw));
}

TEST(FaultTest, LayerUnloadedWhileRequestsAreQueuedAnswersEachOnceClearly) {
  testing::RunningServer running = testing::StartServer(testing::TestServerOptions());
  ASSERT_NE(running.server, nullptr);
  const v1::LayerSpec spec = SlowSpec("victim", 2'000'000);
  const v1::LoadLayerRequest load = testing::LoadRequestFor(spec, 3);
  {
    grpc::ClientContext context;
    v1::LoadLayerResponse loaded;
    ASSERT_TRUE(running.stub->LoadLayer(&context, load, &loaded).ok());
  }
  constexpr int kRequests = 6;
  std::vector<v1::ForwardRequest> requests;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<v1::ForwardResponse> responses(kRequests);
  Answers answers;
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back(testing::ForwardFor("victim", spec, 1, 6, 6, 100 + i));
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  }
  for (int i = 0; i < kRequests; ++i) {
    running.stub->async()->Forward(contexts[i].get(), &requests[i], &responses[i],
                                   [&answers](grpc::Status status) {
                                     absl::MutexLock lock(&answers.mu);
                                     answers.statuses.push_back(std::move(status));
                                     ++answers.calls;
                                   });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // well inside the 2 s wait
  {
    grpc::ClientContext context;
    v1::UnloadLayerRequest unload;
    unload.set_name("victim");
    v1::UnloadLayerResponse unloaded;
    ASSERT_TRUE(running.stub->UnloadLayer(&context, unload, &unloaded).ok());
  }
  {
    absl::MutexLock lock(&answers.mu);
    auto all_answered = [&answers]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(answers.mu) {
      return answers.calls == kRequests;
    };
    ASSERT_TRUE(answers.mu.AwaitWithTimeout(absl::Condition(&all_answered), absl::Seconds(60)));
    // Each queued request either finished on the weights it was queued for, or ended with a
    // status that says which layer went away.
    for (const grpc::Status& status : answers.statuses) {
      if (status.ok()) continue;
      EXPECT_NE(status.error_message().find("victim"), std::string::npos)
          << status.error_code() << " " << status.error_message();
      EXPECT_NE(status.error_code(), grpc::StatusCode::UNKNOWN);
      EXPECT_NE(status.error_code(), grpc::StatusCode::INTERNAL);
    }
  }
  for (int i = 0; i < kRequests; ++i) {
    if (!responses[i].has_output()) continue;
    EXPECT_EQ(responses[i].output().data(),
              testing::ReferenceOutput(load, requests[i].input().data(), 1, 6, 6, Layout::kNchw,
                                       Layout::kNchw));
  }
  // New requests learn the layer is gone.
  grpc::ClientContext context;
  v1::ForwardResponse response;
  grpc::Status after = running.stub->Forward(&context, requests[0], &response);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::NOT_FOUND) << after.error_message();
}

}  // namespace
}  // namespace convserve
