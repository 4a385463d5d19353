// Reading and writing the tuner's cache file (kernels/tuning_cache_file.h).
#include "kernels/tuning_cache_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace convserve {
namespace tuning_cache {
namespace {

constexpr absl::string_view kHeaderMagic = "convserve-tuning-cache";
constexpr int kFormatVersion = 1;
// Bounds that keep a hostile or damaged file from costing much memory or time.
constexpr int64_t kMaxFileBytes = int64_t{64} << 20;
constexpr int kMaxReportedBadLines = 5;

bool NeedsEscape(unsigned char c) { return c == '%' || c < 0x20 || c == 0x7f; }

std::string Escape(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char ch : value) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (NeedsEscape(c)) {
      absl::StrAppendFormat(&out, "%%%02X", c);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

absl::StatusOr<std::string> Unescape(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] != '%') {
      out.push_back(value[i]);
      continue;
    }
    const int hi = i + 2 < value.size() ? HexDigit(value[i + 1]) : -1;
    const int lo = i + 2 < value.size() ? HexDigit(value[i + 2]) : -1;
    if (hi < 0 || lo < 0) return absl::InvalidArgumentError("bad %-escape");
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

const char* Fp32MathName(Fp32Math math) { return math == Fp32Math::kExact ? "exact" : "tf32"; }

template <typename Enum, size_t kCount>
bool ParseEnum(absl::string_view text, const Enum (&values)[kCount], const char* (*name)(Enum),
               Enum* out) {
  for (Enum value : values) {
    if (text == name(value)) {
      *out = value;
      return true;
    }
  }
  return false;
}

constexpr DataType kDataTypes[] = {DataType::kFloat32, DataType::kFloat16, DataType::kBFloat16};
constexpr Fp32Math kFp32Maths[] = {Fp32Math::kTf32, Fp32Math::kExact};
constexpr Layout kLayouts[] = {Layout::kNchw, Layout::kNhwc};
constexpr Activation kActivations[] = {Activation::kNone,    Activation::kRelu,
                                       Activation::kSilu,    Activation::kGeluTanh,
                                       Activation::kSigmoid, Activation::kTanh};

// Reads the fields of one record by name, remembering the first problem met.
class FieldReader {
 public:
  explicit FieldReader(absl::flat_hash_map<std::string, std::string> fields)
      : fields_(std::move(fields)) {}

  const absl::Status& status() const { return status_; }

  std::string Text(const char* name, bool may_be_empty = false) {
    auto it = fields_.find(name);
    if (it == fields_.end()) {
      Fail(absl::StrCat("missing field '", name, "'"));
      return "";
    }
    if (it->second.empty() && !may_be_empty) Fail(absl::StrCat("empty field '", name, "'"));
    return it->second;
  }
  template <typename Int>
  Int Integer(const char* name) {
    Int value = 0;
    const std::string text = Text(name);
    if (status_.ok() && !absl::SimpleAtoi(text, &value)) {
      Fail(absl::StrCat("field '", name, "' is not an integer: '", text, "'"));
    }
    return value;
  }
  // A finite, non-negative duration.
  double Duration(const char* name) {
    double value = 0;
    const std::string text = Text(name);
    if (status_.ok() && (!absl::SimpleAtod(text, &value) || !std::isfinite(value) || value < 0)) {
      Fail(absl::StrCat("field '", name, "' is not a non-negative number: '", text, "'"));
      value = 0;
    }
    return value;
  }
  template <typename Enum, size_t kCount>
  Enum Named(const char* name, const Enum (&values)[kCount], const char* (*to_name)(Enum)) {
    Enum value = values[0];
    const std::string text = Text(name);
    if (status_.ok() && !ParseEnum(text, values, to_name, &value)) {
      Fail(absl::StrCat("field '", name, "' has unknown value '", text, "'"));
    }
    return value;
  }
  void Fail(std::string message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(std::move(message));
  }

 private:
  absl::flat_hash_map<std::string, std::string> fields_;
  absl::Status status_;
};

}  // namespace

std::string Header() {
  return absl::StrCat(kHeaderMagic, "\tversion=", kFormatVersion, "\n",
                      "# convserve tile tuning results: one tab-separated record per line, see "
                      "docs/tuning.md\n");
}

std::string FormatRecord(const Record& r) {
  const ConvProblem& p = r.problem;
  const ConvParams& c = p.params;
  const TunedEntry& e = r.entry;
  std::string line;
  auto field = [&line](absl::string_view name, absl::string_view value) {
    if (!line.empty()) line.push_back('\t');
    absl::StrAppend(&line, name, "=", Escape(value));
  };
  auto number = [&field](absl::string_view name, int64_t value) {
    field(name, absl::StrCat(value));
  };
  auto seconds = [&field](absl::string_view name, double value) {
    field(name, absl::StrFormat("%.6f", value));
  };
  auto micros = [&field](absl::string_view name, double value) {
    field(name, absl::StrFormat("%.3f", value));
  };
  field("key", p.ToString());  // for people reading the file; recomputed on load
  field("gpu", r.fingerprint.gpu_name);
  number("sms", r.fingerprint.sm_count);
  number("cc", r.fingerprint.compute_capability);
  number("driver", r.fingerprint.driver_version);
  field("library", r.fingerprint.library_version);
  number("n", p.batch);
  number("c", c.in_channels);
  number("h", p.height);
  number("w", p.width);
  number("k", c.out_channels);
  number("r", c.kernel_h);
  number("s", c.kernel_w);
  number("stride_h", c.stride_h);
  number("stride_w", c.stride_w);
  number("pad_h", c.pad_h);
  number("pad_w", c.pad_w);
  number("dil_h", c.dilation_h);
  number("dil_w", c.dilation_w);
  number("groups", c.groups);
  field("dtype", DataTypeName(c.dtype));
  field("fp32_math", Fp32MathName(c.fp32_math));
  number("bias", c.has_bias ? 1 : 0);
  field("activation", ActivationName(c.activation));
  field("in_layout", LayoutName(p.input_layout));
  field("out_layout", LayoutName(p.output_layout));
  field("config", e.config);
  micros("time_us", e.time_us);
  field("runner_up", e.runner_up);
  micros("runner_up_time_us", e.runner_up_time_us);
  seconds("measure_wall_s", e.measure_wall_seconds);
  seconds("measure_gpu_s", e.measure_gpu_seconds);
  return line;
}

absl::StatusOr<Record> ParseRecord(absl::string_view line) {
  absl::flat_hash_map<std::string, std::string> fields;
  for (absl::string_view part : absl::StrSplit(line, '\t')) {
    const size_t eq = part.find('=');
    if (eq == absl::string_view::npos || eq == 0) {
      return absl::InvalidArgumentError("field without 'name=value' form");
    }
    absl::StatusOr<std::string> value = Unescape(part.substr(eq + 1));
    if (!value.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("field '", part.substr(0, eq), "': ", value.status().message()));
    }
    if (!fields.emplace(std::string(part.substr(0, eq)), *std::move(value)).second) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate field '", part.substr(0, eq), "'"));
    }
  }
  FieldReader in(std::move(fields));
  Record r;
  r.fingerprint.gpu_name = in.Text("gpu", /*may_be_empty=*/true);
  r.fingerprint.sm_count = in.Integer<int>("sms");
  r.fingerprint.compute_capability = in.Integer<int>("cc");
  r.fingerprint.driver_version = in.Integer<int>("driver");
  r.fingerprint.library_version = in.Text("library", /*may_be_empty=*/true);
  ConvProblem& p = r.problem;
  ConvParams& c = p.params;
  p.batch = in.Integer<int64_t>("n");
  c.in_channels = in.Integer<int64_t>("c");
  p.height = in.Integer<int64_t>("h");
  p.width = in.Integer<int64_t>("w");
  c.out_channels = in.Integer<int64_t>("k");
  c.kernel_h = in.Integer<int64_t>("r");
  c.kernel_w = in.Integer<int64_t>("s");
  c.stride_h = in.Integer<int64_t>("stride_h");
  c.stride_w = in.Integer<int64_t>("stride_w");
  c.pad_h = in.Integer<int64_t>("pad_h");
  c.pad_w = in.Integer<int64_t>("pad_w");
  c.dilation_h = in.Integer<int64_t>("dil_h");
  c.dilation_w = in.Integer<int64_t>("dil_w");
  c.groups = in.Integer<int64_t>("groups");
  c.dtype = in.Named("dtype", kDataTypes, DataTypeName);
  c.fp32_math = in.Named("fp32_math", kFp32Maths, Fp32MathName);
  const int bias = in.Integer<int>("bias");
  if (bias != 0 && bias != 1) in.Fail("field 'bias' must be 0 or 1");
  c.has_bias = bias == 1;
  c.activation = in.Named("activation", kActivations, ActivationName);
  p.input_layout = in.Named("in_layout", kLayouts, LayoutName);
  p.output_layout = in.Named("out_layout", kLayouts, LayoutName);
  TunedEntry& e = r.entry;
  e.config = in.Text("config");
  e.time_us = in.Duration("time_us");
  e.runner_up = in.Text("runner_up", /*may_be_empty=*/true);
  e.runner_up_time_us = in.Duration("runner_up_time_us");
  e.measure_wall_seconds = in.Duration("measure_wall_s");
  e.measure_gpu_seconds = in.Duration("measure_gpu_s");
  if (!in.status().ok()) return in.status();
  if (absl::Status s = ValidateProblem(p); !s.ok()) return s;
  if (BatchBucket(p.batch) != p.batch) {
    return absl::InvalidArgumentError(absl::StrCat("batch ", p.batch, " is not a bucket"));
  }
  return r;
}

FileContents ReadFile(const std::string& path) {
  FileContents out;
  auto warn = [&out, &path](const std::string& reason) {
    out.warnings.push_back(absl::StrCat("tuning cache ", path, ": ", reason));
  };
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      warn(absl::StrCat("cannot stat: ", std::strerror(errno), "; starting with an empty cache"));
    }
    return out;
  }
  if (!S_ISREG(st.st_mode)) {
    warn("not a regular file; starting with an empty cache");
    return out;
  }
  if (st.st_size > kMaxFileBytes) {
    warn(absl::StrCat("is ", st.st_size, " bytes, over the ", kMaxFileBytes,
                      "-byte limit; ignoring it"));
    return out;
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    warn(absl::StrCat("cannot open: ", std::strerror(errno), "; starting with an empty cache"));
    return out;
  }
  std::string text((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (file.bad()) {
    warn("read error; starting with an empty cache");
    return out;
  }
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n');
  // A well-formed file ends with a newline, which leaves one empty piece at the end.
  const bool truncated = !text.empty() && text.back() != '\n';
  const std::string expected_header = absl::StrCat(kHeaderMagic, "\tversion=", kFormatVersion);
  absl::string_view header = lines.empty() ? "" : lines[0];
  if (!header.empty() && header.back() == '\r') header.remove_suffix(1);
  if (header != expected_header) {
    if (absl::StartsWith(header, kHeaderMagic)) {
      warn(absl::StrCat("unsupported format '", absl::CHexEscape(header.substr(0, 80)),
                        "' (this build reads '", absl::CHexEscape(expected_header),
                        "'); ignoring it, it will be rewritten"));
    } else {
      warn("not a convserve tuning cache (bad header line); ignoring it, it will be rewritten");
    }
    return out;
  }
  int bad_lines = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    absl::Status problem;
    if (truncated && i + 1 == lines.size()) {
      problem = absl::DataLossError("truncated last line");
    } else if (line.size() > kMaxLineBytes) {
      problem = absl::InvalidArgumentError("line too long");
    } else {
      absl::StatusOr<Record> record = ParseRecord(line);
      if (record.ok()) {
        out.records.push_back(*std::move(record));
        continue;
      }
      problem = record.status();
    }
    if (++bad_lines <= kMaxReportedBadLines) {
      warn(absl::StrCat("line ", i + 1, ": ", problem.message(),
                        "; skipping the entry, it will be tuned again"));
    }
  }
  if (bad_lines > kMaxReportedBadLines) {
    warn(absl::StrCat(bad_lines - kMaxReportedBadLines, " more bad lines skipped"));
  }
  return out;
}

// Writes `contents` to `path` so that readers see either the old file or the whole new one:
// a unique temporary file in the same directory, fsync, rename over, fsync the directory.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  static std::atomic<uint64_t> counter{0};
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot create directory ", dir.string(), ": ", ec.message()));
  }
  const std::string temp =
      absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1, std::memory_order_relaxed));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot create ", temp, ": ", std::strerror(errno)));
  }
  auto fail = [&temp, fd](const char* what) {
    const std::string reason = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    return absl::UnavailableError(absl::StrCat(what, " ", temp, ": ", reason));
  };
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write");
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot fsync");
  if (::close(fd) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot close ", temp, ": ", reason));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(temp.c_str());
    return absl::UnavailableError(absl::StrCat("cannot rename ", temp, " to ", path, ": ", reason));
  }
  // Makes the rename itself durable. Best effort: some file systems refuse fsync on directories.
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

DirectoryLock::DirectoryLock(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ < 0) return;
  // Each DirectoryLock opens its own descriptor, so two in one process exclude each other too.
  while (::flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    ::close(fd_);
    fd_ = -1;
    return;
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

// Removes temporary files that a writer of `path` left behind when it died between creating and
// renaming them. Only old ones: a live writer holds its temporary file for milliseconds.
void RemoveStaleTemporaryFiles(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!absl::StartsWith(name, prefix)) continue;
    std::error_code time_ec;
    const auto modified = fs::last_write_time(it->path(), time_ec);
    if (!time_ec && now - modified > std::chrono::minutes(10)) {
      fs::remove(it->path(), time_ec);
    }
  }
}

}  // namespace tuning_cache
}  // namespace convserve
