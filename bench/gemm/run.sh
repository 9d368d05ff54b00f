#!/bin/sh
# run.sh: build the GEMM kernel bench two ways, check the JIT-way specialization, run both,
# then measure the numpy/OpenBLAS single-core ceiling. Usage: bench/gemm/run.sh [--shapes]
# (--shapes also times numpy on every layer shape). Outputs go to bench/gemm/build/.
set -eu
cd "$(dirname "$0")"
K=../../compiler/codegen/kernels
O=build
mkdir -p $O
CF="-ffp-contract=fast -fno-math-errno"

echo "== 1. direct: kernels.c included, clang-16 -O3 -march=native"
clang-16 -O3 -march=native $CF -Wall -Wextra -Wno-unused-function bench.c -o $O/bench_direct -lm
$O/bench_direct

echo
echo "== 2. the JIT's way: kernels.c -> bitcode with no -march, linked, specialized by opt"
# The flags the compiler's build uses for the kernel bitcode:
clang-16 -O2 -emit-llvm -c $CF $K/kernels.c -o $O/kernels.bc
# Stand-in for the emitted module: the bench's constant-dim wrappers, for znver4.
clang-16 -O2 -march=znver4 -emit-llvm -c $CF -DTK_BITCODE -Wno-unused-function bench.c -o $O/caller.bc
llvm-link-16 $O/caller.bc $O/kernels.bc -o $O/linked.bc
# Internalize everything but main (as the compiler does with the kernels), then O3.
opt-16 -mcpu=znver4 -passes='internalize,default<O3>' -internalize-public-api-list=main \
  $O/linked.bc -o $O/opt.bc
llvm-dis-16 $O/opt.bc -o $O/opt.ll
ncall=$(grep -c 'call .*@tk_' $O/opt.ll || true)
ndef=$(grep -c '^define .*@tk_' $O/opt.ll || true)
echo "calls to tk_* left: $ncall, definitions of tk_* left: $ndef"
[ "$ncall" = 0 ] && [ "$ndef" = 0 ] || { echo "FAIL: kernels were not inlined"; exit 1; }
echo "fwd_256_1024_1024 after specialization: its loop-exit compares (constant bounds: K loop"
echo "to 1024, row blocks of 8 up to 256, column panels of 48 up to 1024) and vector ops:"
awk '/^define internal .*@fwd_256_1024_1024\(/,/^}/' $O/opt.ll > $O/fwd_256_1024_1024.ll
grep -E 'icmp' $O/fwd_256_1024_1024.ll | sed 's/^ */    /'
grep -oE '(fmul|fadd) contract <16 x float>|load <16 x float>|store <16 x float>' \
  $O/fwd_256_1024_1024.ll | sort | uniq -c | sed 's/^ */    /'
llc-16 -O3 -mcpu=znver4 -relocation-model=pic -filetype=obj $O/opt.bc -o $O/bench_jit.o
llc-16 -O3 -mcpu=znver4 $O/opt.bc -o $O/bench_jit.s
echo "zmm FMAs in the JIT-way object: $(grep -c 'vfmadd[0-9]*ps.*zmm' $O/bench_jit.s)"
clang-16 $O/bench_jit.o -o $O/bench_jit -lm
$O/bench_jit

echo
echo "== 3. layout experiment: bwd_data with the packed Wt^T panel forced for every OUT"
echo "   (TK_DOT_K=1<<30; compare its bwd_data column with run 1, the dot-product layout)"
clang-16 -O3 -march=native $CF -DTK_DOT_K='(1L<<30)' -Wno-unused-function bench.c \
  -o $O/bench_packed -lm
$O/bench_packed | awk 'NR == 1 { print "B_x_IN_x_OUT bwd_data(packed)" }
  /x(1024|256)x|x3136x|x784x/ { print $1, $3 }' | column -t

echo
echo "== 4. ceiling: numpy sgemm, one OpenBLAS thread"
# Debian's numpy uses the libblas.so.3 alternative. When that is the reference BLAS, use
# OpenBLAS's libblas.so.3 (from the system or extracted from apt's cache) for this command.
OB=""
if ! readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 | grep -q openblas; then
  for d in /usr/lib/x86_64-linux-gnu/openblas-pthread $O/openblas/usr/lib/x86_64-linux-gnu/openblas-pthread; do
    [ -e $d/libblas.so.3 ] && OB=$d && break
  done
  if [ -z "$OB" ]; then
    deb=$(ls /var/cache/apt/archives/libopenblas0-pthread_*.deb 2>/dev/null | head -1 || true)
    if [ -n "$deb" ]; then
      dpkg -x "$deb" $O/openblas
      OB=$O/openblas/usr/lib/x86_64-linux-gnu/openblas-pthread
    else
      echo "warning: no OpenBLAS found; numpy runs on the reference BLAS"
    fi
  fi
fi
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \
  ${OB:+LD_LIBRARY_PATH=$OB} /usr/bin/python3 ceiling.py "$@"
