#include "server/parallel_copy.h"

#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace convserve {
namespace {

// Sources of assorted sizes (below, at and far above the piece size, odd lengths) with random
// bytes, and destinations poisoned with a byte the sources never use at the same offset.
struct Case {
  std::vector<std::string> sources;
  std::vector<std::string> destinations;
  std::vector<ParallelCopier::Range> ranges;
};

Case MakeCase(uint32_t seed) {
  std::mt19937 rng(seed);
  const size_t piece = ParallelCopier::kMinPieceBytes;
  Case c;
  for (size_t bytes : {size_t{1}, size_t{4097}, piece - 1, piece, piece + 1, 3 * piece + 17,
                       size_t{401408}, 9 * piece + 5}) {
    std::string source(bytes, '\0');
    for (char& b : source) b = static_cast<char>(rng() & 0x7f);
    c.sources.push_back(std::move(source));
    c.destinations.emplace_back(bytes, '\xff');
  }
  for (size_t i = 0; i < c.sources.size(); ++i) {
    c.ranges.push_back({c.destinations[i].data(), c.sources[i].data(), c.sources[i].size()});
  }
  return c;
}

void ExpectCopied(const Case& c) {
  for (size_t i = 0; i < c.sources.size(); ++i) {
    ASSERT_EQ(c.destinations[i], c.sources[i])
        << "range " << i << " of " << c.sources[i].size() << " bytes";
  }
}

TEST(ParallelCopierTest, CopiesEveryByteWithAnyNumberOfHelpers) {
  for (int helpers : {0, 1, 3, 8}) {
    ParallelCopier copier(helpers);
    EXPECT_EQ(copier.helpers(), helpers);
    for (uint32_t seed = 0; seed < 5; ++seed) {
      Case c = MakeCase(seed * 10 + static_cast<uint32_t>(helpers));
      copier.Copy(c.ranges);
      ExpectCopied(c);
    }
  }
}

TEST(ParallelCopierTest, OneLargeRangeAndNoRanges) {
  ParallelCopier copier(3);
  std::string source(5 << 20, '\0');
  std::mt19937 rng(7);
  for (char& b : source) b = static_cast<char>(rng());
  std::string destination(source.size(), '\0');
  copier.Copy({{destination.data(), source.data(), source.size()}});
  EXPECT_EQ(destination, source);
  copier.Copy({});
}

TEST(ParallelCopierTest, ConcurrentCallersShareTheHelpers) {
  ParallelCopier copier(3);
  std::vector<std::thread> callers;
  std::vector<int> failures(6, 0);
  for (int t = 0; t < 6; ++t) {
    callers.emplace_back([&copier, &failures, t] {
      for (uint32_t round = 0; round < 40; ++round) {
        Case c = MakeCase(1000 * static_cast<uint32_t>(t) + round);
        copier.Copy(c.ranges);
        for (size_t i = 0; i < c.sources.size(); ++i)
          failures[t] += c.destinations[i] != c.sources[i];
      }
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (int t = 0; t < 6; ++t) EXPECT_EQ(failures[t], 0) << "caller " << t;
}

}  // namespace
}  // namespace convserve
