// KServe v2 <-> serving-core translation; the rules are stated in infer_codec.h.
#include "server/kserve/infer_codec.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace convserve::kserve {
namespace {

// Tensor bytes travel little-endian on the wire; fp32_contents are copied as host floats.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "convserve assumes a little-endian host");

constexpr char kLayoutParameter[] = "layout";
constexpr char kTimeoutParameter[] = "timeout";
// Triton's system shared-memory extension.
constexpr char kRegionParameter[] = "shared_memory_region";
constexpr char kOffsetParameter[] = "shared_memory_offset";
constexpr char kByteSizeParameter[] = "shared_memory_byte_size";

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

// The "layout" parameter of `parameters` (named `scope` in errors), if present.
absl::StatusOr<std::optional<Layout>> FindLayout(const ParameterMap& parameters,
                                                 absl::string_view scope) {
  const auto it = parameters.find(kLayoutParameter);
  if (it == parameters.end()) return std::optional<Layout>();
  const std::string field = absl::StrCat(scope, "parameters.", kLayoutParameter);
  if (it->second.parameter_choice_case() != inference::InferParameter::kStringParam) {
    return Invalid(field, "must be a string_param, \"NCHW\" or \"NHWC\"");
  }
  const std::string value = absl::AsciiStrToUpper(it->second.string_param());
  if (value == "NCHW") return std::optional<Layout>(Layout::kNchw);
  if (value == "NHWC") return std::optional<Layout>(Layout::kNhwc);
  return Invalid(field, absl::StrCat("expected \"NCHW\" or \"NHWC\", got \"",
                                     it->second.string_param(), "\""));
}

// The request's "timeout" parameter in microseconds; 0 (or absent) means none.
absl::StatusOr<absl::Duration> FindTimeout(const ParameterMap& parameters) {
  const auto it = parameters.find(kTimeoutParameter);
  if (it == parameters.end()) return absl::InfiniteDuration();
  const std::string field = absl::StrCat("parameters.", kTimeoutParameter);
  int64_t micros = 0;
  switch (it->second.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      micros = it->second.int64_param();
      break;
    case inference::InferParameter::kUint64Param:
      if (it->second.uint64_param() > static_cast<uint64_t>(INT64_MAX)) {
        return Invalid(field, "too large");
      }
      micros = static_cast<int64_t>(it->second.uint64_param());
      break;
    default:
      return Invalid(field, "must be an integer number of microseconds");
  }
  if (micros < 0) return Invalid(field, absl::StrCat("must be >= 0, got ", micros));
  return micros == 0 ? absl::InfiniteDuration() : absl::Microseconds(micros);
}

// An integer parameter: int64, or uint64 up to INT64_MAX (Triton's clients send int64).
absl::StatusOr<int64_t> IntegerParameter(const inference::InferParameter& parameter,
                                         const std::string& field) {
  switch (parameter.parameter_choice_case()) {
    case inference::InferParameter::kInt64Param:
      return parameter.int64_param();
    case inference::InferParameter::kUint64Param:
      if (parameter.uint64_param() > static_cast<uint64_t>(INT64_MAX)) {
        return Invalid(field, absl::StrCat(parameter.uint64_param(), " is too large"));
      }
      return static_cast<int64_t>(parameter.uint64_param());
    default:
      return Invalid(field, "must be an int64 parameter");
  }
}

// The shared-memory range a tensor's `parameters` name (`scope`: "inputs[0].", "outputs[1]."),
// or nothing when they name none.
absl::StatusOr<std::optional<SharedMemorySlice>> FindSharedMemory(
    const ParameterMap& parameters, absl::string_view scope, const SharedMemoryRegistry* registry) {
  const auto region = parameters.find(kRegionParameter);
  const auto byte_size = parameters.find(kByteSizeParameter);
  const auto offset = parameters.find(kOffsetParameter);
  const std::string prefix = absl::StrCat(scope, "parameters.");
  if (region == parameters.end()) {
    if (byte_size == parameters.end() && offset == parameters.end()) {
      return std::optional<SharedMemorySlice>();
    }
    return Invalid(absl::StrCat(prefix, kRegionParameter),
                   absl::StrCat("required with ", kByteSizeParameter, " or ", kOffsetParameter));
  }
  if (region->second.parameter_choice_case() != inference::InferParameter::kStringParam) {
    return Invalid(absl::StrCat(prefix, kRegionParameter), "must be a string parameter");
  }
  if (byte_size == parameters.end()) {
    return Invalid(absl::StrCat(prefix, kByteSizeParameter),
                   absl::StrCat("required with ", kRegionParameter));
  }
  absl::StatusOr<int64_t> size =
      IntegerParameter(byte_size->second, absl::StrCat(prefix, kByteSizeParameter));
  if (!size.ok()) return size.status();
  int64_t start = 0;
  if (offset != parameters.end()) {
    absl::StatusOr<int64_t> parsed =
        IntegerParameter(offset->second, absl::StrCat(prefix, kOffsetParameter));
    if (!parsed.ok()) return parsed.status();
    start = *parsed;
  }
  if (registry == nullptr) {
    return SharedMemoryOff(absl::StrCat(prefix, kRegionParameter, " is set but shared memory"));
  }
  absl::StatusOr<SharedMemorySlice> slice = registry->Resolve(
      region->second.string_param(), start, *size, absl::StrCat(prefix, kRegionParameter),
      absl::StrCat(prefix, kOffsetParameter, " and ", kByteSizeParameter));
  if (!slice.ok()) return slice.status();
  return std::optional<SharedMemorySlice>(*std::move(slice));
}

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

bool HasNonFp32Contents(const inference::InferTensorContents& contents) {
  return contents.bool_contents_size() > 0 || contents.int_contents_size() > 0 ||
         contents.int64_contents_size() > 0 || contents.uint_contents_size() > 0 ||
         contents.uint64_contents_size() > 0 || contents.fp64_contents_size() > 0 ||
         contents.bytes_contents_size() > 0;
}

}  // namespace

const char* DatatypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kFloat32:
      return "FP32";
    case DataType::kFloat16:
      return "FP16";
    case DataType::kBFloat16:
      return "BF16";
  }
  return "FP32";
}

absl::StatusOr<DataType> ParseDatatype(absl::string_view datatype, absl::string_view field) {
  if (datatype == "FP32") return DataType::kFloat32;
  if (datatype == "FP16") return DataType::kFloat16;
  if (datatype == "BF16") return DataType::kBFloat16;
  return Invalid(field,
                 absl::StrCat("datatype \"", datatype, "\" is not served; use FP32, FP16 or BF16"));
}

absl::Status CheckModelVersion(absl::string_view model, absl::string_view version) {
  if (version.empty() || version == kModelVersion) return absl::OkStatus();
  return absl::NotFoundError(absl::StrCat("model '", model, "' has no version '", version,
                                          "'; its only version is '", kModelVersion, "'"));
}

absl::Status DecodeInferRequest(inference::ModelInferRequest& request, absl::Time grpc_deadline,
                                InferenceRequest& out, const SharedMemoryRegistry* shared_memory) {
  // Borrowed while checking; on success the one entry moves into `out` (a failed request keeps
  // its bytes).
  std::vector<TensorBytes> raw_input_contents;
  for (const std::string& raw : request.raw_input_contents()) {
    raw_input_contents.emplace_back(std::vector<absl::string_view>{raw}, nullptr);
  }
  absl::Status status =
      DecodeInferRequest(request, std::move(raw_input_contents), grpc_deadline, out, shared_memory);
  if (status.ok() && request.raw_input_contents_size() == 1) {
    out.input = TensorBytes(std::move(*request.mutable_raw_input_contents(0)));
  }
  return status;
}

absl::Status DecodeInferRequest(const inference::ModelInferRequest& request,
                                std::vector<TensorBytes> raw_input_contents,
                                absl::Time grpc_deadline, InferenceRequest& out,
                                const SharedMemoryRegistry* shared_memory) {
  if (request.model_name().empty()) return Invalid("model_name", "required");
  if (absl::Status status = CheckModelVersion(request.model_name(), request.model_version());
      !status.ok()) {
    return status;
  }
  if (request.inputs_size() != 1) {
    return Invalid("inputs", absl::StrCat("expected exactly one tensor named '", kInputName,
                                          "', got ", request.inputs_size()));
  }
  const inference::ModelInferRequest::InferInputTensor& input = request.inputs(0);
  if (input.name() != kInputName) {
    return Invalid("inputs[0].name",
                   absl::StrCat("model '", request.model_name(), "' has no input '", input.name(),
                                "'; its input is '", kInputName, "'"));
  }
  absl::StatusOr<DataType> dtype = ParseDatatype(input.datatype(), "inputs[0].datatype");
  if (!dtype.ok()) return dtype.status();

  // Layouts: the most specific parameter wins.
  absl::StatusOr<std::optional<Layout>> request_layout = FindLayout(request.parameters(), "");
  if (!request_layout.ok()) return request_layout.status();
  absl::StatusOr<std::optional<Layout>> input_layout = FindLayout(input.parameters(), "inputs[0].");
  if (!input_layout.ok()) return input_layout.status();
  const Layout in_layout = input_layout->value_or(request_layout->value_or(Layout::kNchw));
  Layout out_layout = request_layout->value_or(in_layout);
  for (int i = 0; i < request.outputs_size(); ++i) {
    const auto& output = request.outputs(i);
    const std::string scope = absl::StrCat("outputs[", i, "].");
    if (output.name() != kOutputName) {
      return Invalid(absl::StrCat(scope, "name"),
                     absl::StrCat("model '", request.model_name(), "' has no output '",
                                  output.name(), "'; its output is '", kOutputName, "'"));
    }
    absl::StatusOr<std::optional<Layout>> layout = FindLayout(output.parameters(), scope);
    if (!layout.ok()) return layout.status();
    if (layout->has_value()) out_layout = **layout;
    absl::StatusOr<std::optional<SharedMemorySlice>> destination =
        FindSharedMemory(output.parameters(), scope, shared_memory);
    if (!destination.ok()) return destination.status();
    // The last requested output decides, as in OutputSharedMemoryParameters.
    out.output_sink =
        destination->has_value()
            ? std::make_shared<SharedMemoryOutput>(
                  **std::move(destination), absl::StrCat(scope, "parameters.", kByteSizeParameter))
            : nullptr;
  }

  // Shape: four positive dimensions whose product fits.
  if (input.shape_size() != 4) {
    return Invalid("inputs[0].shape", absl::StrCat("expected 4 dimensions (", LayoutName(in_layout),
                                                   "), got ", ShapeString(input.shape())));
  }
  int64_t elements = 1;
  for (int i = 0; i < 4; ++i) {
    const int64_t dim = input.shape(i);
    if (dim <= 0) {
      return Invalid(absl::StrCat("inputs[0].shape[", i, "]"),
                     absl::StrCat("must be positive, got ", dim));
    }
    if (__builtin_mul_overflow(elements, dim, &elements) ||
        elements > INT64_MAX / DataTypeSize(*dtype)) {
      return Invalid("inputs[0].shape",
                     absl::StrCat(ShapeString(input.shape()), " has too many elements"));
    }
  }
  const int64_t bytes = elements * DataTypeSize(*dtype);

  // Checked before any tensor is read.
  absl::StatusOr<absl::Duration> timeout = FindTimeout(request.parameters());
  if (!timeout.ok()) return timeout.status();

  // Data: shared memory, raw bytes (any datatype) or typed FP32 contents.
  absl::StatusOr<std::optional<SharedMemorySlice>> source =
      FindSharedMemory(input.parameters(), "inputs[0].", shared_memory);
  if (!source.ok()) return source.status();
  TensorBytes data;
  if (source->has_value()) {
    const SharedMemorySlice& slice = **source;
    if (!raw_input_contents.empty()) {
      return Invalid("raw_input_contents", "must be empty when inputs[0] is in shared memory");
    }
    if (input.has_contents()) {
      return Invalid("inputs[0].contents", "must be unset when inputs[0] is in shared memory");
    }
    if (slice.byte_size != bytes) {
      return Invalid(absl::StrCat("inputs[0].parameters.", kByteSizeParameter),
                     absl::StrCat("expected ", bytes, " bytes for ", input.datatype(), " ",
                                  ShapeString(input.shape()), ", got ", slice.byte_size));
    }
    absl::StatusOr<TensorBytes> read =
        shared_memory->Input(slice, absl::StrCat("inputs[0].parameters.", kByteSizeParameter));
    if (!read.ok()) return read.status();
    data = *std::move(read);
  } else if (!raw_input_contents.empty()) {
    if (raw_input_contents.size() != 1) {
      return Invalid("raw_input_contents", absl::StrCat("expected 1 entry (one per input), got ",
                                                        raw_input_contents.size()));
    }
    if (input.has_contents()) {
      return Invalid("inputs[0].contents", "must be unset when raw_input_contents is used");
    }
    const TensorBytes& raw = raw_input_contents.front();
    if (static_cast<int64_t>(raw.size()) != bytes) {
      return Invalid("raw_input_contents[0]",
                     absl::StrCat("expected ", bytes, " bytes for ", input.datatype(), " ",
                                  ShapeString(input.shape()), ", got ", raw.size()));
    }
    data = std::move(raw_input_contents.front());
  } else if (input.has_contents()) {
    const inference::InferTensorContents& contents = input.contents();
    if (*dtype != DataType::kFloat32) {
      return Invalid("inputs[0].contents",
                     absl::StrCat(input.datatype(),
                                  " tensors travel in raw_input_contents (the protocol has no "
                                  "16-bit float contents field)"));
    }
    if (HasNonFp32Contents(contents)) {
      return Invalid("inputs[0].contents", "an FP32 tensor takes fp32_contents only");
    }
    if (contents.fp32_contents_size() != elements) {
      return Invalid(
          "inputs[0].contents.fp32_contents",
          absl::StrCat("expected ", elements, " elements for ", ShapeString(input.shape()),
                       ", got ", contents.fp32_contents_size()));
    }
    std::string values(static_cast<size_t>(bytes), '\0');
    std::memcpy(values.data(), contents.fp32_contents().data(), static_cast<size_t>(bytes));
    data = TensorBytes(std::move(values));
  } else {
    return Invalid("inputs[0]",
                   "no tensor data; send raw_input_contents or inputs[0].contents.fp32_contents");
  }

  out.layer = request.model_name();
  // InferenceRequest shapes are [N, C, H, W] whatever the layout.
  out.shape[0] = input.shape(0);
  if (in_layout == Layout::kNhwc) {
    out.shape[1] = input.shape(3);
    out.shape[2] = input.shape(1);
    out.shape[3] = input.shape(2);
  } else {
    out.shape[1] = input.shape(1);
    out.shape[2] = input.shape(2);
    out.shape[3] = input.shape(3);
  }
  out.dtype = *dtype;
  out.input_layout = in_layout;
  out.output_layout = out_layout;
  out.input = std::move(data);
  out.api = Api::kKserve;
  out.deadline = std::min(grpc_deadline, out.accepted_at + *timeout);
  return absl::OkStatus();
}

absl::Status InKserveTerms(const absl::Status& status, Layout input_layout) {
  if (status.code() != absl::StatusCode::kInvalidArgument) return status;
  const absl::string_view message = status.message();
  auto renamed = [&](absl::string_view native, absl::string_view kserve) {
    return absl::InvalidArgumentError(absl::StrCat(kserve, message.substr(native.size())));
  };
  // [N, C, H, W] index -> index in the tensor's own row-major shape.
  constexpr int kNhwcIndex[4] = {0, 3, 1, 2};
  for (int i = 0; i < 4; ++i) {
    const std::string native = absl::StrCat("input.shape[", i, "]");
    if (absl::StartsWith(message, native)) {
      const int index = input_layout == Layout::kNhwc ? kNhwcIndex[i] : i;
      return renamed(native, absl::StrCat("inputs[0].shape[", index, "]"));
    }
  }
  if (absl::StartsWith(message, "input.shape")) return renamed("input.shape", "inputs[0].shape");
  if (absl::StartsWith(message, "input.dtype")) {
    return renamed("input.dtype", "inputs[0].datatype");
  }
  if (absl::StartsWith(message, "input.data")) {
    return renamed("input.data", "raw_input_contents[0]");
  }
  return status;
}

ParameterMap OutputSharedMemoryParameters(const inference::ModelInferRequest& request) {
  ParameterMap out;
  // The last requested output decides, as DecodeInferRequest chose its sink.
  for (const auto& output : request.outputs()) {
    out.clear();
    if (output.parameters().count(kRegionParameter) == 0) continue;
    for (const char* name : {kRegionParameter, kOffsetParameter, kByteSizeParameter}) {
      const auto it = output.parameters().find(name);
      if (it != output.parameters().end()) out[name] = it->second;
    }
  }
  return out;
}

void EncodeInferResponse(const std::string& model, const std::string& id, InferenceResult result,
                         inference::ModelInferResponse& response,
                         const ParameterMap& output_shared_memory) {
  std::string raw =
      EncodeInferResponseFields(model, id, std::move(result), response, output_shared_memory);
  if (output_shared_memory.empty()) response.add_raw_output_contents()->swap(raw);
}

std::string EncodeInferResponseFields(const std::string& model, const std::string& id,
                                      InferenceResult result,
                                      inference::ModelInferResponse& response,
                                      const ParameterMap& output_shared_memory) {
  response.set_model_name(model);
  response.set_model_version(kModelVersion);
  response.set_id(id);
  inference::ModelInferResponse::InferOutputTensor& output = *response.add_outputs();
  output.set_name(kOutputName);
  output.set_datatype(DatatypeName(result.dtype));
  const int64_t* s = result.shape;  // [N, K, P, Q]
  if (result.layout == Layout::kNhwc) {
    for (int64_t dim : {s[0], s[2], s[3], s[1]}) output.add_shape(dim);
    (*output.mutable_parameters())[kLayoutParameter].set_string_param("NHWC");
  } else {
    for (int64_t dim : {s[0], s[1], s[2], s[3]}) output.add_shape(dim);
  }
  for (const auto& [name, value] : output_shared_memory)
    (*output.mutable_parameters())[name] = value;

  auto& parameters = *response.mutable_parameters();
  parameters["queue_us"].set_int64_param(result.queue_us);
  parameters["compute_us"].set_int64_param(result.compute_us);
  parameters["total_us"].set_int64_param(result.total_us);
  parameters["batch_size"].set_int64_param(result.batch_size);
  parameters["kernel_config"].set_string_param(std::move(result.kernel_config));
  parameters["device"].set_string_param(std::move(result.device));
  return std::move(result.output);
}

void EncodeStreamError(const absl::Status& status, const std::string& model, const std::string& id,
                       inference::ModelStreamInferResponse& response) {
  // The code's name leads the message: the stream has no per-message status code.
  response.set_error_message(status.ToString());
  response.mutable_infer_response()->set_model_name(model);
  response.mutable_infer_response()->set_id(id);
}

void EncodeModelMetadata(const LayerSnapshot& layer, inference::ModelMetadataResponse& response) {
  response.set_name(layer.name);
  response.add_versions(kModelVersion);
  response.set_platform(kPlatform);
  const char* datatype = DatatypeName(layer.params.dtype);
  auto& input = *response.add_inputs();
  input.set_name(kInputName);
  input.set_datatype(datatype);
  for (int64_t dim : {int64_t{-1}, layer.params.in_channels, int64_t{-1}, int64_t{-1}}) {
    input.add_shape(dim);
  }
  auto& output = *response.add_outputs();
  output.set_name(kOutputName);
  output.set_datatype(datatype);
  for (int64_t dim : {int64_t{-1}, layer.params.out_channels, int64_t{-1}, int64_t{-1}}) {
    output.add_shape(dim);
  }
}

}  // namespace convserve::kserve
