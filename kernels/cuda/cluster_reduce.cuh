// Split-K inside a thread-block cluster (sm_90+): the slices of an output tile are the ranks of
// one cluster; each parks its fp32 accumulators in its own (drained) shared memory and the ranks
// sum them through distributed shared memory into rank 0's, which runs the epilogue. No
// workspace, no second kernel. Used by the TMA kind and, on sm_90, by the mma.sync kinds.
// Device code for compute capability 9.0 and later only: below it these compile to nothing,
// and callers keep them behind the same condition.
#pragma once

#include <cstdint>

namespace convserve {
namespace cuda {

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900

// Every thread of the cluster (exited ones excepted, so none exits before): arrive and wait,
// ordering shared-memory writes before it with reads after it, cluster-wide.
__device__ __forceinline__ void ClusterSync() {
  asm volatile(
      "barrier.cluster.arrive.release.aligned;\n"
      "barrier.cluster.wait.acquire.aligned;\n" ::
          : "memory");
}

// The in-cluster split-K reduction, for one thread (`ctid` of the kThreads threads that hold
// the tile's accumulators). Every rank parks its fp32 accumulators in its drained ring; the parking
// layout keeps each thread's 4-register chunks 16 bytes apart from its neighbours' (conflict-free
// 16-byte accesses). The ranks share the sum: chunk c (of every thread) is rank c % ranks's, which
// adds the parked copies of it from every rank, all loads in flight at once, and writes the sum
// into rank 0's parking, whence rank 0 reloads the whole tile. So the reduction costs one round of
// remote loads and posted remote stores, not ranks - 1 rounds of rank 0 reading its peers.
template <int kThreads>
__device__ __forceinline__ uint32_t ParkedChunk(uint32_t park, int chunk, int ctid) {
  return park + (chunk * kThreads + ctid) * 16;
}

template <int kCount, int kThreads>
__device__ __forceinline__ void ParkAccumulators(const float (&acc)[kCount], uint32_t park,
                                                 int ctid) {
#pragma unroll
  for (int c = 0; c < kCount / 4; ++c) {
    asm volatile(
        "st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(ParkedChunk<kThreads>(park, c, ctid)),
        "f"(acc[4 * c]), "f"(acc[4 * c + 1]), "f"(acc[4 * c + 2]), "f"(acc[4 * c + 3])
        : "memory");
  }
}

template <int kCount, int kThreads>
__device__ __forceinline__ void ReloadAccumulators(float (&acc)[kCount], uint32_t park, int ctid) {
#pragma unroll
  for (int c = 0; c < kCount / 4; ++c) {
    asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                 : "=f"(acc[4 * c]), "=f"(acc[4 * c + 1]), "=f"(acc[4 * c + 2]),
                   "=f"(acc[4 * c + 3])
                 : "r"(ParkedChunk<kThreads>(park, c, ctid))
                 : "memory");
  }
}

// This rank's share of the sum (between the two cluster barriers): its chunks, summed over the
// kRanks parkings, written to rank 0's. kRanks is the launch's split, known only at run time,
// hence one instantiation per split (SumSharedChunks).
template <int kRanks, int kCount, int kThreads>
__device__ __forceinline__ void SumOwnedChunks(uint32_t park, int ctid, int rank) {
  constexpr int kChunks = kCount / 4;
  constexpr int kOwned = (kChunks + kRanks - 1) / kRanks;
  uint32_t parks[kRanks];
#pragma unroll
  for (int q = 0; q < kRanks; ++q) {
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(parks[q]) : "r"(park), "r"(q));
  }
  float v[kOwned][kRanks][4];
#pragma unroll
  for (int j = 0; j < kOwned; ++j) {
    const int chunk = j * kRanks + rank;
    if (chunk >= kChunks) break;
#pragma unroll
    for (int q = 0; q < kRanks; ++q) {
      asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                   : "=f"(v[j][q][0]), "=f"(v[j][q][1]), "=f"(v[j][q][2]), "=f"(v[j][q][3])
                   : "r"(ParkedChunk<kThreads>(parks[q], chunk, ctid))
                   : "memory");
    }
  }
#pragma unroll
  for (int j = 0; j < kOwned; ++j) {
    const int chunk = j * kRanks + rank;
    if (chunk >= kChunks) break;
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int q = 0; q < kRanks; ++q) {
#pragma unroll
      for (int e = 0; e < 4; ++e) sum[e] += v[j][q][e];
    }
    asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(
                     ParkedChunk<kThreads>(parks[0], chunk, ctid)),
                 "f"(sum[0]), "f"(sum[1]), "f"(sum[2]), "f"(sum[3])
                 : "memory");
  }
}

template <int kCount, int kThreads>
__device__ __forceinline__ void SumSharedChunks(uint32_t park, int ctid, int rank, int ranks) {
  switch (ranks) {
    case 2:
      return SumOwnedChunks<2, kCount, kThreads>(park, ctid, rank);
    case 3:
      return SumOwnedChunks<3, kCount, kThreads>(park, ctid, rank);
    case 4:
      return SumOwnedChunks<4, kCount, kThreads>(park, ctid, rank);
    case 5:
      return SumOwnedChunks<5, kCount, kThreads>(park, ctid, rank);
    case 6:
      return SumOwnedChunks<6, kCount, kThreads>(park, ctid, rank);
    case 7:
      return SumOwnedChunks<7, kCount, kThreads>(park, ctid, rank);
    default:
      return SumOwnedChunks<8, kCount, kThreads>(park, ctid, rank);
  }
}

#endif  // !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900

}  // namespace cuda
}  // namespace convserve
