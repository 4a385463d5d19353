// Bearer-token access control on the real server (in process, loopback port): management calls
// need the admin token, inference the inference token (or the admin one) when configured; a
// refusal is UNAUTHENTICATED with nothing about the tokens in it, counted in the metrics.
#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "gtest/gtest.h"
#include "kserve/grpc_predict_v2.grpc.pb.h"
#include "server/kserve/kserve_service.h"
#include "server/metrics/metrics.h"
#include "server/server.h"
#include "tests/server/test_util.h"

namespace convserve {
namespace {

constexpr char kAdminToken[] = "admin-secret-4f9c2e";
constexpr char kInferenceToken[] = "inference-secret-77d1";
constexpr char kRefusal[] = "missing or invalid bearer token";

class AuthTest : public ::testing::Test {
 protected:
  void Start(const std::string& admin_token, const std::string& inference_token) {
    absl::StatusOr<std::unique_ptr<Metrics>> metrics = Metrics::Create("");
    ASSERT_TRUE(metrics.ok()) << metrics.status();
    metrics_ = *std::move(metrics);
    ServerOptions options = testing::TestServerOptions();
    options.security.admin_token = admin_token;
    options.security.inference_token = inference_token;
    absl::StatusOr<std::unique_ptr<ConvServer>> server =
        ConvServer::Create(options, metrics_.get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    kserve_ = std::make_unique<KserveService>(server_->core(), "convserve",
                                              KserveService::BuildVersion(), server_->access());
    ASSERT_TRUE(server_->Start({kserve_.get()}).ok());
  }

  // The native API with `token` as the bearer token (none when empty).
  class Caller {
   public:
    Caller(std::shared_ptr<grpc::Channel> channel, std::string token)
        : stub_(v1::Conv2d::NewStub(std::move(channel))), token_(std::move(token)) {}
    absl::Status LoadLayer(const v1::LoadLayerRequest& request) {
      v1::LoadLayerResponse response;
      return FromGrpcStatus(stub_->LoadLayer(Context().get(), request, &response));
    }
    absl::Status UnloadLayer(const std::string& name) {
      v1::UnloadLayerRequest request;
      request.set_name(name);
      v1::UnloadLayerResponse response;
      return FromGrpcStatus(stub_->UnloadLayer(Context().get(), request, &response));
    }
    absl::Status Tune(const v1::TuneRequest& request) {
      v1::TuneResponse response;
      return FromGrpcStatus(stub_->Tune(Context().get(), request, &response));
    }
    absl::Status Forward(const v1::ForwardRequest& request) {
      v1::ForwardResponse response;
      return FromGrpcStatus(stub_->Forward(Context().get(), request, &response));
    }
    absl::Status ListLayers() {
      v1::ListLayersRequest request;
      v1::ListLayersResponse response;
      return FromGrpcStatus(stub_->ListLayers(Context().get(), request, &response));
    }

   private:
    std::unique_ptr<grpc::ClientContext> Context() const {
      auto context = std::make_unique<grpc::ClientContext>();
      context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
      if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
      return context;
    }
    std::unique_ptr<v1::Conv2d::Stub> stub_;
    std::string token_;
  };

  std::unique_ptr<Caller> ClientWith(const std::string& token) {
    return std::make_unique<Caller>(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                                        grpc::InsecureChannelCredentials()),
                                    token);
  }

  // convserve_rejected_requests_total{reason="unauthenticated"}, summed over layers.
  double UnauthenticatedCount() const {
    double total = 0;
    for (absl::string_view line : absl::StrSplit(metrics_->Scrape(), '\n')) {
      if (!absl::StartsWith(line, "convserve_rejected_requests_total{") ||
          line.find("reason=\"unauthenticated\"") == absl::string_view::npos) {
        continue;
      }
      double value = 0;
      EXPECT_TRUE(absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) << line;
      total += value;
    }
    return total;
  }

  static void ExpectRefused(const absl::Status& status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnauthenticated) << status;
    EXPECT_EQ(status.message(), kRefusal);
  }

  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<ConvServer> server_;
  std::unique_ptr<KserveService> kserve_;
};

TEST_F(AuthTest, ManagementCallsNeedTheAdminToken) {
  Start(kAdminToken, kInferenceToken);
  const v1::LayerSpec spec = testing::SmallSpec("guarded", 4);
  const v1::LoadLayerRequest load = testing::LoadRequestFor(spec, 1);
  v1::TuneRequest tune;
  tune.set_layer("guarded");
  tune.add_batch_sizes(1);
  tune.mutable_input_size()->set_h(8);
  tune.mutable_input_size()->set_w(8);
  int refused = 0;
  for (const std::string& token : {std::string(), std::string("wrong"),
                                   std::string(kInferenceToken), std::string(kAdminToken) + "x"}) {
    std::unique_ptr<Caller> client = ClientWith(token);
    ExpectRefused(client->LoadLayer(load));
    ExpectRefused(client->UnloadLayer("guarded"));
    ExpectRefused(client->Tune(tune));
    refused += 3;
  }
  std::unique_ptr<Caller> admin = ClientWith(kAdminToken);
  ASSERT_TRUE(admin->LoadLayer(load).ok());
  // Past the gate: the CPU backend cannot tune, which is a different answer.
  EXPECT_NE(admin->Tune(tune).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(admin->UnloadLayer("guarded").ok());
  EXPECT_EQ(UnauthenticatedCount(), refused);
}

TEST_F(AuthTest, InferenceNeedsTheInferenceOrAdminToken) {
  Start(kAdminToken, kInferenceToken);
  const v1::LayerSpec spec = testing::SmallSpec("conv", 4);
  ASSERT_TRUE(ClientWith(kAdminToken)->LoadLayer(testing::LoadRequestFor(spec, 2)).ok());
  const v1::ForwardRequest forward = testing::ForwardFor("conv", spec, 1, 6, 6, 3);
  for (const std::string& token : {std::string(), std::string("wrong")}) {
    std::unique_ptr<Caller> client = ClientWith(token);
    ExpectRefused(client->Forward(forward));
    ExpectRefused(client->ListLayers());
  }
  for (const std::string& token : {std::string(kInferenceToken), std::string(kAdminToken)}) {
    std::unique_ptr<Caller> client = ClientWith(token);
    EXPECT_TRUE(client->Forward(forward).ok());
    EXPECT_TRUE(client->ListLayers().ok());
  }
  EXPECT_EQ(UnauthenticatedCount(), 4);
}

TEST_F(AuthTest, InferenceStaysOpenWithoutAnInferenceToken) {
  Start(kAdminToken, "");
  const v1::LayerSpec spec = testing::SmallSpec("open", 4);
  ExpectRefused(ClientWith("")->LoadLayer(testing::LoadRequestFor(spec, 4)));
  ASSERT_TRUE(ClientWith(kAdminToken)->LoadLayer(testing::LoadRequestFor(spec, 4)).ok());
  std::unique_ptr<Caller> anyone = ClientWith("");
  EXPECT_TRUE(anyone->Forward(testing::ForwardFor("open", spec, 2, 5, 5, 5)).ok());
  EXPECT_TRUE(anyone->ListLayers().ok());
}

TEST_F(AuthTest, KserveInferenceIsGuardedAndProbesStayOpen) {
  Start(kAdminToken, kInferenceToken);
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  auto context = [](const std::string& token) {
    auto c = std::make_unique<grpc::ClientContext>();
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
    return c;
  };
  inference::ServerLiveRequest live_request;
  inference::ServerLiveResponse live;
  EXPECT_TRUE(stub->ServerLive(context("").get(), live_request, &live).ok());

  inference::ModelInferRequest request;
  request.set_model_name("absent");
  inference::ModelInferResponse response;
  grpc::Status refused = stub->ModelInfer(context("").get(), request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(refused.error_message(), kRefusal);
  // With the token the request reaches the front-end, which finds the model missing.
  grpc::Status passed = stub->ModelInfer(context(kInferenceToken).get(), request, &response);
  EXPECT_NE(passed.error_code(), grpc::StatusCode::UNAUTHENTICATED) << passed.error_message();

  auto stream_context = context("wrong");
  auto stream = stub->ModelStreamInfer(stream_context.get());
  stream->WritesDone();
  inference::ModelStreamInferResponse streamed;
  EXPECT_FALSE(stream->Read(&streamed));
  grpc::Status stream_status = stream->Finish();
  EXPECT_EQ(stream_status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(UnauthenticatedCount(), 2);
}

}  // namespace
}  // namespace convserve
