// Reads the project's shape lists (tests/data/coverage.tsv, resnet50.tsv): tab-separated conv
// shapes, '#' comments. Used by the kernel tests and the benchmarks.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/conv_problem.h"

namespace convserve {

struct NamedShape {
  std::string name;
  ConvProblem problem;  // dtype float32, NCHW, no activation; callers override those
};

// Two column sets are understood, told apart by their count:
//   16: name N C H W K R S stride_h stride_w pad_h pad_w dil_h dil_w groups bias (coverage)
//    9: name C H W K R S stride pad (resnet50; batch = 1, dilation 1, groups 1, no bias)
// INVALID_ARGUMENT naming the line on anything else.
absl::StatusOr<std::vector<NamedShape>> ReadShapeTable(const std::string& path);

}  // namespace convserve
