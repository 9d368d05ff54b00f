#!/usr/bin/env bash
# bench/mpi_bench.sh: issue 10's figures on this machine, one run. For each spec, training
# throughput (the epoch line's samples/s over --steps steps; data loading, compile and
# evaluation excluded) of one process on 1 and on 2 threads, and of 2 ranks (mpirun, loopback,
# shared memory) of 1 thread each; for the 2 ranks, rank 0's time in the gradient reduction
# (dist.c: issuing and waiting for the per-layer MPI_Iallreduce buckets, and the batchnorm sums)
# per step and as a share of the step, and the 2-rank rate against twice the 1-thread rate.
#   bash bench/mpi_bench.sh [TESLAC] [SPEC...]   (default: build/compiler/teslac, mlp fashion_cnn)
# STEPS=N (default 1000) steps per run; BATCH=B another global batch than the spec's.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
T=$(realpath "${1:-$root/build/compiler/teslac}")
shift || true
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(mlp fashion_cnn)
steps=${STEPS:-1000}
bflag=()
[ -z "${BATCH:-}" ] || bflag=(--batch "$BATCH")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rate() { sed -n 's/.*  \([0-9]*\) samples\/s.*/\1/p' "$1" | tail -1; }
grep -m1 "model name" /proc/cpuinfo; grep -m1 "cpu family" /proc/cpuinfo; grep -m1 "^model" /proc/cpuinfo
"$T" --version; mpirun --version | head -1
echo "steps per run: $steps"
echo
echo "| spec | batch | 1 rank, 1 thread | 1 rank, 2 threads | 2 ranks x 1 thread | vs 2x 1 thread | reduction ms/step | share of step |"
echo "|---|---|---|---|---|---|---|---|"
for s in "${specs[@]}"; do
  spec="$root/specs/$s.yaml"
  "$T" train "$spec" --steps "$steps" "${bflag[@]}" --threads 1 -o "$work/a.st" > "$work/t1.log" 2>&1
  "$T" train "$spec" --steps "$steps" "${bflag[@]}" --threads 2 -o "$work/b.st" > "$work/t2.log" 2>&1
  mpirun -np 2 --bind-to core "$T" train "$spec" --steps "$steps" "${bflag[@]}" --threads 1 -o "$work/c.st" > "$work/m2.log" 2>&1
  r1=$(rate "$work/t1.log") r2=$(rate "$work/t2.log") rm=$(rate "$work/m2.log")
  red=$(sed -n 's/gradient reduction: \([0-9.]*\) s of \([0-9.]*\) s.*/\1 \2/p' "$work/m2.log")
  batch=$(sed -n 's/.*ranks (Open MPI) of \([0-9]*\) rows.*/\1/p' "$work/m2.log")
  awk -v s="$s" -v b="$((batch * 2))" -v r1="$r1" -v r2="$r2" -v rm="$rm" -v red="$red" -v n="$steps" 'BEGIN {
    split(red, x, " "); step_ms = 1000 * b / rm; red_ms = 1000 * x[1] / n
    printf "| %s | %d | %d | %d | %d | %.0f%% | %.3f | %.1f%% |\n", s, b, r1, r2, rm, 100 * rm / (2 * r1), red_ms, 100 * red_ms / step_ms }'
done
