#!/usr/bin/env bash
# tests/docs_test.sh: the documentation agrees with the program (meson test docs). Runs
# tests/docs_check.py (python3, standard library only) over README.md, specs/README.md,
# examples/README.md and bench/README.md, after its self-test (a page with one of each mistake,
# every one of which must be reported):
#   1. every relative link ([x](path), [x](path#anchor), [x](#anchor)) resolves to a file of the
#      repository and the anchor to one of its headings (GitHub's slugs); a path in backticks
#      that starts with a top-level folder (specs/, tests/, ...) exists;
#   2. every ```console block runs and prints what it shows;
#   3. every spec file the pages name, and every whole spec a ```yaml block shows, passes
#      `teslac check` (a spec shown as wrong, marked `bad`, fails in a console block instead).
#
# The convention for runnable examples, for whoever writes the pages:
#
#   ```console
#   $ teslac train specs/seed.yaml --steps 300 --threads 2 -o s.safetensors
#   compiled seed for batch 32 in ... s (...)
#   epoch 1/10  train loss 0.9517  ...
#   ...
#   ```
#
#   - a line starting with `$ ` is a command, run by bash; `teslac` is this build's teslac;
#   - the lines after it, up to the next `$ ` or the block's end, are its output: stdout and
#     stderr together, compared line by line, trailing spaces ignored;
#   - `...` inside a line matches any text within the line: mask with it what varies from run
#     to run or machine to machine (times, samples/s, memory, paths, the last digits of floats);
#     a line that is `...` alone matches any number of lines (rows left out);
#   - a command must exit 0, unless the next command is `echo $?` (which shows the status);
#   - the console blocks of one page run in order in one temporary folder, which has `specs` (the
#     repository's) and what earlier blocks wrote there (a checkpoint that a later eval reads);
#   - `<!-- docs-test: file NAME -->` right before a fenced block writes the block to NAME in that
#     folder (`<!-- docs-test: file NAME bad -->`: a spec shown as wrong, which a console block
#     must run);
#   - `<!-- docs-test: json-keys CMD -->` in a section: every key of the JSON that CMD prints is
#     named in backticks somewhere in that section (plan --json, eval --json, the --log lines).
#   Only deterministic, fast commands belong in console blocks (short --steps, small specs such
#   as specs/seed.yaml, `--threads 2` where numbers are shown); this test should stay under a
#   minute. Slow or machine-bound examples stay in plain ``` blocks, which are not run.
#
# usage: docs_test.sh TESLAC
# exit 0 pass, 1 a disagreement (each as FILE:LINE: what differs), 77 skip: no python3, or no
# Fashion-MNIST (dataset-fashion-mnist; then checks 1 and 3 still run, and must pass).
set -uo pipefail
if [ $# -ne 1 ]; then echo "usage: $0 TESLAC" >&2; exit 1; fi
T=$(realpath "$1")
root=$(cd "$(dirname "$0")/.." && pwd)
py=$(command -v python3) || { echo "SKIP: no python3"; exit 77; }
"$py" "$root/tests/docs_check.py" --teslac "$T" --self-test || exit 1
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  "$py" "$root/tests/docs_check.py" --teslac "$T" --root "$root" --no-run || exit 1
  echo "SKIP: the console examples train on Fashion-MNIST (dataset-fashion-mnist), not installed"
  exit 77
fi
exec "$py" "$root/tests/docs_check.py" --teslac "$T" --root "$root"
