#!/bin/sh
# Install ONNX Runtime for Node (npm's onnxruntime-node, CPU build) into bench/.ort/ (git-ignored)
# for bench/ort_bench.mjs. Run once, as bench/fetch_openblas.sh is for OpenBLAS.
#
# --ignore-scripts: the package's postinstall script only fetches the optional CUDA/TensorRT
# execution providers from outside the npm registry (which cannot be reached here); the CPU
# binding and libonnxruntime.so ship inside the npm tarball, under
# node_modules/onnxruntime-node/bin/napi-v*/linux/x64/. This script checks they are there.
# ORT_VERSION=x.y.z picks another version (default below).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/.ort"
ver="${ORT_VERSION:-1.30.0}"
command -v npm >/dev/null || { echo "fetch_ort: npm not found (apt-get install -y npm)" >&2; exit 1; }
mkdir -p "$dest"
cd "$dest"
[ -f package.json ] || printf '{ "name": "tesla-bench-ort", "private": true }\n' > package.json
npm install --ignore-scripts --no-audit --no-fund --save-exact "onnxruntime-node@$ver"
arch=$(node -p process.arch)
binding=$(ls -d node_modules/onnxruntime-node/bin/napi-v*/linux/"$arch"/onnxruntime_binding.node 2>/dev/null | tail -n 1)
if [ -z "$binding" ]; then
  echo "fetch_ort: no CPU binding under $dest/node_modules/onnxruntime-node/bin/ for linux/$arch" >&2
  exit 1
fi
ls -l "$(dirname "$binding")"
# Load it once: the binding finds libonnxruntime.so.1 next to itself (RPATH $ORIGIN).
node -e 'const o = require(process.argv[1]); console.log("fetch_ort: onnxruntime-node", require(process.argv[2]).version, "loads; backends ok:", typeof o.InferenceSession.create === "function")' \
  "$dest/node_modules/onnxruntime-node" "$dest/node_modules/onnxruntime-node/package.json"
