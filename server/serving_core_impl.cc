#include "server/serving_core_impl.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "server/batch.h"
#include "server/layer_spec.h"
#include "server/log.h"

namespace convserve {

namespace {

const char* const kDimNames[4] = {"N", "C", "H", "W"};

v1::TunedChoice ToTunedChoice(const TuningResult& result) {
  v1::TunedChoice choice;
  choice.set_batch_bucket(static_cast<int32_t>(result.problem.batch));
  choice.mutable_input_size()->set_h(result.problem.height);
  choice.mutable_input_size()->set_w(result.problem.width);
  choice.set_input_layout(LayoutToProto(result.problem.input_layout));
  choice.set_output_layout(LayoutToProto(result.problem.output_layout));
  choice.set_config(result.config);
  choice.set_time_us(result.time_us);
  choice.set_runner_up(result.runner_up);
  choice.set_runner_up_time_us(result.runner_up_time_us);
  return choice;
}

}  // namespace

ServingCoreImpl::ServingCoreImpl(const ServerOptions& options,
                                 std::vector<std::unique_ptr<Executor>> executors, Metrics* metrics)
    : options_(options),
      executors_(std::move(executors)),
      metrics_(metrics),
      budget_(std::make_shared<ResidentBudget>(options.max_resident_bytes)) {
  for (const auto& executor : executors_) {
    executor->set_slot_signal(&slot_signal_);
    executor_ptrs_.push_back(executor.get());
  }
}

ServingCoreImpl::~ServingCoreImpl() { Shutdown(); }

void ServingCoreImpl::set_health_callback(HealthCallback callback) {
  absl::MutexLock lock(&health_mu_);
  health_callback_ = std::move(callback);
}

void ServingCoreImpl::NotifyHealth(const std::string& service, bool serving) {
  absl::MutexLock lock(&health_mu_);
  if (health_callback_) health_callback_(service, serving);
}

bool ServingCoreImpl::ready() const {
  if (shutting_down_.load()) return false;
  for (const auto& executor : executors_) {
    if (executor->healthy()) return true;
  }
  return false;
}

void ServingCoreImpl::Reject(InferenceRequest& request, RejectReason reason, absl::Status status) {
  if (metrics_ != nullptr) metrics_->Rejected(request.layer, reason);
  AnswerRequest(request, std::move(status), metrics_);
}

absl::Status ServingCoreImpl::Validate(const InferenceRequest& request,
                                       const LoadedLayer& layer) const {
  const ConvParams& params = layer.params;
  if (request.dtype != params.dtype) {
    return absl::InvalidArgumentError(absl::StrCat("input.dtype is ", DataTypeName(request.dtype),
                                                   " but layer '", layer.name, "' takes ",
                                                   DataTypeName(params.dtype)));
  }
  for (int i = 0; i < 4; ++i) {
    if (request.shape[i] <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("input.shape[", i, "] (", kDimNames[i],
                                                     ") must be positive, got ", request.shape[i]));
    }
  }
  if (request.shape[1] != params.in_channels) {
    return absl::InvalidArgumentError(absl::StrCat("input.shape[1] (C) is ", request.shape[1],
                                                   " but layer '", layer.name, "' has in_channels ",
                                                   params.in_channels));
  }
  ConvProblem problem;
  problem.params = params;
  problem.batch = request.shape[0];
  problem.height = request.shape[2];
  problem.width = request.shape[3];
  problem.input_layout = request.input_layout;
  problem.output_layout = request.output_layout;
  if (absl::Status s = ValidateProblem(problem); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("input.shape: ", s.message()));
  }
  if (problem.input_bytes() > options_.max_input_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("input is ", problem.input_bytes(), " bytes, over the server's limit of ",
                     options_.max_input_bytes, " bytes per request (--max_input_bytes)"));
  }
  if (request.output_sink != nullptr) {
    const int64_t needed = problem.output_bytes();
    if (request.output_sink->capacity() < needed) {
      return absl::InvalidArgumentError(absl::StrCat(
          request.output_sink->Describe(), " is too small: the output is ", needed, " bytes"));
    }
  } else if (problem.output_bytes() > options_.max_message_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "output would be ", problem.output_bytes(), " bytes, over the server's message limit of ",
        options_.max_message_bytes, " bytes (--max_message_bytes)"));
  }
  if (static_cast<int64_t>(request.input.size()) != problem.input_bytes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        request.input_field, " has ", request.input.size(), " bytes but shape [", request.shape[0],
        ", ", request.shape[1], ", ", request.shape[2], ", ", request.shape[3], "] of ",
        DataTypeName(params.dtype), " needs ", problem.input_bytes()));
  }
  return absl::OkStatus();
}

void ServingCoreImpl::Submit(InferenceRequest request) {
  if (shutting_down_.load()) {
    Reject(request, RejectReason::kShuttingDown,
           absl::UnavailableError("the server is shutting down"));
    return;
  }
  if (absl::Status s = ValidateLayerName(request.layer, "layer"); !s.ok()) {
    Reject(request, RejectReason::kInvalid, std::move(s));
    return;
  }
  // A lookup can race with a replace: the old batcher then refuses (draining) and the request
  // goes to the new generation instead.
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::shared_ptr<LayerEntry> entry = store_.Find(request.layer);
    if (entry == nullptr) {
      Reject(request, RejectReason::kNotFound,
             absl::NotFoundError(absl::StrCat("layer '", request.layer, "' is not loaded")));
      return;
    }
    if (absl::Status s = Validate(request, *entry->layer); !s.ok()) {
      Reject(request,
             s.code() == absl::StatusCode::kResourceExhausted ? RejectReason::kTooLarge
                                                              : RejectReason::kInvalid,
             std::move(s));
      return;
    }
    if (request.deadline <= absl::Now()) {
      if (metrics_ != nullptr) metrics_->Expired(request.layer);
      AnswerRequest(request, absl::DeadlineExceededError("the deadline passed before queueing"),
                    metrics_);
      return;
    }
    absl::Status queued = entry->batcher->Enqueue(request);
    if (queued.ok()) return;
    if (queued.code() == absl::StatusCode::kResourceExhausted) {
      Reject(request, RejectReason::kQueueFull, std::move(queued));
      return;
    }
    if (attempt == 1) {
      Reject(request, RejectReason::kShuttingDown, std::move(queued));
      return;
    }
  }
}

absl::StatusOr<v1::LayerInfo> ServingCoreImpl::LoadLayer(const v1::LoadLayerRequest& request) {
  if (shutting_down_.load()) return absl::UnavailableError("the server is shutting down");
  const v1::LayerSpec& spec = request.spec();
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  if (!params.ok()) return params.status();
  absl::StatusOr<BatchingConfig> batching = BatchingFromSpec(spec, options_.batching);
  if (!batching.ok()) return batching.status();
  const int64_t weight_bytes = params->weight_bytes();
  const int64_t bias_bytes = params->bias_bytes();
  if (static_cast<int64_t>(request.weights().size()) != weight_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weights has ", request.weights().size(), " bytes but [", params->out_channels, ", ",
        params->in_channels / params->groups, ", ", params->kernel_h, ", ", params->kernel_w,
        "] OIHW of ", DataTypeName(params->dtype), " needs ", weight_bytes));
  }
  if (!params->has_bias && !request.bias().empty()) {
    return absl::InvalidArgumentError("bias is set but spec.has_bias is false");
  }
  if (static_cast<int64_t>(request.bias().size()) != bias_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("bias has ", request.bias().size(), " bytes but [", params->out_channels,
                     "] of ", DataTypeName(params->dtype), " needs ", bias_bytes));
  }
  if (weight_bytes + bias_bytes > options_.max_layer_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("layer '", spec.name(), "' has ", weight_bytes + bias_bytes,
                     " weight bytes, over the per-layer limit of ", options_.max_layer_bytes,
                     " (--max_layer_bytes)"));
  }

  absl::MutexLock load_lock(&load_mu_);
  ReapRetired();
  const int64_t reserve = (weight_bytes + bias_bytes) * static_cast<int64_t>(executors_.size());
  if (absl::Status s = budget_->Reserve(reserve, spec.name()); !s.ok()) return s;
  auto layer = std::make_shared<LoadedLayer>();
  layer->reservation = std::make_unique<BudgetReservation>(budget_, reserve);
  layer->name = spec.name();
  layer->spec = spec;
  layer->params = *params;
  layer->batching = *batching;
  for (const auto& executor : executors_) {
    if (!executor->healthy() && ready()) {  // ready: another executor is healthy
      // A broken device gets no batches while another is healthy: no weights for it either.
      LogWarning("loading layer '", spec.name(), "': skipping ", executor->device_name(),
                 ", which is broken");
      layer->weights.push_back(nullptr);
      continue;
    }
    absl::StatusOr<std::shared_ptr<const DeviceWeights>> weights =
        executor->PrepareWeights(*params, request.weights(), request.bias());
    if (!weights.ok()) {
      return absl::Status(weights.status().code(),
                          absl::StrCat("loading layer '", spec.name(), "' on ",
                                       executor->device_name(), ": ", weights.status().message()));
    }
    layer->resident_bytes += (*weights)->resident_bytes();
    if (metrics_ != nullptr) {
      metrics_->SetLayerResidentBytes(layer->name, executor->device_name(),
                                      (*weights)->resident_bytes());
    }
    layer->weights.push_back(*std::move(weights));
  }
  layer->generation = next_generation_.fetch_add(1);

  auto entry = std::make_shared<LayerEntry>();
  entry->layer = layer;
  entry->batcher = std::make_unique<Batcher>(layer, executor_ptrs_, metrics_, &slot_signal_,
                                             DepthGaugeFor(layer->name));
  const bool needs_warmup = on_gpu() && spec.warmup_batch_sizes_size() > 0;
  entry->ready = !needs_warmup;
  entry->warmup_done = !needs_warmup;
  std::shared_ptr<LayerEntry> old = store_.Put(entry);
  if (old != nullptr) Retire(std::move(old));
  NotifyHealth(layer->name, entry->ready.load());
  if (needs_warmup) StartWarmup(entry);
  std::vector<std::string> devices;
  for (const auto& executor : executors_) devices.push_back(executor->device_name());
  LogInfo("loaded layer '", layer->name, "' generation ", layer->generation, " (",
          layer->resident_bytes, " resident bytes on ", absl::StrJoin(devices, ", "), ")",
          needs_warmup ? ", warming up" : "");
  return InfoFor(*entry);
}

std::shared_ptr<QueueDepthGauge> ServingCoreImpl::DepthGaugeFor(const std::string& name) {
  absl::erase_if(depth_gauges_, [](const auto& entry) { return entry.second.expired(); });
  std::weak_ptr<QueueDepthGauge>& slot = depth_gauges_[name];
  std::shared_ptr<QueueDepthGauge> gauge = slot.lock();
  if (gauge == nullptr) {
    gauge = std::make_shared<QueueDepthGauge>(name, metrics_);
    slot = gauge;
  }
  return gauge;
}

void ServingCoreImpl::StartWarmup(const std::shared_ptr<LayerEntry>& entry) {
  std::weak_ptr<LayerEntry> weak = entry;
  entry->warmup = std::thread([this, weak, layer = entry->layer] {
    const v1::LayerSpec& spec = layer->spec;
    for (Executor* executor : executor_ptrs_) {
      if (!executor->healthy()) continue;
      for (int batch : spec.warmup_batch_sizes()) {
        if (shutting_down_.load()) break;
        ConvProblem problem;
        problem.params = layer->params;
        problem.batch = batch;
        problem.height = spec.input_size().h();
        problem.width = spec.input_size().w();
        absl::StatusOr<TuningResult> tuned = executor->Tune(problem);
        if (!tuned.ok()) {
          LogWarning("warm-up tuning of layer '", layer->name, "' at ", problem.ToString(),
                     " failed: ", tuned.status().ToString());
        } else {
          LogInfo("tuned layer '", layer->name, "' ", problem.ToString(), ": ", tuned->config, " ",
                  tuned->time_us, " us");
        }
      }
    }
    std::shared_ptr<LayerEntry> self = weak.lock();
    if (self == nullptr) return;
    self->ready = true;
    self->warmup_done = true;
    if (store_.Find(layer->name) == self) NotifyHealth(layer->name, true);
  });
}

void ServingCoreImpl::Retire(std::shared_ptr<LayerEntry> entry) {
  entry->batcher->BeginDrain();
  absl::MutexLock lock(&retired_mu_);
  retired_.push_back(std::move(entry));
}

void ServingCoreImpl::ReapRetired() {
  std::vector<std::shared_ptr<LayerEntry>> done;
  {
    absl::MutexLock lock(&retired_mu_);
    for (auto it = retired_.begin(); it != retired_.end();) {
      if ((*it)->batcher->drained() && (*it)->warmup_done.load()) {
        done.push_back(std::move(*it));
        it = retired_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Destroyed here, outside the lock: joins threads that have already finished.
}

absl::Status ServingCoreImpl::UnloadLayer(const std::string& name) {
  if (absl::Status s = ValidateLayerName(name, "name"); !s.ok()) return s;
  absl::MutexLock load_lock(&load_mu_);
  ReapRetired();
  std::shared_ptr<LayerEntry> old = store_.Remove(name);
  if (old == nullptr) return absl::NotFoundError(absl::StrCat("layer '", name, "' is not loaded"));
  NotifyHealth(name, false);
  if (metrics_ != nullptr) {
    for (const auto& executor : executors_) {
      metrics_->SetLayerResidentBytes(name, executor->device_name(), -1);
    }
    // The queue-depth gauge is left alone: the draining batcher still counts what it holds
    // and brings the gauge to 0 as it launches.
  }
  Retire(std::move(old));
  LogInfo("unloaded layer '", name, "'");
  return absl::OkStatus();
}

v1::LayerInfo ServingCoreImpl::InfoFor(const LayerEntry& entry) const {
  const LoadedLayer& layer = *entry.layer;
  v1::LayerInfo info;
  *info.mutable_spec() = layer.spec;
  info.set_resident_bytes(layer.resident_bytes);
  std::vector<std::string> devices;
  for (const auto& executor : executors_) devices.push_back(executor->device_name());
  info.set_device(absl::StrJoin(devices, ", "));
  info.set_ready(entry.ready.load());
  info.set_generation(layer.generation);
  for (const TuningResult& result : executors_.front()->TunedFor(layer.params)) {
    *info.add_tuned() = ToTunedChoice(result);
  }
  return info;
}

std::vector<LayerSnapshot> ServingCoreImpl::ListLayers() const {
  std::vector<LayerSnapshot> snapshots;
  for (const auto& entry : store_.All()) {
    snapshots.push_back({entry->layer->name, entry->layer->params, InfoFor(*entry),
                         entry->batcher->queued_requests()});
  }
  return snapshots;
}

std::optional<LayerSnapshot> ServingCoreImpl::FindLayer(const std::string& name) const {
  std::shared_ptr<LayerEntry> entry = store_.Find(name);
  if (entry == nullptr) return std::nullopt;
  return LayerSnapshot{entry->layer->name, entry->layer->params, InfoFor(*entry),
                       entry->batcher->queued_requests()};
}

absl::StatusOr<v1::TuneResponse> ServingCoreImpl::Tune(const v1::TuneRequest& request) {
  if (absl::Status s = ValidateLayerName(request.layer(), "layer"); !s.ok()) return s;
  std::shared_ptr<LayerEntry> entry = store_.Find(request.layer());
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("layer '", request.layer(), "' is not loaded"));
  }
  if (!on_gpu()) {
    return absl::FailedPreconditionError(
        "Tune needs a GPU; this server runs on the CPU reference backend");
  }
  if (std::none_of(executors_.begin(), executors_.end(),
                   [](const auto& executor) { return executor->healthy(); })) {
    return absl::UnavailableError("every device of this server is broken; restart it");
  }
  if (request.batch_sizes_size() == 0) {
    return absl::InvalidArgumentError("batch_sizes must list at least one batch size");
  }
  for (int b : request.batch_sizes()) {
    if (b < 1 || b > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat("batch_sizes must each be in [1, 4096], got ", b));
    }
  }
  const v1::LayerSpec& spec = entry->layer->spec;
  const v1::Size2d& size = request.has_input_size() ? request.input_size() : spec.input_size();
  if (size.h() <= 0 || size.w() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input_size must be positive (the layer has no spec.input_size to default to), got ",
        size.h(), "x", size.w()));
  }
  absl::StatusOr<Layout> layout = LayoutFromProto(request.layout(), "layout");
  if (!layout.ok()) return layout.status();
  v1::TuneResponse response;
  for (int b : request.batch_sizes()) {
    ConvProblem problem;
    problem.params = entry->layer->params;
    problem.batch = b;
    problem.height = size.h();
    problem.width = size.w();
    problem.input_layout = *layout;
    problem.output_layout = *layout;
    if (absl::Status s = ValidateProblem(problem); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("input_size: ", s.message()));
    }
    for (const auto& executor : executors_) {
      if (!executor->healthy()) continue;  // it serves nothing
      absl::StatusOr<TuningResult> tuned = executor->Tune(problem);
      if (!tuned.ok()) return tuned.status();
      *response.add_tuned() = ToTunedChoice(*tuned);
    }
  }
  return response;
}

void ServingCoreImpl::BeginShutdown() {
  if (shutting_down_.exchange(true)) return;
  // Queued requests launch now rather than after their batching delay.
  for (const auto& entry : store_.All()) entry->batcher->BeginDrain();
  NotifyHealth("", false);
  LogInfo("shutting down: no new requests; finishing the accepted ones");
}

void ServingCoreImpl::Shutdown() {
  BeginShutdown();
  absl::MutexLock load_lock(&load_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  for (const auto& entry : store_.All()) {
    std::shared_ptr<LayerEntry> removed = store_.Remove(entry->layer->name);
    if (removed != nullptr) Retire(std::move(removed));
  }
  std::vector<std::shared_ptr<LayerEntry>> retired;
  {
    absl::MutexLock lock(&retired_mu_);
    retired.swap(retired_);
  }
  // Destroying an entry drains its batcher (launching what is queued) and joins its threads;
  // then the executors finish the batches in flight.
  retired.clear();
  for (const auto& executor : executors_) executor->Shutdown();
}

}  // namespace convserve
