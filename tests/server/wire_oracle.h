// Protobuf's own parser as the oracle for the zero-copy codecs (server/forward_wire.h,
// server/kserve/infer_wire.h): shared by their unit tests and the fuzzer
// (tests/fuzz/wire_fuzzer.cc).
#pragma once

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "convserve/v1/conv2d.pb.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "server/forward_wire.h"
#include "server/kserve/infer_wire.h"

namespace convserve::testing {

// `bytes` cut at `cuts` (offsets, any order, clamped) into views of one shared copy.
struct CutBytes {
  std::shared_ptr<const std::string> owned;
  std::vector<absl::string_view> pieces;
};
inline CutBytes Cut(const std::string& bytes, std::vector<size_t> cuts) {
  for (size_t& cut : cuts) cut = std::min(cut, bytes.size());
  std::sort(cuts.begin(), cuts.end());
  cuts.push_back(bytes.size());
  CutBytes out{std::make_shared<const std::string>(bytes), {}};
  size_t begin = 0;
  for (size_t cut : cuts) {
    out.pieces.emplace_back(out.owned->data() + begin, cut - begin);
    begin = cut;
  }
  return out;
}

// Serialised with maps in key order, so equal messages give equal bytes.
inline std::string Canonical(const google::protobuf::MessageLite& message) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

// "" when every piece of `bytes` lies inside `owned`.
inline std::string Borrowed(const TensorBytes& bytes, const std::string& owned) {
  for (absl::string_view piece : bytes.pieces()) {
    if (!piece.empty() && (piece.data() < owned.data() ||
                           piece.data() + piece.size() > owned.data() + owned.size())) {
      return "a tensor does not point into the received bytes";
    }
  }
  return "";
}

// Both refuse (ours with INVALID_ARGUMENT), or both accept with the same message: "" then, what
// differs otherwise.
template <typename Ours>
std::string SameVerdict(const absl::StatusOr<Ours>& ours, bool theirs_ok) {
  if (ours.ok() != theirs_ok) {
    return absl::StrCat("protobuf ", theirs_ok ? "accepts" : "refuses", " it, ours says ",
                        ours.status().ToString());
  }
  if (!theirs_ok && ours.status().code() != absl::StatusCode::kInvalidArgument) {
    return absl::StrCat("refused with the wrong code: ", ours.status().ToString());
  }
  return "";
}

// ParseForwardRequest against protobuf on `bytes` cut at `cuts`.
inline std::string CompareWithProtobuf(const std::string& bytes, std::vector<size_t> cuts) {
  const CutBytes cut = Cut(bytes, std::move(cuts));
  absl::StatusOr<ForwardWireRequest> ours = ParseForwardRequest(cut.pieces, cut.owned);
  v1::ForwardRequest theirs;
  const google::protobuf::LogSilencer quiet;  // bad strings are the point here
  const bool theirs_ok = theirs.ParseFromString(bytes);
  if (std::string verdict = SameVerdict(ours, theirs_ok); !verdict.empty() || !theirs_ok) {
    return verdict;
  }
  if (!ours->request.input().data().empty()) return "input.data was parsed, not borrowed";
  if (std::string borrowed = Borrowed(ours->input_data, *cut.owned); !borrowed.empty()) {
    return borrowed;
  }
  v1::ForwardRequest merged = ours->request;
  if (merged.has_input()) merged.mutable_input()->set_data(ours->input_data.ToString());
  if (!ours->input_data.empty() && !merged.has_input()) return "data without input";
  if (Canonical(merged) != Canonical(theirs)) {
    return absl::StrCat("messages differ:\n ours: ", merged.ShortDebugString(),
                        "\n protobuf: ", theirs.ShortDebugString());
  }
  return "";
}

// kserve::ParseModelInferRequest against protobuf on `bytes` cut at `cuts`.
inline std::string CompareInferWithProtobuf(const std::string& bytes, std::vector<size_t> cuts) {
  const CutBytes cut = Cut(bytes, std::move(cuts));
  absl::StatusOr<kserve::InferWireRequest> ours =
      kserve::ParseModelInferRequest(cut.pieces, cut.owned);
  inference::ModelInferRequest theirs;
  const google::protobuf::LogSilencer quiet;  // bad strings are the point here
  const bool theirs_ok = theirs.ParseFromString(bytes);
  if (std::string verdict = SameVerdict(ours, theirs_ok); !verdict.empty() || !theirs_ok) {
    return verdict;
  }
  if (ours->request.raw_input_contents_size() != 0) return "raw_input_contents were parsed";
  inference::ModelInferRequest merged = ours->request;
  for (const TensorBytes& raw : ours->raw_input_contents) {
    if (std::string borrowed = Borrowed(raw, *cut.owned); !borrowed.empty()) return borrowed;
    merged.add_raw_input_contents(raw.ToString());
  }
  if (Canonical(merged) != Canonical(theirs)) {
    return absl::StrCat("messages differ:\n ours: ", merged.ShortDebugString(),
                        "\n protobuf: ", theirs.ShortDebugString());
  }
  return "";
}

// A serialised reply's bytes, its slices joined ("" when it cannot be read).
inline std::string Flatten(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return "";
  std::string out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// What both codecs' tests and the fuzzer ask of an oracle above: "" when ours agrees.
using Oracle = std::string (*)(const std::string& bytes, std::vector<size_t> cuts);

// Up to `max_cuts` random offsets in [0, size].
inline std::vector<size_t> RandomCuts(std::mt19937& rng, size_t size, int max_cuts) {
  std::vector<size_t> cuts(rng() % (max_cuts + 1));
  for (size_t& cut : cuts) cut = size == 0 ? 0 : rng() % (size + 1);
  return cuts;
}

// `oracle` on every prefix of `bytes`: "" when it agrees on all, else the first disagreement.
inline std::string CheckEveryTruncation(Oracle oracle, const std::string& bytes,
                                        std::mt19937& rng) {
  for (size_t size = 0; size <= bytes.size(); ++size) {
    std::string diff = oracle(bytes.substr(0, size), RandomCuts(rng, size, 3));
    if (!diff.empty()) return absl::StrCat("prefix of ", size, " bytes: ", diff);
  }
  return "";
}

// `oracle` on `rounds` messages from `make()`, each with 1-4 random bytes changed.
template <typename MakeBytes>
std::string CheckRandomByteChanges(Oracle oracle, MakeBytes make, int rounds, std::mt19937& rng) {
  for (int round = 0; round < rounds; ++round) {
    std::string bytes = make();
    const int changes = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < changes; ++i) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    std::string diff = oracle(bytes, RandomCuts(rng, bytes.size(), 4));
    if (!diff.empty()) return absl::StrCat("round ", round, ": ", diff);
  }
  return "";
}

}  // namespace convserve::testing
