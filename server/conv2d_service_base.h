// The gRPC service class both Conv2d servers derive from (server/conv2d_service.h, and the echo
// floor in bench/echo): every method on the callback API but Forward, which is asynchronous and
// raw, served on completion queues (server/unary_call_queues.h). Built up from the synchronous
// base because a method marked callback first keeps its callback handler when marked raw.
#pragma once

#include "convserve/v1/conv2d.grpc.pb.h"

namespace convserve {

using Conv2dServiceBase = convserve::v1::Conv2d::WithCallbackMethod_LoadLayer<
    convserve::v1::Conv2d::WithCallbackMethod_UnloadLayer<
        convserve::v1::Conv2d::WithCallbackMethod_ListLayers<
            convserve::v1::Conv2d::WithRawMethod_Forward<
                convserve::v1::Conv2d::WithCallbackMethod_Tune<
                    convserve::v1::Conv2d::WithCallbackMethod_RegisterSharedMemory<
                        convserve::v1::Conv2d::WithCallbackMethod_UnregisterSharedMemory<
                            convserve::v1::Conv2d::WithCallbackMethod_SharedMemoryStatus<
                                convserve::v1::Conv2d::Service>>>>>>>>;

}  // namespace convserve
