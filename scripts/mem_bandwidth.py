"""Rough memory read bandwidth of this machine, for judging CPU decode speeds (batch-1 generation
reads every weight once per token, so tokens/s <= bandwidth / model bytes).

    .venv/bin/python scripts/mem_bandwidth.py [--gib 2] [--reps 5] [--threads 1 2]

Allocates a float32 array of --gib GiB (default 2, far larger than any cache), touches it once,
then for each thread count reads it --reps times and reports the best and median read rate in
GB/s (1e9 bytes/s). Two read kernels:
  numpy: arr.sum() in 1 thread (numpy's sum is single-threaded), and for N > 1 threads, N Python
         threads each summing a contiguous 1/N slice (numpy releases the GIL inside the sum);
  torch: torch.Tensor.sum() on the same memory (from_numpy, no copy) with
         torch.set_num_threads(N), if torch is installed.
Prints one JSON line per (kernel, threads) on stdout, e.g.
    {"kernel": "numpy", "threads": 2, "gib": 2.0, "best_gb_s": 21.3, "median_gb_s": 20.8}
"""
import argparse
import json
import statistics
import threading
import time

import numpy as np


def measure(fn, nbytes, reps):
    fn()  # warm-up
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        rates.append(nbytes / (time.perf_counter() - t) / 1e9)
    return max(rates), statistics.median(rates)


def numpy_sum(arr, threads):
    if threads == 1:
        return lambda: arr.sum()
    parts = np.array_split(arr, threads)

    def fn():
        ts = [threading.Thread(target=p.sum) for p in parts]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return fn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gib", type=float, default=2.0, help="array size in GiB")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    n = int(args.gib * 2**30) // 4
    arr = np.ones(n, dtype=np.float32)  # written once, so every page is really mapped
    nbytes = arr.nbytes
    kernels = [("numpy", lambda th: numpy_sum(arr, th))]
    try:
        import torch
        t = torch.from_numpy(arr)

        def torch_sum(th):
            torch.set_num_threads(th)
            return lambda: t.sum()
        kernels.append(("torch", torch_sum))
    except ImportError:
        pass
    for name, make in kernels:
        for th in args.threads:
            best, med = measure(make(th), nbytes, args.reps)
            print(json.dumps({"kernel": name, "threads": th, "gib": args.gib,
                              "best_gb_s": round(best, 1), "median_gb_s": round(med, 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
