// DecideBatch with a fake clock: every launch rule and the wait it asks for otherwise.
#include "server/batch_policy.h"

#include <vector>

#include "gtest/gtest.h"

namespace convserve {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1'700'000'000);

BatchingConfig Config(int max_batch, int64_t delay_us, std::vector<int> preferred = {}) {
  BatchingConfig config;
  config.max_batch_size = max_batch;
  config.max_queue_delay = absl::Microseconds(delay_us);
  config.preferred_batch_sizes = std::move(preferred);
  return config;
}

TEST(DecideBatchTest, EmptyQueueIsIdle) {
  const BatchDecision d = DecideBatch({}, kStart, kStart, Config(8, 500));
  EXPECT_FALSE(d.launch);
  EXPECT_EQ(d.wake_at, absl::InfiniteFuture());
}

TEST(DecideBatchTest, WaitsForTheOldestRequestsDelay) {
  const std::vector<int64_t> queued = {1, 1, 1};
  const BatchDecision d =
      DecideBatch(queued, kStart, kStart + absl::Microseconds(100), Config(8, 500));
  EXPECT_FALSE(d.launch);
  EXPECT_EQ(d.wake_at, kStart + absl::Microseconds(500));
}

TEST(DecideBatchTest, LaunchesEverythingWhenTheDelayRunsOut) {
  const std::vector<int64_t> queued = {1, 2, 1};
  const BatchDecision d =
      DecideBatch(queued, kStart, kStart + absl::Microseconds(500), Config(8, 500));
  EXPECT_TRUE(d.launch);
  EXPECT_EQ(d.requests, 3);
  EXPECT_EQ(d.samples, 4);
}

TEST(DecideBatchTest, LaunchesAtOnceWhenFull) {
  const std::vector<int64_t> queued = {1, 1, 1, 1, 1};
  const BatchDecision d = DecideBatch(queued, kStart, kStart, Config(4, 1'000'000));
  EXPECT_TRUE(d.launch);
  EXPECT_EQ(d.requests, 4);
  EXPECT_EQ(d.samples, 4);
}

TEST(DecideBatchTest, LaunchesWhenTheNextRequestDoesNotFit) {
  // 3 + 3 = 6 of 8; the third request (N=3) would pass max_batch_size.
  const std::vector<int64_t> queued = {3, 3, 3};
  const BatchDecision d = DecideBatch(queued, kStart, kStart, Config(8, 1'000'000));
  EXPECT_TRUE(d.launch);
  EXPECT_EQ(d.requests, 2);
  EXPECT_EQ(d.samples, 6);
}

TEST(DecideBatchTest, AnOversizedRequestRunsAlone) {
  const std::vector<int64_t> queued = {40, 1};
  const BatchDecision d = DecideBatch(queued, kStart, kStart, Config(32, 1'000'000));
  EXPECT_TRUE(d.launch);
  EXPECT_EQ(d.requests, 1);
  EXPECT_EQ(d.samples, 40);
}

TEST(DecideBatchTest, PreferredSizeLaunchesOnlyWhenNothingElseWaits) {
  const BatchingConfig config = Config(32, 1'000'000, {4, 8});
  const std::vector<int64_t> four = {1, 1, 2};
  BatchDecision d = DecideBatch(four, kStart, kStart, config);
  EXPECT_TRUE(d.launch);
  EXPECT_EQ(d.samples, 4);
  // Five queued: 4 is preferred but a fifth waits, so keep collecting.
  const std::vector<int64_t> five = {1, 1, 2, 1};
  d = DecideBatch(five, kStart, kStart, config);
  EXPECT_FALSE(d.launch);
  EXPECT_EQ(d.wake_at, kStart + absl::Seconds(1));
  // Three is not preferred.
  const std::vector<int64_t> three = {1, 1, 1};
  EXPECT_FALSE(DecideBatch(three, kStart, kStart, config).launch);
}

TEST(DecideBatchTest, DrainingLaunchesWithoutWaiting) {
  const std::vector<int64_t> queued = {1};
  const BatchDecision d =
      DecideBatch(queued, kStart, kStart, Config(8, 1'000'000), /*draining=*/true);
  EXPECT_TRUE(d.launch);
  EXPECT_EQ(d.requests, 1);
}

TEST(DecideBatchTest, ZeroDelayNeverWaits) {
  const std::vector<int64_t> queued = {1};
  EXPECT_TRUE(DecideBatch(queued, kStart, kStart, Config(8, 0)).launch);
}

TEST(DecideBatchTest, FakeClockWalksThroughTheDelay) {
  const BatchingConfig config = Config(16, 500);
  const std::vector<int64_t> queued = {1, 1};
  for (int64_t t = 0; t < 500; t += 50) {
    EXPECT_FALSE(DecideBatch(queued, kStart, kStart + absl::Microseconds(t), config).launch)
        << "at " << t << " us";
  }
  EXPECT_TRUE(DecideBatch(queued, kStart, kStart + absl::Microseconds(500), config).launch);
}

}  // namespace
}  // namespace convserve
