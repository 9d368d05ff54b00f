#!/usr/bin/python3
"""PyTorch peer for TESLA: the same model, data, batch and optimizer as a TESLA spec.

Reads a spec (shared/design/spec-language.md, version 1), builds the equivalent
nn.Sequential and then, by mode:

  --params                      parameter counts (total and per layer) as JSON
  --bench  --threads T --steps N --warmup W [--repeats R]
                                samples/s of training steps (median of R repeats) as JSON
  --train  [--epochs E] --threads T [--target ACC] [--init W] [--max-steps N] [--save OUT]
           [--no-eval]          full training: per-epoch test accuracy and wall time, and
                                time to ACC if given (JSON lines, then a JSON summary);
                                optionally from given weights, stopped after N steps (as
                                teslac train --steps), the trained state_dict written as
                                safetensors, without the test-set evaluation
  --save-init OUT.safetensors [--seed S]
                                the freshly initialized state_dict, as safetensors
  --forward IN.safetensors [--n K]
                                load weights, print the logits of the first K test samples

The model and the weight files are tools/tesla_torch.py's (build(), read(), save(), load()):
one implementation for this peer, the interop test and users. In short:

Module layout: one Sequential entry per spec layer, in order, keyed by the layer's `name:`
or its 0-based index, so state_dict() names are exactly the spec's tensor names
(`<layer>.weight`, `head.bias`, ...). The implicit flatten before the first dense after a
spatial layer is NOT a Sequential entry of its own (that would shift the indices): that
dense layer is a FlattenLinear, an nn.Linear whose forward flattens its input in (C, H, W)
order first. An explicit `flatten:` layer is an nn.Flatten at its own index. `softmax`
(last only) is an nn.Identity at its index: the model outputs logits and the softmax is
fused into CrossEntropyLoss, as TESLA fuses it into cross_entropy.

Tensor-train layers follow teslac's plan (`teslac plan SPEC --json`, run with the binary
given by --teslac, default build/compiler/teslac under the repository root, or read from
--plan FILE): a layer planned `"storage": "tt"` is a TTLinear (dense) or TTConv2d (conv)
with exactly the planned modes, ranks and padding, whose parameters are the cores
`core.0`, `core.1`, ... and `bias`, so state_dict() keys are teslac's (`8.core.0`, `8.bias`).
TTLinear never forms W: its forward pads x to the padded input dim, reshapes it to the input
modes and contracts it with one core at a time (torch.einsum, as T3F and tensorly-torch do),
in the plan's chain direction (left to right or right to left; for a layer teslac runs as
`form_w`, the chain direction the plan prices cheaper), then slices the padded output.
TTConv2d rebuilds its (K, C, kh, kw) kernel from the cores every forward (Garipov's
rebuilt-kernel path, which is what teslac runs) and calls F.conv2d. Cores start N(0, sd^2),
sd = (var / prod(inner ranks))^(1/(2*cores)), var the dense init's variance (1/(3*fan_in) by
default): teslac's rule. `sparsity:` is still accepted and ignored (a note on stderr): such a
layer is dense here. With a plan (--plan, or a spec with tt: layers), every layer's kind,
output shape and tensors are also checked against it.

Run with /usr/bin/python3 (Debian's python3-torch, numpy, yaml). See bench/README.md.
"""
import time

T_START = time.perf_counter()  # "process start" for time-to-accuracy (before torch import)

import argparse
import collections
import gzip
import json
import math
import os
import statistics
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import _blas  # noqa: E402
import tesla_torch  # noqa: E402  (imports torch only when it builds a model)

# perf_counter is CLOCK_MONOTONIC on Linux, so the first process's start survives the re-exec
T_START = float(os.environ.setdefault("TESLA_BENCH_T0", repr(T_START)))


def die(msg, code=1):
    print("peer_torch: error: " + msg, file=sys.stderr)
    sys.exit(code)


# ----------------------------------------------------------------------------------- data

def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array of its dims."""
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        die("%s: not an IDX file" % path)
    code, ndim = raw[2], raw[3]
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if code not in types:
        die("%s: unknown IDX type 0x%02x" % (path, code))
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    dt = np.dtype(types[code])
    n = int(np.prod(dims)) if dims else 1
    off = 4 + 4 * ndim
    if len(raw) - off < n * dt.itemsize:
        die("%s: truncated IDX file" % path)
    return np.frombuffer(raw, dtype=dt, count=n, offset=off).reshape(dims)


def load_split(spec, which):
    """(x float32 tensor (N, *input), y int64 tensor (N,)) for 'train' or 'test'."""
    import numpy as np
    import torch
    data = spec.get("data") or {}
    fmt = data.get("format", "idx")
    if fmt != "idx":
        die("data.format %r not supported by the peer (idx only)" % fmt)
    part = data.get(which)
    if not part or "images" not in part or "labels" not in part:
        die("spec has no data.%s.images/labels" % which)
    base = os.path.dirname(os.path.abspath(spec["__file__"]))
    ip = os.path.join(base, part["images"])
    lp = os.path.join(base, part["labels"])
    x = read_idx(ip)
    y = read_idx(lp)
    if x.shape[0] != y.shape[0]:
        die("%s and %s hold different sample counts" % (ip, lp))
    scale = float(data.get("scale", 255))   # teslac's default (specs/README.md, data)
    shape = tuple(spec["input"])
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        die("%s: samples of %s do not fit input %s" % (ip, x.shape[1:], list(shape)))
    x = x.astype(np.float32).reshape((x.shape[0],) + shape)
    if scale != 1:
        x /= np.float32(scale)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------------------------- model

def load_spec(path):
    import yaml
    with open(path) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict) or "layers" not in spec or "input" not in spec:
        die("%s: not a TESLA spec (needs input: and layers:)" % path)
    spec["__file__"] = path
    return spec




ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TESLAC = os.path.join(ROOT, "build", "compiler", "teslac")


def needs_plan(spec):
    """True when a layer asks for tensor-train storage (only teslac's plan has its modes)."""
    return tesla_torch.needs_plan(spec)


def get_plan(spec, args):
    """teslac's plan as a dict: from --plan FILE, else `teslac plan SPEC --json [--batch B]`."""
    if getattr(args, "plan", None):
        try:
            with open(args.plan) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            die("--plan %s: %s" % (args.plan, e))
    teslac = getattr(args, "teslac", None) or DEFAULT_TESLAC
    try:
        return tesla_torch.plan(spec["__file__"], teslac, getattr(args, "batch", None),
                                warn=lambda line: print("peer_torch: teslac: " + line, file=sys.stderr))
    except tesla_torch.SpecError as e:
        die("the spec's plan (tt: layers take their modes and ranks from it): %s; build teslac "
            "or pass --teslac PATH or --plan FILE" % e)


def build_model(spec, plan=None):
    """nn.Sequential with one entry per spec layer; returns (model, [(key, kind, out_shape)]).
    tools/tesla_torch.py's build(), with its errors as peer_torch's.

    plan: teslac's `plan --json` dict, needed when a layer has `tt:` (get_plan); default: the
    one main() stored in spec["__plan__"]."""
    if plan is None:
        plan = spec.get("__plan__")
    try:
        return tesla_torch.build(spec, plan,
                                 note=lambda n: print("peer_torch: note: " + n, file=sys.stderr))
    except tesla_torch.SpecError as e:
        die(str(e))


def train_cfg(spec, args):
    t = dict(spec.get("train") or {})
    opt = t.get("optimizer", "adam")
    okw = {}
    if isinstance(opt, dict):
        if len(opt) != 1:
            die("train.optimizer map must have one key")
        opt, okw = next(iter(opt.items()))
        okw = dict(okw or {})
    t["optimizer"] = opt
    lr = okw.pop("lr", t.get("lr"))
    if getattr(args, "lr", None) is not None:
        lr = args.lr
    if lr is None:
        lr = 0.01 if opt == "sgd" else 0.001
    t["lr"] = float(lr)
    t["opt_kw"] = okw
    for k in ("epochs", "batch", "seed"):
        v = getattr(args, k, None)
        if v is not None:
            t[k] = v
    t.setdefault("epochs", 1)
    t.setdefault("batch", 32)
    t.setdefault("seed", 1)
    t.setdefault("shuffle", True)
    loss = t.get("loss", "cross_entropy")
    if loss not in ("cross_entropy", "categorical_crossentropy"):
        die("train.loss %r not supported by the peer" % loss)
    return t


def make_optimizer(model, t):
    import torch
    kw = dict(t["opt_kw"])
    if "betas" in kw:
        kw["betas"] = tuple(float(b) for b in kw["betas"])
    name = t["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t["lr"], **kw)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=t["lr"], **kw)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t["lr"], **kw)
    die("train.optimizer %r not supported (sgd, adam, adamw)" % name)


def make_schedule(opt, t, steps_per_epoch):
    import torch
    s = t.get("schedule", "constant")
    skw = {}
    if isinstance(s, dict):
        s, skw = next(iter(s.items()))
        skw = skw or {}
    if s == "constant":
        return None
    if s == "step":  # per epoch: lr *= gamma every `every` (or step_size) epochs
        return torch.optim.lr_scheduler.StepLR(
            opt, step_size=int(skw.get("every", skw.get("step_size", 1))),
            gamma=float(skw.get("gamma", 0.1)))
    if s == "cosine":  # per epoch, to eta_min (0) at the last epoch
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=int(t["epochs"]), eta_min=float(skw.get("min_lr", 0.0)))
    die("train.schedule %r not supported by the peer" % s)


# ---------------------------------------------------------------------------- safetensors
# tools/tesla_torch.py reads and writes the files; these wrappers keep numpy arrays for the
# scripts that use them (tests/torch_interop.sh)

def save_safetensors(path, tensors, metadata=None):
    """tensors: ordered {name: numpy array or torch tensor}."""
    import torch
    try:
        tesla_torch.save({k: torch.as_tensor(v) for k, v in tensors.items()}, path, metadata)
    except (OSError, ValueError) as e:
        die("%s: %s" % (path, e))


def load_safetensors(path):
    """({name: numpy array} as stored, metadata)."""
    try:
        tensors, meta = tesla_torch.read(path)
    except (OSError, ValueError) as e:
        die(str(e))
    return collections.OrderedDict((k, v.numpy()) for k, v in tensors.items()), meta


def spec_state(model):
    """state_dict minus BatchNorm's num_batches_tracked (not a spec tensor: see the table)."""
    return collections.OrderedDict(
        (k, v) for k, v in model.state_dict().items() if not k.endswith(".num_batches_tracked"))


# ---------------------------------------------------------------------------------- modes

def setup_threads(threads):
    import torch
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.set_num_threads(threads)


def env_info():
    import numpy
    import torch
    import platform
    return {"torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(), "blas": _blas.info()}


def mode_params(spec, args):
    import torch
    torch.manual_seed(train_cfg(spec, args)["seed"])
    model, info = build_model(spec)
    per = collections.OrderedDict()
    for (key, kind, shape), m in zip(info, model):
        n = sum(p.numel() for p in m.parameters())
        if n:
            per[key] = {"kind": kind, "params": n,
                        "tensors": {k: list(p.shape) for k, p in m.named_parameters()}}
            if hasattr(m, "in_modes"):  # a TTLinear / TTConv2d
                per[key].update({"storage": "tt", "in_modes": m.in_modes, "out_modes": m.out_modes,
                                 "ranks": m.ranks[1:-1] if kind == "dense" else m.ranks[:-1],
                                 "padded_in": m.padded_in, "padded_out": m.padded_out,
                                 "forward": ("einsum chain " + m.order) if kind == "dense"
                                 else "rebuilt kernel + conv2d"})
    buffers = sum(b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked"))
    out = {"spec": spec.get("name"), "file": spec["__file__"],
           "params": sum(p.numel() for p in model.parameters()),
           "buffers": buffers, "layers": per,
           "shapes": {k: s for k, _, s in info}}
    plan = spec.get("__plan__")
    if plan is not None:  # teslac's counts for the same model
        out["teslac_plan_params"] = plan["totals"]["params"]
        out["matches_teslac_plan"] = plan["totals"]["params"] == out["params"]
    print(json.dumps(out, indent=1))


def mode_bench(spec, args):
    import torch
    setup_threads(args.threads)
    t = train_cfg(spec, args)
    torch.manual_seed(t["seed"])
    x, y = load_split(spec, "train")
    model, _ = build_model(spec)
    model.train()
    opt = make_optimizer(model, t)
    lossf = torch.nn.CrossEntropyLoss()
    B = int(t["batch"])
    n = x.shape[0]
    nb = n // B
    g = torch.Generator().manual_seed(t["seed"])
    perm = torch.randperm(n, generator=g) if t.get("shuffle", True) else torch.arange(n)
    pos = [0]

    def step():
        i = pos[0] % nb
        pos[0] += 1
        idx = perm[i * B:(i + 1) * B]
        xb, yb = x[idx], y[idx]  # the gather is part of a real training step
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    rates = []
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        dt = time.perf_counter() - t0
        times.append(dt)
        rates.append(args.steps * B / dt)
    out = {"spec": spec.get("name"), "mode": "bench", "batch": B, "optimizer": t["optimizer"],
           "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
           "samples_per_s": statistics.median(rates),
           "samples_per_s_all": [round(r, 1) for r in rates],
           "ms_per_step_median": 1000 * statistics.median(times) / args.steps,
           "last_loss": float(loss), **env_info()}
    print(json.dumps(out, indent=1))


def evaluate(model, x, y, bs=1000):
    import torch
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], bs):
            correct += int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum())
    model.train()
    return correct / x.shape[0]


def mode_train(spec, args):
    import torch
    setup_threads(args.threads)
    t = train_cfg(spec, args)
    torch.manual_seed(t["seed"])
    x, y = load_split(spec, "train")
    xt, yt = load_split(spec, "test")
    model, _ = build_model(spec)
    if args.init:
        load_weights(model, args.init)
        model.train()
    opt = make_optimizer(model, t)
    B = int(t["batch"])
    sched = make_schedule(opt, t, (x.shape[0] + B - 1) // B)
    lossf = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(t["seed"])
    n = x.shape[0]
    t_train0 = time.perf_counter()
    print(json.dumps({"spec": spec.get("name"), "mode": "train", "epochs": t["epochs"],
                      "batch": B, "optimizer": t["optimizer"], "lr": t["lr"],
                      "load_s": round(t_train0 - T_START, 3), **env_info()}), flush=True)
    train_s = 0.0
    seen = 0
    reached = None
    hist = []
    model.train()
    steps = 0
    for ep in range(1, int(t["epochs"]) + 1):
        if args.max_steps is not None and steps >= args.max_steps:
            break
        e0 = time.perf_counter()
        perm = torch.randperm(n, generator=g) if t.get("shuffle", True) else torch.arange(n)
        tot, cnt = 0.0, 0
        for i in range(0, n, B):  # the last partial batch is kept, as DataLoader does
            idx = perm[i:i + B]
            opt.zero_grad(set_to_none=True)
            loss = lossf(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            tot += float(loss) * idx.numel()
            cnt += idx.numel()
            steps += 1
            if args.max_steps is not None and steps >= args.max_steps:
                break
        if sched is not None:
            sched.step()
        e1 = time.perf_counter()
        train_s += e1 - e0
        seen += cnt
        acc = None if args.no_eval else evaluate(model, xt, yt)
        e2 = time.perf_counter()
        rec = {"epoch": ep, "train_loss": tot / cnt, "test_acc": acc,
               "epoch_train_s": round(e1 - e0, 3), "eval_s": round(e2 - e1, 3),
               "since_start_s": round(e2 - T_START, 3), "since_train_start_s": round(e2 - t_train0, 3)}
        hist.append(rec)
        print(json.dumps(rec), flush=True)
        if args.target is not None and reached is None and acc is not None and acc >= args.target:
            reached = {"target": args.target, "epoch": ep,
                       "time_to_acc_from_process_start_s": round(e2 - T_START, 3),
                       "time_to_acc_from_train_start_s": round(e2 - t_train0, 3)}
    accs = [h["test_acc"] for h in hist if h["test_acc"] is not None]
    summary = {"summary": True, "final_test_acc": accs[-1] if accs else None,
               "best_test_acc": max(accs, default=None),
               "train_s_total": round(train_s, 3),
               "samples_per_s_train": round(seen / train_s, 1) if train_s else None,
               "total_s": round(time.perf_counter() - T_START, 3)}
    if args.target is not None:
        summary["time_to_accuracy"] = reached or {"target": args.target, "reached": False}
    summary["steps"] = steps
    if args.save:
        st = {k: v.detach().cpu().numpy() for k, v in spec_state(model).items()}
        save_safetensors(args.save, st, {"producer": "bench/peer_torch.py", "step": steps,
                                         "spec": spec.get("name", "")})
        summary["saved"] = args.save
    print(json.dumps(summary), flush=True)


def mode_save_init(spec, args):
    import torch
    t = train_cfg(spec, args)
    torch.manual_seed(t["seed"])
    model, _ = build_model(spec)
    st = {k: v.detach().cpu().numpy() for k, v in spec_state(model).items()}
    save_safetensors(args.save_init, st, {"producer": "bench/peer_torch.py",
                                          "torch": torch.__version__, "seed": t["seed"],
                                          "spec": spec.get("name", "")})
    print(json.dumps({"saved": args.save_init, "seed": t["seed"],
                      "tensors": {k: list(v.shape) for k, v in st.items()}}, indent=1))


def load_weights(model, path):
    """Every spec tensor from a safetensors file (names and shapes checked; a teslac
    checkpoint's __opt__.* and num_batches_tracked are skipped; CSR pruned weights are
    densified by tesla_torch.load)."""
    try:
        tensors = tesla_torch.load(path)
    except (OSError, ValueError) as e:
        die(str(e))
    want = spec_state(model)
    missing = [k for k in want if k not in tensors]
    extra = [k for k in tensors if k not in want and not k.endswith(".num_batches_tracked")]
    if missing or extra:
        die("%s: missing tensors %s, unexpected tensors %s" % (path, missing, extra))
    sd = {}
    for k, v in want.items():
        a = tensors[k]
        if list(a.shape) != list(v.shape):
            die("%s: tensor %s has shape %s, the spec wants %s"
                % (path, k, list(a.shape), list(v.shape)))
        sd[k] = a.to(v.dtype)
    model.load_state_dict(sd, strict=False)


def mode_forward(spec, args):
    import torch
    setup_threads(args.threads)
    torch.manual_seed(train_cfg(spec, args)["seed"])
    model, _ = build_model(spec)
    load_weights(model, args.forward)
    model.eval()  # batchnorm uses running statistics, dropout is off
    xt, yt = load_split(spec, "test")
    with torch.no_grad():
        logits = model(xt[:args.n]).double()
    print(json.dumps({"spec": spec.get("name"), "weights": args.forward, "n": args.n,
                      "mode": "eval", "labels": yt[:args.n].tolist(),
                      "logits": [[float(v) for v in row] for row in logits]}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("spec")
    m = ap.add_mutually_exclusive_group(required=True)
    m.add_argument("--params", action="store_true")
    m.add_argument("--bench", action="store_true")
    m.add_argument("--train", action="store_true")
    m.add_argument("--save-init", metavar="OUT.safetensors")
    m.add_argument("--forward", metavar="IN.safetensors")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--target", type=float)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--teslac", default=DEFAULT_TESLAC, metavar="PATH",
                    help="teslac binary, run for the plan of tt: layers (default %(default)s)")
    ap.add_argument("--plan", metavar="PLAN.json",
                    help="teslac's `plan SPEC --json` output, instead of running --teslac")
    ap.add_argument("--init", metavar="IN.safetensors",
                    help="--train: start from these weights instead of a fresh init")
    ap.add_argument("--max-steps", type=int, metavar="N",
                    help="--train: stop after N optimizer steps (as teslac train --steps)")
    ap.add_argument("--save", metavar="OUT.safetensors",
                    help="--train: write the trained state_dict here at the end")
    ap.add_argument("--no-eval", action="store_true",
                    help="--train: skip the test-set evaluation after each epoch")
    ap.add_argument("--blas", default="auto", choices=["auto", "system", "openblas"],
                    help="BLAS under numpy/torch (see bench/_blas.py); default auto")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.n < 0:
        ap.error("--threads, --steps, --repeats must be >= 1; --warmup, --n >= 0")
    if args.max_steps is not None and args.max_steps < 1:
        ap.error("--max-steps must be >= 1")
    if (args.init or args.max_steps is not None or args.save or args.no_eval) and not args.train:
        ap.error("--init, --max-steps, --save and --no-eval go with --train")
    if args.target is not None and args.no_eval:
        ap.error("--target needs the evaluation (drop --no-eval)")
    _blas.select(args.blas, args.threads)
    spec = load_spec(args.spec)
    if args.plan or needs_plan(spec):  # tt: layers take their modes and ranks from teslac
        spec["__plan__"] = get_plan(spec, args)
    if args.params:
        mode_params(spec, args)
    elif args.bench:
        mode_bench(spec, args)
    elif args.train:
        mode_train(spec, args)
    elif args.save_init:
        mode_save_init(spec, args)
    else:
        mode_forward(spec, args)


if __name__ == "__main__":
    main()
