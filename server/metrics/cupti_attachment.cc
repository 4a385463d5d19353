#include "server/metrics/cupti_attachment.h"

#include <cuda_runtime_api.h>
#include <cupti_activity.h>
#include <cupti_callbacks.h>
#include <cupti_profiler_target.h>
#include <cupti_runtime_cbid.h>

#include <string>
#include <thread>

#include "absl/base/const_init.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace convserve {

absl::Status CuptiStatus(CUptiResult result, const char* call) {
  if (result == CUPTI_SUCCESS) return absl::OkStatus();
  const char* text = nullptr;
  if (cuptiGetResultString(result, &text) != CUPTI_SUCCESS || text == nullptr) text = "?";
  const std::string what = absl::StrCat(call, ": ", text);
  switch (result) {
    case CUPTI_ERROR_INSUFFICIENT_PRIVILEGES:
      return absl::PermissionDeniedError(absl::StrCat(
          what,
          " (GPU performance counters need admin rights: run as root or with "
          "CAP_SYS_ADMIN, or load nvidia with NVreg_RestrictProfilingToAdminUsers=0)"));
    case CUPTI_ERROR_HARDWARE_BUSY:
    case CUPTI_ERROR_MULTIPLE_SUBSCRIBERS_NOT_SUPPORTED:
      return absl::UnavailableError(absl::StrCat(
          what, " (the counters are held by another profiler: ncu, nsys, DCGM profiling)"));
    case CUPTI_ERROR_NOT_SUPPORTED:
    case CUPTI_ERROR_NOT_COMPATIBLE:
      return absl::FailedPreconditionError(absl::StrCat(what, " (device not supported)"));
    default:
      return absl::InternalError(what);
  }
}

namespace {

// Which thread is to call cuptiFinalize, and what it returned. Static, because another thread's
// API exit may still be in the callback while a detach returns.
struct FinalizeRequest {
  std::thread::id thread;
  bool called = false;
  CUptiResult result = CUPTI_ERROR_UNKNOWN;
};

void CUPTIAPI FinalizeAtApiExit(void* userdata, CUpti_CallbackDomain domain,
                                CUpti_CallbackId /*cbid*/, const void* data) {
  auto* request = static_cast<FinalizeRequest*>(userdata);
  const auto* info = static_cast<const CUpti_CallbackData*>(data);
  if (domain != CUPTI_CB_DOMAIN_RUNTIME_API || info->callbackSite != CUPTI_API_EXIT) return;
  if (std::this_thread::get_id() != request->thread || request->called) return;
  request->called = true;
  request->result = cuptiFinalize();
}

void CUPTIAPI IgnoreCallback(void*, CUpti_CallbackDomain, CUpti_CallbackId, const void*) {}

ABSL_CONST_INIT absl::Mutex attachment_mu(absl::kConstInit);
int holders ABSL_GUARDED_BY(attachment_mu) = 0;
bool finalized ABSL_GUARDED_BY(attachment_mu) = false;    // since the last attach
bool detach_works ABSL_GUARDED_BY(attachment_mu) = true;  // false after a failed detach

}  // namespace

absl::Status CuptiAttachment::Finalize() {
  static FinalizeRequest request;
  request = FinalizeRequest{std::this_thread::get_id()};
  CUpti_SubscriberHandle subscriber = nullptr;
  if (absl::Status s =
          CuptiStatus(cuptiSubscribe(&subscriber, FinalizeAtApiExit, &request), "cuptiSubscribe");
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          CuptiStatus(cuptiEnableCallback(1, subscriber, CUPTI_CB_DOMAIN_RUNTIME_API,
                                          CUPTI_RUNTIME_TRACE_CBID_cudaGetDevice_v3020),
                      "cuptiEnableCallback");
      !s.ok()) {
    cuptiUnsubscribe(subscriber);
    return s;
  }
  int device = 0;
  cudaGetDevice(&device);
  if (!request.called) {
    cuptiUnsubscribe(subscriber);
    return absl::InternalError("cuptiFinalize: the API exit callback did not run");
  }
  // The subscription went with CUPTI.
  return CuptiStatus(request.result, "cuptiFinalize");
}

absl::Status CuptiAttachment::Reinitialize() {
  CUpti_SubscriberHandle subscriber = nullptr;
  if (absl::Status s =
          CuptiStatus(cuptiSubscribe(&subscriber, IgnoreCallback, nullptr), "cuptiSubscribe");
      !s.ok()) {
    return s;
  }
  return CuptiStatus(cuptiUnsubscribe(subscriber), "cuptiUnsubscribe");
}

absl::Status CuptiAttachment::Acquire() {
  absl::MutexLock lock(&attachment_mu);
  if (holders == 0) {
    if (finalized) {
      if (absl::Status s = Reinitialize(); !s.ok()) return s;
      finalized = false;
    }
    CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_Initialize_Params, params);
    if (absl::Status s = CuptiStatus(cuptiProfilerInitialize(&params), "cuptiProfilerInitialize");
        !s.ok()) {
      return s;
    }
  }
  ++holders;
  return absl::OkStatus();
}

absl::Status CuptiAttachment::Release() {
  absl::MutexLock lock(&attachment_mu);
  if (--holders > 0) return absl::OkStatus();
  CONVSERVE_CUPTI_PARAMS(CUpti_Profiler_DeInitialize_Params, params);
  if (absl::Status s = CuptiStatus(cuptiProfilerDeInitialize(&params), "cuptiProfilerDeInitialize");
      !s.ok()) {
    return s;
  }
  if (!detach_works) return absl::OkStatus();
  absl::Status detached = Finalize();
  if (detached.ok()) {
    finalized = true;
  } else {
    detach_works = false;
  }
  return detached;
}

}  // namespace convserve
