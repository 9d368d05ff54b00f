#!/usr/bin/env bash
# scripts/test.sh: set up, then run the whole test suite twice: as built, and built again with
# AddressSanitizer + UndefinedBehaviorSanitizer (any report fails the run). Ends with one line
# 'tests: N passed, M failed' counting both runs.
set -uo pipefail
cd "$(dirname "$0")/.."
# (groff-base, zsh, bash-completion: tests/install_test.sh renders teslac(1) and runs the completions)
TESLA_TEST_PKGS="qemu-user qemu-system-arm gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-none-eabi libnewlib-arm-none-eabi libopenmpi-dev openmpi-bin groff-base zsh bash-completion python3-onnx" \
  bash scripts/setup.sh || exit 1

# one compile cache for both runs (tests/meson.build, test_cache), emptied first: each run of
# this script compiles every module once, and the sanitized run reuses the plain run's objects
cache="$PWD/build/test-cache"
rm -rf "$cache"
meson configure build -Dtest_cache="$cache" >/dev/null || exit 1

passed=0 failed=0
run_suite() {   # $1 = build dir
  local log="$1/meson-logs/testlog.json"
  meson test -C "$1" --print-errorlogs --num-processes 2
  local rc=$?
  if [ -f "$log" ]; then
    local ok bad
    ok=$(grep -c '"result": "OK"' "$log" || true)
    bad=$(grep -c '"result": "\(FAIL\|ERROR\|TIMEOUT\|UNEXPECTEDPASS\)"' "$log" || true)
    passed=$((passed + ok)) failed=$((failed + bad))
  fi
  [ $rc -eq 0 ] || [ "$failed" -gt 0 ] || failed=$((failed + 1))
}

echo "== test suite"
run_suite build

echo "== test suite under AddressSanitizer + UBSan"
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Dtests=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debug >/dev/null || exit 1
fi
ninja -C build-asan >/dev/null || exit 1   # first: it regenerates an older build folder
meson configure build-asan -Dtest_cache="$cache" >/dev/null || exit 1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite build-asan

echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
