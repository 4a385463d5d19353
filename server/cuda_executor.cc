#include "server/cuda_executor.h"

#include <cuda_runtime_api.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/device_copy.h"
#include "server/log.h"

namespace convserve {
namespace {

// The one place CUDA errors become Status: out-of-memory is RESOURCE_EXHAUSTED (retryable,
// the device is fine), anything else UNAVAILABLE (this device failed).
absl::Status CudaStatus(cudaError_t error, const std::string& device, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message = absl::StrCat(device, ": ", what, " failed: ", cudaGetErrorName(error),
                                           " (", cudaGetErrorString(error), ")");
  if (error == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::UnavailableError(message);
}

// A status from the conv library, its message prefixed with the device it came from.
absl::Status OnDevice(const std::string& device, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(device, ": ", status.message()));
}

// Copies a request's input into the pinned staging buffer, which only the GPU reads back. Plain
// memcpy stores a block this size (hundreds of KB, under glibc's non-temporal threshold) through
// the cache, so each line is first read from DRAM and later written back: on the H100 hosts that
// capped the merge at ~8.5 GB/s, 47 us of a lone 401 KB request's ~140 us in the server
// (bench/results/2026-12-06-stages-h100). Streaming stores write the lines without reading them
// and leave none dirty in a core's cache: 50 -> 28 us there (2026-12-06_loader_masks, run 2).
void CopyToStaging(char* dst, const char* src, size_t bytes) {
#if defined(__SSE2__)
  const size_t head = std::min(bytes, static_cast<size_t>(-reinterpret_cast<uintptr_t>(dst) & 15));
  std::memcpy(dst, src, head);
  dst += head;
  src += head;
  bytes -= head;
  const size_t vectors = bytes / 16;
  auto* out = reinterpret_cast<__m128i*>(dst);
  const auto* in = reinterpret_cast<const __m128i*>(src);
  size_t i = 0;
  for (; i + 4 <= vectors; i += 4) {
    const __m128i a = _mm_loadu_si128(in + i);
    const __m128i b = _mm_loadu_si128(in + i + 1);
    const __m128i c = _mm_loadu_si128(in + i + 2);
    const __m128i d = _mm_loadu_si128(in + i + 3);
    _mm_stream_si128(out + i, a);
    _mm_stream_si128(out + i + 1, b);
    _mm_stream_si128(out + i + 2, c);
    _mm_stream_si128(out + i + 3, d);
  }
  for (; i < vectors; ++i) _mm_stream_si128(out + i, _mm_loadu_si128(in + i));
  std::memcpy(dst + vectors * 16, src + vectors * 16, bytes - vectors * 16);
  // Streaming stores are weakly ordered: make them visible before the DMA is issued.
  _mm_sfence();
#else
  std::memcpy(dst, src, bytes);
#endif
}

// Device or pinned host memory that only grows, reused from batch to batch.
class GrowingBuffer {
 public:
  enum class Kind { kDevice, kPinnedHost };
  explicit GrowingBuffer(Kind kind) : kind_(kind) {}
  ~GrowingBuffer() { Free(); }
  GrowingBuffer(const GrowingBuffer&) = delete;
  GrowingBuffer& operator=(const GrowingBuffer&) = delete;

  // Makes room for `bytes`, growing by a quarter more to avoid creeping reallocations.
  cudaError_t Reserve(size_t bytes) {
    if (bytes <= capacity_) return cudaSuccess;
    Free();
    const size_t want = bytes + bytes / 4;
    cudaError_t error =
        kind_ == Kind::kDevice ? cudaMalloc(&data_, want) : cudaMallocHost(&data_, want);
    if (error != cudaSuccess) {
      data_ = nullptr;
      return error;
    }
    capacity_ = want;
    return cudaSuccess;
  }
  void* data() const { return data_; }

 private:
  void Free() {
    if (data_ == nullptr) return;
    if (kind_ == Kind::kDevice) {
      cudaFree(data_);
    } else {
      cudaFreeHost(data_);
    }
    data_ = nullptr;
    capacity_ = 0;
  }

  const Kind kind_;
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

// One copy of part of a batch: `bytes` at `device_offset` in the lane's device buffer, from or
// to `host`: pinned host memory (staging, a client's page-locked region) or another GPU's
// memory (a client's CUDA region there). The copies say cudaMemcpyDefault: unified addressing
// knows which. Tensors in this GPU's own memory go by CopyWithinDevice instead.
struct CopySegment {
  size_t device_offset;
  char* host;
  size_t bytes;
};

// Appends a copy, merged into the last one when it continues that on both sides (consecutive
// in-band tensors in staging are one copy, as a batch without shared memory always is).
void AddSegment(std::vector<CopySegment>& segments, size_t device_offset, char* host,
                size_t bytes) {
  if (!segments.empty()) {
    CopySegment& last = segments.back();
    if (last.device_offset + last.bytes == device_offset && last.host + last.bytes == host) {
      last.bytes += bytes;
      return;
    }
  }
  segments.push_back({device_offset, host, bytes});
}

// Issues `copies` between the lane's device buffer `device` and their other ends (to the device
// when `to_device`) as one cudaMemcpyBatchAsync: a cudaMemcpyAsync per tensor costs the host
// about 2.5 us each (page-locked host memory; 150 us for a batch of 30 both ways). When the
// batch call fails (a driver before CUDA 12.8, or copies it does not take), the copies go one
// cudaMemcpyAsync each, whose errors are the batch's; if those succeed, the batch call is not
// tried again. Copies the failed call may have issued are issued again: the same bytes.
cudaError_t IssueCopies(const std::vector<CopySegment>& copies, char* device, bool to_device,
                        cudaStream_t stream) {
  static std::atomic<bool> batch_call_refused{false};
  bool batch_call_failed = false;
  cudaError_t batch_error = cudaSuccess;
  if (copies.size() > 1 && !batch_call_refused.load(std::memory_order_relaxed)) {
    std::vector<void*> dsts;
    std::vector<const void*> srcs;
    std::vector<size_t> sizes;
    dsts.reserve(copies.size());
    srcs.reserve(copies.size());
    sizes.reserve(copies.size());
    for (const CopySegment& copy : copies) {
      char* device_side = device + copy.device_offset;
      dsts.push_back(to_device ? device_side : copy.host);
      srcs.push_back(to_device ? copy.host : device_side);
      sizes.push_back(copy.bytes);
    }
    cudaMemcpyAttributes attributes{};
    attributes.srcAccessOrder = cudaMemcpySrcAccessOrderStream;  // after the stream's earlier work
    size_t first_copy = 0;
    const cudaError_t error = cudaMemcpyBatchAsync(
        dsts.data(), srcs.data(), sizes.data(), copies.size(), &attributes, &first_copy, 1, stream);
    if (error == cudaSuccess) return error;
    cudaGetLastError();  // not sticky; the copies below tell whether anything is really wrong
    batch_call_failed = true;
    batch_error = error;
  }
  for (const CopySegment& copy : copies) {
    char* device_side = device + copy.device_offset;
    if (cudaError_t error = cudaMemcpyAsync(to_device ? device_side : copy.host,
                                            to_device ? copy.host : device_side, copy.bytes,
                                            cudaMemcpyDefault, stream);
        error != cudaSuccess) {
      return error;
    }
  }
  if (batch_call_failed && !batch_call_refused.exchange(true)) {
    LogWarning("cudaMemcpyBatchAsync failed (", cudaGetErrorName(batch_error),
               ") where one cudaMemcpyAsync per copy works; batches issue their copies one by "
               "one from now on");
  }
  return cudaSuccess;
}

// Page-locks clients' shared memory for the copy engines of every GPU (portable registration),
// so that a batch's copies read and write it directly.
class CudaHostMemoryPinner final : public HostMemoryPinner {
 public:
  explicit CudaHostMemoryPinner(int device) : device_(device) {}
  absl::Status Pin(void* data, size_t bytes, bool read_only) override {
    cudaSetDevice(device_);
    const unsigned flags = cudaHostRegisterPortable | (read_only ? cudaHostRegisterReadOnly : 0u);
    const cudaError_t error = cudaHostRegister(data, bytes, flags);
    if (error == cudaSuccess) return absl::OkStatus();
    cudaGetLastError();  // not sticky: clear it for the next call on this thread
    LogWarning("page-locking a shared-memory region (", bytes, " bytes",
               read_only ? ", read-only" : "", ") failed: ", cudaGetErrorName(error),
               "; the server reads and writes its tensors itself");
    return absl::FailedPreconditionError(cudaGetErrorString(error));
  }
  void Unpin(void* data) override {
    cudaSetDevice(device_);
    if (cudaHostUnregister(data) != cudaSuccess) cudaGetLastError();
  }

 private:
  const int device_;
};

// Opens CUDA IPC handles on the GPU they name. The allocation's size comes from the driver
// (cuMemGetAddressRange, found at run time so that the server never links libcuda): a region's
// range is checked against it, so that no copy reaches past the client's memory, which would
// fault the context and break the device for every client.
class CudaIpcMemoryImporter final : public CudaIpcImporter {
 public:
  absl::StatusOr<Opened> Open(absl::string_view handle, int device) override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || device >= devices) {
      cudaGetLastError();
      return absl::InvalidArgumentError(absl::StrCat(
          "cuda.device_id ", device, " names no CUDA device; the server sees ", devices));
    }
    if (cudaSetDevice(device) != cudaSuccess) {
      cudaGetLastError();
      return absl::InvalidArgumentError(absl::StrCat("CUDA device ", device, " cannot be used"));
    }
    cudaIpcMemHandle_t ipc_handle;
    static_assert(sizeof(ipc_handle) == kHandleBytes);
    std::memcpy(&ipc_handle, handle.data(), kHandleBytes);
    void* data = nullptr;
    if (cudaError_t error = cudaIpcOpenMemHandle(&data, ipc_handle, cudaIpcMemLazyEnablePeerAccess);
        error != cudaSuccess) {
      cudaGetLastError();  // not sticky: a bad handle must not poison later calls
      return absl::InvalidArgumentError(absl::StrCat(
          "cuda.ipc_handle does not open on device ", device, ": ", cudaGetErrorString(error),
          " (it must come from cudaIpcGetMemHandle in another live process)"));
    }
    absl::StatusOr<int64_t> bytes = AllocationBytes(data);
    if (!bytes.ok()) {
      Close(static_cast<char*>(data), device);
      return bytes.status();
    }
    return Opened{static_cast<char*>(data), *bytes};
  }

  void Close(char* data, int device) override {
    cudaSetDevice(device);
    if (cudaIpcCloseMemHandle(data) != cudaSuccess) cudaGetLastError();
  }

 private:
  using GetAddressRange = int (*)(unsigned long long* base, size_t* size,  // NOLINT(runtime/int)
                                  unsigned long long address);             // NOLINT(runtime/int)
  static absl::StatusOr<int64_t> AllocationBytes(void* data) {
    static GetAddressRange get_range = [] {
      void* fn = nullptr;
      cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
      if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault,
                                           &found) != cudaSuccess ||
          found != cudaDriverEntryPointSuccess) {
        cudaGetLastError();
        fn = nullptr;
      }
      return reinterpret_cast<GetAddressRange>(fn);
    }();
    if (get_range == nullptr) {
      return absl::UnavailableError("the CUDA driver has no cuMemGetAddressRange");
    }
    unsigned long long base = 0;  // NOLINT(runtime/int)
    size_t size = 0;
    if (get_range(&base, &size, reinterpret_cast<uintptr_t>(data)) != 0) {
      return absl::InvalidArgumentError("the driver knows no allocation at the opened handle");
    }
    return static_cast<int64_t>(size);
  }
};

class PackedDeviceWeights final : public DeviceWeights {
 public:
  explicit PackedDeviceWeights(std::shared_ptr<const PackedWeights> packed)
      : packed_(std::move(packed)) {}
  int64_t resident_bytes() const override { return packed_->resident_bytes(); }
  const PackedWeights& packed() const { return *packed_; }

 private:
  std::shared_ptr<const PackedWeights> packed_;
};

// One batch's device work after the input copy (kernel events, kernels, copy out), captured
// once as a CUDA graph and replayed with one launch. Valid for exactly the problem, plan, lane
// buffers (`key`) and weights object it was captured with.
struct LaneGraph {
  LaneGraph(std::string key, std::weak_ptr<const DeviceWeights> weights, cudaGraphExec_t exec)
      : key(std::move(key)), weights(std::move(weights)), exec(exec) {}
  ~LaneGraph() { cudaGraphExecDestroy(exec); }
  LaneGraph(const LaneGraph&) = delete;
  LaneGraph& operator=(const LaneGraph&) = delete;

  const std::string key;
  const std::weak_ptr<const DeviceWeights> weights;  // expired once the layer is gone
  const cudaGraphExec_t exec;
};

}  // namespace

class CudaExecutor::Lane {
 public:
  ~Lane() {
    if (thread.joinable()) thread.join();
    graphs.clear();
    for (cudaEvent_t event : {start, kernel_start, kernel_end, end}) {
      if (event != nullptr) cudaEventDestroy(event);
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t kernel_start = nullptr;
  cudaEvent_t kernel_end = nullptr;
  cudaEvent_t end = nullptr;
  GrowingBuffer host_input{GrowingBuffer::Kind::kPinnedHost};
  GrowingBuffer host_output{GrowingBuffer::Kind::kPinnedHost};
  GrowingBuffer device_input{GrowingBuffer::Kind::kDevice};
  GrowingBuffer device_output{GrowingBuffer::Kind::kDevice};
  GrowingBuffer workspace{GrowingBuffer::Kind::kDevice};
  // Captured graphs, most recently used first; only the thread holding the lane touches them.
  // Enough for every batch size up to the default maximum (32) of two configurations: with 16,
  // the mixed sizes at concurrency 64 kept evicting and re-capturing (enqueue +30 us a batch).
  static constexpr size_t kMaxGraphs = 64;
  std::vector<std::unique_ptr<LaneGraph>> graphs;
  // Hand-over state, guarded by the executor's lanes_mu_: `busy` from Execute() taking the lane
  // until FreeLane(); `pending` once its batch is launched, until the lane thread takes it.
  struct Launched {
    Batch batch;
    ConvLaunch launch;
    BatchRun run;          // staging and enqueue times so far
    absl::Time issued_at;  // the last device work issued
  };
  bool busy = false;
  std::optional<Launched> pending;
  std::thread thread;
};

absl::StatusOr<std::unique_ptr<Executor>> CudaExecutor::Create(
    int index, int device, std::unique_ptr<ConvEngine> engine, Metrics* metrics,
    absl::Duration occupancy_sample_interval, bool cuda_graphs, int lanes) {
  if (lanes < 1) return absl::InvalidArgumentError(absl::StrCat(lanes, " executor lanes"));
  std::unique_ptr<CudaExecutor> executor(
      new CudaExecutor(index, device, std::move(engine), metrics, cuda_graphs, lanes));
  const std::string& name = executor->device_name_;
  if (absl::Status s = CudaStatus(cudaSetDevice(device), name, "cudaSetDevice"); !s.ok()) {
    return s;
  }
  for (int i = 0; i < lanes; ++i) {
    auto lane = std::make_unique<Lane>();
    if (absl::Status s = CudaStatus(cudaStreamCreateWithFlags(&lane->stream, cudaStreamNonBlocking),
                                    name, "cudaStreamCreate");
        !s.ok()) {
      return s;
    }
    for (cudaEvent_t* event : {&lane->start, &lane->kernel_start, &lane->kernel_end, &lane->end}) {
      if (absl::Status s = CudaStatus(cudaEventCreate(event), name, "cudaEventCreate"); !s.ok()) {
        return s;
      }
    }
    executor->lanes_.push_back(std::move(lane));
  }
  if (occupancy_sample_interval > absl::ZeroDuration()) {
    OccupancySamplerOptions sampler_options;
    sampler_options.device = device;
    sampler_options.interval = occupancy_sample_interval;
    sampler_options.device_label = name;
    sampler_options.metrics = metrics;
    sampler_options.log = [](bool warning, std::string_view line) {
      warning ? LogWarning(std::string(line)) : LogInfo(std::string(line));
    };
    executor->sampler_ = OccupancySampler::Create(std::move(sampler_options));
  }
  for (auto& lane : executor->lanes_) {
    Lane* raw = lane.get();
    CudaExecutor* self = executor.get();
    lane->thread = std::thread([self, raw] { self->LaneLoop(*raw); });
  }
  return std::unique_ptr<Executor>(std::move(executor));
}

CudaExecutor::CudaExecutor(int index, int device, std::unique_ptr<ConvEngine> engine,
                           Metrics* metrics, bool cuda_graphs, int lanes)
    : index_(index),
      device_(device),
      engine_(std::move(engine)),
      metrics_(metrics),
      device_name_(engine_->device_name()),
      slots_(lanes),
      cuda_graphs_(cuda_graphs) {}

CudaExecutor::~CudaExecutor() {
  Shutdown();
  // The lanes' streams, events and buffers are destroyed after this body, on this thread: make
  // this executor's device current, which with several GPUs may not be the one last selected.
  cudaSetDevice(device_);
}

absl::StatusOr<std::shared_ptr<const DeviceWeights>> CudaExecutor::PrepareWeights(
    const ConvParams& params, const std::string& weights, const std::string& bias) {
  absl::StatusOr<std::shared_ptr<const PackedWeights>> packed =
      engine_->PackWeights(params, weights.data(), bias.empty() ? nullptr : bias.data());
  if (!packed.ok()) return packed.status();
  if (metrics_ != nullptr) {
    metrics_->SetDeviceMemory(device_name_, engine_->device_memory_used(),
                              engine_->device_memory_total());
  }
  return std::make_shared<PackedDeviceWeights>(*std::move(packed));
}

void CudaExecutor::Execute(Batch batch) {
  const absl::Time taken_at = absl::Now();
  Lane* lane = nullptr;
  {
    absl::MutexLock lock(&lanes_mu_);
    for (auto& candidate : lanes_) {
      if (!candidate->busy) {
        candidate->busy = true;
        lane = candidate.get();
        break;
      }
    }
  }
  if (lane == nullptr) {
    // Unreachable while callers hold a slot per batch (slots == lanes).
    LogError(device_name_, ": Execute without a free lane");
    FailBatch(batch, absl::InternalError("no free executor lane"), metrics_);
    return;
  }
  // The caller may be any thread (a gRPC thread for a lone request, a batcher's scheduler).
  cudaSetDevice(device_);
  ConvLaunch launch;
  BatchRun run;
  if (!LaunchOnLane(*lane, batch, taken_at, launch, run)) {
    FreeLane(*lane);
    return;
  }
  const absl::Time issued_at = taken_at + run.staging + run.enqueue;
  absl::MutexLock lock(&lanes_mu_);
  lane->pending.emplace(
      Lane::Launched{std::move(batch), std::move(launch), std::move(run), issued_at});
}

void CudaExecutor::FreeLane(Lane& lane) {
  {
    absl::MutexLock lock(&lanes_mu_);
    lane.busy = false;
  }
  slots_.Release();
}

absl::StatusOr<TuningResult> CudaExecutor::Tune(const ConvProblem& problem) {
  absl::StatusOr<TuningResult> result = engine_->Tune(problem);
  if (metrics_ != nullptr) {
    const TunerCounters counters = engine_->tuner_counters();
    metrics_->SetTunerCounters(device_name_, counters.runs, counters.cache_hits,
                               counters.cache_misses, counters.seconds);
  }
  return result;
}

std::vector<TuningResult> CudaExecutor::TunedFor(const ConvParams& params) const {
  return engine_->TunedFor(params);
}

std::shared_ptr<HostMemoryPinner> CudaExecutor::MakeHostMemoryPinner() const {
  return std::make_shared<CudaHostMemoryPinner>(device_);
}

std::shared_ptr<CudaIpcImporter> CudaExecutor::MakeCudaIpcImporter() const {
  return std::make_shared<CudaIpcMemoryImporter>();
}

void CudaExecutor::Shutdown() {
  {
    absl::MutexLock lock(&lanes_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  for (auto& lane : lanes_) {
    if (lane->thread.joinable()) lane->thread.join();
  }
  answer_threads_.reset();
}

void CudaExecutor::LaneLoop(Lane& lane) {
  cudaSetDevice(device_);
  while (true) {
    std::optional<Lane::Launched> launched;
    {
      absl::MutexLock lock(&lanes_mu_);
      // A busy lane without a pending batch is being launched by Execute(): wait for it even
      // when stopping, so a launched batch is always answered.
      auto has_work = [this, &lane]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(lanes_mu_) {
        return lane.pending.has_value() || (stopping_ && !lane.busy);
      };
      lanes_mu_.Await(absl::Condition(&has_work));
      if (!lane.pending.has_value()) return;
      launched = std::move(lane.pending);
      lane.pending.reset();
    }
    FinishOnLane(lane, launched->batch, launched->launch, launched->run, launched->issued_at);
    FreeLane(lane);
  }
}

void CudaExecutor::NoteError(int cuda_error) {
  if (cuda_error == cudaErrorMemoryAllocation) return;
  if (!broken_.exchange(true)) {
    LogError(
        device_name_, " is broken after ", cudaGetErrorName(static_cast<cudaError_t>(cuda_error)),
        "; it gets no more batches while another device is healthy (NOT_SERVING when none is)");
  }
}

bool CudaExecutor::LaunchOnLane(Lane& lane, Batch& batch, absl::Time taken_at, ConvLaunch& planned,
                                BatchRun& run) {
  const ConvProblem& problem = batch.problem;
  if (broken_.load()) {
    FailBatch(
        batch,
        absl::UnavailableError(absl::StrCat(device_name_, " failed earlier; restart the server")),
        metrics_);
    return false;
  }
  absl::StatusOr<ConvLaunch> launch = engine_->Plan(problem);
  if (!launch.ok()) {
    FailBatch(batch, launch.status(), metrics_);
    return false;
  }
  const size_t input_bytes = static_cast<size_t>(problem.input_bytes());
  const size_t output_bytes = static_cast<size_t>(problem.output_bytes());
  // Every step checks its CUDA call; the first failure fails this batch only, once the copies
  // already issued have finished (they may read or write the requests' shared memory).
  auto fail = [&](cudaError_t error, const char* what) {
    NoteError(error);
    cudaStreamSynchronize(lane.stream);
    FailBatch(batch, CudaStatus(error, device_name_, what), metrics_);
    return false;
  };
  cudaError_t error = lane.host_input.Reserve(input_bytes);
  if (error != cudaSuccess) return fail(error, "cudaMallocHost (input staging)");
  if ((error = lane.host_output.Reserve(output_bytes)) != cudaSuccess) {
    return fail(error, "cudaMallocHost (output staging)");
  }
  if ((error = lane.device_input.Reserve(input_bytes)) != cudaSuccess) {
    return fail(error, "cudaMalloc (input)");
  }
  if ((error = lane.device_output.Reserve(output_bytes)) != cudaSuccess) {
    return fail(error, "cudaMalloc (output)");
  }
  if (launch->workspace_bytes > 0 &&
      (error = lane.workspace.Reserve(static_cast<size_t>(launch->workspace_bytes))) !=
          cudaSuccess) {
    return fail(error, "cudaMalloc (workspace)");
  }
  // Merge along N: in-band inputs into the pinned staging buffer, each at its place in the
  // batch; inputs the copy engines reach (a client's shared memory) go to the device from there,
  // and those already in this GPU's memory in one kernel launch for all (device_copy.h).
  std::vector<CopySegment> copies_in;
  std::vector<DeviceCopy> device_copies_in;
  char* staging = static_cast<char*>(lane.host_input.data());
  char* device_input = static_cast<char*>(lane.device_input.data());
  size_t offset = 0;
  for (const InferenceRequest& request : batch.requests) {
    const TensorBytes& input = request.input;
    if (input.for_copy_engine() && input.copy_engine_device() == device_) {
      device_copies_in.push_back({device_input + offset, input.copy_engine_data(), input.size()});
    } else if (input.for_copy_engine()) {
      AddSegment(copies_in, offset, const_cast<char*>(input.copy_engine_data()), input.size());
    } else {
      input.CopyTo(staging + offset, CopyToStaging);
      AddSegment(copies_in, offset, staging + offset, input.size());
    }
    offset += input.size();
  }
  const absl::Time staged_at = absl::Now();
  run.staging = staged_at - taken_at;
  if ((error = cudaEventRecord(lane.start, lane.stream)) != cudaSuccess) {
    return fail(error, "cudaEventRecord");
  }
  if ((error = IssueCopies(copies_in, device_input, /*to_device=*/true, lane.stream)) !=
      cudaSuccess) {
    return fail(error, "copying the inputs to the device");
  }
  if (!device_copies_in.empty()) {
    if (absl::Status copied = CopyWithinDevice(device_copies_in, lane.stream); !copied.ok()) {
      cudaStreamSynchronize(lane.stream);
      FailBatch(batch, OnDevice(device_name_, copied), metrics_);
      return false;
    }
  }
  const bool split_copy_out =
      std::any_of(batch.requests.begin(), batch.requests.end(), [](const InferenceRequest& r) {
        return r.output_sink != nullptr && r.output_sink->copy_engine_destination() != nullptr;
      });
  // Now and then the occupancy sampler measures this launch (see SampledLaunch). A sampled
  // launch is issued call by call, so that its profiling range holds the kernels alone.
  SampledLaunch sample(sampler_.get(), &launch_mu_, launch->config_name, lane.stream);
  absl::Status issued;
  if (sample.sampling() || !cuda_graphs_ || !Capturable(launch->config_name)) {
    issued = IssueKernels(lane, batch, *launch, /*capturing=*/false);
    // Waits for the stream only when this launch was sampled.
    if (absl::StatusOr<double> achieved = sample.Finish(); achieved.ok() && metrics_ != nullptr) {
      metrics_->SetOccupancy(device_name_, launch->config_name,
                             engine_->Occupancy(problem, *launch).theoretical_occupancy, *achieved);
    }
    if (issued.ok()) {
      issued = split_copy_out ? IssueSplitCopyOut(lane, batch) : IssueCopyOut(lane, batch);
    }
  } else {
    issued = IssueAsGraph(lane, batch, *launch, /*copy_out=*/!split_copy_out);
    if (issued.ok() && split_copy_out) issued = IssueSplitCopyOut(lane, batch);
  }
  if (!issued.ok()) {
    // A launch error may have poisoned the context; the next sync tells.
    const cudaError_t sticky = cudaStreamSynchronize(lane.stream);
    if (sticky != cudaSuccess) NoteError(sticky);
    FailBatch(batch, issued, metrics_);
    return false;
  }
  if ((error = cudaEventRecord(lane.end, lane.stream)) != cudaSuccess) {
    return fail(error, "cudaEventRecord");
  }
  run.enqueue = absl::Now() - staged_at;
  planned = *std::move(launch);
  return true;
}

absl::Status CudaExecutor::IssueKernels(Lane& lane, const Batch& batch, const ConvLaunch& launch,
                                        bool capturing) {
  // Inside a capture the kernel events become event-record nodes of the graph.
  auto record = [&](cudaEvent_t event) {
    return capturing ? cudaEventRecordWithFlags(event, lane.stream, cudaEventRecordExternal)
                     : cudaEventRecord(event, lane.stream);
  };
  if (cudaError_t error = record(lane.kernel_start); error != cudaSuccess) {
    return CudaStatus(error, device_name_, "cudaEventRecord");
  }
  const auto& weights =
      static_cast<const PackedDeviceWeights&>(*batch.layer->weights[index_]).packed();
  absl::Status ran = engine_->Run(batch.problem, launch, weights, lane.device_input.data(),
                                  lane.device_output.data(), lane.workspace.data(), lane.stream);
  if (!ran.ok()) return OnDevice(device_name_, ran);
  if (cudaError_t error = record(lane.kernel_end); error != cudaSuccess) {
    return CudaStatus(error, device_name_, "cudaEventRecord");
  }
  return absl::OkStatus();
}

absl::Status CudaExecutor::IssueCopyOut(Lane& lane, const Batch& batch) {
  return CudaStatus(cudaMemcpyAsync(lane.host_output.data(), lane.device_output.data(),
                                    static_cast<size_t>(batch.problem.output_bytes()),
                                    cudaMemcpyDeviceToHost, lane.stream),
                    device_name_, "cudaMemcpyAsync (output)");
}

absl::Status CudaExecutor::IssueSplitCopyOut(Lane& lane, Batch& batch) {
  const size_t sample_bytes =
      static_cast<size_t>(batch.problem.output_bytes() / batch.problem.batch);
  char* staging = static_cast<char*>(lane.host_output.data());
  char* device_output = static_cast<char*>(lane.device_output.data());
  std::vector<CopySegment> copies;
  std::vector<DeviceCopy> device_copies;
  size_t offset = 0;
  for (InferenceRequest& request : batch.requests) {
    const size_t bytes = static_cast<size_t>(request.shape[0]) * sample_bytes;
    OutputSink* sink = request.output_sink.get();
    char* destination = sink == nullptr ? nullptr : sink->copy_engine_destination();
    if (destination != nullptr && sink->copy_engine_device() == device_) {
      device_copies.push_back({destination, device_output + offset, bytes});
    } else {
      AddSegment(copies, offset, destination != nullptr ? destination : staging + offset, bytes);
    }
    request.output_delivered = destination != nullptr;
    offset += bytes;
  }
  if (cudaError_t error = IssueCopies(copies, device_output,
                                      /*to_device=*/false, lane.stream);
      error != cudaSuccess) {
    return CudaStatus(error, device_name_, "copying the outputs from the device");
  }
  if (device_copies.empty()) return absl::OkStatus();
  return OnDevice(device_name_, CopyWithinDevice(device_copies, lane.stream));
}

absl::Status CudaExecutor::IssueAsGraph(Lane& lane, const Batch& batch, const ConvLaunch& launch,
                                        bool copy_out) {
  const std::shared_ptr<const DeviceWeights>& weights = batch.layer->weights[index_];
  // Everything a replay bakes in: the problem, the plan and the lane's buffers (which only grow,
  // so a buffer at the same address is at least as large).
  const std::string key =
      absl::StrCat(batch.problem.ToString(), "|", launch.config_index, "|", launch.workspace_bytes,
                   "|", reinterpret_cast<uintptr_t>(lane.device_input.data()), "|",
                   reinterpret_cast<uintptr_t>(lane.device_output.data()), "|",
                   reinterpret_cast<uintptr_t>(lane.workspace.data()), "|",
                   reinterpret_cast<uintptr_t>(lane.host_output.data()), "|", copy_out);
  auto found = std::find_if(lane.graphs.begin(), lane.graphs.end(), [&](const auto& graph) {
    return graph->key == key && graph->weights.lock() == weights;
  });
  if (found != lane.graphs.end()) {
    std::rotate(lane.graphs.begin(), found, found + 1);
  } else {
    cudaError_t error = cudaStreamBeginCapture(lane.stream, cudaStreamCaptureModeThreadLocal);
    absl::Status issued;
    cudaGraph_t graph = nullptr;
    if (error == cudaSuccess) {
      issued = IssueKernels(lane, batch, launch, /*capturing=*/true);
      if (issued.ok() && copy_out) issued = IssueCopyOut(lane, batch);
      error = cudaStreamEndCapture(lane.stream, &graph);
    }
    cudaGraphExec_t exec = nullptr;
    if (issued.ok() && error == cudaSuccess) error = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!issued.ok() || error != cudaSuccess) {
      // Issue the batch directly (clearing the capture's non-sticky error first): a real error
      // fails there too and fails the batch; if it succeeds, capture itself was the problem
      // and this configuration is issued call by call from now on.
      cudaGetLastError();
      absl::Status direct = IssueKernels(lane, batch, launch, /*capturing=*/false);
      if (direct.ok() && copy_out) direct = IssueCopyOut(lane, batch);
      if (direct.ok()) {
        absl::MutexLock lock(&uncapturable_mu_);
        if (uncapturable_.insert(launch.config_name).second) {
          LogWarning(device_name_, ": CUDA graph capture of ", launch.config_name, " failed (",
                     issued.ok() ? cudaGetErrorName(error) : issued.ToString(),
                     "); its batches are issued call by call from now on");
        }
      }
      return direct;
    }
    if (lane.graphs.size() >= Lane::kMaxGraphs) lane.graphs.pop_back();
    lane.graphs.insert(lane.graphs.begin(), std::make_unique<LaneGraph>(key, weights, exec));
  }
  return CudaStatus(cudaGraphLaunch(lane.graphs.front()->exec, lane.stream), device_name_,
                    "cudaGraphLaunch");
}

bool CudaExecutor::Capturable(const std::string& kernel_config) {
  absl::MutexLock lock(&uncapturable_mu_);
  return !uncapturable_.contains(kernel_config);
}

void CudaExecutor::FinishOnLane(Lane& lane, Batch& batch, const ConvLaunch& launch, BatchRun& run,
                                absl::Time issued_at) {
  if (const cudaError_t error = cudaEventSynchronize(lane.end); error != cudaSuccess) {
    NoteError(error);
    FailBatch(batch, CudaStatus(error, device_name_, "the batch (copies and kernel)"), metrics_);
    return;
  }
  run.wait = absl::Now() - issued_at;
  float compute_ms = 0;
  float kernel_ms = 0;
  cudaEventElapsedTime(&compute_ms, lane.start, lane.end);
  cudaEventElapsedTime(&kernel_ms, lane.kernel_start, lane.kernel_end);
  run.device = device_name_;
  run.kernel_config = launch.config_name;
  run.compute = absl::Microseconds(static_cast<double>(compute_ms) * 1000.0);
  run.kernel = absl::Microseconds(static_cast<double>(kernel_ms) * 1000.0);
  CompleteBatch(batch, static_cast<const char*>(lane.host_output.data()), run, metrics_,
                answer_threads_.get());
  PublishDeviceMetrics(batch.problem, launch);
}

void CudaExecutor::PublishDeviceMetrics(const ConvProblem& problem, const ConvLaunch& launch) {
  if (metrics_ == nullptr) return;
  bool publish_device = false;
  bool publish_occupancy = false;
  {
    absl::MutexLock lock(&metrics_mu_);
    const absl::Time now = absl::Now();
    if (now - last_device_metrics_ >= absl::Seconds(1)) {
      last_device_metrics_ = now;
      publish_device = true;
    }
    if (std::find(occupancy_published_.begin(), occupancy_published_.end(), launch.config_name) ==
        occupancy_published_.end()) {
      occupancy_published_.push_back(launch.config_name);
      publish_occupancy = true;
    }
  }
  if (publish_device) {
    metrics_->SetDeviceMemory(device_name_, engine_->device_memory_used(),
                              engine_->device_memory_total());
    const TunerCounters counters = engine_->tuner_counters();
    metrics_->SetTunerCounters(device_name_, counters.runs, counters.cache_hits,
                               counters.cache_misses, counters.seconds);
  }
  if (publish_occupancy) {
    const ConfigOccupancy occupancy = engine_->Occupancy(problem, launch);
    metrics_->SetOccupancy(device_name_, launch.config_name, occupancy.theoretical_occupancy, -1.0);
  }
}

}  // namespace convserve
