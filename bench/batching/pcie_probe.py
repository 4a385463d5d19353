#!/usr/bin/env python3
"""Host<->device copy rates of the lent GPU's host link, for the batching figures.

The demo layer's request moves 401 KB in and 401 KB out; a batch of 23 moves 9.2 MB each way.
This times those copies (CUDA events, median of --reps after warm-up) from three kinds of host
memory: torch's pinned allocator (cudaHostAlloc, like the server's staging buffers), anonymous
pages registered with cudaHostRegister (like a client's shared-memory region, page-locked by
the server), and pageable memory; one way at a time, both ways at once on two streams (two
lanes: one batch's input beside another's output), and one copy per request (the server's
page-locked path). Needs PyTorch with CUDA; prints a table and, with --json, writes it.
"""
import argparse
import json
import mmap
import statistics

import torch

REQUEST_BYTES = 64 * 56 * 56 * 2  # the demo layer's input (and output): 401,408 bytes


def timed(fn, reps, streams):
    """Median microseconds of fn(), which issues work on `streams` (the first one times it)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record(streams[0])
        for s in streams[1:]:
            s.wait_event(start)
        fn()
        for s in streams[1:]:
            done = torch.cuda.Event()
            done.record(s)
            streams[0].wait_event(done)
        end.record(streams[0])
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def host_buffers(kind, nbytes):
    """Two host tensors (source and destination) of one kind, and what keeps them alive."""
    if kind == "pinned":
        return [torch.empty(nbytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)], []
    if kind == "pageable":
        return [torch.empty(nbytes, dtype=torch.uint8) for _ in range(2)], []
    keep, out = [], []
    cudart = torch.cuda.cudart()
    for _ in range(2):
        region = mmap.mmap(-1, nbytes)
        tensor = torch.frombuffer(region, dtype=torch.uint8)
        err = cudart.cudaHostRegister(tensor.data_ptr(), nbytes, 1)  # cudaHostRegisterPortable
        if int(err) != 0:
            raise RuntimeError(f"cudaHostRegister failed: {err}")
        keep.append(region)
        out.append(tensor)
    return out, keep


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
    rows = []
    print(f"{torch.cuda.get_device_name()}  request bytes {REQUEST_BYTES}")
    print(f"{'host':<10} {'requests':>8} {'MB':>6} {'h2d_us':>8} {'h2d_GB/s':>8} "
          f"{'d2h_us':>8} {'d2h_GB/s':>8} {'both_us':>8} {'both_GB/s':>9} {'h2d_per_req_us':>14}")
    for kind in ("pinned", "registered", "pageable"):
        for requests in (1, 23):
            nbytes = REQUEST_BYTES * requests
            (host_in, host_out), keep = host_buffers(kind, nbytes)
            dev_in = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
            dev_out = torch.empty(nbytes, dtype=torch.uint8, device="cuda")

            def h2d():
                with torch.cuda.stream(s1):
                    dev_in.copy_(host_in, non_blocking=True)

            def d2h():
                with torch.cuda.stream(s1):
                    host_out.copy_(dev_out, non_blocking=True)

            def both():
                with torch.cuda.stream(s1):
                    dev_in.copy_(host_in, non_blocking=True)
                with torch.cuda.stream(s2):
                    host_out.copy_(dev_out, non_blocking=True)

            def h2d_per_request():
                with torch.cuda.stream(s1):
                    for i in range(requests):
                        lo, hi = i * REQUEST_BYTES, (i + 1) * REQUEST_BYTES
                        dev_in[lo:hi].copy_(host_in[lo:hi], non_blocking=True)

            row = dict(host=kind, requests=requests, bytes=nbytes,
                       h2d_us=timed(h2d, args.reps, [s1]), d2h_us=timed(d2h, args.reps, [s1]),
                       both_us=timed(both, args.reps, [s1, s2]),
                       h2d_per_request_us=timed(h2d_per_request, args.reps, [s1]))
            rows.append(row)
            kb = nbytes / 1e3  # bytes per us / 1e3 = GB/s
            print(f"{kind:<10} {requests:>8} {nbytes / 1e6:>6.2f} {row['h2d_us']:>8.1f} "
                  f"{kb / row['h2d_us']:>8.1f} {row['d2h_us']:>8.1f} {kb / row['d2h_us']:>8.1f} "
                  f"{row['both_us']:>8.1f} {2 * kb / row['both_us']:>9.1f} "
                  f"{row['h2d_per_request_us']:>14.1f}")
            del keep
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
