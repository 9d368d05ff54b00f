#!/bin/sh
# run.sh: build a libFuzzer target with clang-16 under ASan + UBSan and run it.
#
#   tests/fuzz/run.sh [SECONDS] [TARGET] [extra libFuzzer flags]     (default 600 seconds)
#
# TARGET: spec (the front end: parse, check, plan; the default), safetensors (the runtime's
# safetensors reader and dtype conversion), idx (the IDX reader, gzip or plain); each has its
# corpus in tests/fuzz/corpus (spec) or tests/fuzz/corpus_TARGET.
#
# Builds into build-fuzz/ (meson: -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined),
# works on a copy of tests/fuzz/corpus/ in build-fuzz/corpus (new inputs stay out of the repo),
# and leaves any crashing input as build-fuzz/crash-* (reproduce: build-fuzz/compiler/fuzz_spec
# FILE). Exits non-zero when libFuzzer found a problem.
set -e
secs=${1:-600}
[ $# -gt 0 ] && shift
target=spec
case "${1:-}" in spec|safetensors|idx) target=$1; shift ;; esac
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang-16 meson setup build-fuzz -Dfuzz=true -Dtests=false \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
    -Dc_args=-fsanitize=fuzzer-no-link   # instrument the library too, not only the target
fi
ninja -C build-fuzz compiler/fuzz_$target
src=tests/fuzz/corpus dict=-dict=tests/fuzz/spec.dict len=8192
[ $target = spec ] || src=tests/fuzz/corpus_$target dict= len=4096
corpus=build-fuzz/corpus_$target
mkdir -p "$corpus"
cp -n "$src"/* "$corpus"/ 2>/dev/null || true
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
exec build-fuzz/compiler/fuzz_$target -max_total_time="$secs" -max_len=$len -timeout=10 \
  $dict -artifact_prefix=build-fuzz/$target- -print_final_stats=1 "$@" "$corpus"
