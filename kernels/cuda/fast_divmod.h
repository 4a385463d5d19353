// Division by a run-time divisor that is the same for a whole launch (output width, channels per
// group, ...), as a multiply and a shift: a kernel's integer division by a register value
// is a ~20-instruction sequence, and at N = 1 the mma.sync kernels spent a third of their
// instructions decoding row and filter positions before their first copy (Nsight Compute,
// bench/results/2026-12-06_mma_profile). Built on the host into KernelParams.
//
// For a divisor d in [1, 2^31) and p = 31 + ceil(log2 d), m = ceil(2^p / d) fits in 32 bits and
// n / d == (n * m) >> p for every n in [0, 2^31) (the round-up method of Granlund and
// Montgomery: m * d exceeds 2^p by less than d <= 2^(p - 31), so n times that excess stays
// under 2^p). Checked on the CPU by tests/kernels/fast_divmod_test.cc.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define CONVSERVE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CONVSERVE_HOST_DEVICE inline
#endif

namespace convserve {
namespace cuda {

struct FastDivmod {
  int divisor = 1;
  uint32_t multiplier = 0x80000000u;  // ceil(2^shift / divisor)
  int shift = 31;                     // 31 + ceil(log2(divisor))

  FastDivmod() = default;
  // divisor in [1, 2^31).
  explicit FastDivmod(int d) : divisor(d) {
    int log2_ceil = 0;
    while ((int64_t{1} << log2_ceil) < d) ++log2_ceil;
    shift = 31 + log2_ceil;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << shift) + static_cast<uint64_t>(d) - 1) /
                                       static_cast<uint64_t>(d));
  }

  // n / divisor for n in [0, 2^31): one 32 x 32 -> 64-bit multiply and a shift.
  CONVSERVE_HOST_DEVICE int Div(int n) const {
    return static_cast<int>((static_cast<uint64_t>(static_cast<uint32_t>(n)) * multiplier) >>
                            shift);
  }

  // n / divisor and n % divisor.
  CONVSERVE_HOST_DEVICE int DivMod(int n, int* remainder) const {
    const int q = Div(n);
    *remainder = n - q * divisor;
    return q;
  }
};

}  // namespace cuda
}  // namespace convserve
