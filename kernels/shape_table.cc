#include "kernels/shape_table.h"

#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace convserve {

absl::StatusOr<std::vector<NamedShape>> ReadShapeTable(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open shape table ", path));
  std::vector<NamedShape> shapes;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    std::vector<std::string> cols = absl::StrSplit(text, '\t', absl::SkipWhitespace());
    std::vector<int64_t> v;
    for (size_t i = 1; i < cols.size(); ++i) {
      int64_t x = 0;
      if (!absl::SimpleAtoi(cols[i], &x)) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", line_no, ": column ", i + 1, " is not an integer"));
      }
      v.push_back(x);
    }
    NamedShape shape;
    shape.name = cols[0];
    ConvProblem& pb = shape.problem;
    ConvParams& p = pb.params;
    if (v.size() == 15) {
      pb.batch = v[0];
      p.in_channels = v[1];
      pb.height = v[2];
      pb.width = v[3];
      p.out_channels = v[4];
      p.kernel_h = v[5];
      p.kernel_w = v[6];
      p.stride_h = v[7];
      p.stride_w = v[8];
      p.pad_h = v[9];
      p.pad_w = v[10];
      p.dilation_h = v[11];
      p.dilation_w = v[12];
      p.groups = v[13];
      p.has_bias = v[14] != 0;
    } else if (v.size() == 8) {
      pb.batch = 1;
      p.in_channels = v[0];
      pb.height = v[1];
      pb.width = v[2];
      p.out_channels = v[3];
      p.kernel_h = v[4];
      p.kernel_w = v[5];
      p.stride_h = p.stride_w = v[6];
      p.pad_h = p.pad_w = v[7];
    } else {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": expected 16 or 9 ",
                                                     "columns, got ", cols.size()));
    }
    if (absl::Status s = ValidateProblem(pb); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_no, ": ", s.message()));
    }
    shapes.push_back(std::move(shape));
  }
  return shapes;
}

}  // namespace convserve
