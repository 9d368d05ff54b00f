#!/usr/bin/env bash
# tests/torch_interop.sh TESLAC: weights move both ways between teslac and PyTorch. For each
# reference spec: PyTorch's fresh state_dict (bench/peer_torch.py --save-init) loaded by teslac
# gives PyTorch's probabilities on the first 64 test images; and a checkpoint teslac trained
# for a few steps gives, in PyTorch, teslac's probabilities. Bound: 1e-4. Skipped (exit 77)
# where /usr/bin/python3 has no torch: the build and the core suite never need it.
set -u
teslac=${1:?usage: torch_interop.sh TESLAC}
py=/usr/bin/python3
"$py" -c 'import torch' 2>/dev/null || { echo "no torch: skipped"; exit 77; }
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

compare() {   # $1 label, $2 teslac predict --json output, $3 peer --forward output
  "$py" - "$1" "$2" "$3" <<'PY'
import json, math, sys
label, tes, peer = sys.argv[1:4]
t = [json.loads(l)["scores"] for l in open(tes)]
p = json.load(open(peer))["logits"]
worst = 0.0
for row, sc in zip(p, t):
    m = max(row); e = [math.exp(x - m) for x in row]; s = sum(e)
    worst = max(worst, max(abs(a / s - b) for a, b in zip(e, sc)))
ok = len(t) == len(p) == 64 and worst < 1e-4
print("%-40s max |p_torch - p_teslac| = %.2e  %s" % (label, worst, "ok" if ok else "FAIL"))
sys.exit(0 if ok else 1)
PY
}

for spec in specs/mlp.yaml specs/seed.yaml specs/fashion_cnn.yaml; do
  name=$(basename "$spec" .yaml)
  # PyTorch -> teslac
  "$py" bench/peer_torch.py "$spec" --blas system --save-init "$tmp/$name.torch.st" --seed 5 >/dev/null 2>"$tmp/err" \
    || { cat "$tmp/err"; failed=$((failed + 1)); continue; }
  "$py" bench/peer_torch.py "$spec" --blas system --forward "$tmp/$name.torch.st" --n 64 >"$tmp/peer1.json" 2>"$tmp/err" \
    || { cat "$tmp/err"; failed=$((failed + 1)); continue; }
  if "$teslac" predict "$spec" --weights "$tmp/$name.torch.st" --json 2>"$tmp/err" | head -64 >"$tmp/tes1.jsonl" &&
     compare "$name: PyTorch init -> teslac" "$tmp/tes1.jsonl" "$tmp/peer1.json"; then
    passed=$((passed + 1))
  else cat "$tmp/err"; failed=$((failed + 1)); fi
  # teslac -> PyTorch (trained a little, so batchnorm's running statistics moved too)
  if "$teslac" train "$spec" --steps 30 --threads 2 -o "$tmp/$name.tes.st" >/dev/null 2>"$tmp/err" &&
     "$py" bench/peer_torch.py "$spec" --blas system --forward "$tmp/$name.tes.st" --n 64 >"$tmp/peer2.json" 2>>"$tmp/err" &&
     "$teslac" predict "$spec" --weights "$tmp/$name.tes.st" --json 2>>"$tmp/err" | head -64 >"$tmp/tes2.jsonl" &&
     compare "$name: teslac training -> PyTorch" "$tmp/tes2.jsonl" "$tmp/peer2.json"; then
    passed=$((passed + 1))
  else cat "$tmp/err"; failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
