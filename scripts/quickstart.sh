#!/usr/bin/env bash
# scripts/quickstart.sh: set up, then run teslac on the default spec (specs/fashion_cnn.yaml,
# or the spec named as the first argument): check it and print its plan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
spec="${1:-specs/fashion_cnn.yaml}"
echo "== teslac check $spec"
./build/compiler/teslac check "$spec"
echo
echo "== teslac plan $spec"
./build/compiler/teslac plan "$spec"
