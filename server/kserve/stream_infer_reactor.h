// The reactor behind one ModelStreamInfer stream: reads requests, submits each to the serving
// core without waiting, and writes each one's answer as it completes, so a client keeps many
// requests in flight on one stream. Internal to the KServe front-end.
#pragma once

#include <deque>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/serving_core.h"
#include "server/shared_memory.h"

namespace convserve::kserve {

// Self-owned: created by the service handler, deletes itself in OnDone. It finishes the stream
// (OK) once the client half-closed or the stream broke, and every accepted request's answer is
// written or dropped. At most kMaxOutstanding requests per stream are unanswered or unwritten
// at a time; beyond that it stops reading, which pushes back on the client through gRPC flow
// control instead of buffering without bound.
class StreamInferReactor final
    : public grpc::ServerBidiReactor<inference::ModelInferRequest,
                                     inference::ModelStreamInferResponse> {
 public:
  static constexpr int kMaxOutstanding = 512;

  // `shared_memory` (may be null: the extension is off) must outlive the stream.
  StreamInferReactor(ServingCore& core, grpc::CallbackServerContext* context,
                     const SharedMemoryRegistry* shared_memory = nullptr);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  // Queues one request's answer for writing; any thread, once per accepted request.
  void Respond(inference::ModelStreamInferResponse response);
  // True exactly once: when the stream may finish (see the class comment).
  bool ClaimFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ServingCore& core_;
  grpc::CallbackServerContext* const context_;
  const SharedMemoryRegistry* const shared_memory_;
  inference::ModelInferRequest request_;  // the read in progress (only the reader touches it)

  absl::Mutex mu_;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;  // client half-closed or stream broke
  bool write_failed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;  // accepted, answer not yet written or dropped
  // Answers waiting to be written; the front one is being written while writing_. A deque
  // keeps the front's address stable while others are appended.
  std::deque<inference::ModelStreamInferResponse> to_write_ ABSL_GUARDED_BY(mu_);
};

}  // namespace convserve::kserve
