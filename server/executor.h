// An executor runs merged batches on one device. It owns that device's streams, staging buffers
// and the layers' resident weights; it has no queue: the batcher takes a launch slot, hands over
// one batch, and the executor answers every request of it and frees the slot.
#pragma once

#include <cstdint>
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
#include "server/shared_memory.h"

namespace convserve {

// Tells a batcher that a launch slot of some executor of the server was freed, so that it can
// wait for whichever of several executors frees one first. Thread-safe.
class SlotSignal {
 public:
  // Changes on every Notify(); read it before looking for a free slot, then wait for a change.
  uint64_t generation() const;
  void Notify();
  // Waits until generation() differs from `seen`; false when `deadline` came first.
  bool WaitForChange(uint64_t seen, absl::Time deadline) const;

 private:
  mutable absl::Mutex mu_;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

// Counts an executor's free launch slots (batches it can take at once). Thread-safe.
class LaunchSlots {
 public:
  explicit LaunchSlots(int slots) : free_(slots) {}
  // Takes a slot, waiting up to `timeout`; false when none freed in time.
  bool Acquire(absl::Duration timeout);
  // Frees a slot and notifies the signal, when one is set.
  void Release();
  int free() const;
  // `signal` (may be null) must outlive every later Release().
  void set_signal(SlotSignal* signal);

 private:
  mutable absl::Mutex mu_;
  int free_ ABSL_GUARDED_BY(mu_);
  SlotSignal* signal_ ABSL_GUARDED_BY(mu_) = nullptr;
};

class Executor {
 public:
  virtual ~Executor() = default;

  // Position in the server's executor list; a LoadedLayer's weights[index()] are this device's.
  virtual int index() const = 0;
  // "cpu (reference, 16 threads)" or "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)".
  virtual const std::string& device_name() const = 0;
  virtual bool is_gpu() const = 0;
  // False once the device failed in a way that later batches would fail too. The batchers then
  // send it no batches while another executor is healthy.
  virtual bool healthy() const = 0;

  // Converts host OIHW weights (and bias, empty when the layer has none) to this device's
  // resident form. Blocks. RESOURCE_EXHAUSTED when device memory runs out.
  virtual absl::StatusOr<std::shared_ptr<const DeviceWeights>> PrepareWeights(
      const ConvParams& params, const std::string& weights, const std::string& bias) = 0;

  // Takes a launch slot, waiting up to `timeout`. Every true must be followed by exactly one
  // Execute() or ReleaseSlot().
  virtual bool AcquireSlot(absl::Duration timeout) = 0;
  virtual void ReleaseSlot() = 0;
  // Launch slots free now (a snapshot: another batcher may take one right after). The batcher
  // sends a batch to the healthy executor with the most.
  virtual int free_slots() const = 0;
  // Notified whenever a slot is freed; set by the serving core before the first batch.
  virtual void set_slot_signal(SlotSignal* signal) = 0;
  // Runs `batch` on the slot taken before, asynchronously: answers every request of it
  // (result or error) and frees the slot, possibly before the last answers of a large batch
  // are delivered (they go out from helper threads; Shutdown() waits for them). Never blocks on
  // the device.
  virtual void Execute(Batch batch) = 0;

  // Blocking auto-tune of one problem; FAILED_PRECONDITION where nothing is tuned (CPU).
  virtual absl::StatusOr<TuningResult> Tune(const ConvProblem& problem) = 0;
  virtual std::vector<TuningResult> TunedFor(const ConvParams& params) const = 0;

  // Page-locks host memory for this device's copies (and every other GPU's), so a batch can
  // copy a tensor in a client's shared memory straight to the device; null where the device
  // does not copy (the CPU backend).
  virtual std::shared_ptr<HostMemoryPinner> MakeHostMemoryPinner() const { return nullptr; }
  // Opens GPU memory other processes share through CUDA IPC, on whichever GPU holds it; null
  // where the device does not copy (the CPU backend).
  virtual std::shared_ptr<CudaIpcImporter> MakeCudaIpcImporter() const { return nullptr; }

  // Waits for the batches in flight; no Execute() may follow.
  virtual void Shutdown() = 0;
};

}  // namespace convserve
