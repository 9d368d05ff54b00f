#!/usr/bin/python3
"""tesla_torch: teslac's weight files and models in PyTorch, with torch as the only dependency.

    import tesla_torch                                    # tools/tesla_torch.py
    m = tesla_torch.model("specs/mlp.yaml")               # the spec's nn.Sequential
    m.load_state_dict(tesla_torch.load("mlp.safetensors")); m.eval()
    x, y = tesla_torch.dataset("specs/mlp.yaml", "test")  # the spec's data, scaled, (N, *input)
    tesla_torch.save(m.state_dict(), "w.safetensors", {"note": "fine-tuned"})  # teslac --init / --weights

It stands beside teslac, not inside it: teslac writes safetensors files and plans models; this
module reads and writes the same files (load, save, metadata) without the safetensors package,
and builds the spec's network as torch modules (model, build) without PyYAML, by reading the
spec with a small YAML reader (read_spec) and asking teslac for its plan (`teslac plan --json`:
the tensor-train modes and ranks, and a cross-check of every layer's kind, output shape and
tensor names). bench/peer_torch.py, the PyTorch side of the benchmarks and of
tests/torch_interop.sh, builds its models with this module's build().

Module layout: one Sequential entry per spec layer, in order, keyed by the layer's `name:` or its
0-based index, so state_dict() names are exactly teslac's tensor names (`<layer>.weight`,
`head.bias`, ...; specs/README.md, "Tensor names in weight files"). The implicit flatten before
the first dense after a spatial layer is NOT an entry of its own (that would shift the indices):
that dense layer is a FlattenLinear, an nn.Linear whose forward flattens its input in (C, H, W)
order first. An explicit `flatten:` layer is an nn.Flatten at its own index. `softmax` (last
only) is an nn.Identity at its index: the model outputs logits (softmax is fused into
CrossEntropyLoss, as teslac fuses it into cross_entropy). A layer with `sparsity:` is a dense
layer here (load() densifies its CSR weight).

Tensor-train layers follow teslac's plan: a layer planned `"storage": "tt"` is a TTLinear (dense)
or TTConv2d (conv) with exactly the planned modes, ranks and padding, whose parameters are the
cores `core.0`, `core.1`, ... and `bias`, so state_dict() keys are teslac's (`8.core.0`, `8.bias`).
TTLinear never forms W: its forward pads x to the padded input dim, reshapes it to the input
modes and contracts it with one core at a time (torch.einsum, as T3F and tensorly-torch do), in
the plan's chain direction (for a layer teslac runs as `form_w`, the direction the plan prices
cheaper), then slices the padded output. TTConv2d rebuilds its (K, C, kh, kw) kernel from the
cores every forward (Garipov's rebuilt-kernel path, which is what teslac runs) and calls
F.conv2d. Cores start N(0, sd^2), sd = (var / prod(inner ranks))^(1/(2*cores)), var the dense
init's variance (1/(3*fan_in) by default): teslac's rule.

Errors are exceptions: ValueError (SpecError for a spec or plan this module cannot follow) with
the file and the reason; a truncated or corrupt weight file never gives garbage tensors.

Command line: `python3 tools/tesla_torch.py info W.safetensors` prints the tensors' names,
dtypes and shapes and the metadata. See specs/README.md, "Python bridge".
"""
import collections
import ctypes
import gzip
import json
import math
import os
import re
import struct
import subprocess
import sys

# torch is imported inside the functions, not here: bench/peer_torch.py picks its BLAS (which
# may re-execute the interpreter) before torch is loaded, and imports this module before that.


class SpecError(ValueError):
    """A spec, or a teslac plan, that this module cannot turn into a torch module."""


# ---------------------------------------------------------------------------- safetensors

# name -> (torch dtype attribute, bytes per element); teslac's reader knows the same ten
_DTYPES = {"F32": ("float32", 4), "F64": ("float64", 8), "F16": ("float16", 2),
           "BF16": ("bfloat16", 2), "I64": ("int64", 8), "I32": ("int32", 4),
           "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1), "BOOL": ("bool", 1)}
_MAX_HEADER = 100000000  # the reference implementation's limit, as teslac's


def _torch_dtype(name):
    import torch
    return getattr(torch, _DTYPES[name][0])


def _parse(raw, path):
    """(header entries {name: (dtype, shape, begin, end)} in file order, metadata, data offset).

    Checks what teslac's reader (runtime/rt_safetensors.c) checks: the header length, the JSON,
    each entry's dtype, shape and data_offsets (shape x dtype size == end - begin), and that the
    tensors cover the data without gaps or overlap."""
    if len(raw) < 8:
        raise ValueError("%s: truncated: %d bytes, too short for the 8-byte header length"
                         % (path, len(raw)))
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER:
        raise ValueError("%s: header length %d is larger than the %d-byte limit (not a "
                         "safetensors file?)" % (path, n, _MAX_HEADER))
    if 8 + n > len(raw):
        raise ValueError("%s: header length %d is larger than the file (%d bytes): truncated "
                         "or not a safetensors file" % (path, n, len(raw)))
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"),
                            object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError("%s: bad header JSON: %s" % (path, e)) from None
    if not isinstance(header, dict):
        raise ValueError("%s: the header is not a JSON object" % path)
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError("%s: __metadata__ must be a map of strings" % path)
    size = len(raw) - 8 - n
    entries = collections.OrderedDict()
    for name, d in header.items():
        if not isinstance(d, dict):
            raise ValueError("%s: tensor '%s': not a JSON object" % (path, name))
        for key in ("dtype", "shape", "data_offsets"):
            if key not in d:
                raise ValueError("%s: tensor '%s': no \"%s\"" % (path, name, key))
        dt, shape, off = d["dtype"], d["shape"], d["data_offsets"]
        if dt not in _DTYPES:
            raise ValueError("%s: tensor '%s': unknown dtype %r (known: %s)"
                             % (path, name, dt, " ".join(_DTYPES)))
        if not isinstance(shape, list) or not all(_is_count(v) for v in shape):
            raise ValueError("%s: tensor '%s': shape %r is not a list of non-negative integers"
                             % (path, name, shape))
        if not isinstance(off, list) or len(off) != 2 or not all(_is_count(v) for v in off) \
                or off[0] > off[1]:
            raise ValueError("%s: tensor '%s': data_offsets %r is not [begin, end] with "
                             "0 <= begin <= end" % (path, name, off))
        nbytes = math.prod(shape) * _DTYPES[dt][1]
        if off[1] - off[0] != nbytes:
            raise ValueError("%s: tensor '%s': shape %s and dtype %s give %d bytes but "
                             "data_offsets [%d, %d] hold %d"
                             % (path, name, shape, dt, nbytes, off[0], off[1], off[1] - off[0]))
        if off[1] > size:
            raise ValueError("%s: tensor '%s': data_offsets [%d, %d] run past the data (%d "
                             "bytes): the file is truncated" % (path, name, off[0], off[1], size))
        entries[name] = (dt, shape, off[0], off[1])
    pos, prev = 0, None
    for name, (_, _, a, b) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if a < pos:
            raise ValueError("%s: tensor '%s': data_offsets [%d, %d] overlap tensor '%s'"
                             % (path, name, a, b, prev))
        if a > pos:
            raise ValueError("%s: tensor '%s': a gap of %d bytes before its data_offsets "
                             "[%d, %d]" % (path, name, a - pos, a, b))
        pos, prev = b, name
    if pos != size:
        raise ValueError("%s: the tensors hold %d bytes of data but the file has %d after the "
                         "header" % (path, pos, size))
    return entries, meta, 8 + n


def _no_duplicates(pairs):
    d = collections.OrderedDict()
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _read_file(path):
    with open(path, "rb") as f:
        return f.read()


def read(path):
    """(tensors, metadata): every tensor of a safetensors file as it is stored (CSR parts and
    __opt__.* included), in file order, and the __metadata__ map (strings)."""
    import torch
    raw = _read_file(path)
    entries, meta, base = _parse(raw, path)
    if sys.byteorder != "little":
        raise ValueError("%s: reading safetensors needs a little-endian host" % path)
    out = collections.OrderedDict()
    for name, (dt, shape, a, b) in entries.items():
        if a == b:
            out[name] = torch.zeros(shape, dtype=_torch_dtype(dt))
        else:
            out[name] = torch.frombuffer(bytearray(raw[base + a:base + b]),
                                         dtype=_torch_dtype(dt)).reshape(shape)
    return out, meta


def metadata(path):
    """A safetensors file's __metadata__ as a dict of strings ({} when it has none)."""
    return _parse(_read_file(path), path)[1]


def load(path, densify=True, optimizer=False):
    """The tensors of a teslac weight file or checkpoint, as {name: torch.Tensor}.

    densify: a pruned weight, stored as `<L>.weight.values`, `.crow_indices`, `.col_indices`
    (CSR of its (rows, cols) matrix view; the dense shape in the metadata `<L>.weight.shape`),
    comes back as the dense `<L>.weight` of that shape, zeros where pruned, which is what
    load_state_dict of the spec's module wants; densify=False: the three tensors as stored.
    optimizer: a checkpoint's optimizer state `__opt__.*` is dropped unless this is true (with
    densify, a pruned weight's state `__opt__.<slot>.<L>.weight.values` becomes the dense
    `__opt__.<slot>.<L>.weight` on the weight's pattern).
    Everything else, batchnorm's `num_batches_tracked` included, is kept, so that a teslac
    checkpoint loads into model(SPEC) with load_state_dict's default strict=True."""
    import torch
    tensors, meta = read(path)
    if not optimizer:
        tensors = collections.OrderedDict(
            (k, v) for k, v in tensors.items() if not k.startswith("__opt__."))
    if not densify:
        return dict(tensors)
    out = collections.OrderedDict()
    done = set()
    for k in tensors:
        if k.startswith("__opt__.") or not k.endswith(".values"):
            continue
        name = k[:-len(".values")]
        crow, col = tensors.get(name + ".crow_indices"), tensors.get(name + ".col_indices")
        if crow is None or col is None:
            continue  # not a CSR triple: an ordinary tensor that happens to end in .values
        shape = _csr_shape(meta, name, path)
        rows, cols = shape[0], math.prod(shape[1:])
        vals = tensors[k]
        _check_csr(path, name, crow, col, vals, rows, cols)
        row = torch.repeat_interleave(torch.arange(rows), crow.long()[1:] - crow.long()[:-1])
        col = col.long()
        out[name] = _scatter(rows, cols, row, col, vals).reshape(shape)
        done |= {k, name + ".crow_indices", name + ".col_indices"}
        for slot in [s for s in tensors if s.startswith("__opt__.") and s.endswith("." + k)]:
            v = tensors[slot]
            if v.shape != vals.shape:
                raise ValueError("%s: '%s' has %d values, the weight '%s' %d" % (
                    path, slot, v.numel(), name, vals.numel()))
            out[slot[:-len(".values")]] = _scatter(rows, cols, row, col, v).reshape(shape)
            done.add(slot)
    # keep the file's order: each densified weight where its .values tensor was
    result = collections.OrderedDict()
    for k, v in tensors.items():
        if k in done:
            if k.endswith(".values"):
                result[k[:-len(".values")]] = out[k[:-len(".values")]]
            continue
        result[k] = v
    return dict(result)


def _scatter(rows, cols, row, col, vals):
    """The dense (rows, cols) matrix of CSR entries (torch.sparse_csr_tensor(...).to_dense(),
    without its beta-state warning)."""
    import torch
    w = torch.zeros(rows, cols, dtype=vals.dtype)
    w[row, col] = vals
    return w


def _csr_shape(meta, name, path):
    s = meta.get(name + ".shape")
    if s is None:
        raise ValueError("%s: the pruned weight '%s' has no metadata '%s.shape' (its dense shape); "
                         "load it with densify=False" % (path, name, name))
    try:
        shape = json.loads(s)
    except ValueError:
        shape = None
    if not isinstance(shape, list) or not shape or not all(_is_count(v) for v in shape):
        raise ValueError("%s: metadata '%s.shape' is %r, not a list of dims" % (path, name, s))
    return shape


def _check_csr(path, name, crow, col, vals, rows, cols):
    """The CSR invariants teslac checks when it reads one (compiler/driver/model.c)."""
    import torch
    if crow.dim() != 1 or col.dim() != 1 or vals.dim() != 1:
        raise ValueError("%s: '%s': CSR tensors must be 1-D" % (path, name))
    if crow.dtype.is_floating_point or col.dtype.is_floating_point or crow.dtype == torch.bool:
        raise ValueError("%s: '%s': CSR indices must be integers" % (path, name))
    nnz = vals.numel()
    if crow.numel() != rows + 1 or col.numel() != nnz:
        raise ValueError("%s: the pruned weight '%s' of shape (%d, %d) needs crow_indices (%d) and "
                         "col_indices as long as values (%d); the file has (%d) and (%d)"
                         % (path, name, rows, cols, rows + 1, nnz, crow.numel(), col.numel()))
    c, k = crow.long(), col.long()
    if int(c[0]) != 0 or int(c[-1]) != nnz or bool((c[1:] < c[:-1]).any()):
        raise ValueError("%s: '%s.crow_indices' must run from 0 to %d, non-decreasing"
                         % (path, name, nnz))
    if nnz and (int(k.min()) < 0 or int(k.max()) >= cols):
        raise ValueError("%s: '%s.col_indices' must lie in [0, %d)" % (path, name, cols))
    if nnz > 1:
        same_row = torch.repeat_interleave(torch.arange(rows), c[1:] - c[:-1])
        bad = (same_row[1:] == same_row[:-1]) & (k[1:] <= k[:-1])
        if bool(bad.any()):
            raise ValueError("%s: '%s.col_indices' must increase within each row" % (path, name))


def save(tensors, path, metadata=None):
    """Write {name: tensor} as a safetensors file teslac reads (`--init`, `--weights`).

    tensors: torch tensors (a state_dict; numpy arrays are taken too), written in the given
    order, contiguous, little-endian, in their own dtype (F32, F64, F16, BF16, I64, I32, I16,
    I8, U8, BOOL); sparse tensors are refused (densify them: .to_dense()). metadata: a map
    of strings (ints and floats are written with str()), stored as __metadata__. The header is
    padded with spaces to a multiple of 8 as teslac's writer pads it; the file is written to a
    temporary beside PATH and renamed over it, so a failure leaves no half-written file."""
    import torch
    rev = {getattr(torch, t): k for k, (t, _) in _DTYPES.items()}
    header = collections.OrderedDict()
    if metadata:
        m = collections.OrderedDict()
        for k, v in metadata.items():
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise ValueError("metadata %r: values must be strings (or numbers), got %r" % (k, v))
            m[str(k)] = v if isinstance(v, str) else str(v)
        header["__metadata__"] = m
    blobs, off = [], 0
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError("tensor name %r: names are strings other than __metadata__" % (name,))
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if t.layout != torch.strided:
            raise ValueError("tensor '%s' is %s: safetensors holds dense tensors (use .to_dense())"
                             % (name, t.layout))
        if t.dtype not in rev:
            raise ValueError("tensor '%s': dtype %s cannot be stored in safetensors" % (name, t.dtype))
        t = t.detach().cpu().contiguous()
        if sys.byteorder != "little" and t.element_size() > 1:
            raise ValueError("writing safetensors needs a little-endian host")
        b = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""
        header[name] = {"dtype": rev[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------- spec reader

_INT = re.compile(r"[-+]?[0-9]+$")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def _scalar(text):
    """A plain scalar as teslac types it (specs/README.md, "Type rules")."""
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if _INT.match(text):
        return int(text, 10)
    if _FLOAT.match(text):
        return float(text)
    return text


class _Yaml:
    """The YAML that specs are written in, without PyYAML: block maps and lists, flow maps and
    lists (over several lines too), plain and quoted scalars, comments. Anchors, aliases, tags,
    block scalars and complex keys are refused by name: teslac reads them, this reader does not
    (model() cross-checks what it read against teslac's plan)."""

    def __init__(self, text, path):
        self.path = path
        self.lines = []  # [lineno, indent, text] without comments and blank lines
        for no, line in enumerate(text.splitlines(), 1):
            if "\t" in line[:len(line) - len(line.lstrip())]:
                self.fail(no, "a tab in the indentation")
            body = self.strip_comment(line).rstrip()
            if not body.strip() or body.strip() in ("---", "..."):
                continue
            ind = len(body) - len(body.lstrip(" "))
            self.lines.append([no, ind, body.strip()])
        self.i = 0

    def fail(self, no, msg):
        raise SpecError("%s:%d: %s (tesla_torch's spec reader)" % (self.path, no, msg))

    @staticmethod
    def strip_comment(line):
        q = None
        for k, ch in enumerate(line):
            if q:
                if ch == q and (q == "'" or line[k - 1] != "\\"):
                    q = None
            elif ch in "'\"" and (k == 0 or line[k - 1] in " \t[{,:-"):
                q = ch
            elif ch == "#" and (k == 0 or line[k - 1] in " \t"):
                return line[:k]
        return line

    def parse(self):
        if not self.lines:
            return None
        v = self.node(self.lines[0][1])
        if self.i < len(self.lines):
            self.fail(self.lines[self.i][0], "unexpected text %r" % self.lines[self.i][2])
        return v

    def node(self, ind):
        no, lind, text = self.lines[self.i]
        if lind < ind:
            return None
        if text == "-" or text.startswith("- "):
            return self.block_list(lind)
        if self.key_split(text, no) is not None:
            return self.block_map(lind)
        self.i += 1
        return self.inline(text, no)

    def block_list(self, ind):
        out = []
        while self.i < len(self.lines):
            no, lind, text = self.lines[self.i]
            if lind != ind or not (text == "-" or text.startswith("- ")):
                break
            rest = text[1:].lstrip()
            if not rest:
                self.i += 1
                nxt = self.lines[self.i] if self.i < len(self.lines) else None
                out.append(self.node(nxt[1]) if nxt and nxt[1] > ind else None)
            else:  # the item starts on the dash's line: read it as a line of its own
                self.lines[self.i] = [no, lind + len(text) - len(rest), rest]
                out.append(self.node(lind + len(text) - len(rest)))
        return out

    def block_map(self, ind):
        out = collections.OrderedDict()
        while self.i < len(self.lines):
            no, lind, text = self.lines[self.i]
            if lind != ind:
                if lind > ind:
                    self.fail(no, "unexpected indentation")
                break
            kv = self.key_split(text, no)
            if kv is None:
                self.fail(no, "expected 'key: value', got %r" % text)
            key, rest = kv
            if key in out:
                self.fail(no, "the key '%s' is given twice" % key)
            self.i += 1
            if rest:
                out[key] = self.inline(rest, no)
            else:
                nxt = self.lines[self.i] if self.i < len(self.lines) else None
                if nxt and (nxt[1] > ind or (nxt[1] == ind and (nxt[2] == "-" or nxt[2].startswith("- ")))):
                    out[key] = self.node(nxt[1])
                else:
                    out[key] = None
        return out

    def key_split(self, text, no):
        """(key, rest) when text is `key: rest` or `key:`, else None."""
        if text[0] in "{[":
            return None
        if text[0] in "'\"":
            s, k = self.quoted(text, 0, no)
            rest = text[k:].lstrip()
            if rest.startswith(":") and (len(rest) == 1 or rest[1] == " "):
                return s, rest[1:].strip()
            return None
        if text[0] == "?":
            self.fail(no, "complex keys ('? ') are not supported")
        m = re.match(r"([^:]*?):( |$)", text)
        if not m:
            return None
        return m.group(1).strip(), text[m.end():].strip()

    def inline(self, text, no):
        """A value on one line, or a flow collection continued on the next lines."""
        if text[0] in "&*!|>%@`":
            what = {"&": "anchors", "*": "aliases", "!": "tags", "|": "block scalars",
                    ">": "block scalars"}.get(text[0], "%r" % text[0])
            self.fail(no, "YAML %s are not supported; write the value out" % what)
        if text[0] in "{[":
            while self.depth(text) > 0:
                if self.i >= len(self.lines):
                    self.fail(no, "unclosed %r" % text[0])
                text += " " + self.lines[self.i][2]
                self.i += 1
            v, k = self.flow(text, 0, no)
            if text[k:].strip():
                self.fail(no, "unexpected text %r after the closing bracket" % text[k:].strip())
            return v
        if text[0] in "'\"":
            s, k = self.quoted(text, 0, no)
            if text[k:].strip():
                self.fail(no, "unexpected text %r after the quoted string" % text[k:].strip())
            return s
        return _scalar(text)

    def depth(self, text):
        d, q = 0, None
        for k, ch in enumerate(text):
            if q:
                if ch == q and (q == "'" or text[k - 1] != "\\"):
                    q = None
            elif ch in "'\"" and (k == 0 or text[k - 1] in " [{,:"):
                q = ch
            elif ch in "[{":
                d += 1
            elif ch in "]}":
                d -= 1
        return d

    def quoted(self, text, k, no):
        q = text[k]
        j = k + 1
        buf = []
        while j < len(text):
            ch = text[j]
            if q == "'" and ch == "'":
                if text[j + 1:j + 2] == "'":
                    buf.append("'")
                    j += 2
                    continue
                return "".join(buf), j + 1
            if q == '"' and ch == "\\":
                buf.append(text[j:j + 2])
                j += 2
                continue
            if q == '"' and ch == '"':
                try:
                    return json.loads('"' + "".join(buf) + '"'), j + 1
                except ValueError:
                    self.fail(no, "a bad escape in the string %r" % text[k:j + 1])
            buf.append(ch)
            j += 1
        self.fail(no, "unclosed quote")

    def flow(self, text, k, no):
        """(value, next index) of the flow node at text[k] (spaces skipped)."""
        while k < len(text) and text[k] == " ":
            k += 1
        if k >= len(text):
            self.fail(no, "a value is missing")
        ch = text[k]
        if ch in "[{":
            close = "]" if ch == "[" else "}"
            out = [] if ch == "[" else collections.OrderedDict()
            k += 1
            while True:
                while k < len(text) and text[k] == " ":
                    k += 1
                if k < len(text) and text[k] == close:
                    return out, k + 1
                if ch == "[":
                    v, k = self.flow(text, k, no)
                    out.append(v)
                else:
                    key, k = self.flow_scalar(text, k, no, key=True)
                    while k < len(text) and text[k] == " ":
                        k += 1
                    if k < len(text) and text[k] == ":":
                        v, k = self.flow(text, k + 1, no)
                    else:
                        v = None
                    if not isinstance(key, str):
                        key = "" if key is None else str(key).lower() if isinstance(key, bool) else str(key)
                    if key in out:
                        self.fail(no, "the key '%s' is given twice" % key)
                    out[key] = v
                while k < len(text) and text[k] == " ":
                    k += 1
                if k < len(text) and text[k] == ",":
                    k += 1
                elif k < len(text) and text[k] == close:
                    continue
                else:
                    self.fail(no, "expected ',' or %r in %r" % (close, text))
        if ch in "&*!|>":
            self.inline(text[k:], no)  # fails, naming the construct
        return self.flow_scalar(text, k, no)

    def flow_scalar(self, text, k, no, key=False):
        if text[k] in "'\"":
            return self.quoted(text, k, no)
        if text[k] in "[{":
            self.fail(no, "a collection as a key is not supported")
        j = k
        while j < len(text) and text[j] not in ",]}":
            if text[j] == ":" and (j + 1 == len(text) or text[j + 1] in " ,]}"):
                break
            j += 1
        raw = text[k:j].strip()
        return (raw if key else _scalar(raw)), j


def read_spec(path):
    """A spec file as a dict (the keys as written; nothing checked: teslac checks), with
    "__file__" the path, for build() and dataset()."""
    try:
        text = _read_file(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("%s: not UTF-8 text (%s)" % (path, e)) from None
    spec = _Yaml(text, path).parse()
    if not isinstance(spec, dict) or "layers" not in spec or "input" not in spec:
        raise SpecError("%s: not a TESLA spec (needs input: and layers:)" % path)
    spec["__file__"] = path
    return spec


# ---------------------------------------------------------------------------- teslac's plan

def needs_plan(spec):
    """True when a layer asks for tensor-train storage (only teslac's plan has its modes)."""
    for item in spec.get("layers") or []:
        if isinstance(item, dict) and len(item) == 1:
            cfg = next(iter(item.values()))
            if isinstance(cfg, dict) and "tt" in cfg:
                return True
    return False


_REPO_TESLAC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "build", "compiler", "teslac")


def _find_teslac(teslac):
    """"teslac" is the one on PATH, else this checkout's build/compiler/teslac."""
    import shutil
    if teslac == "teslac" and not shutil.which("teslac") and os.access(_REPO_TESLAC, os.X_OK):
        return _REPO_TESLAC
    return teslac


def plan(spec_path, teslac="teslac", batch=None, warn=None):
    """teslac's plan of a spec as a dict: `teslac plan SPEC --json [--batch B]` (the planner
    picks TT modes and the chain order per batch). warn(line) gets teslac's stderr lines.
    teslac: the binary; "teslac" is the one on PATH, else this checkout's build/compiler/teslac."""
    teslac = _find_teslac(teslac)
    cmd = [teslac, "plan", spec_path, "--json"]
    if batch is not None:
        cmd += ["--batch", str(batch)]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise SpecError("cannot run %s (%s): give the teslac binary as teslac=PATH (or "
                        "teslac=None for a spec without tt: layers)" % (teslac, e)) from None
    if r.returncode != 0:
        raise SpecError("%s failed (exit %d):\n%s" % (" ".join(cmd), r.returncode, r.stderr.rstrip()))
    if warn:
        for line in r.stderr.splitlines():  # teslac's warnings (e.g. a TT slower than dense)
            warn(line)
    try:
        return json.loads(r.stdout)
    except ValueError as e:
        raise SpecError("%s: not JSON (%s)" % (" ".join(cmd), e)) from None


# ---------------------------------------------------------------------------- modules

def _pair(v, what):
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (int(v[0]), int(v[1]))
    raise SpecError("%s must be an int or a pair, got %r" % (what, v))


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
    raise SpecError("init %r not supported" % init)


def tt_core_std(var, inner_ranks, ncores):
    """sd = (var / prod(inner ranks))^(1 / (2 ncores)); 0 for a zero variance."""
    if var <= 0:
        return 0.0
    return math.exp((math.log(var) - sum(math.log(r) for r in inner_ranks)) / (2.0 * ncores))


_CLASSES = {}


def _classes():
    """{"flatten_linear", "tt_linear", "tt_conv"}: the module classes, defined once torch is
    imported (this module itself imports without torch)."""
    if _CLASSES:
        return _CLASSES
    import torch
    from torch import nn
    import torch.nn.functional as F

    class FlattenLinear(nn.Linear):
        """nn.Linear that flattens (N, C, H, W) -> (N, C*H*W) first: the spec's implicit flatten."""

        def forward(self, x):
            return F.linear(x.flatten(1), self.weight, self.bias)

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
                raise SpecError("TT plan: %d in_modes, %d out_modes, %d inner ranks (want d, d, d-1)"
                                % (d, len(self.out_modes), len(tt["ranks"])))
            self.ranks = ranks
            self.in_dim, self.out_dim = int(tt["in_dim"]), int(tt["out_dim"])
            self.padded_in, self.padded_out = int(tt["padded_in"]), int(tt["padded_out"])
            if math.prod(self.in_modes) != self.padded_in or math.prod(self.out_modes) != self.padded_out:
                raise SpecError("TT plan: modes %s -> %s do not multiply to padded %d -> %d"
                                % (self.in_modes, self.out_modes, self.padded_in, self.padded_out))
            if order not in ("ltr", "rtl"):
                raise SpecError("TTLinear: chain order %r (ltr or rtl)" % order)
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
                raise SpecError("TT conv plan: %d in_modes, %d out_modes, %d ranks (want d, d, d)"
                                % (d, len(self.out_modes), len(tt["ranks"])))
            self.ranks = ranks
            self.kh, self.kw = kernel
            self.stride, self.padding = stride, padding
            self.in_dim, self.out_dim = int(tt["in_dim"]), int(tt["out_dim"])  # C, K
            self.padded_in, self.padded_out = int(tt["padded_in"]), int(tt["padded_out"])
            if math.prod(self.in_modes) != self.padded_in or math.prod(self.out_modes) != self.padded_out:
                raise SpecError("TT conv plan: modes %s -> %s do not multiply to padded %d -> %d"
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

    _CLASSES.update(flatten_linear=FlattenLinear, tt_linear=TTLinear, tt_conv=TTConv2d)
    return _CLASSES


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


def _check_tensors(key, m, planned):
    """The module's tensors must be exactly the plan's names and shapes (batchnorm's
    num_batches_tracked aside: teslac writes it but does not plan it)."""
    have = {"%s.%s" % (key, k): list(v.shape) for k, v in m.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    want = {t["name"]: list(t["shape"]) for t in planned.get("tensors", [])}
    if have != want:
        raise SpecError("layer %s: the module's tensors %s are not teslac's plan's %s"
                        % (key, have, want))


def build(spec, plan=None, note=None):
    """nn.Sequential with one entry per spec layer; returns (model, [(key, kind, out_shape)]).

    spec: the dict read_spec() (or a YAML loader) gives. plan: teslac's `plan --json` dict,
    needed when a layer has `tt:`; when given, every layer's name, kind, output shape and
    tensors are checked against it. note(text) gets remarks (a layer left dense)."""
    import torch
    from torch import nn
    C = _classes()
    shape = tuple(int(d) for d in spec["input"])
    entries, info = [], []
    layers = spec["layers"]
    if not isinstance(layers, list):
        raise SpecError("layers: must be a list")
    planned = (plan or {}).get("layers") or []
    if plan is not None and len(planned) != len(layers):
        raise SpecError("the plan has %d layers, the spec %d (is it this spec's plan?)"
                        % (len(planned), len(layers)))
    for i, item in enumerate(layers):
        if isinstance(item, str):
            kind, cfg = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            kind, cfg = next(iter(item.items()))
            cfg = cfg or {}
        else:
            raise SpecError("layer %d: expected one '- kind: {...}' entry" % i)
        if not isinstance(cfg, dict):
            raise SpecError("layer %d (%s): keys must be a map" % (i, kind))
        key = str(cfg.get("name", i))
        pl = planned[i] if planned else None
        if pl is not None and (str(pl.get("name")) != key or pl.get("kind") != kind):
            raise SpecError("layer %d is %s %r in the plan, %s %r in the spec (is it this spec's "
                            "plan?)" % (i, pl.get("kind"), pl.get("name"), kind, key))
        tt = pl.get("tt") if pl is not None and pl.get("storage") == "tt" else None
        if "tt" in cfg and tt is None:
            if pl is None:
                raise SpecError("layer %s: tt: needs teslac's plan (its modes and ranks)" % key)
            if note:
                note("layer %s: 'tt' planned %s by teslac, so dense here too" % (key, pl.get("storage")))
        if "sparsity" in cfg and note:
            note("layer %s: 'sparsity' ignored, the layer is dense here" % key)
        init = cfg.get("init")
        spatial = len(shape) == 3
        if kind == "dense":
            units = int(cfg["units"])
            fan_in = int(math.prod(shape))
            if tt is not None:
                if int(tt["in_dim"]) != fan_in or int(tt["out_dim"]) != units:
                    raise SpecError("layer %s: the TT plan is %s -> %s, the layer %d -> %d"
                                    % (key, tt["in_dim"], tt["out_dim"], fan_in, units))
                sd = tt_core_std(tt_init_var(init, fan_in, units), tt["ranks"], len(tt["in_modes"]))
                m = C["tt_linear"](tt, bias=bool(cfg.get("bias", True)), flatten=len(shape) > 1,
                                   order=chain_order(tt), sd=sd)
            else:
                cls = C["flatten_linear"] if len(shape) > 1 else nn.Linear
                m = cls(fan_in, units, bias=bool(cfg.get("bias", True)))
            shape = (units,)
        elif kind == "conv":
            if not spatial:
                raise SpecError("layer %s: conv needs a (C, H, W) input, got %s" % (key, list(shape)))
            c, h, w = shape
            kh, kw = _pair(cfg["kernel"], "kernel")
            sh, sw = _pair(cfg.get("stride", 1), "stride")
            pad = cfg.get("padding", 0)
            if pad == "valid":
                pad = 0
            if pad == "same":
                if (sh, sw) != (1, 1):
                    raise SpecError("layer %s: padding same needs stride 1" % key)
                if kh % 2 and kw % 2:
                    tpad = ((kh - 1) // 2, (kw - 1) // 2)
                else:
                    tpad = "same"  # PyTorch pads the extra row/col at the end, as teslac
                oh, ow = h, w
            else:
                ph, pw = _pair(pad, "padding")
                tpad = (ph, pw)
                oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            k = int(cfg["filters"])
            if tt is not None:
                if int(tt["in_dim"]) != c or int(tt["out_dim"]) != k:
                    raise SpecError("layer %s: the TT plan is %s -> %s channels, the layer %d -> %d"
                                    % (key, tt["in_dim"], tt["out_dim"], c, k))
                # cores: the spatial one and one per channel mode; inner ranks: r0 ... r_{d-1}
                sd = tt_core_std(tt_init_var(init, c * kh * kw, k * kh * kw), tt["ranks"],
                                 len(tt["in_modes"]) + 1)
                m = C["tt_conv"](tt, (kh, kw), (sh, sw), tpad, bias=bool(cfg.get("bias", True)), sd=sd)
            else:
                m = nn.Conv2d(c, k, (kh, kw), stride=(sh, sw), padding=tpad,
                              bias=bool(cfg.get("bias", True)))
            shape = (k, oh, ow)
        elif kind in ("maxpool", "avgpool"):
            if not spatial:
                raise SpecError("layer %s: %s needs a (C, H, W) input" % (key, kind))
            size = _pair(cfg["size"], "size")
            stride = _pair(cfg.get("stride", cfg["size"]), "stride")
            pad = _pair(cfg.get("padding", 0), "padding")
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
                raise SpecError("layer %s: batchnorm on shape %s" % (key, list(shape)))
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
                raise SpecError("layer %s: softmax must be the last layer" % key)
            m = nn.Identity()  # logits out; softmax is fused into CrossEntropyLoss
        else:
            raise SpecError("layer %d: unknown layer kind %r" % (i, kind))
        if "dims" in cfg and kind in ("dense", "conv"):
            wshape = m.weight_shape if tt is not None else list(m.weight.shape)
            if list(cfg["dims"]) != list(wshape):
                raise SpecError("layer %s: dims %s do not match the inferred weight dims %s"
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
                elif init != "default":
                    raise SpecError("layer %s: init %r not supported" % (key, init))
        if pl is not None:
            if list(pl.get("output", shape)) != list(shape):
                raise SpecError("layer %s: output %s here, %s in teslac's plan"
                                % (key, list(shape), pl.get("output")))
            _check_tensors(key, m, pl)
        if any(key == e[0] for e in entries):
            raise SpecError("layer name %r used twice" % key)
        entries.append((key, m))
        info.append((key, kind, list(shape)))
    classes = spec.get("classes")
    if isinstance(classes, list):   # class names: their count is the number of classes
        classes = len(classes)
    if classes is not None and shape != (int(classes),):
        raise SpecError("classes: %s but the last layer outputs %s" % (classes, list(shape)))
    return nn.Sequential(collections.OrderedDict(entries)), info


def model(spec_path, teslac="teslac", batch=None, seed=None):
    """The spec's network as an nn.Sequential whose state_dict() names and shapes are teslac's:
    load_state_dict(load(CHECKPOINT)) then gives teslac's outputs (logits; softmax them for
    `teslac predict`'s scores). teslac: the binary run for the plan (`teslac plan SPEC --json`;
    "teslac" is the one on PATH, else this checkout's build/compiler/teslac), which checks the spec with teslac's own messages, gives tensor-train layers their modes and
    ranks and is checked against every layer; None builds from the spec alone (no tt: layers).
    batch: plan for this batch instead of train.batch (TT modes may depend on it: use the batch
    the weights were trained with). seed: torch.manual_seed(seed) first, for a reproducible
    fresh init (bench/peer_torch.py --save-init's, for the same seed)."""
    import torch
    spec = read_spec(spec_path)
    p = None
    if teslac is not None:
        p = plan(spec_path, teslac, batch)
    elif needs_plan(spec):
        raise SpecError("%s has tt: layers, whose modes and ranks come from teslac's plan: give "
                        "teslac=PATH" % spec_path)
    if seed is not None:
        torch.manual_seed(seed)
    return build(spec, p)[0]


# ---------------------------------------------------------------------------- data

_IDX = {0x08: ("uint8", 1), 0x09: ("int8", 1), 0x0B: ("int16", 2), 0x0C: ("int32", 4),
        0x0D: ("float32", 4), 0x0E: ("float64", 8)}


def read_idx(path):
    """An IDX file (gzip or plain) as a torch tensor of its dims and type."""
    import torch
    raw = _read_file(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError("%s: bad gzip data (%s)" % (path, e)) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX:
        raise ValueError("%s: not an IDX file" % path)
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError("%s: truncated IDX header" % path)
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    name, size = _IDX[raw[2]]
    n = math.prod(dims)
    off = 4 + 4 * ndim
    if len(raw) - off < n * size:
        raise ValueError("%s: truncated IDX file: %d bytes of data, the dims %s need %d"
                         % (path, len(raw) - off, list(dims), n * size))
    buf = bytearray(raw[off:off + n * size])
    if not n:
        return torch.zeros(dims, dtype=getattr(torch, name))
    t = torch.frombuffer(buf, dtype=torch.uint8)
    if size > 1:  # IDX is big-endian
        t = t.reshape(n, size).flip(1).contiguous()
    return t.view(getattr(torch, name)).reshape(dims)


def dataset(spec_path, split="test"):
    """(x, y) of the spec's data.SPLIT (train, test or val): x float32 (N, *input) divided by
    data.scale (default 255) as teslac divides it, y int64 (N,)."""
    spec = read_spec(spec_path)
    import torch
    data = spec.get("data") or {}
    if data.get("format", "idx") != "idx":
        raise SpecError("%s: data.format %r (idx only)" % (spec_path, data.get("format")))
    part = data.get(split)
    if not isinstance(part, dict) or "images" not in part or "labels" not in part:
        raise SpecError("%s: no data.%s.images/labels" % (spec_path, split))
    base = os.path.dirname(os.path.abspath(spec_path))
    ip, lp = (os.path.join(base, str(part[k])) for k in ("images", "labels"))
    x, y = read_idx(ip), read_idx(lp)
    if x.shape[0] != y.shape[0]:
        raise ValueError("%s and %s hold different sample counts" % (ip, lp))
    shape = tuple(int(d) for d in spec["input"])
    if math.prod(x.shape[1:]) != math.prod(shape):
        raise ValueError("%s: samples of %s do not fit input %s" % (ip, list(x.shape[1:]), list(shape)))
    x = x.to(torch.float32).reshape((x.shape[0],) + shape) / float(data.get("scale", 255))
    return x, y.to(torch.int64)


# ---------------------------------------------------------------------------- command line

def _info(path):
    tensors_meta = _parse(_read_file(path), path)
    entries, meta, _ = tensors_meta
    total = 0
    for name, (dt, shape, a, b) in entries.items():
        print("%-48s %-5s %s" % (name, dt, "(" + ", ".join(str(d) for d in shape) + ")"))
        total += b - a
    print("%d tensors, %d bytes of data" % (len(entries), total))
    if meta:
        print("metadata:")
        for k, v in meta.items():
            print("  %s: %s" % (k, v))


def main(argv):
    usage = "usage: tesla_torch.py info W.safetensors   (names, dtypes, shapes, metadata)"
    if len(argv) != 2 or argv[0] != "info":
        print(usage, file=sys.stderr)
        return 2
    try:
        _info(argv[1])
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, ValueError) as e:
        print("tesla_torch: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
