// The HTTP/2 flow-control channel arguments convserve's server, echo server and clients share.
// gRPC's default stream window is 64 KiB, grown by BDP probing; a 400 KB tensor then waits for
// several WINDOW_UPDATE round trips per message, each a thread wake-up on both sides. A fixed
// window of at least one message lets a whole request or reply go out in one burst. Each side
// announces the window it is willing to receive, so the server sets it for requests and the
// client for replies. Header-only: the server, the client and the benchmarks include it.
#pragma once

#include <grpc/grpc.h>

#include <string>
#include <utility>
#include <vector>

namespace convserve {

// The channel arguments for a fixed HTTP/2 stream receive window of `stream_window_bytes`
// (BDP probing off: it would overwrite the window on every probe). Empty when the value is
// <= 0: gRPC's defaults.
inline std::vector<std::pair<std::string, int>> Http2WindowChannelArgs(int stream_window_bytes) {
  if (stream_window_bytes <= 0) return {};
  return {{GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, stream_window_bytes},
          {GRPC_ARG_HTTP2_BDP_PROBE, 0}};
}

}  // namespace convserve
