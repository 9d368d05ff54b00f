#!/usr/bin/python3
"""bench/compare.py: the project's benchmark. Trains the same spec with teslac and with the
PyTorch peer (peer_torch.py) in one run on this machine, at the same batch and optimizer, and
prints training throughput (median samples/s over --repeats runs), the ratio against PyTorch's
best thread count (1 or 2), teslac's JIT compile time and its GFLOP/s.

    /usr/bin/python3 bench/compare.py specs/mlp.yaml [--steps 1500] [--repeats 3] [--threads 2]

teslac's figure is the `samples/s` of its epoch line: the wall time of --steps optimizer steps
(batch gathering included, data loading, compilation and evaluation excluded); PyTorch's is
peer_torch.py --bench (the same steps on tensors already in memory). GFLOP/s counts the
forward and backward FLOPs of `teslac plan --json` (multiply-add = 2) per step.

Tensor-train specs work the same way: the plan (read once here) is handed to the peer
(`--plan`), which builds every layer planned `"storage": "tt"` with the same modes, ranks and
padding (TTLinear, an einsum chain over the cores; TTConv2d, the kernel rebuilt from its cores)
and checks that its parameter count is the plan's. The JSON names the TT layers (`tt_layers`).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def teslac_run(teslac, spec, steps, threads):
    out = subprocess.run([teslac, 'train', spec, '--steps', str(steps), '--threads', str(threads),
                          '-o', '/tmp/tesla-bench.safetensors'], capture_output=True, text=True, check=True).stdout
    compiled = float(re.search(r'compiled \S+ for batch \d+ in ([0-9.]+) s', out).group(1))
    sps = float(re.search(r'([0-9.]+) samples/s', out).group(1))
    acc = float(re.search(r'test acc ([0-9.]+)', out).group(1))
    return compiled, sps, acc


def peer_cmd(spec, plan_file, teslac):
    return ['/usr/bin/python3', os.path.join(HERE, 'peer_torch.py'), spec, '--plan', plan_file,
            '--teslac', teslac]


def peer_run(spec, steps, threads, repeats, plan_file, teslac):
    p = subprocess.run(peer_cmd(spec, plan_file, teslac) + [
        '--bench', '--threads', str(threads), '--steps', str(min(steps, 300)), '--warmup', '30',
        '--repeats', str(repeats)], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit('compare.py: the peer failed:\n' + p.stderr)
    d = json.loads(p.stdout)
    return d['samples_per_s'], d.get('blas', {}).get('kind', '?'), d.get('torch', '?')


def peer_params(spec, plan_file, teslac):
    p = subprocess.run(peer_cmd(spec, plan_file, teslac) + ['--params', '--blas', 'system'],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit('compare.py: the peer failed:\n' + p.stderr)
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('spec')
    ap.add_argument('--steps', type=int, default=1500)
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--teslac', default=os.path.join(ROOT, 'build', 'compiler', 'teslac'))
    a = ap.parse_args()
    # the peer runs on Debian's OpenBLAS (the system's libblas.so.3 is netlib's reference BLAS,
    # a straw man): unpack it once, without installing it (bench/README.md, "BLAS")
    if not os.path.isdir(os.path.join(HERE, '.openblas')):
        subprocess.run(['sh', os.path.join(HERE, 'fetch_openblas.sh')], check=True)

    plan = json.loads(subprocess.run([a.teslac, 'plan', a.spec, '--json'], capture_output=True, text=True,
                                     check=True).stdout)
    flops = plan['totals']['flops']['forward'] + plan['totals']['flops']['backward']
    batch = plan['batch']
    # the peer builds tt: layers from this plan: the same modes, ranks and padding as teslac's
    with tempfile.NamedTemporaryFile('w', suffix='.json', prefix='tesla-plan-', delete=False) as f:
        json.dump(plan, f)
        plan_file = f.name
    try:
        return measure(a, plan, plan_file, flops, batch)
    finally:
        os.unlink(plan_file)


def measure(a, plan, plan_file, flops, batch):
    tt_layers = {l['name']: {'kind': l['kind'], 'in_modes': l['tt']['in_modes'], 'out_modes': l['tt']['out_modes'],
                             'ranks': l['tt']['ranks'], 'teslac_order': l['tt']['order']}
                 for l in plan['layers'] if l.get('storage') == 'tt'}
    if tt_layers:  # the same TT model on both sides, or no comparison
        pp = peer_params(a.spec, plan_file, a.teslac)
        if pp['params'] != plan['totals']['params']:
            sys.exit('compare.py: the peer has %d parameters, teslac\'s plan %d'
                     % (pp['params'], plan['totals']['params']))
        for name, t in tt_layers.items():
            t['torch_forward'] = pp['layers'][name].get('forward')

    runs = [teslac_run(a.teslac, a.spec, a.steps, a.threads) for _ in range(a.repeats)]
    compile_s = statistics.median(r[0] for r in runs)
    t_sps = statistics.median(r[1] for r in runs)
    peer = {t: peer_run(a.spec, a.steps, t, a.repeats, plan_file, a.teslac) for t in (1, 2)}
    best_t = max(peer, key=lambda t: peer[t][0])
    best = peer[best_t][0]
    if peer[best_t][1] != 'openblas':
        sys.exit('compare.py: the peer did not run on OpenBLAS (%s); see bench/README.md' % peer[best_t][1])
    result = {
        'spec': plan['model'], 'batch': batch, 'steps': a.steps, 'repeats': a.repeats,
        'teslac_threads': a.threads, 'teslac_samples_per_s': round(t_sps, 1),
        'teslac_compile_s': compile_s, 'teslac_gflops': round(flops * t_sps / batch / 1e9, 1),
        'torch_samples_per_s': {str(t): round(v[0], 1) for t, v in peer.items()},
        'torch_best_threads': best_t, 'ratio_vs_best_torch': round(t_sps / best, 2),
        'torch': peer[best_t][2], 'torch_blas': peer[best_t][1],
        'loadavg': os.getloadavg()[0],
    }
    if tt_layers:
        result['params'] = plan['totals']['params']
        result['tt_layers'] = tt_layers
    print(json.dumps(result, indent=1))


if __name__ == '__main__':
    sys.exit(main())
