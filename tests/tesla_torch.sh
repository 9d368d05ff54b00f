#!/usr/bin/env bash
# tests/tesla_torch.sh TESLAC: tools/tesla_torch.py, the Python bridge, against teslac. For
# specs/mlp.yaml, specs/fashion_cnn.yaml (conv, implicit flatten, a named layer), specs/mlp_tt.yaml
# (tensor trains) and a pruned spec written here (CSR weights on a real pattern):
#   - teslac trains a few steps; the checkpoint, loaded in three lines (model, load_state_dict,
#     eval), gives teslac predict's probabilities on the first 64 test images and teslac eval's
#     loss and accuracy on the test set (bound 1e-4), and its metadata;
#   - a fresh PyTorch init written with tesla_torch.save (metadata included, read back) gives, in
#     teslac predict, PyTorch's probabilities, and is a valid `teslac train --init`;
#   - the checkpoint read as stored (densify=False, optimizer=True) and saved again holds the same
#     tensors and metadata, and `teslac train --resume` takes it;
# then that load() refuses truncated or corrupt files with a ValueError naming the reason, the
# `info` command line, and the spec reader against PyYAML on specs/ (when PyYAML is there).
# Skipped (exit 77) where /usr/bin/python3 has no torch.
set -u
teslac=${1:?usage: tesla_torch.sh TESLAC}
py=/usr/bin/python3
"$py" -c 'import torch' 2>/dev/null || { echo "no torch in $py: skipped"; exit 77; }
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0
ok()   { echo "ok    $1"; passed=$((passed + 1)); }
fail() { echo "FAIL  $1"; [ -s "$tmp/err" ] && sed 's/^/      /' "$tmp/err"; failed=$((failed + 1)); }

# check.py MODE ...: the Python side of each check; exit 0 when it holds
cat >"$tmp/check.py" <<'PY'
import json, math, sys
sys.path.insert(0, "tools")
import torch
import tesla_torch

mode, teslac = sys.argv[1], sys.argv[2]
args = sys.argv[3:]


def probs(m, x):
    with torch.no_grad():
        return torch.softmax(m(x).double(), 1)


def worst_vs_predict(p, jsonl):
    rows = [json.loads(line)["scores"] for line in open(jsonl)]
    assert len(rows) == 64 == p.shape[0], (len(rows), p.shape)
    return float((p - torch.tensor(rows, dtype=torch.float64)).abs().max())


if mode == "forward":   # SPEC CKPT PREDICT.jsonl EVAL.json STEPS
    spec, ckpt, pred, ev, steps = args
    m = tesla_torch.model(spec, teslac=teslac)
    m.load_state_dict(tesla_torch.load(ckpt))
    m.eval()
    x, y = tesla_torch.dataset(spec, "test")
    w = worst_vs_predict(probs(m, x[:64]), pred)
    with torch.no_grad():
        logits = torch.cat([m(x[i:i + 1000]) for i in range(0, x.shape[0], 1000)]).double()
    loss = float(torch.nn.functional.cross_entropy(logits, y))
    acc = float((logits.argmax(1) == y).double().mean())
    e = json.load(open(ev))
    meta = tesla_torch.metadata(ckpt)
    print("    max |p_torch - p_teslac| = %.2e; loss %.6f vs %.6f, accuracy %.4f vs %.4f; step %s"
          % (w, loss, e["loss"], acc, e["accuracy"], meta.get("step")), file=sys.stderr)
    assert w < 1e-4, "probabilities differ by %g" % w
    assert abs(loss - e["loss"]) < 1e-4 and abs(acc - e["accuracy"]) <= 1e-4, "eval differs"
    assert e["samples"] == x.shape[0]
    assert meta.get("format") == "tesla" and meta.get("step") == steps, meta
    assert not any(k.startswith("__opt__.") for k in tesla_torch.load(ckpt))
    assert any(k.startswith("__opt__.") for k in tesla_torch.load(ckpt, optimizer=True))

elif mode == "save_init":   # SPEC OUT: a fresh init with metadata, read back
    spec, out = args
    m = tesla_torch.model(spec, teslac=teslac, seed=5)
    meta = {"producer": "tests/tesla_torch.sh", "seed": 5, "note": "caf\u00e9 \"quoted\""}
    tesla_torch.save(m.state_dict(), out, meta)
    back = tesla_torch.load(out)
    sd = m.state_dict()
    assert list(back) == list(sd), (list(back), list(sd))
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    want = {k: str(v) for k, v in meta.items()}
    assert tesla_torch.metadata(out) == want, tesla_torch.metadata(out)

elif mode == "forward_init":   # SPEC W PREDICT.jsonl: PyTorch's probabilities = teslac's
    spec, wfile, pred = args
    m = tesla_torch.model(spec, teslac=teslac)
    m.load_state_dict(tesla_torch.load(wfile))
    m.eval()
    x, _ = tesla_torch.dataset(spec, "test")
    w = worst_vs_predict(probs(m, x[:64]), pred)
    print("    max |p_torch - p_teslac| = %.2e" % w, file=sys.stderr)
    assert w < 1e-4, "probabilities differ by %g" % w

elif mode == "resave":   # CKPT OUT: every tensor as stored, and the metadata, written again
    ckpt, out = args
    t = tesla_torch.load(ckpt, densify=False, optimizer=True)
    meta = tesla_torch.metadata(ckpt)
    tesla_torch.save(t, out, meta)
    a, ma = tesla_torch.read(ckpt)
    b, mb = tesla_torch.read(out)
    assert list(a) == list(b) and ma == mb, "names or metadata differ"
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k

elif mode == "same":   # A B: the same tensors
    a, _ = tesla_torch.read(args[0])
    b, _ = tesla_torch.read(args[1])
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k

elif mode == "csr":   # CKPT: pruned weights densified on their pattern
    ckpt, = args
    raw, meta = tesla_torch.read(ckpt)
    dense = tesla_torch.load(ckpt, optimizer=True)
    names = [k[:-len(".values")] for k in raw if k.endswith(".values") and not k.startswith("__opt__.")]
    assert names, "no CSR tensors in the checkpoint"
    for n in names:
        w = dense[n]
        assert list(w.shape) == json.loads(meta[n + ".shape"]), n
        assert int((w != 0).sum()) <= raw[n + ".values"].numel() and w.numel() > raw[n + ".values"].numel()
        for slot in ("exp_avg", "exp_avg_sq"):
            o = dense["__opt__.%s.%s" % (slot, n)]
            assert o.shape == w.shape and bool(((o != 0) <= (w != 0) | (o == 0)).all())
        assert n + ".values" not in dense and n + ".crow_indices" not in dense
    print("    pruned: %s" % ", ".join("%s %s, %d of %d kept" % (n, list(dense[n].shape),
          raw[n + ".values"].numel(), dense[n].numel()) for n in names), file=sys.stderr)
PY

# ---- checkpoints both ways, per spec ---------------------------------------------------------
cat >"$tmp/sp_small.yaml" <<'EOF'
tesla: 1
name: sp_small
input: [1, 28, 28]
classes: 10
layers:
  - conv:       {filters: 8, kernel: 3, padding: same, sparsity: {target: 0.5, schedule: oneshot, start: 0}}
  - batchnorm:  {}
  - relu:       {}
  - maxpool:    {size: 4}
  - dense:      {units: 48, sparsity: {target: 0.9, schedule: oneshot, start: 0}}
  - leaky_relu: {slope: 0.05}
  - dense:      {units: 10, name: head}
  - softmax:    {}
train: {optimizer: adam, lr: 0.003, batch: 16, seed: 3, epochs: 1}
data:
  train: {images: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz,
          labels: /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz}
  test:  {images: /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz,
          labels: /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz}
  scale: 255
EOF

bridge() {   # $1 spec
  local spec=$1 name
  name=$(basename "$spec" .yaml)
  : >"$tmp/err"
  if "$teslac" train "$spec" --steps 20 --threads 2 -o "$tmp/$name.st" >/dev/null 2>"$tmp/err" &&
     "$teslac" predict "$spec" --weights "$tmp/$name.st" --json 2>>"$tmp/err" | head -64 >"$tmp/$name.pred" &&
     "$teslac" eval "$spec" --weights "$tmp/$name.st" --json >"$tmp/$name.eval" 2>>"$tmp/err" &&
     "$py" "$tmp/check.py" forward "$teslac" "$spec" "$tmp/$name.st" "$tmp/$name.pred" "$tmp/$name.eval" 20 2>>"$tmp/err"; then
    ok "$name: teslac checkpoint -> tesla_torch.model + load: predict and eval agree"; grep '^    ' "$tmp/err"
  else fail "$name: teslac checkpoint -> tesla_torch.model + load"; fi
  : >"$tmp/err"
  if "$py" "$tmp/check.py" save_init "$teslac" "$spec" "$tmp/$name.init.st" 2>"$tmp/err" &&
     "$teslac" predict "$spec" --weights "$tmp/$name.init.st" --json 2>>"$tmp/err" | head -64 >"$tmp/$name.ipred" &&
     "$py" "$tmp/check.py" forward_init "$teslac" "$spec" "$tmp/$name.init.st" "$tmp/$name.ipred" 2>>"$tmp/err" &&
     "$teslac" train "$spec" --init "$tmp/$name.init.st" --steps 2 -o "$tmp/$name.i2.st" >/dev/null 2>>"$tmp/err"; then
    ok "$name: tesla_torch.save of a fresh init -> teslac predict, train --init; metadata kept"; grep '^    ' "$tmp/err"
  else fail "$name: tesla_torch.save of a fresh init -> teslac"; fi
  : >"$tmp/err"
  if "$py" "$tmp/check.py" resave "$teslac" "$tmp/$name.st" "$tmp/$name.re.st" 2>"$tmp/err" &&
     "$teslac" train "$spec" --resume "$tmp/$name.st" --steps 24 --threads 1 -o "$tmp/$name.r0.st" >/dev/null 2>>"$tmp/err" &&
     "$teslac" train "$spec" --resume "$tmp/$name.re.st" --steps 24 --threads 1 -o "$tmp/$name.r1.st" >/dev/null 2>>"$tmp/err" &&
     "$py" "$tmp/check.py" same "$teslac" "$tmp/$name.r0.st" "$tmp/$name.r1.st" 2>>"$tmp/err"; then
    ok "$name: checkpoint re-saved as stored: same tensors and metadata, --resume gives the same run"
  else fail "$name: checkpoint re-saved as stored"; fi
}

for spec in specs/mlp.yaml specs/fashion_cnn.yaml specs/mlp_tt.yaml "$tmp/sp_small.yaml"; do
  bridge "$spec"
done
: >"$tmp/err"
if "$py" "$tmp/check.py" csr "$teslac" "$tmp/sp_small.st" 2>"$tmp/err"; then
  ok "sp_small: CSR weights and their Adam state densified on the pattern"; grep '^    ' "$tmp/err"
else fail "sp_small: CSR weights densified"; fi

# ---- corrupt files: a ValueError naming the reason, never garbage ---------------------------
: >"$tmp/err"
if "$py" - "$tmp" "$tmp/mlp.st" "$tmp/sp_small.st" >"$tmp/corrupt.out" 2>"$tmp/err" <<'PY'
import json, struct, sys
sys.path.insert(0, "tools")
import tesla_torch
tmp, good, sparse = sys.argv[1:4]
raw = open(good, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
data = raw[8 + n:]


def with_header(h, body=data):
    b = json.dumps(h).encode()
    return struct.pack("<Q", len(b)) + b + body


first = next(k for k in head if k != "__metadata__")
def edit(f):
    h = json.loads(json.dumps(head)); f(h); return with_header(h)
cases = [
    ("empty file", b"", "too short"),
    ("5 bytes", raw[:5], "too short"),
    ("truncated in the header", raw[:8 + n // 2], "larger than the file"),
    ("truncated in the data", raw[:-100], "truncated"),
    ("one byte short", raw[:-1], "truncated"),
    ("huge header length", struct.pack("<Q", 1 << 62) + raw[8:], "limit"),
    ("text, not safetensors", b"tesla: 1\nname: x\ninput: [784]\n", "larger than"),
    ("bad JSON", struct.pack("<Q", 5) + b"{\"a\":" + data, "bad header JSON"),
    ("header a list", with_header([1, 2]), "not a JSON object"),
    ("not UTF-8", struct.pack("<Q", 4) + b"\xff\xfe{}" , "bad header JSON"),
    ("unknown dtype", edit(lambda h: h[first].update(dtype="F128")), "unknown dtype"),
    ("no shape", edit(lambda h: h[first].pop("shape")), "no \"shape\""),
    ("negative dim", edit(lambda h: h[first].update(shape=[-1, 784])), "non-negative"),
    ("shape and bytes disagree", edit(lambda h: h[first].update(shape=[h[first]["shape"][0] - 1] + h[first]["shape"][1:])), "give"),
    ("offsets reversed", edit(lambda h: h[first].update(data_offsets=h[first]["data_offsets"][::-1])), "begin <= end"),
    ("offsets past the end", edit(lambda h: h[first].update(data_offsets=[x + len(data) for x in h[first]["data_offsets"]])), "run past"),
    ("metadata not strings", edit(lambda h: h["__metadata__"].update(step=20)), "map of strings"),
    ("duplicate tensor", (lambda h: struct.pack("<Q", len(h)) + h + bytes(8))(
        b'{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'), "duplicate"),
    ("trailing bytes", raw + b"\0" * 8, "the file has"),
]
# two tensors swapping offsets of different sizes: an overlap or a gap
names = [k for k in head if k != "__metadata__"]
def overlap(h):
    a, b = h[names[0]]["data_offsets"], h[names[1]]["data_offsets"]
    h[names[1]]["data_offsets"] = [a[0], a[0] + b[1] - b[0]]
cases.append(("two tensors overlap", edit(overlap), "overlap"))
bad = 0
for what, blob, reason in cases:
    p = "%s/bad.st" % tmp
    open(p, "wb").write(blob)
    try:
        tesla_torch.load(p)
    except ValueError as e:
        ok = reason in str(e) and p in str(e) or (what.startswith("bad JSON") and reason in str(e))
        print("%s %-28s ValueError: %s" % ("ok  " if ok else "FAIL", what, e))
        bad += not ok
    except Exception as e:  # anything else is a bug
        print("FAIL %-28s %s: %s" % (what, type(e).__name__, e)); bad += 1
    else:
        print("FAIL %-28s loaded" % what); bad += 1
# a CSR weight whose indices are wrong, or whose dense shape is missing
sraw = open(sparse, "rb").read()
sn = struct.unpack("<Q", sraw[:8])[0]
sh = json.loads(sraw[8:8 + sn]); sdata = bytearray(sraw[8 + sn:])
w = next(k[:-len(".values")] for k in sh if k.endswith(".values") and not k.startswith("__opt__"))
a, _ = sh[w + ".col_indices"]["data_offsets"]
for what, blob, reason in [
        ("CSR column out of range", with_header(sh, bytes(sdata[:a]) + struct.pack("<i", 1 << 30) + bytes(sdata[a + 4:])), "col_indices"),
        ("CSR columns not increasing", with_header(sh, bytes(sdata[:a]) + struct.pack("<i", 0) + struct.pack("<i", 0) + bytes(sdata[a + 8:])), "increase"),
        ("CSR without its shape", with_header({k: v for k, v in sh.items() if k != "__metadata__"} | {"__metadata__": {k: v for k, v in sh["__metadata__"].items() if not k.endswith(".shape")}}, bytes(sdata)), ".shape")]:
    p = "%s/bad.st" % tmp
    open(p, "wb").write(blob)
    try:
        tesla_torch.load(p)
    except ValueError as e:
        ok = reason in str(e)
        print("%s %-28s ValueError: %s" % ("ok  " if ok else "FAIL", what, e)); bad += not ok
    except Exception as e:
        print("FAIL %-28s %s: %s" % (what, type(e).__name__, e)); bad += 1
    else:
        print("FAIL %-28s loaded" % what); bad += 1
    tesla_torch.load(p, densify=False)  # as stored it is readable: only densifying checks CSR
sys.exit(1 if bad else 0)
PY
then ok "load() refuses $(grep -c '^ok' "$tmp/corrupt.out") truncated or corrupt files with a ValueError naming the reason"
else cat "$tmp/corrupt.out"; fail "corrupt files"; fi

# ---- the command line and the spec reader ----------------------------------------------------
: >"$tmp/err"
if "$py" tools/tesla_torch.py info "$tmp/sp_small.st" >"$tmp/info" 2>"$tmp/err" &&
   grep -q '^0.weight.values  *F32' "$tmp/info" && grep -q '^head.weight  *F32  *(10, 48)$' "$tmp/info" &&
   grep -q '^  format: tesla$' "$tmp/info" && grep -q '^  0.weight.shape: \[8, 1, 3, 3\]$' "$tmp/info" &&
   ! "$py" tools/tesla_torch.py info "$tmp/bad.st.none" 2>"$tmp/err2" && grep -q '^tesla_torch: ' "$tmp/err2" &&
   { head -c 100 "$tmp/mlp.st" >"$tmp/cut.st"; ! "$py" tools/tesla_torch.py info "$tmp/cut.st" 2>"$tmp/err2"; } &&
   grep -q 'larger than the file' "$tmp/err2" &&
   { "$py" tools/tesla_torch.py >/dev/null 2>&1; [ $? -eq 2 ]; }; then
  ok "tesla_torch.py info: names, dtypes, shapes, metadata; errors exit 1, usage 2"
else cat "$tmp/info"; fail "tesla_torch.py info"; fi

: >"$tmp/err"
if "$py" - "$teslac" >"$tmp/reader.out" 2>"$tmp/err" <<'PY'
import glob, sys
sys.path.insert(0, "tools")
import tesla_torch
teslac = sys.argv[1]
# the reader on every reference spec, against PyYAML where it is installed
try:
    import yaml
except ImportError:
    yaml = None
for f in sorted(glob.glob("specs/*.yaml")):
    mine = tesla_torch.read_spec(f)
    mine.pop("__file__")
    if yaml is not None:
        assert mine == yaml.safe_load(open(f)), f
    tesla_torch.model(f, teslac=teslac)   # and each builds, checked against teslac's plan
# what the reader refuses, it names
for text, reason in [("a: &x 1\nb: *x\n", "anchors"), ("a: !!str 1\n", "tags"),
                     ("a: |\n  x\n", "block scalars"), ("a: 1\na: 2\n", "given twice"),
                     ("a: {b: 1\n", "unclosed")]:
    try:
        tesla_torch._Yaml(text, "t.yaml").parse()
        raise SystemExit("%r read" % text)
    except tesla_torch.SpecError as e:
        assert reason in str(e) and "t.yaml:" in str(e), e
# flow maps over lines, quotes, comments, and teslac's type rules
v = tesla_torch._Yaml("x: {a: [1, 2],   # c\n    b: 'it''s', c: \"#x\"}\ny: 010\nz: 1e-3\nw: yes\n", "t").parse()
assert v == {"x": {"a": [1, 2], "b": "it's", "c": "#x"}, "y": 10, "z": 0.001, "w": "yes"}, v
# a spec with tt: layers needs teslac's plan; without teslac it says so
try:
    tesla_torch.model("specs/mlp_tt.yaml", teslac=None)
    raise SystemExit("built a TT spec without the plan")
except tesla_torch.SpecError as e:
    assert "teslac" in str(e)
try:
    tesla_torch.model("specs/mlp.yaml", teslac="/nonexistent/teslac")
    raise SystemExit("ran a missing teslac")
except tesla_torch.SpecError as e:
    assert "cannot run /nonexistent/teslac" in str(e), e
print("PyYAML %s" % ("agrees" if yaml else "absent: not compared"))
PY
then ok "read_spec on specs/ ($(cat "$tmp/reader.out")); refused YAML named; model() without teslac"
else fail "read_spec"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
