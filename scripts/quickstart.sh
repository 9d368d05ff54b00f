#!/usr/bin/env bash
# scripts/quickstart.sh: set up, then the main job: check and plan the default spec and train it
# on Fashion-MNIST for one epoch, printing the test accuracy. Arguments: [SPEC] [train flags],
# e.g. `bash scripts/quickstart.sh specs/mlp.yaml --epochs 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
spec="specs/mlp.yaml"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then spec="$1"; shift; fi
[ $# -gt 0 ] || set -- --epochs 1
echo "== teslac check $spec"
./build/compiler/teslac check "$spec"
echo
echo "== teslac plan $spec"
./build/compiler/teslac plan "$spec"
echo
mkdir -p out
echo "== teslac train $spec $*"
./build/compiler/teslac train "$spec" -o "out/$(basename "$spec" .yaml).safetensors" "$@"
