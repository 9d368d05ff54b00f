#!/usr/bin/env bash
# tests/build_test.sh: `teslac build` from the outside, as a user's project uses it. For every
# reference spec (or the specs given): weights from a short run, an object with its training
# step, a program (tests/embed/objcheck.c) compiled against the header with `cc` and linked with
# the object and the runtime; then
#   - inference on n = 1, an odd n and n > the batch in one call agrees with `teslac predict`
#     within 1e-5;
#   - 100 steps of NAME_train_step give the weights of 100 steps of `teslac train --threads 1`
#     on the same data (file order), bit for bit;
#   - the header compiles cleanly as C99 and C++ with -Wall -Wextra -pedantic -Werror.
# Pruned specs run with a oneshot schedule (the pattern is fixed from step 0: an object's
# pattern is frozen at its checkpoint's, while `teslac train` keeps pruning on its schedule).
# Then the bad-input cases: weights that do not fit, an unknown triple or CPU, an unwritable
# path: exit 1, a message, no files.
# usage: build_test.sh TESLAC STCMP RUNTIME_LIB RUNTIME_INCLUDE_DIR [SPEC...]
set -uo pipefail
T=$1 STCMP=$2 RT=$3 RTINC=$4
shift 4
root=$(cd "$(dirname "$0")/.." && pwd)
specs=("$@")
# every reference spec (and tests/embed/tiny_cnn.yaml) with TESLA_HEAVY=1; else the seed, a
# model with a tensor train and pruned layers, and a small CNN with folded batchnorms and
# dropout; under a sanitizer (TESLA_SANITIZED=1) the seed alone
if [ ${#specs[@]} -eq 0 ]; then
  if [ -n "${TESLA_HEAVY:-}" ]; then specs=("$root"/specs/*.yaml "$root/tests/embed/tiny_cnn.yaml")
  elif [ -n "${TESLA_SANITIZED:-}" ]; then specs=("$root/specs/seed.yaml")
  else specs=("$root"/specs/{seed,mlp_tt_sparse}.yaml "$root/tests/embed/tiny_cnn.yaml"); fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CC=${CC:-cc}
# a sanitized main build's runtime library is instrumented: link the test programs the same way
san=()
[ -z "${TESLA_SANITIZED:-}" ] || san=(-fsanitize=address,undefined)
TRI=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
TRL=/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
TEI=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
if [ ! -f "$TRI" ]; then echo "SKIP: Fashion-MNIST not installed (dataset-fashion-mnist)"; exit 77; fi
fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# numbers of two files token by token, within a tolerance
numcmp() {
  awk -v tol="$3" -v A="$1" -v B="$2" '
    function toks(line, arr,   n) { gsub(/[^-+0-9.eE]+/, " ", line); return split(line, arr, " ") }
    BEGIN {
      worst = 0; rows = 0
      while ((getline la < A) > 0) {
        if ((getline lb < B) <= 0) { print "  " B " has fewer lines"; exit 1 }
        na = toks(la, xa); nb = toks(lb, xb); rows++
        if (na != nb) { print "  line " rows ": " na " numbers against " nb; exit 1 }
        for (i = 1; i <= na; i++) { d = xa[i] - xb[i]; if (d < 0) d = -d; if (d > worst) worst = d }
      }
      printf "  %d rows, largest difference %g\n", rows, worst
      exit worst > tol
    }'
}

for spec in "${specs[@]}"; do
  name=$(sed -n 's/^name: *\([A-Za-z0-9_]*\).*/\1/p' "$spec")
  UC=$(echo "$name" | tr a-z A-Z)
  d="$work/$name"
  mkdir -p "$d"
  echo "== $name"
  # file order, and a pruning pattern fixed from the first step
  sed -e '/^  shuffle:/d' -e 's/^train:.*/train:\n  shuffle: false/' \
      -e 's/sparsity: \([0-9.]*\)}/sparsity: {target: \1, schedule: oneshot}}/' "$spec" > "$d/spec.yaml"
  batch=$(sed -n 's/^  batch: *\([0-9]*\).*/\1/p' "$d/spec.yaml")
  scale=$(sed -n 's/^  scale: *\([0-9.]*\).*/\1/p' "$d/spec.yaml")
  "$T" train "$d/spec.yaml" --steps 20 --threads 1 -o "$d/init.safetensors" > "$d/train0.log" 2>&1 ||
    { bad "$name: teslac train"; cat "$d/train0.log"; continue; }
  "$T" build "$d/spec.yaml" --weights "$d/init.safetensors" --train-step -o "$d/$name.o" -q ||
    { bad "$name: teslac build"; continue; }
  for lang in c c++; do
    std=c99; [ $lang = c ] || std=c++11
    echo "#include \"$name.h\"
int main(void) { return ${UC}_INPUT_SIZE > 0 ? 0 : 1; }" > "$d/h.c"
    $CC -x $lang -std=$std -Wall -Wextra -pedantic -Werror -I "$d" -c "$d/h.c" -o "$d/h.o" ||
      bad "$name: the header does not compile cleanly as $lang"
  done
  $CC "${san[@]}" -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -I "$d" -I "$RTINC" -DMODEL="$name" -DMODEL_UC="$UC" \
    -DMODEL_H="\"$name.h\"" -DHAVE_TRAIN "$root/tests/embed/objcheck.c" "$d/$name.o" "$RT" -lz -lm -lpthread \
    -o "$d/objcheck" || { bad "$name: linking the object"; continue; }
  # (the class names of predict's lines are not the object's: only the numbers are compared)
  "$T" predict "$d/spec.yaml" --weights "$d/init.safetensors" --json 2>/dev/null |
    sed 's/, "name": "[^"]*"//' > "$d/predict.jsonl" ||
    { bad "$name: teslac predict"; continue; }
  for n in 1 7 $((2 * batch + 3)); do
    "$d/objcheck" infer "$TEI" $n "$scale" > "$d/obj_$n.jsonl" || { bad "$name: objcheck infer $n"; continue; }
    head -n $n "$d/predict.jsonl" > "$d/pred_$n.jsonl"
    echo "  infer n=$n:"
    numcmp "$d/obj_$n.jsonl" "$d/pred_$n.jsonl" 1e-5 || bad "$name: n=$n differs from teslac predict"
  done
  "$T" train "$d/spec.yaml" --init "$d/init.safetensors" --steps 100 --threads 1 -o "$d/jit.safetensors" \
    > "$d/train.log" 2>&1 || { bad "$name: teslac train --init"; cat "$d/train.log"; continue; }
  "$d/objcheck" train "$TRI" "$TRL" 100 "$scale" "$d/obj.safetensors" > "$d/objtrain.log" ||
    { bad "$name: objcheck train"; continue; }
  echo "  100 steps: $(tail -1 "$d/objtrain.log")"
  "$STCMP" "$d/obj.safetensors" "$d/jit.safetensors" | sed 's/^/  /' ||
    bad "$name: the object's 100 steps differ from teslac train's"
  "$T" eval "$d/spec.yaml" --weights "$d/obj.safetensors" > "$d/eval.log" 2>&1 ||
    bad "$name: teslac eval cannot read the object's saved weights: $(cat "$d/eval.log")"
done

echo "== bad input"
spec=$root/specs/seed.yaml
d=$work/bad
mkdir -p "$d"
"$T" train "$spec" --steps 5 -o "$d/seed.safetensors" > /dev/null 2>&1 || bad "seed: teslac train"
"$T" train "$root/specs/mlp.yaml" --steps 1 -o "$d/mlp.safetensors" > /dev/null 2>&1 || bad "mlp: teslac train"
expect_fail() {   # what, then the command; exit 1, a message, no files in $d/out
  local what=$1
  shift
  rm -rf "$d/out"
  mkdir -p "$d/out"
  "$@" > "$d/out.log" 2>&1
  local rc=$?
  if [ $rc -ne 1 ]; then bad "$what: exit $rc, not 1"; fi
  if ! grep -q "teslac\|error" "$d/out.log"; then bad "$what: no message"; fi
  if [ -n "$(ls -A "$d/out")" ]; then bad "$what: left $(ls "$d/out")"; fi
  echo "  $what: $(head -1 "$d/out.log")"
}
expect_fail "weights of another model" "$T" build "$spec" --weights "$d/mlp.safetensors" -o "$d/out/seed.o"
expect_fail "an unknown triple" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/seed.o" --target nonsense-foo-bar
expect_fail "an unknown CPU" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/seed.o" --target aarch64-linux-gnu --cpu cortex-z99
expect_fail "an unknown CPU for this machine's x86-64 (LLVM aborted here once)" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/seed.o" --cpu bogus
expect_fail "an unwritable output" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/nonexistent/seed.o"
expect_fail "an unwritable header" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/seed.o" --header "$d/out/nonexistent/seed.h"
expect_fail "a symbol prefix that is not a C identifier" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/seed.o" --name 9-lives
expect_fail "an unwritable weights file" "$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/out/seed.o" --external-weights "$d/out/nonexistent/w.bin"

echo "== external weights"
# the weights in a file the program binds: NAME_check_weights takes the file and refuses a
# changed or truncated copy; NAME_infer_weights on it gives the embedded object's outputs
"$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/ext.o" --name seed_ext --external-weights "$d/ext.bin" -q ||
  bad "teslac build --external-weights"
cat > "$d/ext.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ext.h"
int main(int argc, char **argv) {
  static float x[5 * SEED_EXT_INPUT_SIZE], y[5 * SEED_EXT_OUTPUT_SIZE];
  void *w, *scratch;
  FILE *f = fopen(argv[1], "rb");
  long n, i;
  if (argc != 2 || !f || posix_memalign(&w, SEED_EXT_ALIGNMENT, SEED_EXT_WEIGHTS_SIZE + 1) ||
      posix_memalign(&scratch, SEED_EXT_ALIGNMENT, SEED_EXT_ACTIVATIONS_SIZE)) return 2;
  n = (long)fread(w, 1, SEED_EXT_WEIGHTS_SIZE + 1, f);
  if (seed_ext_check_weights(w, (size_t)n)) { printf("refused\n"); return 1; }
  for (i = 0; i < 5 * SEED_EXT_INPUT_SIZE; i++) x[i] = (float)(i % 97) / 97.0f;
  seed_ext_infer_weights(w, x, y, 5, scratch);
  for (i = 0; i < 5 * SEED_EXT_OUTPUT_SIZE; i++) printf("%.9g\n", y[i]);
  return 0;
}
C
cat > "$d/emb.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include "emb.h"
int main(void) {
  static float x[5 * SEED_INPUT_SIZE], y[5 * SEED_OUTPUT_SIZE];
  void *scratch;
  long i;
  if (posix_memalign(&scratch, SEED_ALIGNMENT, SEED_ACTIVATIONS_SIZE)) return 2;
  for (i = 0; i < 5 * SEED_INPUT_SIZE; i++) x[i] = (float)(i % 97) / 97.0f;
  seed_infer(x, y, 5, scratch);
  for (i = 0; i < 5 * SEED_OUTPUT_SIZE; i++) printf("%.9g\n", y[i]);
  return 0;
}
C
"$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/emb.o" -q || bad "teslac build (embedded)"
$CC -std=c99 -D_POSIX_C_SOURCE=200809L -I "$d" "$d/ext.c" "$d/ext.o" -lm -o "$d/ext" &&
  $CC -std=c99 -D_POSIX_C_SOURCE=200809L -I "$d" "$d/emb.c" "$d/emb.o" -lm -o "$d/emb" || bad "linking the external-weights objects"
"$d/ext" "$d/ext.bin" > "$d/ext.txt" || bad "the external weights were refused"
"$d/emb" > "$d/emb.txt" || bad "the embedded object did not run"
cmp -s "$d/ext.txt" "$d/emb.txt" && echo "  external = embedded outputs" || bad "external weights give other outputs than embedded ones"
cp "$d/ext.bin" "$d/changed.bin"
printf '\x01' | dd of="$d/changed.bin" bs=1 seek=100 conv=notrunc 2>/dev/null
[ "$("$d/ext" "$d/changed.bin")" = refused ] && echo "  a changed weights file: refused" || bad "a changed weights file was accepted"
head -c 1000 "$d/ext.bin" > "$d/short.bin"
[ "$("$d/ext" "$d/short.bin")" = refused ] && echo "  a truncated weights file: refused" || bad "a truncated weights file was accepted"

"$T" build "$spec" --weights "$d/seed.safetensors" -o "$d/seed.o" --bogus > "$d/out.log" 2>&1
[ $? -eq 2 ] || bad "an unknown option: not a usage error"
exit $((fail > 0))
