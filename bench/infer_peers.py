#!/usr/bin/python3
"""Inference peers for TESLA: a spec's model in PyTorch eager and, exported, in ONNX Runtime.

  infer_peers.py SPEC.yaml [--weights W.safetensors] --onnx OUT.onnx
        build the spec's model (bench/peer_torch.py's build_model) in eval mode, append a
        softmax so that it outputs class probabilities, export it with torch.onnx.export
        (input "x" (batch, *input), output "y" (batch, classes), dynamic batch axis)
  infer_peers.py SPEC.yaml [--weights W] --onnx OUT.onnx --check [--n 64]
        also run the exported file through ONNX Runtime (bench/ort_bench.mjs --dump-output)
        on a fixed input, at batch 1 and batch N, and compare its probabilities with PyTorch's
        (max abs difference <= --tol, 1e-5 by default); exit 1 when they differ
  infer_peers.py SPEC.yaml [--weights W] --bench-torch --threads T --batch N --iters K [--warmup W]
        PyTorch eager latency/throughput of forward + softmax under torch.inference_mode
        (or --grad-mode no_grad): W untimed calls, then K timed calls, median; one JSON line

Without --weights the model has peer_torch's fresh init for the spec's train.seed (or --seed),
the same tensors `peer_torch.py SPEC --save-init` writes. tt: layers take their modes and
ranks from teslac's plan (`teslac plan SPEC --json`, at the spec's own batch so a checkpoint's
cores fit; --teslac PATH or --plan FILE as in peer_torch). sparsity: layers are dense in the
peer (and so in the export): the pruned weights are zeros in a dense matrix.

Run with /usr/bin/python3 (Debian's python3-torch; python3-onnx for the checker, optional).
See bench/README.md, "Inference peers: ONNX Runtime and PyTorch eager".
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _blas  # noqa: E402
import peer_torch as pt  # noqa: E402

ORT_BENCH = os.path.join(HERE, "ort_bench.mjs")


def die(msg, code=1):
    print("infer_peers: error: " + msg, file=sys.stderr)
    sys.exit(code)


def build_infer_model(spec, args):
    """(nn.Sequential(model, Softmax(1)) in eval mode, the spec's model, its input shape)."""
    import torch
    from torch import nn
    # the same seed rule as peer_torch --save-init / --forward, so a random init is reproducible
    torch.manual_seed(pt.train_cfg(spec, types.SimpleNamespace(seed=args.seed))["seed"])
    model, _ = pt.build_model(spec)
    if args.weights:
        pt.load_weights(model, args.weights)
    full = nn.Sequential(model, nn.Softmax(dim=1))
    full.eval()  # batchnorm on running statistics, dropout off
    for p in full.parameters():
        p.requires_grad_(False)
    return full, tuple(int(d) for d in spec["input"])


def export_onnx(spec, full, in_shape, args):
    import torch
    x = torch.rand((2,) + in_shape, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            torch.onnx.export(full, (x,), args.onnx, opset_version=args.opset,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              do_constant_folding=True)
    except Exception as e:  # the exporter raises many kinds (RuntimeError, SymbolicValueError, ...)
        kinds = [k for k in ("tt", "sparsity") if any(
            isinstance(l, dict) and isinstance(next(iter(l.values())), dict)
            and k in next(iter(l.values())) for l in spec["layers"])]
        die("torch.onnx.export of %s failed%s: %s: %s" % (
            spec["__file__"], " (the spec has %s layers)" % "/".join(kinds) if kinds else "",
            type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else ""))
    info = {"onnx": args.onnx, "opset": args.opset, "bytes": os.path.getsize(args.onnx)}
    try:
        import onnx
    except ImportError:
        info["onnx_checker"] = "skipped (python3-onnx not installed)"
    else:
        m = onnx.load(args.onnx)
        onnx.checker.check_model(m)
        info["onnx_checker"] = "ok"
        info["ir_version"] = m.ir_version
        ops = {}
        for n in m.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        info["ops"] = ops
    return info


def ort_dump(onnx_path, x, args):
    """ONNX Runtime's output for input x (numpy float32), via ort_bench.mjs --dump-output."""
    import numpy as np
    node = shutil.which("node")
    if node is None:
        die("--check needs node (apt-get install -y nodejs) and bench/fetch_ort.sh")
    with tempfile.TemporaryDirectory() as d:
        xin, yout = os.path.join(d, "x.f32"), os.path.join(d, "y.f32")
        np.ascontiguousarray(x, dtype="<f4").tofile(xin)
        cmd = [node, ORT_BENCH, onnx_path, "--threads", "1", "--batch", str(x.shape[0]),
               "--input", xin, "--dump-output", yout]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            die("%s failed (exit %d):\n%s" % (" ".join(cmd), r.returncode, r.stderr.rstrip()))
        meta = json.loads(r.stdout.strip().splitlines()[-1])
        y = np.fromfile(yout, dtype="<f4")
    return y, meta


def mode_check(spec, full, in_shape, args):
    import numpy as np
    import torch
    rng = np.random.default_rng(args.check_seed)
    res = {"spec": spec.get("name"), "mode": "check", "onnx": args.onnx,
           "weights": args.weights or "random init (seed %d)" % pt.train_cfg(
               spec, types.SimpleNamespace(seed=args.seed))["seed"], "tol": args.tol, "runs": []}
    ok = True
    for n in sorted({1, args.n}):
        x = rng.random((n,) + in_shape, dtype=np.float32)  # pixels in [0, 1), as data.scale gives
        with torch.inference_mode():
            yt = full(torch.from_numpy(x)).numpy()
        yo, meta = ort_dump(args.onnx, x, args)
        if yo.size != yt.size:
            die("ONNX Runtime returned %d floats for batch %d, PyTorch %d" % (yo.size, n, yt.size))
        yo = yo.reshape(yt.shape)
        diff = float(np.max(np.abs(yo.astype(np.float64) - yt.astype(np.float64))))
        same_class = int(np.sum(yo.argmax(1) == yt.argmax(1)))
        run_ok = diff <= args.tol
        ok = ok and run_ok
        res["runs"].append({"batch": n, "max_abs_diff": diff, "argmax_agree": "%d/%d" % (same_class, n),
                            "row_sum_err": float(np.max(np.abs(yo.sum(1) - 1))), "ok": run_ok})
        res["onnxruntime"] = meta.get("version")
    res["torch"] = torch.__version__
    res["ok"] = ok
    print(json.dumps(res), flush=True)
    if not ok:
        die("ONNX Runtime's probabilities differ from PyTorch's by more than %g" % args.tol)


def mode_bench_torch(spec, full, in_shape, args):
    import torch
    pt.setup_threads(args.threads)
    x = torch.rand((args.batch,) + in_shape, generator=torch.Generator().manual_seed(1))
    ctx = torch.inference_mode if args.grad_mode == "inference" else torch.no_grad
    times = []
    with ctx():
        for _ in range(args.warmup):
            y = full(x)
        for _ in range(args.iters):
            t0 = time.perf_counter()
            y = full(x)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    env = pt.env_info()
    blas = env["blas"]
    out = {"engine": "pytorch", "version": torch.__version__, "spec": spec.get("name"),
           "batch": args.batch, "threads": args.threads, "median_ms": round(med * 1e3, 5),
           "samples_per_s": round(args.batch / med, 1), "min_ms": round(min(times) * 1e3, 5),
           "iters": args.iters, "warmup": args.warmup, "grad_mode": args.grad_mode,
           "weights": args.weights or "random init",
           "interop_threads": env["interop_threads"], "mkldnn": env["mkldnn"],
           "blas": {k: blas[k] for k in ("kind", "openblas_core", "openblas_threads") if k in blas},
           "checksum": float(y.double().sum())}
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--weights", metavar="W.safetensors",
                    help="teslac checkpoint or peer_torch safetensors (default: a fresh init)")
    ap.add_argument("--onnx", metavar="OUT.onnx", help="export the model + softmax here")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 13; default %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="compare ONNX Runtime's output of --onnx with PyTorch's")
    ap.add_argument("--n", type=int, default=64, help="--check: the larger batch (default %(default)s)")
    ap.add_argument("--tol", type=float, default=1e-5, help="--check: max abs difference")
    ap.add_argument("--check-seed", type=int, default=7, help="--check: seed of the input")
    ap.add_argument("--bench-torch", action="store_true", help="time PyTorch eager")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--grad-mode", choices=["inference", "no_grad"], default="inference")
    ap.add_argument("--seed", type=int, help="init seed (default: the spec's train.seed)")
    ap.add_argument("--teslac", default=pt.DEFAULT_TESLAC, metavar="PATH",
                    help="teslac binary, run for the plan of tt: layers (default %(default)s)")
    ap.add_argument("--plan", metavar="PLAN.json",
                    help="teslac's `plan SPEC --json` output, instead of running --teslac")
    ap.add_argument("--blas", default="auto", choices=["auto", "system", "openblas"],
                    help="BLAS under torch (bench/_blas.py); default auto")
    args = ap.parse_args()
    if not (args.onnx or args.bench_torch):
        ap.error("nothing to do: give --onnx OUT.onnx and/or --bench-torch")
    if args.check and not args.onnx:
        ap.error("--check needs --onnx")
    if args.opset < 13:
        ap.error("--opset must be >= 13")
    if args.threads < 1 or args.batch < 1 or args.iters < 1 or args.warmup < 0 or args.n < 1:
        ap.error("--threads, --batch, --iters, --n must be >= 1; --warmup >= 0")
    # export and check run on one thread; the bench on --threads (OpenBLAS's pool included)
    _blas.select(args.blas, args.threads if args.bench_torch else 1)
    spec = pt.load_spec(args.spec)
    if args.plan or pt.needs_plan(spec):
        # the plan at the spec's own batch (no --batch): the modes a checkpoint was trained with
        spec["__plan__"] = pt.get_plan(spec, types.SimpleNamespace(
            plan=args.plan, teslac=args.teslac, batch=None))
    full, in_shape = build_infer_model(spec, args)
    if args.onnx:
        import torch
        torch.set_num_threads(1)
        info = export_onnx(spec, full, in_shape, args)
        print(json.dumps({"spec": spec.get("name"), "mode": "export", **info}), flush=True)
        if args.check:
            mode_check(spec, full, in_shape, args)
    if args.bench_torch:
        mode_bench_torch(spec, full, in_shape, args)


if __name__ == "__main__":
    main()
