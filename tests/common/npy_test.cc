// common/npy.h: round trips in every dtype, the header variants NumPy writes, and a clear
// INVALID_ARGUMENT for every way a file can be wrong.
#include "common/npy.h"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/host_numeric.h"

namespace convserve {
namespace {

// A version 1.0 .npy file with `header` (unpadded dict text) and `data`.
std::string NpyV1(const std::string& header, const std::string& data) {
  std::string dict = header + "\n";
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(dict.size() & 0xff));
  out.push_back(static_cast<char>(dict.size() >> 8));
  return out + dict + data;
}

std::string Floats(std::initializer_list<float> values) {
  std::string out;
  for (float v : values) out.append(reinterpret_cast<const char*>(&v), 4);
  return out;
}

void ExpectInvalid(const absl::StatusOr<NpyArray>& parsed, const std::string& fragment) {
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << parsed.status();
  EXPECT_NE(parsed.status().message().find(fragment), std::string::npos) << parsed.status();
}

TEST(NpyTest, RoundTripsEveryDtypeAndRank) {
  for (DataType dtype : {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16}) {
    for (std::vector<int64_t> shape :
         std::vector<std::vector<int64_t>>{{}, {5}, {2, 3}, {2, 3, 4, 5}, {1, 0, 3}}) {
      NpyArray array;
      array.dtype = dtype;
      array.shape = shape;
      for (int64_t i = 0; i < array.elements(); ++i) {
        array.data.resize(static_cast<size_t>((i + 1) * DataTypeSize(dtype)));
        StoreFromDouble(dtype, array.data.data(), i, 0.25 * static_cast<double>(i) - 3.0);
      }
      const std::string bytes = SerializeNpy(array);
      // NumPy's rule: the data starts on a 64-byte boundary.
      EXPECT_EQ((bytes.size() - array.data.size()) % 64, 0u);
      absl::StatusOr<NpyArray> parsed =
          ParseNpy(bytes, /*bf16_from_uint16=*/dtype == DataType::kBFloat16);
      ASSERT_TRUE(parsed.ok()) << parsed.status();
      EXPECT_EQ(parsed->dtype, dtype);
      EXPECT_EQ(parsed->shape, shape);
      EXPECT_EQ(parsed->data, array.data);
    }
  }
}

TEST(NpyTest, HalfAndBfloat16ValuesSurviveTheFile) {
  // Values exactly representable in each format come back bit for bit.
  const double values[] = {0.0, -0.0, 1.0, -2.5, 65504.0, 6.103515625e-05, 5.9604644775390625e-08};
  NpyArray half;
  half.dtype = DataType::kFloat16;
  half.shape = {7};
  half.data.resize(14);
  for (int i = 0; i < 7; ++i) StoreFromDouble(DataType::kFloat16, half.data.data(), i, values[i]);
  absl::StatusOr<NpyArray> parsed = ParseNpy(SerializeNpy(half));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(LoadAsDouble(DataType::kFloat16, parsed->data.data(), i), values[i]) << i;
  }

  NpyArray bf16;
  bf16.dtype = DataType::kBFloat16;
  bf16.shape = {3};
  bf16.data.resize(6);
  const double bf16_values[] = {1.0, -3.0e38, 0.0078125};
  for (int i = 0; i < 3; ++i) {
    StoreFromDouble(DataType::kBFloat16, bf16.data.data(), i, bf16_values[i]);
  }
  const std::string bytes = SerializeNpy(bf16);
  EXPECT_NE(bytes.find("'<u2'"), std::string::npos);  // NumPy reads it as uint16 bits
  parsed = ParseNpy(bytes, /*bf16_from_uint16=*/true);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(
        LoadAsDouble(DataType::kBFloat16, parsed->data.data(), i),
        static_cast<double>(Bf16BitsToFloat(FloatToBf16Bits(static_cast<float>(bf16_values[i])))))
        << i;
  }
  // Without the caller's word that uint16 means bf16, it is an unsupported dtype.
  ExpectInvalid(ParseNpy(bytes), "'<u2'");
}

TEST(NpyTest, ReadsHeaderVariantsNumpyWrites) {
  // No trailing comma in the dict, a 1-tuple shape, and extra spaces.
  absl::StatusOr<NpyArray> parsed = ParseNpy(
      NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", Floats({1.5f, -2.f})));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->shape, std::vector<int64_t>{2});
  EXPECT_EQ(parsed->data, Floats({1.5f, -2.f}));

  // Format 2.0: a 4-byte header length.
  std::string dict = "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 1), }\n";
  std::string v2 = std::string("\x93NUMPY\x02\x00", 8);
  for (int i = 0; i < 4; ++i) v2.push_back(static_cast<char>((dict.size() >> (8 * i)) & 0xff));
  v2 += dict + std::string("\x00\x3c", 2);  // fp16 1.0
  parsed = ParseNpy(v2);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->dtype, DataType::kFloat16);
  EXPECT_EQ(LoadAsDouble(DataType::kFloat16, parsed->data.data(), 0), 1.0);
}

TEST(NpyTest, MalformedFilesAreInvalidArgumentNamingTheProblem) {
  ExpectInvalid(ParseNpy("PK\x03\x04 a zip file"), "bad magic");
  ExpectInvalid(ParseNpy(""), "bad magic");
  ExpectInvalid(ParseNpy(std::string("\x93NUMPY\x07\x00\x10\x00", 10)), "version 7");

  const std::string good =
      NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", Floats({1, 2, 3, 4}));
  ExpectInvalid(ParseNpy(good.substr(0, 20)), "truncated .npy header");
  // Data cut short: the message gives both byte counts.
  ExpectInvalid(ParseNpy(good.substr(0, good.size() - 3)), "needs 16 bytes, file has 13");

  ExpectInvalid(
      ParseNpy(NpyV1("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", Floats({1}))),
      "'>f4'");
  ExpectInvalid(
      ParseNpy(NpyV1("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", Floats({1}))),
      "'<i4'");
  ExpectInvalid(
      ParseNpy(NpyV1("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", Floats({1}))),
      "Fortran");
  ExpectInvalid(
      ParseNpy(NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }", Floats({1}))),
      "bad .npy shape");
  ExpectInvalid(ParseNpy(NpyV1("{'descr': '<f4', 'fortran_order': False}", "")),
                "no 'shape' entry");
  ExpectInvalid(ParseNpy(NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, "
                               "1048576, 1048576), }",
                               "")),
                "too large");
}

TEST(NpyTest, FilesReportTheirPath) {
  const std::string path = absl::StrCat(testing::TempDir(), "/npy_test_", getpid(), ".npy");
  NpyArray array;
  array.shape = {3};
  array.data = Floats({1, 2, 3});
  ASSERT_TRUE(WriteNpyFile(path, array).ok());
  absl::StatusOr<NpyArray> read = ReadNpyFile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->data, array.data);

  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fputs("garbage", f);
    std::fclose(f);
  }
  read = ReadNpyFile(path);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find(path), std::string::npos) << read.status();
  std::remove(path.c_str());

  read = ReadNpyFile(path + ".absent");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find(".absent"), std::string::npos);
}

}  // namespace
}  // namespace convserve
