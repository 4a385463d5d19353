#include "common/wire_enums.h"

#include "absl/strings/str_cat.h"

namespace convserve {

convserve::v1::DataType DataTypeToProto(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return convserve::v1::DATA_TYPE_FP32;
    case DataType::kFloat16:
      return convserve::v1::DATA_TYPE_FP16;
    case DataType::kBFloat16:
      return convserve::v1::DATA_TYPE_BF16;
  }
  return convserve::v1::DATA_TYPE_UNSPECIFIED;
}

convserve::v1::Layout LayoutToProto(Layout layout) {
  return layout == Layout::kNhwc ? convserve::v1::LAYOUT_NHWC : convserve::v1::LAYOUT_NCHW;
}

absl::StatusOr<DataType> DataTypeFromProto(int value, const std::string& field) {
  switch (value) {
    case convserve::v1::DATA_TYPE_FP32:
      return DataType::kFloat32;
    case convserve::v1::DATA_TYPE_FP16:
      return DataType::kFloat16;
    case convserve::v1::DATA_TYPE_BF16:
      return DataType::kBFloat16;
    case convserve::v1::DATA_TYPE_UNSPECIFIED:
      return absl::InvalidArgumentError(
          absl::StrCat(field, " must be set (DATA_TYPE_FP32, DATA_TYPE_FP16 or DATA_TYPE_BF16)"));
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, " has unknown value ", value));
  }
}

absl::StatusOr<Layout> LayoutFromProto(int value, const std::string& field, Layout default_layout) {
  switch (value) {
    case convserve::v1::LAYOUT_DEFAULT:
      return default_layout;
    case convserve::v1::LAYOUT_NCHW:
      return Layout::kNchw;
    case convserve::v1::LAYOUT_NHWC:
      return Layout::kNhwc;
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, " has unknown value ", value));
  }
}

}  // namespace convserve
