#!/usr/bin/env bash
# tests/mpi_test.sh: data-parallel training under Open MPI's mpirun (compiler/driver/dist.c), on
# loopback with 2 and 3 ranks (--oversubscribe: this machine may have fewer cores):
#   - shuffle off, a dense model and a CNN with batchnorms (synchronized, the default; both the
#     image and the vector path): K ranks give the weights of one process at the same global
#     batch, within a float-reassociation tolerance (stcmp -t);
#   - shuffle on: the same, so the ranks' shards of the one permutation cover every global
#     batch exactly as one process does;
#   - two runs with the same seed and rank count: the same bytes;
#   - a run stopped mid-epoch and resumed (with the same and with another rank count) gives
#     the uninterrupted run's weights (the same bits with the same K);
#   - kill -9 of one rank stops the whole run within seconds with a message, and the last
#     checkpoint is intact: eval reads it and a resumed run finishes;
#   - a batch that does not split over the ranks: exit 1 and a message.
# usage: mpi_test.sh TESLAC STCMP; exit 77 (skip) without mpirun or in a build without MPI.
set -uo pipefail
T=$1 STCMP=$2
command -v mpirun > /dev/null || { echo "SKIP: no mpirun (apt-get install openmpi-bin libopenmpi-dev)"; exit 77; }
"$T" --version | grep -q "^MPI: Open MPI" || { echo "SKIP: this teslac was built without MPI"; exit 77; }
DATA=/usr/share/datasets/fashion-mnist
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "SKIP: Fashion-MNIST not installed"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # CI runs as root
export OMPI_MCA_btl=self,vader OMPI_MCA_rmaps_base_oversubscribe=1
# Open MPI's own allocations outlive MPI_Finalize: no leak check on the ranks of a sanitized build
[ -z "${TESLA_SANITIZED:-}" ] || export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
run() { mpirun -np "$1" --oversubscribe "${@:2}"; }

# a 2400-image slice of the training set: 100 steps per epoch at batch 24
slice() {   # $1 source .gz, $2 header bytes, $3 bytes per item, $4 out
  { zcat "$1" | head -c $(( $2 + 2400 * $3 )); } > "$work/tmp"
  printf '\x00\x00\x09\x60' | dd of="$work/tmp" bs=1 seek=4 conv=notrunc status=none   # count 2400
  gzip -c "$work/tmp" > "$4"
}
slice "$DATA/train-images-idx3-ubyte.gz" 16 784 "$work/img.gz"
slice "$DATA/train-labels-idx1-ubyte.gz" 8 1 "$work/lab.gz"

spec() {   # $1 name, $2 shuffle, $3 layers (YAML lines), $4 optimizer (default adam)
  cat > "$work/$1.yaml" <<EOF
tesla: 1
name: $1
input: [1, 28, 28]
classes: 10
layers:
$3
train: {optimizer: ${4:-adam}, lr: 0.002, batch: 24, seed: 5, shuffle: $2, epochs: 1}
data:
  format: idx
  train: {images: $work/img.gz, labels: $work/lab.gz}
  test:  {images: $DATA/t10k-images-idx3-ubyte.gz, labels: $DATA/t10k-labels-idx1-ubyte.gz}
  scale: 255
EOF
}
DENSE='  - dense: {units: 48}
  - relu: {}
  - dense: {units: 10}
  - softmax: {}'
# The CNN trains with SGD + momentum: Adam moves a weight whose gradient is at rounding level
# by a full step of either sign, so two summation orders part there after a few steps (measured:
# 1e-7 apart with SGD after 40 steps, 0.05 with Adam), as they would between PyTorch's DDP and
# one process. No bias before a batchnorm, as in PyTorch models: its true gradient is 0.
BN='  - conv: {filters: 6, kernel: 3, padding: same, bias: false}
  - batchnorm: {}
  - relu: {}
  - maxpool: {size: 2}
  - dense: {units: 32, bias: false}
  - batchnorm: {}
  - relu: {}
  - dense: {units: 10}
  - softmax: {}'
# a tensor train and a pruned layer (pruned from step 0, 80%)
TTSP='  - dense: {units: 64, tt: {in_modes: [4, 7, 28], out_modes: [4, 4, 4], rank: 4}}
  - relu: {}
  - dense: {units: 10, sparsity: {target: 0.8, schedule: oneshot}}
  - softmax: {}'
spec dense false "$DENSE"
spec ttsp false "$TTSP"
spec bnlocal false "$BN" "{sgd: {momentum: 0.9}}"
sed -i 's/epochs: 1}/epochs: 1, sync_batchnorm: false}/' "$work/bnlocal.yaml"
spec dshuf true "$DENSE"
spec bn false "$BN" "{sgd: {momentum: 0.9}}"
TOL=2e-4

train() {   # $1 ranks (0: no mpirun), $2 spec, $3 out, rest: flags
  local k=$1 s=$2 o=$3
  shift 3
  if [ "$k" = 0 ]; then "$T" train "$work/$s.yaml" --threads 1 -o "$work/$o" "$@" > "$work/$o.log" 2>&1
  else run "$k" "$T" train "$work/$s.yaml" -o "$work/$o" "$@" > "$work/$o.log" 2>&1; fi
  local rc=$?
  [ $rc -eq 0 ] || { bad "$s on $k ranks exited $rc"; tail -15 "$work/$o.log"; }
  return $rc
}
close() {   # $1 label, $2 $3 files, $4 tolerance (empty: bit for bit)
  local out
  if [ -n "${4:-}" ]; then out=$("$STCMP" -t "$4" "$work/$2" "$work/$3"); else out=$("$STCMP" "$work/$2" "$work/$3"); fi
  local rc=$?
  echo "  $1: ${out##*$'\n'}"
  [ $rc -eq 0 ] || { bad "$1"; echo "$out" | head -5; }
}

for s in dense bn dshuf ttsp; do
  echo "== $s: one process against 2 and 3 ranks, 40 steps"
  train 0 $s $s.1.st --steps 40 || continue
  for k in 2 3; do
    train $k $s $s.$k.st --steps 40 && close "$s, $k ranks vs one process" $s.$k.st $s.1.st $TOL
  done
done
grep -h "ranks (" "$work/bn.3.st.log" | sed 's/^/  /'
grep -h "gradient reduction" "$work/bn.3.st.log" | sed 's/^/  /'
[ "$(grep -c "epoch 1/1" "$work/dense.2.st.log")" = 1 ] || bad "rank 0 alone should print the epoch line"

echo "== per-layer non-blocking buckets (TESLA_DIST_OVERLAP=1)"
TESLA_DIST_OVERLAP=1 train 2 bn overlap.st --steps 40 && close "bn, 2 ranks, overlapped buckets vs one process" overlap.st bn.1.st $TOL

echo "== batchnorm per rank (sync_batchnorm: false): trains, and is not one process's"
if train 2 bnlocal bnlocal.2.st --steps 10 && train 0 bnlocal bnlocal.1.st --steps 10; then
  grep -q "batchnorm per rank" "$work/bnlocal.2.st.log" || bad "no 'batchnorm per rank' in the banner"
  "$STCMP" -t $TOL "$work/bnlocal.2.st" "$work/bnlocal.1.st" > /dev/null && bad "per-rank batchnorm gave one process's weights" ||
    echo "  differs from one process, as it should (statistics over 12 rows, not 24)"
fi

echo "== the same seed and rank count twice: the same bytes"
train 2 dshuf again.st --steps 40 && { cmp -s "$work/dshuf.2.st" "$work/again.st" && echo "  identical" || bad "two 2-rank runs differ"; }

echo "== resume mid-epoch: 2 ranks to step 15, then to 40 on 2 and on 3 ranks"
train 2 dshuf half.st --steps 15 &&
  train 2 dshuf r2.st --steps 40 --resume "$work/half.st" && close "resumed on 2 ranks vs uninterrupted" r2.st dshuf.2.st
train 3 dshuf r3.st --steps 40 --resume "$work/half.st" && close "resumed on 3 ranks vs uninterrupted 2" r3.st dshuf.2.st $TOL

echo "== a batch that does not split over the ranks"
run 2 "$T" train "$work/dense.yaml" --batch 25 --steps 2 -o "$work/x.st" > "$work/split.log" 2>&1 && bad "batch 25 on 2 ranks ran"
grep -q "does not split over 2 ranks" "$work/split.log" && echo "  refused: $(grep -m1 "does not split" "$work/split.log")" ||
  { bad "no message for batch 25 on 2 ranks"; tail -5 "$work/split.log"; }
[ -e "$work/x.st" ] && bad "a checkpoint was written"

echo "== kill -9 of rank 1 mid-run"
run 2 "$T" train "$work/dense.yaml" --epochs 100000 -o "$work/k.st" > "$work/kill.log" 2>&1 &
mp=$!
for _ in $(seq 200); do [ -f "$work/k.st" ] && break; sleep 0.1; done
[ -f "$work/k.st" ] || bad "no checkpoint after 20 s"
victim=""
for p in $(pgrep -f "teslac train $work/dense.yaml"); do
  tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" && victim=$p
done
if [ -z "$victim" ]; then bad "rank 1 not found"; kill $mp; else
  t0=$(date +%s.%N)
  kill -9 "$victim"
  for _ in $(seq 150); do kill -0 $mp 2>/dev/null || break; sleep 0.1; done
  if kill -0 $mp 2>/dev/null; then bad "the run still runs 15 s after rank 1 died"; kill -9 $mp; fi
  wait $mp
  rc=$?
  dt=$(echo "$(date +%s.%N) - $t0" | bc)
  echo "  mpirun exited $rc after ${dt} s"
  [ $rc -ne 0 ] || bad "mpirun exited 0 after a rank died"
  grep -m1 -i "signal 9\|killed" "$work/kill.log" | sed 's/^/  message: /' || bad "no message about the dead rank"
  "$T" eval "$work/dense.yaml" --weights "$work/k.st" > "$work/keval.log" 2>&1 && echo "  the checkpoint loads: $(tail -1 "$work/keval.log")" ||
    bad "the checkpoint left by the killed run does not load"
  ep=$(sed -n 's/.*"epoch":"\([0-9]*\)".*/\1/p' "$work/k.st" | head -1)
  run 2 "$T" train "$work/dense.yaml" --resume "$work/k.st" --epochs $(( ${ep:-1} + 1 )) -o "$work/k2.st" > "$work/k2.log" 2>&1 &&
    echo "  resumed from it to epoch $(( ${ep:-1} + 1 ))" || { bad "resuming the killed run's checkpoint"; tail -5 "$work/k2.log"; }
fi

echo "mpi: $fail failed"
[ $fail -eq 0 ]
