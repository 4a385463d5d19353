// convserve_device_healthy: the real convserve-server with two CPU reference executors
// (--devices=cpu,cpu) publishes 1 for each device from start-up, on its own /metrics page and
// through a real Prometheus scraping it. CPU executors never break, so the server's 1 -> 0
// change cannot be caused here; the exported 0 is checked on the real Prometheus implementation.
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/metrics/metrics.h"
#include "tests/e2e/server_process.h"
#include "tests/metrics/http_get.h"
#include "tests/metrics/prometheus_process.h"

namespace convserve {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kCpu0[] = "cpu:0 (reference, 1 threads)";
constexpr char kCpu1[] = "cpu:1 (reference, 1 threads)";

std::string HealthyLine(const std::string& device, int value) {
  return "convserve_device_healthy{device=\"" + device + "\"} " + std::to_string(value) + "\n";
}

TEST(DeviceHealthMetricTest, EveryExecutorIsReportedHealthyFromStartUp) {
  if (access(CONVSERVE_PROMETHEUS, X_OK) != 0) {
    GTEST_SKIP() << CONVSERVE_PROMETHEUS << " missing (scripts/install-deps.sh installs it)";
  }
  ServerProcessOptions server_options;
  server_options.binary = CONVSERVE_SERVER;
  server_options.device = "auto";  // --devices replaces it
  server_options.args = {"--devices=cpu,cpu", "--cpu_threads=1"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();

  // The server's own page: set before the server reported SERVING, without any request.
  absl::StatusOr<HttpResponse> page = HttpGet((*server)->metrics_port(), "/metrics");
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->status, 200);
  EXPECT_THAT(page->body, HasSubstr("# TYPE convserve_device_healthy gauge\n"));
  EXPECT_THAT(page->body, HasSubstr(HealthyLine(kCpu0, 1)));
  EXPECT_THAT(page->body, HasSubstr(HealthyLine(kCpu1, 1)));

  PrometheusOptions prometheus_options;
  prometheus_options.binary = CONVSERVE_PROMETHEUS;
  prometheus_options.targets = {"127.0.0.1:" + std::to_string((*server)->metrics_port())};
  absl::StatusOr<std::unique_ptr<PrometheusProcess>> prometheus =
      PrometheusProcess::Start(prometheus_options);
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();

  // Poll until Prometheus scraped the target once (scrape interval 1 s; generous for a loaded
  // machine), then both series must be there with 1.
  std::map<std::string, double> healthy;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (healthy.size() < 2 && absl::Now() < deadline) {
    absl::StatusOr<std::vector<PromSample>> samples =
        (*prometheus)->Query("convserve_device_healthy{job=\"convserve\"}");
    ASSERT_TRUE(samples.ok()) << samples.status();
    healthy.clear();
    for (const PromSample& s : *samples) healthy[s.labels.at("device")] = s.value;
    if (healthy.size() < 2) absl::SleepFor(absl::Milliseconds(500));
  }
  ASSERT_EQ(healthy.size(), 2u) << "Prometheus log:\n" << (*prometheus)->Log();
  EXPECT_EQ(healthy[kCpu0], 1);
  EXPECT_EQ(healthy[kCpu1], 1);
  // What the dashboard's "Device health" panel asks.
  absl::StatusOr<std::vector<PromSample>> panel =
      (*prometheus)->Query("min by (device) (convserve_device_healthy)");
  ASSERT_TRUE(panel.ok()) << panel.status();
  ASSERT_EQ(panel->size(), 2u);
  for (const PromSample& s : *panel) EXPECT_EQ(s.value, 1) << s.labels.at("device");
  EXPECT_THAT((*server)->Log(), Not(HasSubstr("is unhealthy")));
}

// The value a broken device gets, and that a device that changes keeps one series.
TEST(DeviceHealthMetricTest, ABrokenDeviceIsExportedAsZero) {
  absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->SetDeviceHealthy("cuda:0 (NVIDIA H100, sm_90)", true);
  (*metrics)->SetDeviceHealthy("cuda:1 (NVIDIA H100, sm_90)", true);
  (*metrics)->SetDeviceHealthy("cuda:1 (NVIDIA H100, sm_90)", false);
  const std::string text = (*metrics)->Scrape();
  EXPECT_THAT(text, HasSubstr(HealthyLine("cuda:0 (NVIDIA H100, sm_90)", 1)));
  EXPECT_THAT(text, HasSubstr(HealthyLine("cuda:1 (NVIDIA H100, sm_90)", 0)));
  EXPECT_THAT(text, Not(HasSubstr(HealthyLine("cuda:1 (NVIDIA H100, sm_90)", 1))));
}

}  // namespace
}  // namespace convserve
