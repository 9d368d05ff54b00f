#!/usr/bin/python3
"""OpenBLAS alone on a training step's GEMMs: the rate issue 11 measures teslac's whole mlp
step against ("the whole training step at >= 90% of the rate OpenBLAS reaches on the step's
GEMMs alone at batch 32 on 2 threads").

The GEMMs come from `teslac plan SPEC --json` (every dense layer's weight (OUT, IN)), in the
layouts a step uses, row-major float32 as PyTorch keeps them:
  forward          Y (B, OUT) = X (B, IN) @ W^T
  weight gradient  dW (OUT, IN) = dY^T @ X
  data gradient    dX (B, IN) = dY (B, OUT) @ W      (not for the first layer: no one needs it)
For mlp that is the eight GEMMs of the issue. Nothing else of the step (bias, batchnorm,
activations, softmax, Adam) is timed, so this is an upper bound for any step built on the BLAS.
numpy.matmul with preallocated outputs calls sgemm directly; OpenBLAS is chosen as in
bench/_blas.py and runs on --threads threads (OPENBLAS_NUM_THREADS, set before it loads).

Prints the CPU lines, the BLAS, then per step: ms, samples/s (batch / step time), GFLOP/s
(2 * multiply-adds). Median of --repeats timings of --steps steps each, after a warm-up.

  /usr/bin/python3 bench/blas_step.py specs/mlp.yaml [--threads 2] [--batch 32] [--steps 200]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _blas  # noqa: E402


def gemms(spec, teslac, batch):
    plan = json.loads(subprocess.run([teslac, 'plan', spec, '--json', '--batch', str(batch)], check=True,
                                     capture_output=True, text=True).stdout)
    dense = []
    for l in plan['layers']:
        if l['kind'] != 'dense':
            continue
        if l['storage'] != 'dense':
            sys.exit('blas_step.py: layer %s is stored %s; this measures dense layers' % (l['name'], l['storage']))
        w = next(t for t in l['tensors'] if t['name'].endswith('.weight'))
        dense.append(tuple(w['shape']))   # (OUT, IN)
    return plan, dense


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('spec')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--steps', type=int, default=200)
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument('--blas', default='openblas', choices=['auto', 'system', 'openblas'])
    ap.add_argument('--teslac', default=os.path.join(os.path.dirname(HERE), 'build/compiler/teslac'))
    a = ap.parse_args()
    _blas.select(a.blas, a.threads)
    import numpy as np
    plan, dense = gemms(a.spec, a.teslac, a.batch)
    B = a.batch
    rng = np.random.default_rng(0)
    ops = []   # (A, B, out) for np.matmul
    flop = 0
    for k, (out, inp) in enumerate(dense):
        X = rng.standard_normal((B, inp), dtype=np.float32)
        W = rng.standard_normal((out, inp), dtype=np.float32)
        dY = rng.standard_normal((B, out), dtype=np.float32)
        ops.append((X, W.T, np.empty((B, out), np.float32)))          # forward
        ops.append((dY.T, X, np.empty((out, inp), np.float32)))       # weight gradient
        flop += 2 * 2 * B * inp * out
        if k > 0:
            ops.append((dY, W, np.empty((B, inp), np.float32)))       # data gradient
            flop += 2 * B * inp * out
    def step():
        for x, y, o in ops:
            np.matmul(x, y, out=o)
    for _ in range(20):
        step()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        times.append((time.perf_counter() - t0) / a.steps)
    t = statistics.median(times)
    with open('/proc/cpuinfo') as f:
        cpu = {}
        for line in f:
            k = line.split(':')[0].strip()
            if k in ('model name', 'cpu family', 'model') and k not in cpu:
                cpu[k] = line.split(':', 1)[1].strip()
    info = _blas.info()
    print('cpu: %s, family %s, model %s' % (cpu.get('model name'), cpu.get('cpu family'), cpu.get('model')))
    print('blas: %s %s, %d threads' % (info['kind'], info.get('openblas_core') or '', a.threads))
    print('%s: %d GEMMs per step at batch %d: %.3f ms per step, %.0f samples/s, %.1f GFLOP/s'
          % (plan['model'], len(ops), B, t * 1e3, B / t, flop / t / 1e9))


if __name__ == '__main__':
    main()
