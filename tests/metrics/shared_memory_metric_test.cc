// convserve_shared_memory_regions and convserve_shared_memory_bytes: the real convserve-server
// with --allow_shared_memory (CPU backend: nothing is page-locked) follows registrations on its
// own /metrics page and through a real Prometheus scraping it.
#include <unistd.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/shared_memory.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/server_process.h"
#include "tests/metrics/http_get.h"
#include "tests/metrics/prometheus_process.h"

namespace convserve {
namespace {

using ::testing::HasSubstr;

std::string MetricsPage(const ServerProcess& server) {
  absl::StatusOr<HttpResponse> page = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_TRUE(page.ok()) << page.status();
  return page.ok() ? page->body : "";
}

// The samples of `query` by their `state` label (or "" without one), once Prometheus has
// `want` of them; fails the test after 90 s.
std::map<std::string, double> QueryUntil(PrometheusProcess& prometheus, const std::string& query,
                                         size_t want, double want_value_of_first = -1) {
  std::map<std::string, double> values;
  const absl::Time deadline = absl::Now() + absl::Seconds(90);
  while (absl::Now() < deadline) {
    absl::StatusOr<std::vector<PromSample>> samples = prometheus.Query(query);
    EXPECT_TRUE(samples.ok()) << samples.status();
    values.clear();
    for (const PromSample& s : samples.value_or(std::vector<PromSample>())) {
      values[s.labels.count("state") > 0 ? s.labels.at("state") : ""] = s.value;
    }
    if (values.size() == want &&
        (want_value_of_first < 0 || values.begin()->second == want_value_of_first)) {
      return values;
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
  ADD_FAILURE() << query << " never had " << want << " samples; Prometheus log:\n"
                << prometheus.Log();
  return values;
}

TEST(SharedMemoryMetricTest, RegistrationsAreCountedOnThePageAndInPrometheus) {
  if (access(CONVSERVE_PROMETHEUS, X_OK) != 0) {
    GTEST_SKIP() << CONVSERVE_PROMETHEUS << " missing (scripts/install-deps.sh installs it)";
  }
  ServerProcessOptions server_options;
  server_options.binary = CONVSERVE_SERVER;
  server_options.device = "cpu";
  server_options.args = {"--allow_shared_memory", "--cpu_threads=1"};
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();

  // From start-up, before any registration.
  std::string page = MetricsPage(**server);
  EXPECT_THAT(page, HasSubstr("# TYPE convserve_shared_memory_regions gauge\n"));
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_regions 0\n"));
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_bytes{state=\"registered\"} 0\n"));
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_bytes{state=\"page_locked\"} 0\n"));
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_bytes{state=\"gpu\"} 0\n"));

  const std::string key = absl::StrCat("/convserve-metric-test-", getpid());
  absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
      SharedMemoryBuffer::Create(key, 1 << 20);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  ClientOptions client_options;
  client_options.target = (*server)->address();
  Client client(client_options);
  ASSERT_TRUE(client.RegisterSharedMemory("a", key, 0, 4096).ok());
  ASSERT_TRUE(client.RegisterSharedMemory("b", key, 8192, 65536).ok());
  page = MetricsPage(**server);
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_regions 2\n"));
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_bytes{state=\"registered\"} 69632\n"));
  EXPECT_THAT(page, HasSubstr("convserve_shared_memory_bytes{state=\"page_locked\"} 0\n"));

  PrometheusOptions prometheus_options;
  prometheus_options.binary = CONVSERVE_PROMETHEUS;
  prometheus_options.targets = {"127.0.0.1:" + std::to_string((*server)->metrics_port())};
  absl::StatusOr<std::unique_ptr<PrometheusProcess>> prometheus =
      PrometheusProcess::Start(prometheus_options);
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  std::map<std::string, double> bytes =
      QueryUntil(**prometheus, "convserve_shared_memory_bytes{job=\"convserve\"}", 3);
  EXPECT_EQ(bytes["registered"], 69632);
  EXPECT_EQ(bytes["page_locked"], 0);
  EXPECT_EQ(bytes["gpu"], 0);
  EXPECT_EQ(QueryUntil(**prometheus, "convserve_shared_memory_regions{job=\"convserve\"}", 1)[""],
            2);

  // Unregistering shows on the next scrape.
  ASSERT_TRUE(client.UnregisterSharedMemory("b").ok());
  EXPECT_THAT(MetricsPage(**server),
              HasSubstr("convserve_shared_memory_bytes{state=\"registered\"} 4096\n"));
  EXPECT_EQ(
      QueryUntil(**prometheus, "convserve_shared_memory_regions{job=\"convserve\"}", 1, 1)[""], 1);
  ASSERT_TRUE(client.UnregisterSharedMemory("").ok());
  EXPECT_THAT(MetricsPage(**server), HasSubstr("convserve_shared_memory_regions 0\n"));
}

}  // namespace
}  // namespace convserve
