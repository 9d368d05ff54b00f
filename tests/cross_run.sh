#!/usr/bin/env bash
# tests/cross_run.sh: the meson test 'cross': objects from `teslac build` for aarch64 (run under
# qemu-aarch64) and a bare-metal Cortex-M4 (firmware run under qemu-system-arm, mps2-an386),
# checked against the host's object on ten Fashion-MNIST test images (tests/cross/). Weights
# from a short training run of specs/seed.yaml (and, with TESLA_HEAVY=1, specs/mlp_tt.yaml,
# a tensor-train model).
# Skips (77) where the cross tools are missing; scripts/test.sh installs them.
# usage: cross_run.sh TESLAC
set -uo pipefail
T=$1
root=$(cd "$(dirname "$0")/.." && pwd)
TEI=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
[ -f "$TEI" ] || { echo "SKIP: Fashion-MNIST not installed"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
${CC:-cc} -std=c99 -O2 "$root/tests/cross/f32cmp.c" -lm -o "$work/f32cmp" || exit 1
n=10
# the first n images' pixels (gzip meets a closed pipe: only the last command's status counts)
(set +o pipefail; gzip -dc "$TEI" | tail -c +17 | head -c $((n * 784)) | "$work/f32cmp" -b 255 "$work/inputs.f32") || exit 1
rc=0
# the Cortex-M4 object takes LLVM ~100 s to compile (the kernels' 16-float vectors scalarized);
# a sanitized teslac would take several times that, so that run checks host and aarch64 only
targets=
[ -z "${TESLA_SANITIZED:-}" ] || targets="--targets host,aarch64"
specs=seed   # TESLA_HEAVY=1: a tensor-train model too (the suite's time on 2 cores)
[ -z "${TESLA_HEAVY:-}" ] || specs="seed mlp_tt"
for s in $specs; do
  "$T" train "$root/specs/$s.yaml" --steps 50 -o "$work/$s.safetensors" > "$work/$s.log" 2>&1 ||
    { cat "$work/$s.log"; exit 1; }
  echo "== $s"
  "$root/tests/cross/cross_test.sh" $targets --inputs "$work/inputs.f32" --n $n "$T" "$root/specs/$s.yaml" \
    "$work/$s.safetensors"
  r=$?
  [ $r -eq 77 ] && exit 77
  [ $r -eq 0 ] || rc=1
done
exit $rc
