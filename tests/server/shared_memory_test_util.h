// Helpers for the tests of tensors in shared memory, on either front-end: server options that
// allow it, unique object names and keys, created objects, and native registration requests.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "client/shared_memory.h"
#include "convserve/v1/conv2d.pb.h"
#include "server/server_options.h"

namespace convserve::testing {

// TestServerOptions() with shared-memory tensors allowed.
ServerOptions SharedMemoryServerOptions();

// The name this process gives its object `tag`: `prefix`, the pid (which keeps parallel runs
// apart) and `tag`, joined by '-'.
std::string ShmName(const std::string& prefix, const std::string& tag);

// A fresh shm_open key ("/" and a ShmName of `prefix`), unique in this process.
std::string NewShmKey(const std::string& prefix);

// A created and mapped object of `size` bytes under a NewShmKey of `prefix`, removed when the
// buffer goes; null (and a test failure) on failure.
std::unique_ptr<SharedMemoryBuffer> NewShmBuffer(const std::string& prefix, int64_t size);

// A native RegisterSharedMemory request for `byte_size` bytes at `offset` of `key` as `name`.
convserve::v1::RegisterSharedMemoryRequest RegisterRequestFor(const std::string& name,
                                                              const std::string& key,
                                                              int64_t offset, int64_t byte_size);

}  // namespace convserve::testing
