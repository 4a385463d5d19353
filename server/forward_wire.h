// The Forward call's wire format, read and written without copying the tensor bytes.
//
// gRPC's generated path parses a ForwardRequest into a message (one copy of input.data into a
// std::string) and serialises a ForwardResponse into slices (one copy of output.data). For a
// 401 KB tensor each copy is 15-25 us on one core; the service reads and writes these two
// messages itself instead, through gRPC's raw (ByteBuffer) callback method:
// - ParseForwardRequest scans the wire format over the received slices, parses every field but
//   input.data with protobuf, and borrows input.data from the slices.
// - SerializeForwardResponse writes the framing and the small fields and hands the output
//   bytes to gRPC as a slice that owns them.
// Both agree with protobuf's own parser and serialiser byte for byte in what they mean
// (tests/server/forward_wire_test.cc checks them against it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "convserve/v1/conv2d.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/tensor_bytes.h"

namespace convserve {

struct ForwardWireRequest {
  // Every field as protobuf would parse it, but request.input().data(), which is empty.
  v1::ForwardRequest request;
  // input.data's bytes (the last occurrence, as protobuf merges), borrowed.
  TensorBytes input_data;
};

// Parses a serialised convserve.v1.ForwardRequest held in `pieces` (in order), which stay valid
// while `keep_alive` lives. INVALID_ARGUMENT, naming what is wrong, when the bytes are not a
// valid ForwardRequest.
absl::StatusOr<ForwardWireRequest> ParseForwardRequest(const std::vector<absl::string_view>& pieces,
                                                       std::shared_ptr<const void> keep_alive);

// The same, over a message as gRPC received it (no copy: the slices are shared).
absl::StatusOr<ForwardWireRequest> ParseForwardRequest(const grpc::ByteBuffer& buffer);

// Serialises a ForwardResponse: `response` (whose output.data must be empty) with `output_data`
// as output.data. Both are taken over; `output_data` is not copied.
grpc::ByteBuffer SerializeForwardResponse(v1::ForwardResponse response, std::string output_data);

}  // namespace convserve
