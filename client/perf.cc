// Closed- and open-loop load generation over Client::ForwardAsync.
#include "client/perf.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace convserve {
namespace {

// Nearest-rank percentile of sorted values; 0 when empty.
double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

double Mean(const std::vector<double>& values) {
  if (values.empty()) return 0;
  double sum = 0;
  for (double v : values) sum += v;
  return sum / static_cast<double>(values.size());
}

// Collects the outcome of every request that finishes inside the measured window.
class Recorder {
 public:
  Recorder(absl::Time window_start, absl::Time window_end)
      : window_start_(window_start), window_end_(window_end) {}

  bool InWindow(absl::Time t) const { return t >= window_start_ && t < window_end_; }

  void Record(absl::Time sent, absl::Time finished, const absl::Status& status,
              const v1::ForwardResponse& response) {
    if (!InWindow(finished)) return;
    absl::MutexLock lock(&mu_);
    if (!status.ok()) {
      ++point_.errors;
      ++point_.error_counts[absl::StatusCodeToString(status.code())];
      if (point_.first_error.empty()) point_.first_error = status.ToString();
      return;
    }
    ++point_.ok;
    latency_us_.push_back(absl::ToDoubleMicroseconds(finished - sent));
    queue_us_.push_back(static_cast<double>(response.timing().queue_us()));
    compute_us_.push_back(static_cast<double>(response.timing().compute_us()));
    total_us_.push_back(static_cast<double>(response.timing().total_us()));
    ++point_.batch_sizes[response.batch_size()];
  }

  void CountNotSent(absl::Time due) {
    if (!InWindow(due)) return;
    absl::MutexLock lock(&mu_);
    ++point_.not_sent;
  }

  PerfPoint Finish(std::string mode, double load, int64_t batch, int connections) {
    absl::MutexLock lock(&mu_);
    PerfPoint point = point_;
    point.mode = std::move(mode);
    point.load = load;
    point.batch = batch;
    point.connections = connections;
    point.seconds = absl::ToDoubleSeconds(window_end_ - window_start_);
    point.throughput = static_cast<double>(point.ok) / point.seconds;
    for (auto* values : {&latency_us_, &queue_us_, &compute_us_}) {
      std::sort(values->begin(), values->end());
    }
    point.latency_mean_us = Mean(latency_us_);
    point.latency_p50_us = Percentile(latency_us_, 0.50);
    point.latency_p90_us = Percentile(latency_us_, 0.90);
    point.latency_p99_us = Percentile(latency_us_, 0.99);
    point.latency_p999_us = Percentile(latency_us_, 0.999);
    point.latency_max_us = latency_us_.empty() ? 0 : latency_us_.back();
    point.server_queue_mean_us = Mean(queue_us_);
    point.server_queue_p50_us = Percentile(queue_us_, 0.50);
    point.server_compute_mean_us = Mean(compute_us_);
    point.server_compute_p50_us = Percentile(compute_us_, 0.50);
    point.server_total_mean_us = Mean(total_us_);
    return point;
  }

 private:
  const absl::Time window_start_;
  const absl::Time window_end_;
  absl::Mutex mu_;
  PerfPoint point_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latency_us_ ABSL_GUARDED_BY(mu_);
  std::vector<double> queue_us_ ABSL_GUARDED_BY(mu_);
  std::vector<double> compute_us_ ABSL_GUARDED_BY(mu_);
  std::vector<double> total_us_ ABSL_GUARDED_BY(mu_);
};

// Counts calls in flight so the generator can wait for the last one.
class InFlight {
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  void Done() {
    absl::MutexLock lock(&mu_);
    --count_;
  }
  int count() {
    absl::MutexLock lock(&mu_);
    return count_;
  }
  void WaitForZero() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* count) { return *count == 0; }, &count_));
  }

 private:
  absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

int64_t BatchOf(const v1::ForwardRequest& request) {
  return request.input().shape_size() > 0 ? request.input().shape(0) : 0;
}

// One closed-loop worker: a request slot that re-issues itself, on its own Client, from its
// completion callback until the run's end.
struct Worker {
  Client* client = nullptr;
  const v1::ForwardRequest* request = nullptr;
  v1::ForwardResponse response;
  absl::Time sent;
};

}  // namespace

double PerfPoint::mean_batch_size() const {
  int64_t replies = 0;
  double sum = 0;
  for (const auto& [size, count] : batch_sizes) {
    replies += count;
    sum += static_cast<double>(size) * static_cast<double>(count);
  }
  return replies == 0 ? 0 : sum / static_cast<double>(replies);
}

PerfPoint RunClosedLoop(absl::Span<Client* const> clients,
                        absl::Span<const v1::ForwardRequest> requests, int concurrency,
                        const PerfSettings& settings) {
  const absl::Time start = absl::Now();
  const absl::Time window_start = start + settings.warmup;
  const absl::Time stop = window_start + settings.duration;
  Recorder recorder(window_start, stop);
  // Shared with the callbacks: the last one may still be inside Done() when this returns.
  auto in_flight = std::make_shared<InFlight>();
  std::vector<Worker> workers(static_cast<size_t>(concurrency));
  const size_t connections = std::min(clients.size(), workers.size());
  for (size_t i = 0; i < workers.size(); ++i) {
    workers[i].client = clients[i % connections];
    workers[i].request = &requests[i % requests.size()];
  }

  // Issue is re-entered from gRPC's callback threads; it only starts a call, never blocks.
  std::function<void(Worker*)> issue = [&](Worker* worker) {
    worker->response.Clear();
    worker->sent = absl::Now();
    worker->client->ForwardAsync(*worker->request, &worker->response, settings.request_timeout,
                                 [&, worker, in_flight](absl::Status status) {
                                   const absl::Time finished = absl::Now();
                                   recorder.Record(worker->sent, finished, status,
                                                   worker->response);
                                   if (finished < stop) {
                                     issue(worker);
                                   } else {
                                     in_flight->Done();
                                   }
                                 });
  };
  for (Worker& worker : workers) {
    in_flight->Add();
    issue(&worker);
  }
  in_flight->WaitForZero();
  return recorder.Finish("concurrency", concurrency, BatchOf(requests.front()),
                         static_cast<int>(connections));
}

PerfPoint RunOpenLoop(absl::Span<Client* const> clients,
                      absl::Span<const v1::ForwardRequest> requests, double rate,
                      const PerfSettings& settings) {
  const absl::Time start = absl::Now();
  const absl::Time window_start = start + settings.warmup;
  const absl::Time stop = window_start + settings.duration;
  Recorder recorder(window_start, stop);
  auto in_flight = std::make_shared<InFlight>();  // shared with the callbacks, as above
  const absl::Duration interval = absl::Seconds(1) / rate;

  // One sender thread per Client, each sending every k-th scheduled request on its own Client:
  // issuing a call costs the client tens of microseconds, so a single sender falls behind its
  // schedule at a few tens of thousands of requests per second, and the latencies, measured from
  // the schedule, would then be the client's.
  const int64_t senders = static_cast<int64_t>(clients.size());
  auto send = [&](int64_t sender) {
    Client& client = *clients[sender];
    for (int64_t i = sender;; i += senders) {
      const absl::Time due = start + interval * static_cast<double>(i);
      if (due >= stop) break;
      const absl::Duration wait = due - absl::Now();
      if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
      if (in_flight->count() >= settings.max_outstanding) {
        recorder.CountNotSent(due);
        continue;
      }
      auto* response = new v1::ForwardResponse;
      in_flight->Add();
      const v1::ForwardRequest& request = requests[i % requests.size()];
      client.ForwardAsync(request, response, settings.request_timeout,
                          [&recorder, response, due, in_flight](absl::Status status) {
                            recorder.Record(due, absl::Now(), status, *response);
                            delete response;
                            in_flight->Done();
                          });
    }
  };
  std::vector<std::thread> threads;
  for (int64_t sender = 1; sender < senders; ++sender) threads.emplace_back(send, sender);
  send(0);
  for (std::thread& thread : threads) thread.join();
  in_flight->WaitForZero();
  return recorder.Finish("rate", rate, BatchOf(requests.front()), static_cast<int>(clients.size()));
}

namespace {

std::string Histogram(const std::map<int32_t, int64_t>& batch_sizes, const char* separator) {
  std::vector<std::string> parts;
  for (const auto& [size, count] : batch_sizes) parts.push_back(absl::StrCat(size, ":", count));
  return absl::StrJoin(parts, separator);
}

std::string Errors(const PerfPoint& p) {
  std::vector<std::string> parts;
  for (const auto& [code, count] : p.error_counts) parts.push_back(absl::StrCat(code, ":", count));
  return absl::StrJoin(parts, " ");
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
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

std::string CsvField(absl::string_view s) {
  if (s.find_first_of(",\"\n") == absl::string_view::npos) return std::string(s);
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  return out + "\"";
}

}  // namespace

std::string PerfTable(const std::vector<PerfPoint>& points) {
  std::string out = absl::StrFormat(
      "%-11s %8s %5s %4s %8s %6s %10s %9s %9s %9s %9s %9s %9s %9s %6s  %s\n", "mode", "load",
      "batch", "conn", "ok", "errors", "req/s", "p50_us", "p90_us", "p99_us", "p99.9_us", "max_us",
      "srvq_us", "srvc_us", "meanN", "batch sizes (N:replies)");
  for (const PerfPoint& p : points) {
    absl::StrAppendFormat(&out,
                          "%-11s %8.6g %5d %4d %8d %6d %10.1f %9.0f %9.0f %9.0f %9.0f %9.0f "
                          "%9.0f %9.0f %6.2f  %s\n",
                          p.mode, p.load, p.batch, p.connections, p.ok, p.errors + p.not_sent,
                          p.throughput, p.latency_p50_us, p.latency_p90_us, p.latency_p99_us,
                          p.latency_p999_us, p.latency_max_us, p.server_queue_p50_us,
                          p.server_compute_p50_us, p.mean_batch_size(),
                          Histogram(p.batch_sizes, " "));
    if (p.errors > 0 || p.not_sent > 0) {
      absl::StrAppend(&out, "    errors: ", Errors(p));
      if (p.not_sent > 0) absl::StrAppend(&out, " not_sent:", p.not_sent);
      if (!p.first_error.empty()) absl::StrAppend(&out, "; first: ", p.first_error);
      out.push_back('\n');
    }
  }
  absl::StrAppend(&out,
                  "latency: client-observed; srvq/srvc: server-reported queue and compute p50\n");
  return out;
}

std::string PerfJson(const std::vector<PerfPoint>& points) {
  std::vector<std::string> rows;
  for (const PerfPoint& p : points) {
    std::vector<std::string> batches;
    for (const auto& [size, count] : p.batch_sizes) {
      batches.push_back(absl::StrCat("\"", size, "\": ", count));
    }
    std::vector<std::string> errors;
    for (const auto& [code, count] : p.error_counts) {
      errors.push_back(absl::StrCat(JsonString(code), ": ", count));
    }
    rows.push_back(absl::StrFormat(
        "  {\"mode\": %s, \"load\": %.6g, \"batch\": %d, \"connections\": %d, "
        "\"seconds\": %.3f, \"ok\": %d, "
        "\"errors\": %d, \"not_sent\": %d, \"throughput_rps\": %.3f, "
        "\"latency_us\": {\"mean\": %.1f, \"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, "
        "\"p999\": %.1f, \"max\": %.1f}, "
        "\"server_us\": {\"queue_mean\": %.1f, \"queue_p50\": %.1f, \"compute_mean\": %.1f, "
        "\"compute_p50\": %.1f, \"total_mean\": %.1f}, "
        "\"mean_batch_size\": %.3f, \"batch_sizes\": {%s}, \"error_counts\": {%s}, "
        "\"first_error\": %s}",
        JsonString(p.mode), p.load, p.batch, p.connections, p.seconds, p.ok, p.errors, p.not_sent,
        p.throughput, p.latency_mean_us, p.latency_p50_us, p.latency_p90_us, p.latency_p99_us,
        p.latency_p999_us, p.latency_max_us, p.server_queue_mean_us, p.server_queue_p50_us,
        p.server_compute_mean_us, p.server_compute_p50_us, p.server_total_mean_us,
        p.mean_batch_size(), absl::StrJoin(batches, ", "), absl::StrJoin(errors, ", "),
        JsonString(p.first_error)));
  }
  return absl::StrCat("[\n", absl::StrJoin(rows, ",\n"), "\n]\n");
}

std::string PerfCsv(const std::vector<PerfPoint>& points) {
  std::string out =
      "mode,load,batch,connections,seconds,ok,errors,not_sent,throughput_rps,latency_mean_us,"
      "latency_p50_us,latency_p90_us,latency_p99_us,latency_p999_us,latency_max_us,"
      "server_queue_mean_us,"
      "server_queue_p50_us,server_compute_mean_us,server_compute_p50_us,server_total_mean_us,"
      "mean_batch_size,batch_sizes,error_counts\n";
  for (const PerfPoint& p : points) {
    absl::StrAppendFormat(
        &out,
        "%s,%.6g,%d,%d,%.3f,%d,%d,%d,%.3f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,"
        "%.1f,%.1f,%.3f,%s,%s\n",
        p.mode, p.load, p.batch, p.connections, p.seconds, p.ok, p.errors, p.not_sent, p.throughput,
        p.latency_mean_us, p.latency_p50_us, p.latency_p90_us, p.latency_p99_us, p.latency_p999_us,
        p.latency_max_us, p.server_queue_mean_us, p.server_queue_p50_us, p.server_compute_mean_us,
        p.server_compute_p50_us, p.server_total_mean_us, p.mean_batch_size(),
        CsvField(Histogram(p.batch_sizes, ";")), CsvField(Errors(p)));
  }
  return out;
}

}  // namespace convserve
