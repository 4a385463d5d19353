// The inference calls (Conv2d.Forward, KServe's ModelInfer) on gRPC's asynchronous API: several
// completion queues, each drained by its own thread, each holding calls requested ahead.
//
// Why not the callback API like the other methods: gRPC 1.51 runs every callback method from
// one shared completion queue drained by cores/2 "nexting" threads (8 on a 16-core host).
// Batching answers ~30 calls at once, and each of their clients sends its next call at once, so
// calls arrive in bursts that queue for those threads: at c = 64 on the H100 host a call spent
// ~580 us outside the server's own accepted-to-answered window, against ~80-150 us without
// batching, while 6 of the 16 cores idled (bench/results/2026-12-07_cpu_profile). On these
// queues the same server answered 22-24% more calls (bench/results/2026-12-07_forward_queues).
// The threads are as many as ServerOptions::transport.forward_threads says, and gRPC matches a
// connection's calls on that connection's own queue first.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/async_unary_call.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace convserve {

class UnaryCallHandler;
class UnaryCallQueues;

// One call of a raw (ByteBuffer) unary method, from gRPC handing it over until its reply is sent
// and gRPC is done with it.
class UnaryCall {
 public:
  UnaryCall(const UnaryCall&) = delete;
  UnaryCall& operator=(const UnaryCall&) = delete;

  grpc::ServerContext& context() { return context_; }
  const grpc::ByteBuffer& request() const { return request_; }
  // True once gRPC has ended the call before its reply: the client cancelled, its deadline
  // passed or its connection closed. Thread-safe.
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  // Sends the reply, or the error `status`: exactly once per call, from any thread. The call
  // may be gone once this returns.
  void Finish(grpc::ByteBuffer reply);
  void Finish(const grpc::Status& status);

 private:
  friend class UnaryCallQueues;
  // What a completion-queue tag stands for; each call owns one of each.
  struct Event {
    enum Kind { kStarted, kDone, kFinished };
    UnaryCall* call;
    Kind kind;
  };
  explicit UnaryCall(UnaryCallHandler& handler) : handler_(handler), responder_(&context_) {}
  // The call is deleted after both gRPC's done notification and the finish's completion.
  void Unref();

  UnaryCallHandler& handler_;
  grpc::ServerContext context_;
  grpc::ByteBuffer request_;
  grpc::ServerAsyncResponseWriter<grpc::ByteBuffer> responder_;
  Event started_{this, Event::kStarted};
  Event done_{this, Event::kDone};
  Event finished_{this, Event::kFinished};
  std::atomic<bool> cancelled_{false};
  std::atomic<int> pending_events_{2};  // done and finished
};

// What serves one method's calls: asks gRPC for the next one, and handles one once it arrived.
class UnaryCallHandler {
 public:
  virtual ~UnaryCallHandler() = default;
  // Asks gRPC for the method's next call into `context`, `request` and `responder`, with `tag`
  // on `queue` when it arrives (the generated Request<Method> of a raw method).
  virtual void RequestCall(grpc::ServerContext* context, grpc::ByteBuffer* request,
                           grpc::ServerAsyncResponseWriter<grpc::ByteBuffer>* responder,
                           grpc::ServerCompletionQueue* queue, void* tag) = 0;
  // Runs on a queue's thread for each call; must not block. Every call is finished exactly
  // once, here or later from any thread.
  virtual void HandleCall(UnaryCall& call) = 0;
};

class UnaryCallQueues {
 public:
  // Adds `threads` completion queues (<= 0: one per core) to `builder`, each to serve every
  // handler's method; the handlers must outlive this.
  UnaryCallQueues(grpc::ServerBuilder& builder, std::vector<UnaryCallHandler*> handlers,
                  int threads);
  // Shutdown() if still running.
  ~UnaryCallQueues();

  // After the server is built: requests calls ahead on every queue and starts the threads.
  void Start();
  // After the server has shut down and every call has been finished: shuts the queues down
  // and joins their threads once each queue is drained. Idempotent.
  void Shutdown();

 private:
  struct Queue {
    std::unique_ptr<grpc::ServerCompletionQueue> completion_queue;
    absl::Mutex mu;  // orders RequestCall against Shutdown(): no request after the queue shuts
    bool shut_down ABSL_GUARDED_BY(mu) = false;
    std::thread thread;
  };
  // Calls each queue keeps requested per method, so a burst of arrivals is matched without
  // waiting for the queue's thread to request the next.
  static constexpr int kCallsAhead = 32;

  void RequestCall(Queue& queue, UnaryCallHandler& handler);
  void Drain(Queue& queue);

  const std::vector<UnaryCallHandler*> handlers_;
  std::vector<std::unique_ptr<Queue>> queues_;
  bool started_ = false;
  std::atomic<bool> shut_down_{false};
};

}  // namespace convserve
