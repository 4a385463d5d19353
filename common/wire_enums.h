// The conv library's element types and layouts as the native wire API spells them, both ways.
// One definition for the server, the client library and the tests.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"

namespace convserve {

convserve::v1::DataType DataTypeToProto(DataType dtype);
convserve::v1::Layout LayoutToProto(Layout layout);

// Proto3 enums are open: a value arrives as any int, so both conversions check the range.
// `field` is the name the error message gives the value (e.g. "spec.dtype", "input.layout").

// INVALID_ARGUMENT naming `field` for DATA_TYPE_UNSPECIFIED or an unknown value.
absl::StatusOr<DataType> DataTypeFromProto(int value, const std::string& field = "dtype");
// LAYOUT_DEFAULT maps to `default_layout`; INVALID_ARGUMENT naming `field` for an unknown value.
absl::StatusOr<Layout> LayoutFromProto(int value, const std::string& field = "layout",
                                       Layout default_layout = Layout::kNchw);

}  // namespace convserve
