// Fuzzes the server's request path (ServingCore::Submit: validation against the layer, admission,
// batching, execution, split) with a real serving core on the CPU backend and three loaded
// layers. Every request, however malformed, must be answered exactly once, either with an
// output of exactly the right shape and size or with a status code from the documented set and
// a message.
#include <fuzzer/FuzzedDataProvider.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "google/protobuf/text_format.h"
#include "tests/fuzz/cpu_core.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using namespace convserve;

void Load(ServingCore& core, const std::string& text_spec, int64_t weight_elements,
          int64_t bias_elements, int element_size) {
  v1::LoadLayerRequest request;
  v1::LayerSpec& spec = *request.mutable_spec();
  // Text format keeps the three layer definitions readable.
  FUZZ_CHECK(google::protobuf::TextFormat::ParseFromString(text_spec, &spec));
  request.set_weights(std::string(weight_elements * element_size, '\x01'));
  request.set_bias(std::string(bias_elements * element_size, '\x02'));
  FUZZ_CHECK(core.LoadLayer(request).ok());
}

const char* const kLayers[] = {"f32", "f16", "dw"};

int64_t Dimension(FuzzedDataProvider& in) {
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      return in.ConsumeIntegralInRange<int64_t>(-1, 4);
    case 1:
      return in.ConsumeIntegralInRange<int64_t>(1, 40);
    case 2:
      return int64_t{1} << in.ConsumeIntegralInRange<int>(0, 62);
    default:
      return in.ConsumeIntegral<int64_t>();
  }
}

struct Answer {
  absl::Notification done;
  std::atomic<int> calls{0};
  absl::StatusOr<InferenceResult> result;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ServingCoreImpl& core = fuzz::CpuCore();
  Load(core,
       "name: 'f32' in_channels: 3 out_channels: 4 kernel { h: 3 w: 3 } stride { h: 2 w: 2 } "
       "padding { h: 1 w: 1 } dtype: DATA_TYPE_FP32 has_bias: true activation: ACTIVATION_RELU",
       4 * 3 * 3 * 3, 4, 4);
  Load(core,
       "name: 'f16' in_channels: 4 out_channels: 4 kernel { h: 1 w: 1 } groups: 2 "
       "dtype: DATA_TYPE_FP16",
       4 * 2, 0, 2);
  Load(core,
       "name: 'dw' in_channels: 4 out_channels: 4 kernel { h: 3 w: 3 } dilation { h: 2 w: 2 } "
       "groups: 4 dtype: DATA_TYPE_BF16 activation: ACTIVATION_SILU",
       4 * 3 * 3, 0, 2);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  ServingCoreImpl& core = fuzz::CpuCore();
  InferenceRequest request;
  const int which = in.ConsumeIntegralInRange<int>(0, 4);
  request.layer = which < 3    ? kLayers[which]
                  : which == 3 ? "missing"
                               : in.ConsumeRandomLengthString(200);
  for (int64_t& d : request.shape) d = Dimension(in);
  request.dtype = static_cast<DataType>(in.ConsumeIntegralInRange<int>(0, 2));
  request.input_layout = static_cast<Layout>(in.ConsumeIntegralInRange<int>(0, 1));
  request.output_layout = static_cast<Layout>(in.ConsumeIntegralInRange<int>(0, 1));
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0:
      break;  // no deadline
    case 1:
      request.deadline = absl::Now() - absl::Milliseconds(1);
      break;
    default:
      request.deadline = absl::Now() + absl::Seconds(5);
  }
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0:
      break;
    case 1:
      request.is_cancelled = [] { return true; };
      break;
    default:
      request.is_cancelled = [] { return false; };
  }
  // Mostly exactly the bytes the shape needs (so requests get past validation), else whatever
  // is left of the input.
  int64_t expected = DataTypeSize(request.dtype);
  for (int64_t d : request.shape) {
    expected =
        d > 0 && d <= (int64_t{1} << 20) && expected <= (int64_t{1} << 20) ? expected * d : -1;
    if (expected < 0) break;
  }
  // Borrowed in up to four pieces, as the native front-end hands over gRPC's receive slices.
  const int cuts = in.ConsumeIntegralInRange<int>(0, 3);
  size_t cut_at[3] = {0, 0, 0};
  for (int i = 0; i < cuts; ++i) cut_at[i] = in.ConsumeIntegral<size_t>();
  auto bytes = std::make_shared<std::string>();
  if (in.ConsumeBool() && expected > 0 && expected <= (int64_t{1} << 20)) {
    bytes->assign(static_cast<size_t>(expected), '\x3c');
  } else {
    *bytes = in.ConsumeRemainingBytesAsString();
  }
  std::vector<absl::string_view> pieces;
  absl::string_view rest = *bytes;
  for (int i = 0; i < cuts; ++i) {
    const size_t length = rest.empty() ? 0 : cut_at[i] % (rest.size() + 1);
    pieces.push_back(rest.substr(0, length));
    rest.remove_prefix(length);
  }
  pieces.push_back(rest);
  request.input = TensorBytes(std::move(pieces), std::move(bytes));

  const std::string layer = request.layer;
  const int64_t n = request.shape[0], h = request.shape[2], w = request.shape[3];
  const DataType dtype = request.dtype;
  const Layout output_layout = request.output_layout;
  auto answer = std::make_shared<Answer>();
  request.done = [answer](absl::StatusOr<InferenceResult> result) {
    FUZZ_CHECK(answer->calls.fetch_add(1) == 0);
    answer->result = std::move(result);
    answer->done.Notify();
  };
  core.Submit(std::move(request));
  FUZZ_CHECK(answer->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  FUZZ_CHECK(answer->calls.load() == 1);

  const absl::StatusOr<InferenceResult>& result = answer->result;
  if (!result.ok()) {
    const absl::StatusCode code = result.status().code();
    FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
               code == absl::StatusCode::kResourceExhausted ||
               code == absl::StatusCode::kDeadlineExceeded || code == absl::StatusCode::kCancelled);
    FUZZ_CHECK(!result.status().message().empty());
    return 0;
  }
  std::optional<LayerSnapshot> snapshot = core.FindLayer(layer);
  FUZZ_CHECK(snapshot.has_value());
  ConvProblem problem;
  problem.params = snapshot->params;
  problem.batch = n;
  problem.height = h;
  problem.width = w;
  FUZZ_CHECK(result->dtype == dtype);
  FUZZ_CHECK(result->layout == output_layout);
  FUZZ_CHECK(result->shape[0] == n && result->shape[1] == problem.params.out_channels &&
             result->shape[2] == problem.out_height() && result->shape[3] == problem.out_width());
  FUZZ_CHECK(static_cast<int64_t>(result->output.size()) == problem.output_bytes());
  return 0;
}
