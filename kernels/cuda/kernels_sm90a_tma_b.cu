// Hopper kernels: the second half of the kWgmmaTma rows of kConfigTable (fp16 and bf16: the
// persistent rows, the later cluster split-K rows and the multicast pairs), sm_90a only like
// kernels_sm90a.cu; in a file of their own so they compile beside kernels_sm90a_tma.cu. The
// static_assert also checks the kind of the rows appended after these and the table's size,
// which every file's row list depends on.
#include "kernels/cuda/instantiate.cuh"

namespace convserve {
namespace cuda {

static_assert(
    AllOfKind<KernelKind::kWgmmaTma, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54>() &&
        AllOfKind<KernelKind::kTensorOp, 55, 56, 57, 58, 59, 60, 61, 62>() && kNumConfigs == 63,
    "update the row list with the table");

void FillKernelsWgmmaTmaFp16B(KernelTable& table) {
  FillKernels<__half, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54>(table);
}

void FillKernelsWgmmaTmaBf16B(KernelTable& table) {
  FillKernels<__nv_bfloat16, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54>(table);
}

}  // namespace cuda
}  // namespace convserve
