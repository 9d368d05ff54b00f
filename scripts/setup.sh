#!/usr/bin/env bash
# scripts/setup.sh: install what TESLA needs from Debian 12's packages (nothing else is
# downloaded), then configure and build it in build/. Sourced by quickstart.sh and test.sh;
# safe to run again: it installs only what is missing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# (libcairo2-dev: PNG plots, `teslac plot -o X.png`; SVG needs nothing. libprotobuf-c-dev and
# protobuf-c-compiler: `teslac export`'s ONNX models. libzstd-dev: LLVM's static archives need
# it, so that teslac links LLVM statically and starts in 13 ms, meson.build's static_llvm)
TESLA_PKGS=(gcc pkg-config meson ninja-build libyaml-dev zlib1g-dev check
            llvm-16-dev clang-16 libclang-rt-16-dev libcairo2-dev dataset-fashion-mnist
            libpng-dev libnetpbm-dev libprotobuf-c-dev protobuf-c-compiler libzstd-dev)

# scripts/test.sh adds what the test suite needs beyond the build: cross toolchains and qemu
# for the objects of `teslac build` (tests/cross/), Open MPI for data-parallel training
# (tests/mpi_test.sh; the build finds it and enables `mpirun -np K teslac train`), python3-onnx
# for onnx.checker on `teslac export`'s models (tests/export_test.sh)
[ -z "${TESLA_TEST_PKGS:-}" ] || TESLA_PKGS+=($TESLA_TEST_PKGS)
missing=()
for p in "${TESLA_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f build/build.ninja ]; then
  meson setup build -Dtests=true >/dev/null
fi
ninja -C build >/dev/null
