#include "server/kserve/infer_wire.h"

#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "server/wire_scan.h"

namespace convserve::kserve {
namespace {

constexpr uint32_t kRawInputContents = 7;   // ModelInferRequest.raw_input_contents
constexpr uint32_t kRawOutputContents = 6;  // ModelInferResponse.raw_output_contents

absl::Status NotARequest(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("the request is not a valid inference.ModelInferRequest: ", what));
}

}  // namespace

absl::StatusOr<InferWireRequest> ParseModelInferRequest(
    const std::vector<absl::string_view>& pieces, const std::shared_ptr<const void>& keep_alive) {
  wire::Cursor cursor(pieces);
  std::string rest;  // every field but raw_input_contents, as encoded
  InferWireRequest out;
  const absl::Status scanned = wire::SplitFields(
      cursor, cursor.size(), kRawInputContents,
      [&](wire::Cursor& raw, size_t length) {
        out.raw_input_contents.emplace_back(raw.Take(length), keep_alive);
        return absl::OkStatus();
      },
      rest);
  if (!scanned.ok()) return NotARequest(scanned.message());
  // A client's bad string is answered below, not logged by protobuf once per request.
  const google::protobuf::LogSilencer quiet;
  if (!out.request.ParseFromString(rest)) {
    return NotARequest("a field does not parse (e.g. a string that is not UTF-8)");
  }
  return out;
}

absl::StatusOr<InferWireRequest> ParseModelInferRequest(const grpc::ByteBuffer& buffer) {
  absl::StatusOr<wire::ReceivedPieces> received = wire::PiecesOf(buffer);
  if (!received.ok()) return received.status();
  return ParseModelInferRequest(received->pieces, received->keep_alive);
}

grpc::ByteBuffer SerializeModelInferResponse(const inference::ModelInferResponse& response,
                                             std::vector<std::string> raw_output_contents) {
  // raw_output_contents is the last field in protobuf's order, so the entries follow the rest.
  std::vector<grpc::Slice> slices;
  slices.emplace_back(response.SerializeAsString());
  for (std::string& raw : raw_output_contents) {
    slices.emplace_back(wire::LengthDelimitedHeader(kRawOutputContents, raw.size()));
    if (!raw.empty()) slices.push_back(wire::OwningSlice(std::move(raw)));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace convserve::kserve
