// The conv library's element types and layouts as the native wire API spells them. One
// definition for the server, the client library and the tests.
#pragma once

#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"

namespace convserve {

convserve::v1::DataType DataTypeToProto(DataType dtype);
convserve::v1::Layout LayoutToProto(Layout layout);

}  // namespace convserve
