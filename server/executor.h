// An executor runs merged batches on one device. It owns that device's streams, staging buffers
// and the layers' resident weights; it has no queue: the batcher takes a launch slot, hands over
// one batch, and the executor answers every request of it and frees the slot.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kernels/conv_engine.h"
#include "kernels/conv_problem.h"
#include "server/batch.h"
#include "server/loaded_layer.h"

namespace convserve {

// Counts an executor's free launch slots (batches it can take at once). Thread-safe.
class LaunchSlots {
 public:
  explicit LaunchSlots(int slots) : free_(slots) {}
  // Takes a slot, waiting up to `timeout`; false when none freed in time.
  bool Acquire(absl::Duration timeout);
  void Release();

 private:
  absl::Mutex mu_;
  int free_ ABSL_GUARDED_BY(mu_);
};

class Executor {
 public:
  virtual ~Executor() = default;

  // Position in the server's executor list; a LoadedLayer's weights[index()] are this device's.
  virtual int index() const = 0;
  // "cpu (reference, 16 threads)" or "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)".
  virtual const std::string& device_name() const = 0;
  virtual bool is_gpu() const = 0;
  // False once the device failed in a way that later batches would fail too.
  virtual bool healthy() const = 0;

  // Converts host OIHW weights (and bias, empty when the layer has none) to this device's
  // resident form. Blocks. RESOURCE_EXHAUSTED when device memory runs out.
  virtual absl::StatusOr<std::shared_ptr<const DeviceWeights>> PrepareWeights(
      const ConvParams& params, const std::string& weights, const std::string& bias) = 0;

  // Takes a launch slot, waiting up to `timeout`. Every true must be followed by exactly one
  // Execute() or ReleaseSlot().
  virtual bool AcquireSlot(absl::Duration timeout) = 0;
  virtual void ReleaseSlot() = 0;
  // Runs `batch` on the slot taken before, asynchronously: answers every request of it
  // (result or error) and then frees the slot. Never blocks on the device.
  virtual void Execute(Batch batch) = 0;

  // Blocking auto-tune of one problem; FAILED_PRECONDITION where nothing is tuned (CPU).
  virtual absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) = 0;
  virtual std::vector<TuningResult> TunedFor(const ConvParams& params) const = 0;

  // Waits for the batches in flight; no Execute() may follow.
  virtual void Shutdown() = 0;
};

}  // namespace convserve
