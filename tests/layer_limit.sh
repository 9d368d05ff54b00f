#!/bin/sh
# layer_limit.sh: a heavy check (meson -Dheavy_tests=true): models at the layer limit (500, the
# spec language's documented maximum) compile cold, bypassing the compile cache, in under a
# minute and train a step: 500 relu layers, and 500 dense layers of 16 units (the costlier
# kind per layer: every kernel call is specialized to its shape). Prints each compile time;
# fails above 60 s. 501 layers are refused (tests/golden/too_many_layers.yaml).
#   tests/layer_limit.sh TESLAC
set -u
T=$1
work=$(mktemp -d) || exit 1
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
/usr/bin/python3 - <<'PY' || exit 1
import struct, random
random.seed(1)
n = 256
open('ti', 'wb').write(struct.pack('>IIII', 0x803, n, 8, 8) + bytes(random.randrange(256) for _ in range(n * 64)))
open('tl', 'wb').write(struct.pack('>II', 0x801, n) + bytes(random.randrange(4) for _ in range(n)))
for name, op in (('relu500', 'relu: {}'), ('dense500', 'dense: {units: 16}')):
    layers = ''.join('  - %s\n' % op for _ in range(499)) + '  - dense: {units: 4}\n'
    open(name + '.yaml', 'w').write('tesla: 1\ninput: [64]\nclasses: 4\nlayers:\n' + layers +
                                    'data:\n  train: {images: ti, labels: tl}\n')
PY
rc=0
for s in relu500 dense500; do
  out=$("$T" train $s.yaml --steps 1 --no-cache -o $s.st 2>&1) || { echo "FAIL $s: $out"; rc=1; continue; }
  secs=$(echo "$out" | sed -n 's/^compiled [a-z0-9_]* for batch [0-9]* in \([0-9.]*\) s.*/\1/p')
  echo "$s: compiled in $secs s"
  awk -v s="$secs" 'BEGIN { exit !(s != "" && s < 60) }' || { echo "FAIL $s: $secs s is a minute or more"; rc=1; }
done
exit $rc
