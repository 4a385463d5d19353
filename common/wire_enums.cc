#include "common/wire_enums.h"

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

}  // namespace convserve
