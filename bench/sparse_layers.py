#!/usr/bin/python3
"""bench/sparse_layers.py: pruned layers against teslac's own dense layer, in one run.

1. Layers: mlp (specs/mlp.yaml) with its 1024x1024 hidden layer pruned once at step 0
   (`sparsity: {target: S, schedule: oneshot, start: 0}`) for each target S, against the dense
   mlp: `teslac train --profile` runs N steps and reports that layer's forward and backward ms
   per step (generated code timed between phases). Medians over --repeats.
2. Inference of a frozen pattern: mlp with all three dense layers pruned once at step 0 to
   --infer-target, against mlp: `teslac eval` (the generated <name>_infer over the 10,000 test
   images, compile and loading excluded) at each batch, samples/s.
3. With --full: whole-model training, `teslac train specs/mlp.yaml` and specs/mlp_sparse.yaml
   for their 5 epochs (the gradual schedule included): wall time of the steps, test accuracy
   per epoch, checkpoint sizes.

  /usr/bin/python3 bench/sparse_layers.py [--teslac build/compiler/teslac] [--steps 600]
        [--repeats 3] [--threads 2] [--targets 0.8,0.9,0.95] [--batches 32] [--full]
        [--json OUT.json]

Needs no PyTorch."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN2 = "  - dense:      {units: 1024}\n  - batchnorm:  {}\n  - leaky_relu: {}\n  - dense:      {units: 10}"


def run(cmd):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(cmd), p.stdout, p.stderr))
    return p.stdout


def variant(tmp, name, layer_target=None, all_target=None):
    src = open(os.path.join(ROOT, "specs/mlp.yaml")).read()
    one = "sparsity: {target: %s, schedule: oneshot, start: 0}"
    if layer_target is not None:
        assert HIDDEN2 in src
        src = src.replace(HIDDEN2, HIDDEN2.replace("{units: 1024}", "{units: 1024, %s}" % (one % layer_target), 1))
    if all_target is not None:
        src = src.replace("{units: 1024}", "{units: 1024, %s}" % (one % all_target))
        src = src.replace("{units: 10}", "{units: 10, %s}" % (one % all_target))
    src = src.replace("name: mlp", "name: %s" % name)
    path = os.path.join(tmp, name + ".yaml")
    open(path, "w").write(src)
    return path


def profile(teslac, spec, batch, steps, threads, layer, out):
    text = run([teslac, "train", spec, "--steps", str(steps), "--batch", str(batch), "--threads", str(threads),
                "--profile", "-o", out])
    for line in text.splitlines():
        m = re.match(r"\s*(\d+)\s+\S+\s+\S+\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m and int(m.group(1)) == layer:
            return float(m.group(2)), float(m.group(3))
    sys.exit("no profile line for layer %d in:\n%s" % (layer, text))


def infer_rate(teslac, spec, ckpt, batch, threads):
    text = run([teslac, "eval", spec, "--weights", ckpt, "--batch", str(batch), "--threads", str(threads)])
    m = re.search(r"in ([\d.]+) s: (\d+) samples/s", text)
    return int(m.group(2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teslac", default="build/compiler/teslac")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--targets", default="0.8,0.9,0.95")
    ap.add_argument("--batches", default="32")
    ap.add_argument("--infer-target", type=float, default=0.9)
    ap.add_argument("--infer-batches", default="1,32,256")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    res = {"layers": [], "inference": [], "full": None}
    tmp = tempfile.mkdtemp(prefix="sparse_bench_")
    ck = os.path.join(tmp, "x.safetensors")
    dense = os.path.join(ROOT, "specs/mlp.yaml")
    print("1. the 1024x1024 layer (mlp layer 3), forward + backward ms per step, median of %d" % a.repeats)
    print("%6s %8s %10s %10s %10s %8s" % ("batch", "target", "fwd ms", "bwd ms", "total", "vs dense"))
    for b in [int(x) for x in a.batches.split(",")]:
        specs = [("dense", dense)] + [(t, variant(tmp, "mlp_l3_%s" % t.replace(".", "_"), layer_target=t))
                                      for t in a.targets.split(",")]
        times = {}
        for rep in range(a.repeats):   # interleaved, so that drift hits every variant alike
            for label, spec in specs:
                times.setdefault(label, []).append(profile(a.teslac, spec, b, a.steps, a.threads, 3, ck))
        d = None
        for label, _ in specs:
            f = statistics.median(x[0] for x in times[label])
            g = statistics.median(x[1] for x in times[label])
            d = d or f + g
            print("%6d %8s %10.3f %10.3f %10.3f %7.2fx" % (b, label, f, g, f + g, d / (f + g)))
            res["layers"].append({"batch": b, "target": label, "fwd_ms": f, "bwd_ms": g, "speedup": d / (f + g)})
    print("\n2. inference, samples/s over the test set (teslac eval), all dense layers pruned to %g" % a.infer_target)
    sp = variant(tmp, "mlp_all_sparse", all_target=a.infer_target)
    ck_d, ck_s = os.path.join(tmp, "d.safetensors"), os.path.join(tmp, "s.safetensors")
    run([a.teslac, "train", dense, "--steps", "50", "-o", ck_d])
    run([a.teslac, "train", sp, "--steps", "50", "-o", ck_s])
    print("%6s %12s %12s %8s" % ("batch", "dense", "pruned", "ratio"))
    for b in [int(x) for x in a.infer_batches.split(",")]:
        rd = statistics.median(infer_rate(a.teslac, dense, ck_d, b, a.threads) for _ in range(a.repeats))
        rs = statistics.median(infer_rate(a.teslac, sp, ck_s, b, a.threads) for _ in range(a.repeats))
        print("%6d %12d %12d %7.2fx" % (b, rd, rs, rs / rd))
        res["inference"].append({"batch": b, "dense": rd, "sparse": rs, "ratio": rs / rd})
    if a.full:
        print("\n3. whole-model training, specs/mlp.yaml against specs/mlp_sparse.yaml (5 epochs each)")
        full = {}
        for spec in ["specs/mlp.yaml", "specs/mlp_sparse.yaml"]:
            out = os.path.join(tmp, os.path.basename(spec) + ".st")
            text = run([a.teslac, "train", spec, "--test-every-epoch", "--threads", str(a.threads), "-o", out])
            accs = [float(x) for x in re.findall(r"test acc ([\d.]+)", text)]
            secs = sum(float(x) for x in re.findall(r"test acc [\d.]+\s+([\d.]+) s", text))
            full[spec] = {"seconds": secs, "test_acc": accs, "ckpt_bytes": os.path.getsize(out)}
            print("%-24s %6.1f s of steps; test acc per epoch %s; checkpoint %d bytes" %
                  (spec, secs, " ".join("%.2f" % (100 * x) for x in accs), os.path.getsize(out)))
        d, s = full["specs/mlp.yaml"], full["specs/mlp_sparse.yaml"]
        print("training %.2fx faster; accuracy %+.2f points; checkpoint %.1f%% of mlp's" %
              (d["seconds"] / s["seconds"], 100 * (s["test_acc"][-1] - d["test_acc"][-1]),
               100 * s["ckpt_bytes"] / d["ckpt_bytes"]))
        res["full"] = full
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
