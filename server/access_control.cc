#include "server/access_control.h"

#include <string_view>
#include <utility>

#include "server/unary_call_queues.h"

namespace convserve {
namespace {

constexpr std::string_view kBearer = "Bearer ";

// Compares without an early exit, so the time taken does not reveal how much of a guess was
// right (the length is not secret).
bool SameSecret(std::string_view given, std::string_view secret) {
  if (given.size() != secret.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < secret.size(); ++i) {
    diff |= static_cast<unsigned char>(given[i]) ^ static_cast<unsigned char>(secret[i]);
  }
  return diff == 0;
}

}  // namespace

AccessControl::AccessControl(AccessTokens tokens, Metrics* metrics)
    : tokens_(std::move(tokens)), metrics_(metrics) {}

bool AccessControl::open(AccessScope scope) const {
  return scope == AccessScope::kAdmin ? tokens_.admin.empty() : tokens_.inference.empty();
}

grpc::Status AccessControl::Check(const grpc::ServerContextBase& context, AccessScope scope) const {
  if (open(scope)) return grpc::Status::OK;
  bool granted = false;
  const auto& metadata = context.client_metadata();
  auto range = metadata.equal_range("authorization");
  for (auto it = range.first; it != range.second && !granted; ++it) {
    const std::string_view value(it->second.data(), it->second.size());
    if (value.size() <= kBearer.size() || value.substr(0, kBearer.size()) != kBearer) continue;
    const std::string_view token = value.substr(kBearer.size());
    granted = (!tokens_.admin.empty() && SameSecret(token, tokens_.admin)) ||
              (scope == AccessScope::kInference && SameSecret(token, tokens_.inference));
  }
  if (granted) return grpc::Status::OK;
  if (metrics_ != nullptr) metrics_->Rejected("", RejectReason::kUnauthenticated);
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or invalid bearer token");
}

bool Denied(const AccessControl* access, UnaryCall& call, AccessScope scope) {
  if (access == nullptr) return false;
  grpc::Status status = access->Check(call.context(), scope);
  if (status.ok()) return false;
  call.Finish(status);
  return true;
}

bool Denied(const AccessControl* access, grpc::CallbackServerContext* context, AccessScope scope,
            grpc::ServerUnaryReactor* reactor) {
  if (access == nullptr) return false;
  grpc::Status status = access->Check(*context, scope);
  if (status.ok()) return false;
  reactor->Finish(std::move(status));
  return true;
}

}  // namespace convserve
