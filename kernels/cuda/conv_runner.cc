// See conv_runner.h.
#include "kernels/cuda/conv_runner.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_util.h"
#include "kernels/cuda/helper_kernels.h"
#include "kernels/cuda/kernel_registry.h"
#include "kernels/cuda/tensor_map.h"

namespace convserve {
namespace cuda {
namespace {

int DtypeSlot(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return 0;
    case DataType::kFloat16:
      return 1;
    case DataType::kBFloat16:
      return 2;
  }
  return 0;
}

int64_t Align256(int64_t bytes) { return (bytes + 255) / 256 * 256; }

bool IsGemmKind(KernelKind kind) { return kind != KernelKind::kDepthwise; }

// Whether the current device runs the sm_90 code of the mma.sync kinds: a build with sm_90 code
// on compute capability 9.0 or later.
bool ClusterSplitOnDevice() {
#ifdef CONVSERVE_HAVE_WGMMA
  int device = 0;
  int major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
         major >= 9;
#else
  return false;
#endif
}

// How a launch of `config` cut into `split` slices sums them: inside a thread-block cluster
// (the TMA kind always; the mma.sync kinds on sm_90 when their tile fits in the drained
// pipeline and the split in a portable cluster), or as fp32 partials in the workspace summed by
// a second kernel.
enum class SplitSum { kNone, kCluster, kWorkspace };
SplitSum SplitSumOf(int config, DataType dtype, int split) {
  const KernelKind kind = kConfigTable[config].kind;
  if (split <= 1 || !IsGemmKind(kind)) return SplitSum::kNone;
  if (kind == KernelKind::kWgmmaTma) return SplitSum::kCluster;
  if (split <= 8 && GetKernel(config, dtype).cluster_split && ClusterSplitOnDevice()) {
    return SplitSum::kCluster;
  }
  return SplitSum::kWorkspace;
}

// sm_90a code: runs on compute capability 9.0 devices only.
bool IsHopperKind(KernelKind kind) {
  return kind == KernelKind::kWgmma || kind == KernelKind::kWgmmaWs ||
         kind == KernelKind::kWgmmaTma;
}

// The reduction slice of one pipeline stage, in elements of the problem's dtype.
int BlockKElements(const TileConfig& config, DataType dtype) {
  return config.block_k * 2 / DataTypeSize(dtype);
}

// The 16-byte kinds load whole vectors of channels. A layer with fewer input channels than a
// vector (an RGB stem) also keeps its weights packed with C rounded up to the vector width, and
// these kinds run it on a zero-padded NHWC copy of the input (LaunchConv makes it).
int VectorWidth(DataType dtype) { return 16 / static_cast<int>(DataTypeSize(dtype)); }

bool PadsChannels(const ConvParams& params) {
  const int vec = VectorWidth(params.dtype);
  return params.groups == 1 && params.in_channels < vec;
}

ConvParams ChannelPadded(const ConvParams& params) {
  ConvParams padded = params;
  padded.in_channels = VectorWidth(params.dtype);
  return padded;
}

// The kinds whose loads take 16-byte channel vectors (the TMA kind needs whole 64-channel
// taps, which no padding to a vector gives).
bool IsVectorKind(KernelKind kind) {
  return kind == KernelKind::kTensorOp || kind == KernelKind::kWgmma ||
         kind == KernelKind::kWgmmaWs;
}

// The TMA kind copies one tap's channels per im2col copy: 16 or 32 of them into narrow rows, or
// 64 at a time.
bool TmaChannelsOk(int64_t channels) {
  return channels == 16 || channels == 32 || channels % 64 == 0;
}

// Space-to-depth, for the TMA kind and the 16-byte-vector kinds: a strided layer whose channels
// the TMA kind cannot copy (an RGB stem, C = 3 at stride 2) but whose stride blocks hold at most
// 64 channels runs on the input re-cut into stride_h x stride_w blocks of pixels,
// C * stride_h * stride_w channels each (zero-padded to 16, 32 or 64), with the filter re-cut
// over the blocks (helper_kernels.h, SpaceToDepthShape) at stride 1. The stem's 7 x 7 taps of 3
// channels become 4 x 4 taps of 16: GEMM-K 256 in whole 32-byte rows instead of 147 single elements
// (or 392 of a channel-padded copy), and whole copies instead of the few-channel kind's element
// gathers.
bool SpaceToDepthApplies(const ConvParams& params) {
  return DataTypeSize(params.dtype) == 2 && params.groups == 1 && params.dilation_h == 1 &&
         params.dilation_w == 1 && params.stride_h * params.stride_w > 1 &&
         !TmaChannelsOk(params.in_channels) &&
         params.in_channels * params.stride_h * params.stride_w <= 64;
}

// Its shape; the spatial fields only when `problem` is given. The first block row is the one
// holding input row -pad rounded down to a block, so tap rows shift by that much.
SpaceToDepthShape SpaceToDepthOf(const ConvParams& params, const ConvProblem* problem = nullptr) {
  SpaceToDepthShape shape;
  shape.channels = static_cast<int>(params.in_channels);
  shape.block_h = static_cast<int>(params.stride_h);
  shape.block_w = static_cast<int>(params.stride_w);
  const int64_t blocks = params.in_channels * params.stride_h * params.stride_w;
  shape.s2d_channels = static_cast<int>(blocks <= 16 ? 16 : blocks <= 32 ? 32 : 64);
  const int64_t top = (params.pad_h + params.stride_h - 1) / params.stride_h;
  const int64_t left = (params.pad_w + params.stride_w - 1) / params.stride_w;
  shape.shift_h = static_cast<int>(top * params.stride_h - params.pad_h);
  shape.shift_w = static_cast<int>(left * params.stride_w - params.pad_w);
  shape.taps_h =
      static_cast<int>((params.kernel_h + shape.shift_h + params.stride_h - 1) / params.stride_h);
  shape.taps_w =
      static_cast<int>((params.kernel_w + shape.shift_w + params.stride_w - 1) / params.stride_w);
  if (problem != nullptr) {
    shape.height = static_cast<int>(problem->height);
    shape.width = static_cast<int>(problem->width);
    shape.s2d_height = static_cast<int>((problem->height + params.stride_h - 1) / params.stride_h);
    shape.s2d_width = static_cast<int>((problem->width + params.stride_w - 1) / params.stride_w);
  }
  return shape;
}

// The layer in its space-to-depth form: stride 1, the padding before the first block.
ConvParams SpaceToDepthParams(const ConvParams& params) {
  const SpaceToDepthShape shape = SpaceToDepthOf(params);
  ConvParams s2d = params;
  s2d.in_channels = shape.s2d_channels;
  s2d.kernel_h = shape.taps_h;
  s2d.kernel_w = shape.taps_w;
  s2d.pad_h = (shape.shift_h + params.pad_h) / params.stride_h;
  s2d.pad_w = (shape.shift_w + params.pad_w) / params.stride_w;
  s2d.stride_h = 1;
  s2d.stride_w = 1;
  return s2d;
}

// The problem `config`'s kernel runs: `problem`, its channel-padded NHWC form, or its
// space-to-depth form. The last keeps the layer's output size only through KernelParams
// (RunParams): its own padding would give one more row or column at the far edge.
ConvProblem RunProblem(int config, const ConvProblem& problem) {
  ConvProblem run = problem;
  if (RunsChannelPadded(config, problem)) {
    run.params = ChannelPadded(problem.params);
    run.input_layout = Layout::kNhwc;
  } else if (RunsSpaceToDepth(config, problem)) {
    const SpaceToDepthShape shape = SpaceToDepthOf(problem.params, &problem);
    run.params = SpaceToDepthParams(problem.params);
    run.height = shape.s2d_height;
    run.width = shape.s2d_width;
    run.input_layout = Layout::kNhwc;
  }
  return run;
}

int64_t PlainGemmBytes(const ConvParams& params) {
  return params.out_channels * PackedKPad(params) * DataTypeSize(params.dtype);
}

// Where each packing of the GEMM weights starts in their buffer: the plain one, then the
// channel-padded one, then the space-to-depth one, each 256-byte aligned.
int64_t ChannelPaddedOffset(const ConvParams& params) { return Align256(PlainGemmBytes(params)); }
int64_t SpaceToDepthOffset(const ConvParams& params) {
  return ChannelPaddedOffset(params) +
         (PadsChannels(params) ? Align256(PlainGemmBytes(ChannelPadded(params))) : 0);
}

struct SplitPlan {
  int split = 1;
  int tiles_per_split = 0;
};

// Cuts the k tiles into config.split_k slices, none of them empty.
SplitPlan PlanSplit(const TileConfig& config, const ConvProblem& problem) {
  if (!IsGemmKind(config.kind)) return SplitPlan{};  // direct kernels have no k tiles
  const int64_t k_pad = PackedKPad(problem.params);
  const int bk = BlockKElements(config, problem.params.dtype);
  const int total = static_cast<int>((k_pad + bk - 1) / bk);
  SplitPlan plan;
  const int wanted = std::max(1, std::min(config.split_k, total));
  plan.tiles_per_split = (total + wanted - 1) / wanted;
  plan.split = (total + plan.tiles_per_split - 1) / plan.tiles_per_split;
  return plan;
}

KernelParams MakeKernelParams(const TileConfig& config, const ConvProblem& problem) {
  const ConvParams& c = problem.params;
  KernelParams p;
  p.batch = static_cast<int>(problem.batch);
  p.height = static_cast<int>(problem.height);
  p.width = static_cast<int>(problem.width);
  p.channels = static_cast<int>(c.in_channels);
  p.out_channels = static_cast<int>(c.out_channels);
  p.out_h = static_cast<int>(problem.out_height());
  p.out_w = static_cast<int>(problem.out_width());
  p.kernel_h = static_cast<int>(c.kernel_h);
  p.kernel_w = static_cast<int>(c.kernel_w);
  p.stride_h = static_cast<int>(c.stride_h);
  p.stride_w = static_cast<int>(c.stride_w);
  p.pad_h = static_cast<int>(c.pad_h);
  p.pad_w = static_cast<int>(c.pad_w);
  p.dil_h = static_cast<int>(c.dilation_h);
  p.dil_w = static_cast<int>(c.dilation_w);
  p.groups = static_cast<int>(c.groups);
  p.group_c = static_cast<int>(c.in_channels / c.groups);
  p.group_k = static_cast<int>(c.out_channels / c.groups);
  p.gemm_m = static_cast<int>(problem.gemm_m());
  p.gemm_k = static_cast<int>(problem.gemm_k());
  p.k_pad = static_cast<int>(PackedKPad(c));
  const SplitPlan split = PlanSplit(config, problem);
  p.split_k = IsGemmKind(config.kind) ? split.split : 1;
  p.k_tiles_per_split = split.tiles_per_split;
  p.activation = static_cast<int>(c.activation);
  p.output_nchw = problem.output_layout == Layout::kNchw ? 1 : 0;
  p.depth_multiplier = static_cast<int>(c.out_channels / c.in_channels);
  return p;
}

// The multiply-shift forms of the kernels' divisors, from p's final fields.
void SetDivisors(KernelParams& p) {
  p.div_pq = FastDivmod(std::max(1, p.out_h * p.out_w));
  p.div_out_w = FastDivmod(std::max(1, p.out_w));
  p.div_group_c = FastDivmod(std::max(1, p.group_c));
  p.div_kernel_w = FastDivmod(std::max(1, p.kernel_w));
  p.div_split_k = FastDivmod(std::max(1, p.split_k));
}

// The kernel's parameters for `config` on `problem`, which it runs as `run` (RunProblem): those
// of `run`, with the layer's own output size and GEMM M.
KernelParams RunParams(const TileConfig& config, const ConvProblem& problem,
                       const ConvProblem& run) {
  KernelParams p = MakeKernelParams(config, run);
  p.out_h = static_cast<int>(problem.out_height());
  p.out_w = static_cast<int>(problem.out_width());
  p.gemm_m = static_cast<int>(problem.gemm_m());
  SetDivisors(p);
  return p;
}

}  // namespace

const KernelHandle& GetKernel(int config, DataType dtype) {
  static const std::array<KernelTable, 3>* tables = [] {
    auto* t = new std::array<KernelTable, 3>();
    FillKernelsFp32A((*t)[0]);
    FillKernelsFp32B((*t)[0]);
    FillKernelsFp16A((*t)[1]);
    FillKernelsFp16B((*t)[1]);
    FillKernelsBf16A((*t)[2]);
    FillKernelsBf16B((*t)[2]);
#ifdef CONVSERVE_HAVE_WGMMA
    FillKernelsWgmmaFp16((*t)[1]);
    FillKernelsWgmmaBf16((*t)[2]);
    FillKernelsWgmmaFp32((*t)[0]);
    FillKernelsWgmmaTmaFp16A((*t)[1]);
    FillKernelsWgmmaTmaBf16A((*t)[2]);
    FillKernelsWgmmaTmaFp16B((*t)[1]);
    FillKernelsWgmmaTmaBf16B((*t)[2]);
#endif
    return t;
  }();
  return (*tables)[DtypeSlot(dtype)][config];
}

std::string ConfigName(const TileConfig& c) {
  if (c.kind == KernelKind::kDepthwise) return absl::StrCat("b", c.block_m, "_dw");
  std::string name = absl::StrCat("b", c.block_m, "x", c.block_n, "x", c.block_k, "_w", c.warp_m,
                                  "x", c.warp_n, "_s", c.stages);
  if (c.split_k > 1) absl::StrAppend(&name, "_sk", c.split_k);
  if (c.kind == KernelKind::kFewChannels) absl::StrAppend(&name, "_fewch");
  if (c.kind == KernelKind::kSimt) absl::StrAppend(&name, "_simt");
  if (c.kind == KernelKind::kWgmma) absl::StrAppend(&name, "_wgmma");
  if (c.kind == KernelKind::kWgmmaWs) absl::StrAppend(&name, "_wgmma_ws");
  if (c.kind == KernelKind::kWgmmaTma) absl::StrAppend(&name, "_wgmma_tma");
  if (c.persistent) absl::StrAppend(&name, "_persistent");
  if (c.multicast > 1) absl::StrAppend(&name, "_mc", c.multicast);
  return name;
}

int FindConfig(const std::string& name) {
  // Built once: Plan looks a name up for every batch, and building every name to compare
  // took ~5 us of the request path.
  static const auto* const index = [] {
    auto* by_name = new absl::flat_hash_map<std::string, int>();
    for (int i = 0; i < kNumConfigs; ++i) by_name->emplace(ConfigName(kConfigTable[i]), i);
    return by_name;
  }();
  const auto it = index->find(name);
  return it == index->end() ? -1 : it->second;
}

absl::StatusOr<DeviceInfo> PrepareDevice(int device) {
  CONVSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  cudaDeviceProp prop;
  CONVSERVE_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.device = device;
  info.name = prop.name;
  info.sm_count = prop.multiProcessorCount;
  info.compute_capability = prop.major * 10 + prop.minor;
  info.max_smem_per_block = static_cast<int>(prop.sharedMemPerBlockOptin);
  info.l2_bytes = prop.l2CacheSize;
  CONVSERVE_CUDA_RETURN_IF_ERROR(cudaDriverGetVersion(&info.driver_version));
  for (DataType dtype : {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16}) {
    for (int i = 0; i < kNumConfigs; ++i) {
      const KernelHandle& h = GetKernel(i, dtype);
      if (h.func == nullptr || h.smem_bytes > info.max_smem_per_block) continue;
      // sm_90a code: other devices have no image of it.
      if (IsHopperKind(kConfigTable[i].kind) && info.compute_capability != 90) continue;
      CONVSERVE_CUDA_RETURN_IF_ERROR(
          cudaFuncSetAttribute(h.func, cudaFuncAttributeMaxDynamicSharedMemorySize, h.smem_bytes));
    }
  }
  return info;
}

int64_t PackedKPad(const ConvParams& params) {
  const int64_t k = params.in_channels / params.groups * params.kernel_h * params.kernel_w;
  return (k + 7) / 8 * 8;
}

bool RunsSpaceToDepth(int config, const ConvProblem& problem) {
  if (config < 0 || config >= kNumConfigs) return false;
  const KernelKind kind = kConfigTable[config].kind;
  return (kind == KernelKind::kWgmmaTma || IsVectorKind(kind)) &&
         SpaceToDepthApplies(problem.params);
}

bool RunsChannelPadded(int config, const ConvProblem& problem) {
  return config >= 0 && config < kNumConfigs && IsVectorKind(kConfigTable[config].kind) &&
         PadsChannels(problem.params) && !RunsSpaceToDepth(config, problem);
}

bool RunsAsIs(int config, const ConvProblem& problem) {
  return !RunsChannelPadded(config, problem) && !RunsSpaceToDepth(config, problem);
}

int64_t PackedGemmBytes(const ConvParams& params) {
  if (SpaceToDepthApplies(params)) {
    return SpaceToDepthOffset(params) + PlainGemmBytes(SpaceToDepthParams(params));
  }
  if (PadsChannels(params)) {
    return ChannelPaddedOffset(params) + PlainGemmBytes(ChannelPadded(params));
  }
  return PlainGemmBytes(params);
}

int64_t PackedDepthwiseBytes(const ConvParams& params) {
  if (!params.is_depthwise()) return 0;
  return params.out_channels * params.kernel_h * params.kernel_w * DataTypeSize(params.dtype);
}

absl::Status PackWeightsOnDevice(const ConvParams& params, const void* oihw, void* gemm,
                                 void* depthwise, cudaStream_t stream) {
  const int group_c = static_cast<int>(params.in_channels / params.groups);
  CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchPackGemmWeights(
      params, group_c, static_cast<int>(PackedKPad(params)), oihw, gemm, stream));
  if (PadsChannels(params)) {  // the channel-padded copy, after the plain one
    const ConvParams padded = ChannelPadded(params);
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchPackGemmWeights(
        params, static_cast<int>(padded.in_channels), static_cast<int>(PackedKPad(padded)), oihw,
        static_cast<char*>(gemm) + ChannelPaddedOffset(params), stream));
  }
  if (SpaceToDepthApplies(params)) {  // the space-to-depth copy, last
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchPackSpaceToDepthWeights(
        params, SpaceToDepthOf(params), static_cast<int>(PackedKPad(SpaceToDepthParams(params))),
        oihw, static_cast<char*>(gemm) + SpaceToDepthOffset(params), stream));
  }
  if (depthwise != nullptr) {
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchPackDepthwiseWeights(params, oihw, depthwise, stream));
  }
  return absl::OkStatus();
}

absl::Status CheckImplementable(int config, const ConvProblem& problem, const DeviceInfo& device) {
  if (config < 0 || config >= kNumConfigs) {
    return absl::FailedPreconditionError(absl::StrCat("no configuration ", config));
  }
  const TileConfig& c = kConfigTable[config];
  const ConvParams& params = problem.params;
  const KernelHandle& h = GetKernel(config, params.dtype);
  const bool exact_fp32 =
      params.dtype == DataType::kFloat32 && params.fp32_math == Fp32Math::kExact;
  if (h.func == nullptr) {
    return absl::FailedPreconditionError("no kernel of this configuration for the dtype");
  }
  if (h.smem_bytes > device.max_smem_per_block) {
    return absl::FailedPreconditionError(absl::StrCat(
        "needs ", h.smem_bytes, " bytes of shared memory, device has ", device.max_smem_per_block));
  }
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  if (problem.gemm_m() > kIntMax || problem.height * problem.width > kIntMax ||
      params.in_channels > kIntMax || params.out_channels > kIntMax) {
    return absl::FailedPreconditionError("dimension beyond 32-bit range");
  }
  const ConvProblem run = RunProblem(config, problem);  // what the kernel itself would run
  switch (c.kind) {
    case KernelKind::kDepthwise:
      if (!params.is_depthwise()) return absl::FailedPreconditionError("not depthwise");
      if (problem.gemm_m() * params.out_channels > kIntMax * int64_t{256}) {
        return absl::FailedPreconditionError("too many outputs for a 1-D grid");
      }
      return absl::OkStatus();
    case KernelKind::kSimt:
      if (params.dtype != DataType::kFloat32) {
        return absl::FailedPreconditionError("SIMT runs fp32 only");
      }
      break;
    case KernelKind::kWgmmaTma: {
      // The tensor maps' limits: a copy is one tap of 16 or 32 channels or 64 channels of a
      // wider one; traversal strides up to 8; the 4-D im2col box corners within [-128, 127].
      if (params.dtype == DataType::kFloat32) {
        return absl::FailedPreconditionError("the TMA kind runs fp16 and bf16 only");
      }
      if (params.groups != 1 || !TmaChannelsOk(run.params.in_channels)) {
        return absl::FailedPreconditionError(
            "the TMA kind needs groups == 1 and C of 16, 32 or a multiple of 64 (or strides "
            "whose blocks hold at most 64 channels)");
      }
      const KernelParams p = RunParams(c, problem, run);
      const auto corner_ok = [](int64_t v) { return v >= -128 && v <= 127; };
      if (p.stride_h > 8 || p.stride_w > 8 || !corner_ok(Im2colLowerCorner(p.pad_h)) ||
          !corner_ok(Im2colLowerCorner(p.pad_w)) ||
          !corner_ok(Im2colUpperCorner(p.height, p.out_h, p.stride_h, p.pad_h)) ||
          !corner_ok(Im2colUpperCorner(p.width, p.out_w, p.stride_w, p.pad_w))) {
        return absl::FailedPreconditionError(
            "stride, padding or dilation beyond the TMA im2col limits");
      }
      // A persistent block numbers its output tiles with 32-bit ints.
      if (c.persistent && (problem.gemm_m() + c.block_m - 1) / c.block_m *
                                  ((params.out_channels + c.block_n - 1) / c.block_n) >
                              kIntMax) {
        return absl::FailedPreconditionError("too many output tiles for a persistent launch");
      }
      if (device.compute_capability != 90) {
        return absl::FailedPreconditionError("wgmma kernels run on compute capability 9.0 only");
      }
      break;
    }
    case KernelKind::kWgmma:
    case KernelKind::kWgmmaWs:
      if (device.compute_capability != 90) {
        return absl::FailedPreconditionError("wgmma kernels run on compute capability 9.0 only");
      }
      [[fallthrough]];
    case KernelKind::kTensorOp:
      if (exact_fp32) return absl::FailedPreconditionError("exact fp32 needs FFMA");
      // The channels of the problem the kernel runs (channel-padded or space-to-depth).
      if (run.params.in_channels / params.groups % VectorWidth(params.dtype) != 0) {
        return absl::FailedPreconditionError("C/groups is not a multiple of the vector width");
      }
      break;
    case KernelKind::kFewChannels:
      if (exact_fp32) return absl::FailedPreconditionError("exact fp32 needs FFMA");
      break;
  }
  const int64_t n_tiles = (problem.gemm_n() + c.block_n - 1) / c.block_n;
  if (n_tiles > 65535 || params.groups * PlanSplit(c, run).split > 65535) {
    return absl::FailedPreconditionError("grid beyond 65535 in y or z");
  }
  if (PackedKPad(params) > kIntMax) return absl::FailedPreconditionError("reduction too long");
  return absl::OkStatus();
}

int64_t WorkspaceBytes(int config, const ConvProblem& problem) {
  const ConvProblem run = RunProblem(config, problem);
  int64_t bytes = 0;
  // The NHWC (or channel-padded, or space-to-depth NHWC) copy of the input.
  if (problem.input_layout == Layout::kNchw || RunsChannelPadded(config, problem) ||
      RunsSpaceToDepth(config, problem)) {
    bytes += Align256(run.input_bytes());
  }
  const TileConfig& c = kConfigTable[config];
  const SplitPlan split = PlanSplit(c, run);
  if (SplitSumOf(config, problem.params.dtype, split.split) == SplitSum::kWorkspace) {
    bytes += Align256(split.split * problem.gemm_m() * problem.params.out_channels * 4);
  }
  return bytes;
}

absl::Status LaunchConv(int config, const ConvProblem& problem, const DeviceWeights& weights,
                        const void* input, void* output, void* workspace, cudaStream_t stream) {
  const TileConfig& c = kConfigTable[config];
  const KernelHandle& h = GetKernel(config, problem.params.dtype);
  if (h.launch == nullptr) return absl::FailedPreconditionError("no kernel for the dtype");
  const ConvProblem run = RunProblem(config, problem);
  KernelParams p = RunParams(c, problem, run);
  char* scratch = static_cast<char*>(workspace);
  const void* gemm_weights = weights.gemm;
  if (RunsChannelPadded(config, problem)) {
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchPadChannels(
        DataTypeSize(problem.params.dtype), problem.batch, problem.params.in_channels,
        run.params.in_channels, problem.height * problem.width,
        problem.input_layout == Layout::kNchw, input, scratch, stream));
    input = scratch;
    scratch += Align256(run.input_bytes());
    gemm_weights = static_cast<const char*>(weights.gemm) + ChannelPaddedOffset(problem.params);
  } else if (RunsSpaceToDepth(config, problem)) {
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchSpaceToDepth(
        DataTypeSize(problem.params.dtype), problem.batch, SpaceToDepthOf(problem.params, &problem),
        problem.input_layout == Layout::kNchw, input, scratch, stream));
    input = scratch;
    scratch += Align256(run.input_bytes());
    gemm_weights = static_cast<const char*>(weights.gemm) + SpaceToDepthOffset(problem.params);
  } else if (problem.input_layout == Layout::kNchw) {
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchNchwToNhwc(
        DataTypeSize(problem.params.dtype), problem.batch, problem.params.in_channels,
        problem.height * problem.width, input, scratch, stream));
    input = scratch;
    scratch += Align256(problem.input_bytes());
  }
  if ((c.kind == KernelKind::kTensorOp || c.kind == KernelKind::kWgmmaTma) &&
      reinterpret_cast<uintptr_t>(input) % 16 != 0) {
    return absl::InvalidArgumentError("input must be 16-byte aligned");
  }
  p.input = input;
  p.weight = c.kind == KernelKind::kDepthwise ? weights.depthwise : gemm_weights;
  p.bias = weights.bias;
  p.output = output;
  const int vec = VectorWidth(problem.params.dtype);
  const SplitSum split_sum = SplitSumOf(config, problem.params.dtype, p.split_k);
  const bool workspace_split = split_sum == SplitSum::kWorkspace;
  p.cluster_split = split_sum == SplitSum::kCluster ? 1 : 0;
  p.vector_store = !p.output_nchw && !workspace_split && p.group_k % vec == 0 &&
                   p.out_channels % vec == 0 && reinterpret_cast<uintptr_t>(output) % 16 == 0;
  if (workspace_split) p.partials = reinterpret_cast<float*>(scratch);
  if (p.weight == nullptr) return absl::FailedPreconditionError("weights not packed for kind");
  CONVSERVE_CUDA_RETURN_IF_ERROR(h.launch(p, stream));
  if (workspace_split) {
    CONVSERVE_CUDA_RETURN_IF_ERROR(LaunchSplitKReduce(problem.params.dtype, p, stream));
  }
  return absl::OkStatus();
}

ConfigOccupancy QueryOccupancy(int config, const ConvProblem& problem) {
  ConfigOccupancy occ;
  occ.config = ConfigName(kConfigTable[config]);
  const KernelHandle& h = GetKernel(config, problem.params.dtype);
  if (h.func == nullptr) return occ;
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, h.func) != cudaSuccess) return occ;
  occ.registers_per_thread = attr.numRegs;
  occ.shared_bytes_per_block = static_cast<int>(attr.sharedSizeBytes) + h.smem_bytes;
  occ.spill_bytes = static_cast<int>(attr.localSizeBytes);
  occ.threads_per_block = h.threads;
  int blocks = 0;
  int device = 0;
  int max_threads = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, h.func, h.threads, h.smem_bytes) !=
          cudaSuccess ||
      cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&max_threads, cudaDevAttrMaxThreadsPerMultiProcessor, device) !=
          cudaSuccess ||
      max_threads == 0) {
    return occ;
  }
  occ.theoretical_occupancy = static_cast<double>(blocks * h.threads) / max_threads;
  return occ;
}

int HeuristicConfig(const ConvProblem& problem, const DeviceInfo& device) {
  const ConvParams& params = problem.params;
  double best_cost = std::numeric_limits<double>::infinity();
  int best = -1;
  bool vector_ok = false;
  for (int i = 0; i < kNumConfigs; ++i) {
    if (kConfigTable[i].kind == KernelKind::kTensorOp && RunsAsIs(i, problem) &&
        CanImplement(i, problem, device)) {
      vector_ok = true;
    }
  }
  for (int i = 0; i < kNumConfigs; ++i) {
    const TileConfig& c = kConfigTable[i];
    if (!CanImplement(i, problem, device)) continue;
    if (c.kind == KernelKind::kDepthwise) return i;  // memory-bound: the direct kernel wins
    if (c.kind == KernelKind::kFewChannels && vector_ok) continue;
    if (c.kind == KernelKind::kSimt && params.dtype == DataType::kFloat32 &&
        params.fp32_math == Fp32Math::kTf32 && vector_ok) {
      continue;
    }
    // Cost model: blocks run in waves of sm_count * resident blocks; each block's time grows
    // with its k tiles and shrinks with the tile's arithmetic intensity (bm*bn / (bm+bn)).
    const SplitPlan split = PlanSplit(c, RunProblem(i, problem));
    const double blocks = std::ceil(static_cast<double>(problem.gemm_m()) / c.block_m) *
                          std::ceil(static_cast<double>(problem.gemm_n()) / c.block_n) *
                          params.groups * split.split;
    const int resident =
        std::max(1, std::min(4, (device.max_smem_per_block + 1024) /
                                    std::max(1, GetKernel(i, params.dtype).smem_bytes + 1024)));
    const double slots = static_cast<double>(device.sm_count) * resident;
    const double waves = std::ceil(blocks / slots);
    const double intensity = static_cast<double>(c.block_m) * c.block_n / (c.block_m + c.block_n);
    const double tile_time = static_cast<double>(split.tiles_per_split) * c.block_m * c.block_n *
                             c.block_k / std::min(intensity, 64.0);
    double cost = waves * resident * tile_time;
    // wgmma tiles ran 1.3-1.7x faster than mma.sync tiles of the same shape on the H100
    // (bench/results/2026-11-24_h100_wgmma_v2_staged_epilogue).
    if (IsHopperKind(c.kind)) cost *= 0.65;
    if (SplitSumOf(i, params.dtype, split.split) == SplitSum::kWorkspace) {
      cost += static_cast<double>(split.split) * problem.gemm_m() * params.out_channels * 8.0 /
              device.sm_count;
    }
    if (cost < best_cost) {
      best_cost = cost;
      best = i;
    }
  }
  return best;
}

}  // namespace cuda
}  // namespace convserve
