#!/usr/bin/env bash
# scripts/quickstart.sh: set up, then the main job: check and plan the default spec
# (specs/fashion_cnn.yaml) and train it on Fashion-MNIST for one epoch, printing the test
# accuracy; then draw its loss and accuracy curves next to the log (out/NAME.jsonl ->
# out/NAME.svg, teslac plot). `--full` trains for the spec's own epochs instead. Arguments:
#   bash scripts/quickstart.sh [SPEC] [--full] [teslac train flags]
# e.g. `bash scripts/quickstart.sh specs/mlp.yaml --epochs 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
spec="specs/fashion_cnn.yaml"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then spec="$1"; shift; fi
full=0
args=()
for a in "$@"; do
  if [ "$a" = "--full" ]; then full=1; else args+=("$a"); fi
done
case " ${args[*]-} " in
  *" --epochs "*|*" --steps "*) ;;
  *) [ $full = 1 ] || args+=(--epochs 1) ;;
esac
echo "== teslac check $spec"
./build/compiler/teslac check "$spec"
echo
echo "== teslac plan $spec"
./build/compiler/teslac plan "$spec"
echo
mkdir -p out
name=$(basename "$spec" .yaml)
echo "== teslac train $spec ${args[*]-}"
./build/compiler/teslac train "$spec" -o "out/$name.safetensors" --log "out/$name.jsonl" ${args[@]+"${args[@]}"}
echo
echo "== teslac plot out/$name.jsonl"
./build/compiler/teslac plot "out/$name.jsonl" -o "out/$name.svg"
