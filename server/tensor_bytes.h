// A request tensor's raw bytes as the serving core sees them: a sequence of pieces, owned or
// borrowed from the transport's receive buffers. Borrowing lets the native front-end hand gRPC's
// slices straight to the executor, whose staging copy is then the first copy of those bytes
// (docs/operations.md, "Copies of a tensor"). No gRPC types here: what keeps borrowed pieces
// alive is type-erased.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace convserve {

// copy_engine_device() of memory in the host's RAM rather than a GPU's.
inline constexpr int kHostMemory = -1;

class TensorBytes {
 public:
  TensorBytes() = default;
  // Takes `bytes` over (moved, not copied).
  explicit TensorBytes(std::string bytes) {
    if (bytes.empty()) return;
    auto owned = std::make_shared<const std::string>(std::move(bytes));
    pieces_.push_back(*owned);
    size_ = owned->size();
    keep_alive_ = std::move(owned);
  }
  // Borrows `pieces`, in order, which stay valid while `keep_alive` lives.
  TensorBytes(std::vector<absl::string_view> pieces, std::shared_ptr<const void> keep_alive)
      : pieces_(std::move(pieces)), keep_alive_(std::move(keep_alive)) {
    for (absl::string_view piece : pieces_) size_ += piece.size();
  }

  // `size` bytes at `data` that only a device's copy engine may read: a client's shared memory
  // in page-locked host memory (which faults a CPU load once the client shrinks it) or in GPU
  // memory (shared_memory.h), on GPU `device` or kHostMemory. The executor copies it straight
  // to the device; CopyTo, ToString and pieces() are not for it.
  static TensorBytes ForCopyEngine(const char* data, size_t size,
                                   std::shared_ptr<const void> keep_alive, int device) {
    TensorBytes bytes({absl::string_view(data, size)}, std::move(keep_alive));
    bytes.for_copy_engine_ = true;
    bytes.copy_engine_device_ = device;
    return bytes;
  }

  size_t size() const { return size_; }
  bool for_copy_engine() const { return for_copy_engine_; }
  // The bytes' address for the copy engine (for_copy_engine() only).
  const char* copy_engine_data() const { return pieces_.front().data(); }
  // The GPU whose memory copy_engine_data() is in, or kHostMemory.
  int copy_engine_device() const { return copy_engine_device_; }
  bool empty() const { return size_ == 0; }
  const std::vector<absl::string_view>& pieces() const { return pieces_; }

  // Copies every piece, in order, to `dst` (size() bytes) with `copy(dst, src, bytes)`; returns
  // the end of what was written.
  template <typename CopyFn>
  char* CopyTo(char* dst, CopyFn&& copy) const {
    for (absl::string_view piece : pieces_) {
      copy(dst, piece.data(), piece.size());
      dst += piece.size();
    }
    return dst;
  }

  std::string ToString() const {
    std::string out;
    out.reserve(size_);
    for (absl::string_view piece : pieces_) out.append(piece.data(), piece.size());
    return out;
  }

 private:
  std::vector<absl::string_view> pieces_;
  size_t size_ = 0;
  std::shared_ptr<const void> keep_alive_;
  bool for_copy_engine_ = false;
  int copy_engine_device_ = kHostMemory;
};

}  // namespace convserve
