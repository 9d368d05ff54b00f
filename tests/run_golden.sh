#!/bin/sh
# run_golden.sh: the golden diagnostics test. For every tests/golden/NAME.yaml it runs
# `teslac check tests/golden/NAME.yaml` from the repository root and compares its stderr byte
# for byte with NAME.err and its exit status with 1. A NAME.cmd file instead holds the one
# argument to pass (command-line cases: a missing file, a directory). Prints a diff for each
# mismatch and ends with "N passed, M failed".
#
#   tests/run_golden.sh [TESLAC]             check (meson test golden runs this)
#   tests/run_golden.sh --update [TESLAC]    rewrite every NAME.err from the current teslac;
#                                            review `git diff tests/golden` before committing
#
# TESLAC defaults to build/compiler/teslac. Run from anywhere: it changes to the repo root.
update=0
if [ "$1" = "--update" ]; then update=1; shift; fi
root=$(cd "$(dirname "$0")/.." && pwd)
teslac=${1:-build/compiler/teslac}
case $teslac in /*) ;; *) teslac=$(pwd)/$teslac ;; esac
[ -f "$teslac" ] || teslac=$root/build/compiler/teslac   # a relative path from elsewhere
cd "$root" || exit 2
if [ ! -x "$teslac" ]; then echo "run_golden.sh: no teslac at $teslac" >&2; exit 2; fi

tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT
export NO_COLOR=1
pass=0 fail=0
for case in tests/golden/*.yaml tests/golden/*.cmd; do
  [ -e "$case" ] || continue
  name=${case%.*}
  if [ "${case##*.}" = cmd ]; then arg=$(cat "$case"); else arg=$case; fi
  "$teslac" check "$arg" >/dev/null 2>"$tmp/err"
  rc=$?
  if [ $update = 1 ]; then
    # only a run that ends in a diagnostic (exit 1) may become the expected output
    if [ $rc = 1 ]; then cp "$tmp/err" "$name.err"
    else echo "warning: $case exits $rc, not 1; $name.err left as it was" >&2; fi
  fi
  if [ $rc = 1 ] && cmp -s "$tmp/err" "$name.err"; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $case (exit $rc, want 1)"
    if [ -f "$name.err" ]; then diff -a -u "$name.err" "$tmp/err" | sed 's/^/  /'
    else echo "  no $name.err; run tests/run_golden.sh --update and review it"; fi
  fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
