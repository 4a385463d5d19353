// The request that both front-ends (native Conv2d and KServe v2) hand to the serving core, and
// the result that comes back. Front-ends translate their protos to and from these; the core
// validates, batches and executes. No gRPC types here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kernels/conv_problem.h"
#include "server/tensor_bytes.h"

namespace convserve {

// Which wire API a request came in on; a metrics label.
enum class Api : uint8_t { kNative, kKserve };
inline const char* ApiName(Api api) { return api == Api::kNative ? "native" : "kserve"; }

// Where a request's output goes instead of InferenceResult::output (a client's shared memory).
// Written once: by the thread that splits the batch's results, or by the device's copy engine
// into copy_engine_destination().
class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual int64_t capacity() const = 0;  // bytes it can take
  virtual absl::Status Write(const char* data, int64_t bytes) = 0;
  virtual std::string Describe() const = 0;  // names it in messages
  // Page-locked host or GPU memory a device copy may fill directly (the server must not store
  // to it itself: see TensorBytes::ForCopyEngine); null when the output must go through Write().
  virtual char* copy_engine_destination() { return nullptr; }
  // The GPU whose memory copy_engine_destination() is in, or kHostMemory.
  virtual int copy_engine_device() const { return kHostMemory; }
};

struct InferenceResult {
  std::string output;               // raw elements in output_layout order; empty with a sink
  int64_t shape[4] = {0, 0, 0, 0};  // [N, K, P, Q]
  DataType dtype = DataType::kFloat32;
  Layout layout = Layout::kNchw;
  int64_t queue_us = 0;    // accepted -> its batch launched
  int64_t compute_us = 0;  // copies + kernel of that batch
  int64_t total_us = 0;    // accepted -> result ready
  int batch_size = 0;      // N of the merged launch
  std::string kernel_config;
  std::string device;
};

// Called exactly once per submitted request, with the result or the status that ended it
// (rejection, validation, expiry, cancellation, device error). May run on any thread; must
// not block.
using InferenceDone = absl::AnyInvocable<void(absl::StatusOr<InferenceResult>) &&>;

struct InferenceRequest {
  std::string layer;
  // [N, C, H, W] as sent by the client, before validation.
  int64_t shape[4] = {0, 0, 0, 0};
  DataType dtype = DataType::kFloat32;
  Layout input_layout = Layout::kNchw;
  Layout output_layout = Layout::kNchw;
  // Raw little-endian elements in input_layout order, never copied before the executor stages
  // them (Forward and ModelInfer borrow gRPC's receive buffers; ModelStreamInfer moves its
  // message's string).
  TensorBytes input;
  // How the front-end's API names where `input` came from, for messages about its size.
  const char* input_field = "input.data";
  // Set: the output is written here and InferenceResult::output stays empty.
  std::shared_ptr<OutputSink> output_sink;
  // Set by an executor that copied the output into output_sink's page-locked destination
  // itself: the split then has nothing to write.
  bool output_delivered = false;
  // The earlier of the gRPC deadline and the request's own timeout; InfiniteFuture when none.
  absl::Time deadline = absl::InfiniteFuture();
  // True once the client has gone away; polled before launch. May be empty.
  std::function<bool()> is_cancelled;
  Api api = Api::kNative;
  absl::Time accepted_at = absl::Now();
  InferenceDone done;
};

}  // namespace convserve
