#!/usr/bin/env python3
# teslac_doc.py TESLAC man|bash|zsh OUT: the man page teslac(1), the bash completion or the zsh
# completion of teslac, generated at build time from the built binary's own help texts
# (`teslac --help`, then `teslac CMD --help` for each command listed under "commands:"), so that
# none of them can drift from the option parser (compiler/driver/cmd.c, main.c). Only python3's
# standard library. What it reads, by shape rather than by exact strings:
#   usage: teslac CMD SPEC [--flag VALUE] ...     the first line (continued while indented)
#   commands:                                      a heading, then '  NAME args   summary' lines
#     NAME ARGS            summary                 (a summary may sit on a continuation line)
#   -o CKPT           description                  option lines: two spaces, short and/or long
#   -q, --quiet       description                  option (', ' between), a metavariable in
#   --flag VALUE      description                  caps or --flag=VALUE, the description at some
#                     continued                    column; continuation lines are deeper and do
#                                                  not start with '-'
# Flags seen only in a usage line ([--batch B]) count as options too. What the man page says
# beyond the help texts (environment, files) is written here, below.
import os
import re
import subprocess
import sys

# ---- reading the help texts ----------------------------------------------------------------

def run_help(teslac, args):
    env = dict(os.environ, LC_ALL='C', NO_COLOR='1')
    env.pop('COLUMNS', None)
    try:
        p = subprocess.run([teslac] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env, timeout=60)
    except OSError as e:
        sys.exit('teslac_doc.py: cannot run %s: %s' % (teslac, e))
    text = (p.stdout or p.stderr).decode('utf-8', 'replace')
    if p.returncode != 0 or not text.strip():
        return None
    return text.replace('\t', '    ').rstrip('\n').split('\n')


FLAG = re.compile(r'^--?[A-Za-z0-9][A-Za-z0-9_-]*$')
METAVAR = re.compile(r'^(<[^>]+>|[A-Z][A-Za-z0-9_.|/-]*|\[[^]]*\])$')


def indent(line):
    return len(line) - len(line.lstrip(' '))


def parse_option_spec(spec):
    """'-q, --quiet' / '-o CKPT' / '--flag=VALUE' -> (flags, metavar), or None if the text
    is not an option spec. A description run on after one space is cut off here."""
    flags, metavar, toks = [], None, spec.split()
    i = 0
    while i < len(toks):
        t = toks[i]
        more = t.endswith(',')
        t = t.rstrip(',')
        if '=' in t and FLAG.match(t.split('=', 1)[0]):
            t, metavar = t.split('=', 1)
        if not FLAG.match(t):
            break
        flags.append(t)
        i += 1
        if more:
            continue
        if i < len(toks) and metavar is None and METAVAR.match(toks[i].rstrip(',')):
            metavar = toks[i].rstrip(',')
            more = toks[i].endswith(',')
            i += 1
            if more:
                continue
        break
    if not flags:
        return None
    return flags, metavar, ' '.join(toks[i:])


def option_line(line):
    """An option line (indented at most 6, starting with '-'), as {flags, metavar, desc}."""
    if not line.startswith(' ') or indent(line) > 6 or not line.lstrip().startswith('-'):
        return None
    body = line.strip()
    m = re.search(r'\s{2,}', body)
    spec, desc = (body[:m.start()], body[m.end():]) if m else (body, '')
    parsed = parse_option_spec(spec)
    if not parsed:
        return None
    flags, metavar, rest = parsed
    if rest:          # a description one space after the spec
        desc = (rest + ' ' + desc).strip()
    return {'flags': flags, 'metavar': metavar, 'desc': desc}


def usage_flags(usage):
    """Flags in a usage text: [--json], [--batch B], [--eps E | --rank R], [-o OUT.svg]."""
    out = []
    toks = re.findall(r'[^\s\[\]|]+', usage)
    for i, t in enumerate(toks):
        t = t.rstrip(',')
        metavar = None
        if '=' in t:
            t, metavar = t.split('=', 1)
        if not FLAG.match(t) or t in ('-', '--'):
            continue
        if metavar is None and i + 1 < len(toks) and METAVAR.match(toks[i + 1]) and not FLAG.match(toks[i + 1]):
            metavar = toks[i + 1]
        out.append({'flags': [t], 'metavar': metavar, 'desc': ''})
    return out


def parse_help(lines):
    """A help text -> {usage, paras, sections: [(heading, [entries])], options}. Paragraphs are
    lists of lines; an option entry is {flags, metavar, desc}."""
    h = {'usage': [], 'paras': [], 'options': [], 'sections': []}
    i = 0
    if lines and lines[0].lower().startswith('usage:'):
        h['usage'].append(lines[0].split(':', 1)[1].strip())
        i = 1
        while i < len(lines) and lines[i].startswith(' ') and lines[i].strip():
            h['usage'].append(lines[i].strip())
            i += 1
    para, heading, entries = [], None, None
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            if para:
                h['paras'].append(para)
                para = []
            continue
        opt = option_line(line)
        if opt:
            if para:
                h['paras'].append(para)
                para = []
            while i < len(lines) and lines[i].strip() and indent(lines[i]) > indent(line) + 2 \
                    and not lines[i].lstrip().startswith('-'):
                opt['desc'] = (opt['desc'] + ' ' + lines[i].strip()).strip()
                i += 1
            h['options'].append(opt)
            continue
        if re.match(r'^[A-Za-z][^:]*:$', line):        # a heading: 'commands:', 'options:'
            if para:
                h['paras'].append(para)
                para = []
            heading = line[:-1].strip().lower()
            entries = []
            h['sections'].append((heading, entries))
            continue
        if heading is not None and line.startswith(' ') and not para:
            entries.append(line)
            continue
        heading = None
        para.append(line.strip())
    if para:
        h['paras'].append(para)
    return h


def parse_commands(entries):
    """'commands:' lines -> [(name, synopsis, summary)]. The summary column is where the
    continuation lines start, else the most common column after a run of 2+ spaces."""
    cols = [indent(e) for e in entries if indent(e) > 4]
    for e in entries:
        m = re.search(r'\S(\s{2,})\S', e)
        if indent(e) <= 4 and m:
            cols.append(m.end(1))
    col = max(set(cols), key=cols.count) if cols else 0
    cmds = []
    for e in entries:
        if indent(e) <= 4:
            name = e.split()[0]
            if not re.match(r'^[a-z][a-z0-9-]*$', name):
                continue
            body, summary = e.rstrip(), ''
            m = re.search(r'\S(\s{2,})\S', body)
            if m:
                body, summary = body[:m.start(1)], body[m.end(1):]
            elif col and len(body) > col and body[col - 1] == ' ':
                body, summary = body[:col], body[col:]
            cmds.append([name, body.strip(), summary.strip()])
        elif cmds:
            cmds[-1][2] = (cmds[-1][2] + ' ' + e.strip()).strip()
    return cmds


def load(teslac):
    top = run_help(teslac, ['--help'])
    if top is None:
        sys.exit('teslac_doc.py: %s --help failed' % teslac)
    g = parse_help(top)
    g['commands'] = []
    for heading, entries in g['sections']:
        if heading.startswith('command'):
            g['commands'] = parse_commands(entries)
    if not g['commands']:
        sys.exit('teslac_doc.py: no commands under "commands:" in %s --help' % teslac)
    g['cmd'] = {}
    for name, synopsis, summary in g['commands']:
        lines = run_help(teslac, [name, '--help'])
        if lines is None:
            print('teslac_doc.py: warning: %s %s --help failed; only its summary is used' % (teslac, name),
                  file=sys.stderr)
            lines = ['usage: teslac ' + synopsis, '', summary]
        c = parse_help(lines)
        c['summary'] = summary
        # every flag once: option lines first (they carry descriptions), then the usage's
        seen, opts = set(), []
        for o in c['options'] + usage_flags(' '.join(c['usage'])) + [
                {'flags': ['-h', '--help'], 'metavar': None, 'desc': 'this help'}]:
            fl = [f for f in o['flags'] if f not in seen]
            if fl:
                seen.update(fl)
                opts.append(dict(o, flags=fl))
        c['all_options'] = opts
        # positionals: the caps words of the usage right after 'teslac CMD' (SPEC, LOG)
        words = (c['usage'][0].split() if c['usage'] else [])[2:]
        c['positionals'] = []
        for w in words:
            if not re.match(r'^[A-Z][A-Z0-9_]*$', w):
                break
            c['positionals'].append(w)
        g['cmd'][name] = c
    m = re.search(r'teslac (\d+\.\d+[^\s]*)', '\n'.join(run_help(teslac, ['--version']) or []))
    g['version'] = m.group(1) if m else ''
    return g


# ---- what kind of value an option or a positional takes --------------------------------------

SAFETENSORS_FLAGS = {'--weights', '--init', '--resume'}
FILE_METAVARS = {'FILE', 'PATH', 'OUT', 'IN', 'LOG', 'DIR', 'CKPT', 'W', 'DENSE'}


def value_kind(flags, metavar, desc=''):
    """'safetensors', 'file', 'value' (no completion) or None (a flag without a value). A file:
    -o, a metavariable such as FILE, PATH, OUT.svg, or one the description calls a file
    ('--external-weights F  the weights go to file F'; F alone is also a fraction)."""
    if metavar is None:
        return None
    if set(flags) & SAFETENSORS_FLAGS:
        return 'safetensors'
    if '-o' in flags or metavar in FILE_METAVARS or re.search(r'\.[a-z]', metavar) \
            or re.search(r'\b(file|path|folder)\b', desc):
        return 'file'
    return 'value'


def positional_kind(word):
    return 'spec' if word == 'SPEC' else 'file'


def first_sentence(desc, limit=70):
    s = re.split(r'(?<=[a-z0-9)])[.;] ', desc + ' ')[0].strip().rstrip('.;')
    return s if len(s) <= limit else s[:limit - 3].rstrip() + '...'


# ---- the man page ------------------------------------------------------------------------------

def roff(text):
    """Text for roff: backslashes, hyphens of flags, lines that would start a request."""
    text = text.replace('\\', '\\e')
    text = re.sub(r'(?<![\w])-', r'\\-', text)
    if text.startswith(('.', "'")):
        text = '\\&' + text
    return text


def rflag(flag):
    return flag.replace('\\', '\\e').replace('-', '\\-')


def roff_synopsis(text):
    """Flags bold, metavariables italic."""
    out = []
    for tok in re.split(r'(\s+|[\[\]|])', text):
        if not tok:
            continue
        if FLAG.match(tok.split('=')[0]) and tok not in ('-', '--'):
            out.append('\\fB' + rflag(tok) + '\\fR')
        elif re.match(r'^[A-Z][A-Za-z0-9_.]*$', tok) or re.match(r'^<[^>]+>$', tok):
            out.append('\\fI' + roff(tok) + '\\fR')
        else:
            out.append(roff(tok))
    return ''.join(out)


def roff_options(opts, out):
    for o in opts:
        head = ', '.join('\\fB' + rflag(f) + '\\fR' for f in o['flags'])
        if o['metavar']:
            head += ' \\fI' + roff(o['metavar']) + '\\fR'
        out += ['.TP', head] + ([roff(o['desc'])] if o['desc'] else [])


def roff_usage(c, name, synopsis):
    """A command's usage line (or its synopsis under 'commands:'): 'teslac NAME' bold, the rest
    as roff_synopsis sets it."""
    words = (' '.join(c['usage']) or 'teslac ' + synopsis).split()
    if words[:2] == ['teslac', name]:
        words = words[2:]
    return '\\fBteslac %s\\fR %s' % (rflag(name), roff_synopsis(' '.join(words)))


ENVIRONMENT = [
    ('XDG_CACHE_HOME', 'the compile cache lives in $XDG_CACHE_HOME/teslac (see FILES).'),
    ('HOME', 'the compile cache is ~/.cache/teslac when XDG_CACHE_HOME is unset.'),
    ('NO_COLOR', 'when set, diagnostics are not colored even on a terminal.'),
    ('TESLA_JIT_CPU', 'compile for this LLVM CPU name instead of the host\'s (e.g. haswell on an '
                      'AVX-512 machine); a name LLVM does not know is a warning and ignored.'),
    ('TESLA_KERNELS', 'wide or narrow: the register blocking of the linked GEMM kernels (default: '
                      'wide for AVX-512 targets, narrow otherwise).'),
    ('TESLA_DIST_OVERLAP', 'under mpirun, reduce the gradients bucket by bucket with non-blocking '
                           'calls during the backward pass instead of one blocking reduction per step.'),
    ('OMPI_COMM_WORLD_SIZE, PMI_SIZE', 'set by mpirun: teslac train runs data-parallel over that '
                                       'many ranks (when built with MPI).'),
    ('OMPI_COMM_WORLD_LOCAL_SIZE', 'set by mpirun: the ranks on this machine share its cores '
                                   '(the default --threads is the cores divided by it).'),
]


def man(g):
    name_line = ' '.join(g['paras'][0]) if g['paras'] else 'a model compiler'
    out = ['.\\" teslac(1), generated by tools/teslac_doc.py from teslac --help: do not edit',
           '.TH TESLAC 1 "" "teslac %s" "User Commands"' % g['version'],
           '.nh', '.ad l',
           '.SH NAME', 'teslac \\- ' + roff(name_line.rstrip('.')),
           '.SH SYNOPSIS']
    for i, (name, synopsis, _) in enumerate(g['commands']):
        out += (['.br'] if i else []) + [roff_usage(g['cmd'][name], name, synopsis)]
    out += ['.br', '\\fBteslac\\fR \\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR',
            '.SH DESCRIPTION']
    for p in g['paras']:
        out += ['.PP', roff(' '.join(p))]
    out += ['.PP', 'Commands:']
    for name, _, summary in g['commands']:
        out += ['.TP', '\\fB%s\\fR' % roff(name), roff(summary)]
    if g['options']:
        out += ['.SH OPTIONS']
        roff_options(g['options'], out)
    out += ['.SH COMMANDS']
    for name, synopsis, _ in g['commands']:
        c = g['cmd'][name]
        out += ['.SS "teslac %s"' % name]
        out += [roff_usage(c, name, synopsis)]
        for p in c['paras']:
            out += ['.PP', roff(' '.join(p))]
        if c['options']:
            out += ['.PP', 'Options:']
            roff_options(c['options'], out)
    out += ['.SH "EXIT STATUS"']
    top = ' '.join(' '.join(p) for p in g['paras'])
    m = re.search(r'[Ee]xit status:\s*(.*?)\.(\s|$)', top)
    items = [s.strip() for s in m.group(1).split(',')] if m else []
    if items and all(re.match(r'^\d+ ', s) for s in items):
        for s in items:
            code, what = s.split(' ', 1)
            out += ['.TP', '\\fB%s\\fR' % code, roff(what)]
    else:
        out += ['.TP', '\\fB0\\fR', 'success', '.TP', '\\fB1\\fR',
                'the spec, the data or a file is wrong', '.TP', '\\fB2\\fR', 'a bad command line']
    out += ['.PP', 'Every problem with a spec is reported on standard error as FILE:LINE:COL with the '
            'source line and a caret under the column; every problem in the file is reported in one run.']
    out += ['.SH ENVIRONMENT']
    for var, what in ENVIRONMENT:
        out += ['.TP', '\\fB%s\\fR' % roff(var), roff(what)]
    out += ['.SH FILES',
            '.TP', '\\fI~/.cache/teslac/\\fR',
            'The compile cache (\\fI$XDG_CACHE_HOME/teslac/\\fR when XDG_CACHE_HOME is set): one file '
            'per compiled module, keyed by a hash of its bitcode, the kernels, the versions of teslac '
            'and LLVM and the CPU; kept under 1 GiB by dropping the least recently used entries. '
            'Safe to delete; \\fB\\-\\-no\\-cache\\fR bypasses it.',
            '.TP', '\\fINAME.safetensors\\fR',
            'The default checkpoint of \\fBteslac train\\fR (NAME: the spec\'s name).',
            '.SH "SEE ALSO"',
            '\\fBpkg\\-config\\fR(1) (\\fBpkg\\-config \\-\\-cflags \\-\\-libs tesla_rt\\fR links a program '
            'against the runtime and the objects of \\fBteslac build\\fR), \\fBmpirun\\fR(1).',
            '.PP', 'The spec language reference: specs/README.md in the TESLA sources.']
    return '\n'.join(out) + '\n'


# ---- bash completion ---------------------------------------------------------------------------

def sh_words(words):
    return ' '.join(words)


def bash(g):
    top_flags = [f for o in g['options'] for f in o['flags']] or ['-h', '--help', '--version']
    out = ['# bash completion for teslac: generated by tools/teslac_doc.py from teslac --help '
           '(do not edit).',
           '# Commands; each command\'s flags; spec files (*.yaml, *.yml) for SPEC; safetensors files',
           '# after --weights/--init/--resume; files after -o and other file options. Works with or',
           '# without the bash-completion package.',
           '',
           '# _teslac_files [EXT...]: the files under $cur ending in .EXT (none: every file), and folders',
           '_teslac_files() {',
           '  local IFS=$\'\\n\' ext',
           '  compopt -o filenames 2>/dev/null',
           '  if (($# == 0)); then COMPREPLY=($(compgen -f -- "$cur")); return; fi',
           '  COMPREPLY=($(compgen -d -- "$cur"))',
           '  for ext; do COMPREPLY+=($(compgen -f -X "!*.$ext" -- "$cur")); done',
           '}',
           '',
           '_teslac() {',
           '  local cur=${COMP_WORDS[COMP_CWORD]} prev= cmd= i npos=0',
           '  ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}',
           '  COMPREPLY=()',
           '  for ((i = 1; i < COMP_CWORD; i++)); do',
           '    case ${COMP_WORDS[i]} in -*) ;; *) cmd=${COMP_WORDS[i]}; break ;; esac',
           '  done',
           '  if [[ -z $cmd ]]; then',
           '    if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W "%s" -- "$cur"))' % sh_words(top_flags),
           '    else COMPREPLY=($(compgen -W "%s" -- "$cur")); fi' % sh_words(n for n, _, _ in g['commands']),
           '    return 0',
           '  fi',
           '  # opts: its flags; st, file, val: the flags whose value is a safetensors file, any file,',
           '  # something else; pos: what each positional is',
           '  local opts= st= file= val= pos=',
           '  case $cmd in']
    for name, _, _ in g['commands']:
        c = g['cmd'][name]
        kinds = {'safetensors': [], 'file': [], 'value': []}
        flags = []
        for o in c['all_options']:
            flags += o['flags']
            k = value_kind(o['flags'], o['metavar'], o['desc'])
            if k:
                kinds[k] += o['flags']
        out += ['    %s)' % name,
                '      opts="%s"' % sh_words(flags),
                '      st="%s" file="%s" val="%s"' % tuple(sh_words(kinds[k]) for k in ('safetensors', 'file', 'value')),
                '      pos="%s" ;;' % sh_words(positional_kind(p) for p in c['positionals'])]
    out += ['    *) return 0 ;;',
            '  esac',
            '  if [[ -n $prev && $prev == -* ]]; then',
            '    case " $st " in *" $prev "*) _teslac_files safetensors; return 0 ;; esac',
            '    case " $file " in *" $prev "*) _teslac_files; return 0 ;; esac',
            '    case " $val " in *" $prev "*) return 0 ;; esac',
            '  fi',
            '  if [[ $cur == -* ]]; then',
            '    COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
            '    return 0',
            '  fi',
            '  # which positional this is: the words after the command that are neither flags nor',
            '  # the values of flags',
            '  for ((i = i + 1; i < COMP_CWORD; i++)); do',
            '    case ${COMP_WORDS[i]} in',
            '      -*) case " $st $file $val " in *" ${COMP_WORDS[i]} "*) ((i++)) ;; esac ;;',
            '      *) ((npos++)) ;;',
            '    esac',
            '  done',
            '  local kinds=($pos)',
            '  case ${kinds[npos]:-} in',
            '    spec) _teslac_files yaml yml ;;',
            '    file) _teslac_files ;;',
            '  esac',
            '  return 0',
            '}',
            'complete -F _teslac teslac']
    return '\n'.join(out) + '\n'


# ---- zsh completion ----------------------------------------------------------------------------

def zq(s):
    """A single-quoted zsh word."""
    return "'" + s.replace("'", "'\\''") + "'"


def zdesc(s):
    return first_sentence(s).replace('\\', '\\\\').replace('[', '\\[').replace(']', '\\]').replace(':', '\\:')


ZACTION = {'safetensors': "_files -g '*.safetensors(-.)'", 'file': '_files', 'value': ' ',
           'spec': "_files -g '*.(yaml|yml)(-.)'"}


def zsh_option(o, excl=None):
    """An _arguments spec of an option; excl: what it excludes (default: its other spellings)."""
    flags, mv = o['flags'], o['metavar']
    k = value_kind(flags, mv, o['desc'])
    desc = '[' + zdesc(o['desc'] or ' '.join(flags)) + ']'
    tail = ''
    if k:
        tail = ':' + mv.replace(':', '\\:').lower() + ':' + ZACTION[k]
    if len(flags) == 1:
        return zq((excl or '') + flags[0] + ('+' if k and not flags[0].startswith('--') else '') + desc + tail)
    excl = excl or '(' + ' '.join(flags) + ')'
    return zq(excl) + '{' + ','.join(flags) + '}' + zq(desc + tail)


def zsh(g):
    out = ['#compdef teslac',
           '# zsh completion for teslac: generated by tools/teslac_doc.py from teslac --help (do not edit).',
           '',
           '_teslac() {',
           '  local curcontext=$curcontext state line ret=1',
           '  local -a commands',
           '  commands=(']
    for name, _, summary in g['commands']:
        out.append('    ' + zq(name + ':' + first_sentence(summary)))
    out += ['  )',
            '  _arguments -C \\']
    for o in g['options']:
        out.append('    ' + zsh_option(o, '(- *)') + ' \\')
    out += ["    '1: :->command' \\",
            "    '*:: :->args' && ret=0",
            '  case $state in',
            '    command) _describe -t commands \'teslac command\' commands && ret=0 ;;',
            '    args)',
            '      curcontext=${curcontext%:*:*}:teslac-$words[1]:',
            '      case $words[1] in']
    for name, _, _ in g['commands']:
        c = g['cmd'][name]
        out.append('        %s)' % name)
        out.append('          _arguments -s -S \\')
        for o in c['all_options']:
            out.append('            ' + zsh_option(o) + ' \\')
        for i, p in enumerate(c['positionals']):
            out.append('            ' + zq('%d:%s:%s' % (i + 1, p.lower(), ZACTION[positional_kind(p)])) + ' \\')
        out.append('            && ret=0 ;;')
    out += ['      esac ;;',
            '  esac',
            '  return ret',
            '}',
            '',
            '_teslac "$@"']
    return '\n'.join(out) + '\n'


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in ('man', 'bash', 'zsh'):
        sys.exit('usage: teslac_doc.py TESLAC man|bash|zsh OUT')
    g = load(sys.argv[1])
    text = {'man': man, 'bash': bash, 'zsh': zsh}[sys.argv[2]](g)
    tmp = sys.argv[3] + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, sys.argv[3])


if __name__ == '__main__':
    main()
