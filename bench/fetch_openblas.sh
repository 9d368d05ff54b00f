#!/bin/sh
# Fetch Debian's OpenBLAS (libopenblas0-pthread) and unpack it into bench/.openblas/
# without installing it: the system's libblas.so.3 alternative is left alone. The bench
# scripts put bench/.openblas/.../openblas-pthread first on LD_LIBRARY_PATH (--blas openblas),
# so numpy and PyTorch resolve libblas.so.3 to OpenBLAS for that process only.
# Needs Debian's package mirror (apt-get update once first) and libgfortran5.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/.openblas"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
chmod 777 "$tmp"   # apt's _apt user downloads into the current directory
apt-get download libopenblas0-pthread
rm -rf "$dest"
mkdir -p "$dest"
dpkg -x libopenblas0-pthread_*.deb "$dest"
ls "$dest"/usr/lib/x86_64-linux-gnu/openblas-pthread/
