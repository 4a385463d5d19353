#include "server/unary_call_queues.h"

#include <algorithm>
#include <utility>

namespace convserve {

void UnaryCall::Finish(grpc::ByteBuffer reply) {
  responder_.Finish(reply, grpc::Status::OK, &finished_);
}

void UnaryCall::Finish(const grpc::Status& status) {
  responder_.FinishWithError(status, &finished_);
}

void UnaryCall::Unref() {
  if (pending_events_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

UnaryCallQueues::UnaryCallQueues(grpc::ServerBuilder& builder,
                                 std::vector<UnaryCallHandler*> handlers, int threads)
    : handlers_(std::move(handlers)) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < threads; ++i) {
    auto queue = std::make_unique<Queue>();
    queue->completion_queue = builder.AddCompletionQueue();
    queues_.push_back(std::move(queue));
  }
}

UnaryCallQueues::~UnaryCallQueues() { Shutdown(); }

void UnaryCallQueues::Start() {
  started_ = true;
  for (auto& queue : queues_) {
    for (UnaryCallHandler* handler : handlers_) {
      for (int i = 0; i < kCallsAhead; ++i) RequestCall(*queue, *handler);
    }
    Queue* raw = queue.get();
    queue->thread = std::thread([this, raw] { Drain(*raw); });
  }
}

void UnaryCallQueues::Shutdown() {
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

void UnaryCallQueues::RequestCall(Queue& queue, UnaryCallHandler& handler) {
  absl::MutexLock lock(&queue.mu);
  if (queue.shut_down) return;
  auto* call = new UnaryCall(handler);
  // Before the call starts, as gRPC requires; its tag comes once the call has ended, and says
  // whether it ended cancelled.
  call->context_.AsyncNotifyWhenDone(&call->done_);
  handler.RequestCall(&call->context_, &call->request_, &call->responder_,
                      queue.completion_queue.get(), &call->started_);
}

void UnaryCallQueues::Drain(Queue& queue) {
  void* tag = nullptr;
  bool ok = false;
  while (queue.completion_queue->Next(&tag, &ok)) {
    auto* event = static_cast<UnaryCall::Event*>(tag);
    UnaryCall* call = event->call;
    switch (event->kind) {
      case UnaryCall::Event::kStarted:
        if (!ok) {
          // The server is shutting down: this request never became a call, so neither of its
          // other events will come.
          delete call;
          break;
        }
        RequestCall(queue, call->handler_);  // keep kCallsAhead requested
        call->handler_.HandleCall(*call);
        break;
      case UnaryCall::Event::kDone:
        if (call->context_.IsCancelled()) call->cancelled_.store(true, std::memory_order_release);
        call->Unref();
        break;
      case UnaryCall::Event::kFinished:
        call->Unref();
        break;
    }
  }
}

}  // namespace convserve
