// One loaded generation of a layer: its spec, parameters, batching knobs and the weights each
// executor keeps resident. Immutable once built and shared by pointer: a request in flight holds
// the generation it was validated against, so replacing a layer never changes weights under it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"
#include "server/batch_policy.h"

namespace convserve {

// A layer's weights as one executor keeps them (device-packed on a GPU, host bytes on the CPU).
class DeviceWeights {
 public:
  virtual ~DeviceWeights() = default;
  virtual int64_t resident_bytes() const = 0;
};

// Resident weight bytes across all layers, against --max_resident_bytes. Thread-safe.
class ResidentBudget {
 public:
  explicit ResidentBudget(int64_t limit) : limit_(limit) {}
  // RESOURCE_EXHAUSTED naming `layer` and the numbers when `bytes` more would pass the limit.
  absl::Status Reserve(int64_t bytes, const std::string& layer);
  void Release(int64_t bytes);
  int64_t used() const;
  int64_t limit() const { return limit_; }

 private:
  const int64_t limit_;
  mutable absl::Mutex mu_;
  int64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

// Bytes reserved in a ResidentBudget for as long as this object lives.
class BudgetReservation {
 public:
  BudgetReservation(std::shared_ptr<ResidentBudget> budget, int64_t bytes)
      : budget_(std::move(budget)), bytes_(bytes) {}
  ~BudgetReservation() {
    if (budget_) budget_->Release(bytes_);
  }
  BudgetReservation(const BudgetReservation&) = delete;
  BudgetReservation& operator=(const BudgetReservation&) = delete;

 private:
  std::shared_ptr<ResidentBudget> budget_;
  int64_t bytes_;
};

struct LoadedLayer {
  std::string name;
  convserve::v1::LayerSpec spec;  // as loaded (the weights travel separately)
  ConvParams params;
  BatchingConfig batching;
  uint64_t generation = 0;
  // One entry per executor, indexed by Executor::index(); null for one that was broken when the
  // layer loaded (it gets no batches while another executor is healthy).
  std::vector<std::shared_ptr<const DeviceWeights>> weights;
  int64_t resident_bytes = 0;  // summed over executors
  // Released when the last request holding this generation is done.
  std::unique_ptr<BudgetReservation> reservation;
};

}  // namespace convserve
