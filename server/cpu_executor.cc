#include "server/cpu_executor.h"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/cpu_reference.h"

namespace convserve {
namespace {

// The host copy the reference reads: OIHW weights and the bias, exactly as loaded.
class HostWeights final : public DeviceWeights {
 public:
  HostWeights(std::string weights, std::string bias)
      : weights_(std::move(weights)), bias_(std::move(bias)) {}
  int64_t resident_bytes() const override {
    return static_cast<int64_t>(weights_.size() + bias_.size());
  }
  const std::string& weights() const { return weights_; }
  const void* bias() const { return bias_.empty() ? nullptr : bias_.data(); }

 private:
  std::string weights_;
  std::string bias_;
};

}  // namespace

CpuExecutor::CpuExecutor(int index, int threads, Metrics* metrics, bool numbered)
    : index_(index),
      threads_(threads > 0 ? threads : static_cast<int>(std::thread::hardware_concurrency())),
      metrics_(metrics),
      device_name_(absl::StrCat(numbered ? absl::StrCat("cpu:", index) : "cpu", " (reference, ",
                                threads_, " threads)")) {
  worker_ = std::thread([this] { WorkerLoop(); });
}

CpuExecutor::~CpuExecutor() { Shutdown(); }

absl::StatusOr<std::shared_ptr<const DeviceWeights>> CpuExecutor::PrepareWeights(
    const ConvParams& params, const std::string& weights, const std::string& bias) {
  return std::make_shared<HostWeights>(weights, bias);
}

void CpuExecutor::Execute(Batch batch) {
  absl::MutexLock lock(&mu_);
  pending_.emplace(std::move(batch));
}

absl::StatusOr<TuningResult> CpuExecutor::Tune(const ConvProblem& problem) {
  return absl::FailedPreconditionError(
      "auto-tuning needs a GPU; this server runs on the CPU reference backend");
}

void CpuExecutor::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (worker_.joinable()) worker_.join();
  answer_threads_.reset();
}

void CpuExecutor::WorkerLoop() {
  while (true) {
    std::optional<Batch> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](CpuExecutor* self) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return self->pending_.has_value() || self->stopping_;
          },
          this));
      if (!pending_.has_value()) return;  // stopping, nothing left
      batch = std::move(pending_);
      pending_.reset();
    }
    Run(*batch);
    slots_.Release();
  }
}

void CpuExecutor::Run(Batch& batch) {
  const auto& weights = static_cast<const HostWeights&>(*batch.layer->weights[index_]);
  const absl::Time start = absl::Now();
  // Merge along N: a lone request's input held in one aligned piece is used in place; otherwise
  // the pieces are concatenated (the reference reads elements through typed pointers).
  std::string merged;
  const std::vector<absl::string_view>& first = batch.requests.front().input.pieces();
  const char* input = first.empty() ? nullptr : first.front().data();
  if (batch.requests.size() > 1 || first.size() != 1 ||
      reinterpret_cast<uintptr_t>(input) % alignof(std::max_align_t) != 0) {
    merged.resize(static_cast<size_t>(batch.problem.input_bytes()));
    char* end = merged.data();
    for (const InferenceRequest& request : batch.requests) {
      end = request.input.CopyTo(
          end, [](char* dst, const char* src, size_t bytes) { std::memcpy(dst, src, bytes); });
    }
    input = merged.data();
  }
  std::string output(static_cast<size_t>(batch.problem.output_bytes()), '\0');
  const absl::Time staged_at = absl::Now();
  absl::Status status = ReferenceConv2d(batch.problem, input, weights.weights().data(),
                                        weights.bias(), output.data(), threads_);
  if (!status.ok()) {
    FailBatch(batch, absl::InternalError(absl::StrCat("cpu reference failed: ", status.message())),
              metrics_);
    return;
  }
  BatchRun run;
  run.device = device_name_;
  run.kernel_config = "cpu_reference";
  const absl::Time done_at = absl::Now();
  run.compute = done_at - start;
  run.kernel = run.compute;
  // No copies to issue: staging is the merge and the output buffer, wait the reference
  // convolution itself.
  run.staging = staged_at - start;
  run.wait = done_at - staged_at;
  CompleteBatch(batch, output.data(), run, metrics_, answer_threads_.get());
}

}  // namespace convserve
