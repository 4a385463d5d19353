// The load generator behind `convserve-cli perf`: drives Forward calls at a fixed concurrency
// (closed loop: each finished request starts the next) or at a fixed offered rate (open loop:
// requests leave on schedule whether or not earlier ones have returned), and summarises what it
// saw: throughput, client-side latency percentiles, the server's own queue and compute time
// from each reply, the batch sizes the server formed, and every error by status code.
//
// Calls are spread over several Clients, each ideally its own TCP connection (distinct
// ClientOptions::channel_tag): one HTTP/2 connection carries every call through one transport
// and one socket, which for large tensors becomes the bottleneck before the server does.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/client.h"
#include "convserve/v1/conv2d.pb.h"

namespace convserve {

struct PerfSettings {
  // Requests finishing during warm-up are not counted; then `duration` is measured.
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration duration = absl::Seconds(5);
  absl::Duration request_timeout = absl::Seconds(60);
  // Open loop: a request due while this many are in flight is not sent and counted in
  // PerfPoint::not_sent, so an overloaded server cannot make the generator hoard memory.
  int max_outstanding = 8192;
};

// One measured load level.
struct PerfPoint {
  std::string mode;     // "concurrency" (closed loop) or "rate" (open loop)
  double load = 0;      // the concurrency, or the offered requests per second
  int64_t batch = 0;    // N of each request
  int connections = 0;  // how many of the given Clients carried the calls
  double seconds = 0;   // length of the measured window
  int64_t ok = 0;       // successful replies finishing in the window
  int64_t errors = 0;   // failed ones, by canonical code name in error_counts
  int64_t not_sent = 0;
  std::map<std::string, int64_t> error_counts;
  std::string first_error;
  double throughput = 0;  // ok / seconds
  // Client-observed latency in microseconds; open loop measures from the scheduled send time,
  // so a stalled server cannot hide queueing behind a late send (coordinated omission).
  double latency_mean_us = 0;
  double latency_p50_us = 0;
  double latency_p90_us = 0;
  double latency_p99_us = 0;
  double latency_p999_us = 0;  // the tail that a stall of a few ms in every few seconds shows in
  double latency_max_us = 0;
  // From ForwardResponse.timing.
  double server_queue_mean_us = 0;
  double server_queue_p50_us = 0;
  double server_compute_mean_us = 0;
  double server_compute_p50_us = 0;
  double server_total_mean_us = 0;
  std::map<int32_t, int64_t> batch_sizes;  // ForwardResponse.batch_size -> replies
  double mean_batch_size() const;
};

// Keeps `concurrency` requests in flight for warmup + duration. Request slot i always sends
// requests[i % requests.size()] on clients[i % k], k = min(concurrency, clients.size()), so
// each connection carries an equal share (several requests: e.g. each slot its own output
// range in shared memory). `clients` and `requests` (at least one each) must stay alive and
// unchanged until the call returns.
PerfPoint RunClosedLoop(absl::Span<Client* const> clients,
                        absl::Span<const convserve::v1::ForwardRequest> requests, int concurrency,
                        const PerfSettings& settings);
// Sends `rate` requests per second, evenly spaced, for warmup + duration; the i-th due is
// requests[i % requests.size()] on clients[i % clients.size()], each Client's share sent by a
// thread of its own. A request due while max_outstanding are in flight is counted not sent.
PerfPoint RunOpenLoop(absl::Span<Client* const> clients,
                      absl::Span<const convserve::v1::ForwardRequest> requests, double rate,
                      const PerfSettings& settings);

// Human-readable table, one row per point.
std::string PerfTable(const std::vector<PerfPoint>& points);
// Machine-readable forms of the same rows; the batch histogram is "size:count" pairs.
std::string PerfJson(const std::vector<PerfPoint>& points);
std::string PerfCsv(const std::vector<PerfPoint>& points);

}  // namespace convserve
