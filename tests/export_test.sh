#!/usr/bin/env bash
# tests/export_test.sh: `teslac export` (compiler/driver/export.c) from the outside. For the seed,
# mlp, a tensor-train MLP, a CNN with a TT dense layer, one with a TT conv, a pruned MLP and
# tests/export/every_layer.yaml (every layer kind and form): weights from a short `teslac train`
# on a slice of Fashion-MNIST, then an ONNX model with the symbolic batch and one with --batch 7;
#   - onnx.checker.check_model(full_check=True) passes (Debian's python3-onnx: /usr/bin/python3);
#   - opset 13, input "input" (N or 7, ...) and output "output" (N or 7, classes) float32;
#   - the float initializers are the checkpoint's tensors under its names, a TT layer's cores
#     and not a formed weight, a pruned weight with its zeros;
#   - ONNX Runtime (npm's onnxruntime-node, from $ONNXRUNTIME_NODE or node's own module path)
#     gives `teslac predict --json`'s scores on 7 test images within 1e-5.
# Without python3-onnx, or without node and onnxruntime-node, those checks are skipped with a
# message. Then the bad inputs: the command line (exit 2), a checkpoint of another spec, a
# missing one, NaN weights, unwritable outputs, an output over an input (exit 1, a message,
# nothing written).
# A build without protobuf-c (noonnx) checks only that `teslac export` says so and exits 1.
# usage: export_test.sh TESLAC onnx|noonnx [SPEC...]   (the bad inputs need seed and mlp among them)
set -uo pipefail
T=$1 HAVE=${2:-onnx}
shift 2
specs=("$@")
case $T in /*) ;; *) T=$(pwd)/$T ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# expect RC WHAT PATTERN CMD...: exit status RC and PATTERN on stderr
expect() {
  local want=$1 what=$2 pat=$3
  shift 3
  "$@" > "$work/out.log" 2> "$work/err.log"
  local rc=$?
  if [ $rc -ne "$want" ]; then bad "$what: exit $rc, not $want ($(head -c 300 "$work/err.log"))"; return; fi
  if ! grep -q -- "$pat" "$work/err.log"; then bad "$what: stderr lacks '$pat': $(head -c 300 "$work/err.log")"; return; fi
  echo "  $what: exit $want, $(head -n 1 "$work/err.log")"
}

echo "== the command line"
expect 2 "no --weights" "needs --weights" "$T" export "$root/specs/seed.yaml"
expect 2 "no SPEC" "missing SPEC" "$T" export --weights x.safetensors
expect 2 "an unknown option" "unknown option '--threads'" "$T" export "$root/specs/seed.yaml" --weights x --threads 2
expect 2 "--batch 0" "--batch must be an integer" "$T" export "$root/specs/seed.yaml" --weights x --batch 0
expect 2 "-o without a value" "-o needs a value" "$T" export "$root/specs/seed.yaml" --weights x -o
"$T" export --help | grep -q 'usage: teslac export' || bad "teslac export --help"
"$T" --help | grep -q '^  export SPEC' || bad "teslac --help does not list export"
expect 2 "a misspelt command" "did you mean 'export'" "$T" exprt "$root/specs/seed.yaml"

if [ "$HAVE" = noonnx ]; then
  expect 1 "a build without protobuf-c" "built without ONNX export" "$T" export "$root/specs/seed.yaml" --weights x
  "$T" --version | grep -q '^ONNX export: none' || bad "--version does not say that ONNX export is missing"
  echo "this build has no ONNX export (protobuf-c): the rest is skipped"
  exit $((fail > 0))
fi
"$T" --version | grep -q '^ONNX export: opset 13' || bad "--version does not name ONNX export"

TRI=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
TRL=/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
TEI=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
TEL=/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz
if [ ! -f "$TRI" ] || [ ! -x "$py" ]; then echo "SKIP: Fashion-MNIST (dataset-fashion-mnist) or /usr/bin/python3 missing"; exit 77; fi

# a slice of Fashion-MNIST as plain IDX files: 512 training samples, 64 test samples, and 7 test
# images (an odd count) for predict and ONNX Runtime
"$py" - "$work" "$TRI" "$TRL" "$TEI" "$TEL" <<'EOF' || { echo "FAIL: cannot slice the data"; exit 1; }
import gzip, struct, sys
w, tri, trl, tei, tel = sys.argv[1:]
def cut(src, dst, n, image):
    d = gzip.open(src).read()
    head = struct.pack('>IIII', 0x803, n, 28, 28) if image else struct.pack('>II', 0x801, n)
    item = 784 if image else 1
    off = 16 if image else 8
    open(dst, 'wb').write(head + d[off:off + n * item])
cut(tri, w + '/train-images', 512, True); cut(trl, w + '/train-labels', 512, False)
cut(tei, w + '/test-images', 64, True); cut(tel, w + '/test-labels', 64, False)
cut(tei, w + '/seven.idx', 7, True)
EOF

have_onnx=0
if "$py" -c 'import onnx, onnx.checker, numpy' 2>/dev/null; then have_onnx=1
else echo "note: no python3-onnx (onnx, numpy for /usr/bin/python3): the checker and the graph checks are skipped"; fi
have_ort=0
if command -v node > /dev/null; then
  ORT=${ONNXRUNTIME_NODE:-onnxruntime-node}
  if ORT_NODE=$ORT node -e 'require(process.env.ORT_NODE)' 2>/dev/null; then have_ort=1; fi
fi
[ $have_ort = 1 ] || echo "note: no node with onnxruntime-node (npm install --ignore-scripts onnxruntime-node; \
ONNXRUNTIME_NODE=that/node_modules/onnxruntime-node): the comparison with teslac predict is skipped"

# run_ort.js MODEL IDX SCALE DIMS: the model on every sample of an IDX file, the values / SCALE;
# one JSON list of the output row per sample
cat > "$work/run_ort.js" <<'EOF'
const [model, idx, scale, dimsJson] = process.argv.slice(2);
const ort = require(process.env.ORT_NODE);
const b = require('fs').readFileSync(idx);
const nd = b[3], n = b.readUInt32BE(4), dims = JSON.parse(dimsJson);
const item = dims.reduce((a, x) => a * x, 1);
(async () => {
  const s = await ort.InferenceSession.create(model);
  const x = new Float32Array(n * item);
  for (let i = 0; i < n * item; i++) x[i] = b[4 + 4 * nd + i] / parseFloat(scale);
  const y = (await s.run({input: new ort.Tensor('float32', x, [n, ...dims])})).output, K = y.dims[1];
  for (let i = 0; i < n; i++) console.log(JSON.stringify(Array.from(y.data.slice(i * K, (i + 1) * K))));
})().catch(e => { console.error(e.message); process.exit(1); });
EOF

# check.py MODEL CKPT BATCH CLASSES INPUT_DIMS: the checker, the opset, the names and shapes, and
# the initializers against the checkpoint's tensors
cat > "$work/check.py" <<'EOF'
import json, struct, sys
import numpy as np, onnx
from onnx import numpy_helper
path, ckpt, batch, classes, dims = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
m = onnx.load(path)
onnx.checker.check_model(m, full_check=True)
errs = []
if [o.version for o in m.opset_import if o.domain in ('', 'ai.onnx')] != [13]: errs.append('opset is not 13')
def shape(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
b = batch if batch == 'N' else int(batch)
g = m.graph
if [v.name for v in g.input] != ['input'] or shape(g.input[0]) != [b] + dims: errs.append('input %s' % g.input)
if [v.name for v in g.output] != ['output'] or shape(g.output[0]) != [b, classes]: errs.append('output %s' % g.output)
for v in list(g.input) + list(g.output):
    if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT: errs.append(v.name + ' is not float32')
# the checkpoint's tensors (safetensors: an 8-byte header length, a JSON header, the data)
raw = open(ckpt, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
head = json.loads(raw[8:8 + n])
def tensor(name):
    h = head[name]
    a, z = h['data_offsets']
    return np.frombuffer(raw[8 + n + a:8 + n + z], dtype={'F32': np.float32, 'I32': np.int32}[h['dtype']]).reshape(h['shape'])
want = {}
for k in head:
    if k == '__metadata__' or k.startswith('__opt__') or k.endswith('num_batches_tracked'): continue
    if k.endswith('.crow_indices') or k.endswith('.col_indices'): continue
    if k.endswith('.values'):   # a pruned weight: CSR in the file, dense in the model
        base = k[:-len('.values')]
        shp = json.loads(head['__metadata__'][base + '.shape'])
        w = np.zeros((shp[0], int(np.prod(shp[1:]))), np.float32)
        crow, col, val = tensor(base + '.crow_indices'), tensor(base + '.col_indices'), tensor(k)
        for r in range(shp[0]): w[r, col[crow[r]:crow[r + 1]]] = val[crow[r]:crow[r + 1]]
        want[base] = w.reshape(shp)
    else:
        want[k] = tensor(k)
have = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT}
if set(have) != set(want): errs.append('initializers %s, checkpoint tensors %s' % (sorted(have), sorted(want)))
for k in set(have) & set(want):
    if have[k].shape != want[k].shape or not np.array_equal(have[k], want[k]): errs.append(k + ' differs from the checkpoint')
ops = [nd.op_type for nd in g.node]
cores = [k for k in want if '.core.' in k]
if cores and 'Einsum' not in ops: errs.append('tensor-train cores but no Einsum')
if 'Dropout' in ops: errs.append('a Dropout node')
zeros = [float((v == 0).mean()) for k, v in want.items() if k + '.values' in head]
if errs:
    print('\n'.join(errs)); sys.exit(1)
print('  %s: checker ok, %d nodes (%s), %d weights%s%s' % (path.split('/')[-1], len(ops), ' '.join(sorted(set(ops))), len(have),
      ', %d TT cores' % len(cores) if cores else '', ', pruned weights %s zeros' % ' '.join('%.0f%%' % (100 * z) for z in zeros) if zeros else ''))
EOF

# compare.py PRED_JSONL ORT_JSONL: teslac predict's scores against ONNX Runtime's, within 1e-5
cat > "$work/compare.py" <<'EOF'
import json, sys
pred = [json.loads(l)['scores'] for l in open(sys.argv[1])]
ort = [json.loads(l) for l in open(sys.argv[2])]
if len(pred) != len(ort) or not pred: print('  %d samples from predict, %d from ONNX Runtime' % (len(pred), len(ort))); sys.exit(1)
worst = max(abs(a - b) for p, o in zip(pred, ort) for a, b in zip(p, o))
print('  %d samples x %d scores, largest difference %.3g' % (len(pred), len(pred[0]), worst))
sys.exit(worst > 1e-5)
EOF

[ ${#specs[@]} -gt 0 ] ||
  specs=("$root"/specs/{seed,mlp,mlp_tt,fashion_small,fashion_cnn_ttconv,mlp_sparse}.yaml "$root/tests/export/every_layer.yaml")
for spec in "${specs[@]}"; do
  name=$(sed -n 's/^name: *\([A-Za-z0-9_]*\).*/\1/p' "$spec")
  d="$work/$name"
  mkdir -p "$d"
  echo "== $name"
  # the data slice; a pruned spec prunes from the first step, so that its checkpoint is sparse
  sed -e "s#$TRI#$work/train-images#; s#$TRL#$work/train-labels#; s#$TEI#$work/test-images#; s#$TEL#$work/test-labels#" \
      -e 's/sparsity: \([0-9.]*\)}/sparsity: {target: \1, schedule: oneshot, start: 0}}/' "$spec" > "$d/spec.yaml"
  scale=$(sed -n 's/^  scale: *\([0-9.]*\).*/\1/p' "$d/spec.yaml")
  classes=$("$T" check "$d/spec.yaml" | sed -n 's/^ *[0-9]* *[A-Za-z0-9_]* *[a-z_]*\** *(N, \([0-9]*\)).*/\1/p' | tail -n 1)
  dims=$(sed -n 's/^input: *\(\[.*\]\).*/\1/p' "$d/spec.yaml")
  "$T" train "$d/spec.yaml" --steps 12 --threads 1 -o "$d/ckpt.safetensors" > "$d/train.log" 2>&1 ||
    { bad "$name: teslac train"; cat "$d/train.log"; continue; }
  "$T" export "$d/spec.yaml" --weights "$d/ckpt.safetensors" -o "$d/model.onnx" ||
    { bad "$name: teslac export"; continue; }
  "$T" export "$d/spec.yaml" --weights "$d/ckpt.safetensors" -o "$d/model7.onnx" --batch 7 -q > "$d/q.log" ||
    { bad "$name: teslac export --batch 7"; continue; }
  [ -s "$d/q.log" ] && bad "$name: export -q printed $(cat "$d/q.log")"
  if [ $have_onnx = 1 ]; then
    "$py" "$work/check.py" "$d/model.onnx" "$d/ckpt.safetensors" N "$classes" "$dims" || bad "$name: the model's checks"
    "$py" "$work/check.py" "$d/model7.onnx" "$d/ckpt.safetensors" 7 "$classes" "$dims" || bad "$name: the --batch 7 model's checks"
  fi
  if [ $have_ort = 1 ]; then
    "$T" predict "$d/spec.yaml" --weights "$d/ckpt.safetensors" --input "$work/seven.idx" --json --threads 1 > "$d/pred.jsonl" ||
      { bad "$name: teslac predict"; continue; }
    for mdl in model model7; do
      ORT_NODE=$ORT node "$work/run_ort.js" "$d/$mdl.onnx" "$work/seven.idx" "$scale" "$dims" > "$d/$mdl.ort.jsonl" ||
        { bad "$name: ONNX Runtime on $mdl.onnx"; continue; }
      "$py" "$work/compare.py" "$d/pred.jsonl" "$d/$mdl.ort.jsonl" || bad "$name: ONNX Runtime on $mdl.onnx differs from teslac predict"
    done
  fi
done

echo "== bad input"
d=$work/bad
mkdir -p "$d/out"
seed=$work/seed/spec.yaml mlp=$work/mlp/spec.yaml
ck=$work/seed/ckpt.safetensors
# exit 1, a message, nothing in $d/out (and an existing model there untouched)
expect1() {
  local what=$1 pat=$2
  shift 2
  expect 1 "$what" "$pat" "$@"
  if [ -n "$(ls -A "$d/out")" ]; then bad "$what: left $(ls -A "$d/out")"; rm -f "$d/out"/* "$d/out"/.[!.]*; fi
}
expect1 "a checkpoint of another spec" "its tensors do not match the spec's" "$T" export "$mlp" --weights "$ck" -o "$d/out/m.onnx"
expect1 "a missing checkpoint" "no-such.safetensors" "$T" export "$seed" --weights "$d/no-such.safetensors" -o "$d/out/m.onnx"
expect1 "a folder that does not exist" "its folder does not exist" "$T" export "$seed" --weights "$ck" -o "$d/out/none/m.onnx"
expect1 "a folder as the output" "not a regular file" "$T" export "$seed" --weights "$ck" -o "$d/out"
expect1 "the output over the checkpoint" "would destroy an input" "$T" export "$seed" --weights "$ck" -o "$ck"
expect1 "the output over the spec" "would destroy an input" "$T" export "$seed" --weights "$ck" -o "$seed"
printf 'tesla: 1\nname: broken\ninput: [4]\nlayers:\n  - dense: {unit: 3}\n' > "$d/broken.yaml"
expect1 "a bad spec" "error" "$T" export "$d/broken.yaml" --weights "$ck" -o "$d/out/m.onnx"
# a NaN in the checkpoint's first weight (the safetensors header says where its bytes are)
"$py" - "$ck" "$d/nan.safetensors" <<'EOF'
import json, struct, sys
raw = bytearray(open(sys.argv[1], 'rb').read())
n = struct.unpack('<Q', raw[:8])[0]
a = json.loads(raw[8:8 + n])['0.weight']['data_offsets'][0]
raw[8 + n + a:8 + n + a + 4] = struct.pack('<f', float('nan'))
open(sys.argv[2], 'wb').write(raw)
EOF
expect1 "a NaN in the weights" "holds non-finite values" "$T" export "$seed" --weights "$d/nan.safetensors" -o "$d/out/m.onnx"
if [ "$(id -u)" != 0 ]; then   # root writes into read-only folders
  mkdir -p "$d/ro" && chmod a-w "$d/ro"
  expect 1 "a read-only folder" "cannot write the ONNX model" "$T" export "$seed" --weights "$ck" -o "$d/ro/m.onnx"
fi
# a failed export leaves an existing model as it was
echo old > "$d/keep.onnx"
expect 1 "over an existing model, another spec's checkpoint" "its tensors do not match the spec's" "$T" export "$mlp" --weights "$ck" -o "$d/keep.onnx"
[ "$(cat "$d/keep.onnx")" = old ] || bad "a failed export changed the existing model"
# the default output name: the model's name + .onnx, in the current folder
(cd "$d/out" && "$T" export "$seed" --weights "$ck" -q) && [ -s "$d/out/seed.onnx" ] || bad "the default output seed.onnx"
exit $((fail > 0))
