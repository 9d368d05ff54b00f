#!/bin/sh
# quick.sh: the kernel bench built the JIT's way (kernel bitcode, internalize, O3, llc) for one
# CPU, batch-32 layer shapes only (-DBENCH_QUICK: no generic entry points, whose direct
# -march=native build takes minutes since the packed paths), then run. For A/B runs of
# tk_gemm.h changes: build two variants with different -D flags and alternate them.
#   bench/gemm/quick.sh CPU narrow|wide [-DNAME=VALUE...]    e.g. quick.sh znver3 narrow -DTK_PK=0
set -eu
cd "$(dirname "$0")"
cpu=$1 kind=$2; shift 2
N=""; [ "$kind" = narrow ] && N=-DTK_NARROW
CF="-ffp-contract=fast -fno-math-errno"
o=build/quick_${cpu}_$kind
mkdir -p build
clang-16 -O2 -emit-llvm -c $CF $N "$@" ../../compiler/codegen/kernels/kernels.c -o $o.k.bc
clang-16 -O2 -march=$cpu -emit-llvm -c $CF -DTK_BITCODE -DBENCH_QUICK $N "$@" -Wno-unused-function bench.c -o $o.c.bc
llvm-link-16 $o.c.bc $o.k.bc -o $o.l.bc
opt-16 -mcpu=$cpu -passes='internalize,default<O3>' -internalize-public-api-list=main $o.l.bc -o $o.o.bc
llc-16 -O3 -mcpu=$cpu -enable-misched=false -relocation-model=pic -filetype=obj $o.o.bc -o $o.o
clang-16 $o.o -o $o -lm
BENCH_B=32 ./$o
