#!/bin/sh
# run.sh: build the front end's libFuzzer target with clang-16 under ASan + UBSan and run it.
#
#   tests/fuzz/run.sh [SECONDS] [extra libFuzzer flags]     (default 600 seconds)
#
# Builds into build-fuzz/ (meson: -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined),
# works on a copy of tests/fuzz/corpus/ in build-fuzz/corpus (new inputs stay out of the repo),
# and leaves any crashing input as build-fuzz/crash-* (reproduce: build-fuzz/compiler/fuzz_spec
# FILE). Exits non-zero when libFuzzer found a problem.
set -e
secs=${1:-600}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang-16 meson setup build-fuzz -Dfuzz=true -Dtests=false \
    -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized \
    -Dc_args=-fsanitize=fuzzer-no-link   # instrument the library too, not only the target
fi
ninja -C build-fuzz compiler/fuzz_spec
mkdir -p build-fuzz/corpus
cp -n tests/fuzz/corpus/* build-fuzz/corpus/ 2>/dev/null || true
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
exec build-fuzz/compiler/fuzz_spec -max_total_time="$secs" -max_len=8192 -timeout=10 \
  -dict=tests/fuzz/spec.dict -artifact_prefix=build-fuzz/ -print_final_stats=1 "$@" build-fuzz/corpus
