// Several executors behind one serving core, without gRPC: the least-loaded choice as a pure
// function, then real CPU reference executors: ties go in turn, a busy executor is passed over,
// and a broken one gets no batches while another is healthy. The broken device is a real CPU
// executor with a fault injected (BreakableExecutor): it reports unhealthy and fails what it is
// given, as the CUDA executor does after a sticky CUDA error.
#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/batch.h"
#include "server/batcher.h"
#include "server/cpu_executor.h"
#include "server/metrics/metrics.h"
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
using ::testing::HasSubstr;

TEST(ChooseLeastLoadedTest, MostFreeSlotsWins) {
  EXPECT_EQ(ChooseLeastLoaded({{1, true}, {2, true}}, 0), 1u);
  EXPECT_EQ(ChooseLeastLoaded({{2, true}, {1, true}, {0, true}}, 1), 0u);
  EXPECT_EQ(ChooseLeastLoaded({{0, true}, {0, true}, {1, true}}, 0), 2u);
}

TEST(ChooseLeastLoadedTest, TiesGoToTheFirstInTurn) {
  const std::vector<ExecutorLoad> loads = {{2, true}, {2, true}, {2, true}};
  EXPECT_EQ(ChooseLeastLoaded(loads, 0), 0u);
  EXPECT_EQ(ChooseLeastLoaded(loads, 1), 1u);
  EXPECT_EQ(ChooseLeastLoaded(loads, 2), 2u);
  EXPECT_EQ(ChooseLeastLoaded({{1, true}, {2, true}, {2, true}}, 0), 1u);
  EXPECT_EQ(ChooseLeastLoaded({{2, true}, {1, true}, {2, true}}, 1), 2u);
}

TEST(ChooseLeastLoadedTest, NoneFreeIsSize) {
  EXPECT_EQ(ChooseLeastLoaded({{0, true}, {0, true}}, 1), 2u);
  EXPECT_EQ(ChooseLeastLoaded({}, 0), 0u);
}

TEST(ChooseLeastLoadedTest, UnhealthyExecutorsAreSkippedWhileOneIsHealthy) {
  // The broken one has more free slots (nothing runs on it) but gets nothing.
  EXPECT_EQ(ChooseLeastLoaded({{2, false}, {1, true}}, 0), 1u);
  EXPECT_EQ(ChooseLeastLoaded({{2, false}, {0, true}}, 0), 2u);  // wait for the healthy one
  // None healthy: all are eligible, so batches fail fast instead of queueing for ever.
  EXPECT_EQ(ChooseLeastLoaded({{0, false}, {1, false}}, 0), 1u);
}

// A real CPU executor that can be told its device broke: from then on it reports unhealthy and
// fails every batch it gets with UNAVAILABLE, like CudaExecutor after a sticky CUDA error.
class BreakableExecutor final : public Executor {
 public:
  BreakableExecutor(int index, Metrics* metrics)
      : inner_(index, 1, metrics, /*numbered=*/true), metrics_(metrics) {}
  void Break() { broken_ = true; }

  int index() const override { return inner_.index(); }
  const std::string& device_name() const override { return inner_.device_name(); }
  bool is_gpu() const override { return false; }
  bool healthy() const override { return !broken_.load(); }
  absl::StatusOr<std::shared_ptr<const DeviceWeights>> PrepareWeights(
      const ConvParams& params, const std::string& weights, const std::string& bias) override {
    ++prepared_;
    return inner_.PrepareWeights(params, weights, bias);
  }
  bool AcquireSlot(absl::Duration timeout) override { return inner_.AcquireSlot(timeout); }
  void ReleaseSlot() override { inner_.ReleaseSlot(); }
  int free_slots() const override { return inner_.free_slots(); }
  void set_slot_signal(SlotSignal* signal) override { inner_.set_slot_signal(signal); }
  void Execute(Batch batch) override {
    if (!broken_.load()) return inner_.Execute(std::move(batch));
    ++failed_batches_;
    FailBatch(batch, absl::UnavailableError(device_name() + " failed earlier"), metrics_);
    inner_.ReleaseSlot();
  }
  absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) override {
    return inner_.Tune(problem);
  }
  std::vector<TuningResult> TunedFor(const ConvParams& params) const override { return {}; }
  void Shutdown() override { inner_.Shutdown(); }

  int failed_batches() const { return failed_batches_.load(); }
  int prepared() const { return prepared_.load(); }

 private:
  CpuExecutor inner_;
  Metrics* const metrics_;
  std::atomic<bool> broken_{false};
  std::atomic<int> failed_batches_{0};
  std::atomic<int> prepared_{0};
};

constexpr int64_t kChannels = 8;
constexpr int64_t kSize = 6;

// One blocking Forward through the core: the result, or its error.
absl::StatusOr<InferenceResult> Forward(ServingCoreImpl& core, const std::string& layer,
                                        const std::string& input) {
  std::promise<absl::StatusOr<InferenceResult>> answer;
  InferenceRequest request = InferenceRequestFor(layer, input, 1, kChannels, kSize, kSize);
  request.done = [&answer](absl::StatusOr<InferenceResult> result) {
    answer.set_value(std::move(result));
  };
  core.Submit(std::move(request));
  return answer.get_future().get();
}

class MultiExecutorTest : public ::testing::Test {
 protected:
  // A core on `executors`; a layer "conv" that launches every request at once.
  void Start(std::vector<std::unique_ptr<Executor>> executors) {
    core_ = std::make_unique<ServingCoreImpl>(TestServerOptions(), std::move(executors), nullptr);
    v1::LayerSpec spec = SmallSpec("conv", kChannels);
    spec.mutable_batching()->set_max_queue_delay_us(0);
    load_ = LoadRequestFor(spec, 7);
    absl::StatusOr<v1::LayerInfo> loaded = core_->LoadLayer(load_);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
  }
  // Waits until every executor has freed its slot: an executor answers a batch's requests just
  // before it frees the slot, so a reply can come back while the slot is still taken.
  void WaitIdle() {
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    for (const auto& executor : core_->executors()) {
      while (executor->free_slots() == 0 && absl::Now() < give_up) {
        absl::SleepFor(absl::Milliseconds(1));
      }
      ASSERT_GT(executor->free_slots(), 0) << executor->device_name();
    }
  }
  // Sends one request with a fresh input, checks the output against the reference and returns
  // the device that ran it ("" on error, with a test failure).
  std::string ForwardAndCheck(uint64_t seed) {
    const std::string input = RandomTensor(kChannels * kSize * kSize, DataType::kFloat32, seed);
    absl::StatusOr<InferenceResult> result = Forward(*core_, "conv", input);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return "";
    EXPECT_EQ(result->output,
              ReferenceOutput(load_, input, 1, kSize, kSize, Layout::kNchw, Layout::kNchw))
        << "seed " << seed;
    return result->device;
  }

  std::unique_ptr<ServingCoreImpl> core_;
  v1::LoadLayerRequest load_;
};

std::vector<std::unique_ptr<Executor>> CpuExecutors(int count) {
  std::vector<std::unique_ptr<Executor>> executors;
  for (int i = 0; i < count; ++i) {
    executors.push_back(std::make_unique<CpuExecutor>(i, 1, nullptr, /*numbered=*/true));
  }
  return executors;
}

TEST_F(MultiExecutorTest, IdleExecutorsTakeBatchesInTurn) {
  Start(CpuExecutors(2));
  std::vector<std::string> devices;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    WaitIdle();
    devices.push_back(ForwardAndCheck(seed));
  }
  // One request at a time, each finding both executors free: a tie every time, so they
  // alternate.
  for (size_t i = 0; i < devices.size(); ++i) {
    EXPECT_EQ(devices[i], devices[i % 2]) << i;
  }
  EXPECT_NE(devices[0], devices[1]);
  EXPECT_THAT(devices[0], HasSubstr("cpu:0"));
  EXPECT_THAT(devices[1], HasSubstr("cpu:1"));
}

TEST_F(MultiExecutorTest, ABusyExecutorIsPassedOver) {
  Start(CpuExecutors(2));
  Executor& busy = *core_->executors()[0];
  ASSERT_TRUE(busy.AcquireSlot(absl::ZeroDuration()));  // as if a long batch ran on it
  for (uint64_t seed = 10; seed < 14; ++seed) {
    EXPECT_THAT(ForwardAndCheck(seed), HasSubstr("cpu:1")) << seed;
  }
  busy.ReleaseSlot();
  std::vector<std::string> devices;
  for (uint64_t seed = 20; seed < 24; ++seed) {
    WaitIdle();
    devices.push_back(ForwardAndCheck(seed));
  }
  EXPECT_THAT(devices, ::testing::Contains(HasSubstr("cpu:0")));
}

TEST_F(MultiExecutorTest, WaitsForWhicheverExecutorFreesFirst) {
  // Both busy; the second frees first: the batch must not wait for the first.
  Start(CpuExecutors(2));
  Executor& a = *core_->executors()[0];
  Executor& b = *core_->executors()[1];
  ASSERT_TRUE(a.AcquireSlot(absl::ZeroDuration()));
  ASSERT_TRUE(b.AcquireSlot(absl::ZeroDuration()));
  const std::string input = RandomTensor(kChannels * kSize * kSize, DataType::kFloat32, 30);
  auto pending = std::async(std::launch::async, [&] { return Forward(*core_, "conv", input); });
  EXPECT_EQ(pending.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  b.ReleaseSlot();
  absl::StatusOr<InferenceResult> result = pending.get();  // a stays busy throughout
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->device, HasSubstr("cpu:1"));
  a.ReleaseSlot();
}

TEST_F(MultiExecutorTest, ABrokenExecutorGetsNoBatchesWhileAnotherIsHealthy) {
  std::vector<std::unique_ptr<Executor>> executors;
  auto breakable = std::make_unique<BreakableExecutor>(0, nullptr);
  BreakableExecutor* broken = breakable.get();
  executors.push_back(std::move(breakable));
  executors.push_back(std::make_unique<CpuExecutor>(1, 1, nullptr, /*numbered=*/true));
  Start(std::move(executors));
  broken->Break();
  EXPECT_TRUE(core_->ready()) << "one healthy executor keeps the server serving";
  for (uint64_t seed = 40; seed < 48; ++seed) {
    EXPECT_THAT(ForwardAndCheck(seed), HasSubstr("cpu:1")) << seed;
  }
  EXPECT_EQ(broken->failed_batches(), 0);

  // A layer loaded now skips the broken device and still serves.
  v1::LayerSpec spec = SmallSpec("later", kChannels);
  spec.mutable_batching()->set_max_queue_delay_us(0);
  const v1::LoadLayerRequest later = LoadRequestFor(spec, 8);
  const int prepared = broken->prepared();
  ASSERT_TRUE(core_->LoadLayer(later).ok());
  EXPECT_EQ(broken->prepared(), prepared);
  const std::string input = RandomTensor(kChannels * kSize * kSize, DataType::kFloat32, 50);
  absl::StatusOr<InferenceResult> result = Forward(*core_, "later", input);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->output,
            ReferenceOutput(later, input, 1, kSize, kSize, Layout::kNchw, Layout::kNchw));
}

TEST_F(MultiExecutorTest, EveryExecutorBrokenFailsRequestsFastAndIsNotReady) {
  std::vector<std::unique_ptr<Executor>> executors;
  std::vector<BreakableExecutor*> breakables;
  for (int i = 0; i < 2; ++i) {
    auto executor = std::make_unique<BreakableExecutor>(i, nullptr);
    breakables.push_back(executor.get());
    executors.push_back(std::move(executor));
  }
  Start(std::move(executors));
  for (BreakableExecutor* executor : breakables) executor->Break();
  EXPECT_FALSE(core_->ready());
  for (uint64_t seed = 60; seed < 64; ++seed) {
    const std::string input = RandomTensor(kChannels * kSize * kSize, DataType::kFloat32, seed);
    absl::StatusOr<InferenceResult> result = Forward(*core_, "conv", input);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  }
  EXPECT_EQ(breakables[0]->failed_batches() + breakables[1]->failed_batches(), 4);
}

}  // namespace
}  // namespace convserve
