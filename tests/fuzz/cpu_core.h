// A real serving core on the CPU reference backend for the harnesses that go through the
// server's load and request paths; limits are small so no input costs much time or memory.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "server/cpu_executor.h"
#include "server/serving_core_impl.h"

namespace convserve::fuzz {

inline ServerOptions SmallLimits() {
  ServerOptions options;
  options.max_input_bytes = int64_t{256} << 10;
  options.max_layer_bytes = int64_t{1} << 20;
  options.max_resident_bytes = int64_t{4} << 20;
  options.batching.max_queue_delay_us = 50;
  options.cpu_threads = 1;
  return options;
}

// Lives for the whole fuzzing process (libFuzzer never returns from its loop).
inline ServingCoreImpl& CpuCore() {
  static ServingCoreImpl* core = [] {
    std::vector<std::unique_ptr<Executor>> executors;
    executors.push_back(std::make_unique<CpuExecutor>(0, /*threads=*/1, /*metrics=*/nullptr));
    return new ServingCoreImpl(SmallLimits(), std::move(executors), /*metrics=*/nullptr);
  }();
  return *core;
}

}  // namespace convserve::fuzz
