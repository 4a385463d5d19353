// Protobuf's own parser as the oracle for server/forward_wire.h: shared by the unit test and the
// fuzzer (tests/fuzz/forward_wire_fuzzer.cc).
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "convserve/v1/conv2d.pb.h"
#include "server/forward_wire.h"

namespace convserve::testing {

// Parses `bytes`, cut at `cuts` (offsets, any order, clamped) into borrowed pieces, with
// ParseForwardRequest and with protobuf. Returns "" when both refuse it, or both accept it with
// the same message and the borrowed data lies inside `bytes`; otherwise what differs.
inline std::string CompareWithProtobuf(const std::string& bytes, std::vector<size_t> cuts) {
  for (size_t& cut : cuts) cut = std::min(cut, bytes.size());
  std::sort(cuts.begin(), cuts.end());
  cuts.push_back(bytes.size());
  auto owned = std::make_shared<const std::string>(bytes);
  std::vector<absl::string_view> pieces;
  size_t begin = 0;
  for (size_t cut : cuts) {
    pieces.emplace_back(owned->data() + begin, cut - begin);
    begin = cut;
  }
  absl::StatusOr<ForwardWireRequest> ours = ParseForwardRequest(pieces, owned);
  v1::ForwardRequest theirs;
  const bool theirs_ok = theirs.ParseFromString(bytes);
  if (ours.ok() != theirs_ok) {
    return absl::StrCat("protobuf ", theirs_ok ? "accepts" : "refuses", " it, ours says ",
                        ours.status().ToString());
  }
  if (!theirs_ok) {
    return ours.status().code() == absl::StatusCode::kInvalidArgument
               ? ""
               : absl::StrCat("refused with the wrong code: ", ours.status().ToString());
  }
  if (!ours->request.input().data().empty()) return "input.data was parsed, not borrowed";
  for (absl::string_view piece : ours->input_data.pieces()) {
    if (!piece.empty() && (piece.data() < owned->data() ||
                           piece.data() + piece.size() > owned->data() + owned->size())) {
      return "input.data does not point into the received bytes";
    }
  }
  v1::ForwardRequest merged = ours->request;
  if (merged.has_input()) merged.mutable_input()->set_data(ours->input_data.ToString());
  if (!ours->input_data.empty() && !merged.has_input()) return "data without input";
  if (merged.SerializeAsString() != theirs.SerializeAsString()) {
    return absl::StrCat("messages differ:\n ours: ", merged.ShortDebugString(),
                        "\n protobuf: ", theirs.ShortDebugString());
  }
  return "";
}

}  // namespace convserve::testing
