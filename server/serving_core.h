// The serving core both front-ends (native Conv2d, KServe v2) call: layer management and
// request submission. It owns the layer store, the per-layer batchers and the per-device
// executors; front-ends only translate protos to and from these calls. No gRPC types here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"
#include "server/inference.h"

namespace convserve {

// What the front-ends may know about a loaded layer.
struct LayerSnapshot {
  std::string name;
  ConvParams params;
  convserve::v1::LayerInfo info;  // spec (without weights), bytes, device, ready, tuned
  int64_t queued_requests = 0;    // waiting in the layer's batcher queues right now
};

class ServingCore {
 public:
  virtual ~ServingCore() = default;

  // Validates `request` against its layer and queues it for batching. `request.done` fires
  // exactly once, also when the request is rejected here (NOT_FOUND, INVALID_ARGUMENT naming
  // the field, RESOURCE_EXHAUSTED, UNAVAILABLE while shutting down). Never blocks on the device.
  virtual void Submit(InferenceRequest request) = 0;

  // Loads or atomically replaces a layer; requests in flight finish on the old weights.
  virtual absl::StatusOr<convserve::v1::LayerInfo> LoadLayer(
      const convserve::v1::LoadLayerRequest& request) = 0;
  virtual absl::Status UnloadLayer(const std::string& name) = 0;
  virtual std::vector<LayerSnapshot> ListLayers() const = 0;
  virtual std::optional<LayerSnapshot> FindLayer(const std::string& name) const = 0;
  // Blocking auto-tune of a layer (the Tune RPC). FAILED_PRECONDITION on the CPU backend.
  virtual absl::StatusOr<convserve::v1::TuneResponse> Tune(
      const convserve::v1::TuneRequest& request) = 0;

  // False once shutdown began or the device is broken.
  virtual bool ready() const = 0;
};

}  // namespace convserve
