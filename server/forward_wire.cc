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

// Reads the Tensor message that ends at `end`: data's bytes into `data` (last one wins), every
// other field's encoding appended to `rest`.
absl::Status ReadTensor(wire::Cursor& cursor, size_t end, std::vector<absl::string_view>& data,
                        std::string& rest) {
  while (cursor.offset() < end) {
    wire::Cursor field_start = cursor;
    uint64_t tag = 0;
    if (absl::Status s = wire::ReadTag(cursor, end, tag); !s.ok()) return s;
    if (tag == wire::LengthDelimitedTag(kTensorData)) {
      uint64_t length = 0;
      if (absl::Status s = cursor.ReadLength(length, end); !s.ok()) return s;
      data = cursor.Take(static_cast<size_t>(length));
      continue;
    }
    if (absl::Status s = wire::SkipValue(cursor, tag, end); !s.ok()) return s;
    field_start.AppendUntil(cursor.offset(), rest);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ForwardWireRequest> ParseForwardRequest(const std::vector<absl::string_view>& pieces,
                                                       std::shared_ptr<const void> keep_alive) {
  size_t total = 0;
  for (absl::string_view piece : pieces) total += piece.size();
  wire::Cursor cursor(pieces);
  std::string request_rest;  // every field but input, as encoded
  std::string tensor_rest;   // every field of input but data, as encoded (repeats merge)
  std::vector<absl::string_view> data;
  bool has_input = false;
  while (cursor.offset() < total) {
    wire::Cursor field_start = cursor;
    uint64_t tag = 0;
    if (absl::Status s = wire::ReadTag(cursor, total, tag); !s.ok()) return NotARequest(s);
    if (tag == wire::LengthDelimitedTag(kRequestInput)) {
      uint64_t length = 0;
      if (absl::Status s = cursor.ReadLength(length, total); !s.ok()) return NotARequest(s);
      has_input = true;
      const size_t end = cursor.offset() + static_cast<size_t>(length);
      if (absl::Status s = ReadTensor(cursor, end, data, tensor_rest); !s.ok()) {
        return NotARequest(s);
      }
      continue;
    }
    if (absl::Status s = wire::SkipValue(cursor, tag, total); !s.ok()) return NotARequest(s);
    field_start.AppendUntil(cursor.offset(), request_rest);
  }
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

grpc::ByteBuffer SerializeForwardResponse(const v1::ForwardResponse& response,
                                          std::string output_data) {
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
  // The other fields: a copy of the response without output (a few small strings).
  v1::ForwardResponse rest = response;
  rest.clear_output();
  const std::string tail = rest.SerializeAsString();

  std::vector<grpc::Slice> slices;
  slices.emplace_back(head);
  if (!output_data.empty()) slices.push_back(wire::OwningSlice(std::move(output_data)));
  if (!tail.empty()) slices.emplace_back(tail);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace convserve
