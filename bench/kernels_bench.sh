#!/usr/bin/env bash
# bench/kernels_bench.sh: the two GEMM kernel builds (compiler/codegen/kernels/tk_gemm.h: wide
# for AVX-512, narrow for AVX2) on this CPU's code and on haswell code (TESLA_JIT_CPU=haswell:
# what an AVX2-only machine runs, measured here), each forced with TESLA_KERNELS. Training
# throughput, one thread, the epoch line's samples/s over --steps steps; one run each.
#   bash bench/kernels_bench.sh [TESLAC] [SPEC...]   (default: build/compiler/teslac, mlp fashion_cnn)
# STEPS=N (default 600).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
T=$(realpath "${1:-$root/build/compiler/teslac}")
shift || true
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(mlp fashion_cnn)
steps=${STEPS:-600}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo; grep -m1 "^model" /proc/cpuinfo
"$T" --version | head -2
printf '| code for | kernels |'; for s in "${specs[@]}"; do printf ' %s |' "$s"; done; echo
printf '|---|---|'; for s in "${specs[@]}"; do printf -- '---|'; done; echo
for cpu in "" haswell; do
  for k in wide narrow; do
    printf '| %s | %s |' "${cpu:-this CPU}" "$k"
    for s in "${specs[@]}"; do
      r=$(TESLA_JIT_CPU=$cpu TESLA_KERNELS=$k "$T" train "$root/specs/$s.yaml" --steps "$steps" --threads 1 \
          -o "$work/x.st" 2>&1 | sed -n 's/.*  \([0-9]*\) samples\/s.*/\1/p' | tail -1)
      printf ' %s |' "$r"
    done
    echo
  done
done
