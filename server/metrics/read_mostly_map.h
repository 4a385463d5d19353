// A string-keyed map for per-label metric handles: looked up on every request, written only
// when a new label value first appears. Readers take no lock and write no shared memory; they
// load an immutable snapshot. Writers copy the snapshot under a mutex and publish the copy.
// Values live as long as the map and never move, so a reference returned once stays valid.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace convserve::metrics_internal {

// (Debian's Abseil has its own string_view type, hence the conversions at find().)
template <typename Value>
class ReadMostlyMap {
 public:
  ReadMostlyMap() {
    snapshots_.push_back(std::make_unique<Snapshot>());
    current_ = snapshots_.back().get();
  }
  ReadMostlyMap(const ReadMostlyMap&) = delete;
  ReadMostlyMap& operator=(const ReadMostlyMap&) = delete;

  // The value for `key`, or null. Lock-free.
  Value* Find(std::string_view key) const {
    const Snapshot* snapshot = current_.load(std::memory_order_acquire);
    auto it = snapshot->find(absl::string_view(key.data(), key.size()));
    return it == snapshot->end() ? nullptr : it->second;
  }

  // The value for `key`, created by `make()` (which returns std::unique_ptr<Value>) the first
  // time. Lock-free when the key exists; otherwise takes the writers' mutex.
  template <typename Make>
  Value& FindOrCreate(std::string_view key, Make&& make) {
    if (Value* value = Find(key)) return *value;
    std::lock_guard<std::mutex> lock(mutex_);
    const Snapshot* snapshot = current_.load(std::memory_order_relaxed);
    if (auto it = snapshot->find(absl::string_view(key.data(), key.size())); it != snapshot->end())
      return *it->second;
    values_.push_back(make());
    auto next = std::make_unique<Snapshot>(*snapshot);
    next->emplace(std::string(key), values_.back().get());
    // Older snapshots stay alive because lock-free readers may still hold them; keys are
    // bounded label values, so the copies stay small.
    snapshots_.push_back(std::move(next));
    current_.store(snapshots_.back().get(), std::memory_order_release);
    return *values_.back();
  }

  size_t size() const { return current_.load(std::memory_order_acquire)->size(); }

  // Calls fn(key, value) for every entry, in no particular order.
  void ForEach(const std::function<void(const std::string&, const Value&)>& fn) const {
    const Snapshot* snapshot = current_.load(std::memory_order_acquire);
    for (const auto& [key, value] : *snapshot) fn(key, *value);
  }

 private:
  using Snapshot = absl::flat_hash_map<std::string, Value*>;

  std::atomic<const Snapshot*> current_;
  std::mutex mutex_;  // serialises writers
  std::vector<std::unique_ptr<const Snapshot>> snapshots_;
  std::vector<std::unique_ptr<Value>> values_;
};

}  // namespace convserve::metrics_internal
