// The batcher under load, without gRPC (so ThreadSanitizer sees every thread involved): many
// threads submit to two layers at once, with short deadlines, cancellations and a queue small
// enough to overflow, while the executor merges and runs batches. Every request is answered
// exactly once: with the right output, or with the status that names why it was not run.
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

constexpr int kChannels = 8;
constexpr int kSize = 5;

struct Answer {
  int calls = 0;
  absl::StatusOr<InferenceResult> result = absl::UnknownError("unanswered");
};

TEST(BatcherLoadTest, ConcurrentSubmitsWithDeadlinesCancelsAndOverflowAnswerEachOnce) {
  ServerOptions options = TestServerOptions();
  options.batching.max_queue_requests = 64;  // small enough for the submitters to overflow
  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<CpuExecutor>(0, 2, nullptr));
  ServingCoreImpl core(options, std::move(executors), nullptr);

  v1::LoadLayerRequest loads[2];
  for (int l = 0; l < 2; ++l) {
    v1::LayerSpec spec = SmallSpec(l == 0 ? "a" : "b", kChannels);
    spec.mutable_batching()->set_max_batch_size(8);
    spec.mutable_batching()->set_max_queue_delay_us(2000);
    loads[l] = LoadRequestFor(spec, 10 + l);
    ASSERT_TRUE(core.LoadLayer(loads[l]).ok());
  }

  constexpr int kThreads = 8;
  constexpr int kEach = 40;
  constexpr int kTotal = kThreads * kEach;
  std::vector<std::string> inputs;
  std::vector<int> batch(kTotal);
  for (int id = 0; id < kTotal; ++id) {
    batch[id] = 1 + id % 3;
    inputs.push_back(
        RandomTensor(int64_t{batch[id]} * kChannels * kSize * kSize, DataType::kFloat32, id));
  }
  absl::Mutex mu;
  std::vector<Answer> answers(kTotal);
  // Requests whose id is 7 mod 10 are cancelled by the client a moment after they are sent.
  std::vector<std::atomic<bool>> cancelled(kTotal);
  for (auto& flag : cancelled) flag = false;

  std::vector<std::thread> submitters;
  for (int t = 0; t < kThreads; ++t) {
    submitters.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const int id = t * kEach + i;
        InferenceRequest request = InferenceRequestFor(id % 2 == 0 ? "a" : "b", inputs[id],
                                                       batch[id], kChannels, kSize, kSize);
        // Every fifth request may wait 1 ms at most: some expire in the queue.
        if (id % 5 == 0) request.deadline = absl::Now() + absl::Milliseconds(1);
        std::atomic<bool>* flag = &cancelled[id];
        request.is_cancelled = [flag] { return flag->load(); };
        request.done = [&mu, &answers, id](absl::StatusOr<InferenceResult> result) {
          absl::MutexLock lock(&mu);
          ++answers[id].calls;
          answers[id].result = std::move(result);
        };
        core.Submit(std::move(request));
        if (id % 10 == 7) cancelled[id] = true;
        if (i % 4 == 3) absl::SleepFor(absl::Milliseconds(1));  // bursts of four
      }
    });
  }
  for (std::thread& t : submitters) t.join();
  {
    absl::MutexLock lock(&mu);
    auto all_answered = [&answers] {
      for (const Answer& a : answers) {
        if (a.calls == 0) return false;
      }
      return true;
    };
    ASSERT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_answered), absl::Minutes(5)));
  }
  core.Shutdown();

  absl::MutexLock lock(&mu);
  int ok = 0, rejected = 0, expired = 0, cancelled_count = 0, merged = 0;
  for (int id = 0; id < kTotal; ++id) {
    ASSERT_EQ(answers[id].calls, 1) << "request " << id;
    const absl::StatusOr<InferenceResult>& result = answers[id].result;
    if (result.ok()) {
      ++ok;
      if (result->batch_size > batch[id]) ++merged;
      EXPECT_EQ(result->output, ReferenceOutput(loads[id % 2], inputs[id], batch[id], kSize, kSize,
                                                Layout::kNchw, Layout::kNchw))
          << "request " << id;
      continue;
    }
    switch (result.status().code()) {
      case absl::StatusCode::kResourceExhausted:
        ++rejected;
        break;
      case absl::StatusCode::kDeadlineExceeded:
        ++expired;
        EXPECT_EQ(id % 5, 0) << "request " << id << " had no deadline: " << result.status();
        break;
      case absl::StatusCode::kCancelled:
        ++cancelled_count;
        EXPECT_EQ(id % 10, 7) << "request " << id << " was not cancelled: " << result.status();
        break;
      default:
        ADD_FAILURE() << "request " << id << ": " << result.status();
    }
    EXPECT_FALSE(result.status().message().empty()) << "request " << id;
  }
  std::printf("%d ok (%d in merged batches), %d rejected, %d expired, %d cancelled\n", ok, merged,
              rejected, expired, cancelled_count);
  EXPECT_GT(ok, 0);
}

}  // namespace
}  // namespace convserve
