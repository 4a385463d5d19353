// The ModelInfer call's wire format, read and written without copying the tensor bytes, as
// server/forward_wire.h does for the native Forward: ParseModelInferRequest borrows each
// raw_input_contents entry from gRPC's receive slices and parses every other field with
// protobuf; SerializeModelInferResponse writes protobuf's bytes with each raw_output_contents
// entry as a slice that owns it. ModelStreamInfer keeps protobuf messages (a stream's messages
// go through gRPC's typed reactor).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/byte_buffer.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "server/tensor_bytes.h"

namespace convserve::kserve {

struct InferWireRequest {
  // Every field as protobuf would parse it, but raw_input_contents, which is empty.
  inference::ModelInferRequest request;
  // raw_input_contents' entries, in order, borrowed.
  std::vector<TensorBytes> raw_input_contents;
};

// Parses a serialised inference.ModelInferRequest held in `pieces` (in order), which stay valid
// while `keep_alive` lives. INVALID_ARGUMENT, naming what is wrong, when the bytes are not one.
absl::StatusOr<InferWireRequest> ParseModelInferRequest(
    const std::vector<absl::string_view>& pieces, const std::shared_ptr<const void>& keep_alive);
absl::StatusOr<InferWireRequest> ParseModelInferRequest(const grpc::ByteBuffer& buffer);

// Serialises `response` (whose raw_output_contents must be empty) followed by
// `raw_output_contents` as its entries, which are taken over, not copied.
grpc::ByteBuffer SerializeModelInferResponse(const inference::ModelInferResponse& response,
                                             std::vector<std::string> raw_output_contents);

}  // namespace convserve::kserve
