// convserve-cli: load, inspect and call layers on a convserve server, and measure it.
//   convserve-cli <load|list|unload|infer|health|tune|perf> [--flags]
// Flags live here and are copied into the client library's option structs.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "client/convert.h"
#include "client/cuda_shared_memory.h"
#include "client/layer_directory.h"
#include "client/perf.h"
#include "client/shared_memory.h"
#include "common/layer_spec_rules.h"
#include "common/malloc_tuning.h"
#include "common/mutex_mode.h"
#include "common/npy.h"
#include "common/tls_credentials.h"
#include "kernels/host_numeric.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "server address: host:port, dns:///name:port, or ipv4:a:p1,b:p2 for several servers "
          "(calls are spread round-robin)");
ABSL_FLAG(std::string, lb, "round_robin",
          "load balancing over the target's addresses: "
          "round_robin or pick_first");
ABSL_FLAG(double, timeout_s, 60, "deadline of each call (load and tune: 30 minutes)");
ABSL_FLAG(int32_t, max_message_mb, 512, "largest gRPC message sent or received, MiB");
ABSL_FLAG(int32_t, grpc_stream_window_bytes, 0,
          "fixed HTTP/2 stream receive window for replies, bytes, with BDP probing off "
          "(0: gRPC's default, 64 KiB grown by probing); see docs/operations.md");
ABSL_FLAG(std::string, tls_ca, "",
          "TLS: PEM CA bundle that signed the server (TLS on when any "
          "--tls_* flag is set; empty CA: the system roots)");
ABSL_FLAG(std::string, tls_cert, "", "TLS: PEM client certificate, for servers requiring one");
ABSL_FLAG(std::string, tls_key, "", "TLS: PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: name to verify the server's certificate against (e.g. when dialling an IP)");
ABSL_FLAG(std::string, token, "",
          "bearer token sent on every call (the server's admin token for load/unload/tune)");
ABSL_FLAG(std::string, layer, "", "layer name (load: overrides the name from --layer_dir)");

ABSL_FLAG(std::string, layer_dir, "",
          "load: a model repository layer directory (config.pbtxt, weights.npy, bias.npy)");
ABSL_FLAG(std::string, model_repository, "", "load: load every layer directory in this one");
ABSL_FLAG(std::string, weights, "", "load: OIHW weights .npy");
ABSL_FLAG(std::string, bias, "", "load: [out_channels] bias .npy (gives the layer a bias)");
ABSL_FLAG(int64_t, in_channels, 0, "load: input channels (default: from the weights' shape)");
ABSL_FLAG(int64_t, out_channels, 0, "load: output channels (default: from the weights' shape)");
ABSL_FLAG(std::string, kernel, "", "load: kernel HxW (default: from the weights' shape)");
ABSL_FLAG(std::string, stride, "1", "load: stride HxW or one number");
ABSL_FLAG(std::string, padding, "0", "load: padding HxW or one number");
ABSL_FLAG(std::string, dilation, "1", "load: dilation HxW or one number");
ABSL_FLAG(int64_t, groups, 1, "load: groups");
ABSL_FLAG(std::string, dtype, "",
          "fp32|fp16|bf16. load: the layer's dtype (default: the weights file's; other float "
          "weights are converted). infer: convert the input to it before sending");
ABSL_FLAG(std::string, precision, "",
          "load: FP32 layers' math, tf32 or exact_fp32 (default: the server's, TF32)");
ABSL_FLAG(std::string, activation, "none",
          "load: fused activation: none, relu, silu, gelu_tanh, sigmoid, tanh");
ABSL_FLAG(std::string, input_size, "",
          "load: expected input HxW (with --warmup_batch_sizes, tuned before ready). "
          "tune/perf: the input HxW (default: the layer's input_size)");
ABSL_FLAG(std::string, warmup_batch_sizes, "", "load: batch sizes to tune at load, e.g. 1,8,32");
ABSL_FLAG(int32_t, max_batch_size, 0, "load: batching limit (0: server default)");
ABSL_FLAG(int64_t, max_queue_delay_us, 0, "load: batching delay (0: server default)");
ABSL_FLAG(std::string, preferred_batch_sizes, "", "load: preferred batch sizes, e.g. 8,16,32");

ABSL_FLAG(std::string, input, "", "infer: input .npy ([N,C,H,W], or [N,H,W,C] with nhwc)");
ABSL_FLAG(std::string, output, "", "infer: where to write the output .npy");
ABSL_FLAG(std::string, input_layout, "nchw", "infer/tune/perf: input layout, nchw or nhwc");
ABSL_FLAG(std::string, output_layout, "", "infer/perf: output layout (default: the input's)");
ABSL_FLAG(int64_t, request_timeout_us, 0, "infer/perf: server-side timeout per request (0: none)");

ABSL_FLAG(std::string, batch, "",
          "tune: batch sizes to tune (default 1,8,32); perf: N of each request, a list sweeps "
          "(default 1)");
ABSL_FLAG(std::string, concurrency, "",
          "perf: closed-loop sweep, requests kept in flight, e.g. 1,2,4,8,16,32,64,128");
ABSL_FLAG(std::string, rate, "", "perf: open-loop sweep, requests per second, e.g. 100,1000");
ABSL_FLAG(double, duration_s, 5, "perf: measured seconds per load level");
ABSL_FLAG(double, warmup_s, 1, "perf: unmeasured seconds before each level");
ABSL_FLAG(std::string, out, "", "perf: also write the results to this .json or .csv file");
ABSL_FLAG(int32_t, connections, 8,
          "perf: TCP connections to spread the calls over (a closed-loop level with concurrency "
          "c uses min(c, connections) of them)");
ABSL_FLAG(bool, shared_memory, false,
          "perf: pass tensors in POSIX shared memory instead of in the messages (this host's "
          "server, started with --allow_shared_memory): one input range, an output range per "
          "request slot");
ABSL_FLAG(int32_t, cuda_shared_memory, -1,
          "perf: like --shared_memory, but the tensors are in GPU memory on this CUDA device, "
          "shared with the server through CUDA IPC (a GPU server on this host); -1: off");

namespace convserve {
namespace {

constexpr char kUsage[] = R"(convserve-cli <command> [flags]: talk to a convserve server.

Commands (all take --target, --lb, --timeout_s, --max_message_mb, --token and the --tls_* flags):
  load    --layer_dir DIR [--layer NAME]          load one model repository layer directory
          --model_repository DIR                   load every layer directory in DIR
          --layer NAME --weights W.npy [--bias B.npy] [--dtype fp16] [--stride 1] [--padding 1]
            [--dilation 1] [--groups 1] [--activation relu] [--precision tf32]
            [--input_size 56x56 --warmup_batch_sizes 1,8,32] [--max_batch_size 32]
            [--max_queue_delay_us 500] [--preferred_batch_sizes 8,32]
                                                   load from flags; channels and kernel
                                                   default to the weights' OIHW shape
  list                                             the loaded layers
  unload  --layer NAME
  infer   --layer NAME --input X.npy --output Y.npy [--input_layout nhwc]
            [--output_layout nchw] [--dtype fp16] [--request_timeout_us N]
                                                   one forward pass; prints timing, batch size
                                                   and kernel
  health  [--layer NAME]                           SERVING or not (exit 1 when not)
  tune    --layer NAME --batch 1,8,32 [--input_size 56x56] [--input_layout nhwc]
  perf    --layer NAME [--concurrency 1,2,4,...,128] [--rate 100,1000] [--batch 1]
            [--duration_s 5] [--warmup_s 1] [--input_size HxW] [--out results.json|.csv]
            [--connections 8] [--shared_memory | --cuda_shared_memory DEVICE]
                                                   load generator: throughput, latency
                                                   percentiles, server queue/compute time and
                                                   batch sizes per load level

Exit status: 0 on success, 1 when the server or a file said no, 2 on a usage error.)";

// How a command ended: exit code 0 and no message on success, else the message to print.
struct Result {
  int exit_code;
  std::string message;
};
const Result kOk{0, ""};

Result Fail(const absl::Status& status) { return {1, status.ToString()}; }
Result Usage(const std::string& message) { return {2, message}; }

// Explains the most common cause of UNAVAILABLE next to the server's words.
Result FailCall(const char* what, const absl::Status& status) {
  std::string message = absl::StrCat(what, ": ", status.ToString());
  if (absl::IsUnavailable(status)) {
    absl::StrAppend(&message, " (is convserve-server running at ", absl::GetFlag(FLAGS_target),
                    "?)");
  }
  return {1, message};
}

absl::StatusOr<std::vector<double>> ParseDoubleList(const std::string& text) {
  std::vector<double> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    double value = 0;
    if (!absl::SimpleAtod(part, &value) || !(value > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad list '", text, "' (want positive numbers such as 100,1000)"));
    }
    values.push_back(value);
  }
  return values;
}

std::string SpecSummary(const v1::LayerSpec& s) {
  std::string out = absl::StrFormat(
      "%s %d->%d k%dx%d s%dx%d p%dx%d d%dx%d g%d",
      absl::AsciiStrToLower(absl::StripPrefix(v1::DataType_Name(s.dtype()), "DATA_TYPE_")),
      s.in_channels(), s.out_channels(), s.kernel().h(), s.kernel().w(),
      std::max<int64_t>(1, s.stride().h()), std::max<int64_t>(1, s.stride().w()), s.padding().h(),
      s.padding().w(), std::max<int64_t>(1, s.dilation().h()),
      std::max<int64_t>(1, s.dilation().w()), std::max<int64_t>(1, s.groups()));
  if (s.has_bias()) absl::StrAppend(&out, " bias");
  if (s.activation() != v1::ACTIVATION_NONE) {
    absl::StrAppend(&out, " ",
                    absl::AsciiStrToLower(
                        absl::StripPrefix(v1::Activation_Name(s.activation()), "ACTIVATION_")));
  }
  if (s.dtype() == v1::DATA_TYPE_FP32 && s.precision() == v1::PRECISION_EXACT_FP32) {
    absl::StrAppend(&out, " exact_fp32");
  }
  return out;
}

void PrintLayer(const v1::LayerInfo& layer) {
  std::printf("%-24s %-44s %-9s gen %-3llu %10.1f KiB  %s\n", layer.spec().name().c_str(),
              SpecSummary(layer.spec()).c_str(), layer.ready() ? "ready" : "not-ready",
              static_cast<unsigned long long>(layer.generation()),
              static_cast<double>(layer.resident_bytes()) / 1024.0, layer.device().c_str());
}

void PrintTuned(const v1::TunedChoice& t) {
  std::printf("  batch %-4d %4lldx%-4lld %s->%s  %-36s %10.1f us   runner-up %s %.1f us\n",
              t.batch_bucket(), static_cast<long long>(t.input_size().h()),
              static_cast<long long>(t.input_size().w()),
              LayoutName(LayoutFromProto(t.input_layout()).value_or(Layout::kNchw)),
              LayoutName(LayoutFromProto(t.output_layout()).value_or(Layout::kNchw)),
              t.config().c_str(), t.time_us(), t.runner_up().empty() ? "-" : t.runner_up().c_str(),
              t.runner_up_time_us());
}

// --layer, required by most commands.
absl::StatusOr<std::string> RequiredLayer() {
  std::string layer = absl::GetFlag(FLAGS_layer);
  if (layer.empty()) return absl::InvalidArgumentError("--layer is required");
  return layer;
}

// Builds the LoadLayer request from --layer, --weights, --bias and the spec flags.
absl::StatusOr<v1::LoadLayerRequest> LoadRequestFromFlags() {
  v1::LoadLayerRequest request;
  v1::LayerSpec& spec = *request.mutable_spec();
  spec.set_name(absl::GetFlag(FLAGS_layer));
  const std::string weights_path = absl::GetFlag(FLAGS_weights);
  absl::StatusOr<NpyArray> weights = ReadNpyFile(weights_path, /*bf16_from_uint16=*/true);
  if (!weights.ok()) return weights.status();
  if (weights->shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        weights_path, ": weights must be 4-D [out_channels, in_channels/groups, kh, kw], got ",
        weights->shape.size(), "-D"));
  }
  DataType dtype = weights->dtype;
  if (!absl::GetFlag(FLAGS_dtype).empty()) {
    absl::StatusOr<v1::DataType> parsed = ParseDataType(absl::GetFlag(FLAGS_dtype));
    if (!parsed.ok()) return parsed.status();
    dtype = *DataTypeFromProto(*parsed);
  }
  spec.set_dtype(DataTypeToProto(dtype));
  const int64_t groups = absl::GetFlag(FLAGS_groups);
  spec.set_groups(groups);
  spec.set_out_channels(absl::GetFlag(FLAGS_out_channels) > 0 ? absl::GetFlag(FLAGS_out_channels)
                                                              : weights->shape[0]);
  spec.set_in_channels(absl::GetFlag(FLAGS_in_channels) > 0 ? absl::GetFlag(FLAGS_in_channels)
                                                            : weights->shape[1] * groups);
  if (absl::GetFlag(FLAGS_kernel).empty()) {
    spec.mutable_kernel()->set_h(weights->shape[2]);
    spec.mutable_kernel()->set_w(weights->shape[3]);
  } else {
    absl::StatusOr<v1::Size2d> kernel = ParseSize2d(absl::GetFlag(FLAGS_kernel));
    if (!kernel.ok()) return kernel.status();
    *spec.mutable_kernel() = *kernel;
  }
  for (auto [flag, field] : {std::pair{&FLAGS_stride, spec.mutable_stride()},
                             std::pair{&FLAGS_padding, spec.mutable_padding()},
                             std::pair{&FLAGS_dilation, spec.mutable_dilation()}}) {
    absl::StatusOr<v1::Size2d> size = ParseSize2d(absl::GetFlag(*flag));
    if (!size.ok()) return size.status();
    *field = *size;
  }
  if (!absl::GetFlag(FLAGS_precision).empty()) {
    absl::StatusOr<v1::Precision> precision = ParsePrecision(absl::GetFlag(FLAGS_precision));
    if (!precision.ok()) return precision.status();
    spec.set_precision(*precision);
  }
  absl::StatusOr<v1::Activation> activation = ParseActivation(absl::GetFlag(FLAGS_activation));
  if (!activation.ok()) return activation.status();
  spec.set_activation(*activation);
  if (!absl::GetFlag(FLAGS_input_size).empty()) {
    absl::StatusOr<v1::Size2d> size = ParseSize2d(absl::GetFlag(FLAGS_input_size));
    if (!size.ok()) return size.status();
    *spec.mutable_input_size() = *size;
  }
  absl::StatusOr<std::vector<int32_t>> warmup =
      ParseIntList(absl::GetFlag(FLAGS_warmup_batch_sizes));
  if (!warmup.ok()) return warmup.status();
  spec.mutable_warmup_batch_sizes()->Add(warmup->begin(), warmup->end());
  spec.mutable_batching()->set_max_batch_size(absl::GetFlag(FLAGS_max_batch_size));
  spec.mutable_batching()->set_max_queue_delay_us(absl::GetFlag(FLAGS_max_queue_delay_us));
  absl::StatusOr<std::vector<int32_t>> preferred =
      ParseIntList(absl::GetFlag(FLAGS_preferred_batch_sizes));
  if (!preferred.ok()) return preferred.status();
  spec.mutable_batching()->mutable_preferred_batch_sizes()->Add(preferred->begin(),
                                                                preferred->end());

  // The spec is the user's word; the weights must fit it (the server checks the bytes too, but
  // naming the file here is clearer).
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  if (!params.ok()) return params.status();
  const std::vector<int64_t> want = {params->out_channels, params->in_channels / params->groups,
                                     params->kernel_h, params->kernel_w};
  if (weights->shape != want) {
    return absl::InvalidArgumentError(
        absl::StrCat(weights_path, " has shape [", absl::StrJoin(weights->shape, ", "),
                     "] but the layer needs [", absl::StrJoin(want, ", "), "] (OIHW)"));
  }
  request.set_weights(CastNpy(*weights, dtype).data);

  const std::string bias_path = absl::GetFlag(FLAGS_bias);
  if (!bias_path.empty()) {
    absl::StatusOr<NpyArray> bias = ReadNpyFile(bias_path, /*bf16_from_uint16=*/true);
    if (!bias.ok()) return bias.status();
    if (bias->shape != std::vector<int64_t>{params->out_channels}) {
      return absl::InvalidArgumentError(
          absl::StrCat(bias_path, " has shape [", absl::StrJoin(bias->shape, ", "),
                       "] but the layer needs [", params->out_channels, "]"));
    }
    spec.set_has_bias(true);
    request.set_bias(CastNpy(*bias, dtype).data);
  }
  return request;
}

Result Load(Client& client) {
  std::vector<v1::LoadLayerRequest> requests;
  const std::string repository = absl::GetFlag(FLAGS_model_repository);
  const std::string layer_dir = absl::GetFlag(FLAGS_layer_dir);
  if (!repository.empty() && !layer_dir.empty()) {
    return Usage("give --layer_dir or --model_repository, not both");
  }
  if (!repository.empty()) {
    absl::StatusOr<std::vector<std::string>> dirs = ListRepositoryLayers(repository);
    if (!dirs.ok()) return Fail(dirs.status());
    if (dirs->empty()) {
      return Fail(
          absl::NotFoundError(absl::StrCat(repository,
                                           " holds no layer directories (sub-directories with a "
                                           "config.pbtxt)")));
    }
    for (const std::string& dir : *dirs) {
      absl::StatusOr<v1::LoadLayerRequest> request = ReadRepositoryLayer(dir);
      if (!request.ok()) return Fail(request.status());
      requests.push_back(std::move(*request));
    }
  } else if (!layer_dir.empty()) {
    absl::StatusOr<v1::LoadLayerRequest> request = ReadRepositoryLayer(layer_dir);
    if (!request.ok()) return Fail(request.status());
    if (!absl::GetFlag(FLAGS_layer).empty()) {
      request->mutable_spec()->set_name(absl::GetFlag(FLAGS_layer));
    }
    requests.push_back(std::move(*request));
  } else {
    if (absl::GetFlag(FLAGS_layer).empty() || absl::GetFlag(FLAGS_weights).empty()) {
      return Usage("give --layer_dir, --model_repository, or --layer NAME with --weights W.npy");
    }
    absl::StatusOr<v1::LoadLayerRequest> request = LoadRequestFromFlags();
    if (!request.ok()) return Fail(request.status());
    requests.push_back(std::move(*request));
  }
  for (const v1::LoadLayerRequest& request : requests) {
    const absl::Time start = absl::Now();
    absl::StatusOr<v1::LayerInfo> layer = client.LoadLayer(request);
    if (!layer.ok()) {
      return FailCall(absl::StrCat("loading layer '", request.spec().name(), "'").c_str(),
                      layer.status());
    }
    std::printf("loaded in %.1f ms: ", absl::ToDoubleMilliseconds(absl::Now() - start));
    PrintLayer(*layer);
    for (const v1::TunedChoice& tuned : layer->tuned()) PrintTuned(tuned);
  }
  return kOk;
}

Result List(Client& client) {
  absl::StatusOr<std::vector<v1::LayerInfo>> layers = client.ListLayers();
  if (!layers.ok()) return FailCall("listing layers", layers.status());
  if (layers->empty()) std::printf("no layers loaded\n");
  for (const v1::LayerInfo& layer : *layers) {
    PrintLayer(layer);
    for (const v1::TunedChoice& tuned : layer.tuned()) PrintTuned(tuned);
  }
  return kOk;
}

Result Unload(Client& client) {
  absl::StatusOr<std::string> layer = RequiredLayer();
  if (!layer.ok()) return Usage(std::string(layer.status().message()));
  absl::Status status = client.UnloadLayer(*layer);
  if (!status.ok()) return FailCall(absl::StrCat("unloading '", *layer, "'").c_str(), status);
  std::printf("unloaded %s\n", layer->c_str());
  return kOk;
}

Result Infer(Client& client) {
  absl::StatusOr<std::string> layer = RequiredLayer();
  if (!layer.ok()) return Usage(std::string(layer.status().message()));
  const std::string input_path = absl::GetFlag(FLAGS_input);
  const std::string output_path = absl::GetFlag(FLAGS_output);
  if (input_path.empty() || output_path.empty()) return Usage("--input and --output are required");
  absl::StatusOr<v1::Layout> input_layout = ParseLayout(absl::GetFlag(FLAGS_input_layout));
  if (!input_layout.ok()) return Usage(std::string(input_layout.status().message()));

  absl::StatusOr<NpyArray> input = ReadNpyFile(input_path, /*bf16_from_uint16=*/true);
  if (!input.ok()) return Fail(input.status());
  if (!absl::GetFlag(FLAGS_dtype).empty()) {
    absl::StatusOr<v1::DataType> dtype = ParseDataType(absl::GetFlag(FLAGS_dtype));
    if (!dtype.ok()) return Usage(std::string(dtype.status().message()));
    *input = CastNpy(*input, *DataTypeFromProto(*dtype));
  }
  absl::StatusOr<v1::Tensor> tensor =
      TensorFromNpy(std::move(*input), *LayoutFromProto(*input_layout));
  if (!tensor.ok())
    return Fail(
        absl::InvalidArgumentError(absl::StrCat(input_path, ": ", tensor.status().message())));

  v1::ForwardRequest request;
  request.set_layer(*layer);
  *request.mutable_input() = std::move(*tensor);
  if (!absl::GetFlag(FLAGS_output_layout).empty()) {
    absl::StatusOr<v1::Layout> output_layout = ParseLayout(absl::GetFlag(FLAGS_output_layout));
    if (!output_layout.ok()) return Usage(std::string(output_layout.status().message()));
    request.set_output_layout(*output_layout);
  }
  request.set_timeout_us(absl::GetFlag(FLAGS_request_timeout_us));

  const absl::Time start = absl::Now();
  absl::StatusOr<v1::ForwardResponse> response = client.Forward(request);
  const absl::Duration round_trip = absl::Now() - start;
  if (!response.ok()) {
    return FailCall(absl::StrCat("forward on layer '", *layer, "'").c_str(), response.status());
  }
  const v1::Tensor& out = response->output();
  const std::string shape = absl::StrJoin(out.shape(), "x");
  const DataType out_dtype = DataTypeFromProto(out.dtype()).value_or(DataType::kFloat32);
  const Layout out_layout = LayoutFromProto(out.layout()).value_or(Layout::kNchw);
  absl::StatusOr<NpyArray> array = NpyFromTensor(std::move(*response->mutable_output()));
  if (!array.ok()) {
    return Fail(absl::DataLossError(
        absl::StrCat("the server's output tensor is malformed: ", array.status().message())));
  }
  absl::Status written = WriteNpyFile(output_path, *array);
  if (!written.ok()) return Fail(written);
  const v1::Timing& t = response->timing();
  std::printf(
      "output %s [N,C,H,W] %s %s -> %s\n"
      "batch %d  kernel %s  device %s\n"
      "server: queue %lld us, compute %lld us, total %lld us; round trip %.0f us\n",
      shape.c_str(), DataTypeName(out_dtype), LayoutName(out_layout), output_path.c_str(),
      response->batch_size(), response->kernel_config().c_str(), response->device().c_str(),
      static_cast<long long>(t.queue_us()), static_cast<long long>(t.compute_us()),
      static_cast<long long>(t.total_us()), absl::ToDoubleMicroseconds(round_trip));
  return kOk;
}

Result Health(Client& client) {
  const std::string layer = absl::GetFlag(FLAGS_layer);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> status =
      client.Health(layer);
  const std::string what =
      layer.empty() ? absl::GetFlag(FLAGS_target) : absl::StrCat("layer '", layer, "'");
  if (!status.ok()) {
    if (absl::IsNotFound(status.status()) && !layer.empty()) {
      return {1, absl::StrCat("health: ", what, " is unknown to the server (not loaded): ",
                              status.status().ToString())};
    }
    return FailCall("health check", status.status());
  }
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (*status != grpc::health::v1::HealthCheckResponse::SERVING) {
    return {1, absl::StrCat("health: ", what, " is ", name)};
  }
  std::printf("%s: %s\n", what.c_str(), name.c_str());
  return kOk;
}

Result Tune(Client& client) {
  absl::StatusOr<std::string> layer = RequiredLayer();
  if (!layer.ok()) return Usage(std::string(layer.status().message()));
  const std::string batch_flag = absl::GetFlag(FLAGS_batch);
  absl::StatusOr<std::vector<int32_t>> batches =
      ParseIntList(batch_flag.empty() ? "1,8,32" : batch_flag);
  if (!batches.ok()) return Usage(std::string(batches.status().message()));
  v1::TuneRequest request;
  request.set_layer(*layer);
  request.mutable_batch_sizes()->Add(batches->begin(), batches->end());
  if (!absl::GetFlag(FLAGS_input_size).empty()) {
    absl::StatusOr<v1::Size2d> size = ParseSize2d(absl::GetFlag(FLAGS_input_size));
    if (!size.ok()) return Usage(std::string(size.status().message()));
    *request.mutable_input_size() = *size;
  }
  absl::StatusOr<v1::Layout> layout = ParseLayout(absl::GetFlag(FLAGS_input_layout));
  if (!layout.ok()) return Usage(std::string(layout.status().message()));
  request.set_layout(*layout);
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::TuneResponse> response = client.Tune(request);
  if (!response.ok()) {
    return FailCall(absl::StrCat("tuning layer '", *layer, "'").c_str(), response.status());
  }
  std::printf("tuned %s in %.1f s:\n", layer->c_str(), absl::ToDoubleSeconds(absl::Now() - start));
  for (const v1::TunedChoice& tuned : response->tuned()) PrintTuned(tuned);
  return kOk;
}

// A ForwardRequest for `layer` with N = batch and fresh random values in the layer's dtype.
absl::StatusOr<v1::ForwardRequest> PerfRequest(const v1::LayerInfo& layer, int64_t batch,
                                               std::mt19937& rng) {
  v1::Size2d size = layer.spec().input_size();
  if (!absl::GetFlag(FLAGS_input_size).empty()) {
    absl::StatusOr<v1::Size2d> parsed = ParseSize2d(absl::GetFlag(FLAGS_input_size));
    if (!parsed.ok()) return parsed.status();
    size = *parsed;
  }
  if (size.h() <= 0 || size.w() <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer '", layer.spec().name(), "' has no input_size; give --input_size HxW"));
  }
  absl::StatusOr<v1::Layout> layout = ParseLayout(absl::GetFlag(FLAGS_input_layout));
  if (!layout.ok()) return layout.status();
  absl::StatusOr<DataType> dtype = DataTypeFromProto(layer.spec().dtype());
  if (!dtype.ok()) return dtype.status();

  v1::ForwardRequest request;
  request.set_layer(layer.spec().name());
  v1::Tensor& input = *request.mutable_input();
  input.set_dtype(layer.spec().dtype());
  input.set_layout(*layout);
  for (int64_t d : {batch, layer.spec().in_channels(), size.h(), size.w()}) input.add_shape(d);
  const int64_t elements = batch * layer.spec().in_channels() * size.h() * size.w();
  std::string data(static_cast<size_t>(elements * DataTypeSize(*dtype)), '\0');
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (int64_t i = 0; i < elements; ++i) StoreFromDouble(*dtype, data.data(), i, uniform(rng));
  input.set_data(std::move(data));
  if (!absl::GetFlag(FLAGS_output_layout).empty()) {
    absl::StatusOr<v1::Layout> output_layout = ParseLayout(absl::GetFlag(FLAGS_output_layout));
    if (!output_layout.ok()) return output_layout.status();
    request.set_output_layout(*output_layout);
  }
  request.set_timeout_us(absl::GetFlag(FLAGS_request_timeout_us));
  return request;
}

// perf --shared_memory: one object holding the input once and an output range per request
// slot, registered with the server for as long as this lives.
class PerfSharedMemory {
 public:
  // `cuda_device` >= 0: GPU memory on that device (--cuda_shared_memory) instead of a
  // shm_open object.
  static absl::StatusOr<std::unique_ptr<PerfSharedMemory>> Create(Client& client,
                                                                  const v1::LayerInfo& layer,
                                                                  v1::ForwardRequest request,
                                                                  int slots, int cuda_device) {
    absl::StatusOr<ConvParams> params = ParamsFromSpec(layer.spec());
    if (!params.ok()) return params.status();
    ConvProblem problem;
    problem.params = *params;
    problem.batch = request.input().shape(0);
    problem.height = request.input().shape(2);
    problem.width = request.input().shape(3);
    const int64_t input_bytes = static_cast<int64_t>(request.input().data().size());
    const int64_t output_bytes = problem.output_bytes();
    const std::string name = absl::StrCat("convserve-perf-", getpid());
    const int64_t total_bytes = input_bytes + slots * output_bytes;
    auto out = std::unique_ptr<PerfSharedMemory>(new PerfSharedMemory(client, name));
    if (cuda_device >= 0) {
      absl::StatusOr<std::unique_ptr<CudaSharedMemoryBuffer>> buffer =
          CudaSharedMemoryBuffer::Create(cuda_device, total_bytes);
      if (!buffer.ok()) return buffer.status();
      out->gpu_buffer_ = *std::move(buffer);
      if (absl::Status s = out->gpu_buffer_->Upload(0, request.input().data().data(), input_bytes);
          !s.ok()) {
        return s;
      }
      if (absl::Status s = client.RegisterCudaSharedMemory(name, out->gpu_buffer_->ipc_handle(),
                                                           cuda_device, 0, total_bytes);
          !s.ok()) {
        return s;
      }
    } else {
      absl::StatusOr<std::unique_ptr<SharedMemoryBuffer>> buffer =
          SharedMemoryBuffer::Create("/" + name, total_bytes);
      if (!buffer.ok()) return buffer.status();
      out->host_buffer_ = *std::move(buffer);
      std::memcpy(out->host_buffer_->data(), request.input().data().data(), input_bytes);
      if (absl::Status s =
              client.RegisterSharedMemory(name, out->host_buffer_->key(), 0, total_bytes);
          !s.ok()) {
        return s;
      }
    }
    out->registered_ = true;
    request.mutable_input()->clear_data();
    v1::SharedMemoryRange* input = request.mutable_input()->mutable_shared_memory();
    input->set_region(name);
    input->set_byte_size(input_bytes);
    for (int i = 0; i < slots; ++i) {
      v1::SharedMemoryRange* output = request.mutable_output_shared_memory();
      output->set_region(name);
      output->set_offset(input_bytes + i * output_bytes);
      output->set_byte_size(output_bytes);
      out->requests_.push_back(request);
    }
    return out;
  }
  ~PerfSharedMemory() {
    if (!registered_) return;
    if (absl::Status s = client_.UnregisterSharedMemory(name_); !s.ok()) {
      std::fprintf(stderr, "perf: unregistering %s: %s\n", name_.c_str(), s.ToString().c_str());
    }
  }
  const std::vector<v1::ForwardRequest>& requests() const { return requests_; }

 private:
  PerfSharedMemory(Client& client, std::string name) : client_(client), name_(std::move(name)) {}

  Client& client_;
  const std::string name_;
  // One of the two holds the tensors; unregistered (the destructor) before either is freed.
  std::unique_ptr<SharedMemoryBuffer> host_buffer_;
  std::unique_ptr<CudaSharedMemoryBuffer> gpu_buffer_;
  bool registered_ = false;
  std::vector<v1::ForwardRequest> requests_;
};

Result Perf(Client& client) {
  absl::StatusOr<std::string> layer_name = RequiredLayer();
  if (!layer_name.ok()) return Usage(std::string(layer_name.status().message()));
  std::string concurrency_flag = absl::GetFlag(FLAGS_concurrency);
  const std::string rate_flag = absl::GetFlag(FLAGS_rate);
  if (concurrency_flag.empty() && rate_flag.empty()) concurrency_flag = "1,2,4,8,16,32,64,128";
  absl::StatusOr<std::vector<int32_t>> concurrencies = ParseIntList(concurrency_flag);
  if (!concurrencies.ok()) return Usage(std::string(concurrencies.status().message()));
  absl::StatusOr<std::vector<double>> rates = ParseDoubleList(rate_flag);
  if (!rates.ok()) return Usage(std::string(rates.status().message()));
  const std::string batch_flag = absl::GetFlag(FLAGS_batch);
  absl::StatusOr<std::vector<int32_t>> batches =
      ParseIntList(batch_flag.empty() ? "1" : batch_flag);
  if (!batches.ok()) return Usage(std::string(batches.status().message()));
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (!out_path.empty() && !absl::EndsWith(out_path, ".json") &&
      !absl::EndsWith(out_path, ".csv")) {
    return Usage("--out must name a .json or .csv file");
  }
  PerfSettings settings;
  settings.duration = absl::Seconds(absl::GetFlag(FLAGS_duration_s));
  settings.warmup = absl::Seconds(absl::GetFlag(FLAGS_warmup_s));
  settings.request_timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  if (settings.duration <= absl::ZeroDuration() || settings.warmup < absl::ZeroDuration()) {
    return Usage("--duration_s must be > 0 and --warmup_s >= 0");
  }
  if (absl::GetFlag(FLAGS_shared_memory) && absl::GetFlag(FLAGS_cuda_shared_memory) >= 0) {
    return Usage("--shared_memory and --cuda_shared_memory: choose one place for the tensors");
  }
  const int connections = absl::GetFlag(FLAGS_connections);
  if (connections < 1 || connections > 1024) return Usage("--connections must be 1..1024");

  absl::StatusOr<v1::LayerInfo> layer = client.GetLayer(*layer_name);
  if (!layer.ok()) return FailCall("looking up the layer", layer.status());

  // One Client per connection: a distinct channel tag keeps gRPC from sharing one socket.
  std::vector<std::unique_ptr<Client>> owned;
  std::vector<Client*> clients;
  for (int i = 0; i < connections; ++i) {
    ClientOptions options = client.options();
    options.channel_tag = i + 1;
    owned.push_back(std::make_unique<Client>(options));
    clients.push_back(owned.back().get());
  }

  std::mt19937 rng(12345);
  std::vector<PerfPoint> points;
  for (int32_t batch : *batches) {
    absl::StatusOr<v1::ForwardRequest> request = PerfRequest(*layer, batch, rng);
    if (!request.ok()) return Usage(std::string(request.status().message()));
    std::vector<v1::ForwardRequest> requests = {*request};
    std::unique_ptr<PerfSharedMemory> shared;
    const int cuda_device = absl::GetFlag(FLAGS_cuda_shared_memory);
    if (absl::GetFlag(FLAGS_shared_memory) || cuda_device >= 0) {
      int slots = 256;  // open loop: output ranges reused round-robin
      for (int32_t concurrency : *concurrencies) slots = std::max(slots, concurrency);
      absl::StatusOr<std::unique_ptr<PerfSharedMemory>> made =
          PerfSharedMemory::Create(client, *layer, *std::move(request), slots, cuda_device);
      if (!made.ok()) return FailCall("setting up shared memory", made.status());
      shared = *std::move(made);
      requests = shared->requests();
    }
    for (int32_t concurrency : *concurrencies) {
      std::fprintf(stderr, "perf: batch %d, concurrency %d ...\n", batch, concurrency);
      points.push_back(RunClosedLoop(clients, requests, concurrency, settings));
    }
    for (double rate : *rates) {
      std::fprintf(stderr, "perf: batch %d, rate %g/s ...\n", batch, rate);
      points.push_back(RunOpenLoop(clients, requests, rate, settings));
    }
  }
  std::printf("%s", PerfTable(points).c_str());
  if (!out_path.empty()) {
    std::ofstream out(out_path, std::ios::trunc);
    out << (absl::EndsWith(out_path, ".json") ? PerfJson(points) : PerfCsv(points));
    if (!out) return Fail(absl::PermissionDeniedError(absl::StrCat("cannot write ", out_path)));
  }
  for (const PerfPoint& point : points) {
    if (point.ok == 0) {
      return {1,
              absl::StrCat("perf: no request succeeded at ", point.mode, " ", point.load,
                           point.first_error.empty() ? "" : "; first error: ", point.first_error)};
    }
  }
  return kOk;
}

int Main(int argc, char** argv) {
  KeepLargeBuffersMapped();  // perf: 400 KB replies page-faulted in anew on every call otherwise
  absl::SetProgramUsageMessage(kUsage);
  // --help lists this file's flags (absl's default looks for a file named after the binary).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "client/cli_main.cc");
  };
  absl::SetFlagsUsageConfig(usage_config);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "%s\n",
                 args.size() < 2 ? "convserve-cli: give a command (see --help)"
                                 : absl::StrCat("convserve-cli: unexpected argument '", args[2],
                                                "' (see --help)")
                                       .c_str());
    return 2;
  }
  const std::string command = args[1];
  ClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  options.call_timeout = absl::Seconds(absl::GetFlag(FLAGS_timeout_s));
  options.stream_window_bytes = absl::GetFlag(FLAGS_grpc_stream_window_bytes);
  const std::string lb = absl::GetFlag(FLAGS_lb);
  if (lb != "round_robin" && lb != "pick_first") {
    std::fprintf(stderr, "convserve-cli: --lb must be round_robin or pick_first, got '%s'\n",
                 lb.c_str());
    return 2;
  }
  options.round_robin = lb == "round_robin";
  options.tls.ca = absl::GetFlag(FLAGS_tls_ca);
  options.tls.cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key = absl::GetFlag(FLAGS_tls_key);
  options.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.token = absl::GetFlag(FLAGS_token);
  // Check the TLS files here: a Client with unusable ones fails every call less clearly.
  if (absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
          MakeChannelCredentials(options.tls);
      !credentials.ok()) {
    std::fprintf(stderr, "convserve-cli: TLS: %s\n", credentials.status().ToString().c_str());
    return 2;
  }
  Client client(options);

  Result result = Usage(absl::StrCat("unknown command '", command,
                                     "' (want load, list, unload, infer, health, tune or perf)"));
  if (command == "load") result = Load(client);
  if (command == "list") result = List(client);
  if (command == "unload") result = Unload(client);
  if (command == "infer") result = Infer(client);
  if (command == "health") result = Health(client);
  if (command == "tune") result = Tune(client);
  if (command == "perf") result = Perf(client);
  if (result.exit_code != 0) {
    std::fprintf(stderr, "convserve-cli %s: error: %s\n", command.c_str(), result.message.c_str());
  }
  return result.exit_code;
}

}  // namespace
}  // namespace convserve

int main(int argc, char** argv) {
  convserve::TurnOffMutexDeadlockDetection();
  return convserve::Main(argc, argv);
}
