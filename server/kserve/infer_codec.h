// Translation between KServe v2 (Open Inference Protocol) messages and the serving core's
// InferenceRequest / InferenceResult, plus the fixed model signature every conv layer has on
// this API. Pure functions with no gRPC calls, so the protocol rules are tested without a server.
//
// The signature: one input "input" and one output "output", datatype FP32, FP16 or BF16 as the
// layer's. A tensor's shape is its row-major shape: [N, C, H, W] by default, [N, H, W, C] when
// its "layout" string parameter is "NHWC". The input's layout comes from the input's
// parameters, else the request's; the output's from the requested output's parameters, else
// the request's, else the input's. The int64 request parameter "timeout" (microseconds, as
// Triton's) bounds the time to launch, with the gRPC deadline.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "kernels/conv_problem.h"
#include "kserve/grpc_predict_v2.pb.h"
#include "server/inference.h"
#include "server/serving_core.h"
#include "server/shared_memory.h"

namespace convserve::kserve {

inline constexpr char kInputName[] = "input";
inline constexpr char kOutputName[] = "output";
// Layers are replaced atomically in place, so each model has exactly one version.
inline constexpr char kModelVersion[] = "1";
inline constexpr char kPlatform[] = "convserve_conv2d";

using ParameterMap = google::protobuf::Map<std::string, inference::InferParameter>;

// "FP32", "FP16", "BF16".
const char* DatatypeName(DataType dtype);
// INVALID_ARGUMENT naming `field` for any other datatype string.
absl::StatusOr<DataType> ParseDatatype(absl::string_view datatype, absl::string_view field);

// OK for an empty version or kModelVersion; NOT_FOUND naming the model otherwise.
absl::Status CheckModelVersion(absl::string_view model, absl::string_view version);

// Fills `out` (layer, shape, dtype, layouts, input, output sink, deadline, api) from `request`,
// moving the tensor bytes out of it. `grpc_deadline` is the call's deadline (InfiniteFuture
// when none). Tensors named by shared-memory parameters are read from (the input) or go to (the
// output) `shared_memory`'s regions; with no registry such a request is FAILED_PRECONDITION.
// Leaves `out.is_cancelled` and `out.done` to the caller. INVALID_ARGUMENT naming the
// offending field (e.g. "inputs[0].shape"); NOT_FOUND for an unknown model version or region.
absl::Status DecodeInferRequest(inference::ModelInferRequest& request, absl::Time grpc_deadline,
                                InferenceRequest& out,
                                const SharedMemoryRegistry* shared_memory = nullptr);
// The same, with raw_input_contents already taken out of `request` (server/kserve/infer_wire.h
// borrows them from the received message).
absl::Status DecodeInferRequest(const inference::ModelInferRequest& request,
                                std::vector<TensorBytes> raw_input_contents,
                                absl::Time grpc_deadline, InferenceRequest& out,
                                const SharedMemoryRegistry* shared_memory = nullptr);

// The shared-memory parameters of the output `request` asks for, which its response's output
// carries back; empty when the output travels in raw_output_contents.
ParameterMap OutputSharedMemoryParameters(const inference::ModelInferRequest& request);

// The serving core names fields in the native API's terms ("input.shape[1] (C) ..."); this
// renames the leading field of such a message to this API's ("inputs[0].shape[3] (C) ..." for
// an NHWC input), so a KServe client sees its own field names. Other statuses pass unchanged.
absl::Status InKserveTerms(const absl::Status& status, Layout input_layout);

// Writes `result` as the answer to the request for `model` with `id`: one output tensor in
// raw_output_contents, with the server's timing in the response parameters; or, with
// `output_shared_memory` (OutputSharedMemoryParameters) not empty, the output tensor carrying
// those parameters and no raw_output_contents.
void EncodeInferResponse(const std::string& model, const std::string& id, InferenceResult result,
                         inference::ModelInferResponse& response,
                         const ParameterMap& output_shared_memory = ParameterMap());
// The same without raw_output_contents: returns the output tensor's bytes instead (empty for
// an output in shared memory), for SerializeModelInferResponse (server/kserve/infer_wire.h) to
// send uncopied.
std::string EncodeInferResponseFields(const std::string& model, const std::string& id,
                                      InferenceResult result,
                                      inference::ModelInferResponse& response,
                                      const ParameterMap& output_shared_memory = ParameterMap());

// A failed request's answer on a ModelStreamInfer stream.
void EncodeStreamError(const absl::Status& status, const std::string& model, const std::string& id,
                       inference::ModelStreamInferResponse& response);

// The ModelMetadata answer for a loaded layer: batch and spatial dimensions are -1.
void EncodeModelMetadata(const LayerSnapshot& layer, inference::ModelMetadataResponse& response);

}  // namespace convserve::kserve
