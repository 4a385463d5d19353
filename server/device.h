// Chooses the executors for --device: "cpu" (the reference backend), "cuda:N" (that GPU; fails
// when it cannot be used) or "auto" (GPU 0 when the CUDA engine starts, else the CPU reference
// backend, saying so in the log).
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "server/executor.h"
#include "server/metrics/metrics.h"
#include "server/server_options.h"

namespace convserve {

// INVALID_ARGUMENT for a malformed --device; FAILED_PRECONDITION when the asked-for GPU cannot
// be used. `metrics` may be null and must outlive the executors.
absl::StatusOr<std::vector<std::unique_ptr<Executor>>> CreateExecutors(const ServerOptions& options,
                                                                       Metrics* metrics);

}  // namespace convserve
