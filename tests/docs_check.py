#!/usr/bin/env python3
"""tests/docs_check.py: the documentation against the program (meson test docs, through
tests/docs_test.sh). Python 3 standard library only. Three checks over README.md,
specs/README.md, examples/README.md and bench/README.md:

1. Links. Every relative markdown link `[text](path)`, `[text](path#anchor)`, `[text](#anchor)`
   resolves to a file of the repository, and an anchor to a heading of that file (GitHub's
   slugs: lower case, punctuation other than '-' and '_' dropped, spaces to '-', a repeated
   heading gets -1, -2, ...). A path in backticks that starts with one of the repository's
   folders (`specs/mlp.yaml`, `tests/golden/*.yaml`) must exist too, unless it is listed in
   ILLUSTRATIVE below (a name made up for an example).

2. Examples. A fenced block whose info string is `console` is run. Each line that starts with
   `$ ` is a command (bash; `teslac` is this build's teslac); the lines after it, up to the next
   `$ ` or the end of the block, are the output it must print (stdout and stderr together,
   trailing spaces ignored). In the expected text
     `...` inside a line matches any text within that line (times, samples/s, memory, paths),
     a line that is `...` alone (indentation allowed) matches any number of lines (zero or more).
   A command must exit 0 unless the next command is `echo $?`, which then shows its status.
   The console blocks of one document run in order, in one temporary working folder that has
   `specs` (a link to the repository's) and the files of `file` directives: an HTML comment
     <!-- docs-test: file NAME -->
   right before a fenced block writes that block's text to NAME there (so `teslac check NAME`
   can run a spec the page shows). Files one block writes (a checkpoint) are there for the next.

3. Specs. Every spec file the documents name (`specs/NAME.yaml`; in specs/README.md also a bare
   `NAME.yaml` of that folder) passes `teslac check`, and so does every `yaml` block that is a
   whole spec (it has a top-level `tesla:` key) and whose data files (`images:`, `labels:`)
   exist; a spec the page shows as wrong is marked
     <!-- docs-test: file NAME bad -->
   and must then fail in a console block of the page (which shows its diagnostics).

usage: docs_check.py --teslac TESLAC [--root ROOT] [--no-run] [--doc FILE ...]
  --no-run: checks 1 and 3 only (no Fashion-MNIST: the examples train on it)
Exit 0 when everything agrees, 1 otherwise; each disagreement says FILE:LINE and what differs.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

DOCS = ["README.md", "specs/README.md", "examples/README.md", "bench/README.md"]
# the repository's top-level folders: a backticked path that starts with one must exist
TOP = ("compiler/", "runtime/", "specs/", "tests/", "bench/", "scripts/", "examples/", "tools/")
# paths the documents make up for an example, or that a script creates (not in the repository)
ILLUSTRATIVE = {
    "specs/My-Net.v2.yaml",        # the default model name's rule
    "specs/m.yaml", "specs/data/x.gz",   # relative data paths
    "bench/.openblas/", "bench/.ort/",   # fetched by bench/fetch_*.sh
}
# a path into someone's machine (a home or work folder) is no file of the repository
MACHINE = ("/work/", "/home/", "/root/")
MARKER = "@@docs-test-rc"
fails = []


def fail(where, msg):
    fails.append(f"{where}: {msg}")


# ---- markdown: fences, headings, links ---------------------------------------------------

class Block:
    def __init__(self, info, line, text, directive):
        self.info, self.line, self.text, self.directive = info, line, text, directive


def parse(path, directives=None):
    """(prose lines with their numbers, fenced blocks) of a markdown file; its docs-test
    directives (line, text) appended to `directives`"""
    prose, blocks = [], []
    fence, buf, start, info, directive, pending = None, [], 0, "", None, None
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        if fence is None:
            m = re.match(r"^\s*(```+|~~~+)\s*([^`]*)$", line)
            if m:
                fence, buf, start, info = m.group(1), [], n, m.group(2).strip()
                directive, pending = pending, None
                continue
            d = re.match(r"^\s*<!--\s*docs-test:\s*(.*?)\s*-->\s*$", line)
            if d:
                pending = (n, d.group(1))
                if directives is not None:
                    directives.append(pending)
            elif line.strip():
                pending = None
            prose.append((n, line))
        elif line.strip().startswith(fence) and not line.strip()[len(fence):].strip():
            blocks.append(Block(info, start, "\n".join(buf) + "\n", directive))
            fence = None
        else:
            buf.append(line)
    if fence is not None:
        fail(f"{path}:{start}", "a fenced block that is never closed")
    return prose, blocks


def strip_code(line):
    return re.sub(r"`+[^`]*`+", " ", line)


def slug(text):
    """GitHub's anchor for a heading's text"""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)   # a link: its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path, cache={}):
    if path not in cache:
        seen, out = {}, set()
        prose, _ = parse(path)
        for _, line in prose:
            m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            s = slug(m.group(2))
            k = seen.get(s, 0)
            seen[s] = k + 1
            out.add(s if k == 0 else f"{s}-{k}")
        cache[path] = out
    return cache[path]


def repo_files(root):
    """the files git tracks (or, outside a git checkout, every file under root)"""
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, check=True).stdout
        files = {p for p in out.decode().split("\0") if p}
        if files:
            return files
    except (OSError, subprocess.CalledProcessError):
        pass
    files = set()
    for d, _, names in os.walk(root):
        for nm in names:
            files.add(os.path.relpath(os.path.join(d, nm), root))
    return files


def in_repo(rel, files):
    """a file of the repository, or a folder that holds one"""
    rel = os.path.normpath(rel)
    if rel in files:
        return True
    return any(f.startswith(rel.rstrip("/") + "/") for f in files)


def check_links(root, doc, files):
    prose, _ = parse(os.path.join(root, doc))
    here = os.path.dirname(doc)
    for n, line in prose:
        for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", strip_code(line)):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            rel = os.path.normpath(os.path.join(here, path)) if path else doc
            if rel.startswith(".."):
                fail(f"{doc}:{n}", f"link '{target}' leaves the repository")
                continue
            if not in_repo(rel, files):
                fail(f"{doc}:{n}", f"link '{target}': no file {rel} in the repository")
                continue
            if anchor:
                if not rel.endswith(".md"):
                    fail(f"{doc}:{n}", f"link '{target}': an anchor into a file that is not markdown")
                elif anchor not in anchors(os.path.join(root, rel)):
                    fail(f"{doc}:{n}", f"link '{target}': {rel} has no heading whose anchor is #{anchor}")
        # paths in backticks, and in the prose outside them
        paths = [m.group(1) for m in re.finditer(r"`([^`\s]+)`", line)]
        paths += re.findall(r"(?<![\w/.$~-])((?:%s)[\w./*-]*)" % "|".join(TOP), strip_code(line))
        for p in paths:
            p = p.rstrip(".,;:)")
            if p.startswith(MACHINE):
                fail(f"{doc}:{n}", f"'{p}' is a path on one machine, not in the repository")
                continue
            if p.startswith("../") and here:   # examples/README.md: `../specs/x.yaml`
                p = os.path.normpath(os.path.join(here, p))
            if not p.startswith(TOP) or p in ILLUSTRATIVE:
                continue
            p = re.sub(r"[#:].*$", "", p)   # specs/README.md#x, file:line
            if any(c in p for c in "*?["):
                if not glob.glob(os.path.join(root, p)):
                    fail(f"{doc}:{n}", f"'{p}' matches no file")
            elif not in_repo(p, files):
                fail(f"{doc}:{n}", f"'{p}' is not a file or folder of the repository")


# ---- specs -------------------------------------------------------------------------------

def teslac_check(teslac, path, cwd):
    r = subprocess.run([teslac, "check", path], cwd=cwd, capture_output=True, text=True,
                       env=dict(os.environ, NO_COLOR="1"), timeout=60)
    return r.returncode, r.stderr


def is_spec(block):
    return block.info.split()[:1] == ["yaml"] and re.search(r"^tesla:", block.text, re.M)


def data_paths(text):
    return re.findall(r"\b(?:images|labels):\s*([^,}\s]+)", text)


def check_specs(root, doc, teslac, blocks, tmp, named):
    where = lambda b: f"{doc}:{b.line}"
    for b in blocks:
        bad = b.directive and b.directive[1].split()[-1:] == ["bad"]
        if not is_spec(b) or bad:
            continue
        missing = [p for p in data_paths(b.text) if not os.path.isabs(p) or not os.path.exists(p)]
        if missing and not os.path.isdir("/usr/share/datasets/fashion-mnist"):
            continue   # no data here: the paths cannot be told apart from wrong ones
        if missing:
            fail(where(b), f"the spec's data file {missing[0]} does not exist (give an absolute path, "
                           "e.g. /usr/share/datasets/fashion-mnist/...)")
        spec = os.path.join(tmp, f"block{b.line}.yaml")
        with open(spec, "w", encoding="utf-8") as f:
            f.write(b.text)
        rc, err = teslac_check(teslac, spec, tmp)
        if rc != 0:
            fail(where(b), f"this spec fails teslac check (exit {rc}):\n{err}")
    prose, _ = parse(os.path.join(root, doc))
    text = "\n".join(line for _, line in prose) + "\n" + "\n".join(b.text for b in blocks)
    for p in set(re.findall(r"(?<![\w/.-])(specs/[\w.-]+\.yaml)\b", text)) - ILLUSTRATIVE:
        named.add(p)
    if doc == "specs/README.md":
        for p in set(re.findall(r"(?<![\w/.-])([\w-]+\.yaml)\b", text)):
            if os.path.exists(os.path.join(root, "specs", p)):
                named.add("specs/" + p)


# ---- console blocks ----------------------------------------------------------------------

def commands(block):
    """[(line number, command, [expected lines])] of a console block"""
    out = []
    for k, line in enumerate(block.text.rstrip("\n").split("\n")):
        if line.startswith("$ "):
            out.append((block.line + 1 + k, line[2:], []))
        elif out:
            out[-1][2].append(line.rstrip())
        elif line.strip():
            fail(f"?:{block.line + 1 + k}", "a console block must start with a '$ ' command")
    return out


def line_re(pattern):
    return re.compile("^" + ".*?".join(re.escape(p) for p in pattern.split("...")) + "$")


def matches(expected, actual):
    """expected lines (with ... masks) against actual lines; the first expected line that
    cannot match, or None"""
    memo, worst = {}, [0]

    def go(i, j):
        if (i, j) in memo:
            return memo[(i, j)]
        worst[0] = max(worst[0], i)
        if i == len(expected):
            r = j == len(actual)
        elif expected[i].strip() == "...":
            r = any(go(i + 1, k) for k in range(j, len(actual) + 1))
        else:
            r = j < len(actual) and bool(line_re(expected[i]).match(actual[j])) and go(i + 1, j + 1)
        memo[(i, j)] = r
        return r

    return None if go(0, 0) else worst[0]


def json_keys(v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            out.add(k)
            json_keys(x, out)
    elif isinstance(v, list):
        for x in v:
            json_keys(x, out)
    return out


def section(root, doc, line):
    """the text of the section (heading to the next heading of its level or above) around line"""
    with open(os.path.join(root, doc), encoding="utf-8") as f:
        lines = f.read().split("\n")
    heads = [(n, len(m.group(1))) for n, l in parse(os.path.join(root, doc))[0]
             for m in [re.match(r"^(#{1,6})\s", l)] if m]
    start, level = max(((n, lv) for n, lv in heads if n <= line), default=(1, 1))
    end = min((n for n, lv in heads if n > start and lv <= level), default=len(lines) + 1)
    return "\n".join(lines[start - 1:end - 1])


def check_json_keys(root, doc, n, cmd, work, env):
    """`json-keys CMD`: every key of the JSON (a document, or one per line) CMD prints is named
    in backticks in the section of the directive"""
    import json
    r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        fail(f"{doc}:{n}", f"json-keys '{cmd}' exited {r.returncode}:\n{r.stderr}")
        return
    keys = set()
    try:
        keys = json_keys(json.loads(r.stdout), keys)
    except ValueError:
        try:
            for line in r.stdout.splitlines():
                json_keys(json.loads(line), keys)
        except ValueError as e:
            fail(f"{doc}:{n}", f"json-keys '{cmd}' printed no JSON: {e}")
            return
    words = set()
    for span in re.findall(r"`+([^`]*)`+", section(root, doc, n)):
        words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span))
    for k in sorted(keys - words):
        fail(f"{doc}:{n}", f"'{cmd}' prints the key \"{k}\", which this section does not name")


def run_console(root, doc, teslac, blocks, bad_files, directives):
    work = tempfile.mkdtemp(prefix="docs-test-")
    try:
        os.symlink(os.path.join(root, "specs"), os.path.join(work, "specs"))
        bindir = os.path.join(work, ".bin")
        os.mkdir(bindir)
        os.symlink(teslac, os.path.join(bindir, "teslac"))
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1",
                   LC_ALL="C")
        ran = set()
        keyed = [d for d in directives if d[1].startswith("json-keys ")]
        for b in blocks + [None]:
            while keyed and (b is None or keyed[0][0] < b.line):   # in the page's order
                n, d = keyed.pop(0)
                check_json_keys(root, doc, n, d[len("json-keys "):], work, env)
            if b is None:
                break
            if b.directive and b.directive[1].startswith("file "):
                name = b.directive[1].split()[1]
                with open(os.path.join(work, name), "w", encoding="utf-8") as f:
                    f.write(b.text)
            if b.info.split()[:1] != ["console"]:
                continue
            cmds = commands(b)
            script = ["exec 2>&1 < /dev/null"]
            for k, (_, cmd, _) in enumerate(cmds):
                script += [cmd, f"__rc=$?; printf '\\n{MARKER} %d@@\\n' $__rc; (exit $__rc)"]
            try:
                r = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, env=env,
                                   capture_output=True, timeout=180)
            except subprocess.TimeoutExpired:
                fail(f"{doc}:{b.line}", "the block's commands took more than 180 s")
                continue
            parts = re.split(r"\n" + MARKER + r" (\d+)@@\n", r.stdout.decode("utf-8", "replace"))
            for k, (n, cmd, expected) in enumerate(cmds):
                ran.update(cmd.split())
                if 2 * k + 1 >= len(parts):
                    fail(f"{doc}:{n}", f"'{cmd}': the block stopped before it ran")
                    break
                out = parts[2 * k][:-1] if parts[2 * k].endswith("\n") else parts[2 * k]
                actual = [x.rstrip() for x in out.split("\n")] if out else []
                rc = int(parts[2 * k + 1])
                shown = k + 1 < len(cmds) and cmds[k + 1][1].strip() == "echo $?"
                if rc != 0 and not shown:
                    fail(f"{doc}:{n}", f"'{cmd}' exited {rc} (show it with a following '$ echo $?')")
                while expected and not expected[-1].strip():
                    expected = expected[:-1]
                bad = matches(expected, actual)
                if bad is not None:
                    at = expected[bad] if bad < len(expected) else "(the end of the expected text)"
                    fail(f"{doc}:{n}", f"'{cmd}' printed something else; first expected line that does not "
                                       f"match: {at!r}\n--- expected\n" + "\n".join(expected) +
                         "\n--- printed\n" + "\n".join(actual))
        for name in bad_files:
            if name not in ran:
                fail(doc, f"the bad spec {name} is never run by a console block that shows its diagnostics")
    finally:
        shutil.rmtree(work, ignore_errors=True)


SELF_DOC = """# Title

## A `section`: with punctuation

[ok](#a-section-with-punctuation) [ok](other.md#other) [ok](specs/) [broken](nothere.md)
[bad anchor](#no-such-heading) [bad anchor](other.md#nope) `specs/gone.yaml`

<!-- docs-test: file bad.yaml bad -->
```yaml
tesla: 1
input: [0]
layers: [{dense: {units: 2}}]
```

```yaml
tesla: 1
input: [4]
layers: [{dense: {units: 1}}]
```

<!-- docs-test: json-keys printf '{"named": 1, "unnamed": 2}' -->
`named`

```console
$ printf 'a 1.5 s\\nx\\ny\\nz\\n'
a ... s
...
z
$ teslac check bad.yaml > /dev/null 2>&1
$ echo wrong
right
$ false
```
"""
# what the self-test's page must be reported for, one pattern per disagreement
SELF_EXPECT = [r"README.md:5: link 'nothere.md'", r"README.md:6: link '#no-such-heading'",
               r"README.md:6: link 'other.md#nope'", r"README.md:6: 'specs/gone.yaml' is not", r"specs/gone.yaml: named in the documents",
               r"README.md:15: this spec fails teslac check", r'prints the key "unnamed"',
               r"'teslac check bad.yaml > /dev/null 2>&1' exited 1",
               r"'echo wrong' printed something else", r"'false' exited 1"]


def self_test(teslac):
    """the checker on a page with every kind of mistake: each must be reported, nothing else"""
    root = tempfile.mkdtemp(prefix="docs-self-")
    try:
        os.mkdir(os.path.join(root, "specs"))
        with open(os.path.join(root, "specs", "x.yaml"), "w") as f:
            f.write("tesla: 1\n")
        with open(os.path.join(root, "README.md"), "w") as f:
            f.write(SELF_DOC)
        with open(os.path.join(root, "other.md"), "w") as f:
            f.write("# Other\n")
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--teslac", teslac, "--root", root,
                            "--doc", "README.md"], capture_output=True, text=True, timeout=120)
        got = [l for l in r.stdout.splitlines() if l.startswith("FAIL: ")]
        ok = r.returncode == 1
        for pat in SELF_EXPECT:
            hit = [g for g in got if re.search(pat, g)]
            if not hit:
                print(f"self-test: not reported: {pat}")
                ok = False
            got = [g for g in got if g not in hit]
        for g in got:
            print(f"self-test: reported, but not a mistake: {g}")
            ok = False
        if not ok:
            print(r.stdout)
        print("self-test: " + ("every planted mistake reported" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teslac", required=True)
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--no-run", action="store_true")
    ap.add_argument("--doc", action="append")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    root, teslac = os.path.abspath(a.root), os.path.abspath(a.teslac)
    if a.self_test:
        return self_test(teslac)
    files = repo_files(root)
    named = set()
    tmp = tempfile.mkdtemp(prefix="docs-specs-")
    try:
        for doc in a.doc or DOCS:
            print(f"== {doc}")
            directives = []
            _, blocks = parse(os.path.join(root, doc), directives)
            check_links(root, doc, files)
            check_specs(root, doc, teslac, blocks, tmp, named)
            bad_files = [b.directive[1].split()[1] for b in blocks
                         if b.directive and b.directive[1].startswith("file ") and b.directive[1].endswith(" bad")]
            if not a.no_run:
                run_console(root, doc, teslac, blocks, bad_files, directives)
        for p in sorted(named):
            if not os.path.exists(os.path.join(root, p)):
                fail(p, "named in the documents, but not in the repository")
                continue
            rc, err = teslac_check(teslac, p, root)
            if rc != 0:
                fail(p, f"named in the documents, fails teslac check (exit {rc}):\n{err}")
        print(f"checked {len(named)} spec files named in the documents: {' '.join(sorted(named))}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in fails:
        print("FAIL: " + f)
    print(f"{len(fails)} disagreement{'s' if len(fails) != 1 else ''}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
