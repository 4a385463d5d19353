// The real server on the GPU executor (skipped without a GPU): every dtype and layout against
// the fp64 reference by relative L2 error, concurrent requests merged into launches, and the
// reply naming the CUDA device and the kernel configuration that ran.
#include <grpcpp/grpcpp.h>

#include <cmath>
#include <future>
#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu_reference.h"
#include "kernels/host_numeric.h"
#include "server/layer_spec.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

using ::convserve::testing::ForwardFor;
using ::convserve::testing::LoadRequestFor;
using ::convserve::testing::RunningServer;
using ::convserve::testing::SmallSpec;
using ::convserve::testing::StartServer;
using ::convserve::testing::TestServerOptions;

// Relative L2 error of `output` (the server's bytes) against the fp64 reference.
double RelativeError(const v1::LoadLayerRequest& load, const v1::ForwardRequest& request,
                     const std::string& output) {
  const ConvParams params = *ParamsFromSpec(load.spec());
  ConvProblem problem;
  problem.params = params;
  problem.batch = request.input().shape(0);
  problem.height = request.input().shape(2);
  problem.width = request.input().shape(3);
  problem.input_layout = *LayoutFromProto(request.input().layout(), "layout");
  problem.output_layout = problem.input_layout;
  const std::vector<double> expected =
      ReferenceConv2dDouble(problem, request.input().data().data(), load.weights().data(),
                            params.has_bias ? load.bias().data() : nullptr, 1);
  double diff = 0;
  double norm = 0;
  const int64_t k = params.out_channels;
  const int64_t p = problem.out_height();
  const int64_t q = problem.out_width();
  for (int64_t n = 0; n < problem.batch; ++n) {
    for (int64_t c = 0; c < k; ++c) {
      for (int64_t h = 0; h < p; ++h) {
        for (int64_t w = 0; w < q; ++w) {
          const double want = expected[((n * k + c) * p + h) * q + w];
          const double got = LoadAsDouble(params.dtype, output.data(),
                                          TensorOffset(problem.output_layout, k, p, q, n, c, h, w));
          diff += (got - want) * (got - want);
          norm += want * want;
        }
      }
    }
  }
  return std::sqrt(diff / std::max(norm, 1e-30));
}

TEST(GpuServerTest, ServesEveryDtypeWithinToleranceAndBatches) {
  ServerOptions options = TestServerOptions();
  options.device = "cuda:0";
  absl::StatusOr<std::unique_ptr<ConvServer>> probe = ConvServer::Create(options, nullptr);
  if (!probe.ok()) GTEST_SKIP() << "no usable GPU: " << probe.status();
  probe->reset();
  RunningServer s = StartServer(options);

  const struct {
    v1::DataType dtype;
    double tolerance;
  } cases[] = {{v1::DATA_TYPE_FP32, 1e-3}, {v1::DATA_TYPE_FP16, 2e-3}, {v1::DATA_TYPE_BF16, 1e-2}};
  for (const auto& c : cases) {
    v1::LayerSpec spec = SmallSpec("gpu", 64, c.dtype);
    spec.mutable_batching()->set_max_batch_size(8);
    spec.mutable_batching()->set_max_queue_delay_us(10'000'000);
    const v1::LoadLayerRequest load = LoadRequestFor(spec, 17);
    {
      grpc::ClientContext context;
      v1::LoadLayerResponse response;
      grpc::Status status = s.stub->LoadLayer(&context, load, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_THAT(response.layer().device(), ::testing::HasSubstr("cuda:0"));
    }
    for (v1::Layout layout : {v1::LAYOUT_NCHW, v1::LAYOUT_NHWC}) {
      // Eight requests fill one batch of eight: they launch together, at once.
      std::vector<v1::ForwardRequest> requests;
      for (int i = 0; i < 8; ++i)
        requests.push_back(ForwardFor("gpu", spec, 1, 28, 28, 300 + i, layout));
      struct Call {
        grpc::ClientContext context;
        v1::ForwardResponse response;
        grpc::Status status;
        std::promise<void> done;
      };
      std::vector<std::unique_ptr<Call>> calls;
      for (const auto& request : requests) {
        auto call = std::make_unique<Call>();
        Call* raw = call.get();
        s.stub->async()->Forward(&raw->context, &request, &raw->response,
                                 [raw](grpc::Status status) {
                                   raw->status = std::move(status);
                                   raw->done.set_value();
                                 });
        calls.push_back(std::move(call));
      }
      for (size_t i = 0; i < calls.size(); ++i) {
        calls[i]->done.get_future().wait();
        ASSERT_TRUE(calls[i]->status.ok()) << calls[i]->status.error_message();
        const v1::ForwardResponse& response = calls[i]->response;
        EXPECT_EQ(response.batch_size(), 8);
        EXPECT_FALSE(response.kernel_config().empty());
        EXPECT_THAT(response.device(), ::testing::HasSubstr("cuda:0"));
        EXPECT_LT(RelativeError(load, requests[i], response.output().data()), c.tolerance)
            << v1::DataType_Name(c.dtype) << " " << v1::Layout_Name(layout) << " request " << i;
      }
    }
  }
}

// Lone requests (batches of one) replay each lane's captured graphs: two spatial sizes in turn,
// fresh inputs every time, then the layer replaced with other weights under the same name, so a
// graph that kept an old input, output or weight would answer wrongly. Both issue paths.
class GpuGraphTest : public ::testing::TestWithParam<bool> {};

TEST_P(GpuGraphTest, RepeatedShapesAndAReplacedLayerStayCorrect) {
  ServerOptions options = TestServerOptions();
  options.device = "cuda:0";
  options.cuda_graphs = GetParam();
  absl::StatusOr<std::unique_ptr<ConvServer>> probe = ConvServer::Create(options, nullptr);
  if (!probe.ok()) GTEST_SKIP() << "no usable GPU: " << probe.status();
  probe->reset();
  RunningServer s = StartServer(options);

  v1::LayerSpec spec = SmallSpec("graphs", 64, v1::DATA_TYPE_FP16);
  spec.mutable_batching()->set_max_batch_size(1);
  uint32_t seed = 1000;
  for (int weights_seed : {17, 18}) {
    const v1::LoadLayerRequest load = LoadRequestFor(spec, weights_seed);
    {
      grpc::ClientContext context;
      v1::LoadLayerResponse response;
      grpc::Status status = s.stub->LoadLayer(&context, load, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
    }
    for (int round = 0; round < 4; ++round) {
      for (int size : {28, 20}) {
        const v1::ForwardRequest request =
            ForwardFor("graphs", spec, 1, size, size, seed++, v1::LAYOUT_NHWC);
        grpc::ClientContext context;
        v1::ForwardResponse response;
        grpc::Status status = s.stub->Forward(&context, request, &response);
        ASSERT_TRUE(status.ok()) << status.error_message();
        EXPECT_EQ(response.batch_size(), 1);
        EXPECT_GT(response.timing().compute_us(), 0);
        EXPECT_LT(RelativeError(load, request, response.output().data()), 2e-3)
            << "weights " << weights_seed << " round " << round << " size " << size;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(IssuePaths, GpuGraphTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Graphs" : "CallByCall";
                         });

}  // namespace
}  // namespace convserve
