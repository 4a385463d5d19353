// Fuzzes the layer-spec parser as the model repository loader runs it: config.pbtxt text ->
// convserve.v1.LayerSpec (protobuf text format) -> ConvParams (ParamsFromSpec) and batching
// knobs (BatchingFromSpec). Any text must end in a spec or a message; an accepted spec must
// describe a layer whose weights and warm-up problems the rest of the server can size safely.
#include <cstddef>
#include <cstdint>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/text_format.h"
#include "server/layer_spec.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // the text parser logs every syntax error
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace convserve;
  const std::string text(reinterpret_cast<const char*>(data), size);
  convserve::v1::LayerSpec spec;
  if (!google::protobuf::TextFormat::ParseFromString(text, &spec)) return 0;
  if (spec.name().empty()) spec.set_name("layer");  // as the loader does: the directory's name

  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  if (!params.ok()) {
    FUZZ_CHECK(params.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(params.status().message().find("spec.") != absl::string_view::npos);
    return 0;
  }
  FUZZ_CHECK(ValidateParams(*params).ok());
  FUZZ_CHECK(ValidateLayerName(spec.name(), "spec.name").ok());
  FUZZ_CHECK(params->weight_bytes() > 0);
  // Warm-up tunes these problems before the layer reports ready: they must be checkable.
  for (int batch : spec.warmup_batch_sizes()) {
    ConvProblem problem;
    problem.params = *params;
    problem.batch = batch;
    problem.height = spec.input_size().h();
    problem.width = spec.input_size().w();
    (void)ValidateProblem(problem);
  }

  BatchingDefaults defaults;
  absl::StatusOr<BatchingConfig> batching = BatchingFromSpec(spec, defaults);
  if (!batching.ok()) {
    FUZZ_CHECK(batching.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(batching->max_batch_size >= 1 && batching->max_batch_size <= 4096);
  FUZZ_CHECK(batching->max_queue_delay >= absl::ZeroDuration());
  int previous = 0;
  for (int preferred : batching->preferred_batch_sizes) {
    FUZZ_CHECK(preferred >= 1 && preferred <= batching->max_batch_size);
    FUZZ_CHECK(preferred >= previous);
    previous = preferred;
  }
  return 0;
}
