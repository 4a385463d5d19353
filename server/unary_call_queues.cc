#include "server/forward_queues.h"

#include <algorithm>
#include <utility>

namespace convserve {

void ForwardCall::Finish(grpc::ByteBuffer reply) {
  responder_.Finish(reply, grpc::Status::OK, &finished_);
}

void ForwardCall::Finish(const grpc::Status& status) {
  responder_.FinishWithError(status, &finished_);
}

void ForwardCall::Unref() {
  if (pending_events_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

ForwardQueues::ForwardQueues(grpc::ServerBuilder& builder, ForwardCallHandler& handler, int threads)
    : handler_(handler) {
  for (int i = 0; i < std::max(threads, 1); ++i) {
    auto queue = std::make_unique<Queue>();
    queue->completion_queue = builder.AddCompletionQueue();
    queues_.push_back(std::move(queue));
  }
}

ForwardQueues::~ForwardQueues() { Shutdown(); }

void ForwardQueues::Start() {
  started_ = true;
  for (auto& queue : queues_) {
    for (int i = 0; i < kCallsAhead; ++i) RequestCall(*queue);
    Queue* raw = queue.get();
    queue->thread = std::thread([this, raw] { Drain(*raw); });
  }
}

void ForwardQueues::Shutdown() {
  if (shut_down_.exchange(true)) return;
  for (auto& queue : queues_) {
    absl::MutexLock lock(&queue->mu);
    queue->shut_down = true;
    queue->completion_queue->Shutdown();
  }
  for (auto& queue : queues_) {
    if (queue->thread.joinable()) queue->thread.join();
  }
  if (!started_) {
    // Never drained by a thread: drain here (gRPC requires it before the queue is destroyed).
    for (auto& queue : queues_) Drain(*queue);
  }
}

void ForwardQueues::RequestCall(Queue& queue) {
  absl::MutexLock lock(&queue.mu);
  if (queue.shut_down) return;
  auto* call = new ForwardCall();
  // Before the call starts, as gRPC requires; its tag comes once the call has ended, and says
  // whether it ended cancelled.
  call->context_.AsyncNotifyWhenDone(&call->done_);
  handler_.RequestForwardCall(&call->context_, &call->request_, &call->responder_,
                              queue.completion_queue.get(), &call->started_);
}

void ForwardQueues::Drain(Queue& queue) {
  void* tag = nullptr;
  bool ok = false;
  while (queue.completion_queue->Next(&tag, &ok)) {
    auto* event = static_cast<ForwardCall::Event*>(tag);
    ForwardCall* call = event->call;
    switch (event->kind) {
      case ForwardCall::Event::kStarted:
        if (!ok) {
          // The server is shutting down: this request never became a call, so neither of its
          // other events will come.
          delete call;
          break;
        }
        RequestCall(queue);  // keep kCallsAhead requested
        handler_.HandleForward(*call);
        break;
      case ForwardCall::Event::kDone:
        if (call->context_.IsCancelled()) call->cancelled_.store(true, std::memory_order_release);
        call->Unref();
        break;
      case ForwardCall::Event::kFinished:
        call->Unref();
        break;
    }
  }
}

}  // namespace convserve
