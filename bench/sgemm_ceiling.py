#!/usr/bin/python3
"""The machine's GEMM ceiling: float32 C = A @ B with numpy, on 2 cores and on 1 core.

Prints one JSON object: per thread count and size, the GFLOP/s (2*n^3 / seconds) of the
median and the best of --repeats timed calls (after one untimed warm-up call), plus which
BLAS numpy used and, for OpenBLAS, the core kernel it chose.

OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, if set, are removed from this script's own
environment for the measurement (it re-executes itself without them), so OpenBLAS picks its
kernel by its own CPU detection; the values that were removed are reported. Each thread
count runs in a fresh child process with OPENBLAS_NUM_THREADS / OMP_NUM_THREADS set, because
OpenBLAS reads them when it loads. --blas chooses the BLAS as in bench/_blas.py (default:
OpenBLAS if available, else the system's libblas.so.3).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _blas  # noqa: E402


def child(threads, n, repeats):
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm-up: page faults, thread pool start
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    flop = 2.0 * n ** 3
    info = _blas.info()
    return {"threads": threads, "n": n, "repeats": repeats,
            "gflops_median": round(flop / statistics.median(times) / 1e9, 2),
            "gflops_best": round(flop / min(times) / 1e9, 2),
            "seconds": [round(t, 4) for t in times],
            "blas_kind": info["kind"], "openblas_core": info.get("openblas_core"),
            "openblas_threads": info.get("openblas_threads"), "blas": info}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2048,4096")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--repeats", type=int, default=0,
                    help="timed calls per point (default: 5 for n <= 2048, 3 above)")
    ap.add_argument("--blas", default="auto", choices=["auto", "system", "openblas"])
    ap.add_argument("--child", nargs=2, type=int, metavar=("THREADS", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        t, n = args.child
        print(json.dumps(child(t, n, args.repeats or (5 if n <= 2048 else 3))))
        return
    _blas.select(args.blas, None, unset=("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    results = []
    for t in [int(v) for v in args.threads.split(",")]:
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(t), OMP_NUM_THREADS=str(t))
        for n in [int(v) for v in args.sizes.split(",")]:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", str(t), str(n),
                   "--repeats", str(args.repeats)]
            out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
            r = json.loads(out)
            print("threads=%d n=%d: %.1f GFLOP/s median, %.1f best (%s %s)"
                  % (t, n, r["gflops_median"], r["gflops_best"], r["blas_kind"],
                     r["openblas_core"] or ""), file=sys.stderr, flush=True)
            results.append(r)
    import numpy
    blas = results[0].pop("blas") if results else {}
    for r in results:
        r.pop("blas", None)
    print(json.dumps({"numpy": numpy.__version__, "blas": blas,
                      "removed_env": os.environ.get("TESLA_BENCH_UNSET", ""),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
