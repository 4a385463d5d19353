#include "tests/security/test_pki.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace convserve::testing {
namespace {

// Runs openssl with `args` (none holds a quote), its output kept in <dir>/openssl.log.
absl::Status Openssl(const std::vector<std::string>& args, const std::string& dir) {
  const std::string log = dir + "/openssl.log";
  const std::string command =
      absl::StrCat("openssl '", absl::StrJoin(args, "' '"), "' >'", log, "' 2>&1");
  if (std::system(command.c_str()) == 0) return absl::OkStatus();
  std::ifstream in(log);
  std::stringstream output;
  output << in.rdbuf();
  return absl::FailedPreconditionError(absl::StrCat(command, " failed: ", output.str()));
}

// A P-256 key and a certificate for `subject` signed by `ca` (self-signed when `ca` is empty).
absl::Status MakeCertificate(const std::string& dir, const std::string& name,
                             const std::string& subject, const std::string& ca,
                             const std::string& extensions) {
  const std::string key = absl::StrCat(dir, "/", name, ".key");
  const std::string cert = absl::StrCat(dir, "/", name, ".pem");
  if (ca.empty()) {
    return Openssl(
        {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", cert, "-days", "2", "-subj", subject, "-addext",
         "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"},
        dir);
  }
  const std::string csr = absl::StrCat(dir, "/", name, ".csr");
  const std::string ext = absl::StrCat(dir, "/", name, ".ext");
  std::ofstream(ext) << extensions << "\n";
  if (absl::Status s = Openssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                "-nodes", "-keyout", key, "-out", csr, "-subj", subject},
                               dir);
      !s.ok()) {
    return s;
  }
  return Openssl({"x509", "-req", "-in", csr, "-CA", absl::StrCat(dir, "/", ca, ".pem"), "-CAkey",
                  absl::StrCat(dir, "/", ca, ".key"), "-CAcreateserial", "-out", cert, "-days", "2",
                  "-extfile", ext},
                 dir);
}

}  // namespace

absl::StatusOr<TestPki> MakeTestPki() {
  TestPki pki;
  char dir_template[] = "/tmp/convserve-pki-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp failed");
  pki.dir = dir_template;
  const std::string& d = pki.dir;
  const std::string server_ext =
      "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth";
  const std::string client_ext = "extendedKeyUsage=clientAuth";
  for (absl::Status s :
       {MakeCertificate(d, "ca", "/CN=convserve test CA", "", ""),
        MakeCertificate(d, "server", "/CN=localhost", "ca", server_ext),
        MakeCertificate(d, "client", "/CN=convserve test client", "ca", client_ext),
        MakeCertificate(d, "other_ca", "/CN=unrelated CA", "", ""),
        MakeCertificate(d, "other_client", "/CN=stranger", "other_ca", client_ext)}) {
    if (!s.ok()) return s;
  }
  auto path = [&d](const char* file) { return absl::StrCat(d, "/", file); };
  pki.ca = path("ca.pem");
  pki.server_cert = path("server.pem");
  pki.server_key = path("server.key");
  pki.client_cert = path("client.pem");
  pki.client_key = path("client.key");
  pki.other_ca = path("other_ca.pem");
  pki.other_client_cert = path("other_client.pem");
  pki.other_client_key = path("other_client.key");
  return pki;
}

}  // namespace convserve::testing
