// Tests of kernels/tuner.h on the CPU: a fake MeasureFn stands in for the GPU timing (the one
// part that needs a GPU); the cache file is real, in a fresh temporary directory per test.
#include "kernels/tuner.h"

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

ConvProblem Problem(int64_t batch, int64_t height = 56, int64_t channels = 64) {
  ConvProblem p;
  p.params.in_channels = channels;
  p.params.out_channels = 64;
  p.params.kernel_h = 3;
  p.params.kernel_w = 3;
  p.params.pad_h = 1;
  p.params.pad_w = 1;
  p.params.dtype = DataType::kFloat16;
  p.params.has_bias = true;
  p.params.activation = Activation::kRelu;
  p.batch = batch;
  p.height = height;
  p.width = height;
  p.input_layout = Layout::kNhwc;
  p.output_layout = Layout::kNhwc;
  return p;
}

TuningFingerprint H100() {
  TuningFingerprint f;
  f.gpu_name = "NVIDIA H100 80GB HBM3";
  f.sm_count = 132;
  f.compute_capability = 90;
  f.driver_version = 12080;
  f.library_version = "configs-v1";
  return f;
}

// A MeasureFn with deterministic times: the configuration whose name encodes the batch bucket
// wins ("tile_for_n<bucket>"), so tests can tell which bucket an entry was tuned for. Counts
// calls; may be told to fail.
class FakeMeasure {
 public:
  Tuner::MeasureFn Fn() {
    return [this](const ConvProblem& p) -> absl::StatusOr<std::vector<CandidateTime>> {
      calls_.fetch_add(1);
      {
        std::lock_guard<std::mutex> lock(mu_);
        problems_.push_back(p);
      }
      if (fail_) return absl::InternalError("fake kernel launch failed");
      return std::vector<CandidateTime>{
          {"tile_generic", 100.0 + static_cast<double>(p.height), 250.0},
          {absl::StrCat("tile_for_n", p.batch), 10.0 + static_cast<double>(p.height), 40.0},
          {"tile_broken", std::nan(""), 5.0},
      };
    };
  }
  int calls() const { return calls_.load(); }
  std::vector<ConvProblem> problems() const {
    std::lock_guard<std::mutex> lock(mu_);
    return problems_;
  }
  std::atomic<bool> fail_{false};

 private:
  std::atomic<int> calls_{0};
  mutable std::mutex mu_;
  std::vector<ConvProblem> problems_;
};

// Collects the tuner's warnings.
class LogSink {
 public:
  std::function<void(const std::string&)> Fn() {
    return [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      lines_.push_back(line);
    };
  }
  std::string All() const {
    std::lock_guard<std::mutex> lock(mu_);
    return absl::StrJoin(lines_, "\n");
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return lines_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::string> lines_;
};

class TunerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "convserve_tuner_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = (dir_ / "state" / "tuning.cache").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  TunerOptions Options(LogSink* log, TuningFingerprint fingerprint = H100()) const {
    TunerOptions options;
    options.fingerprint = std::move(fingerprint);
    options.cache_path = path_;
    options.background_tuning = false;
    options.log = log->Fn();
    return options;
  }

  std::string ReadFile() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  void WriteFile(const std::string& text) const {
    fs::create_directories(fs::path(path_).parent_path());
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out << text;
  }
  // Tunes `problems` with a fresh tuner so that the file holds their records.
  void Populate(const std::vector<ConvProblem>& problems) {
    FakeMeasure measure;
    LogSink log;
    Tuner tuner(Options(&log), measure.Fn());
    for (const ConvProblem& p : problems) ASSERT_TRUE(tuner.Tune(p).ok());
    ASSERT_EQ(log.size(), 0u) << log.All();
  }

  fs::path dir_;
  std::string path_;
};

TEST(BatchBucketTest, RoundsUpToPowersOfTwo) {
  EXPECT_EQ(BatchBucket(1), 1);
  EXPECT_EQ(BatchBucket(2), 2);
  EXPECT_EQ(BatchBucket(3), 4);
  EXPECT_EQ(BatchBucket(4), 4);
  EXPECT_EQ(BatchBucket(5), 8);
  EXPECT_EQ(BatchBucket(8), 8);
  EXPECT_EQ(BatchBucket(9), 16);
  EXPECT_EQ(BatchBucket(32), 32);
  EXPECT_EQ(BatchBucket(33), 64);
  EXPECT_EQ(BatchBucket(1000), 1024);
  EXPECT_EQ(BatchBucket((int64_t{1} << 40) + 1), int64_t{1} << 41);
}

TEST(BatchBucketTest, ClampsOutOfRangeValues) {
  EXPECT_EQ(BatchBucket(0), 1);
  EXPECT_EQ(BatchBucket(-7), 1);
  EXPECT_EQ(BatchBucket(std::numeric_limits<int64_t>::max()), int64_t{1} << 62);
}

TEST(TunerKeyTest, SharedWithinABucketOnly) {
  EXPECT_EQ(Tuner::Key(Problem(5)), Tuner::Key(Problem(8)));
  EXPECT_NE(Tuner::Key(Problem(8)), Tuner::Key(Problem(9)));
  EXPECT_THAT(Tuner::Key(Problem(5)), HasSubstr("n8_"));
  ConvProblem nchw = Problem(8);
  nchw.input_layout = Layout::kNchw;
  EXPECT_NE(Tuner::Key(nchw), Tuner::Key(Problem(8)));
  ConvProblem bf16 = Problem(8);
  bf16.params.dtype = DataType::kBFloat16;
  EXPECT_NE(Tuner::Key(bf16), Tuner::Key(Problem(8)));
  ConvProblem no_bias = Problem(8);
  no_bias.params.has_bias = false;
  EXPECT_NE(Tuner::Key(no_bias), Tuner::Key(Problem(8)));
}

TEST_F(TunerTest, TuneKeepsFastestAndRunnerUp) {
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  absl::StatusOr<TunedEntry> entry = tuner.Tune(Problem(6));
  ASSERT_TRUE(entry.ok()) << entry.status();
  EXPECT_EQ(entry->config, "tile_for_n8");  // measured at the bucket's batch
  EXPECT_DOUBLE_EQ(entry->time_us, 66.0);
  EXPECT_EQ(entry->runner_up, "tile_generic");
  EXPECT_DOUBLE_EQ(entry->runner_up_time_us, 156.0);
  EXPECT_NEAR(entry->measure_gpu_seconds, 295e-6, 1e-12);
  EXPECT_GE(entry->measure_wall_seconds, 0.0);
  ASSERT_EQ(measure.problems().size(), 1u);
  EXPECT_EQ(measure.problems()[0].batch, 8);
  EXPECT_EQ(tuner.runs(), 1);

  // Same bucket: cached.
  absl::StatusOr<TunedEntry> again = tuner.Tune(Problem(7));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->config, "tile_for_n8");
  EXPECT_EQ(measure.calls(), 1);
  EXPECT_EQ(tuner.runs(), 1);
}

TEST_F(TunerTest, TuneRejectsInvalidProblemsWithoutMeasuring) {
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  ConvProblem bad = Problem(4);
  bad.params.groups = 3;  // does not divide 64 channels
  absl::StatusOr<TunedEntry> entry = tuner.Tune(bad);
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tuner.Choose(bad), std::nullopt);
  EXPECT_EQ(measure.calls(), 0);
}

TEST_F(TunerTest, MeasureFailureIsReturnedAndNotCached) {
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  measure.fail_ = true;
  absl::StatusOr<TunedEntry> failed = tuner.Tune(Problem(8));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(failed.status().message()), HasSubstr("fake kernel launch failed"));
  measure.fail_ = false;
  EXPECT_TRUE(tuner.Tune(Problem(8)).ok());
  EXPECT_EQ(measure.calls(), 2);
}

TEST_F(TunerTest, NoUsableCandidateIsInvalidArgument) {
  LogSink log;
  Tuner tuner(Options(&log), [](const ConvProblem&) -> absl::StatusOr<std::vector<CandidateTime>> {
    return std::vector<CandidateTime>{{"", 1.0}, {"nan", std::nan("")}, {"negative", -1.0}};
  });
  absl::StatusOr<TunedEntry> entry = tuner.Tune(Problem(8));
  EXPECT_EQ(entry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(path_));
}

TEST_F(TunerTest, CacheRoundTripsThroughTheFile) {
  std::vector<ConvProblem> problems = {Problem(1), Problem(8), Problem(32, 28, 128)};
  ConvProblem exotic = Problem(2, 14, 96);
  exotic.params.groups = 32;
  exotic.params.stride_h = 2;
  exotic.params.dilation_w = 2;
  exotic.params.fp32_math = Fp32Math::kExact;
  exotic.params.dtype = DataType::kFloat32;
  exotic.params.activation = Activation::kGeluTanh;
  exotic.input_layout = Layout::kNchw;
  problems.push_back(exotic);
  Populate(problems);
  EXPECT_TRUE(absl::StartsWith(ReadFile(), "convserve-tuning-cache\tversion=1\n"));

  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  for (const ConvProblem& p : problems) {
    std::optional<TunedEntry> chosen = tuner.Choose(p);
    ASSERT_TRUE(chosen.has_value()) << p.ToString();
    EXPECT_EQ(chosen->config, absl::StrCat("tile_for_n", p.batch));
    EXPECT_DOUBLE_EQ(chosen->time_us, 10.0 + static_cast<double>(p.height));
    EXPECT_EQ(chosen->runner_up, "tile_generic");
    absl::StatusOr<TunedEntry> tuned = tuner.Tune(p);
    ASSERT_TRUE(tuned.ok());
    EXPECT_EQ(tuned->config, chosen->config);
  }
  EXPECT_EQ(measure.calls(), 0);
  EXPECT_EQ(tuner.cache_hits(), static_cast<int64_t>(problems.size()));
  EXPECT_EQ(tuner.cache_misses(), 0);
  EXPECT_EQ(log.size(), 0u) << log.All();

  // EntriesFor rebuilds the whole problem from the file.
  std::vector<std::pair<ConvProblem, TunedEntry>> entries = tuner.EntriesFor(exotic.params);
  ASSERT_EQ(entries.size(), 1u);
  const ConvProblem& p = entries[0].first;
  EXPECT_EQ(p.ToString(), exotic.ToString());
  EXPECT_EQ(p.params.groups, 32);
  EXPECT_EQ(p.params.dilation_w, 2);
  EXPECT_EQ(p.params.fp32_math, Fp32Math::kExact);
  EXPECT_EQ(p.input_layout, Layout::kNchw);
  EXPECT_EQ(p.output_layout, Layout::kNhwc);
  EXPECT_EQ(tuner.EntriesFor(Problem(1).params).size(), 2u);  // buckets 1 and 8 of one shape
}

TEST_F(TunerTest, ValuesWithSeparatorsSurviveTheFile) {
  TuningFingerprint odd = H100();
  odd.gpu_name = "GPU\twith=odd %41 chars\nand a newline";
  odd.library_version = "";
  {
    LogSink log;
    Tuner tuner(Options(&log, odd),
                [](const ConvProblem&) -> absl::StatusOr<std::vector<CandidateTime>> {
                  return std::vector<CandidateTime>{{"cfg\twith%tab", 1.5}};
                });
    ASSERT_TRUE(tuner.Tune(Problem(4)).ok());
  }
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log, odd), measure.Fn());
  std::optional<TunedEntry> chosen = tuner.Choose(Problem(4));
  ASSERT_TRUE(chosen.has_value()) << log.All();
  EXPECT_EQ(chosen->config, "cfg\twith%tab");
  EXPECT_EQ(chosen->runner_up, "");
  EXPECT_EQ(log.size(), 0u) << log.All();
}

struct FingerprintChange {
  const char* name;
  void (*apply)(TuningFingerprint*);
};

class FingerprintTest : public TunerTest,
                        public ::testing::WithParamInterface<FingerprintChange> {};

TEST_P(FingerprintTest, EntriesOfAnotherFingerprintAreRemeasured) {
  Populate({Problem(8)});
  TuningFingerprint other = H100();
  GetParam().apply(&other);
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log, other), measure.Fn());
  EXPECT_EQ(tuner.Choose(Problem(8)), std::nullopt);
  EXPECT_TRUE(tuner.EntriesFor(Problem(8).params).empty());
  ASSERT_TRUE(tuner.Tune(Problem(8)).ok());
  EXPECT_EQ(measure.calls(), 1);
  EXPECT_EQ(log.size(), 0u) << log.All();
}

INSTANTIATE_TEST_SUITE_P(
    Changes, FingerprintTest,
    ::testing::Values(
        FingerprintChange{"gpu_name", [](TuningFingerprint* f) { f->gpu_name = "NVIDIA A100"; }},
        FingerprintChange{"sm_count", [](TuningFingerprint* f) { f->sm_count = 114; }},
        FingerprintChange{"compute_capability",
                          [](TuningFingerprint* f) { f->compute_capability = 89; }},
        FingerprintChange{"driver", [](TuningFingerprint* f) { f->driver_version = 13000; }},
        FingerprintChange{"library", [](TuningFingerprint* f) { f->library_version = "v2"; }}),
    [](const ::testing::TestParamInfo<FingerprintChange>& info) { return info.param.name; });

TEST_F(TunerTest, OtherGpusEntriesAreKeptWhenTheFileIsRewritten) {
  Populate({Problem(8)});
  TuningFingerprint a100 = H100();
  a100.gpu_name = "NVIDIA A100-SXM4-80GB";
  a100.sm_count = 108;
  a100.compute_capability = 80;
  {
    FakeMeasure measure;
    LogSink log;
    Tuner tuner(Options(&log, a100), measure.Fn());
    ASSERT_TRUE(tuner.Tune(Problem(1)).ok());
  }
  // Both GPUs' entries are in the rewritten file.
  FakeMeasure measure;
  LogSink log;
  Tuner h100(Options(&log), measure.Fn());
  EXPECT_TRUE(h100.Choose(Problem(8)).has_value());
  Tuner a100_again(Options(&log, a100), measure.Fn());
  EXPECT_TRUE(a100_again.Choose(Problem(1)).has_value());
  EXPECT_EQ(measure.calls(), 0);
}

TEST_F(TunerTest, SameGpusEntriesUnderAnOlderDriverAreDroppedOnRewrite) {
  Populate({Problem(8)});
  TuningFingerprint upgraded = H100();
  upgraded.driver_version = 13000;
  {
    FakeMeasure measure;
    LogSink log;
    Tuner tuner(Options(&log, upgraded), measure.Fn());
    ASSERT_TRUE(tuner.Tune(Problem(1)).ok());
  }
  EXPECT_THAT(ReadFile(), ::testing::Not(HasSubstr("driver=12080")));
  EXPECT_THAT(ReadFile(), HasSubstr("driver=13000"));
}

TEST_F(TunerTest, TwoTunersSharingAFileKeepEachOthersEntries) {
  FakeMeasure measure;
  LogSink log;
  Tuner first(Options(&log), measure.Fn());
  Tuner second(Options(&log), measure.Fn());
  ASSERT_TRUE(first.Tune(Problem(1)).ok());
  ASSERT_TRUE(second.Tune(Problem(2)).ok());  // merges the first's entry before rewriting
  ASSERT_TRUE(first.Tune(Problem(4)).ok());
  FakeMeasure fresh_measure;
  Tuner reader(Options(&log), fresh_measure.Fn());
  for (int64_t batch : {1, 2, 4}) EXPECT_TRUE(reader.Choose(Problem(batch)).has_value()) << batch;
  EXPECT_EQ(fresh_measure.calls(), 0);
  EXPECT_EQ(log.size(), 0u) << log.All();
}

// Several engines of one server (one per GPU) each have a Tuner on the one cache file, and
// they save at the same time: each save re-reads the file and merges before writing, and the
// file lock makes that read-merge-write one at a time, so no save drops another's new entries.
TEST_F(TunerTest, TunersSavingAtOnceKeepEachOthersEntries) {
  constexpr int kTuners = 2;
  constexpr int kThreadsPerTuner = 6;
  constexpr int kKeysPerThread = 3;
  FakeMeasure measure;
  LogSink log;
  {
    std::vector<std::unique_ptr<Tuner>> tuners;
    for (int t = 0; t < kTuners; ++t) {
      tuners.push_back(std::make_unique<Tuner>(Options(&log), measure.Fn()));
    }
    std::vector<std::thread> threads;
    for (int t = 0; t < kTuners; ++t) {
      for (int i = 0; i < kThreadsPerTuner; ++i) {
        threads.emplace_back([&, t, i] {
          for (int k = 0; k < kKeysPerThread; ++k) {
            const int64_t height = 8 + (t * kThreadsPerTuner + i) * kKeysPerThread + k;
            EXPECT_TRUE(tuners[t]->Tune(Problem(1, height)).ok());
          }
        });
      }
    }
    for (std::thread& thread : threads) thread.join();
  }
  FakeMeasure after;
  Tuner reloaded(Options(&log), after.Fn());
  for (int64_t height = 8; height < 8 + kTuners * kThreadsPerTuner * kKeysPerThread; ++height) {
    EXPECT_TRUE(reloaded.Choose(Problem(1, height)).has_value()) << height;
  }
  EXPECT_EQ(after.calls(), 0);
  EXPECT_EQ(log.size(), 0u) << log.All();
}

// A damaged file: a warning naming the path, the damaged entries tuned again, a clean file after.
struct Corruption {
  const char* name;
  std::string (*damage)(const std::string& good);
  const char* warning;    // expected in the warning
  int surviving_entries;  // of the 2 good ones
};

class CorruptFileTest : public TunerTest, public ::testing::WithParamInterface<Corruption> {};

TEST_P(CorruptFileTest, WarnsAndRetunes) {
  // Two shapes, so that a lost entry cannot be served by the other's bucket.
  const std::vector<ConvProblem> problems = {Problem(1), Problem(16, 28)};
  Populate(problems);
  WriteFile(GetParam().damage(ReadFile()));

  FakeMeasure measure;
  LogSink log;
  {
    Tuner tuner(Options(&log), measure.Fn());
    EXPECT_THAT(log.All(), HasSubstr(path_));
    EXPECT_THAT(log.All(), HasSubstr(GetParam().warning));
    int found = 0;
    for (const ConvProblem& p : problems) {
      if (tuner.Choose(p).has_value()) ++found;
      absl::StatusOr<TunedEntry> entry = tuner.Tune(p);
      ASSERT_TRUE(entry.ok());
      EXPECT_EQ(entry->config, absl::StrCat("tile_for_n", p.batch));
    }
    EXPECT_EQ(found, GetParam().surviving_entries);
    EXPECT_EQ(measure.calls(), 2 - GetParam().surviving_entries);
  }
  if (GetParam().surviving_entries == 2) return;  // nothing re-tuned, so nothing rewritten
  // The re-tuned file loads cleanly.
  const size_t warnings = log.size();
  FakeMeasure after;
  Tuner reloaded(Options(&log), after.Fn());
  for (const ConvProblem& p : problems) EXPECT_TRUE(reloaded.Choose(p).has_value());
  EXPECT_EQ(after.calls(), 0);
  EXPECT_EQ(log.size(), warnings) << log.All();
}

std::string LastRecordCut(const std::string& good) {
  // Drops the final newline and the last 12 characters: a write cut short.
  return good.substr(0, good.size() - 13);
}

INSTANTIATE_TEST_SUITE_P(
    Damage, CorruptFileTest,
    ::testing::Values(Corruption{"garbage",
                                 [](const std::string&) {
                                   return std::string(
                                       "\x7f"
                                       "ELF\x02\x01\x01\0\0garbage",
                                       16);
                                 },
                                 "not a convserve tuning cache", 0},
                      Corruption{"empty", [](const std::string&) { return std::string(); },
                                 "not a convserve tuning cache", 0},
                      Corruption{"wrong_version",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   text.replace(text.find("version=1"), 9, "version=7");
                                   return text;
                                 },
                                 "unsupported format", 0},
                      Corruption{"truncated_last_line", LastRecordCut, "truncated last line", 1},
                      Corruption{"bad_number",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   text.replace(text.find("\tk=64\t"), 6, "\tk=6x4\t");
                                   return text;
                                 },
                                 "field 'k' is not an integer", 1},
                      Corruption{"invalid_problem",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   text.replace(text.find("\tgroups=1\t"), 10, "\tgroups=5\t");
                                   return text;
                                 },
                                 "groups (5) must divide", 1},
                      Corruption{"missing_field",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   const size_t at = text.find("\tconfig=");
                                   text.erase(at, text.find('\t', at + 1) - at);
                                   return text;
                                 },
                                 "missing field 'config'", 1},
                      Corruption{"bad_escape",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   text.replace(text.find("\tconfig="), 8, "\tconfig=%G");
                                   return text;
                                 },
                                 "bad %-escape", 1},
                      Corruption{"negative_time",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   text.replace(text.find("\ttime_us="), 9, "\ttime_us=-");
                                   return text;
                                 },
                                 "field 'time_us' is not a non-negative number", 1},
                      Corruption{"batch_not_a_bucket",
                                 [](const std::string& good) {
                                   std::string text = good;
                                   text.replace(text.find("\tn=1\t"), 5, "\tn=3\t");
                                   return text;
                                 },
                                 "batch 3 is not a bucket", 1},
                      Corruption{"not_key_value",
                                 [](const std::string& good) {
                                   return good + "this line has no fields\n";
                                 },
                                 "field without 'name=value' form", 2}),
    [](const ::testing::TestParamInfo<Corruption>& info) { return info.param.name; });

TEST_F(TunerTest, RewriteNeverProducesARecordTheReaderRejects) {
  Populate({Problem(8)});
  // Another GPU's record whose name is raw control bytes: accepted as read, but 3x longer once
  // escaped, past the reader's line limit. The rewrite leaves it out instead.
  std::string text = ReadFile();
  const size_t start = text.find("\tgpu=") + 5;
  text.replace(start, text.find('\t', start) - start, std::string(30000, '\x01'));
  WriteFile(text);
  FakeMeasure measure;
  LogSink log;
  {
    Tuner tuner(Options(&log), measure.Fn());
    EXPECT_EQ(log.size(), 0u) << log.All();
    ASSERT_TRUE(tuner.Tune(Problem(1)).ok());
  }
  Tuner reread(Options(&log), measure.Fn());
  EXPECT_EQ(log.size(), 0u) << log.All();
  EXPECT_TRUE(reread.Choose(Problem(1)).has_value());
}

TEST_F(TunerTest, UnreadableCacheFileWarnsAndStartsEmpty) {
  fs::create_directories(path_);  // a directory where the file should be
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  EXPECT_THAT(log.All(), HasSubstr(path_));
  EXPECT_THAT(log.All(), HasSubstr("not a regular file"));
  // Saving fails too (the path is a directory): logged, and the result is still returned.
  absl::StatusOr<TunedEntry> entry = tuner.Tune(Problem(8));
  ASSERT_TRUE(entry.ok());
  EXPECT_THAT(log.All(), HasSubstr("not saved"));
  EXPECT_TRUE(tuner.Choose(Problem(8)).has_value());
}

TEST_F(TunerTest, WarningsGoToStderrByDefault) {
  WriteFile("nonsense\n");
  TunerOptions options;
  options.fingerprint = H100();
  options.cache_path = path_;
  options.background_tuning = false;
  FakeMeasure measure;
  ::testing::internal::CaptureStderr();
  { Tuner tuner(options, measure.Fn()); }
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(err, HasSubstr(path_));
  EXPECT_THAT(err, HasSubstr("not a convserve tuning cache"));
}

TEST_F(TunerTest, RandomlyDamagedFilesNeverCrash) {
  Populate({Problem(1), Problem(8, 28), Problem(32, 14, 128)});
  const std::string good = ReadFile();
  std::mt19937 rng(20261124);
  for (int round = 0; round < 300; ++round) {
    std::string text = good;
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 4) {
        case 0:
          text[at] = static_cast<char>(rng() % 256);
          break;
        case 1:
          text.erase(at, rng() % 40);
          break;
        case 2:
          text.insert(at, 1 + rng() % 3, "\t=%\n"[rng() % 4]);
          break;
        default:
          text.insert(at, text.substr(rng() % text.size(), rng() % 200));
      }
    }
    WriteFile(text);
    FakeMeasure measure;
    LogSink log;
    Tuner tuner(Options(&log), measure.Fn());
    int found = 0;
    for (const ConvProblem& p : {Problem(1), Problem(8, 28), Problem(32, 14, 128)}) {
      if (tuner.Choose(p).has_value()) ++found;
    }
    // Damage either left entries intact or was reported.
    if (found < 3) {
      EXPECT_GT(log.size(), 0u) << "round " << round;
    }
  }
}

TEST_F(TunerTest, AtomicWriteLeavesNoTemporaryFiles) {
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  for (int64_t batch : {1, 2, 4, 8, 16}) ASSERT_TRUE(tuner.Tune(Problem(batch)).ok());
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(fs::path(path_).parent_path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_THAT(names, ::testing::ElementsAre("tuning.cache"));
  // One header, one comment, one record per bucket.
  const std::string text = ReadFile();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 7);
}

TEST_F(TunerTest, StaleTemporaryFilesAreRemovedAtLoad) {
  Populate({Problem(8)});
  const fs::path dir = fs::path(path_).parent_path();
  const fs::path stale = dir / "tuning.cache.tmp.4242.0";
  const fs::path fresh = dir / "tuning.cache.tmp.4243.0";  // a live writer's, maybe
  const fs::path unrelated = dir / "other.tmp.1.0";
  for (const fs::path& p : {stale, fresh, unrelated}) std::ofstream(p) << "partial";
  fs::last_write_time(stale, fs::file_time_type::clock::now() - std::chrono::hours(2));
  fs::last_write_time(unrelated, fs::file_time_type::clock::now() - std::chrono::hours(2));
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(fresh));
  EXPECT_TRUE(fs::exists(unrelated));
  EXPECT_TRUE(tuner.Choose(Problem(8)).has_value());
}

TEST_F(TunerTest, ConcurrentTunesOfDistinctKeysAllReachTheFile) {
  constexpr int kThreads = 8;
  FakeMeasure measure;
  LogSink log;
  {
    Tuner tuner(Options(&log), measure.Fn());
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i) {
      threads.emplace_back([&, i] { EXPECT_TRUE(tuner.Tune(Problem(1, 8 + i)).ok()); });
    }
    for (std::thread& t : threads) t.join();
  }
  EXPECT_EQ(measure.calls(), kThreads);
  FakeMeasure after;
  Tuner reloaded(Options(&log), after.Fn());
  for (int i = 0; i < kThreads; ++i) EXPECT_TRUE(reloaded.Choose(Problem(1, 8 + i)).has_value());
  EXPECT_EQ(after.calls(), 0);
  EXPECT_EQ(log.size(), 0u) << log.All();
}

TEST_F(TunerTest, FullCacheStopsBackgroundTuningOfNewKeys) {
  FakeMeasure measure;
  LogSink log;
  TunerOptions options = Options(&log);
  options.background_tuning = true;
  options.max_entries = 2;
  Tuner tuner(options, measure.Fn());
  ASSERT_TRUE(tuner.Tune(Problem(1, 8)).ok());
  ASSERT_TRUE(tuner.Tune(Problem(1, 9)).ok());
  EXPECT_EQ(tuner.Choose(Problem(1, 10)), std::nullopt);
  EXPECT_EQ(tuner.Choose(Problem(1, 11)), std::nullopt);
  tuner.WaitIdle();
  EXPECT_EQ(measure.calls(), 2);
  EXPECT_THAT(log.All(), HasSubstr("max_entries"));
  EXPECT_EQ(log.size(), 1u) << log.All();        // warned once
  ASSERT_TRUE(tuner.Tune(Problem(1, 10)).ok());  // an explicit Tune() still adds
  EXPECT_TRUE(tuner.Choose(Problem(1, 10)).has_value());
}

TEST_F(TunerTest, ConcurrentTunesOfOneKeyMeasureOnce) {
  constexpr int kThreads = 16;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  std::atomic<int> calls{0};
  LogSink log;
  // The measurement waits until every thread is about to call Tune, so that most of them find
  // it in flight; the assertions hold whatever the interleaving.
  Tuner tuner(Options(&log), [&](const ConvProblem&) -> absl::StatusOr<std::vector<CandidateTime>> {
    calls.fetch_add(1);
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return arrived == kThreads; });
    return std::vector<CandidateTime>{{"winner", 1.0}, {"second", 2.0}};
  });
  std::vector<absl::StatusOr<TunedEntry>> results(kThreads, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++arrived;
      }
      cv.notify_all();
      results[i] = tuner.Tune(Problem(5 + i % 4));  // batches 5..8: one bucket
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(tuner.runs(), 1);
  for (const auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->config, "winner");
    EXPECT_EQ(result->runner_up, "second");
  }
}

TEST_F(TunerTest, ConcurrentFailureReachesEveryWaiter) {
  constexpr int kThreads = 8;
  std::atomic<int> started{0};
  std::atomic<int> calls{0};
  LogSink log;
  Tuner tuner(Options(&log), [&](const ConvProblem&) -> absl::StatusOr<std::vector<CandidateTime>> {
    calls.fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (started.load() < kThreads && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    return absl::ResourceExhaustedError("out of device memory");
  });
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      started.fetch_add(1);
      absl::StatusOr<TunedEntry> result = tuner.Tune(Problem(8));
      if (result.status().code() == absl::StatusCode::kResourceExhausted) failures.fetch_add(1);
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), kThreads);
  // Failures are not cached: threads arriving after one finished measure again, so at least one
  // and at most every thread measured.
  EXPECT_GE(calls.load(), 1);
  EXPECT_LE(calls.load(), kThreads);
}

TEST_F(TunerTest, ChooseMissTunesInTheBackgroundThenHits) {
  FakeMeasure measure;
  // Held until both misses are in, so that the second cannot find the first already tuned.
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  LogSink log;
  TunerOptions options = Options(&log);
  options.background_tuning = true;
  Tuner tuner(options, [&](const ConvProblem& p) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    return measure.Fn()(p);
  });
  EXPECT_EQ(tuner.Choose(Problem(3)), std::nullopt);
  EXPECT_EQ(tuner.Choose(Problem(4)), std::nullopt);  // same bucket: queued or tuning, once
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  tuner.WaitIdle();
  EXPECT_EQ(measure.calls(), 1);
  std::optional<TunedEntry> chosen = tuner.Choose(Problem(4));
  ASSERT_TRUE(chosen.has_value());
  EXPECT_EQ(chosen->config, "tile_for_n4");
  EXPECT_EQ(tuner.cache_misses(), 2);
  EXPECT_EQ(tuner.cache_hits(), 1);
  EXPECT_EQ(tuner.runs(), 1);
  EXPECT_GE(tuner.tuning_seconds(), 0.0);
  // The background result was saved.
  EXPECT_THAT(ReadFile(), HasSubstr("config=tile_for_n4"));
}

TEST_F(TunerTest, BackgroundFailureIsLoggedAndNotRetriedInTheBackground) {
  FakeMeasure measure;
  measure.fail_ = true;
  LogSink log;
  TunerOptions options = Options(&log);
  options.background_tuning = true;
  Tuner tuner(options, measure.Fn());
  EXPECT_EQ(tuner.Choose(Problem(8)), std::nullopt);
  tuner.WaitIdle();
  EXPECT_EQ(tuner.Choose(Problem(8)), std::nullopt);
  tuner.WaitIdle();
  EXPECT_EQ(measure.calls(), 1);
  EXPECT_THAT(log.All(), HasSubstr("background tuning of"));
  // An explicit Tune() still tries again.
  measure.fail_ = false;
  EXPECT_TRUE(tuner.Tune(Problem(8)).ok());
  EXPECT_EQ(measure.calls(), 2);
}

TEST_F(TunerTest, BackgroundQueueIsBounded) {
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> calls{0};
  LogSink log;
  TunerOptions options = Options(&log);
  options.background_tuning = true;
  options.max_queued = 2;
  Tuner tuner(options, [&](const ConvProblem&) -> absl::StatusOr<std::vector<CandidateTime>> {
    calls.fetch_add(1);
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return release; });
    return std::vector<CandidateTime>{{"only", 1.0}};
  });
  // Ten distinct shapes; the worker may take one off the queue at any time, so at most three
  // (two queued plus one in progress) get tuned.
  for (int i = 0; i < 10; ++i) tuner.Choose(Problem(1, 8 + i));
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
  }
  cv.notify_all();
  tuner.WaitIdle();
  EXPECT_GE(calls.load(), 2);
  EXPECT_LE(calls.load(), 3);
}

TEST_F(TunerTest, DestructorStopsWhileTuningIsInProgress) {
  std::atomic<bool> entered{false};
  std::atomic<int> calls{0};
  LogSink log;
  TunerOptions options = Options(&log);
  options.background_tuning = true;
  std::thread releaser;
  {
    auto tuner = std::make_unique<Tuner>(
        options, [&](const ConvProblem&) -> absl::StatusOr<std::vector<CandidateTime>> {
          calls.fetch_add(1);
          entered = true;
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          return std::vector<CandidateTime>{{"only", 1.0}};
        });
    for (int i = 0; i < 20; ++i) tuner->Choose(Problem(1, 8 + i));
    while (!entered) std::this_thread::yield();
    tuner.reset();  // must return: finishes the measurement in progress, drops the queue
  }
  EXPECT_GE(calls.load(), 1);
  EXPECT_LT(calls.load(), 20);
}

TEST_F(TunerTest, NearestTunedBucketIsChosen) {
  FakeMeasure measure;
  LogSink log;
  Tuner tuner(Options(&log), measure.Fn());
  ASSERT_TRUE(tuner.Tune(Problem(1)).ok());
  ASSERT_TRUE(tuner.Tune(Problem(4)).ok());
  ASSERT_TRUE(tuner.Tune(Problem(64)).ok());
  auto chosen_config = [&](int64_t batch) {
    std::optional<TunedEntry> entry = tuner.Choose(Problem(batch));
    return entry.has_value() ? entry->config : std::string("none");
  };
  EXPECT_EQ(chosen_config(2), "tile_for_n1");    // 1 and 4 equally near: the smaller
  EXPECT_EQ(chosen_config(3), "tile_for_n4");    // exact bucket 4
  EXPECT_EQ(chosen_config(8), "tile_for_n4");    // 4 is one step away, 64 three
  EXPECT_EQ(chosen_config(16), "tile_for_n4");   // two steps either way: the smaller
  EXPECT_EQ(chosen_config(20), "tile_for_n64");  // bucket 32: one step from 64
  EXPECT_EQ(chosen_config(1000), "tile_for_n64");
  // Another shape (a different height) has nothing tuned.
  EXPECT_EQ(tuner.Choose(Problem(4, 28)), std::nullopt);
  EXPECT_EQ(measure.calls(), 3);  // background tuning is off in these options
}

}  // namespace
}  // namespace convserve
