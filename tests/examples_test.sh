#!/usr/bin/env bash
# tests/examples_test.sh: examples/ built as a user builds it, a standalone meson project around
# `teslac build`'s objects. Trains specs/seed.yaml for 300 steps, configures and builds examples/
# against that checkpoint, this teslac and this runtime, then
#   - classify's test accuracy is the one `teslac eval` prints for the same checkpoint;
#   - finetune's loss falls (the last reported mean below the first), and the weights it saves
#     (NAME_save through the runtime) read back in `teslac eval` with the accuracy it printed;
#   - configuring without -Dweights fails with a message.
# usage: examples_test.sh TESLAC RUNTIME_LIB RUNTIME_INCLUDE_DIR
# exit 0 pass, 1 fail, 77 skip (no meson or ninja, or no Fashion-MNIST). TESLA_SANITIZED=1 (a
# sanitized main build, whose runtime library is instrumented) builds the examples with
# -Db_sanitize=address,undefined too.
set -uo pipefail
if [ $# -ne 3 ]; then echo "usage: $0 TESLAC RUNTIME_LIB RUNTIME_INCLUDE_DIR" >&2; exit 1; fi
T=$(realpath "$1") RT=$(realpath "$2") RTINC=$(realpath "$3")
root=$(cd "$(dirname "$0")/.." && pwd)
for p in meson ninja; do
  command -v $p > /dev/null || { echo "SKIP: $p not installed"; exit 77; }
done
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/t10k-images-idx3-ubyte.gz" ] || { echo "SKIP: Fashion-MNIST not installed (dataset-fashion-mnist)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
acc_of() { sed -n 's/.*test accuracy \([0-9.]*\).*/\1/p' "$1" | head -1; }

echo "== teslac train specs/seed.yaml --steps 300"
"$T" train "$root/specs/seed.yaml" --steps 300 --threads 2 -o "$work/seed.safetensors" > "$work/train.log" 2>&1 ||
  { cat "$work/train.log"; echo "FAIL: teslac train"; exit 1; }

echo "== meson setup examples/ without -Dweights: an error"
if meson setup "$work/noweights" "$root/examples" -Dteslac="$T" > "$work/noweights.log" 2>&1; then
  bad "configured without -Dweights"
elif ! grep -q "Dweights=CKPT is required" "$work/noweights.log"; then
  bad "no message about -Dweights:"; tail -5 "$work/noweights.log"
fi

echo "== meson setup + ninja"
san=()
[ -z "${TESLA_SANITIZED:-}" ] || san=(-Db_sanitize=address,undefined -Db_lundef=false)
meson setup "$work/build" "$root/examples" "${san[@]}" -Dteslac="$T" -Dspec="$root/specs/seed.yaml" \
  -Dweights="$work/seed.safetensors" -Dtesla_rt="$RT" -Dtesla_rt_include="$RTINC" > "$work/setup.log" 2>&1 ||
  { cat "$work/setup.log"; echo "FAIL: meson setup"; exit 1; }
# teslac eval meanwhile (the JIT compile overlaps the objects')
"$T" eval "$root/specs/seed.yaml" --weights "$work/seed.safetensors" > "$work/eval.log" 2>&1 &
evalpid=$!
ninja -C "$work/build" > "$work/ninja.log" 2>&1 || { cat "$work/ninja.log"; echo "FAIL: ninja"; exit 1; }
wait $evalpid || { cat "$work/eval.log"; bad "teslac eval"; }

echo "== classify"
"$work/build/classify" "$DATA" > "$work/classify.log" 2>&1 || { cat "$work/classify.log"; bad "classify exited $?"; }
sed -n '1,3p;$p' "$work/classify.log" | sed 's/^/  /'
a=$(acc_of "$work/classify.log") b=$(acc_of "$work/eval.log")
echo "  classify $a, teslac eval $b"
[ -n "$a" ] && [ "$a" = "$b" ] || bad "classify's accuracy '$a' is not teslac eval's '$b'"

echo "== finetune"
"$work/build/finetune" -n 1000 -s 200 -e 50 -o "$work/ft.safetensors" "$DATA" > "$work/ft.log" 2>&1 ||
  { cat "$work/ft.log"; bad "finetune exited $?"; }
sed 's/^/  /' "$work/ft.log"
losses=$(sed -n 's/^step *[0-9]* *loss \([0-9.]*\).*/\1/p' "$work/ft.log")
first=$(echo "$losses" | head -1) last=$(echo "$losses" | tail -1)
if [ -z "$first" ] || [ "$(echo "$losses" | wc -l)" -lt 2 ]; then bad "finetune reported no loss curve"
elif ! awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < f) }'; then bad "the loss did not fall: $first -> $last"; fi
want=$(sed -n 's/^whole test set.*after \([0-9.]*\).*/\1/p' "$work/ft.log")
"$T" eval "$root/specs/seed.yaml" --weights "$work/ft.safetensors" > "$work/eval_ft.log" 2>&1 ||
  { cat "$work/eval_ft.log"; bad "teslac eval cannot read finetune's weights"; }
got=$(acc_of "$work/eval_ft.log")
echo "  saved weights: finetune $want, teslac eval $got"
[ -n "$want" ] && [ "$want" = "$got" ] || bad "finetune's accuracy '$want' is not teslac eval's '$got' on its saved weights"

[ $fail -eq 0 ] && echo "PASS" || echo "$fail failure(s)"
exit $((fail > 0))
