// SIGTERM on the real convserve-server binary: requests already queued (waiting for a batch
// that would only launch after ten seconds) are all answered correctly, and the process exits 0.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::ForwardFor;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::ReferenceOutput;
using ::convserve::testing::SmallSpec;

// GET /metrics from 127.0.0.1:`port`; empty on any failure.
std::string Scrape(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string get = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write(fd, get.data(), get.size()) == static_cast<ssize_t>(get.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  return response;
}

struct Call {
  grpc::ClientContext context;
  v1::ForwardResponse response;
  grpc::Status status;
  std::promise<void> done;
};

TEST(ServerShutdownTest, SigtermDrainsAcceptedRequestsAndExitsZero) {
  ServerProcessOptions options;
  options.binary = CONVSERVE_SERVER;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::Conv2d::NewStub(channel);

  v1::LayerSpec spec = SmallSpec("conv", 8);
  spec.mutable_batching()->set_max_batch_size(64);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 21);
  {
    grpc::ClientContext context;
    v1::LoadLayerResponse response;
    grpc::Status status = stub->LoadLayer(&context, load, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  constexpr int kRequests = 4;
  std::vector<v1::ForwardRequest> requests;
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < kRequests; ++i) requests.push_back(ForwardFor("conv", spec, 1, 7, 7, 40 + i));
  for (int i = 0; i < kRequests; ++i) {
    auto call = std::make_unique<Call>();
    Call* raw = call.get();
    raw->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    stub->async()->Forward(&raw->context, &requests[i], &raw->response, [raw](grpc::Status status) {
      raw->status = std::move(status);
      raw->done.set_value();
    });
    calls.push_back(std::move(call));
  }
  // Wait until all four sit in the batcher queue: the exported queue depth says so (the batcher
  // sets it under its queue lock, so it reaches 4 and stays there until the batch launches).
  // The page that showed it is the one checked: a second scrape proves nothing more.
  const std::string queued =
      absl::StrCat("convserve_queue_depth{layer=\"conv\"} ", kRequests, "\n");
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  std::string page = Scrape((*server)->metrics_port());
  while (page.find(queued) == std::string::npos && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
    page = Scrape((*server)->metrics_port());
  }
  ASSERT_NE(page.find(queued), std::string::npos) << page;

  ASSERT_TRUE((*server)->Signal(SIGTERM).ok());
  absl::StatusOr<int> exit_code = (*server)->Wait(absl::Seconds(60));
  ASSERT_TRUE(exit_code.ok()) << exit_code.status();
  EXPECT_EQ(*exit_code, 0) << (*server)->Log();
  for (int i = 0; i < kRequests; ++i) {
    calls[i]->done.get_future().wait();
    ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
    // One batch of all four, launched by the drain: before the 10 s delay would have.
    EXPECT_EQ(calls[i]->response.batch_size(), kRequests);
    EXPECT_LT(calls[i]->response.timing().queue_us(), 10'000'000)
        << "launched by the batching delay, not by the drain";
    EXPECT_EQ(
        calls[i]->response.output().data(),
        ReferenceOutput(load, requests[i].input().data(), 1, 7, 7, Layout::kNchw, Layout::kNchw));
  }
  EXPECT_NE((*server)->Log().find("received SIGTERM"), std::string::npos);
}

}  // namespace
}  // namespace convserve
