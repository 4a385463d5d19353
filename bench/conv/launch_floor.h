// The launch floor: an empty kernel timed like the convolutions (L2 flush, events around one
// launch), so a microsecond-scale layer's time can be read as floor plus work.
#ifndef CONVSERVE_BENCH_CONV_LAUNCH_FLOOR_H_
#define CONVSERVE_BENCH_CONV_LAUNCH_FLOOR_H_

#include <cuda_runtime.h>

namespace convserve {

struct LaunchFloorCase {
  const char* name;
  int blocks;
  int threads;
  int dynamic_smem_bytes;  // > 48 KiB: like the wgmma kinds, which need the opt-in carve-out
  int cluster;             // > 1: a thread-block cluster launch, like split-K over a cluster
};

// The shapes of launch our kernels make at N = 1: one small block; a wave of wgmma-sized blocks;
// the same in clusters of two and eight.
inline constexpr LaunchFloorCase kLaunchFloorCases[] = {
    {"empty_1x128", 1, 128, 0, 1},
    {"empty_132x384_200KiB", 132, 384, 200 * 1024, 1},
    {"empty_132x384_200KiB_cluster2", 132, 384, 200 * 1024, 2},
    {"empty_128x384_200KiB_cluster8", 128, 384, 200 * 1024, 8},
};

cudaError_t LaunchEmptyKernel(const LaunchFloorCase& shape, cudaStream_t stream);

}  // namespace convserve

#endif  // CONVSERVE_BENCH_CONV_LAUNCH_FLOOR_H_
