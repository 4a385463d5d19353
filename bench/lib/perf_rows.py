"""Table rows of `convserve-cli perf` JSON results, shared by the serving benchmarks' summaries
(bench/batching/run_h100.sh, bench/multi_gpu/run.sh), which import it from bench/lib."""


def perf_row(label, result, label_width, server_compute=False):
    """One level of a sweep: label, concurrency, connections, req/s, p50 and p99 latency (us),
    optionally the server-reported compute p50 (us), mean batch size, errors (not sent
    included)."""
    cells = [f"{label:<{label_width}}", f"{result['load']:>5g}", f"{result['connections']:>5}",
             f"{result['throughput_rps']:>9.0f}", f"{result['latency_us']['p50']:>9.0f}",
             f"{result['latency_us']['p99']:>9.0f}"]
    if server_compute:
        cells.append(f"{result['server_us']['compute_p50']:>16.0f}")
    cells += [f"{result['mean_batch_size']:>6.2f}",
              f"{result['errors'] + result['not_sent']:>7}"]
    return " ".join(cells)
