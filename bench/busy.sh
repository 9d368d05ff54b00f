#!/usr/bin/env bash
# bench/busy.sh: training throughput on a busy machine (issue 11: "with a competing busy
# process on one core, 2-thread throughput >= 1-thread throughput"). For each spec, teslac
# trains --steps N on 1 and on 2 threads, first on the idle machine, then with another process
# spinning on core 1 (taskset -c 1, a shell busy loop: the competing job), and prints the
# samples/s of each run's epoch line (the compile excluded: the module comes from the compile
# cache after the first run). Run it alone: on 2 cores, nothing else may run meanwhile.
#
#   bench/busy.sh [TESLAC] [STEPS]     (default build/compiler/teslac, 600 steps)
set -u
cd "$(dirname "$0")/.."
T=${1:-build/compiler/teslac}
N=${2:-600}
specs="specs/seed.yaml specs/mlp.yaml specs/fashion_cnn.yaml"
out=$(mktemp -d)
spinner=
trap '[ -n "$spinner" ] && kill $spinner 2>/dev/null; rm -rf "$out"' EXIT

rate() {   # SPEC THREADS: samples/s of a --steps N run (median of 3)
  local r=()
  for i in 1 2 3; do
    r+=("$("$T" train "$1" --steps "$N" --threads "$2" -o "$out/w.st" 2>/dev/null |
           sed -n 's/.*  \([0-9]*\) samples\/s.*/\1/p' | tail -1)")
  done
  printf '%s\n' "${r[@]}" | sort -n | sed -n 2p
}

grep -m1 "model name" /proc/cpuinfo | sed 's/^/# /'
grep -m1 "cpu family" /proc/cpuinfo | sed 's/^/# /'
"$T" --version | sed -n 's/^JIT CPU/# JIT CPU/p'
echo "# $N steps per run, median of 3; samples/s"
printf '%-22s %10s %10s %12s %12s\n' spec "idle 1T" "idle 2T" "busy 1T" "busy 2T"
for s in $specs; do
  "$T" train "$s" --steps 2 -o "$out/w.st" >/dev/null 2>&1   # fill the compile cache
  "$T" train "$s" --steps 2 --threads 1 -o "$out/w.st" >/dev/null 2>&1
  i1=$(rate "$s" 1) i2=$(rate "$s" 2)
  taskset -c 1 sh -c 'while :; do :; done' &
  spinner=$!
  b1=$(rate "$s" 1) b2=$(rate "$s" 2)
  kill $spinner; wait $spinner 2>/dev/null; spinner=
  printf '%-22s %10s %10s %12s %12s\n' "$s" "$i1" "$i2" "$b1" "$b2"
done
