#!/usr/bin/python3
"""bench/startup.py: how long `teslac train` takes from launch to its first step, data loading
excluded (issue 11's goal: <= 50 ms for a second train of the same spec, i.e. from the compile
cache).

For each spec: one run to fill the compile cache, then N runs of
`teslac train SPEC --steps 1 -v -o TMP`, each timed from just before the process is started to
the moment its "training NAME: ..." line arrives on the pipe (train.c flushes it right before
the first step), minus the "data read in X s" that the same run prints. Also the cold compile
(`--no-cache`), as the run's own "compiled ... in X s" line. Prints the medians; the CPU lines
first.

  /usr/bin/python3 bench/startup.py [--teslac build/compiler/teslac] [--runs 7] [SPEC...]
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_lines():
    out = []
    with open('/proc/cpuinfo') as f:
        for line in f:
            k = line.split(':')[0].strip()
            if k in ('model name', 'cpu family', 'model') and not any(o.startswith(k + ':') for o in out):
                out.append(k + ': ' + line.split(':', 1)[1].strip())
            if len(out) == 3:
                break
    return out


def one(teslac, spec, extra, out):
    t0 = time.perf_counter()
    p = subprocess.Popen([teslac, 'train', spec, '--steps', '1', '-v', '-o', out] + extra,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    data = compiled = started = None
    text = []
    for line in p.stdout:
        text.append(line)
        m = re.match(r'data read in ([0-9.]+) s', line)
        if m:
            data = float(m.group(1))
        m = re.match(r'compiled \S+ for batch \d+ in ([0-9.]+) s', line)
        if m:
            compiled = float(m.group(1))
        if line.startswith('training ') and started is None:
            started = time.perf_counter() - t0
    rc = p.wait()
    if rc != 0 or started is None or data is None:
        sys.exit('startup.py: %s failed (exit %d):\n%s' % (spec, rc, ''.join(text)))
    return started - data, compiled


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--teslac', default=os.path.join(ROOT, 'build/compiler/teslac'))
    ap.add_argument('--runs', type=int, default=7)
    ap.add_argument('specs', nargs='*')
    a = ap.parse_args()
    specs = a.specs or [os.path.join(ROOT, 'specs', s + '.yaml') for s in ('mlp', 'fashion_cnn', 'seed')]
    for line in cpu_lines():
        print(line)
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, 'w.safetensors')
        jit = subprocess.run([a.teslac, 'train', specs[0], '--steps', '1', '-v', '-o', out],
                             capture_output=True, text=True).stdout
        m = re.search(r'JIT CPU: (.*)', jit)
        print('JIT CPU:', m.group(1) if m else '?')
        print('%-14s %12s %12s %12s' % ('spec', 'start ms', 'cold s', 'runs'))
        for spec in specs:
            one(a.teslac, spec, [], out)   # fills the cache
            warm = sorted(one(a.teslac, spec, [], out)[0] * 1000 for _ in range(a.runs))
            cold = sorted(one(a.teslac, spec, ['--no-cache'], out)[1] for _ in range(3))
            print('%-14s %12.1f %12.3f %12d' % (os.path.basename(spec)[:-5], statistics.median(warm),
                                                 statistics.median(cold), a.runs))


if __name__ == '__main__':
    main()
