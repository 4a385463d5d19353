// The tuner: an in-memory map from problem key to measured choice, single-flight measurement,
// one background worker for keys that Choose() met untuned, and the cache file.
//
// Cache file format (docs/tuning.md has the full description):
//   line 1:  "convserve-tuning-cache<TAB>version=1"
//   "#..." lines are comments; empty lines are skipped;
//   each other line is one record: tab-separated key=value fields, values percent-escaped
//   (%, TAB, CR, LF and other control characters as %XX). Unknown fields are ignored so version 1
//   can grow; a missing or malformed field rejects that record only.
#include "kernels/tuner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace convserve {
namespace {

constexpr absl::string_view kHeaderMagic = "convserve-tuning-cache";
constexpr int kFormatVersion = 1;
// Bounds that keep a hostile or damaged file from costing much memory or time.
constexpr int64_t kMaxFileBytes = int64_t{64} << 20;
constexpr size_t kMaxLineBytes = 64 << 10;
constexpr int kMaxReportedBadLines = 5;

// ---- Escaping of field values ---------------------------------------------------------------

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

// ---- Enum names -----------------------------------------------------------------------------

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

bool SameParams(const ConvParams& a, const ConvParams& b) {
  return a.in_channels == b.in_channels && a.out_channels == b.out_channels &&
         a.kernel_h == b.kernel_h && a.kernel_w == b.kernel_w && a.stride_h == b.stride_h &&
         a.stride_w == b.stride_w && a.pad_h == b.pad_h && a.pad_w == b.pad_w &&
         a.dilation_h == b.dilation_h && a.dilation_w == b.dilation_w && a.groups == b.groups &&
         a.dtype == b.dtype && a.fp32_math == b.fp32_math && a.has_bias == b.has_bias &&
         a.activation == b.activation;
}

bool SameFingerprint(const TuningFingerprint& a, const TuningFingerprint& b) {
  return a.gpu_name == b.gpu_name && a.sm_count == b.sm_count &&
         a.compute_capability == b.compute_capability && a.driver_version == b.driver_version &&
         a.library_version == b.library_version;
}

// Same GPU model: a record for it under another driver or library version is stale, not foreign.
bool SameGpu(const TuningFingerprint& a, const TuningFingerprint& b) {
  return a.gpu_name == b.gpu_name && a.sm_count == b.sm_count &&
         a.compute_capability == b.compute_capability;
}

// Everything of the key except the batch bucket: the entries of one shape share it.
std::string ShapeKey(const ConvProblem& problem) {
  ConvProblem shape = problem;
  shape.batch = 0;
  return shape.ToString();
}

// ---- Records --------------------------------------------------------------------------------

struct Record {
  TuningFingerprint fingerprint;
  ConvProblem problem;  // batch is the bucket
  TunedEntry entry;
};

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

// What a read of the cache file found.
struct FileContents {
  std::vector<Record> records;
  std::vector<std::string> warnings;  // empty when the file was missing or clean
  bool present = false;               // the file exists (readable or not)
};

FileContents ReadCacheFile(const std::string& path) {
  FileContents out;
  auto warn = [&out, &path](const std::string& reason) {
    out.warnings.push_back(absl::StrCat("tuning cache ", path, ": ", reason));
  };
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      out.present = true;
      warn(absl::StrCat("cannot stat: ", std::strerror(errno), "; starting with an empty cache"));
    }
    return out;
  }
  out.present = true;
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

void LogToStderr(const std::string& line) {
  std::fprintf(stderr, "convserve tuner: %s\n", line.c_str());
}

}  // namespace

int64_t BatchBucket(int64_t batch) {
  constexpr int64_t kLargestBucket = int64_t{1} << 62;
  if (batch <= 1) return 1;
  if (batch > kLargestBucket) return kLargestBucket;
  int64_t bucket = 1;
  while (bucket < batch) bucket <<= 1;
  return bucket;
}

std::string TuningFingerprint::ToString() const {
  return absl::StrCat(gpu_name.empty() ? "unknown GPU" : gpu_name, ", ", sm_count, " SMs, sm_",
                      compute_capability, ", driver ", driver_version, ", library ",
                      library_version.empty() ? "?" : library_version);
}

// ---- Tuner::Impl ----------------------------------------------------------------------------

class Tuner::Impl {
 public:
  Impl(TunerOptions options, MeasureFn measure)
      : options_(std::move(options)), measure_(std::move(measure)) {
    if (!options_.log) options_.log = LogToStderr;
    if (options_.cache_path.empty()) return;
    RemoveStaleTemporaryFiles(options_.cache_path);
    FileContents file = ReadCacheFile(options_.cache_path);
    for (const std::string& warning : file.warnings) options_.log(warning);
    absl::MutexLock lock(&mu_);
    for (Record& record : file.records) AdoptLocked(std::move(record));
  }

  ~Impl() {
    std::thread worker;
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
      queue_.clear();
      queued_.clear();
      worker = std::move(worker_);
    }
    if (worker.joinable()) worker.join();
  }

  std::optional<TunedEntry> Choose(const ConvProblem& problem) {
    if (!ValidateProblem(problem).ok()) return std::nullopt;
    ConvProblem bucketed = problem;
    bucketed.batch = BatchBucket(problem.batch);
    const std::string shape_key = ShapeKey(bucketed);
    std::optional<TunedEntry> chosen;
    std::string warning;
    {
      absl::MutexLock lock(&mu_);
      auto shape = cache_.find(shape_key);
      if (shape != cache_.end()) {
        auto exact = shape->second.find(bucketed.batch);
        if (exact != shape->second.end()) {
          ++hits_;
          return exact->second.entry;
        }
      }
      ++misses_;
      warning = ScheduleLocked(bucketed);
      if (shape != cache_.end()) chosen = NearestLocked(shape->second, bucketed.batch);
    }
    if (!warning.empty()) options_.log(warning);
    return chosen;
  }

  absl::StatusOr<TunedEntry> Tune(const ConvProblem& problem) {
    if (absl::Status s = ValidateProblem(problem); !s.ok()) return s;
    ConvProblem bucketed = problem;
    bucketed.batch = BatchBucket(problem.batch);
    const std::string key = bucketed.ToString();
    std::shared_ptr<Flight> flight;
    {
      absl::MutexLock lock(&mu_);
      if (const Cached* cached = FindLocked(bucketed)) return cached->entry;
      auto it = in_flight_.find(key);
      if (it != in_flight_.end()) {
        // Someone is measuring this key: wait for their result instead of measuring again.
        flight = it->second;
        mu_.Await(absl::Condition(&flight->done));
        return flight->result;
      }
      flight = std::make_shared<Flight>();
      in_flight_.emplace(key, flight);
    }
    absl::StatusOr<TunedEntry> result = Measure(bucketed, key);
    int64_t generation = 0;
    {
      absl::MutexLock lock(&mu_);
      ++runs_;
      if (result.ok()) {
        tuning_seconds_ += result->measure_wall_seconds;
        InsertLocked(bucketed, *result, /*replace=*/true);
        generation = generation_;
        failed_.erase(key);
      }
      flight->result = result;
      flight->done = true;
      in_flight_.erase(key);
    }
    if (result.ok()) {
      if (absl::Status s = Save(generation); !s.ok()) options_.log(std::string(s.message()));
    }
    return result;
  }

  std::vector<std::pair<ConvProblem, TunedEntry>> EntriesFor(const ConvParams& params) const {
    std::vector<std::pair<ConvProblem, TunedEntry>> out;
    absl::MutexLock lock(&mu_);
    for (const auto& [shape, buckets] : cache_) {
      for (const auto& [bucket, cached] : buckets) {
        if (SameParams(cached.problem.params, params)) {
          out.emplace_back(cached.problem, cached.entry);
        }
      }
    }
    return out;
  }

  void WaitIdle() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
          return self->stopping_ || (self->queue_.empty() && !self->worker_busy_);
        },
        this));
  }

  int64_t runs() const {
    absl::MutexLock lock(&mu_);
    return runs_;
  }
  int64_t cache_hits() const {
    absl::MutexLock lock(&mu_);
    return hits_;
  }
  int64_t cache_misses() const {
    absl::MutexLock lock(&mu_);
    return misses_;
  }
  double tuning_seconds() const {
    absl::MutexLock lock(&mu_);
    return tuning_seconds_;
  }

 private:
  struct Cached {
    ConvProblem problem;  // batch is the bucket
    TunedEntry entry;
  };
  // One measurement in progress; callers asking for the same key wait on `done`.
  struct Flight {
    bool done = false;
    absl::StatusOr<TunedEntry> result = absl::UnknownError("tuning did not finish");
  };
  // failed_ is forgotten when it grows past this, so that keys failing for transient reasons get
  // another chance and hostile shapes cannot grow it without bound.
  static constexpr size_t kMaxRememberedFailures = 1024;

  static int Log2(int64_t bucket) {
    int log = 0;
    while (bucket > 1) {
      bucket >>= 1;
      ++log;
    }
    return log;
  }

  // The entry of the bucket nearest `bucket` by log2 distance; on a tie the smaller bucket's,
  // whose tiles still fill the GPU at the larger batch, where the larger one's may leave SMs
  // idle at the smaller.
  static std::optional<TunedEntry> NearestLocked(const std::map<int64_t, Cached>& buckets,
                                                 int64_t bucket) {
    const int target = Log2(bucket);
    const Cached* best = nullptr;
    int best_distance = 0;
    for (const auto& [candidate, cached] : buckets) {  // ascending, so ties keep the smaller
      const int distance = std::abs(Log2(candidate) - target);
      if (best == nullptr || distance < best_distance) {
        best = &cached;
        best_distance = distance;
      }
    }
    if (best == nullptr) return std::nullopt;
    return best->entry;
  }

  const Cached* FindLocked(const ConvProblem& bucketed) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto shape = cache_.find(ShapeKey(bucketed));
    if (shape == cache_.end()) return nullptr;
    auto it = shape->second.find(bucketed.batch);
    return it == shape->second.end() ? nullptr : &it->second;
  }

  void InsertLocked(const ConvProblem& bucketed, const TunedEntry& entry, bool replace)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto [it, inserted] =
        cache_[ShapeKey(bucketed)].try_emplace(bucketed.batch, Cached{bucketed, entry});
    if (inserted) {
      ++entries_;
    } else if (replace) {
      it->second = Cached{bucketed, entry};
    } else {
      return;
    }
    ++generation_;
  }

  // Takes a record read from the file: ours into the cache (unless measured here already), other
  // GPUs' kept to be written back, this GPU's under another driver or library dropped as stale.
  void AdoptLocked(Record record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (SameFingerprint(record.fingerprint, options_.fingerprint)) {
      InsertLocked(record.problem, record.entry, /*replace=*/false);
    } else if (!SameGpu(record.fingerprint, options_.fingerprint)) {
      const TuningFingerprint& f = record.fingerprint;
      std::string id = absl::StrCat(Escape(f.gpu_name), "\t", f.sm_count, "\t",
                                    f.compute_capability, "\t", f.driver_version, "\t",
                                    Escape(f.library_version), "\t", record.problem.ToString());
      foreign_[std::move(id)] = std::move(record);
    }
  }

  // Queues `bucketed` for the worker unless it is queued, being tuned, failed before, or the
  // queue or cache is full. Returns a warning to log (after the lock is released), or "".
  std::string ScheduleLocked(const ConvProblem& bucketed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!options_.background_tuning || stopping_) return "";
    if (static_cast<int64_t>(queue_.size()) >= std::max(options_.max_queued, 1)) return "";
    if (entries_ >= options_.max_entries) {
      if (warned_full_) return "";
      warned_full_ = true;
      return absl::StrCat("tuning cache holds ", entries_,
                          " entries (max_entries): new keys are tuned only by Tune() from now on");
    }
    std::string key = bucketed.ToString();
    if (queued_.count(key) || in_flight_.count(key) || failed_.count(key)) return "";
    queue_.push_back(bucketed);
    queued_.insert(std::move(key));
    if (!worker_.joinable()) worker_ = std::thread([this] { WorkerLoop(); });
    return "";
  }

  void WorkerLoop() {
    absl::MutexLock lock(&mu_);
    while (true) {
      mu_.Await(absl::Condition(
          +[](Impl* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->queue_.empty();
          },
          this));
      if (stopping_) return;
      ConvProblem problem = queue_.front();
      queue_.pop_front();
      const std::string key = problem.ToString();
      queued_.erase(key);
      worker_busy_ = true;
      mu_.Unlock();
      absl::StatusOr<TunedEntry> result = Tune(problem);
      if (!result.ok()) {
        options_.log(absl::StrCat("background tuning of ", key,
                                  " failed: ", result.status().ToString(),
                                  "; not retried in the background until a Tune() call"));
      }
      mu_.Lock();
      if (!result.ok()) {
        if (failed_.size() >= kMaxRememberedFailures) failed_.clear();
        failed_.insert(key);
      }
      worker_busy_ = false;
    }
  }

  // Calls the engine's MeasureFn and keeps the fastest and the runner-up.
  absl::StatusOr<TunedEntry> Measure(const ConvProblem& bucketed, const std::string& key) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::vector<CandidateTime>> times =
        absl::InternalError("measure function did not run");
    try {
      times = measure_(bucketed);
    } catch (const std::exception& e) {
      times = absl::InternalError(absl::StrCat("measure function threw: ", e.what()));
    } catch (...) {
      times = absl::InternalError("measure function threw");
    }
    const double wall_seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (!times.ok()) {
      return absl::Status(times.status().code(),
                          absl::StrCat("tuning ", key, ": ", times.status().message()));
    }
    // The fastest time per configuration; unusable measurements are dropped.
    std::map<std::string, double> best_per_config;
    double gpu_us = 0;
    for (const CandidateTime& c : *times) {
      if (std::isfinite(c.gpu_time_us) && c.gpu_time_us > 0) gpu_us += c.gpu_time_us;
      if (c.config.empty() || !std::isfinite(c.time_us) || c.time_us < 0) continue;
      auto [it, inserted] = best_per_config.emplace(c.config, c.time_us);
      if (!inserted) it->second = std::min(it->second, c.time_us);
    }
    if (best_per_config.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tuning ", key, ": no configuration could run the problem"));
    }
    std::vector<std::pair<double, std::string>> ranked;
    for (const auto& [config, time_us] : best_per_config) ranked.emplace_back(time_us, config);
    std::sort(ranked.begin(), ranked.end());
    TunedEntry entry;
    entry.config = ranked[0].second;
    entry.time_us = ranked[0].first;
    if (ranked.size() > 1) {
      entry.runner_up = ranked[1].second;
      entry.runner_up_time_us = ranked[1].first;
    }
    entry.measure_wall_seconds = wall_seconds;
    entry.measure_gpu_seconds = gpu_us * 1e-6;
    return entry;
  }

  // Rewrites the cache file with every entry, unless a rewrite that started after cache
  // generation `generation` already did (concurrent tunings then share one write). Merges first
  // what other Tuner instances or processes sharing the file wrote since, so that they do not
  // erase each other's entries. Errors are for the caller to log, outside the locks.
  absl::Status Save(int64_t generation) {
    if (options_.cache_path.empty()) return absl::OkStatus();
    absl::MutexLock save_lock(&save_mu_);
    if (saved_generation_ >= generation) return absl::OkStatus();
    FileContents file = ReadCacheFile(options_.cache_path);  // its warnings were given at load
    std::string contents = absl::StrCat(kHeaderMagic, "\tversion=", kFormatVersion, "\n",
                                        "# convserve tile tuning results: one tab-separated "
                                        "record per line, see docs/tuning.md\n");
    int64_t snapshot_generation = 0;
    {
      absl::MutexLock lock(&mu_);
      for (Record& record : file.records) AdoptLocked(std::move(record));
      snapshot_generation = generation_;
      // A record too long for the reader (only possible with absurd names) is left out rather
      // than written to be rejected at the next load.
      auto append = [&contents](const Record& record) {
        std::string line = FormatRecord(record);
        if (line.size() <= kMaxLineBytes) absl::StrAppend(&contents, line, "\n");
      };
      for (const auto& [shape, buckets] : cache_) {
        for (const auto& [bucket, cached] : buckets) {
          append(Record{options_.fingerprint, cached.problem, cached.entry});
        }
      }
      for (const auto& [id, record] : foreign_) append(record);
    }
    if (absl::Status s = WriteFileAtomically(options_.cache_path, contents); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat("tuning cache ", options_.cache_path, ": not saved: ", s.message(),
                                 "; results are kept in memory"));
    }
    saved_generation_ = snapshot_generation;
    return absl::OkStatus();
  }

  TunerOptions options_;
  const MeasureFn measure_;

  mutable absl::Mutex mu_;
  // Shape key (the problem key without batch) -> bucket -> entry, for this fingerprint.
  std::map<std::string, std::map<int64_t, Cached>> cache_ ABSL_GUARDED_BY(mu_);
  int64_t entries_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped by every change to cache_
  // Other GPUs' records from the file, written back unchanged.
  std::map<std::string, Record> foreign_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Flight>> in_flight_ ABSL_GUARDED_BY(mu_);
  std::deque<ConvProblem> queue_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> queued_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> failed_ ABSL_GUARDED_BY(mu_);  // background tuning failed
  bool warned_full_ ABSL_GUARDED_BY(mu_) = false;
  bool worker_busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread worker_ ABSL_GUARDED_BY(mu_);
  int64_t runs_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
  double tuning_seconds_ ABSL_GUARDED_BY(mu_) = 0;

  // Serializes file rewrites so that a later snapshot is never overwritten by an earlier one.
  absl::Mutex save_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  int64_t saved_generation_ ABSL_GUARDED_BY(save_mu_) = 0;  // of the last snapshot written
};

// ---- Tuner ----------------------------------------------------------------------------------

Tuner::Tuner(TunerOptions options, MeasureFn measure)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(measure))) {}
Tuner::~Tuner() = default;

std::string Tuner::Key(const ConvProblem& problem) {
  ConvProblem bucketed = problem;
  bucketed.batch = BatchBucket(problem.batch);
  return bucketed.ToString();
}

std::optional<TunedEntry> Tuner::Choose(const ConvProblem& problem) {
  return impl_->Choose(problem);
}
absl::StatusOr<TunedEntry> Tuner::Tune(const ConvProblem& problem) { return impl_->Tune(problem); }
std::vector<std::pair<ConvProblem, TunedEntry>> Tuner::EntriesFor(const ConvParams& params) const {
  return impl_->EntriesFor(params);
}
void Tuner::WaitIdle() { impl_->WaitIdle(); }
int64_t Tuner::runs() const { return impl_->runs(); }
int64_t Tuner::cache_hits() const { return impl_->cache_hits(); }
int64_t Tuner::cache_misses() const { return impl_->cache_misses(); }
double Tuner::tuning_seconds() const { return impl_->tuning_seconds(); }

}  // namespace convserve
