// tuner_bench: what auto-tuning costs and what it buys, per ResNet-50 conv shape (fp16, NHWC,
// N = 1, 8, 32 by default). For each key it reports the tuning time (Tune() wall clock and the
// GPU time the engine reports) and the median kernel time of the tuned configuration against the
// engine's heuristic default (Plan() on a second engine that never tunes), timed interleaved in
// one process with CUDA events and the L2 flushed before every run. It also checks that the two
// configurations compute the same output. Prints a table and writes JSON (--json).
//
//   tuner_bench --json=out.json [--shapes=tests/data/resnet50.tsv] [--batches=1,8,32]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernels/conv_engine.h"
#include "kernels/conv_problem.h"
#include "kernels/host_numeric.h"
#include "kernels/shape_table.h"

ABSL_FLAG(std::string, shapes, "tests/data/resnet50.tsv", "shape table to run");
ABSL_FLAG(std::string, batches, "1,8,32", "comma-separated batch sizes");
ABSL_FLAG(int, iters, 50, "timed runs per configuration; the median is reported");
ABSL_FLAG(int, warmup, 5, "untimed runs per configuration first");
ABSL_FLAG(int, flush_mb, 256, "bytes written before each timed run to flush the L2, in MiB");
ABSL_FLAG(std::string, json, "", "write the results as JSON to this file");
ABSL_FLAG(std::string, cache, "",
          "tuning cache file for the tuning engine; when set, a third engine then reloads it and "
          "the run reports whether every key came back without measuring");
ABSL_FLAG(std::string, commit, "unknown", "source commit, recorded in the JSON");

namespace convserve {
namespace {

// Device memory for the benchmark's own buffers.
struct DeviceFree {
  void operator()(void* p) const { cudaFree(p); }
};
using DevicePtr = std::unique_ptr<void, DeviceFree>;

absl::Status Cuda(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(error)));
}

absl::StatusOr<DevicePtr> Allocate(int64_t bytes) {
  void* p = nullptr;
  if (absl::Status s = Cuda(cudaMalloc(&p, std::max<int64_t>(bytes, 1)), "cudaMalloc"); !s.ok()) {
    return s;
  }
  return DevicePtr(p);
}

// Random fp16 values in [-scale, scale].
std::vector<uint16_t> RandomHalves(int64_t count, float scale, std::mt19937* rng) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<uint16_t> out(static_cast<size_t>(count));
  for (uint16_t& h : out) h = FloatToHalfBits(dist(*rng));
  return out;
}

double Median(std::vector<double> values) {
  if (values.empty()) return std::nan("");
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

std::string JsonString(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      absl::StrAppendFormat(&out, "\\u%04x", c);
    } else {
      out.push_back(c);
    }
  }
  return out + "\"";
}

std::string JsonNumber(double value) {
  return std::isfinite(value) ? absl::StrFormat("%.6g", value) : "null";
}

struct CaseResult {
  std::string shape;
  ConvProblem problem;
  std::string error;  // non-empty: the case did not run to the end
  double tune_wall_ms = 0;
  double tune_gpu_ms = 0;  // as the engine reports it (TuningResult::tuning_seconds)
  std::string tuned_config;
  double tuned_reported_us = 0;  // the tuner's own measurement
  std::string runner_up;
  double runner_up_us = 0;
  std::string default_config;
  double tuned_us = 0;  // this program's median
  double default_us = 0;
  double output_rel_diff = 0;  // ||tuned - default|| / ||default||
  double speedup() const { return default_us / tuned_us; }
};

// Times one launch per iteration with events, L2 flushed before each, the two configurations
// interleaved (alternating which goes first) so that drift in clocks affects both alike.
class Timer {
 public:
  static absl::StatusOr<Timer> Create(int64_t flush_bytes) {
    Timer timer;
    absl::StatusOr<DevicePtr> flush = Allocate(flush_bytes);
    if (!flush.ok()) return flush.status();
    timer.flush_ = *std::move(flush);
    timer.flush_bytes_ = flush_bytes;
    if (absl::Status s = Cuda(cudaStreamCreateWithFlags(&timer.stream_, cudaStreamNonBlocking),
                              "cudaStreamCreate");
        !s.ok()) {
      return s;
    }
    return timer;
  }
  Timer() = default;
  Timer(Timer&& other) noexcept
      : flush_(std::move(other.flush_)),
        flush_bytes_(other.flush_bytes_),
        stream_(std::exchange(other.stream_, nullptr)) {}
  ~Timer() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t stream() const { return stream_; }

  // Runs `launches` (each enqueues one kernel on the stream) `warmup` + `iters` times; returns
  // each launch's median time in microseconds.
  using Launch = std::function<absl::Status(cudaStream_t)>;
  absl::StatusOr<std::vector<double>> MedianUs(const std::vector<Launch>& launches, int warmup,
                                               int iters) {
    const size_t n = launches.size();
    std::vector<cudaEvent_t> events(2 * n * static_cast<size_t>(iters), nullptr);
    absl::Status status;
    for (cudaEvent_t& e : events) {
      if (status.ok()) status = Cuda(cudaEventCreate(&e), "cudaEventCreate");
    }
    for (int w = 0; w < warmup && status.ok(); ++w) {
      for (const Launch& launch : launches) {
        if (status.ok()) status = launch(stream_);
      }
    }
    for (int i = 0; i < iters && status.ok(); ++i) {
      for (size_t j = 0; j < n && status.ok(); ++j) {
        const size_t which = (i % 2 == 0) ? j : n - 1 - j;
        cudaEvent_t start = events[2 * (static_cast<size_t>(i) * n + which)];
        cudaEvent_t stop = events[2 * (static_cast<size_t>(i) * n + which) + 1];
        status = Cuda(cudaMemsetAsync(flush_.get(), i & 0xff, flush_bytes_, stream_), "flush");
        if (status.ok()) status = Cuda(cudaEventRecord(start, stream_), "cudaEventRecord");
        if (status.ok()) status = launches[which](stream_);
        if (status.ok()) status = Cuda(cudaGetLastError(), "kernel launch");
        if (status.ok()) status = Cuda(cudaEventRecord(stop, stream_), "cudaEventRecord");
      }
    }
    if (status.ok()) status = Cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    std::vector<std::vector<double>> times(n);
    for (int i = 0; i < iters && status.ok(); ++i) {
      for (size_t j = 0; j < n && status.ok(); ++j) {
        float ms = 0;
        status = Cuda(cudaEventElapsedTime(&ms, events[2 * (static_cast<size_t>(i) * n + j)],
                                           events[2 * (static_cast<size_t>(i) * n + j) + 1]),
                      "cudaEventElapsedTime");
        times[j].push_back(1000.0 * ms);
      }
    }
    for (cudaEvent_t e : events) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (!status.ok()) return status;
    std::vector<double> medians;
    for (auto& t : times) medians.push_back(Median(std::move(t)));
    return medians;
  }

 private:
  DevicePtr flush_;
  int64_t flush_bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

double RelativeL2(const std::vector<uint16_t>& a, const std::vector<uint16_t>& ref) {
  double diff = 0, norm = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = HalfBitsToFloat(a[i]);
    const double r = HalfBitsToFloat(ref[i]);
    diff += (x - r) * (x - r);
    norm += r * r;
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

absl::Status RunCase(ConvEngine& tuning, ConvEngine& plain, Timer& timer, int warmup, int iters,
                     std::mt19937* rng, CaseResult* out) {
  const ConvProblem& problem = out->problem;
  const ConvParams& params = problem.params;
  const float weight_scale = 1.0f / std::sqrt(static_cast<float>(problem.gemm_k()));
  const std::vector<uint16_t> weights = RandomHalves(params.weight_elements(), weight_scale, rng);
  absl::StatusOr<std::shared_ptr<const PackedWeights>> tuning_weights =
      tuning.PackWeights(params, weights.data(), nullptr);
  if (!tuning_weights.ok()) return tuning_weights.status();
  absl::StatusOr<std::shared_ptr<const PackedWeights>> plain_weights =
      plain.PackWeights(params, weights.data(), nullptr);
  if (!plain_weights.ok()) return plain_weights.status();

  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<TuningResult> tuned = tuning.Tune(problem);
  out->tune_wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!tuned.ok()) return tuned.status();
  out->tune_gpu_ms = 1000.0 * tuned->tuning_seconds;
  out->tuned_config = tuned->config;
  out->tuned_reported_us = tuned->time_us;
  out->runner_up = tuned->runner_up;
  out->runner_up_us = tuned->runner_up_time_us;

  absl::StatusOr<ConvLaunch> tuned_launch = tuning.Plan(problem);
  if (!tuned_launch.ok()) return tuned_launch.status();
  absl::StatusOr<ConvLaunch> default_launch = plain.Plan(problem);
  if (!default_launch.ok()) return default_launch.status();
  out->default_config = default_launch->config_name;
  if (!tuned_launch->tuned || tuned_launch->config_name != tuned->config) {
    return absl::InternalError(absl::StrCat("Plan after Tune chose ", tuned_launch->config_name,
                                            tuned_launch->tuned ? " (tuned)" : " (untuned)",
                                            ", Tune chose ", tuned->config));
  }

  absl::StatusOr<DevicePtr> input = Allocate(problem.input_bytes());
  absl::StatusOr<DevicePtr> tuned_output = Allocate(problem.output_bytes());
  absl::StatusOr<DevicePtr> default_output = Allocate(problem.output_bytes());
  absl::StatusOr<DevicePtr> tuned_workspace = Allocate(tuned_launch->workspace_bytes);
  absl::StatusOr<DevicePtr> default_workspace = Allocate(default_launch->workspace_bytes);
  for (const auto* buffer :
       {&input, &tuned_output, &default_output, &tuned_workspace, &default_workspace}) {
    if (!buffer->ok()) return buffer->status();
  }
  const std::vector<uint16_t> host_input = RandomHalves(problem.input_elements(), 1.0f, rng);
  if (absl::Status s = Cuda(cudaMemcpy(input->get(), host_input.data(), problem.input_bytes(),
                                       cudaMemcpyHostToDevice),
                            "cudaMemcpy input");
      !s.ok()) {
    return s;
  }
  // Poisoned (fp16 NaN) so that an element a configuration fails to write shows in the check.
  for (const auto* output : {&tuned_output, &default_output}) {
    if (absl::Status s =
            Cuda(cudaMemset((*output)->get(), 0xff, problem.output_bytes()), "cudaMemset output");
        !s.ok()) {
      return s;
    }
  }
  const ConvLaunch tl = *tuned_launch;
  const ConvLaunch dl = *default_launch;
  std::vector<Timer::Launch> launches = {
      [&](cudaStream_t stream) {
        return plain.Run(problem, dl, **plain_weights, input->get(), default_output->get(),
                         default_workspace->get(), stream);
      },
      [&](cudaStream_t stream) {
        return tuning.Run(problem, tl, **tuning_weights, input->get(), tuned_output->get(),
                          tuned_workspace->get(), stream);
      },
  };
  absl::StatusOr<std::vector<double>> medians = timer.MedianUs(launches, warmup, iters);
  if (!medians.ok()) return medians.status();
  out->default_us = (*medians)[0];
  out->tuned_us = (*medians)[1];

  std::vector<uint16_t> a(static_cast<size_t>(problem.output_elements()));
  std::vector<uint16_t> b(a.size());
  if (absl::Status s = Cuda(
          cudaMemcpy(a.data(), tuned_output->get(), problem.output_bytes(), cudaMemcpyDeviceToHost),
          "cudaMemcpy output");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Cuda(cudaMemcpy(b.data(), default_output->get(), problem.output_bytes(),
                                       cudaMemcpyDeviceToHost),
                            "cudaMemcpy output");
      !s.ok()) {
    return s;
  }
  out->output_rel_diff = RelativeL2(a, b);
  return absl::OkStatus();
}

std::string CaseJson(const CaseResult& c) {
  return absl::StrCat(
      "{\"shape\":", JsonString(c.shape), ",\"n\":", c.problem.batch,
      ",\"key\":", JsonString(c.problem.ToString()), ",\"error\":", JsonString(c.error),
      ",\"tune_wall_ms\":", JsonNumber(c.tune_wall_ms),
      ",\"tune_gpu_ms\":", JsonNumber(c.tune_gpu_ms),
      ",\"tuned_config\":", JsonString(c.tuned_config),
      ",\"tuner_reported_us\":", JsonNumber(c.tuned_reported_us),
      ",\"runner_up\":", JsonString(c.runner_up), ",\"runner_up_us\":", JsonNumber(c.runner_up_us),
      ",\"default_config\":", JsonString(c.default_config),
      ",\"tuned_median_us\":", JsonNumber(c.tuned_us),
      ",\"default_median_us\":", JsonNumber(c.default_us),
      ",\"speedup\":", JsonNumber(c.error.empty() ? c.speedup() : std::nan("")),
      ",\"output_rel_diff\":", JsonNumber(c.output_rel_diff), "}");
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::vector<int64_t> batches;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_batches), ',')) {
    int64_t batch = 0;
    if (!absl::SimpleAtoi(part, &batch) || batch < 1) {
      std::fprintf(stderr, "--batches: '%s' is not a positive integer\n",
                   std::string(part).c_str());
      return 2;
    }
    batches.push_back(batch);
  }
  const int iters = std::max(1, absl::GetFlag(FLAGS_iters));
  const int warmup = std::max(0, absl::GetFlag(FLAGS_warmup));
  absl::StatusOr<std::vector<NamedShape>> shapes = ReadShapeTable(absl::GetFlag(FLAGS_shapes));
  if (!shapes.ok()) {
    std::fprintf(stderr, "%s\n", shapes.status().ToString().c_str());
    return 2;
  }

  ConvEngineOptions tuning_options;
  tuning_options.tuning_cache_path = absl::GetFlag(FLAGS_cache);
  tuning_options.background_tuning = false;
  ConvEngineOptions plain_options;  // memory-only cache that nothing fills: heuristic defaults
  plain_options.background_tuning = false;
  absl::StatusOr<std::unique_ptr<ConvEngine>> tuning = ConvEngine::Create(tuning_options);
  absl::StatusOr<std::unique_ptr<ConvEngine>> plain = ConvEngine::Create(plain_options);
  if (!tuning.ok() || !plain.ok()) {
    std::fprintf(stderr, "no engine: %s\n",
                 (!tuning.ok() ? tuning.status() : plain.status()).ToString().c_str());
    return 1;
  }
  absl::StatusOr<Timer> timer = Timer::Create(int64_t{absl::GetFlag(FLAGS_flush_mb)} << 20);
  if (!timer.ok()) {
    std::fprintf(stderr, "%s\n", timer.status().ToString().c_str());
    return 1;
  }
  std::printf("device: %s\n", (*tuning)->device_name().c_str());

  std::mt19937 rng(12345);
  std::vector<CaseResult> results;
  std::printf("%-22s %3s %9s %9s  %-26s %9s  %-26s %9s %7s %9s\n", "shape", "N", "tune_ms",
              "tune_gpu", "tuned_config", "tuned_us", "default_config", "dflt_us", "speedup",
              "rel_diff");
  for (const NamedShape& shape : *shapes) {
    for (int64_t batch : batches) {
      CaseResult c;
      c.shape = shape.name;
      c.problem = shape.problem;
      c.problem.batch = batch;
      c.problem.params.dtype = DataType::kFloat16;
      c.problem.input_layout = Layout::kNhwc;
      c.problem.output_layout = Layout::kNhwc;
      if (absl::Status s = RunCase(**tuning, **plain, *timer, warmup, iters, &rng, &c); !s.ok()) {
        c.error = s.ToString();
        std::printf("%-22s %3lld  ERROR %s\n", c.shape.c_str(), static_cast<long long>(batch),
                    c.error.c_str());
      } else {
        std::printf("%-22s %3lld %9.2f %9.2f  %-26s %9.2f  %-26s %9.2f %7.3f %9.2e\n",
                    c.shape.c_str(), static_cast<long long>(batch), c.tune_wall_ms, c.tune_gpu_ms,
                    c.tuned_config.c_str(), c.tuned_us, c.default_config.c_str(), c.default_us,
                    c.speedup(), c.output_rel_diff);
      }
      std::fflush(stdout);
      results.push_back(std::move(c));
    }
  }

  // Summary: tuning cost per key and what it bought.
  std::vector<double> gpu_ms, wall_ms, speedups;
  int slower = 0, over_budget = 0, errors = 0, mismatched = 0;
  double log_sum = 0;
  for (const CaseResult& c : results) {
    if (!c.error.empty()) {
      ++errors;
      continue;
    }
    gpu_ms.push_back(c.tune_gpu_ms);
    wall_ms.push_back(c.tune_wall_ms);
    speedups.push_back(c.speedup());
    log_sum += std::log(c.speedup());
    if (c.speedup() < 0.97) ++slower;  // more than 3% slower than the default
    if (c.tune_gpu_ms > 50.0) ++over_budget;
    if (!(c.output_rel_diff < 2e-3)) ++mismatched;
  }
  const double geomean = speedups.empty() ? std::nan("") : std::exp(log_sum / speedups.size());
  const double min_speedup =
      speedups.empty() ? std::nan("") : *std::min_element(speedups.begin(), speedups.end());
  const double max_gpu_ms =
      gpu_ms.empty() ? std::nan("") : *std::max_element(gpu_ms.begin(), gpu_ms.end());
  std::printf(
      "\nkeys %zu (errors %d) | tuning per key: median %.2f ms GPU (max %.2f, %d over 50 ms), "
      "median %.2f ms wall | tuned vs default: geomean %.3fx, min %.3fx, %d more than 3%% "
      "slower | outputs differing (rel L2 >= 2e-3): %d\n",
      results.size(), errors, Median(gpu_ms), max_gpu_ms, over_budget, Median(wall_ms), geomean,
      min_speedup, slower, mismatched);
  // Per batch size: where tuning matters most (small M at N = 1) shows apart from large N.
  std::string per_batch_json;
  for (int64_t batch : batches) {
    double batch_log_sum = 0, batch_gpu_ms = 0;
    int count = 0, differs = 0;
    for (const CaseResult& c : results) {
      if (!c.error.empty() || c.problem.batch != batch) continue;
      batch_log_sum += std::log(c.speedup());
      batch_gpu_ms = std::max(batch_gpu_ms, c.tune_gpu_ms);
      if (c.tuned_config != c.default_config) ++differs;
      ++count;
    }
    if (count == 0) continue;
    const double batch_geomean = std::exp(batch_log_sum / count);
    std::printf(
        "N=%-3lld %2d keys: tuned differs from default on %2d, geomean %.3fx, tuning max "
        "%.2f ms GPU\n",
        static_cast<long long>(batch), count, differs, batch_geomean, batch_gpu_ms);
    absl::StrAppend(&per_batch_json, per_batch_json.empty() ? "" : ",", "{\"n\":", batch,
                    ",\"keys\":", count, ",\"tuned_differs\":", differs,
                    ",\"speedup_geomean\":", JsonNumber(batch_geomean),
                    ",\"tune_gpu_ms_max\":", JsonNumber(batch_gpu_ms), "}");
  }
  const TunerCounters counters = (*tuning)->tuner_counters();
  std::printf("tuner counters: runs %lld, hits %lld, misses %lld, %.3f s\n",
              static_cast<long long>(counters.runs), static_cast<long long>(counters.cache_hits),
              static_cast<long long>(counters.cache_misses), counters.seconds);

  // Reload: a fresh engine on the same cache file must find every key without measuring.
  std::string reload_json = "null";
  if (!tuning_options.tuning_cache_path.empty()) {
    tuning->reset();
    absl::StatusOr<std::unique_ptr<ConvEngine>> reloaded = ConvEngine::Create(tuning_options);
    if (reloaded.ok()) {
      int same = 0, total = 0;
      const auto start = std::chrono::steady_clock::now();
      for (const CaseResult& c : results) {
        if (!c.error.empty()) continue;
        ++total;
        absl::StatusOr<TuningResult> r = (*reloaded)->Tune(c.problem);
        if (r.ok() && r->config == c.tuned_config) ++same;
      }
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
      const int64_t runs = (*reloaded)->tuner_counters().runs;
      std::printf("reload from %s: %d/%d keys with the same choice, %lld measured, %.2f ms\n",
                  tuning_options.tuning_cache_path.c_str(), same, total,
                  static_cast<long long>(runs), ms);
      reload_json = absl::StrCat("{\"keys\":", total, ",\"same_choice\":", same,
                                 ",\"measured\":", runs, ",\"wall_ms\":", JsonNumber(ms), "}");
    }
  }

  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::vector<std::string> cases;
    for (const CaseResult& c : results) cases.push_back(CaseJson(c));
    std::vector<std::string> command(argv, argv + argc);
    std::ofstream out(json_path);
    const std::string date =
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
    out << "{\"program\":\"tuner_bench\",\"date\":" << JsonString(date)
        << ",\"device\":" << JsonString((*plain)->device_name())
        << ",\"commit\":" << JsonString(absl::GetFlag(FLAGS_commit))
        << ",\"command\":" << JsonString(absl::StrJoin(command, " ")) << ",\"iters\":" << iters
        << ",\"warmup\":" << warmup << ",\"flush_mb\":" << absl::GetFlag(FLAGS_flush_mb)
        << ",\n\"summary\":{\"keys\":" << results.size() << ",\"errors\":" << errors
        << ",\"tune_gpu_ms_median\":" << JsonNumber(Median(gpu_ms))
        << ",\"tune_gpu_ms_max\":" << JsonNumber(max_gpu_ms)
        << ",\"keys_over_50ms_gpu\":" << over_budget
        << ",\"tune_wall_ms_median\":" << JsonNumber(Median(wall_ms))
        << ",\"speedup_geomean\":" << JsonNumber(geomean)
        << ",\"speedup_min\":" << JsonNumber(min_speedup) << ",\"slower_than_3pct\":" << slower
        << ",\"outputs_differing\":" << mismatched << "},\n\"per_batch\":[" << per_batch_json
        << "],\n\"reload\":" << reload_json << ",\n\"cases\":[\n"
        << absl::StrJoin(cases, ",\n") << "\n]}\n";
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return errors == 0 && mismatched == 0 ? 0 : 1;
}

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) { return convserve::Main(argc, argv); }
