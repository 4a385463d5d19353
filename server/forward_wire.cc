#include "server/forward_wire.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "grpcpp/support/slice.h"

namespace convserve {
namespace {

using google::protobuf::io::CodedOutputStream;

// Wire types (protobuf encoding: tag = field_number << 3 | wire_type).
constexpr uint32_t kVarint = 0;
constexpr uint32_t kFixed64 = 1;
constexpr uint32_t kLengthDelimited = 2;
constexpr uint32_t kStartGroup = 3;
constexpr uint32_t kEndGroup = 4;
constexpr uint32_t kFixed32 = 5;

// Field numbers this codec treats itself; everything else goes through protobuf.
constexpr uint32_t kRequestInput = 2;  // ForwardRequest.input
constexpr uint32_t kTensorData = 4;    // Tensor.data
constexpr uint32_t kResponseOutput = 1;  // ForwardResponse.output

// Bounds the recursion over nested unknown groups. Protobuf's parse of the fields kept for it
// applies its own limit (100) below this one.
constexpr int kMaxGroupDepth = 128;

absl::Status Malformed(absl::string_view what, size_t offset) {
  return absl::InvalidArgumentError(absl::StrCat(
      "the request is not a valid convserve.v1.ForwardRequest: ", what, " at byte ", offset));
}

// A read position in a sequence of pieces, by value so a field's start can be kept and its
// bytes re-read.
class Cursor {
 public:
  explicit Cursor(const std::vector<absl::string_view>& pieces) : pieces_(&pieces) {
    SkipEmptyPieces();
  }

  size_t offset() const { return offset_; }

  // A varint of at most `max_bytes` bytes (protobuf's limits: 10 for values, 5 for tags and
  // lengths).
  absl::Status ReadVarint(uint64_t& value, size_t limit, int max_bytes = 10) {
    value = 0;
    for (int i = 0; i < max_bytes; ++i) {
      if (offset_ >= limit) return Malformed("truncated varint", offset_);
      const auto byte = static_cast<uint8_t>((*pieces_)[piece_][in_piece_]);
      Advance(1);
      value |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if ((byte & 0x80) == 0) return absl::OkStatus();
    }
    return Malformed("varint too long", offset_);
  }

  // A length prefix: protobuf refuses 2 GiB and more.
  absl::Status ReadLength(uint64_t& length, size_t limit) {
    if (absl::Status s = ReadVarint(length, limit, 5); !s.ok()) return s;
    if (length >= (uint64_t{1} << 31)) return Malformed("length of 2 GiB or more", offset_);
    if (length > limit - offset_) return Malformed("field runs past its end", offset_);
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t bytes, size_t limit) {
    if (bytes > limit - offset_) return Malformed("field runs past its end", offset_);
    Advance(static_cast<size_t>(bytes));
    return absl::OkStatus();
  }

  // The next `bytes` bytes as views into the pieces; the caller has checked they exist.
  std::vector<absl::string_view> Take(size_t bytes) {
    std::vector<absl::string_view> out;
    while (bytes > 0) {
      const absl::string_view piece = (*pieces_)[piece_].substr(in_piece_, bytes);
      out.push_back(piece);
      Advance(piece.size());
      bytes -= piece.size();
    }
    return out;
  }

  // Appends the bytes from here to `end` (an offset at or after this one) to `out`.
  void AppendUntil(size_t end, std::string& out) {
    for (absl::string_view piece : Take(end - offset_)) out.append(piece.data(), piece.size());
  }

 private:
  void Advance(size_t bytes) {
    offset_ += bytes;
    while (bytes > 0) {
      const size_t step = std::min(bytes, (*pieces_)[piece_].size() - in_piece_);
      in_piece_ += step;
      bytes -= step;
      SkipEmptyPieces();
    }
  }

  void SkipEmptyPieces() {
    while (piece_ < pieces_->size() && in_piece_ == (*pieces_)[piece_].size()) {
      ++piece_;
      in_piece_ = 0;
    }
  }

  const std::vector<absl::string_view>* pieces_;
  size_t piece_ = 0;
  size_t in_piece_ = 0;
  size_t offset_ = 0;
};

// Reads a field's tag; an end-group tag is valid only inside a group.
absl::Status ReadTag(Cursor& cursor, size_t limit, uint64_t& tag, bool in_group = false) {
  const size_t at = cursor.offset();
  if (absl::Status s = cursor.ReadVarint(tag, limit, 5); !s.ok()) return s;
  tag &= 0xffffffff;  // as protobuf reads a fifth byte: its high bits are dropped
  if ((tag >> 3) == 0) return Malformed("invalid field number", at);
  if ((tag & 7) == kEndGroup && !in_group) return Malformed("end group without a start", at);
  return absl::OkStatus();
}

// Skips the value of a field whose tag was just read, checking that it ends by `limit`.
absl::Status SkipValue(Cursor& cursor, uint64_t tag, size_t limit, int depth = 0) {
  uint64_t value = 0;
  switch (tag & 7) {
    case kVarint:
      return cursor.ReadVarint(value, limit);
    case kFixed64:
      return cursor.Skip(8, limit);
    case kFixed32:
      return cursor.Skip(4, limit);
    case kLengthDelimited:
      if (absl::Status s = cursor.ReadLength(value, limit); !s.ok()) return s;
      return cursor.Skip(value, limit);
    case kStartGroup:
      if (depth >= kMaxGroupDepth) return Malformed("groups nested too deep", cursor.offset());
      while (true) {
        uint64_t inner = 0;
        if (absl::Status s = ReadTag(cursor, limit, inner, /*in_group=*/true); !s.ok()) return s;
        if ((inner & 7) == kEndGroup) {
          if ((inner >> 3) != (tag >> 3)) return Malformed("mismatched end group", cursor.offset());
          return absl::OkStatus();
        }
        if (absl::Status s = SkipValue(cursor, inner, limit, depth + 1); !s.ok()) return s;
      }
    default:
      return Malformed(absl::StrCat("invalid wire type ", tag & 7), cursor.offset());
  }
}


// Reads the Tensor message that ends at `end`: data's bytes into `data` (last one wins), every
// other field's encoding appended to `rest`.
absl::Status ReadTensor(Cursor& cursor, size_t end, std::vector<absl::string_view>& data,
                        std::string& rest) {
  while (cursor.offset() < end) {
    Cursor field_start = cursor;
    uint64_t tag = 0;
    if (absl::Status s = ReadTag(cursor, end, tag); !s.ok()) return s;
    if (tag == (kTensorData << 3 | kLengthDelimited)) {
      uint64_t length = 0;
      if (absl::Status s = cursor.ReadLength(length, end); !s.ok()) return s;
      data = cursor.Take(static_cast<size_t>(length));
      continue;
    }
    if (absl::Status s = SkipValue(cursor, tag, end); !s.ok()) return s;
    field_start.AppendUntil(cursor.offset(), rest);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ForwardWireRequest> ParseForwardRequest(
    const std::vector<absl::string_view>& pieces, std::shared_ptr<const void> keep_alive) {
  size_t total = 0;
  for (absl::string_view piece : pieces) total += piece.size();
  Cursor cursor(pieces);
  std::string request_rest;  // every field but input, as encoded
  std::string tensor_rest;   // every field of input but data, as encoded (repeats merge)
  std::vector<absl::string_view> data;
  bool has_input = false;
  while (cursor.offset() < total) {
    Cursor field_start = cursor;
    uint64_t tag = 0;
    if (absl::Status s = ReadTag(cursor, total, tag); !s.ok()) return s;
    if (tag == (kRequestInput << 3 | kLengthDelimited)) {
      uint64_t length = 0;
      if (absl::Status s = cursor.ReadLength(length, total); !s.ok()) return s;
      has_input = true;
      const size_t end = cursor.offset() + static_cast<size_t>(length);
      if (absl::Status s = ReadTensor(cursor, end, data, tensor_rest); !s.ok()) return s;
      continue;
    }
    if (absl::Status s = SkipValue(cursor, tag, total); !s.ok()) return s;
    field_start.AppendUntil(cursor.offset(), request_rest);
  }
  ForwardWireRequest out;
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
  auto slices = std::make_shared<std::vector<grpc::Slice>>();
  if (grpc::Status dumped = buffer.Dump(slices.get()); !dumped.ok()) {
    return absl::InternalError(absl::StrCat("cannot read the request: ", dumped.error_message()));
  }
  std::vector<absl::string_view> pieces;
  pieces.reserve(slices->size());
  for (const grpc::Slice& slice : *slices) {
    pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return ParseForwardRequest(pieces, std::move(slices));
}

grpc::ByteBuffer SerializeForwardResponse(const v1::ForwardResponse& response,
                                          std::string output_data) {
  // Field 1 (output) first, as protobuf orders it: its tag, its length, its small fields, then
  // data's tag and length (none for no data, as protobuf writes it); the data itself follows as
  // its own slice. The bytes are exactly protobuf's.
  const std::string tensor_fields = response.output().SerializeAsString();
  const uint64_t data_size = output_data.size();
  const size_t data_head_size =
      data_size == 0 ? 0 : 1 + CodedOutputStream::VarintSize64(data_size);
  const uint64_t tensor_size = tensor_fields.size() + data_head_size + data_size;
  std::string head;
  head.resize(1 + CodedOutputStream::VarintSize64(tensor_size) + tensor_fields.size() +
              data_head_size);
  auto* at = reinterpret_cast<uint8_t*>(head.data());
  *at++ = static_cast<uint8_t>(kResponseOutput << 3 | kLengthDelimited);
  at = CodedOutputStream::WriteVarint64ToArray(tensor_size, at);
  at = std::copy(tensor_fields.begin(), tensor_fields.end(), at);
  if (data_size > 0) {
    *at++ = static_cast<uint8_t>(kTensorData << 3 | kLengthDelimited);
    CodedOutputStream::WriteVarint64ToArray(data_size, at);
  }
  // The other fields: a copy of the response without output (a few small strings).
  v1::ForwardResponse rest = response;
  rest.clear_output();
  const std::string tail = rest.SerializeAsString();

  std::vector<grpc::Slice> slices;
  slices.emplace_back(head);
  if (data_size > 0) {
    auto* owned = new std::string(std::move(output_data));
    slices.emplace_back(
        owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); },
        owned);
  }
  if (!tail.empty()) slices.emplace_back(tail);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace convserve
