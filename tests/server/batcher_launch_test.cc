// Which thread launches a batch. The request that makes its queue's launch due (it fills the
// batch) launches it on its own thread when a slot is free, without waking the batcher's
// scheduler; the scheduler launches batches whose delay ran out. Either way nothing that was
// cancelled while queued is launched, and every request gets its own correct output.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/cpu_executor.h"
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

// The real CPU executor, noting for each batch handed to it the thread that handed it over and
// how many requests it held.
class LaunchRecordingExecutor : public Executor {
 public:
  struct Launch {
    std::thread::id thread;
    size_t requests;
  };

  LaunchRecordingExecutor() : real_(std::make_unique<CpuExecutor>(0, 2, nullptr)) {}

  std::vector<Launch> launches() const {
    absl::MutexLock lock(&mu_);
    return launches_;
  }

  int index() const override { return real_->index(); }
  const std::string& device_name() const override { return real_->device_name(); }
  bool is_gpu() const override { return real_->is_gpu(); }
  bool healthy() const override { return real_->healthy(); }
  absl::StatusOr<std::shared_ptr<const DeviceWeights>> PrepareWeights(
      const ConvParams& params, const std::string& weights, const std::string& bias) override {
    return real_->PrepareWeights(params, weights, bias);
  }
  bool AcquireSlot(absl::Duration timeout) override { return real_->AcquireSlot(timeout); }
  void ReleaseSlot() override { real_->ReleaseSlot(); }
  int free_slots() const override { return real_->free_slots(); }
  void set_slot_signal(SlotSignal* signal) override { real_->set_slot_signal(signal); }
  void Execute(Batch batch) override {
    {
      absl::MutexLock lock(&mu_);
      launches_.push_back({std::this_thread::get_id(), batch.requests.size()});
    }
    real_->Execute(std::move(batch));
  }
  absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) override {
    return real_->Tune(problem);
  }
  std::vector<TuningResult> TunedFor(const ConvParams& params) const override {
    return real_->TunedFor(params);
  }
  void Shutdown() override { real_->Shutdown(); }

 private:
  const std::unique_ptr<CpuExecutor> real_;
  mutable absl::Mutex mu_;
  std::vector<Launch> launches_ ABSL_GUARDED_BY(mu_);
};

struct Answers {
  absl::Mutex mu;
  std::vector<absl::StatusOr<InferenceResult>> results;
  int count ABSL_GUARDED_BY(mu) = 0;

  explicit Answers(int n) : results(n, absl::UnknownError("unanswered")) {}

  // Waits up to 20 s for `n` answers in all.
  bool WaitFor(int n) {
    absl::MutexLock lock(&mu);
    auto done = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return count >= n; };
    return mu.AwaitWithTimeout(absl::Condition(&done), absl::Seconds(20));
  }
};

class BatcherLaunchTest : public ::testing::Test {
 protected:
  // Loads layer "layer" (batches of up to 4, `delay` to wait for company) on a recording CPU
  // executor.
  void Load(absl::Duration delay) {
    auto executor = std::make_unique<LaunchRecordingExecutor>();
    executor_ = executor.get();
    std::vector<std::unique_ptr<Executor>> executors;
    executors.push_back(std::move(executor));
    core_ = std::make_unique<ServingCoreImpl>(TestServerOptions(), std::move(executors), nullptr);
    v1::LayerSpec spec = SmallSpec("layer", kChannels);
    spec.mutable_batching()->set_max_batch_size(4);
    spec.mutable_batching()->set_max_queue_delay_us(absl::ToInt64Microseconds(delay));
    load_ = LoadRequestFor(spec, 7);
    ASSERT_TRUE(core_->LoadLayer(load_).ok());
  }

  // Submits request `id` (input from seed `id`) from this thread; its answer lands in
  // answers.results[id]. `cancelled`, when given, is what the request's client reports.
  void Submit(int id, Answers& answers, const std::atomic<bool>* cancelled = nullptr) {
    inputs_.resize(std::max<size_t>(inputs_.size(), id + 1));
    inputs_[id] = RandomTensor(int64_t{kChannels} * kSize * kSize, DataType::kFloat32, id);
    InferenceRequest request =
        InferenceRequestFor("layer", inputs_[id], 1, kChannels, kSize, kSize);
    request.deadline = absl::Now() + absl::Minutes(1);
    if (cancelled != nullptr) request.is_cancelled = [cancelled] { return cancelled->load(); };
    request.done = [&answers, id](absl::StatusOr<InferenceResult> result) {
      absl::MutexLock lock(&answers.mu);
      answers.results[id] = std::move(result);
      ++answers.count;
    };
    core_->Submit(std::move(request));
  }

  void ExpectCorrect(const Answers& answers, int id) {
    const absl::StatusOr<InferenceResult>& result = answers.results[id];
    ASSERT_TRUE(result.ok()) << "request " << id << ": " << result.status();
    EXPECT_EQ(result->output,
              ReferenceOutput(load_, inputs_[id], 1, kSize, kSize, Layout::kNchw, Layout::kNchw))
        << "request " << id;
  }

  LaunchRecordingExecutor* executor_ = nullptr;
  std::unique_ptr<ServingCoreImpl> core_;
  v1::LoadLayerRequest load_;
  std::vector<std::string> inputs_;
};

TEST_F(BatcherLaunchTest, TheRequestThatFillsABatchLaunchesItOnItsOwnThread) {
  // The delay never runs out here: only filling the batch launches it.
  ASSERT_NO_FATAL_FAILURE(Load(absl::Seconds(10)));
  Answers answers(4);
  for (int id = 0; id < 4; ++id) Submit(id, answers);
  ASSERT_TRUE(answers.WaitFor(4));
  const std::vector<LaunchRecordingExecutor::Launch> launches = executor_->launches();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].requests, 4u);
  EXPECT_EQ(launches[0].thread, std::this_thread::get_id())
      << "the full batch was handed over by another thread (the scheduler)";
  for (int id = 0; id < 4; ++id) ExpectCorrect(answers, id);
}

TEST_F(BatcherLaunchTest, ABatchWhoseDelayRunsOutLaunchesFromTheScheduler) {
  ASSERT_NO_FATAL_FAILURE(Load(absl::Milliseconds(20)));
  Answers answers(2);
  // The first request alone waits for company (not a preferred size, not full); the second
  // joins it; neither fills the batch.
  Submit(0, answers);
  Submit(1, answers);
  ASSERT_TRUE(answers.WaitFor(2));
  const std::vector<LaunchRecordingExecutor::Launch> launches = executor_->launches();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].requests, 2u);
  EXPECT_NE(launches[0].thread, std::this_thread::get_id());
  for (int id = 0; id < 2; ++id) ExpectCorrect(answers, id);
}

TEST_F(BatcherLaunchTest, ARequestCancelledWhileQueuedIsNotLaunchedWithTheBatchItWasIn) {
  ASSERT_NO_FATAL_FAILURE(Load(absl::Seconds(10)));
  Answers answers(4);
  std::atomic<bool> cancelled{false};
  Submit(0, answers);
  Submit(1, answers, &cancelled);
  Submit(2, answers);
  cancelled = true;
  // The fourth request fills the batch with the cancelled one in it: that one is swept out and
  // answered CANCELLED, the other three launch. (Should the scheduler's periodic check sweep it
  // first, the three launch when their delay runs out instead: slower, the same answers.)
  Submit(3, answers);
  ASSERT_TRUE(answers.WaitFor(4));
  EXPECT_EQ(answers.results[1].status().code(), absl::StatusCode::kCancelled)
      << answers.results[1].status();
  const std::vector<LaunchRecordingExecutor::Launch> launches = executor_->launches();
  ASSERT_EQ(launches.size(), 1u);
  EXPECT_EQ(launches[0].requests, 3u);
  for (int id : {0, 2, 3}) ExpectCorrect(answers, id);
}

}  // namespace
}  // namespace convserve
