#!/usr/bin/env bash
# tests/options_test.sh TESLAC: the one option parser every command shares (compiler/driver/
# cmd.c, cmd_parse) from the outside. Both forms of a valued option (`--flag value`,
# `--flag=value`, and `-ovalue` for a short one, short flags together as -qv or -qo FILE) on
# every command that takes values; `--` ends
# the options (a spec whose name starts with '-'); an unknown option is a usage error (exit 2)
# with a did-you-mean on every command; a flag given a value, a value missing; `-h`/`--help`,
# `teslac help CMD` and `teslac CMD --help` print the same text, made from the same table that
# parses (so every option the help lists is accepted: checked for every command); `-q` leaves
# train's standard output empty and `-v` adds the JIT's CPU; `emit-llvm -o FILE`. Runs a
# one-layer spec on Fashion-MNIST for a few steps (skipped without dataset-fashion-mnist).
set -uo pipefail
T=$1
case $T in /*) ;; *) T=$(pwd)/$T ;; esac
D=/usr/share/datasets/fashion-mnist
[ -f $D/train-images-idx3-ubyte.gz ] || { echo "SKIP: Fashion-MNIST not installed (dataset-fashion-mnist)"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0 pass=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
ok() { pass=$((pass + 1)); }

# expect RC NEEDLE ARGS...: teslac ARGS exits RC and its stderr holds NEEDLE
expect() {
  local want=$1 needle=$2
  shift 2
  "$T" "$@" >out.txt 2>err.txt
  local rc=$?
  if [ $rc -ne "$want" ]; then bad "teslac $*: exit $rc, expected $want: $(head -3 err.txt)"; return; fi
  if [ -n "$needle" ] && ! grep -qF -- "$needle" err.txt; then
    bad "teslac $*: stderr lacks '$needle': $(head -3 err.txt)"
    return
  fi
  ok
}

cat > tiny.yaml <<EOF
tesla: 1
name: tiny
input: [784]
classes: 10
layers:
  - dense: {units: 10}
  - softmax: {}
train: {optimizer: adam, lr: 0.001, epochs: 1, batch: 32, seed: 1}
data:
  train: {images: $D/train-images-idx3-ubyte.gz, labels: $D/train-labels-idx1-ubyte.gz}
  test: {images: $D/t10k-images-idx3-ubyte.gz, labels: $D/t10k-labels-idx1-ubyte.gz}
EOF
cp tiny.yaml ./-tiny.yaml

# ---- both forms give the same run ---------------------------------------------------------
expect 0 "" train tiny.yaml --steps 4 --batch 16 --seed 3 --lr 0.01 -o a.st
expect 0 "" train tiny.yaml --steps=4 --batch=16 --seed=3 --lr=0.01 -o=b.st   # -o=b.st: a file named '=b.st'
[ -f "=b.st" ] && ok || bad "-o=b.st did not write '=b.st' (a short option's value is what follows it)"
expect 0 "" train tiny.yaml --steps=4 --batch=16 --seed=3 --lr=0.01 -oc.st
cmp -s a.st c.st && ok || bad "--flag=value and -ovalue train differently from --flag value"
cmp -s a.st "=b.st" && ok || bad "--steps=4 --batch=16 ... trains differently from --steps 4 --batch 16"
expect 0 "" train tiny.yaml --steps 4 --batch 16 --seed 3 --lr 0.01 --steps 2 --steps=4 -o d.st   # the last one wins
cmp -s a.st d.st && ok || bad "a repeated option: the last one does not win"

expect 0 "" eval tiny.yaml --weights=a.st --batch=100 --json
grep -q '"accuracy"' out.txt && ok || bad "eval --weights=a.st --json: no JSON"
"$T" eval tiny.yaml --weights a.st --batch 100 --json > e1.txt 2>/dev/null
sed 's/"seconds": [^,]*,//' e1.txt > e1n.txt; sed 's/"seconds": [^,]*,//' out.txt > e2n.txt
cmp -s e1n.txt e2n.txt && ok || bad "eval --weights=X and --weights X differ"
expect 0 "" predict tiny.yaml --weights=a.st --top=2 --input=$D/t10k-images-idx3-ubyte.gz
[ "$(head -1 out.txt | wc -w)" -eq 5 ] && ok || bad "predict --top=2: $(head -1 out.txt)"
expect 0 "" plan tiny.yaml --batch=64 --json
grep -q '"batch": 64' out.txt && ok || bad "plan --batch=64: $(head -c 200 out.txt)"
expect 0 "" build tiny.yaml --weights=a.st -o=t.o --header=t.h --batch=1 -q
[ -s "=t.o" ] && [ -s t.h ] && ok || bad "build -o=t.o --header=t.h: no object or header"
[ -s out.txt ] && bad "build -q printed: $(cat out.txt)" || ok
expect 0 "" emit-llvm tiny.yaml -o ir.ll --batch=8
grep -q '^define .*@tiny_infer' ir.ll && ok || bad "emit-llvm -o ir.ll: no tiny_infer in it"
[ -s out.txt ] && bad "emit-llvm -o printed the IR on stdout too" || ok
expect 1 "not a regular file" emit-llvm tiny.yaml -o /dev/null
expect 1 "spec" emit-llvm tiny.yaml -o tiny.yaml
grep -q "tesla: 1" tiny.yaml && ok || bad "emit-llvm -o SPEC overwrote the spec"
expect 0 "" train tiny.yaml --steps 2 -o log.st --log=run.jsonl
expect 0 "" plot run.jsonl -o=x.svg   # a file named '=x.svg'? no: .svg is required at the end
[ -s "=x.svg" ] && ok || bad "plot -o=x.svg"

# ---- -- ends the options --------------------------------------------------------------------
expect 2 "unknown option '-tiny.yaml'" check -tiny.yaml
expect 0 "" check -- -tiny.yaml
grep -q "dense" out.txt && ok || bad "check -- -tiny.yaml: no table"
expect 2 "one spec at a time; '--json' is one too many" plan -- tiny.yaml --json

# ---- unknown options: exit 2, a did-you-mean, on every command -------------------------------
expect 2 "unknown option '--epoch'; did you mean '--epochs'?" train tiny.yaml --epoch 3
expect 2 "did you mean '--weights'?" eval tiny.yaml --weight a.st
expect 2 "did you mean '--input'?" predict tiny.yaml --weights a.st --inptu x
expect 2 "did you mean '--json'?" plan tiny.yaml --jsn
expect 2 "did you mean '--optimized'?" emit-llvm tiny.yaml --optimised
expect 2 "did you mean '--rank'?" compress tiny.yaml --weights a.st -o z.st --ranks 3
expect 2 "did you mean '--header'?" build tiny.yaml --weights a.st --headers t.h
expect 2 "unknown option '--bogus'" plot run.jsonl --bogus
expect 2 "unknown option '--frobnicate'" check tiny.yaml --frobnicate
expect 2 "see 'teslac train --help'" train tiny.yaml --frobnicate
expect 2 "--json takes no value, got 'yes'" eval tiny.yaml --weights a.st --json=yes
expect 2 "--quiet takes no value" train tiny.yaml --quiet=1
expect 2 "--steps needs a value (--steps N)" train tiny.yaml --steps
expect 2 "--steps must be an integer from 1 to 2147483647, got 'x'" train tiny.yaml --steps=x
expect 2 "--lr must be a number" train tiny.yaml --lr=
expect 2 "give the command first" -q train tiny.yaml
expect 2 "unknown command 'trian'; did you mean 'train'?" trian tiny.yaml
expect 2 "unknown command 'trian'; did you mean 'train'?" help trian

# ---- help: every command, three ways, one text; every listed option parses -----------------
"$T" --help > top.txt || bad "teslac --help failed"
cmds=$(awk '/^commands:/{on=1; next} /^$/{on=0} on && /^  [a-z]/{print $1}' top.txt)
[ "$(echo "$cmds" | wc -l)" -ge 9 ] && ok || bad "teslac --help lists only: $cmds"
for c in $cmds; do
  "$T" "$c" --help > h1.txt 2>&1 || bad "$c --help: exit $?"
  "$T" "$c" -h > h2.txt 2>&1 || bad "$c -h: exit $?"
  "$T" help "$c" > h3.txt 2>&1 || bad "help $c: exit $?"
  cmp -s h1.txt h2.txt && cmp -s h1.txt h3.txt && ok || bad "$c: --help, -h and 'help $c' differ"
  head -1 h1.txt | grep -q "^usage: teslac $c " && ok || bad "$c --help: $(head -1 h1.txt)"
  for f in -q --quiet -v --verbose -h --help; do grep -qE -- "(^|[ ,])$f([ ,]|$)" h1.txt || bad "$c --help lacks $f"; done
  # each option the help lists, given a value where it takes one: never "unknown option"
  grep -oE '^  (-[a-zA-Z], )?--?[a-z][a-z0-9-]*( [A-Z][A-Z.]*)?' h1.txt | sed 's/^  //; s/^-., //' | while read -r flag meta; do
    case $flag in -h|--help) continue ;; esac
    if [ -n "$meta" ]; then "$T" "$c" "$flag" 1 --help >/dev/null 2>e.txt; else "$T" "$c" "$flag" --help >/dev/null 2>e.txt; fi
    grep -q "unknown option" e.txt && echo "FAIL: $c --help lists $flag, which the parser refuses" >> fails.txt
  done
done
[ -s fails.txt ] && { cat fails.txt; fail=$((fail + $(wc -l < fails.txt))); } || ok
expect 0 "" help
grep -q "^commands:" out.txt && ok || bad "teslac help: not the usage"
expect 0 "" -V
grep -q "^JIT CPU: " out.txt && ok || bad "-V: no JIT CPU line"

# ---- short options together (GNU): -qv, -qo FILE, -qoFILE, -qO ----------------------------
expect 0 "" train tiny.yaml --steps 2 -qo g1.st
[ -s g1.st ] && [ ! -s out.txt ] && ok || bad "train -qo g1.st: no checkpoint, or it printed"
expect 0 "" train tiny.yaml --steps 2 -qog2.st
[ -s g2.st ] && ok || bad "train -qog2.st: no checkpoint"
expect 0 "" emit-llvm tiny.yaml -qOo g.ll
grep -q "^define" g.ll && ok || bad "emit-llvm -qOo g.ll: no IR in g.ll"
expect 2 "unknown option '-x' in '-qx'" check tiny.yaml -qx
expect 2 "-o needs a value" train tiny.yaml -qo

# ---- -q and -v ------------------------------------------------------------------------------
expect 0 "" train tiny.yaml --steps 2 -q -o q.st
[ -s out.txt ] && bad "train -q printed: $(head -3 out.txt)" || ok
[ -s q.st ] && ok || bad "train -q wrote no checkpoint"
expect 0 "" train tiny.yaml --steps 2 --verbose -o v.st
grep -q "^JIT CPU: " out.txt && grep -q "^compiled tiny" out.txt && ok || bad "train -v: $(head -5 out.txt)"
expect 0 "" eval tiny.yaml --weights a.st -v --json
grep -q "^compiled tiny" err.txt && ok || bad "eval -v: no compile line on stderr"
head -c 1 out.txt | grep -q '{' && ok || bad "eval -v --json: stdout is not the JSON alone"
expect 0 "" check -q tiny.yaml
[ -s out.txt ] && bad "check -q printed the table" || ok
expect 1 "" check -q "$work/none.yaml"

echo "options: $pass passed, $fail failed"
[ $fail -eq 0 ]
