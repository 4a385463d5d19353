// ParseDevices and CreateExecutors (server/device.h): what --device, --devices and --gpu_lanes
// ask for, and the errors that name the flag for every malformed, conflicting or impossible value.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/device.h"
#include "server/server_options.h"

namespace convserve {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseDevicesTest, DeviceAloneKeepsItsMeaning) {
  absl::StatusOr<DevicePlan> plan = ParseDevices("auto", "", 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->auto_select);
  EXPECT_TRUE(plan->ordinals.empty());

  plan = ParseDevices("cpu", "", 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->auto_select);
  EXPECT_TRUE(plan->cpu);
  EXPECT_THAT(plan->ordinals, ElementsAre(0));

  // Not range-checked here: creating the executor fails with the CUDA error instead.
  plan = ParseDevices("cuda:3", "", 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->cpu);
  EXPECT_THAT(plan->ordinals, ElementsAre(3));
}

TEST(ParseDevicesTest, MalformedDeviceIsInvalidArgument) {
  for (const char* device : {"gpu", "cuda:", "cuda:-1", "cuda:x", "cuda:1,2", ""}) {
    absl::StatusOr<DevicePlan> plan = ParseDevices(device, "", 2);
    ASSERT_FALSE(plan.ok()) << device;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << device;
    EXPECT_THAT(plan.status().message(), HasSubstr("--device=")) << device;
  }
}

TEST(ParseDevicesTest, AllIsEveryVisibleGpu) {
  absl::StatusOr<DevicePlan> plan = ParseDevices("auto", "all", 3);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->auto_select);
  EXPECT_FALSE(plan->cpu);
  EXPECT_THAT(plan->ordinals, ElementsAre(0, 1, 2));
}

TEST(ParseDevicesTest, AllWithoutAGpuIsFailedPrecondition) {
  absl::StatusOr<DevicePlan> plan = ParseDevices("auto", "all", 0);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("--devices=all: no CUDA GPU is visible"));
}

TEST(ParseDevicesTest, ListsKeepTheirOrderInBothSpellings) {
  absl::StatusOr<DevicePlan> plan = ParseDevices("auto", "2,0", 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->ordinals, ElementsAre(2, 0));
  plan = ParseDevices("auto", "cuda:0, cuda:2", 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->ordinals, ElementsAre(0, 2));
  plan = ParseDevices("auto", "1", 2);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->ordinals, ElementsAre(1));
}

TEST(ParseDevicesTest, CpuEntriesAreSeparateReferenceExecutors) {
  // No GPU needed: the count is not consulted for CPU executors.
  absl::StatusOr<DevicePlan> plan = ParseDevices("auto", "cpu,cpu,cpu", 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->cpu);
  EXPECT_THAT(plan->ordinals, ElementsAre(0, 1, 2));
}

struct BadList {
  const char* devices;
  int visible_gpus;
  const char* message;
};

TEST(ParseDevicesTest, BadListsNameTheFlagAndTheProblem) {
  const BadList cases[] = {
      {"0,0", 2, "--devices=0,0: GPU 0 is listed twice"},
      {"cuda:1,1", 2, "GPU 1 is listed twice"},
      {"-1", 2, "--devices=-1: GPU ordinal -1 is negative"},
      {"cuda:-2", 2, "GPU ordinal -2 is negative"},
      {"0,2", 2, "--devices=0,2: GPU 2 does not exist: 2 CUDA GPUs are visible (0..1)"},
      {"1", 1, "GPU 1 does not exist: 1 CUDA GPU is visible (0..0)"},
      {"0", 0, "GPU 0 does not exist: 0 CUDA GPUs are visible"},
      {"gpu0", 2, "'gpu0' is not a device: expected all, or a comma list of N, cuda:N or cpu"},
      {"0,,1", 2, "--devices=0,,1: has an empty entry"},
      {"all,0", 2, "'all' is not a device"},
      {"0,cpu", 2, "--devices=0,cpu: lists both GPUs and cpu"},
      {"cuda:0x", 2, "'cuda:0x' is not a device"},
      {"1.5", 2, "'1.5' is not a device"},
  };
  for (const BadList& c : cases) {
    absl::StatusOr<DevicePlan> plan = ParseDevices("auto", c.devices, c.visible_gpus);
    ASSERT_FALSE(plan.ok()) << c.devices;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << c.devices;
    EXPECT_THAT(plan.status().message(), HasSubstr(c.message)) << c.devices;
  }
}

TEST(ParseDevicesTest, DeviceOtherThanAutoWithDevicesIsAConflict) {
  for (const char* device : {"cpu", "cuda:0", "cuda:1"}) {
    absl::StatusOr<DevicePlan> plan = ParseDevices(device, "0,1", 2);
    ASSERT_FALSE(plan.ok()) << device;
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(plan.status().message(),
                HasSubstr(std::string("--device=") + device + " and --devices=0,1"));
  }
}

// Checked before any device is touched, whatever the devices: a CPU-only server rejects the
// value a GPU server would.
TEST(CreateExecutorsTest, GpuLanesOutOfRangeIsInvalidArgument) {
  for (int lanes : {0, -1, kMaxGpuLanes + 1}) {
    ServerOptions options;
    options.device = "cpu";
    options.gpu_lanes = lanes;
    absl::StatusOr<std::vector<std::unique_ptr<Executor>>> executors =
        CreateExecutors(options, nullptr);
    ASSERT_FALSE(executors.ok()) << lanes;
    EXPECT_EQ(executors.status().code(), absl::StatusCode::kInvalidArgument) << lanes;
    EXPECT_THAT(executors.status().message(), HasSubstr("--gpu_lanes=" + std::to_string(lanes)));
  }
  ServerOptions options;
  options.device = "cpu";
  options.gpu_lanes = kMaxGpuLanes;
  absl::StatusOr<std::vector<std::unique_ptr<Executor>>> executors =
      CreateExecutors(options, nullptr);
  ASSERT_TRUE(executors.ok()) << executors.status();
  EXPECT_EQ(executors->size(), 1u);
}

}  // namespace
}  // namespace convserve
