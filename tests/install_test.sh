#!/usr/bin/env bash
# tests/install_test.sh: what `meson install` gives a user, checked from the outside. The build is
# installed into a temporary DESTDIR, then:
#   - the tree holds bin/teslac, the runtime library and header, tesla_rt.pc, man1/teslac.1 and
#     both shell completions;
#   - `pkg-config --cflags --libs tesla_rt` (relocated into the DESTDIR) compiles and links a C
#     program against the runtime (threads, zlib through a safetensors round trip), and links an
#     object that the installed `teslac build --train-step` made (its NAME_save needs the
#     runtime, its kernels libm) with `cc prog.c model.o $(pkg-config ...)`;
#   - the man page renders without warnings (groff, else man; skipped without both) and has every
#     section, every command, every flag of every `teslac CMD --help` and every variable the
#     sources getenv();
#   - the bash completion, sourced alone and after the bash-completion package when installed,
#     completes the commands, every flag of every command's help, spec files after the command,
#     safetensors files after --weights/--init/--resume, any file after -o;
#   - the zsh completion passes `zsh -n`, names every command and flag, and completes the same
#     cases in a real zsh in a pty (tests/zsh_complete.zsh; skipped without zsh).
# usage: install_test.sh BUILD_DIR   (run from the source root; $TESLA_SANITIZED: the runtime is
# instrumented, link the programs the same way)
set -uo pipefail
B=$(cd "$1" && pwd)
root=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
CC=${CC:-cc}
san=()
[ -z "${TESLA_SANITIZED:-}" ] || san=(-fsanitize=address,undefined)

# ---- the installed tree -------------------------------------------------------------------
dd=$work/dest
meson install -C "$B" --no-rebuild --destdir "$dd" > "$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "FAIL: meson install"; exit 1; }
# the configured directories (prefix absolute; the others relative to it, or absolute)
eval "$(meson introspect "$B" --buildoptions | python3 -c '
import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
for k in ("prefix", "bindir", "libdir", "includedir", "mandir", "datadir"):
    print("%s=%s" % (k, o[k]))')"
dir() { case $1 in /*) echo "$dd$1" ;; *) echo "$dd$prefix/$1" ;; esac; }
P=$dd$prefix
teslac=$(dir "$bindir")/teslac
pcdir=$(dir "$libdir")/pkgconfig
for f in "$teslac" "$(dir "$libdir")/libtesla_rt.a" "$(dir "$includedir")/tesla_rt.h" "$pcdir/tesla_rt.pc" \
         "$(dir "$mandir")/man1/teslac.1" "$(dir "$datadir")/bash-completion/completions/teslac" \
         "$(dir "$datadir")/zsh/site-functions/_teslac"; do
  [ -s "$f" ] && echo "ok: ${f#$dd}" || bad "not installed: ${f#$dd}"
done
[ -x "$teslac" ] && "$teslac" --version > /dev/null || bad "the installed teslac does not run"
((fail == 0)) || exit 1

# what each command's help says: its usage lines (up to the first blank line) and its option
# lines (two to six spaces, then '-'); every flag there
cmds=$("$teslac" --help | awk '/^commands:/ { on = 1; next } on && /^[^ ]/ { on = 0 }
                               on && /^  [a-z]/ { print $1 }')
[ -n "$cmds" ] || bad "no commands in teslac --help"
flags_of() {
  "$teslac" "$1" --help | awk 'NR == 1, /^$/ { print; next } /^ {2,6}-/ { print }' |
    grep -oE -- '(^|[][ ,|])--?[A-Za-z][A-Za-z0-9_-]*' | sed 's/^[][ ,|]*//' | sort -u
}

# ---- pkg-config and a program against the runtime ----------------------------------------
if command -v pkg-config > /dev/null; then
  export PKG_CONFIG_PATH=$pcdir
  pc() { pkg-config --define-variable=prefix="$P" "$@" tesla_rt; }
  flags=$(pc --cflags --libs) || bad "pkg-config --cflags --libs tesla_rt"
  echo "pkg-config: $flags"
  case " $flags " in *" -I$P/"*) ;; *) bad "pkg-config's -I is not under the (relocated) prefix" ;; esac
  case " $flags " in *" -ltesla_rt "*) ;; *) bad "pkg-config's flags miss -ltesla_rt" ;; esac
  cat > "$work/rt.c" <<'EOF'
/* the runtime through its installed header: a thread pool, then a safetensors round trip */
#include <stdio.h>
#include <tesla_rt.h>
static void tile(void *ctx, int64_t t) { ((float *)ctx)[t] = (float)t * 0.5f; }
int main(int argc, char **argv) {
  TsErr e;
  float v[8], *back = v;
  TsPool *pool = ts_pool_create(2, &e);
  if (!pool) { fprintf(stderr, "%s\n", e.msg); return 1; }
  ts_pool_run(pool, tile, v, 8);
  ts_pool_destroy(pool);
  TsStOut t = {.name = "v", .dtype = TS_F32, .ndims = 1, .shape = {8}, .data = v};
  TsStFile f;
  if (ts_st_write(argv[1], &t, 1, NULL, 0, &e) || ts_st_read(argv[1], &f, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  float got[8];
  const TsTensor *r = ts_st_find(&f, "v");
  if (!r || ts_tensor_to_f32(r, got, 8, &e)) return 1;
  for (int i = 0; i < 8; i++) if (got[i] != back[i] || got[i] != (float)i * 0.5f) return 1;
  ts_st_free(&f);
  printf("runtime ok, %016llx\n", (unsigned long long)ts_fnv1a(got, sizeof got, 0));
  (void)argc;
  return 0;
}
EOF
  # shellcheck disable=SC2086
  if $CC "${san[@]}" -std=c11 -Wall -Werror "$work/rt.c" -o "$work/rt" $flags; then
    "$work/rt" "$work/rt.safetensors" || bad "the runtime program failed"
  else bad "a program against the installed runtime does not compile or link"; fi
else
  echo "SKIP: pkg-config checks (no pkg-config)"
fi

# ---- an object from the installed teslac, linked with pkg-config's flags -----------------
TRI=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$TRI" ]; then echo "SKIP: the object (Fashion-MNIST not installed)"
elif ! command -v pkg-config > /dev/null; then echo "SKIP: the object (no pkg-config)"
else
  d=/usr/share/datasets/fashion-mnist
  cat > "$work/tiny.yaml" <<EOF
tesla: 1
name: tiny
input: [784]
classes: 10
layers:
  - dense:   {units: 10}
  - softmax: {}
train: {optimizer: sgd, lr: 0.01, batch: 8, seed: 1}
data:
  format: idx
  train: {images: $d/train-images-idx3-ubyte.gz, labels: $d/train-labels-idx1-ubyte.gz}
  test:  {images: $d/t10k-images-idx3-ubyte.gz, labels: $d/t10k-labels-idx1-ubyte.gz}
  scale: 255
EOF
  cat > "$work/prog.c" <<'EOF'
/* an object from `teslac build --train-step`: one step, inference, NAME_save (the runtime) */
#include <stdio.h>
#include <stdlib.h>
#include <tesla_rt.h>
#include "model.h"
int main(int argc, char **argv) {
  static float x[TINY_BATCH * TINY_INPUT_SIZE], y[TINY_BATCH * TINY_OUTPUT_SIZE];
  static int32_t labels[TINY_BATCH];
  void *state = aligned_alloc(TINY_ALIGNMENT, TINY_TRAIN_STATE_SIZE);
  void *scratch = aligned_alloc(TINY_ALIGNMENT, TINY_TRAIN_ACTIVATIONS_SIZE > TINY_ACTIVATIONS_SIZE
                                                ? TINY_TRAIN_ACTIVATIONS_SIZE : TINY_ACTIVATIONS_SIZE);
  TsErr e;
  if (!state || !scratch) return 1;
  for (int i = 0; i < TINY_BATCH * TINY_INPUT_SIZE; i++) x[i] = (float)(i % 7) / 7;
  for (int i = 0; i < TINY_BATCH; i++) labels[i] = i % TINY_CLASSES;
  tiny_train_init(state);
  float loss = tiny_train_step(state, x, labels, scratch);
  tiny_infer_weights(tiny_train_weights(state), x, y, 1, scratch);
  float sum = 0;
  for (int c = 0; c < TINY_OUTPUT_SIZE; c++) sum += y[c];
  if (!(loss > 0) || sum < 0.999f || sum > 1.001f) { fprintf(stderr, "loss %g, sum %g\n", loss, sum); return 1; }
  if (tiny_save(tiny_train_weights(state), argv[1], &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
  printf("object ok: loss %.4f\n", loss);
  free(state), free(scratch);
  (void)argc;
  return 0;
}
EOF
  if ! "$teslac" train "$work/tiny.yaml" --steps 2 --threads 1 -o "$work/w.safetensors" > "$work/train.log" 2>&1; then
    cat "$work/train.log"; bad "the installed teslac train"
  elif ! "$teslac" build "$work/tiny.yaml" --weights "$work/w.safetensors" --train-step \
         -o "$work/model.o" -q; then bad "the installed teslac build"
  # shellcheck disable=SC2046
  elif ! (cd "$work" && $CC "${san[@]}" -std=c11 -Wall -Werror prog.c model.o \
            $(pkg-config --define-variable=prefix="$P" --cflags --libs tesla_rt) -o prog); then
    bad "cc prog.c model.o \$(pkg-config --cflags --libs tesla_rt) does not link"
  elif ! "$work/prog" "$work/saved.safetensors"; then bad "the program over the object failed"
  elif ! "$teslac" eval "$work/tiny.yaml" --weights "$work/saved.safetensors" > /dev/null 2>&1; then
    bad "teslac eval does not read what NAME_save wrote"
  fi
fi

# ---- the man page ---------------------------------------------------------------------------
manpage=$(dir "$mandir")/man1/teslac.1
if command -v groff > /dev/null; then
  groff -man -Tutf8 -P-cbou -rLL=200n -ww "$manpage" 2> "$work/man.err" > "$work/man.txt"
elif command -v man > /dev/null; then
  MANWIDTH=200 man -l "$manpage" 2> "$work/man.err" > "$work/man.txt"
fi
if [ -s "$work/man.txt" ]; then
  [ ! -s "$work/man.err" ] || { cat "$work/man.err"; bad "the man page renders with warnings"; }
  for s in NAME SYNOPSIS DESCRIPTION COMMANDS "EXIT STATUS" ENVIRONMENT FILES "SEE ALSO"; do
    grep -q "^$s\$" "$work/man.txt" || bad "man: no section $s"
  done
  grep -q '\.cache/teslac' "$work/man.txt" || bad "man: FILES does not name ~/.cache/teslac"
  for c in $cmds; do
    grep -q "^ *teslac $c\$" "$work/man.txt" || bad "man: no subsection for teslac $c"
    for f in $(flags_of "$c"); do
      grep -q -- "$f" "$work/man.txt" || bad "man: $c's $f is missing"
    done
  done
  # every variable the sources read
  env_txt=$(sed -n '/^ENVIRONMENT$/,/^FILES$/p' "$work/man.txt")
  for v in $(grep -rhoE 'getenv\("[A-Z_]+"\)' "$root/compiler" "$root/runtime" | sed 's/getenv("\(.*\)")/\1/' | sort -u); do
    grep -q "\b$v\b" <<< "$env_txt" || bad "man: ENVIRONMENT does not name $v"
  done
  echo "man: $(wc -l < "$work/man.txt") lines rendered"
else
  echo "SKIP: the man page's rendering (neither groff nor man)"
  grep -q '^\.SH COMMANDS' "$manpage" || bad "man: no COMMANDS section"
fi

# ---- bash completion ------------------------------------------------------------------------
bcomp=$(dir "$datadir")/bash-completion/completions/teslac
mkdir -p "$work/files/sub" && touch "$work/files/"{net.yaml,net.txt,old.yml,w.safetensors,w.txt,notes.txt}
# complete_all: one line per case, "words -> COMPREPLY", in a bash that sourced $@ (in order)
complete_all() {
  (cd "$work/files" && bash --norc --noprofile -c '
    for f; do source "$f" || exit 1; done
    t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _teslac
          local r=; ((${#COMPREPLY[@]})) && r=$(printf "%s\n" "${COMPREPLY[@]}" | sort | tr "\n" " ")
          printf "%s -> %s\n" "$*" "$r"; }
    t teslac tr
    t teslac train --ep
    t teslac ""
    t teslac train ""
    t teslac eval net.yaml --weights ""
    t teslac train net.yaml --init ""
    t teslac train net.yaml --resume w
    t teslac train net.yaml -o ""
    t teslac train net.yaml --epochs ""
    while read -r c; do t teslac "$c" -; done <<< "$CMDS"
  ' complete_all "$@")
}
expect() {   # expect OUT WORDS REPLY: the line for WORDS completed to exactly REPLY
  grep -qxF -- "$2 -> $3" <<< "$1" || bad "bash ($4): '$2' gave '$(grep -F -- "$2 ->" <<< "$1" | head -1)', want '$3'"
}
check_bash() {   # check_bash LABEL SCRIPT...
  local out
  out=$(CMDS=$cmds complete_all "${@:2}") || { bad "bash ($1): sourcing the completion failed"; return; }
  expect "$out" "teslac tr" "train " "$1"
  expect "$out" "teslac train --ep" "--epochs " "$1"
  expect "$out" "teslac " "$(sort <<< "$cmds" | tr '\n' ' ')" "$1"
  expect "$out" "teslac train " "net.yaml old.yml sub " "$1"
  expect "$out" "teslac eval net.yaml --weights " "sub w.safetensors " "$1"
  expect "$out" "teslac train net.yaml --init " "sub w.safetensors " "$1"
  expect "$out" "teslac train net.yaml --resume w" "w.safetensors " "$1"
  expect "$out" "teslac train net.yaml -o " "net.txt net.yaml notes.txt old.yml sub w.safetensors w.txt " "$1"
  expect "$out" "teslac train net.yaml --epochs " "" "$1"
  local c f line
  for c in $cmds; do
    line=" $(grep -F -- "teslac $c - ->" <<< "$out" | sed 's/.*-> //') "
    for f in $(flags_of "$c"); do
      case $line in *" $f "*) ;; *) bad "bash ($1): teslac $c - does not offer $f" ;; esac
    done
  done
}
check_bash "alone" "$bcomp"
if [ -f /usr/share/bash-completion/bash_completion ]; then
  check_bash "with bash-completion" /usr/share/bash-completion/bash_completion "$bcomp"
else
  echo "SKIP: bash completion under the bash-completion package (not installed)"
fi

# ---- zsh completion ----------------------------------------------------------------------------
zcomp=$(dir "$datadir")/zsh/site-functions/_teslac
head -1 "$zcomp" | grep -q '^#compdef teslac' || bad "zsh: no #compdef line"
for c in $cmds; do
  grep -q "^    '$c:" "$zcomp" || bad "zsh: command $c missing"
  for f in $(flags_of "$c"); do
    grep -qE -- "(['{,]|\\))$f([[+,}]|=)" "$zcomp" || bad "zsh: $c's $f missing"
  done
done
if command -v zsh > /dev/null; then
  zsh -n "$zcomp" || bad "zsh -n: the zsh completion does not parse"
  # a real zsh completing in a pty (tests/zsh_complete.zsh): commands, flags, spec files,
  # safetensors after --weights, any file after -o; the line after each TAB ('ne' completes
  # only because net.txt is filtered out; zsh offers every file when none fits the pattern)
  mkdir -p "$work/zfn" && cp "$zcomp" "$work/zfn/"
  out=$(timeout 120 zsh -f "$root/tests/zsh_complete.zsh" "$work/zfn" "$work/files" \
        'teslac tr' 'teslac train --ep' 'teslac train ne' \
        'teslac eval net.yaml --weights w' 'teslac train net.yaml --init w' \
        'teslac build net.yaml --q' 'teslac train net.yaml -o no' 'teslac plot no')
  rc=$?
  if ((rc == 77)); then echo "SKIP: zsh's completion in a pty (no zsh/zpty)"
  else
    zexpect() {   # zexpect WORDS LINE: WORDS completed to LINE (trailing blanks aside)
      local got
      got=$(grep -F -- "$1 ->" <<< "$out" | head -1 | sed -e 's/.* -> //' -e 's/ *$//')
      [ "$got" = "$2" ] || bad "zsh: '$1' gave '$got', want '$2'"
    }
    zexpect 'teslac tr' 'teslac train'
    zexpect 'teslac train --ep' 'teslac train --epochs'
    zexpect 'teslac train ne' 'teslac train net.yaml'
    zexpect 'teslac eval net.yaml --weights w' 'teslac eval net.yaml --weights w.safetensors'
    zexpect 'teslac train net.yaml --init w' 'teslac train net.yaml --init w.safetensors'
    zexpect 'teslac build net.yaml --q' 'teslac build net.yaml --quiet'
    zexpect 'teslac train net.yaml -o no' 'teslac train net.yaml -o notes.txt'
    zexpect 'teslac plot no' 'teslac plot notes.txt'
  fi
else
  echo "SKIP: zsh -n (no zsh)"
fi

if ((fail)); then echo "$fail failures"; exit 1; fi
echo "install: all checks passed"
