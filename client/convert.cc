// Wire <-> host conversions and command-line names.
#include "client/convert.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "kernels/host_numeric.h"

namespace convserve {
namespace {

// Looks `name` up in a {name, value} table, case-insensitively.
template <typename T, size_t kSize>
absl::StatusOr<T> Lookup(const char* what, absl::string_view name,
                         const std::pair<const char*, T> (&table)[kSize]) {
  const std::string lower = absl::AsciiStrToLower(name);
  std::vector<std::string> names;
  for (const auto& [entry, value] : table) {
    if (lower == entry) return value;
    names.push_back(entry);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown ", what, " '", name, "' (want one of: ", absl::StrJoin(names, ", "), ")"));
}

}  // namespace

absl::StatusOr<v1::DataType> ParseDataType(absl::string_view name) {
  static constexpr std::pair<const char*, v1::DataType> kNames[] = {
      {"fp32", v1::DATA_TYPE_FP32}, {"fp16", v1::DATA_TYPE_FP16}, {"bf16", v1::DATA_TYPE_BF16}};
  return Lookup("dtype", name, kNames);
}

absl::StatusOr<v1::Layout> ParseLayout(absl::string_view name) {
  static constexpr std::pair<const char*, v1::Layout> kNames[] = {{"nchw", v1::LAYOUT_NCHW},
                                                                  {"nhwc", v1::LAYOUT_NHWC}};
  return Lookup("layout", name, kNames);
}

absl::StatusOr<v1::Activation> ParseActivation(absl::string_view name) {
  static constexpr std::pair<const char*, v1::Activation> kNames[] = {
      {"none", v1::ACTIVATION_NONE},       {"relu", v1::ACTIVATION_RELU},
      {"silu", v1::ACTIVATION_SILU},       {"gelu_tanh", v1::ACTIVATION_GELU_TANH},
      {"sigmoid", v1::ACTIVATION_SIGMOID}, {"tanh", v1::ACTIVATION_TANH}};
  return Lookup("activation", name, kNames);
}

absl::StatusOr<v1::Precision> ParsePrecision(absl::string_view name) {
  static constexpr std::pair<const char*, v1::Precision> kNames[] = {
      {"tf32", v1::PRECISION_TF32}, {"exact_fp32", v1::PRECISION_EXACT_FP32}};
  return Lookup("precision", name, kNames);
}

absl::StatusOr<v1::Size2d> ParseSize2d(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(absl::AsciiStrToLower(text), 'x');
  int64_t h = 0;
  int64_t w = 0;
  const bool ok =
      (parts.size() == 1 && absl::SimpleAtoi(parts[0], &h) && (w = h, true)) ||
      (parts.size() == 2 && absl::SimpleAtoi(parts[0], &h) && absl::SimpleAtoi(parts[1], &w));
  if (!ok || h < 0 || w < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size '", text, "' (want HxW such as 3x3, or one number)"));
  }
  v1::Size2d size;
  size.set_h(h);
  size.set_w(w);
  return size;
}

absl::StatusOr<std::vector<int32_t>> ParseIntList(absl::string_view text) {
  std::vector<int32_t> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t value = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &value) || value < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad list '", text, "' (want positive integers such as 1,8,32)"));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<v1::Tensor> TensorFromNpy(NpyArray array, Layout layout) {
  if (array.shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an activation tensor must be 4-D ([N, C, H, W] for nchw, [N, H, W, C] for nhwc), got ",
        array.shape.size(), "-D"));
  }
  v1::Tensor tensor;
  tensor.set_dtype(DataTypeToProto(array.dtype));
  tensor.set_layout(LayoutToProto(layout));
  const std::vector<int64_t>& s = array.shape;
  const std::vector<int64_t> nchw =
      layout == Layout::kNchw ? s : std::vector<int64_t>{s[0], s[3], s[1], s[2]};
  for (int64_t d : nchw) tensor.add_shape(d);
  tensor.set_data(std::move(array.data));
  return tensor;
}

absl::StatusOr<NpyArray> NpyFromTensor(v1::Tensor tensor) {
  absl::StatusOr<DataType> dtype = DataTypeFromProto(tensor.dtype(), "tensor dtype");
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<Layout> layout = LayoutFromProto(tensor.layout(), "tensor layout");
  if (!layout.ok()) return layout.status();
  if (tensor.shape_size() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor shape must be [N, C, H, W], got ", tensor.shape_size(), " dims"));
  }
  NpyArray array;
  array.dtype = *dtype;
  const auto& s = tensor.shape();
  array.shape = *layout == Layout::kNchw ? std::vector<int64_t>{s[0], s[1], s[2], s[3]}
                                         : std::vector<int64_t>{s[0], s[2], s[3], s[1]};
  for (int64_t d : array.shape) {
    if (d < 0) return absl::InvalidArgumentError("tensor shape has a negative dimension");
  }
  const int64_t want = array.elements() * DataTypeSize(array.dtype);
  if (static_cast<int64_t>(tensor.data().size()) != want) {
    return absl::InvalidArgumentError(absl::StrCat("tensor data is ", tensor.data().size(),
                                                   " bytes; its shape and dtype need ", want));
  }
  array.data = std::move(*tensor.mutable_data());
  return array;
}

NpyArray CastNpy(const NpyArray& array, DataType dtype) {
  if (array.dtype == dtype) return array;
  NpyArray out;
  out.dtype = dtype;
  out.shape = array.shape;
  const int64_t n = array.elements();
  out.data.resize(static_cast<size_t>(n * DataTypeSize(dtype)));
  for (int64_t i = 0; i < n; ++i) {
    StoreFromDouble(dtype, out.data.data(), i, LoadAsDouble(array.dtype, array.data.data(), i));
  }
  return out;
}

}  // namespace convserve
