// Tests of kernels/tuning_cache_file.h: the record format on its own, and the file helpers on a
// real temporary directory. What the tuner does with a damaged file is in tuner_test.cc.
#include "kernels/tuning_cache_file.h"

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace convserve {
namespace tuning_cache {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

Record SampleRecord() {
  Record r;
  r.fingerprint.gpu_name = "NVIDIA H100 80GB HBM3";
  r.fingerprint.sm_count = 132;
  r.fingerprint.compute_capability = 90;
  r.fingerprint.driver_version = 13000;
  r.fingerprint.library_version = "convserve-cuda-2";
  ConvProblem& p = r.problem;
  p.params.in_channels = 256;
  p.params.out_channels = 512;
  p.params.kernel_h = 1;
  p.params.kernel_w = 3;
  p.params.stride_h = 2;
  p.params.stride_w = 1;
  p.params.pad_h = 0;
  p.params.pad_w = 1;
  p.params.dilation_w = 2;
  p.params.groups = 4;
  p.params.dtype = DataType::kBFloat16;
  p.params.has_bias = true;
  p.params.activation = Activation::kSilu;
  p.batch = 16;
  p.height = 28;
  p.width = 30;
  p.input_layout = Layout::kNchw;
  p.output_layout = Layout::kNhwc;
  r.entry.config = "b128x128x32_w64x64_s4";
  r.entry.time_us = 123.456;
  r.entry.runner_up = "b64x128x32_w32x64_s4";
  r.entry.runner_up_time_us = 130.5;
  r.entry.measure_wall_seconds = 0.25;
  r.entry.measure_gpu_seconds = 0.031;
  return r;
}

TEST(TuningCacheRecordTest, RoundTripsEveryField) {
  const Record in = SampleRecord();
  const std::string line = FormatRecord(in);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  absl::StatusOr<Record> out = ParseRecord(line);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->fingerprint.ToString(), in.fingerprint.ToString());
  EXPECT_EQ(out->fingerprint.library_version, in.fingerprint.library_version);
  EXPECT_EQ(out->problem.ToString(), in.problem.ToString());
  EXPECT_EQ(out->problem.params.dilation_h, 1);
  EXPECT_EQ(out->problem.params.dilation_w, 2);
  EXPECT_EQ(out->entry.config, in.entry.config);
  EXPECT_DOUBLE_EQ(out->entry.time_us, 123.456);
  EXPECT_EQ(out->entry.runner_up, in.entry.runner_up);
  EXPECT_DOUBLE_EQ(out->entry.runner_up_time_us, 130.5);
  EXPECT_DOUBLE_EQ(out->entry.measure_wall_seconds, 0.25);
  EXPECT_DOUBLE_EQ(out->entry.measure_gpu_seconds, 0.031);
}

TEST(TuningCacheRecordTest, IsHumanReadable) {
  const std::string line = FormatRecord(SampleRecord());
  EXPECT_THAT(line, HasSubstr("gpu=NVIDIA H100 80GB HBM3\t"));
  EXPECT_THAT(line, HasSubstr("\tconfig=b128x128x32_w64x64_s4\t"));
  EXPECT_THAT(line, HasSubstr("\tdtype=bf16\t"));
  EXPECT_THAT(line, HasSubstr("\tin_layout=nchw\tout_layout=nhwc\t"));
}

TEST(TuningCacheRecordTest, FieldOrderDoesNotMatterAndUnknownFieldsAreIgnored) {
  std::vector<std::string> fields = absl::StrSplit(FormatRecord(SampleRecord()), '\t');
  std::reverse(fields.begin(), fields.end());
  fields.push_back("added_in_a_later_build=42");
  absl::StatusOr<Record> out = ParseRecord(absl::StrJoin(fields, "\t"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->problem.ToString(), SampleRecord().problem.ToString());
}

TEST(TuningCacheRecordTest, RejectsDuplicateFields) {
  absl::StatusOr<Record> out = ParseRecord(FormatRecord(SampleRecord()) + "\tk=64");
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("duplicate field 'k'"));
}

TEST(TuningCacheRecordTest, RejectsOutOfRangeValues) {
  for (const auto& [from, to, message] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"\tsms=132", "\tsms=99999999999", "field 'sms' is not an integer"},
           {"\tbias=1", "\tbias=2", "field 'bias' must be 0 or 1"},
           {"\tdtype=bf16", "\tdtype=fp8", "field 'dtype' has unknown value 'fp8'"},
           {"\ttime_us=123.456", "\ttime_us=nan", "'time_us' is not a non-negative number"},
           {"\ttime_us=123.456", "\ttime_us=inf", "'time_us' is not a non-negative number"},
           {"\tc=256", "\tc=0", "in_channels must be >= 1"},
           {"\th=28", "\th=-28", "input height (H) must be >= 1"},
       }) {
    std::string line = FormatRecord(SampleRecord());
    const size_t at = line.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    line.replace(at, from.size(), to);
    absl::StatusOr<Record> out = ParseRecord(line);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << to;
    EXPECT_THAT(std::string(out.status().message()), HasSubstr(message)) << to;
  }
}

class TuningCacheFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "convserve_cache_file_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(TuningCacheFileTest, MissingFileIsEmptyWithoutWarnings) {
  FileContents contents = ReadFile((dir_ / "absent").string());
  EXPECT_TRUE(contents.records.empty());
  EXPECT_TRUE(contents.warnings.empty());
}

TEST_F(TuningCacheFileTest, WrittenFileReadsBack) {
  const std::string path = (dir_ / "new" / "dir" / "cache").string();
  ASSERT_TRUE(WriteFileAtomically(path, Header() + FormatRecord(SampleRecord()) + "\n").ok());
  FileContents contents = ReadFile(path);
  EXPECT_TRUE(contents.warnings.empty());
  ASSERT_EQ(contents.records.size(), 1u);
  EXPECT_EQ(contents.records[0].entry.config, "b128x128x32_w64x64_s4");
}

TEST_F(TuningCacheFileTest, CrlfLinesAreAccepted) {
  const std::string path = (dir_ / "cache").string();
  std::string text = Header() + FormatRecord(SampleRecord()) + "\n";
  for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 2)) {
    text.insert(at, "\r");
  }
  ASSERT_TRUE(WriteFileAtomically(path, text).ok());
  FileContents contents = ReadFile(path);
  EXPECT_TRUE(contents.warnings.empty()) << contents.warnings[0];
  EXPECT_EQ(contents.records.size(), 1u);
}

TEST_F(TuningCacheFileTest, ManyBadLinesAreSummarised) {
  const std::string path = (dir_ / "cache").string();
  std::string text = Header();
  for (int i = 0; i < 50; ++i) absl::StrAppend(&text, "junk line ", i, "\n");
  absl::StrAppend(&text, FormatRecord(SampleRecord()), "\n");
  ASSERT_TRUE(WriteFileAtomically(path, text).ok());
  FileContents contents = ReadFile(path);
  EXPECT_EQ(contents.records.size(), 1u);
  ASSERT_EQ(contents.warnings.size(), 6u);
  EXPECT_THAT(contents.warnings[0], HasSubstr(path));
  EXPECT_THAT(contents.warnings[5], HasSubstr("45 more bad lines skipped"));
}

TEST_F(TuningCacheFileTest, FailedWriteLeavesNoTemporaryFile) {
  const fs::path target = dir_ / "occupied";
  fs::create_directories(target / "not_empty");  // rename cannot replace a non-empty directory
  absl::Status status = WriteFileAtomically(target.string(), "contents\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(status.message()), HasSubstr("cannot rename"));
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ::testing::ElementsAre("occupied"));
}

}  // namespace
}  // namespace tuning_cache
}  // namespace convserve
