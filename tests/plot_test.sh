#!/usr/bin/env bash
# tests/plot_test.sh: `teslac plot` (compiler/driver/plot.c) from the outside. Hand-made logs
# (with and without validation and test values, with nulls, a single epoch, unknown keys) are
# drawn to SVG, which must parse (/usr/bin/python3's xml.etree, stdlib only) and hold, per
# series, one polyline through its non-null points (when it has two or more) and one marker
# for each; with cairo the same logs go to PNG, checked chunk by chunk (signature, CRCs, IHDR
# size, the inflated IDAT's length). Then every bad input: a missing file, a directory, an
# empty log, malformed lines (exit 1, LOG:LINE:COL), an unknown extension, an unknown option
# (exit 2), an output folder that does not exist and a write that fails (exit 1, no file left).
# Last, one real run: a tiny `teslac train --log` on IDX data written here, then its plot.
# usage: plot_test.sh TESLAC cairo|nocairo
set -uo pipefail
T=$1 CAIRO=${2:-nocairo}
case $T in /*) ;; *) T=$(pwd)/$T ;; esac   # the cases run in a temporary folder
py=/usr/bin/python3
[ -x "$py" ] || { echo "SKIP: no /usr/bin/python3"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# check_svg LOG SVG: the SVG parses, and each series (loss|accuracy)-(train|val|test) has a group
# exactly when the log has a value for it, with k circles and one polyline of k points (k >= 2)
check_svg() {
  "$py" - "$1" "$2" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
log, svg = sys.argv[1], sys.argv[2]
ns = "{http://www.w3.org/2000/svg}"
root = ET.parse(svg).getroot()
assert root.tag == ns + "svg", root.tag
assert root.get("width") == "960" and root.get("height") == "420", root.attrib
rows = [json.loads(l) for l in open(log, encoding="utf-8", errors="replace") if l.strip()]
ids = [e.get("id") for e in root.iter() if e.get("id")]
assert len(ids) == len(set(ids)), f"ids twice: {ids}"
groups = {g.get("id"): g for g in root.iter(ns + "g") if g.get("id")}
drawn = 0
for m, mk in (("loss", "loss"), ("accuracy", "accuracy")):
    for s in ("train", "val", "test"):
        k = sum(1 for r in rows if r.get(s + "_" + mk) is not None)
        g = groups.get(m + "-" + s)
        if k == 0:
            assert g is None, f"{m}-{s}: no values but a group"
            continue
        assert g is not None, f"{m}-{s}: {k} values but no group"
        circles, lines = g.findall(ns + "circle"), g.findall(ns + "polyline")
        assert len(circles) == k, f"{m}-{s}: {len(circles)} markers for {k} values"
        assert len(lines) == (1 if k > 1 else 0), f"{m}-{s}: {len(lines)} polylines for {k} values"
        if k > 1:
            pts = lines[0].get("points").split()
            assert len(pts) == k, f"{m}-{s}: {len(pts)} points for {k} values"
            for p in pts:
                x, y = map(float, p.split(","))
                assert 0 <= x <= 960 and 0 <= y <= 420, p
        drawn += 1
texts = [t.text or "" for t in root.iter(ns + "text")]
assert "epoch" in texts and "loss" in texts and "accuracy" in texts, texts
print(f"  {svg}: {len(rows)} epochs, {drawn} series")
EOF
}

# check_png PNG: signature, every chunk's CRC, IHDR 960 x 420 8-bit RGB(A), IDAT inflating to
# one filter byte and a row of pixels per line, IEND last
check_png() {
  "$py" - "$1" <<'EOF'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
pos, chunks = 8, []
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
    assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind}"
    chunks.append((kind, body))
    pos += 12 + n
assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", [c[0] for c in chunks]
w, h, depth, ctype = struct.unpack(">IIBB", chunks[0][1][:10])
assert (w, h, depth) == (960, 420, 8) and ctype in (2, 6), (w, h, depth, ctype)
raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
assert len(raw) == h * (1 + w * (3 if ctype == 2 else 4)), len(raw)
print(f"  {sys.argv[1]}: {w}x{h}, {len(raw)} bytes of pixels")
EOF
}

# ---- good logs ---------------------------------------------------------------------------------

# today's format (no validation, test values present)
cat > today.jsonl <<'EOF'
{"epoch": 1, "step": 100, "train_loss": 1.234567, "test_loss": 0.9, "test_accuracy": 0.7, "seconds": 1.5, "samples_per_second": 1200.5, "lr": 0.001, "elapsed": 1.6}
{"epoch": 2, "step": 200, "train_loss": 0.8, "test_loss": 0.75, "test_accuracy": 0.78, "seconds": 1.4, "samples_per_second": 1300.0, "lr": 0.001, "elapsed": 3.0}
{"epoch": 3, "step": 300, "train_loss": 0.61, "test_loss": 0.7, "test_accuracy": 0.8125, "seconds": 1.4, "samples_per_second": 1300.0, "lr": 0.0005, "elapsed": 4.4}
EOF
# no test data (nulls), every later key, validation with a gap, unknown keys of every kind
cat > full.log <<'EOF'
{"epoch": 1, "step": 10, "train_loss": 2.3, "test_loss": null, "test_accuracy": null, "train_accuracy": 0.1, "val_loss": 2.2, "val_accuracy": 0.12, "note": "warm-up \"quoted\" \u00e9\\", "ok": true}
  {"epoch":2,"train_loss":1.5e0,"test_loss":null,"test_accuracy":null,"train_accuracy":0.4,"val_loss":null,"val_accuracy":null,"flag":false,"x":-0.5E-3}

{ "epoch" : 3 , "train_loss" : 0.9 , "train_accuracy" : 0.7 , "val_loss" : 1.1 , "val_accuracy" : 0.66 }
{"epoch": 4, "train_loss": 0.7, "train_accuracy": 0.8, "val_loss": 1.0, "val_accuracy": 0.7, "test_loss": 1.05, "test_accuracy": 0.69}
EOF
# one epoch: markers only
echo '{"epoch": 1, "step": 5, "train_loss": 0.5, "test_loss": 0.6, "test_accuracy": 0.9}' > one.json
# one epoch, no accuracy at all (a regression or no metrics), and a constant loss
printf '{"epoch": 7, "train_loss": 0.25}\r\n{"epoch": 8, "train_loss": 0.25}\n' > noacc
# a name that needs escaping in XML, and a byte that is not UTF-8
cp one.json 'a&b<c>"d'$'\xff''.jsonl'

for log in today.jsonl full.log one.json noacc 'a&b<c>"d'$'\xff''.jsonl'; do
  case $log in *.jsonl|*.json|*.log) svg=${log%.*}.svg ;; *) svg=$log.svg ;; esac
  out=$("$T" plot "$log" 2>&1)
  rc=$?
  [ $rc = 0 ] || { bad "plot $log: exit $rc: $out"; continue; }
  [ -f "$svg" ] || { bad "plot $log: no $svg (the default output)"; continue; }
  case $out in *"$svg"*) ;; *) bad "plot $log: the message does not name $svg: $out" ;; esac
  check_svg "$log" "$svg" || bad "plot $log: the SVG does not check out"
  ls | grep -q '\.tmp-' && bad "plot $log: a temporary file was left behind"
  if [ "$CAIRO" = cairo ]; then
    "$T" plot "$log" -o "$log.out.PNG" >/dev/null 2>&1 || { bad "plot $log -o .PNG: exit $?"; continue; }
    check_png "$log.out.PNG" || bad "plot $log: the PNG does not check out"
  fi
done
# -o picks the name; a second run replaces the file
"$T" plot today.jsonl -o sub.svg >/dev/null && "$T" plot full.log -o sub.svg >/dev/null &&
  check_svg full.log sub.svg >/dev/null || bad "plot -o sub.svg over an existing file"
if [ "$CAIRO" != cairo ]; then
  out=$("$T" plot today.jsonl -o x.png 2>&1)
  rc=$?
  [ $rc = 1 ] || bad "PNG without cairo: exit $rc, not 1"
  case $out in *"needs teslac built with cairo"*) ;; *) bad "PNG without cairo: message: $out" ;; esac
  [ -e x.png ] && bad "PNG without cairo: x.png exists"
fi
"$T" plot --help | grep -q '^usage: teslac plot LOG' || bad "plot --help"
"$T" --help | grep -q '^  plot LOG' || bad "teslac --help does not list plot"

# ---- bad inputs --------------------------------------------------------------------------------

# expect RC WHAT PATTERN -- ARGS...: exit RC, PATTERN in stderr, nothing new in the folder
expect() {
  local want=$1 what=$2 pat=$3
  shift 4
  local before after
  before=$(ls -a | sort)
  "$T" plot "$@" >out.txt 2>err.txt
  local rc=$?
  after=$(ls -a | sort)
  [ $rc = "$want" ] || { bad "$what: exit $rc, not $want; stderr: $(cat err.txt)"; return; }
  grep -qF -- "$pat" err.txt || bad "$what: no '$pat' in: $(cat err.txt)"
  [ "$before" = "$after" ] || bad "$what: files changed: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' ')"
}
rm -f out.txt err.txt; touch out.txt err.txt

expect 1 "missing file" "cannot read the log 'nope.jsonl'" -- nope.jsonl
mkdir adir.jsonl
expect 1 "a directory" "it is a directory" -- adir.jsonl
: > empty.jsonl
expect 1 "empty log" "empty.jsonl: no epochs in the log" -- empty.jsonl
printf '\n  \n\n' > blank.jsonl
expect 1 "blank log" "blank.jsonl: no epochs in the log" -- blank.jsonl

# malformed lines: NAME, line 2's text, the column the message must name
good='{"epoch": 1, "train_loss": 0.5}'
while IFS='|' read -r name text col; do
  printf '%s\n%s\n' "$good" "$text" > "m_$name.jsonl"
  expect 1 "malformed: $name" "m_$name.jsonl:2:$col: error:" -- "m_$name.jsonl"
done <<'EOF'
double_comma|{"epoch": 2, "train_loss": 0.5,, "x": 1}|32
not_object|[1, 2]|1
nan|{"epoch": 2, "train_loss": NaN}|28
infinite|{"epoch": 2, "train_loss": 1e999}|28
bare_word|{"epoch": 2, "train_loss": nul}|28
truncated|{"epoch": 2, "train_loss": 0.5|31
open_string|{"epoch": 2, "note": "abc|22
after_object|{"epoch": 2} {"epoch": 3}|14
no_epoch|{"train_loss": 0.5}|1
epoch_null|{"epoch": null, "train_loss": 0.5}|11
metric_string|{"epoch": 2, "train_loss": "0.5"}|28
nested|{"epoch": 2, "extra": [1, 2]}|23
duplicate|{"epoch": 2, "test_loss": 1, "test_loss": 2}|30
bad_escape|{"epoch": 2, "note": "a\q"}|24
bad_unicode|{"epoch": 2, "note": "\u12"}|23
unquoted_key|{epoch: 2}|2
no_colon|{"epoch" 2}|10
leading_zero|{"epoch": 02}|12
trailing_comma|{"epoch": 2,}|13
plus_sign|{"epoch": +2}|11
dot_number|{"epoch": 2., "train_loss": 1}|13
EOF
# a control byte inside a string, and a NUL byte
printf '%s\n{"epoch": 2, "note": "a\tb"}\n' "$good" > m_tab.jsonl
expect 1 "malformed: tab in a string" "m_tab.jsonl:2:24: error: a control character" -- m_tab.jsonl
printf '%s\n{"epoch": 2\000}\n' "$good" > m_nul.jsonl
expect 1 "malformed: NUL byte" "m_nul.jsonl:2:12: error:" -- m_nul.jsonl
# the message shows the line with a caret under the column
"$T" plot m_dot_number.jsonl 2> err.txt
grep -q '^    2 | {"epoch": 2\., ' err.txt && grep -q '^      |             \^$' err.txt ||
  bad "the message does not show the line and a caret: $(cat err.txt)"

# the command line: exit 2
expect 2 "unknown extension" "must end in .svg or .png" -- today.jsonl -o plot.pdf
expect 2 "no extension" "must end in .svg or .png" -- today.jsonl -o plot
expect 2 "a log as the output" "must end in .svg or .png" -- today.jsonl -o today.jsonl
expect 2 "unknown option" "unknown option '--bogus'" -- today.jsonl --bogus
expect 2 "unknown short option" "unknown option '-x'" -- -x today.jsonl
expect 2 "-o without a value" "-o needs a value" -- today.jsonl -o
expect 2 "two logs" "one log at a time" -- today.jsonl full.log
expect 2 "no log" "missing LOG" --
grep -q "see 'teslac plot --help'" err.txt || bad "a usage error does not point to 'teslac plot --help'"

# outputs that cannot be written: exit 1, nothing left behind
expect 1 "no such folder" "cannot create a temporary file" -- today.jsonl -o nodir/x.svg
touch afile
expect 1 "a file as the folder" "cannot create a temporary file" -- today.jsonl -o afile/x.svg
# a write that fails part way (files of at most 1 KiB; SIGXFSZ ignored, so write() says EFBIG)
echo old > kept.svg
before=$(ls -a | sort)
( trap '' XFSZ; ulimit -f 1; exec "$T" plot today.jsonl -o kept.svg ) >/dev/null 2>err.txt
rc=$?
[ $rc = 1 ] || bad "a failed write: exit $rc, not 1: $(cat err.txt)"
grep -q "write of the temporary file" err.txt || bad "a failed write: message: $(cat err.txt)"
[ "$(cat kept.svg)" = old ] || bad "a failed write changed the existing kept.svg"
[ "$before" = "$(ls -a | sort)" ] || bad "a failed write left a file behind: $(ls -a | tr '\n' ' ')"

# ---- a real run: teslac train --log, then plot -------------------------------------------------

"$py" - <<'EOF'
import random, struct
random.seed(1)
def write(n, images, labels):   # 4x4 images of 3 classes: class c lights every third pixel from c
    img, lab = bytearray(), bytearray()
    for i in range(n):
        c = i % 3
        lab.append(c)
        img += bytes(min(255, (200 if p % 3 == c else 20) + random.randrange(40)) for p in range(16))
    open(images, "wb").write(struct.pack(">IIII", 0x803, n, 4, 4) + img)
    open(labels, "wb").write(struct.pack(">II", 0x801, n) + lab)
write(96, "train-img", "train-lab")
write(30, "test-img", "test-lab")
EOF
cat > tiny.yaml <<EOF
tesla: 1
name: tiny
input: [1, 4, 4]
classes: 3
layers:
  - flatten: {}
  - dense: {units: 8}
  - relu: {}
  - dense: {units: 3}
  - softmax: {}
train: {optimizer: adam, lr: 0.05, batch: 16, seed: 3, epochs: 3, metrics: [accuracy]}
data:
  format: idx
  train: {images: $work/train-img, labels: $work/train-lab}
  test:  {images: $work/test-img, labels: $work/test-lab}
  scale: 255
EOF
mkdir -p run
if "$T" train tiny.yaml --threads 1 -o tiny.safetensors --log run/tiny.jsonl > train.txt 2>&1; then
  [ "$(grep -c . run/tiny.jsonl)" = 3 ] || bad "train --log wrote $(grep -c . run/tiny.jsonl) lines, not 3"
  "$T" plot run/tiny.jsonl >/dev/null || bad "plot of the real log: exit $?"
  check_svg run/tiny.jsonl run/tiny.svg || bad "the real log's SVG does not check out"
  if [ "$CAIRO" = cairo ]; then
    "$T" plot run/tiny.jsonl -o run/tiny.png >/dev/null && check_png run/tiny.png || bad "the real log's PNG"
  fi
else
  bad "teslac train --log: $(cat train.txt)"
fi

if [ $fail = 0 ]; then echo "plot: all passed"; else echo "plot: $fail failed"; fi
[ $fail = 0 ]
