#include "server/forward_wire.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "server/wire_scan.h"

namespace convserve {
namespace {

// Field numbers this codec treats itself; everything else goes through protobuf.
constexpr uint32_t kRequestInput = 2;    // ForwardRequest.input
constexpr uint32_t kTensorData = 4;      // Tensor.data
constexpr uint32_t kResponseOutput = 1;  // ForwardResponse.output

absl::Status NotARequest(const absl::Status& scan) {
  return absl::InvalidArgumentError(
      absl::StrCat("the request is not a valid convserve.v1.ForwardRequest: ", scan.message()));
}

}  // namespace

absl::StatusOr<ForwardWireRequest> ParseForwardRequest(const std::vector<absl::string_view>& pieces,
                                                       std::shared_ptr<const void> keep_alive) {
  wire::Cursor cursor(pieces);
  std::string request_rest;  // every field but input, as encoded
  std::string tensor_rest;   // every field of input but data, as encoded (repeats merge)
  std::vector<absl::string_view> data;
  bool has_input = false;
  const absl::Status scanned = wire::SplitFields(
      cursor, cursor.size(), kRequestInput,
      [&](wire::Cursor& input, size_t length) {
        has_input = true;
        // data's bytes are borrowed (the last one wins, as protobuf merges).
        return wire::SplitFields(
            input, input.offset() + length, kTensorData,
            [&](wire::Cursor& tensor, size_t bytes) {
              data = tensor.Take(bytes);
              return absl::OkStatus();
            },
            tensor_rest);
      },
      request_rest);
  if (!scanned.ok()) return NotARequest(scanned);
  ForwardWireRequest out;
  // A client's bad string is answered below, not logged by protobuf once per request.
  const google::protobuf::LogSilencer quiet;
  if (!out.request.ParseFromString(request_rest)) {
    return absl::InvalidArgumentError(
        "the request is not a valid convserve.v1.ForwardRequest (a field does not parse, e.g. "
        "`layer` is not UTF-8)");
  }
  if (has_input && !out.request.mutable_input()->ParseFromString(tensor_rest)) {
    return absl::InvalidArgumentError(
        "the request's input is not a valid convserve.v1.Tensor (a field does not parse)");
  }
  out.input_data = TensorBytes(std::move(data), std::move(keep_alive));
  return out;
}

absl::StatusOr<ForwardWireRequest> ParseForwardRequest(const grpc::ByteBuffer& buffer) {
  absl::StatusOr<wire::ReceivedPieces> received = wire::PiecesOf(buffer);
  if (!received.ok()) return received.status();
  return ParseForwardRequest(received->pieces, std::move(received->keep_alive));
}

grpc::ByteBuffer SerializeForwardResponse(v1::ForwardResponse response, std::string output_data) {
  // Field 1 (output) first, as protobuf orders it: its tag, its length, its small fields, then
  // data's tag and length (none for no data, as protobuf writes it); the data itself follows as
  // its own slice. The bytes are exactly protobuf's.
  const std::string tensor_fields = response.output().SerializeAsString();
  const std::string data_head = output_data.empty()
                                    ? std::string()
                                    : wire::LengthDelimitedHeader(kTensorData, output_data.size());
  const std::string head =
      wire::LengthDelimitedHeader(kResponseOutput,
                                  tensor_fields.size() + data_head.size() + output_data.size()) +
      tensor_fields + data_head;
  // The other fields.
  response.clear_output();
  const std::string tail = response.SerializeAsString();

  std::vector<grpc::Slice> slices;
  slices.emplace_back(head);
  if (!output_data.empty()) slices.push_back(wire::OwningSlice(std::move(output_data)));
  if (!tail.empty()) slices.emplace_back(tail);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace convserve
