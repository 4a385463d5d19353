// The serving core with the real CPU executor, without gRPC: loads, replaces, unloads and
// forwards from many threads at once; every request is answered exactly once, correctly.
#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/cpu_executor.h"
#include "server/layer_spec.h"
#include "server/serving_core_impl.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::InferenceRequestFor;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::RandomTensor;
using ::convserve::testing::ReferenceOutput;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::TestServerOptions;

std::unique_ptr<ServingCoreImpl> MakeCore(const ServerOptions& options) {
  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<CpuExecutor>(0, 2, nullptr));
  return std::make_unique<ServingCoreImpl>(options, std::move(executors), nullptr);
}

// Answers counted per request id, with what came back.
struct Ledger {
  absl::Mutex mu;
  std::vector<int> answers;
  std::vector<absl::StatusOr<InferenceResult>> results;
  explicit Ledger(int n) : answers(n, 0), results(n, absl::UnknownError("unanswered")) {}
};

InferenceRequest MakeRequest(const std::string& layer, const std::string& input, int id,
                             Ledger& ledger) {
  InferenceRequest request = InferenceRequestFor(layer, input, 1, 8, 5, 5);
  request.done = [&ledger, id](absl::StatusOr<InferenceResult> result) {
    absl::MutexLock lock(&ledger.mu);
    ++ledger.answers[id];
    ledger.results[id] = std::move(result);
  };
  return request;
}

TEST(ServingCoreTest, ConcurrentLoadUnloadAndForwardAnswerEveryRequestOnce) {
  auto core = MakeCore(TestServerOptions());
  v1::LayerSpec spec = SmallSpec("layer", 8);
  spec.mutable_batching()->set_max_queue_delay_us(1000);
  const v1::LoadLayerRequest loads[2] = {LoadRequestFor(spec, 1), LoadRequestFor(spec, 2)};
  ASSERT_TRUE(core->LoadLayer(loads[0]).ok());

  constexpr int kForwarders = 6;
  constexpr int kEach = 40;
  Ledger ledger(kForwarders * kEach);
  std::vector<std::string> inputs;
  for (int i = 0; i < kForwarders * kEach; ++i) {
    inputs.push_back(RandomTensor(8 * 5 * 5, DataType::kFloat32, 500 + i));
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  // Two threads replace the layer back and forth, one unloads it now and then.
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        absl::StatusOr<v1::LayerInfo> info = core->LoadLayer(loads[(i + t) % 2]);
        EXPECT_TRUE(info.ok()) << info.status();
        absl::SleepFor(absl::Milliseconds(3));
      }
    });
  }
  threads.emplace_back([&] {
    while (!stop.load()) {
      absl::Status s = core->UnloadLayer("layer");
      EXPECT_TRUE(s.ok() || absl::IsNotFound(s)) << s;
      absl::SleepFor(absl::Milliseconds(17));
    }
  });
  std::vector<std::thread> forwarders;
  for (int f = 0; f < kForwarders; ++f) {
    forwarders.emplace_back([&, f] {
      for (int i = 0; i < kEach; ++i) {
        const int id = f * kEach + i;
        core->Submit(MakeRequest("layer", inputs[id], id, ledger));
        if (i % 8 == 0) absl::SleepFor(absl::Milliseconds(1));
      }
    });
  }
  for (std::thread& t : forwarders) t.join();
  // Let the last accepted requests finish while the churn goes on, then stop it.
  absl::SleepFor(absl::Milliseconds(50));
  stop = true;
  for (std::thread& t : threads) t.join();
  core->Shutdown();

  int ok = 0;
  absl::MutexLock lock(&ledger.mu);
  for (int id = 0; id < kForwarders * kEach; ++id) {
    ASSERT_EQ(ledger.answers[id], 1) << "request " << id;
    const absl::StatusOr<InferenceResult>& result = ledger.results[id];
    if (!result.ok()) {
      // Unloaded at that moment, or caught between a replace's two halves twice over.
      EXPECT_TRUE(absl::IsNotFound(result.status()) || absl::IsUnavailable(result.status()))
          << result.status();
      continue;
    }
    ++ok;
    const std::string a =
        ReferenceOutput(loads[0], inputs[id], 1, 5, 5, Layout::kNchw, Layout::kNchw);
    const std::string b =
        ReferenceOutput(loads[1], inputs[id], 1, 5, 5, Layout::kNchw, Layout::kNchw);
    EXPECT_TRUE(result->output == a || result->output == b) << "request " << id;
  }
  EXPECT_GT(ok, 0);
}

TEST(ServingCoreTest, ShutdownAnswersQueuedRequestsAndRefusesNewOnes) {
  auto core = MakeCore(TestServerOptions());
  v1::LayerSpec spec = SmallSpec("layer", 8);
  spec.mutable_batching()->set_max_batch_size(64);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  const v1::LoadLayerRequest load = LoadRequestFor(spec, 3);
  ASSERT_TRUE(core->LoadLayer(load).ok());
  Ledger ledger(4);
  std::vector<std::string> inputs;
  for (int i = 0; i < 3; ++i) {
    inputs.push_back(RandomTensor(8 * 5 * 5, DataType::kFloat32, 900 + i));
    core->Submit(MakeRequest("layer", inputs[i], i, ledger));
  }
  const absl::Time start = absl::Now();
  core->Shutdown();  // drains: the queued three launch now, not after ten seconds
  EXPECT_LT(absl::Now() - start, absl::Seconds(9));
  core->Submit(MakeRequest("layer", inputs[0], 3, ledger));
  absl::MutexLock lock(&ledger.mu);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(ledger.answers[i], 1);
    ASSERT_TRUE(ledger.results[i].ok()) << ledger.results[i].status();
    EXPECT_EQ(ledger.results[i]->batch_size, 3);
    EXPECT_EQ(ledger.results[i]->output,
              ReferenceOutput(load, inputs[i], 1, 5, 5, Layout::kNchw, Layout::kNchw));
  }
  ASSERT_EQ(ledger.answers[3], 1);
  EXPECT_TRUE(absl::IsUnavailable(ledger.results[3].status()));
  EXPECT_FALSE(core->ready());
}

}  // namespace
}  // namespace convserve
