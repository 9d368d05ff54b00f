#!/usr/bin/python3
"""PyTorch peer for TESLA: the same model, data, batch and optimizer as a TESLA spec.

Reads a spec (shared/design/spec-language.md, version 1), builds the equivalent
nn.Sequential and then, by mode:

  --params                      parameter counts (total and per layer) as JSON
  --bench  --threads T --steps N --warmup W [--repeats R]
                                samples/s of training steps (median of R repeats) as JSON
  --train  [--epochs E] --threads T [--target ACC]
                                full training: per-epoch test accuracy and wall time, and
                                time to ACC if given (JSON lines, then a JSON summary)
  --save-init OUT.safetensors [--seed S]
                                the freshly initialized state_dict, as safetensors
  --forward IN.safetensors [--n K]
                                load weights, print the logits of the first K test samples

Module layout: one Sequential entry per spec layer, in order, keyed by the layer's `name:`
or its 0-based index, so state_dict() names are exactly the spec's tensor names
(`<layer>.weight`, `head.bias`, ...). The implicit flatten before the first dense after a
spatial layer is NOT a Sequential entry of its own (that would shift the indices): that
dense layer is a FlattenLinear, an nn.Linear whose forward flattens its input in (C, H, W)
order first. An explicit `flatten:` layer is an nn.Flatten at its own index. `softmax`
(last only) is an nn.Identity at its index: the model outputs logits and the softmax is
fused into CrossEntropyLoss, as TESLA fuses it into cross_entropy.

The peer is dense: `tt:` and `sparsity:` keys are accepted and ignored (with a note on
stderr), so its counts and speed are those of the dense model.

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
import _blas  # noqa: E402

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
    scale = float(data.get("scale", 1))
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


def pair(v, what):
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    die("%s must be an int or a pair, got %r" % (what, v))


def build_model(spec):
    """nn.Sequential with one entry per spec layer; returns (model, [(key, kind, out_shape)])."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class FlattenLinear(nn.Linear):
        """nn.Linear that flattens (N, C, H, W) -> (N, C*H*W) first: the spec's implicit flatten."""

        def forward(self, x):
            return F.linear(x.flatten(1), self.weight, self.bias)

    shape = tuple(int(d) for d in spec["input"])
    entries = []
    info = []
    notes = []
    layers = spec["layers"]
    for i, item in enumerate(layers):
        if isinstance(item, str):
            kind, cfg = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            kind, cfg = next(iter(item.items()))
            cfg = cfg or {}
        else:
            die("layer %d: expected one '- kind: {...}' entry" % i)
        if not isinstance(cfg, dict):
            die("layer %d (%s): keys must be a map" % (i, kind))
        key = str(cfg.get("name", i))
        for k in ("tt", "sparsity"):
            if k in cfg:
                notes.append("layer %s: '%s' ignored, the peer is dense" % (key, k))
        spatial = len(shape) == 3
        if kind == "dense":
            units = int(cfg["units"])
            fan_in = int(math.prod(shape))
            cls = FlattenLinear if len(shape) > 1 else nn.Linear
            m = cls(fan_in, units, bias=bool(cfg.get("bias", True)))
            shape = (units,)
        elif kind == "conv":
            if not spatial:
                die("layer %s: conv needs a (C, H, W) input, got %s" % (key, list(shape)))
            c, h, w = shape
            kh, kw = pair(cfg["kernel"], "kernel")
            sh, sw = pair(cfg.get("stride", 1), "stride")
            pad = cfg.get("padding", 0)
            if pad == "valid":
                pad = 0
            if pad == "same":
                if (sh, sw) != (1, 1):
                    die("layer %s: padding same needs stride 1" % key)
                if kh % 2 and kw % 2:
                    ph, pw = (kh - 1) // 2, (kw - 1) // 2
                    tpad = (ph, pw)
                else:
                    tpad = "same"  # PyTorch pads the extra row/col at the end
                    ph, pw = None, None
                oh, ow = h, w
            else:
                ph, pw = pair(pad, "padding")
                tpad = (ph, pw)
                oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            k = int(cfg["filters"])
            m = nn.Conv2d(c, k, (kh, kw), stride=(sh, sw), padding=tpad,
                          bias=bool(cfg.get("bias", True)))
            shape = (k, oh, ow)
        elif kind in ("maxpool", "avgpool"):
            if not spatial:
                die("layer %s: %s needs a (C, H, W) input" % (key, kind))
            size = pair(cfg["size"], "size")
            stride = pair(cfg.get("stride", cfg["size"]), "stride")
            pad = pair(cfg.get("padding", 0), "padding")
            m = (nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(size, stride, pad)
            c, h, w = shape
            shape = (c, (h + 2 * pad[0] - size[0]) // stride[0] + 1,
                     (w + 2 * pad[1] - size[1]) // stride[1] + 1)
        elif kind == "batchnorm":
            eps = float(cfg.get("eps", 1e-5))
            mom = float(cfg.get("momentum", 0.1))
            if spatial:
                m = nn.BatchNorm2d(shape[0], eps=eps, momentum=mom)
            elif len(shape) == 1:
                m = nn.BatchNorm1d(shape[0], eps=eps, momentum=mom)
            else:
                die("layer %s: batchnorm on shape %s" % (key, list(shape)))
        elif kind == "relu":
            m = nn.ReLU()
        elif kind == "leaky_relu":
            m = nn.LeakyReLU(float(cfg.get("slope", 0.01)))
        elif kind == "dropout":
            m = nn.Dropout(float(cfg.get("rate", 0.5)))
        elif kind == "flatten":
            m = nn.Flatten()
            shape = (int(math.prod(shape)),)
        elif kind == "softmax":
            if i != len(layers) - 1:
                die("layer %s: softmax must be the last layer" % key)
            m = nn.Identity()  # logits out; softmax is fused into CrossEntropyLoss
        else:
            die("layer %d: unknown layer kind %r" % (i, kind))
        if "dims" in cfg and hasattr(m, "weight") and kind in ("dense", "conv"):
            if list(cfg["dims"]) != list(m.weight.shape):
                die("layer %s: dims %s do not match the inferred weight dims %s"
                    % (key, list(cfg["dims"]), list(m.weight.shape)))
        init = cfg.get("init", "kaiming_uniform")
        if kind in ("dense", "conv") and init != "kaiming_uniform":
            with torch.no_grad():
                if init in ("glorot", "glorot_uniform", "xavier_uniform"):
                    nn.init.xavier_uniform_(m.weight)
                elif init == "zeros":
                    nn.init.zeros_(m.weight)
                else:
                    die("layer %s: init %r not supported by the peer" % (key, init))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if any(key == e[0] for e in entries):
            die("layer name %r used twice" % key)
        entries.append((key, m))
        info.append((key, kind, list(shape)))
    classes = spec.get("classes")
    if classes is not None and shape != (int(classes),):
        die("classes: %s but the last layer outputs %s" % (classes, list(shape)))
    for n in notes:
        print("peer_torch: note: " + n, file=sys.stderr)
    return nn.Sequential(collections.OrderedDict(entries)), info


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

_ST_DT = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: ordered {name: numpy array}. Writes u64 LE header length, JSON header, data."""
    import numpy as np
    rev = {np.dtype(v): k for k, v in _ST_DT.items()}
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dt not in rev:
            die("cannot store dtype %s in safetensors" % a.dtype)
        b = a.astype(dt, copy=False).tobytes()
        header[name] = {"dtype": rev[dt], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # pad so the data starts 8-aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    import numpy as np
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        die("%s: not a safetensors file" % path)
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        die("%s: header runs past the end of the file" % path)
    header = json.loads(raw[8:8 + n].decode())
    data = raw[8 + n:]
    out = collections.OrderedDict()
    for name, d in header.items():
        if name == "__metadata__":
            continue
        if d["dtype"] not in _ST_DT:
            die("%s: tensor %s has unsupported dtype %s" % (path, name, d["dtype"]))
        a, b = d["data_offsets"]
        dt = np.dtype(_ST_DT[d["dtype"]])
        if not (0 <= a <= b <= len(data)) or (b - a) != dt.itemsize * math.prod(d["shape"]):
            die("%s: tensor %s has bad data_offsets" % (path, name))
        out[name] = np.frombuffer(data[a:b], dtype=dt).reshape(d["shape"]).copy()
    return out, header.get("__metadata__", {})


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
    buffers = sum(b.numel() for k, b in model.named_buffers() if not k.endswith("num_batches_tracked"))
    out = {"spec": spec.get("name"), "file": spec["__file__"],
           "params": sum(p.numel() for p in model.parameters()),
           "buffers": buffers, "layers": per,
           "shapes": {k: s for k, _, s in info}}
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
    reached = None
    hist = []
    model.train()
    for ep in range(1, int(t["epochs"]) + 1):
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
        if sched is not None:
            sched.step()
        e1 = time.perf_counter()
        train_s += e1 - e0
        acc = evaluate(model, xt, yt)
        e2 = time.perf_counter()
        rec = {"epoch": ep, "train_loss": tot / cnt, "test_acc": acc,
               "epoch_train_s": round(e1 - e0, 3), "eval_s": round(e2 - e1, 3),
               "since_start_s": round(e2 - T_START, 3), "since_train_start_s": round(e2 - t_train0, 3)}
        hist.append(rec)
        print(json.dumps(rec), flush=True)
        if args.target is not None and reached is None and acc >= args.target:
            reached = {"target": args.target, "epoch": ep,
                       "time_to_acc_from_process_start_s": round(e2 - T_START, 3),
                       "time_to_acc_from_train_start_s": round(e2 - t_train0, 3)}
    summary = {"summary": True, "final_test_acc": hist[-1]["test_acc"] if hist else None,
               "best_test_acc": max((h["test_acc"] for h in hist), default=None),
               "train_s_total": round(train_s, 3),
               "samples_per_s_train": round(n * len(hist) / train_s, 1) if train_s else None,
               "total_s": round(time.perf_counter() - T_START, 3)}
    if args.target is not None:
        summary["time_to_accuracy"] = reached or {"target": args.target, "reached": False}
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


def mode_forward(spec, args):
    import torch
    setup_threads(args.threads)
    torch.manual_seed(train_cfg(spec, args)["seed"])
    model, _ = build_model(spec)
    tensors, _meta = load_safetensors(args.forward)
    want = spec_state(model)
    missing = [k for k in want if k not in tensors]
    # a teslac checkpoint also holds its optimizer state under "__opt__.": not model tensors
    extra = [k for k in tensors if k not in want and not k.endswith(".num_batches_tracked")
             and not k.startswith("__opt__.")]
    if missing or extra:
        die("%s: missing tensors %s, unexpected tensors %s" % (args.forward, missing, extra))
    sd = {}
    for k, v in want.items():
        a = torch.from_numpy(tensors[k])
        if list(a.shape) != list(v.shape):
            die("%s: tensor %s has shape %s, the spec wants %s"
                % (args.forward, k, list(a.shape), list(v.shape)))
        sd[k] = a.to(v.dtype)
    model.load_state_dict(sd, strict=False)
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
    ap.add_argument("--blas", default="auto", choices=["auto", "system", "openblas"],
                    help="BLAS under numpy/torch (see bench/_blas.py); default auto")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.repeats < 1 or args.warmup < 0 or args.n < 0:
        ap.error("--threads, --steps, --repeats must be >= 1; --warmup, --n >= 0")
    _blas.select(args.blas, args.threads)
    spec = load_spec(args.spec)
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
