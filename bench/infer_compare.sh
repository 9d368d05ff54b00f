#!/usr/bin/env bash
# bench/infer_compare.sh: issue 9's inference comparison in one run on this machine. For each
# spec: weights from a short training run, `teslac build` (host CPU), bench/infer_bench.c on
# the object; the same weights exported to ONNX (bench/infer_peers.py) and timed in ONNX
# Runtime (bench/ort_bench.mjs) and PyTorch eager (infer_peers.py --bench-torch). Batch 1 on
# one thread, batch 256 on two; median ms per call. Prints one JSON line per measurement and a
# table at the end; needs bench/fetch_ort.sh and bench/fetch_openblas.sh run once.
#   bash bench/infer_compare.sh [TESLAC] [SPEC...]   (default: build/compiler/teslac, seed mlp fashion_cnn)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
T=$(realpath "${1:-$root/build/compiler/teslac}")
shift || true
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(seed mlp fashion_cnn)
py=/usr/bin/python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
B1=${B1_ITERS:-2000} B256=${B256_ITERS:-100}
med() { sed -n 's/.*"median_ms": *\([0-9.e+-]*\).*/\1/p' | head -1; }
grep -m1 "model name" /proc/cpuinfo
grep -m1 "cpu family" /proc/cpuinfo; grep -m1 "^model" /proc/cpuinfo
"$T" --version
rows=()
for s in "${specs[@]}"; do
  spec="$root/specs/$s.yaml"
  name=$(sed -n 's/^name: *//p' "$spec" | head -1)
  uc=$(echo "$name" | tr a-z A-Z)
  "$T" train "$spec" --steps 200 --threads 2 -o "$work/$s.safetensors" > "$work/$s.train" 2>&1
  "$T" build "$spec" --weights "$work/$s.safetensors" -o "$work/$s.o" -q
  cc -O2 -pthread -DMODEL="$name" -DMODEL_UC="$uc" -DMODEL_H="\"$s.h\"" -I "$work" \
    "$root/bench/infer_bench.c" "$work/$s.o" -lm -o "$work/ib_$s"
  "$py" "$root/bench/infer_peers.py" "$spec" --weights "$work/$s.safetensors" --onnx "$work/$s.onnx" \
    --teslac "$T" > /dev/null
  t1=$("$work/ib_$s" --batch 1 --iters "$B1" --warmup 200 | tee -a "$work/all.jsonl" | med)
  o1=$(node "$root/bench/ort_bench.mjs" "$work/$s.onnx" --threads 1 --batch 1 --iters "$B1" --warmup 200 | tee -a "$work/all.jsonl" | med)
  p1=$("$py" "$root/bench/infer_peers.py" "$spec" --weights "$work/$s.safetensors" --teslac "$T" --blas openblas \
       --bench-torch --threads 1 --batch 1 --iters "$B1" --warmup 200 | tee -a "$work/all.jsonl" | med)
  t2=$("$work/ib_$s" --batch 256 --iters "$B256" --warmup 10 --threads 2 | tee -a "$work/all.jsonl" | med)
  o2=$(node "$root/bench/ort_bench.mjs" "$work/$s.onnx" --threads 2 --batch 256 --iters "$B256" --warmup 10 | tee -a "$work/all.jsonl" | med)
  p2=$("$py" "$root/bench/infer_peers.py" "$spec" --weights "$work/$s.safetensors" --teslac "$T" --blas openblas \
       --bench-torch --threads 2 --batch 256 --iters "$B256" --warmup 10 | tee -a "$work/all.jsonl" | med)
  size=$(stat -c %s "$work/$s.o")
  rows+=("$(awk -v s="$s" -v t1="$t1" -v o1="$o1" -v p1="$p1" -v t2="$t2" -v o2="$o2" -v p2="$p2" -v z="$size" 'BEGIN {
    printf "| %s | %.4f | %.4f (%.2fx) | %.4f (%.2fx) | %.3f | %.3f (%.2fx) | %.3f (%.2fx) | %d |", s, t1, o1, o1 / t1,
      p1, p1 / t1, t2, o2, o2 / t2, p2, p2 / t2, z }')")
done
cat "$work/all.jsonl"
echo
echo "| spec | teslac b1 1t ms | ORT (ratio) | PyTorch (ratio) | teslac b256 2t ms | ORT (ratio) | PyTorch (ratio) | object bytes |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
