// Protobuf's wire format read over borrowed pieces (gRPC's receive slices) and written around
// owned ones: what the front-ends' zero-copy codecs (server/forward_wire.h,
// server/kserve/infer_wire.h) share. A codec scans a message's fields, borrows the one large
// bytes field it serves, and hands every other field's encoding to protobuf.
//
// Scan errors are INVALID_ARGUMENT "<what> at byte <offset>"; the codecs prefix the message's
// name. The limits are protobuf's, so both refuse the same bytes (tests/server/wire_oracle.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace convserve::wire {

// Wire types (tag = field_number << 3 | wire_type).
inline constexpr uint32_t kVarint = 0;
inline constexpr uint32_t kFixed64 = 1;
inline constexpr uint32_t kLengthDelimited = 2;
inline constexpr uint32_t kStartGroup = 3;
inline constexpr uint32_t kEndGroup = 4;
inline constexpr uint32_t kFixed32 = 5;

constexpr uint64_t LengthDelimitedTag(uint32_t field) {
  return uint64_t{field} << 3 | kLengthDelimited;
}

absl::Status Malformed(absl::string_view what, size_t offset);

// A read position in a sequence of pieces; a copy keeps a field's start so its bytes can be
// re-read.
class Cursor {
 public:
  explicit Cursor(const std::vector<absl::string_view>& pieces);

  size_t offset() const { return offset_; }
  // The pieces' total size: where the message ends.
  size_t size() const { return size_; }
  // A varint of at most `max_bytes` bytes (protobuf's limits: 10 for values, 5 for tags and
  // lengths), ending by `limit`.
  absl::Status ReadVarint(uint64_t& value, size_t limit, int max_bytes = 10);
  // A length prefix whose field ends by `limit`; protobuf refuses 2 GiB and more.
  absl::Status ReadLength(uint64_t& length, size_t limit);
  absl::Status Skip(uint64_t bytes, size_t limit);
  // The next `bytes` bytes as views into the pieces; the caller has checked they exist.
  std::vector<absl::string_view> Take(size_t bytes);
  // Appends the bytes from here to `end` (an offset at or after this one) to `out`.
  void AppendUntil(size_t end, std::string& out);

 private:
  void Advance(size_t bytes);
  void SkipEmptyPieces();

  const std::vector<absl::string_view>* pieces_;
  size_t piece_ = 0;
  size_t in_piece_ = 0;
  size_t offset_ = 0;
  size_t size_ = 0;
};

// Reads a field's tag; an end-group tag is valid only inside a group.
absl::Status ReadTag(Cursor& cursor, size_t limit, uint64_t& tag, bool in_group = false);

// Skips the value of a field whose tag was just read, checking that it ends by `limit`.
absl::Status SkipValue(Cursor& cursor, uint64_t tag, size_t limit, int depth = 0);

// Scans the fields from `cursor` to `end`, the shape every codec here has: each length-delimited
// field numbered `field` goes to `on_field(cursor, length)`, which consumes exactly its `length`
// value bytes and returns a status; every other field's encoding is appended to `rest`, for
// protobuf to parse.
template <typename OnField>
absl::Status SplitFields(Cursor& cursor, size_t end, uint32_t field, OnField&& on_field,
                         std::string& rest) {
  while (cursor.offset() < end) {
    Cursor field_start = cursor;
    uint64_t tag = 0;
    if (absl::Status s = ReadTag(cursor, end, tag); !s.ok()) return s;
    if (tag == LengthDelimitedTag(field)) {
      uint64_t length = 0;
      if (absl::Status s = cursor.ReadLength(length, end); !s.ok()) return s;
      if (absl::Status s = on_field(cursor, static_cast<size_t>(length)); !s.ok()) return s;
      continue;
    }
    if (absl::Status s = SkipValue(cursor, tag, end); !s.ok()) return s;
    field_start.AppendUntil(cursor.offset(), rest);
  }
  return absl::OkStatus();
}

// A received message as pieces, valid while `keep_alive` lives (no copy: the slices are shared).
struct ReceivedPieces {
  std::vector<absl::string_view> pieces;
  std::shared_ptr<const void> keep_alive;
  size_t size = 0;
};
absl::StatusOr<ReceivedPieces> PiecesOf(const grpc::ByteBuffer& buffer);

// Encodes a length-delimited field's tag and length, for a value that follows as its own slice.
std::string LengthDelimitedHeader(uint32_t field, uint64_t size);

// A slice that takes `bytes` over and frees it when gRPC is done with it.
grpc::Slice OwningSlice(std::string bytes);

}  // namespace convserve::wire
