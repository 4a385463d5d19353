// Fuzzes the tuning-cache file reader (kernels/tuner.h): a Tuner constructed on a file of any
// content must start (with whatever records are sound), answer Choose / EntriesFor, and, after
// a Tune, rewrite the file so that a fresh Tuner reads back every entry the first one held.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/tuner.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using convserve::ConvProblem;
using convserve::Tuner;

// tmpfs when there is one: the Tuner fsyncs every save.
std::string CachePath() {
  const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/convserve-tuner-fuzz-" + std::to_string(getpid()) + ".tsv";
}

// `warnings` collects the log lines the tuner writes (unreadable or corrupt records).
convserve::TunerOptions Options(const std::string& path, std::vector<std::string>* warnings) {
  convserve::TunerOptions options;
  // The fingerprint the seed corpus was written under, so its records are "ours".
  options.fingerprint.gpu_name = "Fuzz GPU";
  options.fingerprint.sm_count = 132;
  options.fingerprint.compute_capability = 90;
  options.fingerprint.driver_version = 13000;
  options.fingerprint.library_version = "fuzz-1";
  options.cache_path = path;
  options.background_tuning = false;
  options.log = [warnings](const std::string& line) {
    FUZZ_CHECK(!line.empty());
    warnings->push_back(line);
  };
  return options;
}

absl::StatusOr<std::vector<convserve::CandidateTime>> Measure(const ConvProblem&) {
  return std::vector<convserve::CandidateTime>{{"b64x64x32_w32x32_s3", 12.5, 100.0},
                                               {"b128x128x32_w64x64_s3", 20.0, 150.0}};
}

// A problem the seed corpus has entries for (batch 1 and 8 buckets).
ConvProblem SeedProblem() {
  ConvProblem p;
  p.params.in_channels = 64;
  p.params.out_channels = 64;
  p.params.kernel_h = 3;
  p.params.kernel_w = 3;
  p.params.pad_h = 1;
  p.params.pad_w = 1;
  p.params.dtype = convserve::DataType::kFloat16;
  p.batch = 4;
  p.height = 56;
  p.width = 56;
  p.input_layout = convserve::Layout::kNhwc;
  p.output_layout = convserve::Layout::kNhwc;
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = CachePath();
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    FUZZ_CHECK(out.good());
  }
  const ConvProblem problem = SeedProblem();
  size_t held = 0;
  bool rewritten = false;  // Tune measured, so it saved: the file is now all the tuner's own
  {
    std::vector<std::string> warnings;
    Tuner tuner(Options(path, &warnings), Measure);
    (void)tuner.Choose(problem);
    const auto before = tuner.EntriesFor(problem.params);
    absl::StatusOr<convserve::TunedEntry> tuned = tuner.Tune(problem);
    FUZZ_CHECK(tuned.ok());
    held = tuner.EntriesFor(problem.params).size();
    rewritten = tuner.runs() == 1;
    FUZZ_CHECK(held >= before.size());
    FUZZ_CHECK(held >= 1);
  }
  {
    // What the tuner wrote itself reads back without a single warning.
    std::vector<std::string> warnings;
    Tuner reread(Options(path, &warnings), Measure);
    if (rewritten) {
      for (const std::string& line : warnings) std::fprintf(stderr, "reread: %s\n", line.c_str());
      FUZZ_CHECK(warnings.empty());
    }
    std::optional<convserve::TunedEntry> chosen = reread.Choose(problem);
    FUZZ_CHECK(chosen.has_value());
    FUZZ_CHECK(reread.EntriesFor(problem.params).size() == held);
    FUZZ_CHECK(reread.runs() == 0);
  }
  std::remove(path.c_str());
  return 0;
}
