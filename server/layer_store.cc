#include "server/layer_store.h"

#include <algorithm>

namespace convserve {

std::shared_ptr<LayerEntry> LayerStore::Find(const std::string& name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second;
}

std::shared_ptr<LayerEntry> LayerStore::Put(std::shared_ptr<LayerEntry> entry) {
  const std::string name = entry->layer->name;
  absl::MutexLock lock(&mu_);
  std::shared_ptr<LayerEntry>& slot = entries_[name];
  std::shared_ptr<LayerEntry> old = std::move(slot);
  slot = std::move(entry);
  return old;
}

std::shared_ptr<LayerEntry> LayerStore::Remove(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return nullptr;
  std::shared_ptr<LayerEntry> old = std::move(it->second);
  entries_.erase(it);
  return old;
}

std::vector<std::shared_ptr<LayerEntry>> LayerStore::All() const {
  std::vector<std::shared_ptr<LayerEntry>> all;
  {
    absl::ReaderMutexLock lock(&mu_);
    all.reserve(entries_.size());
    for (const auto& [name, entry] : entries_) all.push_back(entry);
  }
  std::sort(all.begin(), all.end(),
            [](const auto& a, const auto& b) { return a->layer->name < b->layer->name; });
  return all;
}

}  // namespace convserve
