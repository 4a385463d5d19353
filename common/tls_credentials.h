// gRPC transport credentials for convserve's server and clients, built in one place from PEM
// files: TLS, mutual TLS when the server names a client CA, plaintext when no file is given.
#pragma once

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace convserve {

struct ServerTlsFiles {
  std::string cert;       // PEM certificate chain; empty (with key empty): plaintext
  std::string key;        // PEM private key of `cert`
  std::string client_ca;  // PEM CA bundle; set: clients must present a certificate it signed
};

// Plaintext when cert and key are both empty; TLS otherwise (both required), requiring and
// verifying client certificates when client_ca is set. INVALID_ARGUMENT for a half-given pair
// or client_ca without TLS, NOT_FOUND naming a file that cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsFiles& files);

struct ClientTlsFiles {
  std::string ca;    // PEM CA bundle that signed the server; empty with the rest: plaintext
  std::string cert;  // PEM client certificate chain, for servers that require one
  std::string key;   // PEM private key of `cert`
  // Name to verify the server certificate against (and send as SNI) instead of the target's
  // host, e.g. when dialling an IP address. Applied by AddTlsChannelArguments.
  std::string server_name;
};

// True when any field asks for TLS.
bool WantsTls(const ClientTlsFiles& files);

// Plaintext when nothing is set; TLS otherwise (the system roots when ca is empty), presenting
// cert/key when given (both or neither). INVALID_ARGUMENT / NOT_FOUND as for the server.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsFiles& files);

// The channel arguments TLS needs besides the credentials (the server-name override).
void AddTlsChannelArguments(const ClientTlsFiles& files, grpc::ChannelArguments& args);

}  // namespace convserve
