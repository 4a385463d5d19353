// The model repository format: good layers load (weights and bias from .npy), bad ones are
// skipped with their directory named, and a missing repository is an error.
#include "server/model_repository.h"

#include <filesystem>
#include <fstream>
#include <memory>

#include "common/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/cpu_executor.h"
#include "server/serving_core_impl.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

namespace fs = std::filesystem;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::SmallSpec;
using ::testing::HasSubstr;

class ModelRepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("convserve_repo_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Writes `load` as a layer directory; the config leaves the name to the directory.
  void WriteLayer(const std::string& dir, const v1::LoadLayerRequest& load,
                  const std::string& config) {
    const fs::path path = root_ / dir;
    fs::create_directories(path);
    std::ofstream(path / "config.pbtxt") << config;
    const v1::LayerSpec& spec = load.spec();
    NpyArray weights;
    weights.dtype = DataType::kFloat32;
    weights.shape = {spec.out_channels(), spec.in_channels(), spec.kernel().h(), spec.kernel().w()};
    weights.data = load.weights();
    ASSERT_TRUE(WriteNpyFile((path / "weights.npy").string(), weights).ok());
    if (spec.has_bias()) {
      NpyArray bias;
      bias.dtype = DataType::kFloat32;
      bias.shape = {spec.out_channels()};
      bias.data = load.bias();
      ASSERT_TRUE(WriteNpyFile((path / "bias.npy").string(), bias).ok());
    }
  }

  fs::path root_;
};

constexpr char kConfig[] = R"pb(
  in_channels: 8
  out_channels: 8
  kernel { h: 3 w: 3 }
  padding { h: 1 w: 1 }
  dtype: DATA_TYPE_FP32
  has_bias: true
  activation: ACTIVATION_RELU
  batching { max_batch_size: 8 }
)pb";

TEST_F(ModelRepositoryTest, LoadsGoodLayersAndNamesTheBadOnes) {
  const v1::LoadLayerRequest load = LoadRequestFor(SmallSpec("ignored", 8), 9);
  WriteLayer("good", load, kConfig);
  WriteLayer("bad_config", load, "in_channels: oops");
  std::string wrong_channels = kConfig;
  wrong_channels.replace(wrong_channels.find("in_channels: 8"), 14, "in_channels: 4");
  WriteLayer("wrong_shape", load, wrong_channels);
  WriteLayer("missing_bias", load, kConfig);
  fs::remove(root_ / "missing_bias" / "bias.npy");

  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<CpuExecutor>(0, 1, nullptr));
  ServingCoreImpl core(testing::TestServerOptions(), std::move(executors), nullptr);
  absl::StatusOr<RepositoryLoad> loaded = LoadModelRepository(root_.string(), core);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_THAT(loaded->loaded, ::testing::ElementsAre("good"));
  ASSERT_EQ(loaded->failed.size(), 3u);
  EXPECT_THAT(loaded->failed[0], HasSubstr("bad_config"));
  EXPECT_THAT(loaded->failed[1], HasSubstr("missing_bias"));
  EXPECT_THAT(loaded->failed[1], HasSubstr("bias.npy is missing"));
  EXPECT_THAT(loaded->failed[2],
              HasSubstr("weights.npy has shape [8, 8, 3, 3], expected [8, 4, 3, 3]"));

  std::optional<LayerSnapshot> good = core.FindLayer("good");
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ(good->info.spec().batching().max_batch_size(), 8);
  EXPECT_TRUE(good->params.has_bias);
}

TEST_F(ModelRepositoryTest, MissingRepositoryIsNotFound) {
  std::vector<std::unique_ptr<Executor>> executors;
  executors.push_back(std::make_unique<CpuExecutor>(0, 1, nullptr));
  ServingCoreImpl core(testing::TestServerOptions(), std::move(executors), nullptr);
  absl::StatusOr<RepositoryLoad> loaded =
      LoadModelRepository((root_ / "does_not_exist").string(), core);
  EXPECT_TRUE(absl::IsNotFound(loaded.status())) << loaded.status();
}

}  // namespace
}  // namespace convserve
