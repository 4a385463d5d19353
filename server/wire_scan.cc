#include "server/wire_scan.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"

namespace convserve::wire {
namespace {

// Bounds the recursion over nested unknown groups. Protobuf's parse of the fields kept for it
// applies its own limit (100) below this one.
constexpr int kMaxGroupDepth = 128;

}  // namespace

absl::Status Malformed(absl::string_view what, size_t offset) {
  return absl::InvalidArgumentError(absl::StrCat(what, " at byte ", offset));
}

Cursor::Cursor(const std::vector<absl::string_view>& pieces) : pieces_(&pieces) {
  for (absl::string_view piece : pieces) size_ += piece.size();
  SkipEmptyPieces();
}

absl::Status Cursor::ReadVarint(uint64_t& value, size_t limit, int max_bytes) {
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

absl::Status Cursor::ReadLength(uint64_t& length, size_t limit) {
  if (absl::Status s = ReadVarint(length, limit, 5); !s.ok()) return s;
  if (length >= (uint64_t{1} << 31)) return Malformed("length of 2 GiB or more", offset_);
  if (length > limit - offset_) return Malformed("field runs past its end", offset_);
  return absl::OkStatus();
}

absl::Status Cursor::Skip(uint64_t bytes, size_t limit) {
  if (bytes > limit - offset_) return Malformed("field runs past its end", offset_);
  Advance(static_cast<size_t>(bytes));
  return absl::OkStatus();
}

std::vector<absl::string_view> Cursor::Take(size_t bytes) {
  std::vector<absl::string_view> out;
  while (bytes > 0) {
    const absl::string_view piece = (*pieces_)[piece_].substr(in_piece_, bytes);
    out.push_back(piece);
    Advance(piece.size());
    bytes -= piece.size();
  }
  return out;
}

void Cursor::AppendUntil(size_t end, std::string& out) {
  for (absl::string_view piece : Take(end - offset_)) out.append(piece.data(), piece.size());
}

void Cursor::Advance(size_t bytes) {
  offset_ += bytes;
  while (bytes > 0) {
    const size_t step = std::min(bytes, (*pieces_)[piece_].size() - in_piece_);
    in_piece_ += step;
    bytes -= step;
    SkipEmptyPieces();
  }
}

void Cursor::SkipEmptyPieces() {
  while (piece_ < pieces_->size() && in_piece_ == (*pieces_)[piece_].size()) {
    ++piece_;
    in_piece_ = 0;
  }
}

absl::Status ReadTag(Cursor& cursor, size_t limit, uint64_t& tag, bool in_group) {
  const size_t at = cursor.offset();
  if (absl::Status s = cursor.ReadVarint(tag, limit, 5); !s.ok()) return s;
  tag &= 0xffffffff;  // as protobuf reads a fifth byte: its high bits are dropped
  if ((tag >> 3) == 0) return Malformed("invalid field number", at);
  if ((tag & 7) == kEndGroup && !in_group) return Malformed("end group without a start", at);
  return absl::OkStatus();
}

absl::Status SkipValue(Cursor& cursor, uint64_t tag, size_t limit, int depth) {
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

absl::StatusOr<ReceivedPieces> PiecesOf(const grpc::ByteBuffer& buffer) {
  auto slices = std::make_shared<std::vector<grpc::Slice>>();
  if (grpc::Status dumped = buffer.Dump(slices.get()); !dumped.ok()) {
    return absl::InternalError(absl::StrCat("cannot read the message: ", dumped.error_message()));
  }
  ReceivedPieces out;
  out.pieces.reserve(slices->size());
  for (const grpc::Slice& slice : *slices) {
    out.pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
    out.size += slice.size();
  }
  out.keep_alive = std::move(slices);
  return out;
}

std::string LengthDelimitedHeader(uint32_t field, uint64_t size) {
  using google::protobuf::io::CodedOutputStream;
  const uint64_t tag = LengthDelimitedTag(field);
  std::string out(CodedOutputStream::VarintSize64(tag) + CodedOutputStream::VarintSize64(size),
                  '\0');
  auto* at = reinterpret_cast<uint8_t*>(out.data());
  at = CodedOutputStream::WriteVarint64ToArray(tag, at);
  CodedOutputStream::WriteVarint64ToArray(size, at);
  return out;
}

grpc::Slice OwningSlice(std::string bytes) {
  auto* owned = new std::string(std::move(bytes));
  return grpc::Slice(
      owned->data(), owned->size(), [](void* p) { delete static_cast<std::string*>(p); }, owned);
}

}  // namespace convserve::wire
