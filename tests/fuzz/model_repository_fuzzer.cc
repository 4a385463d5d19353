// Fuzzes the model-repository loader (server/model_repository.h) on a directory built from the
// input: a layer "fuzzed" whose config.pbtxt, weights.npy and (optional) bias.npy are pieces of
// the input, next to a known-good layer "good". Whatever the fuzzed layer holds, the loader
// must report it loaded or failed with a reason, and must still load "good".
//
// Input: config.pbtxt bytes, then optionally "\n%%weights%%\n" and weights.npy bytes, then
// optionally "\n%%bias%%\n" and bias.npy bytes.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/npy.h"
#include "google/protobuf/stubs/logging.h"
#include "server/model_repository.h"
#include "tests/fuzz/cpu_core.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

namespace fs = std::filesystem;

constexpr char kWeightsMark[] = "\n%%weights%%\n";
constexpr char kBiasMark[] = "\n%%bias%%\n";

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  FUZZ_CHECK(out.good());
}

// A 2 -> 2 channel 1x1 fp32 layer with bias.
void WriteGoodLayer(const fs::path& dir) {
  fs::create_directories(dir);
  WriteFile(dir / "config.pbtxt",
            "in_channels: 2 out_channels: 2 kernel { h: 1 w: 1 } dtype: DATA_TYPE_FP32 "
            "has_bias: true\n");
  convserve::NpyArray weights;
  weights.shape = {2, 2, 1, 1};
  weights.data.assign(4 * 4, '\0');
  WriteFile(dir / "weights.npy", convserve::SerializeNpy(weights));
  convserve::NpyArray bias;
  bias.shape = {2};
  bias.data.assign(2 * 4, '\0');
  WriteFile(dir / "bias.npy", convserve::SerializeNpy(bias));
}

fs::path RepositoryRoot() {
  const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return fs::path(base) / ("convserve-repository-fuzz-" + std::to_string(getpid()));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string config = input;
  std::string weights;
  std::string bias;
  bool has_weights = false;
  bool has_bias = false;
  if (size_t w = config.find(kWeightsMark); w != std::string::npos) {
    weights = config.substr(w + sizeof(kWeightsMark) - 1);
    config.resize(w);
    has_weights = true;
    if (size_t b = weights.find(kBiasMark); b != std::string::npos) {
      bias = weights.substr(b + sizeof(kBiasMark) - 1);
      weights.resize(b);
      has_bias = true;
    }
  }

  static const fs::path root = RepositoryRoot();
  fs::remove_all(root);
  WriteGoodLayer(root / "good");
  const fs::path fuzzed = root / "fuzzed";
  fs::create_directories(fuzzed);
  WriteFile(fuzzed / "config.pbtxt", config);
  if (has_weights) WriteFile(fuzzed / "weights.npy", weights);
  if (has_bias) WriteFile(fuzzed / "bias.npy", bias);

  convserve::ServingCoreImpl& core = convserve::fuzz::CpuCore();
  absl::StatusOr<convserve::RepositoryLoad> load =
      convserve::LoadModelRepository(root.string(), core);
  FUZZ_CHECK(load.ok());
  FUZZ_CHECK(load->loaded.size() + load->failed.size() == 2);
  for (const std::string& failure : load->failed) {
    FUZZ_CHECK(failure.find("fuzzed") != std::string::npos);  // says which layer, and why
    FUZZ_CHECK(failure.size() > (root / "fuzzed").string().size() + 2);
  }
  // "good" loads unless the fuzzed config took the name "good" first ("fuzzed" < "good" in
  // name order) and then "good" replaced it: either way a layer named "good" is loaded.
  FUZZ_CHECK(std::count(load->loaded.begin(), load->loaded.end(), "good") >= 1);
  FUZZ_CHECK(core.FindLayer("good").has_value());
  for (const std::string& name : load->loaded) {
    FUZZ_CHECK(core.FindLayer(name).has_value());
  }
  for (const std::string& name : load->loaded) (void)core.UnloadLayer(name);
  FUZZ_CHECK(core.ListLayers().empty());
  return 0;
}
