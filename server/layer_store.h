// The loaded layers by name. Each entry pairs one layer generation with its batcher; loading a
// layer under an existing name swaps the entry atomically, and the replaced entry drains (its
// queued requests finish on the old weights) before it is dropped. Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "server/batcher.h"
#include "server/loaded_layer.h"

namespace convserve {

struct LayerEntry {
  // Declared before `batcher` so the batcher (which holds its own reference) drains first.
  std::shared_ptr<const LoadedLayer> layer;
  std::unique_ptr<Batcher> batcher;
  std::atomic<bool> ready{false};        // warm-up finished
  std::atomic<bool> warmup_done{false};  // the warm-up thread (if any) has nothing left to do
  std::thread warmup;

  ~LayerEntry() {
    if (!warmup.joinable()) return;
    // The warm-up thread may hold the last reference itself.
    if (warmup.get_id() == std::this_thread::get_id()) {
      warmup.detach();
    } else {
      warmup.join();
    }
  }
};

class LayerStore {
 public:
  std::shared_ptr<LayerEntry> Find(const std::string& name) const;
  // Inserts `entry` under its layer's name and returns the entry it replaced, if any.
  std::shared_ptr<LayerEntry> Put(std::shared_ptr<LayerEntry> entry);
  // Removes and returns the entry, or null when there is none.
  std::shared_ptr<LayerEntry> Remove(const std::string& name);
  std::vector<std::shared_ptr<LayerEntry>> All() const;  // sorted by name

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<LayerEntry>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace convserve
