// FastDivmod (kernels/cuda/fast_divmod.h) against the / and % operators, on the CPU: every
// divisor up to 4096 with the dividends where rounding errs first, and random divisors and
// dividends over the whole int range the kernels use.
#include "kernels/cuda/fast_divmod.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

namespace convserve {
namespace cuda {
namespace {

void Check(int d, int n) {
  const FastDivmod div(d);
  int remainder = -1;
  const int q = div.DivMod(n, &remainder);
  ASSERT_EQ(q, n / d) << n << " / " << d;
  ASSERT_EQ(remainder, n % d) << n << " % " << d;
}

TEST(FastDivmodTest, SmallDivisorsNearEveryMultiple) {
  constexpr int kMax = 2147483647;
  for (int d = 1; d <= 4096; ++d) {
    for (int n :
         {0, 1, d - 1, d, d + 1, kMax, kMax - 1, kMax - d, kMax / d * d, kMax / d * d - 1}) {
      if (n >= 0) Check(d, n);
    }
    for (int k = 1; k < 3000; k += 7) {
      const int64_t multiple = static_cast<int64_t>(k) * d;
      for (int64_t n : {multiple - 1, multiple, multiple + 1}) {
        if (n >= 0 && n <= kMax) Check(d, static_cast<int>(n));
      }
    }
    if (HasFatalFailure()) return;
  }
}

TEST(FastDivmodTest, RandomDivisorsAndDividends) {
  std::mt19937 rng(20261206);
  std::uniform_int_distribution<int> any(0, 2147483647);
  std::vector<int> divisors = {
      1, 2, 3, 7, 49, 56, 3136, 65535, 65536, 65537, 1 << 30, (1 << 30) + 1, 2147483647};
  for (int i = 0; i < 2000; ++i) divisors.push_back(1 + any(rng) % 2147483647);
  for (int d : divisors) {
    for (int i = 0; i < 500; ++i) Check(d, any(rng));
    Check(d, 2147483647);
    Check(d, 0);
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace cuda
}  // namespace convserve
