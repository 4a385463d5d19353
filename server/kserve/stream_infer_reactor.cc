// One ModelStreamInfer stream. gRPC allows one read and one write in flight at a time; reads
// and core completions arrive on different threads, so the write queue and the finish
// decision live under one mutex, and every gRPC call is made after releasing it (a reaction
// may run inline and re-enter).
#include "server/kserve/stream_infer_reactor.h"

#include <string>
#include <utility>

#include "server/kserve/call_deadline.h"
#include "server/kserve/infer_codec.h"

namespace convserve::kserve {

StreamInferReactor::StreamInferReactor(ServingCore& core, grpc::CallbackServerContext* context,
                                       const SharedMemoryRegistry* shared_memory)
    : core_(core), context_(context), shared_memory_(shared_memory) {
  StartRead(&request_);
}

void StreamInferReactor::OnReadDone(bool ok) {
  if (!ok) {  // client half-closed, or the stream broke
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      reads_done_ = true;
      finish = ClaimFinishLocked();
    }
    if (finish) Finish(grpc::Status::OK);
    return;
  }

  {
    absl::MutexLock lock(&mu_);
    ++outstanding_;
  }
  const std::string model = request_.model_name();
  const std::string id = request_.id();
  InferenceRequest inference;
  if (absl::Status status =
          DecodeInferRequest(request_, DeadlineOf(*context_), inference, shared_memory_);
      !status.ok()) {
    inference::ModelStreamInferResponse response;
    EncodeStreamError(status, model, id, response);
    Respond(std::move(response));
  } else {
    grpc::CallbackServerContext* context = context_;
    inference.is_cancelled = [context] { return context->IsCancelled(); };
    // The stream cannot finish (so `this` stays alive) until this callback has run.
    inference.done = [this, model, id, layout = inference.input_layout,
                      output_shared_memory = OutputSharedMemoryParameters(request_)](
                         absl::StatusOr<InferenceResult> result) {
      inference::ModelStreamInferResponse response;
      if (result.ok()) {
        EncodeInferResponse(model, id, *std::move(result), *response.mutable_infer_response(),
                            output_shared_memory);
      } else {
        EncodeStreamError(InKserveTerms(result.status(), layout), model, id, response);
      }
      Respond(std::move(response));
    };
    core_.Submit(std::move(inference));
  }

  bool read_more = false;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    // Stop reading while the client is far ahead; OnWriteDone resumes. After a failed write
    // the stream is dead, so don't read on.
    read_more = outstanding_ < kMaxOutstanding && !write_failed_;
    reading_ = read_more;
    finish = ClaimFinishLocked();
  }
  if (read_more) StartRead(&request_);
  if (finish) Finish(grpc::Status::OK);
}

void StreamInferReactor::Respond(inference::ModelStreamInferResponse response) {
  const inference::ModelStreamInferResponse* write = nullptr;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    if (write_failed_) {
      --outstanding_;  // nobody is listening any more
      finish = ClaimFinishLocked();
    } else {
      to_write_.push_back(std::move(response));
      if (!writing_) {
        writing_ = true;
        write = &to_write_.front();
      }
    }
  }
  if (write != nullptr) StartWrite(write);
  if (finish) Finish(grpc::Status::OK);
}

void StreamInferReactor::OnWriteDone(bool ok) {
  const inference::ModelStreamInferResponse* write = nullptr;
  bool read_more = false;
  bool finish = false;
  {
    absl::MutexLock lock(&mu_);
    to_write_.pop_front();
    --outstanding_;
    if (!ok) {
      write_failed_ = true;
      outstanding_ -= static_cast<int>(to_write_.size());
      to_write_.clear();
    }
    if (!to_write_.empty()) {
      write = &to_write_.front();
    } else {
      writing_ = false;
    }
    if (!reading_ && !reads_done_ && !write_failed_ && outstanding_ < kMaxOutstanding) {
      reading_ = read_more = true;
    }
    finish = ClaimFinishLocked();
  }
  if (write != nullptr) StartWrite(write);
  if (read_more) StartRead(&request_);
  if (finish) Finish(grpc::Status::OK);
}

bool StreamInferReactor::ClaimFinishLocked() {
  // A paused reader (not reading, not done) only counts as done once writes failed.
  const bool reads_over = !reading_ && (reads_done_ || write_failed_);
  if (finished_ || !reads_over || outstanding_ > 0 || writing_) return false;
  finished_ = true;
  return true;
}

void StreamInferReactor::OnDone() { delete this; }

}  // namespace convserve::kserve
