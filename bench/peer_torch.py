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
layer is dense here.

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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TESLAC = os.path.join(ROOT, "build", "compiler", "teslac")


def needs_plan(spec):
    """True when a layer asks for tensor-train storage (only teslac's plan has its modes)."""
    for item in spec.get("layers") or []:
        if isinstance(item, dict) and len(item) == 1:
            cfg = next(iter(item.values()))
            if isinstance(cfg, dict) and "tt" in cfg:
                return True
    return False


def get_plan(spec, args):
    """teslac's plan as a dict: from --plan FILE, else `teslac plan SPEC --json [--batch B]`."""
    import subprocess
    if getattr(args, "plan", None):
        try:
            with open(args.plan) as f:
                return json.load(f)
        except (OSError, ValueError) as e:
            die("--plan %s: %s" % (args.plan, e))
    teslac = getattr(args, "teslac", None) or DEFAULT_TESLAC
    cmd = [teslac, "plan", spec["__file__"], "--json"]
    if getattr(args, "batch", None) is not None:
        cmd += ["--batch", str(args.batch)]  # the planner picks modes and order per batch
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        die("the spec has tt: layers, whose modes and ranks come from teslac's plan, but %s "
            "cannot be run (%s); build teslac or pass --teslac PATH or --plan FILE" % (teslac, e))
    if r.returncode != 0:
        die("%s failed (exit %d):\n%s" % (" ".join(cmd), r.returncode, r.stderr.rstrip()))
    for line in r.stderr.splitlines():  # teslac's warnings (e.g. a TT slower than dense)
        print("peer_torch: teslac: " + line, file=sys.stderr)
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        die("%s: not JSON (%s)" % (" ".join(cmd), e))


def tt_init_var(init, fan_in, fan_out):
    """Variance of the dense weight's init, which the TT product is scaled to (teslac's rule)."""
    if init in (None, "default"):
        return 1.0 / (3.0 * fan_in)  # U(-1/sqrt(fan_in), +): PyTorch's default
    if init in ("kaiming_uniform", "kaiming_normal"):
        return 2.0 / fan_in
    if init in ("glorot", "glorot_uniform", "xavier_uniform", "glorot_normal", "xavier_normal"):
        return 2.0 / (fan_in + fan_out)
    if init == "zeros":
        return 0.0
    die("init %r not supported by the peer" % init)


def tt_core_std(var, inner_ranks, ncores):
    """sd = (var / prod(inner ranks))^(1 / (2 ncores)); 0 for a zero variance."""
    if var <= 0:
        return 0.0
    return math.exp((math.log(var) - sum(math.log(r) for r in inner_ranks)) / (2.0 * ncores))


_TT = {}


def tt_classes():
    """(TTLinear, TTConv2d), defined once torch is imported."""
    if _TT:
        return _TT["linear"], _TT["conv"]
    import torch
    from torch import nn
    import torch.nn.functional as F

    class TTLinear(nn.Module):
        """y = x W^T + b with W (out_dim, in_dim) a tensor train that is never formed.

        core.k: (r[k], m[k], n[k], r[k+1]), r[0] = r[d] = 1, m = in_modes, n = out_modes, both
        row-major; W[j, i] = core.0[:, i1, j1, :] @ ... @ core.{d-1}[:, id, jd, :] on the padded
        dims (padded_out, padded_in), of which the first out_dim rows and in_dim columns are
        used. forward: pad x with zeros to padded_in, reshape to the modes, contract one core
        at a time (one torch.einsum each: one input mode and one rank in, one output mode and
        the next rank out), slice to out_dim, add the bias."""

        def __init__(self, tt, bias=True, flatten=False, order="rtl", sd=1.0, bias_bound=None):
            super().__init__()
            self.in_modes = [int(v) for v in tt["in_modes"]]
            self.out_modes = [int(v) for v in tt["out_modes"]]
            d = len(self.in_modes)
            ranks = [1] + [int(v) for v in tt["ranks"]] + [1]
            if len(self.out_modes) != d or len(ranks) != d + 1:
                die("TT plan: %d in_modes, %d out_modes, %d inner ranks (want d, d, d-1)"
                    % (d, len(self.out_modes), len(tt["ranks"])))
            self.ranks = ranks
            self.in_dim, self.out_dim = int(tt["in_dim"]), int(tt["out_dim"])
            self.padded_in, self.padded_out = int(tt["padded_in"]), int(tt["padded_out"])
            if math.prod(self.in_modes) != self.padded_in or math.prod(self.out_modes) != self.padded_out:
                die("TT plan: modes %s -> %s do not multiply to padded %d -> %d"
                    % (self.in_modes, self.out_modes, self.padded_in, self.padded_out))
            if order not in ("ltr", "rtl"):
                die("TTLinear: chain order %r (ltr or rtl)" % order)
            self.order = order
            self.flatten = flatten
            self.core = nn.ParameterList(
                nn.Parameter(torch.empty(ranks[k], self.in_modes[k], self.out_modes[k], ranks[k + 1]))
                for k in range(d))
            self.bias = nn.Parameter(torch.empty(self.out_dim)) if bias else None
            with torch.no_grad():
                for c in self.core:
                    c.normal_(0.0, sd) if sd > 0 else c.zero_()
                if self.bias is not None:
                    bb = bias_bound if bias_bound is not None else 1.0 / math.sqrt(self.in_dim)
                    self.bias.uniform_(-bb, bb)

        @property
        def weight_shape(self):
            return [self.out_dim, self.in_dim]

        def forward(self, x):
            if self.flatten:
                x = x.flatten(1)
            B = x.shape[0]
            if self.padded_in != self.in_dim:
                x = F.pad(x, (0, self.padded_in - self.in_dim))
            m, n = self.in_modes, self.out_modes
            d = len(m)
            if self.order == "ltr":
                # t: (B, outputs done, rank, inputs left); core k takes input mode k (the most
                # significant one left) and appends output mode k (the least significant so far)
                t = x.reshape(B, 1, 1, self.padded_in)
                done, left = 1, self.padded_in
                for k in range(d):
                    left //= m[k]
                    t = t.reshape(B, done, self.ranks[k], m[k], left)
                    t = torch.einsum("bariS,rijq->bajqS", t, self.core[k])
                    done *= n[k]
                y = t.reshape(B, self.padded_out)
            else:
                # t: (B, inputs left, rank, outputs done); core k takes input mode k (the least
                # significant one left) and prepends output mode k (the most significant so far)
                t = x.reshape(B, self.padded_in, 1, 1)
                done, left = 1, self.padded_in
                for k in reversed(range(d)):
                    left //= m[k]
                    t = t.reshape(B, left, m[k], self.ranks[k + 1], done)
                    t = torch.einsum("bSiqa,rijq->bSrja", t, self.core[k])
                    done *= n[k]
                y = t.reshape(B, self.padded_out)
            if self.padded_out != self.out_dim:
                y = y[:, :self.out_dim]
            return y + self.bias if self.bias is not None else y

        def extra_repr(self):
            return "in %d (padded %d) -> out %d (padded %d), modes %s -> %s, ranks %s, %s" % (
                self.in_dim, self.padded_in, self.out_dim, self.padded_out, self.in_modes,
                self.out_modes, self.ranks[1:-1], self.order)

    class TTConv2d(nn.Module):
        """nn.Conv2d whose (K, C, kh, kw) kernel is a tensor train, rebuilt every forward.

        core.0: (1, kh, kw, r0), the spatial core; core.k+1: (r_k, c_k, s_k, r_{k+1}) over the
        channel modes c (in_modes, prod = padded C) and the filter modes s (out_modes, prod =
        padded K), the last rank 1: W[s, c, x, y] = core.0[0, x, y, :] @ core.1[:, c1, s1, :] @ ...
        The kernel is formed by multiplying the cores left to right, permuted to (K, C, kh, kw),
        sliced to the real K and C, then F.conv2d."""

        def __init__(self, tt, kernel, stride, padding, bias=True, sd=1.0, bias_bound=None):
            super().__init__()
            self.in_modes = [int(v) for v in tt["in_modes"]]
            self.out_modes = [int(v) for v in tt["out_modes"]]
            d = len(self.in_modes)
            ranks = [int(v) for v in tt["ranks"]] + [1]  # r0 (after the spatial core) ... r_d = 1
            if len(self.out_modes) != d or len(ranks) != d + 1:
                die("TT conv plan: %d in_modes, %d out_modes, %d ranks (want d, d, d)"
                    % (d, len(self.out_modes), len(tt["ranks"])))
            self.ranks = ranks
            self.kh, self.kw = kernel
            self.stride, self.padding = stride, padding
            self.in_dim, self.out_dim = int(tt["in_dim"]), int(tt["out_dim"])  # C, K
            self.padded_in, self.padded_out = int(tt["padded_in"]), int(tt["padded_out"])
            if math.prod(self.in_modes) != self.padded_in or math.prod(self.out_modes) != self.padded_out:
                die("TT conv plan: modes %s -> %s do not multiply to padded %d -> %d"
                    % (self.in_modes, self.out_modes, self.padded_in, self.padded_out))
            shapes = [(1, self.kh, self.kw, ranks[0])] + [
                (ranks[k], self.in_modes[k], self.out_modes[k], ranks[k + 1]) for k in range(d)]
            self.core = nn.ParameterList(nn.Parameter(torch.empty(*sh)) for sh in shapes)
            self.bias = nn.Parameter(torch.empty(self.out_dim)) if bias else None
            with torch.no_grad():
                for c in self.core:
                    c.normal_(0.0, sd) if sd > 0 else c.zero_()
                if self.bias is not None:
                    fan_in = self.in_dim * self.kh * self.kw
                    bb = bias_bound if bias_bound is not None else 1.0 / math.sqrt(fan_in)
                    self.bias.uniform_(-bb, bb)

        @property
        def weight_shape(self):
            return [self.out_dim, self.in_dim, self.kh, self.kw]

        def kernel(self):
            d = len(self.in_modes)
            w = self.core[0].reshape(self.kh * self.kw, self.ranks[0])
            for c in self.core[1:]:
                w = (w @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
            pairs = [v for k in range(d) for v in (self.in_modes[k], self.out_modes[k])]
            w = w.reshape(self.kh, self.kw, *pairs)                  # (kh, kw, c1, s1, c2, s2, ...)
            w = w.permute(*range(3, 2 + 2 * d, 2), *range(2, 2 + 2 * d, 2), 0, 1)  # (s.., c.., kh, kw)
            w = w.reshape(self.padded_out, self.padded_in, self.kh, self.kw)
            if self.padded_out != self.out_dim or self.padded_in != self.in_dim:
                w = w[:self.out_dim, :self.in_dim]
            return w

        def forward(self, x):
            return F.conv2d(x, self.kernel(), self.bias, self.stride, self.padding)

        def extra_repr(self):
            return "%d -> %d channels (padded %d -> %d), kernel %dx%d, modes %s -> %s, ranks %s" % (
                self.in_dim, self.out_dim, self.padded_in, self.padded_out, self.kh, self.kw,
                self.in_modes, self.out_modes, self.ranks[:-1])

    _TT["linear"], _TT["conv"] = TTLinear, TTConv2d
    return TTLinear, TTConv2d


def chain_order(tt):
    """The TT chain direction: the plan's when it runs a chain, else the cheaper chain."""
    order = tt.get("order")
    if order in ("ltr", "rtl"):
        return order
    fl = tt.get("flops") or {}

    def cost(o):
        f = fl.get(o)
        return f["forward"] + f["backward"] if f else float("inf")
    return "ltr" if cost("ltr") < cost("rtl") else "rtl"


def check_tt_tensors(key, m, planned):
    """The module's state_dict must have exactly the plan's tensor names and shapes."""
    have = {"%s.%s" % (key, k): list(v.shape) for k, v in m.state_dict().items()}
    want = {t["name"]: list(t["shape"]) for t in planned.get("tensors", [])}
    if have != want:
        die("layer %s: the TT module's tensors %s are not the plan's %s" % (key, have, want))


def build_model(spec, plan=None):
    """nn.Sequential with one entry per spec layer; returns (model, [(key, kind, out_shape)]).

    plan: teslac's `plan --json` dict, needed when a layer has `tt:` (get_plan); default: the
    one main() stored in spec["__plan__"]."""
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
    if plan is None:
        plan = spec.get("__plan__")
    planned = (plan or {}).get("layers") or []
    if plan is not None and len(planned) != len(layers):
        die("the plan has %d layers, the spec %d (is it this spec's plan?)" % (len(planned), len(layers)))
    TTLinear, TTConv2d = tt_classes()
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
        pl = planned[i] if planned else None
        if pl is not None and str(pl.get("name")) != key:
            die("layer %d is %r in the plan, %r in the spec (is it this spec's plan?)"
                % (i, pl.get("name"), key))
        tt = pl.get("tt") if pl is not None and pl.get("storage") == "tt" else None
        if "tt" in cfg and tt is None:
            if pl is None:
                die("layer %s: tt: needs teslac's plan (get_plan)" % key)
            notes.append("layer %s: 'tt' planned %s by teslac, so dense here too"
                         % (key, pl.get("storage")))
        if "sparsity" in cfg:
            notes.append("layer %s: 'sparsity' ignored, the peer is dense" % key)
        init = cfg.get("init")
        spatial = len(shape) == 3
        if kind == "dense":
            units = int(cfg["units"])
            fan_in = int(math.prod(shape))
            if tt is not None:
                if int(tt["in_dim"]) != fan_in or int(tt["out_dim"]) != units:
                    die("layer %s: the TT plan is %s -> %s, the layer %d -> %d"
                        % (key, tt["in_dim"], tt["out_dim"], fan_in, units))
                sd = tt_core_std(tt_init_var(init, fan_in, units), tt["ranks"], len(tt["in_modes"]))
                m = TTLinear(tt, bias=bool(cfg.get("bias", True)), flatten=len(shape) > 1,
                             order=chain_order(tt), sd=sd)
                check_tt_tensors(key, m, pl)
            else:
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
            if tt is not None:
                if int(tt["in_dim"]) != c or int(tt["out_dim"]) != k:
                    die("layer %s: the TT plan is %s -> %s channels, the layer %d -> %d"
                        % (key, tt["in_dim"], tt["out_dim"], c, k))
                # cores: the spatial one and one per channel mode; inner ranks: r0 ... r_{d-1}
                sd = tt_core_std(tt_init_var(init, c * kh * kw, k * kh * kw), tt["ranks"],
                                 len(tt["in_modes"]) + 1)
                m = TTConv2d(tt, (kh, kw), (sh, sw), tpad, bias=bool(cfg.get("bias", True)), sd=sd)
                check_tt_tensors(key, m, pl)
            else:
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
        if "dims" in cfg and kind in ("dense", "conv"):
            wshape = m.weight_shape if tt is not None else list(m.weight.shape)
            if list(cfg["dims"]) != list(wshape):
                die("layer %s: dims %s do not match the inferred weight dims %s"
                    % (key, list(cfg["dims"]), list(wshape)))
        # init: only the weight follows it, the bias keeps PyTorch's default (specs/README.md,
        # "init"); a TT layer's cores were drawn above from the same variance
        if kind in ("dense", "conv") and init is not None and tt is None:
            with torch.no_grad():
                if init == "kaiming_uniform":      # a = 0, not the layer default's a = sqrt(5)
                    nn.init.kaiming_uniform_(m.weight)
                elif init == "kaiming_normal":
                    nn.init.kaiming_normal_(m.weight)
                elif init in ("glorot", "glorot_uniform", "xavier_uniform"):
                    nn.init.xavier_uniform_(m.weight)
                elif init in ("glorot_normal", "xavier_normal"):
                    nn.init.xavier_normal_(m.weight)
                elif init == "zeros":
                    nn.init.zeros_(m.weight)
                else:
                    die("layer %s: init %r not supported by the peer" % (key, init))
        if any(key == e[0] for e in entries):
            die("layer name %r used twice" % key)
        entries.append((key, m))
        info.append((key, kind, list(shape)))
    classes = spec.get("classes")
    if isinstance(classes, list):   # class names: their count is the number of classes
        classes = len(classes)
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
    checkpoint's __opt__.* and num_batches_tracked are skipped)."""
    import torch
    tensors, meta = load_safetensors(path)
    # a pruned weight is CSR (specs/README.md, "pruned weights"): densify it as that page does
    for name in [k[:-len(".values")] for k in list(tensors) if k.endswith(".values") and not k.startswith("__opt__.")]:
        shape = json.loads(meta[name + ".shape"])
        w = torch.sparse_csr_tensor(torch.from_numpy(tensors.pop(name + ".crow_indices")).long(),
                                    torch.from_numpy(tensors.pop(name + ".col_indices")).long(),
                                    torch.from_numpy(tensors.pop(name + ".values")),
                                    size=(shape[0], math.prod(shape[1:])))
        tensors[name] = w.to_dense().reshape(shape).numpy()
    want = spec_state(model)
    missing = [k for k in want if k not in tensors]
    # a teslac checkpoint also holds its optimizer state under "__opt__.": not model tensors
    extra = [k for k in tensors if k not in want and not k.endswith(".num_batches_tracked")
             and not k.startswith("__opt__.")]
    if missing or extra:
        die("%s: missing tensors %s, unexpected tensors %s" % (path, missing, extra))
    sd = {}
    for k, v in want.items():
        a = torch.from_numpy(tensors[k])
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
