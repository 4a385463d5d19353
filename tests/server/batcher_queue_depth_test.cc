// The queue-depth gauge under concurrent submits: once the submitters stop, the exported
// convserve_queue_depth of a layer equals what its batcher holds. The batcher used to set the
// gauge after unlocking its queue, so a submitter preempted in between could overwrite a newer
// depth with its stale one, and the gauge stayed wrong until the queue next changed (a whole
// batching delay; server_shutdown_test waited for a depth that never showed).
#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/cpu_executor.h"
#include "server/metrics/metrics.h"
#include "server/serving_core_impl.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::InferenceRequestFor;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::RandomTensor;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::TestServerOptions;

constexpr int kChannels = 8;
constexpr int kSize = 5;

// The real metrics, with a random pause of up to half a millisecond before each queue-depth
// update: a stand-in for the submitter being preempted there, which on an idle machine is rare.
class PreemptedDepthMetrics : public Metrics {
 public:
  explicit PreemptedDepthMetrics(std::unique_ptr<Metrics> real) : real_(std::move(real)) {}

  void SetQueueDepth(std::string_view layer, int64_t requests) override {
    thread_local std::minstd_rand random(std::hash<std::thread::id>()(std::this_thread::get_id()));
    absl::SleepFor(absl::Microseconds(random() % 500));
    real_->SetQueueDepth(layer, requests);
  }

  void RequestFinished(std::string_view layer, Api api, absl::StatusCode code, double total_seconds,
                       double queue_seconds) override {
    real_->RequestFinished(layer, api, code, total_seconds, queue_seconds);
  }
  void Rejected(std::string_view layer, RejectReason reason) override {
    real_->Rejected(layer, reason);
  }
  void Expired(std::string_view layer) override { real_->Expired(layer); }
  void Cancelled(std::string_view layer) override { real_->Cancelled(layer); }
  void BatchExecuted(std::string_view layer, std::string_view device,
                     std::string_view kernel_config, int batch_size, double compute_seconds,
                     double kernel_seconds) override {
    real_->BatchExecuted(layer, device, kernel_config, batch_size, compute_seconds, kernel_seconds);
  }
  void SetLayerResidentBytes(std::string_view layer, std::string_view device,
                             int64_t bytes) override {
    real_->SetLayerResidentBytes(layer, device, bytes);
  }
  void SetDeviceMemory(std::string_view device, int64_t used_bytes, int64_t total_bytes) override {
    real_->SetDeviceMemory(device, used_bytes, total_bytes);
  }
  void SetTunerCounters(std::string_view device, int64_t runs, int64_t cache_hits,
                        int64_t cache_misses, double seconds) override {
    real_->SetTunerCounters(device, runs, cache_hits, cache_misses, seconds);
  }
  void SetOccupancy(std::string_view device, std::string_view kernel_config, double theoretical,
                    double achieved) override {
    real_->SetOccupancy(device, kernel_config, theoretical, achieved);
  }
  void SetOccupancySamplerEnabled(std::string_view device, bool enabled) override {
    real_->SetOccupancySamplerEnabled(device, enabled);
  }
  std::string Scrape() const override { return real_->Scrape(); }

 private:
  const std::unique_ptr<Metrics> real_;
};

// The value of convserve_queue_depth{layer="`layer`"} in `text`, or "absent".
std::string QueueDepthIn(const std::string& text, const std::string& layer) {
  const std::string key = absl::StrCat("convserve_queue_depth{layer=\"", layer, "\"} ");
  const size_t at = text.find(key);
  if (at == std::string::npos) return "absent";
  const size_t begin = at + key.size();
  return text.substr(begin, text.find('\n', begin) - begin);
}

// Layer `layer` whose batcher holds every request until it drains: the batch never fills and
// the delay is the longest allowed.
v1::LayerSpec HoldingSpec(const std::string& layer) {
  v1::LayerSpec spec = SmallSpec(layer, kChannels);
  spec.mutable_batching()->set_max_batch_size(4096);
  spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
  return spec;
}

// How many of the requests SubmitCounted sent were answered, and answered with a result.
struct AnswerCount {
  std::atomic<int> answered{0};
  std::atomic<int> ok{0};
};

// Submits `count` requests for `layer` with the [1, kChannels, kSize, kSize] `input`, five
// minutes to answer each, counting their answers in `answers`.
void SubmitCounted(ServingCoreImpl& core, const std::string& layer, const std::string& input,
                   int count, AnswerCount& answers) {
  for (int i = 0; i < count; ++i) {
    InferenceRequest request = InferenceRequestFor(layer, input, 1, kChannels, kSize, kSize);
    request.deadline = absl::Now() + absl::Minutes(5);
    request.done = [&answers](absl::StatusOr<InferenceResult> result) {
      if (result.ok()) ++answers.ok;
      ++answers.answered;
    };
    core.Submit(std::move(request));
  }
}

TEST(BatcherQueueDepthTest, GaugeMatchesTheQueueAfterConcurrentSubmits) {
  absl::StatusOr<std::unique_ptr<Metrics>> real = Metrics::Create("");
  ASSERT_TRUE(real.ok()) << real.status();
  PreemptedDepthMetrics metrics(*std::move(real));
  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<CpuExecutor>(0, 1, &metrics));
  ServingCoreImpl core(TestServerOptions(), std::move(executors), &metrics);

  // Each round: a fresh layer whose batcher holds everything (the batch never fills and the
  // delay is the longest allowed), threads that submit at once, then the gauge is compared
  // with the queue.
  constexpr int kRounds = 10;
  constexpr int kThreads = 8;
  constexpr int kEach = 8;
  constexpr int kQueued = kThreads * kEach;
  const std::string input = RandomTensor(kChannels * kSize * kSize, DataType::kFloat32, 1);
  AnswerCount answers;
  for (int round = 0; round < kRounds; ++round) {
    const std::string layer = absl::StrCat("depth", round);
    ASSERT_TRUE(core.LoadLayer(LoadRequestFor(HoldingSpec(layer), round)).ok());

    absl::Notification start;
    std::vector<std::thread> submitters;
    for (int t = 0; t < kThreads; ++t) {
      submitters.emplace_back([&] {
        start.WaitForNotification();
        SubmitCounted(core, layer, input, kEach, answers);
      });
    }
    start.Notify();
    for (std::thread& t : submitters) t.join();

    std::optional<LayerSnapshot> snapshot = core.FindLayer(layer);
    ASSERT_TRUE(snapshot.has_value());
    ASSERT_EQ(snapshot->queued_requests, kQueued) << "round " << round;
    ASSERT_EQ(QueueDepthIn(metrics.Scrape(), layer), absl::StrCat(kQueued))
        << "round " << round << ": the gauge lags the queue";
    // Unloading drains the layer: its requests run now and the gauge returns to 0.
    ASSERT_TRUE(core.UnloadLayer(layer).ok());
  }
  core.Shutdown();
  EXPECT_EQ(answers.answered.load(), kRounds * kQueued);
  EXPECT_EQ(answers.ok.load(), kRounds * kQueued);
}

// A replaced layer's old batcher drains while the new one queues: the one gauge series of the
// layer name counts both. Each batcher used to set the gauge to its own count, so the series
// showed whichever had changed last. The test holds the executor's only launch slot, so nothing
// launches (and no queue empties) until it lets go: no timing involved.
TEST(BatcherQueueDepthTest, GaugeSumsTheDrainingAndTheNewGenerationOfALayer) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<CpuExecutor>(0, 1, metrics->get()));
  ServingCoreImpl core(TestServerOptions(), std::move(executors), metrics->get());
  Executor& executor = *core.executors().front();

  const std::string layer = "replaced";
  const v1::LayerSpec spec = HoldingSpec(layer);
  ASSERT_TRUE(core.LoadLayer(LoadRequestFor(spec, 1)).ok());
  ASSERT_TRUE(executor.AcquireSlot(absl::Seconds(10)));

  const std::string input = RandomTensor(kChannels * kSize * kSize, DataType::kFloat32, 2);
  AnswerCount answers;
  auto submit = [&](int count) { SubmitCounted(core, layer, input, count, answers); };
  constexpr int kOld = 3;
  constexpr int kNew = 5;
  submit(kOld);
  EXPECT_EQ(QueueDepthIn((*metrics)->Scrape(), layer), absl::StrCat(kOld));

  // Replacing the layer drains the old generation: it wants to launch its requests now but
  // cannot get the slot, so they stay queued while the new generation takes new requests.
  ASSERT_TRUE(core.LoadLayer(LoadRequestFor(spec, 3)).ok());
  submit(kNew);
  std::optional<LayerSnapshot> snapshot = core.FindLayer(layer);
  ASSERT_TRUE(snapshot.has_value());
  EXPECT_EQ(snapshot->queued_requests, kNew);  // the serving generation alone
  EXPECT_EQ(QueueDepthIn((*metrics)->Scrape(), layer), absl::StrCat(kOld + kNew))
      << "the gauge must count the draining generation's requests too";

  // Unloading drains the new generation too; once the slot is free, everything runs and the
  // gauge returns to 0 (not before: unloading no longer zeroes it while requests are queued).
  ASSERT_TRUE(core.UnloadLayer(layer).ok());
  EXPECT_EQ(QueueDepthIn((*metrics)->Scrape(), layer), absl::StrCat(kOld + kNew));
  executor.ReleaseSlot();
  const absl::Time give_up = absl::Now() + absl::Minutes(1);
  while (answers.answered.load() < kOld + kNew && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(answers.answered.load(), kOld + kNew);
  EXPECT_EQ(answers.ok.load(), kOld + kNew);
  EXPECT_EQ(QueueDepthIn((*metrics)->Scrape(), layer), "0");
  core.Shutdown();
}

}  // namespace
}  // namespace convserve
