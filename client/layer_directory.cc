// Reading the model repository's layer directories.
#include "client/layer_directory.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/convert.h"
#include "common/npy.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;
// Collects the text-format parser's complaints so the error can quote them.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    errors_.push_back(absl::StrCat("line ", line + 1, ":", column + 1, ": ", message));
  }
  std::string Joined() const { return absl::StrJoin(errors_, "; "); }

 private:
  std::vector<std::string> errors_;
};

// Reads `path`'s .npy as an array of the layer's dtype and the given shape.
absl::StatusOr<std::string> ReadTensorFile(const fs::path& path, DataType dtype,
                                           const std::vector<int64_t>& shape) {
  absl::StatusOr<NpyArray> array =
      ReadNpyFile(path.string(), /*bf16_from_uint16=*/dtype == DataType::kBFloat16);
  if (!array.ok()) return array.status();
  if (array->dtype != dtype) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), " holds ",
                                                   DataTypeName(array->dtype),
                                                   " but config.pbtxt says ", DataTypeName(dtype)));
  }
  if (array->shape != shape) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " has shape [", absl::StrJoin(array->shape, ", "),
                     "] but config.pbtxt needs [", absl::StrJoin(shape, ", "), "]"));
  }
  return std::move(array->data);
}

}  // namespace

absl::StatusOr<v1::LoadLayerRequest> ReadRepositoryLayer(const std::string& dir) {
  const fs::path root(dir);
  const fs::path config_path = root / "config.pbtxt";
  std::ifstream config_file(config_path);
  if (!config_file) {
    return absl::NotFoundError(absl::StrCat("cannot open ", config_path.string()));
  }
  std::ostringstream text;
  text << config_file.rdbuf();

  v1::LoadLayerRequest request;
  ErrorCollector errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text.str(), request.mutable_spec())) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path.string(), ": not a text-format LayerSpec: ", errors.Joined()));
  }
  v1::LayerSpec& spec = *request.mutable_spec();
  if (spec.name().empty()) {
    spec.set_name(fs::path(dir).lexically_normal().filename().string());
    if (spec.name().empty()) spec.set_name(root.parent_path().filename().string());
  }
  absl::StatusOr<ConvParams> params = ParamsFromSpec(spec);
  if (!params.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path.string(), ": ", params.status().message()));
  }

  const fs::path weights_path = root / "weights.npy";
  absl::StatusOr<std::string> weights =
      ReadTensorFile(weights_path, params->dtype,
                     {params->out_channels, params->in_channels / params->groups, params->kernel_h,
                      params->kernel_w});
  if (!weights.ok()) return weights.status();
  request.set_weights(std::move(*weights));

  const fs::path bias_path = root / "bias.npy";
  std::error_code ec;
  const bool bias_present = fs::exists(bias_path, ec);
  if (bias_present != spec.has_bias()) {
    return absl::InvalidArgumentError(
        bias_present ? absl::StrCat(bias_path.string(), " exists but ", config_path.string(),
                                    " does not say has_bias: true")
                     : absl::StrCat(config_path.string(), " says has_bias: true but there is no ",
                                    bias_path.string()));
  }
  if (bias_present) {
    absl::StatusOr<std::string> bias =
        ReadTensorFile(bias_path, params->dtype, {params->out_channels});
    if (!bias.ok()) return bias.status();
    request.set_bias(std::move(*bias));
  }
  return request;
}

absl::StatusOr<std::vector<std::string>> ListRepositoryLayers(const std::string& repository) {
  std::error_code ec;
  if (!fs::is_directory(repository, ec)) {
    return absl::NotFoundError(
        absl::StrCat("model repository ", repository, " is not a directory"));
  }
  std::vector<std::string> dirs;
  for (const fs::directory_entry& entry : fs::directory_iterator(repository, ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "config.pbtxt")) {
      dirs.push_back(entry.path().string());
    }
  }
  if (ec) {
    return absl::NotFoundError(absl::StrCat("cannot list ", repository, ": ", ec.message()));
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

}  // namespace convserve
