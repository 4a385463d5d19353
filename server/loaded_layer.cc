#include "server/loaded_layer.h"

#include "absl/strings/str_cat.h"

namespace convserve {

absl::Status ResidentBudget::Reserve(int64_t bytes, const std::string& layer) {
  absl::MutexLock lock(&mu_);
  if (bytes > limit_ - used_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("layer '", layer, "' needs ", bytes, " resident weight bytes but only ",
                     limit_ - used_, " of --max_resident_bytes=", limit_, " are free"));
  }
  used_ += bytes;
  return absl::OkStatus();
}

void ResidentBudget::Release(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_ -= bytes;
}

int64_t ResidentBudget::used() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

}  // namespace convserve
