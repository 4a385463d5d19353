// Helpers for the server tests: layer specs, random tensors, the CPU reference answer for a
// request, a real server on a free loopback port with a stub to call it, and calls on that stub.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "convserve/v1/conv2d.grpc.pb.h"
#include "convserve/v1/conv2d.pb.h"
#include "kernels/conv_problem.h"
#include "server/inference.h"
#include "server/server.h"
#include "server/server_options.h"

namespace convserve::testing {

// A 3x3, stride 1, pad 1 conv layer of `channels` in and out, with bias.
convserve::v1::LayerSpec SmallSpec(const std::string& name, int64_t channels = 8,
                                   convserve::v1::DataType dtype = convserve::v1::DATA_TYPE_FP32);

// `elements` random values in [-1, 1] stored as `dtype`, deterministic in `seed`.
std::string RandomTensor(int64_t elements, DataType dtype, uint64_t seed);

// A LoadLayer request for `spec` with random weights (and bias) from `seed`.
convserve::v1::LoadLayerRequest LoadRequestFor(const convserve::v1::LayerSpec& spec, uint64_t seed);

// The reference output for `input` ([n, C, h, w] in `in_layout`) through the layer `load`
// describes, in `out_layout`, rounded to the layer's dtype: the bytes the server must return.
std::string ReferenceOutput(const convserve::v1::LoadLayerRequest& load, const std::string& input,
                            int64_t n, int64_t h, int64_t w, Layout in_layout, Layout out_layout);

// A Forward request for `layer` with a random [n, C, h, w] input from `seed`.
convserve::v1::ForwardRequest ForwardFor(const std::string& layer,
                                         const convserve::v1::LayerSpec& spec, int64_t n, int64_t h,
                                         int64_t w, uint64_t seed,
                                         convserve::v1::Layout layout = convserve::v1::LAYOUT_NCHW);

// An in-process request for `layer` with the fp32 NCHW [n, channels, h, w] `input`: no
// deadline, no cancellation and no `done` yet.
InferenceRequest InferenceRequestFor(const std::string& layer, std::string input, int64_t n,
                                     int64_t channels, int64_t h, int64_t w);

// Options for a CPU server on 127.0.0.1:0 without metrics.
ServerOptions TestServerOptions();

// A started in-process server and a stub connected to it.
struct RunningServer {
  std::unique_ptr<ConvServer> server;
  std::unique_ptr<convserve::v1::Conv2d::Stub> stub;
  std::shared_ptr<grpc::Channel> channel;
};
RunningServer StartServer(const ServerOptions& options);

// LoadLayer on `s`'s stub, the reply into `response` where one is given.
grpc::Status Load(RunningServer& s, const convserve::v1::LoadLayerRequest& request,
                  convserve::v1::LoadLayerResponse* response = nullptr);

// Forward on `s`'s stub with a 120 s deadline.
grpc::Status Forward(RunningServer& s, const convserve::v1::ForwardRequest& request,
                     convserve::v1::ForwardResponse* response);

// One Forward call on the async stub: its context, reply and status, and `done` set once the
// reply has come.
struct AsyncCall {
  grpc::ClientContext context;
  convserve::v1::ForwardResponse response;
  grpc::Status status;
  std::promise<void> done;
};

// Starts `request` (which must outlive the call) on `s`'s async stub; wait on `done`.
std::unique_ptr<AsyncCall> StartForward(RunningServer& s,
                                        const convserve::v1::ForwardRequest& request);

// Runs the `requests` at once on `s`'s async stub and waits for all.
std::vector<std::unique_ptr<AsyncCall>> ForwardAll(
    RunningServer& s, const std::vector<convserve::v1::ForwardRequest>& requests);

// Polls until `layer` has `queued` requests waiting (they reached the batcher); fails the test
// after 60 s.
void WaitQueued(RunningServer& s, const std::string& layer, int64_t queued);

}  // namespace convserve::testing
