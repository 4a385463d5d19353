#!/usr/bin/env python3
"""Mean executor stage times per batch, per variant, from a run_h100.sh run's logs.tgz.

run_h100.sh scrapes the server's metrics after each variant (logs/metrics_after_<variant>.txt),
and serves each variant as a layer of that name. Servers since 2026-12-07 label the stages by
layer, so the last scrape holds every variant's own; for older ones the stage counters are
per device, summed over the run, and each variant's means come from the difference with the
scrape before it. Prints, per variant: batches, then the mean microseconds per batch
of each executor stage (staging, enqueue, wait, split, answer; see docs/operations.md) and of
the device's own time (compute: first copy to last; kernel: the conv kernel alone).

    bench/batching/stage_means.py bench/results/2026-12-07_cuda_ipc/run1/{cuda,pin,inband}

A run named LABEL=DIR prints as LABEL instead of the folder's name.
"""
import collections
import os
import re
import sys
import tarfile

VARIANTS = ["batched", "eager", "unbatched"]
STAGES = ["staging", "enqueue", "wait", "split", "answer"]


def parse(text):
    """(stage or kernel@layer/compute@layer, 'sum' or 'count') -> value, summed over labels."""
    totals = collections.defaultdict(float)
    for line in text.splitlines():
        match = re.match(r"(\w+)\{([^}]*)\} (\S+)", line)
        if not match:
            continue
        name, labels, value = match.groups()
        labels = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        kind = name.rsplit("_", 1)[1]
        if kind not in ("sum", "count"):
            continue
        if name.startswith("convserve_executor_stage_seconds_"):
            layer = labels.get("layer")
            if layer is not None:
                totals[(f"{labels['stage']}@{layer}", kind)] += float(value)
            totals[(labels["stage"], kind)] += float(value)
        for device_stage in ("kernel", "compute"):
            if name.startswith(f"convserve_batch_{device_stage}_seconds_"):
                totals[(f"{device_stage}@{labels.get('layer', '')}", kind)] += float(value)
    return totals


def scrapes(run_dir):
    """variant -> metrics text, from run_dir/logs.tgz (or an unpacked run_dir/logs/)."""
    out = {}
    archive = os.path.join(run_dir, "logs.tgz")
    if os.path.exists(archive):
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                base = os.path.basename(member.name)
                for variant in VARIANTS:
                    if base == f"metrics_after_{variant}.txt":
                        out[variant] = tar.extractfile(member).read().decode()
    else:
        for variant in VARIANTS:
            path = os.path.join(run_dir, "logs", f"metrics_after_{variant}.txt")
            if os.path.exists(path):
                out[variant] = open(path).read()
    return out


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for argument in sys.argv[1:]:
        label, _, run_dir = argument.rpartition("=")
        label = label or os.path.basename(os.path.normpath(run_dir))
        texts = scrapes(run_dir)
        before = collections.defaultdict(float)
        for variant in VARIANTS:
            if variant not in texts:
                continue
            now = parse(texts[variant])
            if (f"enqueue@{variant}", "count") in now:  # labelled by layer: no differences
                delta = now
                stages = [f"{stage}@{variant}" for stage in STAGES]
            else:
                delta = {key: now[key] - before[key] for key in now}
                stages = list(STAGES)
            batches = delta.get((stages[1], "count"), 0)
            cells = []
            for stage in stages + [f"kernel@{variant}", f"compute@{variant}"]:
                count = delta.get((stage, "count"), 0)
                if count:
                    cells.append(f"{stage.split('@')[0]}={1e6 * delta[(stage, 'sum')] / count:.0f}")
            print(f"{label}/{variant:10s} "
                  f"batches={batches:.0f} {' '.join(cells)}")
            before = now


if __name__ == "__main__":
    main()
