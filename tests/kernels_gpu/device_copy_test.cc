// CopyWithinDevice (kernels/device_copy.h) against a host model of the same copies: more copies
// than one launch takes, aligned and unaligned ends, tails shorter than a vector, empty copies,
// a tensor-sized copy. Bytes no copy writes must keep their poison. Skips without a GPU.
#include "kernels/device_copy.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace convserve {
namespace {

bool HasGpu() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

TEST(CopyWithinDeviceTest, MatchesAHostModelOfTheSameCopies) {
  if (!HasGpu()) GTEST_SKIP() << "no CUDA GPU";
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u\n", seed);
  std::mt19937 random(seed);
  constexpr size_t kBytes = size_t{32} << 20;
  constexpr unsigned char kPoison = 0xAB;
  std::vector<unsigned char> source(kBytes);
  for (unsigned char& byte : source) byte = static_cast<unsigned char>(random());

  unsigned char* device_source = nullptr;
  unsigned char* device_destination = nullptr;
  ASSERT_EQ(cudaMalloc(&device_source, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&device_destination, kBytes), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(device_source, source.data(), kBytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(device_destination, kPoison, kBytes), cudaSuccess);

  // Non-overlapping destinations laid out one after another with random gaps; sources anywhere.
  // 150 copies: three launches of up to 64.
  std::vector<DeviceCopy> copies;
  std::vector<unsigned char> expected(kBytes, kPoison);
  size_t next_destination = 0;
  const size_t sizes[] = {0, 1, 15, 16, 17, 4096, 4099, 401408, 65536 + 7};
  for (int i = 0; i < 150; ++i) {
    const size_t bytes = sizes[random() % (sizeof(sizes) / sizeof(sizes[0]))] + random() % 3 * 16;
    const bool aligned = random() % 2 == 0;
    const size_t gap = aligned ? 16 * (random() % 4) : random() % 31;
    const size_t destination = next_destination + gap;
    size_t from = random() % (kBytes - bytes);
    if (aligned) from &= ~size_t{15};
    if (destination + bytes > kBytes) break;
    copies.push_back({device_destination + destination, device_source + from, bytes});
    std::memcpy(expected.data() + destination, source.data() + from, bytes);
    next_destination = destination + bytes;
  }
  ASSERT_GT(copies.size(), 128u);

  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_TRUE(CopyWithinDevice(copies, stream).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<unsigned char> got(kBytes);
  ASSERT_EQ(cudaMemcpy(got.data(), device_destination, kBytes, cudaMemcpyDeviceToHost),
            cudaSuccess);
  size_t mismatches = 0;
  size_t first_mismatch = kBytes;
  for (size_t i = 0; i < kBytes; ++i) {
    if (got[i] != expected[i]) {
      if (mismatches++ == 0) first_mismatch = i;
    }
  }
  EXPECT_EQ(mismatches, 0u) << "first at byte " << first_mismatch << " of " << copies.size()
                            << " copies";
  EXPECT_TRUE(CopyWithinDevice({}, stream).ok());
  cudaStreamDestroy(stream);
  cudaFree(device_source);
  cudaFree(device_destination);
}

}  // namespace
}  // namespace convserve
