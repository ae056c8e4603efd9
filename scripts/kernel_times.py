#!/usr/bin/env python3
"""Per-kernel GPU time of one training step, from Nsight Compute's CSV.

    ncu --metrics gpu__time_duration.sum --csv --print-units base PROGRAM ... > run.csv
    scripts/kernel_times.py run.csv --steps 4 [--top 40]

`--steps` is how many identical steps PROGRAM ran (warm-ups included): the last 1/steps of the
launches is taken as one step, its kernels grouped by name (template arguments dropped) and
listed by total time. ncu serialises launches, so the times are each kernel alone on the GPU,
without launch gaps: the sum is a lower bound of the step's GPU time.
"""
import argparse
import csv
import re
import sys
from collections import defaultdict


def short(name):
    name = re.sub(r"\(.*$", "", name)  # parameter lists
    name = re.sub(r"<.*>", "<>", name)  # template arguments
    return name[:90]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--top", type=int, default=40)
    a = p.parse_args()
    rows = []
    with open(a.csv, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        rows.append((int(r["ID"]), r["Kernel Name"], float(r["Metric Value"].replace(",", ""))))
    rows.sort()
    if not rows:
        sys.exit("no gpu__time_duration rows in the CSV")
    per_step = len(rows) // a.steps
    step = rows[-per_step:]
    total = defaultdict(float)
    count = defaultdict(int)
    for _, name, ns in step:
        total[short(name)] += ns
        count[short(name)] += 1
    whole = sum(total.values())
    print(f"{len(rows)} launches, {per_step} per step; one step: {whole / 1e6:.2f} ms of kernels")
    for name, ns in sorted(total.items(), key=lambda kv: -kv[1])[: a.top]:
        print(f"{ns / 1e6:8.3f} ms {100 * ns / whole:5.1f}% {count[name]:5d}x  {name}")


if __name__ == "__main__":
    main()
