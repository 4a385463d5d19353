// A throw-away public key infrastructure for the TLS tests, made with the openssl command at
// test time: a CA with a server certificate (localhost, 127.0.0.1) and a client certificate,
// and a second, unrelated CA with its own client certificate.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace convserve::testing {

struct TestPki {
  std::string dir;  // holds every file below; the caller removes it
  std::string ca;
  std::string server_cert;
  std::string server_key;
  std::string client_cert;
  std::string client_key;
  std::string other_ca;
  std::string other_client_cert;
  std::string other_client_key;
};

// FAILED_PRECONDITION with openssl's output when a step fails (e.g. no openssl installed).
absl::StatusOr<TestPki> MakeTestPki();

}  // namespace convserve::testing
