// The deadline of a gRPC call as absl::Time, for InferenceRequest::deadline.
#pragma once

#include <grpcpp/server_context.h>

#include <chrono>

#include "absl/time/time.h"

namespace convserve::kserve {

// InfiniteFuture when the client set no deadline.
inline absl::Time DeadlineOf(const grpc::ServerContextBase& context) {
  const std::chrono::system_clock::time_point deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

}  // namespace convserve::kserve
