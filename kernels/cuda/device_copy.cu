// CopyWithinDevice (kernels/device_copy.h): one launch for a whole table of copies.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/cuda_util.h"
#include "kernels/device_copy.h"

namespace convserve {
namespace {

constexpr int kThreads = 256;
// Copies per launch: the table travels as the kernel's parameter, which must stay under the
// 4 KB every supported driver takes (64 x 24 bytes).
constexpr int kCopiesPerLaunch = 64;
// Bytes one block moves per loop trip (16 per thread, four loads in flight): enough blocks per
// copy to spread a 400 KB tensor over the SMs without a long serial tail.
constexpr int64_t kBytesPerBlockTrip = int64_t{kThreads} * 16 * 4;
constexpr unsigned kMaxBlocksPerCopy = 64;

struct CopyTable {
  DeviceCopy copies[kCopiesPerLaunch];
};

// blockIdx.y picks the copy; the blocks along x stride through it. Both ends 16-byte aligned
// (the common case: cudaMalloc'd buffers at offsets of whole tensors) move 16 bytes per load;
// otherwise bytes, which only odd offsets a client chose pay for.
__global__ void __launch_bounds__(kThreads)
    CopyTableKernel(const __grid_constant__ CopyTable table) {
  const DeviceCopy copy = table.copies[blockIdx.y];
  const auto* src = static_cast<const unsigned char*>(copy.src);
  auto* dst = static_cast<unsigned char*>(copy.dst);
  const size_t first = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t done = 0;
  if (((reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst)) & 15) == 0) {
    const size_t vectors = copy.bytes / 16;
    const auto* src16 = reinterpret_cast<const uint4*>(src);
    auto* dst16 = reinterpret_cast<uint4*>(dst);
    // Four loads before their stores: the pointers may alias as far as the compiler knows, so
    // it would not hoist them itself.
    size_t i = first;
    for (; i + 3 * stride < vectors; i += 4 * stride) {
      const uint4 a = src16[i], b = src16[i + stride], c = src16[i + 2 * stride],
                  d = src16[i + 3 * stride];
      dst16[i] = a;
      dst16[i + stride] = b;
      dst16[i + 2 * stride] = c;
      dst16[i + 3 * stride] = d;
    }
    for (; i < vectors; i += stride) dst16[i] = src16[i];
    done = vectors * 16;
  }
  for (size_t i = done + first; i < copy.bytes; i += stride) dst[i] = src[i];
}

}  // namespace

absl::Status CopyWithinDevice(absl::Span<const DeviceCopy> copies, CudaStream stream) {
  for (size_t begin = 0; begin < copies.size(); begin += kCopiesPerLaunch) {
    const size_t count = std::min(copies.size() - begin, static_cast<size_t>(kCopiesPerLaunch));
    CopyTable table{};
    size_t largest = 0;
    for (size_t i = 0; i < count; ++i) {
      table.copies[i] = copies[begin + i];
      largest = std::max(largest, copies[begin + i].bytes);
    }
    if (largest == 0) continue;
    const auto blocks = static_cast<unsigned>(std::min<int64_t>(
        (static_cast<int64_t>(largest) + kBytesPerBlockTrip - 1) / kBytesPerBlockTrip,
        kMaxBlocksPerCopy));
    CopyTableKernel<<<dim3(blocks, static_cast<unsigned>(count)), kThreads, 0, stream>>>(table);
    CONVSERVE_RETURN_IF_ERROR(cuda::CudaStatus(cudaGetLastError(), "CopyWithinDevice launch"));
  }
  return absl::OkStatus();
}

}  // namespace convserve
