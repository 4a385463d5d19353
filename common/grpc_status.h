// The one mapping between absl::Status and grpc::Status, used at the edges: server handlers
// (absl -> gRPC) and the client library (gRPC -> absl). The canonical codes are one-to-one.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace convserve {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace convserve
