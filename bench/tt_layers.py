#!/usr/bin/python3
"""bench/tt_layers.py: each tensor-train layer against the dense layer it replaces, in one run.

For every pair (TT spec, dense spec) -- the same model but for `tt:` -- and every batch size,
`teslac train --profile` runs N steps on Fashion-MNIST and reports per layer the forward and
backward milliseconds per step (generated code timed between phases, ts_prof_mark). This
script prints the TT layer's forward + backward time next to the dense layer's, the ratio,
and each layer's parameters, as a table and as JSON (--json). Medians over --repeats runs.

  /usr/bin/python3 bench/tt_layers.py [--teslac build/compiler/teslac] [--steps 400]
        [--repeats 3] [--threads 2] [--batches 1,32] [--json OUT.json] [PAIR ...]

A PAIR is TT_SPEC:DENSE_SPEC; the default pairs are the reference specs (fashion_cnn_tt vs
fashion_cnn, mlp_tt vs mlp). Needs no PyTorch."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PAIRS = ["specs/fashion_cnn_tt.yaml:specs/fashion_cnn.yaml", "specs/mlp_tt.yaml:specs/mlp.yaml"]


def run(cmd):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(cmd), p.stdout, p.stderr))
    return p.stdout


def plan(teslac, spec, batch):
    return json.loads(run([teslac, "plan", spec, "--json", "--batch", str(batch)]))


def profile(teslac, spec, batch, steps, threads):
    out = run([teslac, "train", spec, "--steps", str(steps), "--batch", str(batch), "--threads",
               str(threads), "--profile", "-o", "/tmp/tt_layers_bench.st"])
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m:
            rows[int(m.group(1))] = (float(m.group(4)), float(m.group(5)))
    step = re.search(r"profile over \d+ steps: ([\d.]+) ms per step", out)
    return rows, float(step.group(1)) if step else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs", nargs="*", default=DEFAULT_PAIRS)
    ap.add_argument("--teslac", default="build/compiler/teslac")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--json")
    a = ap.parse_args()
    results = []
    print("%-22s %-6s %5s %8s %8s %10s %10s %7s %9s %9s" % (
        "spec", "layer", "batch", "params", "dense", "tt ms", "dense ms", "ratio", "step tt", "step dense"))
    for pair in a.pairs:
        tt_spec, dense_spec = pair.split(":")
        for batch in [int(b) for b in a.batches.split(",")]:
            pt = plan(a.teslac, tt_spec, batch)
            tt_layers = [l for l in pt["layers"] if l["storage"] == "tt"]
            per = {l["index"]: ([], []) for l in tt_layers}
            steps_tt, steps_dense = [], []
            for _ in range(a.repeats):
                rt, st = profile(a.teslac, tt_spec, batch, a.steps, a.threads)
                rd, sd = profile(a.teslac, dense_spec, batch, a.steps, a.threads)
                steps_tt.append(st), steps_dense.append(sd)
                for i in per:
                    per[i][0].append(sum(rt[i])), per[i][1].append(sum(rd[i]))
            for l in tt_layers:
                t, d = statistics.median(per[l["index"]][0]), statistics.median(per[l["index"]][1])
                r = {"spec": tt_spec, "dense_spec": dense_spec, "layer": l["index"], "batch": batch,
                     "params": l["params"], "dense_params": l["dense_params"], "order": l["tt"]["order"],
                     "tt_ms": t, "dense_ms": d, "ratio": d / t if t > 0 else None,
                     "step_tt_ms": statistics.median(steps_tt), "step_dense_ms": statistics.median(steps_dense),
                     "threads": a.threads, "steps": a.steps, "repeats": a.repeats}
                results.append(r)
                print("%-22s %-6s %5d %8d %8d %10.4f %10.4f %6.2fx %9.3f %9.3f" % (
                    os.path.basename(tt_spec), l["index"], batch, l["params"], l["dense_params"], t, d,
                    r["ratio"], r["step_tt_ms"], r["step_dense_ms"]))
    print("ratio = dense ms / tt ms for the layer's forward + backward (> 1: the TT layer is faster)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
