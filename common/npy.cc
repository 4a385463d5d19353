// .npy: magic, version, a little-endian header length, then a Python dict literal naming
// 'descr', 'fortran_order' and 'shape', padded so the data starts 64-byte aligned.
#include "common/npy.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace convserve {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

// The value text that follows 'key': in the header dict, up to the next top-level ',' or '}'.
absl::StatusOr<std::string> DictValue(const std::string& header, const std::string& key) {
  const std::string quoted = "'" + key + "'";
  size_t pos = header.find(quoted);
  if (pos == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("npy header has no ", quoted, " entry"));
  }
  pos = header.find(':', pos + quoted.size());
  if (pos == std::string::npos) return absl::InvalidArgumentError("npy header is malformed");
  ++pos;
  int depth = 0;
  size_t end = pos;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  return std::string(absl::StripAsciiWhitespace(header.substr(pos, end - pos)));
}

}  // namespace

int64_t NpyArray::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<NpyArray> ParseNpy(const std::string& bytes, bool bf16_from_uint16) {
  if (bytes.size() < kMagicSize + 4 || bytes.compare(0, kMagicSize, kMagic, kMagicSize) != 0) {
    return absl::InvalidArgumentError("not an .npy file (bad magic)");
  }
  const auto major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return absl::InvalidArgumentError("truncated .npy header");
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    header_start = 12;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported .npy format version ", major));
  }
  if (header_len > bytes.size() - header_start) {
    return absl::InvalidArgumentError("truncated .npy header");
  }
  const std::string header = bytes.substr(header_start, header_len);

  absl::StatusOr<std::string> descr = DictValue(header, "descr");
  if (!descr.ok()) return descr.status();
  absl::StatusOr<std::string> fortran = DictValue(header, "fortran_order");
  if (!fortran.ok()) return fortran.status();
  absl::StatusOr<std::string> shape_text = DictValue(header, "shape");
  if (!shape_text.ok()) return shape_text.status();

  NpyArray array;
  const std::string type(absl::StripSuffix(absl::StripPrefix(*descr, "'"), "'"));
  if (type == "<f4") {
    array.dtype = DataType::kFloat32;
  } else if (type == "<f2") {
    array.dtype = DataType::kFloat16;
  } else if ((type == "<u2" || type == "|V2" || type == "<V2") && bf16_from_uint16) {
    array.dtype = DataType::kBFloat16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported .npy dtype ", *descr,
                     " (want little-endian float32 '<f4', float16 '<f2', or bfloat16 bits "
                     "'<u2' for a bf16 tensor)"));
  }
  if (*fortran != "False") {
    return absl::InvalidArgumentError("Fortran-ordered .npy arrays are not supported");
  }
  std::string dims(absl::StripSuffix(absl::StripPrefix(*shape_text, "("), ")"));
  for (absl::string_view part : absl::StrSplit(dims, ',', absl::SkipWhitespace())) {
    int64_t d = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &d) || d < 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad .npy shape ", *shape_text));
    }
    if (d != 0 && array.elements() > (int64_t{1} << 40) / d) {
      return absl::InvalidArgumentError(absl::StrCat(".npy shape too large: ", *shape_text));
    }
    array.shape.push_back(d);
  }
  const size_t data_start = header_start + header_len;
  const auto want = static_cast<size_t>(array.elements() * DataTypeSize(array.dtype));
  const size_t have = bytes.size() - data_start;
  if (have < want) {
    return absl::InvalidArgumentError(absl::StrCat(".npy data truncated: shape ", *shape_text,
                                                   " needs ", want, " bytes, file has ", have));
  }
  array.data = bytes.substr(data_start, want);
  return array;
}

absl::StatusOr<NpyArray> ReadNpyFile(const std::string& path, bool bf16_from_uint16) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  absl::StatusOr<NpyArray> array = ParseNpy(contents.str(), bf16_from_uint16);
  if (!array.ok()) {
    return absl::Status(array.status().code(), absl::StrCat(path, ": ", array.status().message()));
  }
  return array;
}

std::string SerializeNpy(const NpyArray& array) {
  const char* descr = array.dtype == DataType::kFloat32   ? "<f4"
                      : array.dtype == DataType::kFloat16 ? "<f2"
                                                          : "<u2";
  std::string shape;
  for (int64_t d : array.shape) absl::StrAppend(&shape, d, ",");
  if (array.shape.size() > 1) shape.pop_back();  // (3,) keeps its comma; (2,3) has none
  std::string header = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (",
                                    shape, "), }");
  // Pad with spaces so magic + version + length + header + '\n' is a multiple of 64.
  const size_t unpadded = kMagicSize + 2 + 2 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic, kMagicSize);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out += array.data;
  return out;
}

absl::Status WriteNpyFile(const std::string& path, const NpyArray& array) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  const std::string bytes = SerializeNpy(array);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

}  // namespace convserve
