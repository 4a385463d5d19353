// Bearer-token access control for the gRPC services: management calls (LoadLayer, UnloadLayer,
// Tune) need the admin token when one is configured, inference calls the inference token when
// one is configured. Every handler asks Check() first: the one place the rule lives.
#pragma once

#include <grpcpp/server_context.h>

#include <string>

#include "server/metrics/metrics.h"

namespace convserve {

class UnaryCall;  // server/unary_call_queues.h

enum class AccessScope { kInference, kAdmin };

struct AccessTokens {
  std::string admin;      // empty: management calls are open
  std::string inference;  // empty: inference calls are open
};

// Thread-safe (immutable after construction).
class AccessControl {
 public:
  // `metrics` may be null and must outlive this.
  AccessControl(AccessTokens tokens, Metrics* metrics);

  // OK when the call may proceed: the scope has no token, or the call carries
  // "authorization: Bearer <token>" with that scope's token (the admin token also grants
  // inference). Otherwise UNAUTHENTICATED with the same message whatever was wrong, counted as
  // Metrics::Rejected(<no layer>, kUnauthenticated): names sent by unauthenticated callers are
  // not trusted as label values.
  grpc::Status Check(const grpc::ServerContextBase& context, AccessScope scope) const;

  bool open(AccessScope scope) const;

 private:
  const AccessTokens tokens_;
  Metrics* const metrics_;
};

// Check() for a unary handler: true (after finishing `reactor` with UNAUTHENTICATED) when the
// call must stop here. A null `access` grants everything.
bool Denied(const AccessControl* access, grpc::CallbackServerContext* context, AccessScope scope,
            grpc::ServerUnaryReactor* reactor);
// The same for a call on the completion queues: finishes `call` when it must stop here.
bool Denied(const AccessControl* access, UnaryCall& call, AccessScope scope);

// The reactor a bidirectional-streaming handler returns for a call Check() refused: it finishes
// at once with `status` and deletes itself when gRPC is done with it.
template <typename Request, typename Response>
class DeniedStream final : public grpc::ServerBidiReactor<Request, Response> {
 public:
  explicit DeniedStream(grpc::Status status) { this->Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace convserve
