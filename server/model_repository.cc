#include "server/model_repository.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/npy.h"
#include "google/protobuf/text_format.h"
#include "server/layer_spec.h"
#include "server/log.h"

namespace convserve {

namespace fs = std::filesystem;
namespace {

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path.string()));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&out, i ? ", " : "", shape[i]);
  return out + "]";
}

// Reads `path` as an array of the layer's dtype and exactly `shape`.
absl::StatusOr<std::string> ReadTensor(const fs::path& path, DataType dtype,
                                       const std::vector<int64_t>& shape) {
  absl::StatusOr<NpyArray> array =
      ReadNpyFile(path.string(), /*bf16_from_uint16=*/dtype == DataType::kBFloat16);
  // ReadNpyFile's message already starts with the path.
  if (!array.ok()) return absl::InvalidArgumentError(array.status().message());
  if (array->dtype != dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), " holds ", DataTypeName(array->dtype),
                     " but the spec's dtype is ", DataTypeName(dtype)));
  }
  if (array->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), " has shape ",
                                                   ShapeString(array->shape), ", expected ",
                                                   ShapeString(shape)));
  }
  return std::move(array->data);
}

}  // namespace

absl::StatusOr<v1::LoadLayerRequest> ReadLayerDirectory(const std::string& dir) {
  const fs::path root(dir);
  absl::StatusOr<std::string> config = ReadFile(root / "config.pbtxt");
  if (!config.ok()) return config.status();
  v1::LoadLayerRequest request;
  v1::LayerSpec* spec = request.mutable_spec();
  if (!google::protobuf::TextFormat::ParseFromString(*config, spec)) {
    return absl::InvalidArgumentError(absl::StrCat((root / "config.pbtxt").string(),
                                                   " is not a text-format convserve.v1.LayerSpec"));
  }
  if (spec->name().empty()) spec->set_name(root.filename().string());
  absl::StatusOr<ConvParams> params = ParamsFromSpec(*spec);
  if (!params.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat((root / "config.pbtxt").string(), ": ", params.status().message()));
  }
  absl::StatusOr<std::string> weights =
      ReadTensor(root / "weights.npy", params->dtype,
                 {params->out_channels, params->in_channels / params->groups, params->kernel_h,
                  params->kernel_w});
  if (!weights.ok()) return weights.status();
  request.set_weights(*std::move(weights));
  const fs::path bias_path = root / "bias.npy";
  std::error_code ec;
  const bool has_bias_file = fs::exists(bias_path, ec);
  if (params->has_bias != has_bias_file) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": spec.has_bias is ", params->has_bias ? "true" : "false",
                     " but bias.npy is ", has_bias_file ? "present" : "missing"));
  }
  if (has_bias_file) {
    absl::StatusOr<std::string> bias = ReadTensor(bias_path, params->dtype, {params->out_channels});
    if (!bias.ok()) return bias.status();
    request.set_bias(*std::move(bias));
  }
  return request;
}

absl::StatusOr<RepositoryLoad> LoadModelRepository(const std::string& root, ServingCore& core) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("model repository ", root, " is not a directory"));
  }
  std::vector<fs::path> dirs;
  for (const fs::directory_entry& entry : fs::directory_iterator(root, ec)) {
    if (entry.is_directory()) dirs.push_back(entry.path());
  }
  if (ec) {
    return absl::NotFoundError(
        absl::StrCat("cannot read model repository ", root, ": ", ec.message()));
  }
  std::sort(dirs.begin(), dirs.end());
  RepositoryLoad result;
  for (const fs::path& dir : dirs) {
    absl::StatusOr<v1::LoadLayerRequest> request = ReadLayerDirectory(dir.string());
    absl::Status status = request.status();
    if (request.ok()) {
      absl::StatusOr<v1::LayerInfo> info = core.LoadLayer(*request);
      status = info.status();
    }
    if (status.ok()) {
      result.loaded.push_back(request->spec().name());
    } else {
      LogError("model repository: layer directory ", dir.string(),
               " not loaded: ", status.ToString());
      result.failed.push_back(absl::StrCat(dir.string(), ": ", status.message()));
    }
  }
  LogInfo("model repository ", root, ": ", result.loaded.size(), " layers loaded, ",
          result.failed.size(), " failed");
  return result;
}

}  // namespace convserve
