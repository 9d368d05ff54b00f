# tests/zsh_complete.zsh FN_DIR FILES_DIR WORDS...: run by tests/install_test.sh. Each WORDS is
# completed once (TAB) by a real interactive zsh (zsh -f -i in a pty, compinit, FN_DIR first in
# $fpath, in FILES_DIR) and printed as "WORDS -> LINE", LINE the command line after the TAB.
# Exit 77 without the zsh/zpty module.
zmodload zsh/zpty || exit 77
fn=$1 files=$2; shift 2
zpty -b z 'zsh -f -i'
zpty -w z "PS1='PROMPT> '; fpath=(${(q)fn} \$fpath); autoload -Uz compinit; compinit -u -D; cd ${(q)files}; unsetopt beep; print -r -- READY"
slurp() {   # read until $1 (a pattern) shows, 20 s at most; the text in $out
  local chunk i
  out=
  for ((i = 0; i < 200; i++)); do
    while zpty -r -t z chunk; do out+=$chunk; done
    [[ $out == *$~1* ]] && return 0
    sleep 0.1
  done
  return 1
}
slurp 'READY*PROMPT> ' || { print "zsh did not start"; exit 1; }
for w in "$@"; do
  zpty -w -n z "$w"$'\t'
  sleep 1
  slurp "*"
  # the line as it stands, printed by the shell: Ctrl-A, "print -r -- RES:", Ctrl-E, "ENDRES", Enter
  zpty -w -n z $'\C-a'"print -r -- RES:"$'\C-e'"ENDRES"$'\n'
  slurp 'RES:*ENDRES*PROMPT> ' || { print -r -- "$w -> (no answer)"; continue; }
  line=${${(M)${(f)out//$'\r'/}:#RES:*ENDRES}[-1]}
  line=${${line#RES:}%ENDRES}
  print -r -- "$w -> $line"
done
zpty -d z
