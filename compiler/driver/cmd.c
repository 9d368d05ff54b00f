/* cmd.c: what the driver's commands share: the option parser and the help it prints from
 * each command's table (cmd.h), numeric option values, usage errors (exit 2), checks that
 * outputs can be written and do not overwrite inputs, JSON helpers, and loading a split of
 * the spec's data. */
#include "cmd.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cmd_usage(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "teslac: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nsee 'teslac %s --help'\n", cmd);
  return 2;
}

bool cmd_decimal(const char *v, bool integer) {
  const char *p = v;
  if (!integer && (*p == '+' || *p == '-')) p++;
  size_t n = strspn(p, "0123456789");
  if (integer) return n > 0 && !p[n];
  p += n;
  size_t frac = 0;
  if (*p == '.') frac = strspn(++p, "0123456789"), p += frac;
  if (n + frac == 0) return false;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    size_t ex = strspn(p, "0123456789");
    if (!ex) return false;
    p += ex;
  }
  return !*p;
}

int cmd_value(const char *cmd, const char *flag, const char *v, double lo, double hi, bool integer, double *out) {
  errno = 0;
  double d = cmd_decimal(v, integer) ? strtod(v, NULL) : NAN;
  if (!isfinite(d) || errno == ERANGE || d < lo || d > hi) {
    if (integer)
      fprintf(stderr, "teslac: %s must be an integer from %lld to %lld, got '%s'\nsee 'teslac %s --help'\n", flag,
              (long long)lo, (long long)hi, v, cmd);
    else
      fprintf(stderr, "teslac: %s must be a number from %g to %g, got '%s'\nsee 'teslac %s --help'\n", flag, lo, hi, v, cmd);
    return 2;
  }
  *out = d;
  return 0;
}

/* ---- the option parser ------------------------------------------------------------------ */

int cmd_verbosity;

static const CmdOpt common_opts[] = {
    {"--quiet", "-q", ARG_FLAG, NULL, 0, 0, 0, NULL},
    {"--verbose", "-v", ARG_FLAG, NULL, 0, 0, 0, NULL},
    {"--help", "-h", ARG_FLAG, NULL, 0, 0, 0, "this text"},
    {NULL}};

static const char quiet_usual[] = "only errors and warnings: no progress or summary lines";
static const char verbose_usual[] = "also what the compile took and the CPU the JIT compiled for";

/* "-o CKPT", "-q, --quiet", "--epochs N" */
static int opt_left(const CmdOpt *p, char *buf, size_t cap) {
  const char *shrt = p->name[1] != '-' ? p->name : p->alias && p->alias[1] != '-' ? p->alias : NULL;
  const char *lng = p->name[1] == '-' ? p->name : p->alias && p->alias[1] == '-' ? p->alias : NULL;
  return snprintf(buf, cap, "%s%s%s%s%s", shrt ? shrt : "", shrt && lng ? ", " : "", lng ? lng : "",
                  p->meta ? " " : "", p->meta ? p->meta : "");
}

/* "  left              text", continuation lines at the text's column */
static void opt_line(FILE *f, const char *left, const char *text) {
  enum { COL = 22 };
  int n = fprintf(f, "  %s", left);
  if (n < COL - 1) fprintf(f, "%*s", COL - n, "");
  else fputs("  ", f);
  for (const char *t = text; *t; t++) {
    fputc(*t, f);
    if (*t == '\n') fprintf(f, "%*s", COL, "");
  }
  fputc('\n', f);
}

void cmd_help(const CmdDef *d, FILE *f) {
  fprintf(f, "usage: teslac %s %s\n\n%s\n\n", d->name, d->args, d->about);
  char left[96];
  for (const CmdOpt *p = d->opts; p->name; p++) {
    opt_left(p, left, sizeof left);
    opt_line(f, left, p->help);
  }
  for (const CmdOpt *p = common_opts; p->name; p++) {
    opt_left(p, left, sizeof left);
    opt_line(f, left, p == common_opts ? (d->quiet ? d->quiet : quiet_usual)
                      : p == common_opts + 1 ? (d->verbose ? d->verbose : verbose_usual) : p->help);
  }
}

static const CmdOpt *find_opt(const CmdOpt *t, const char *a, size_t n) {
  for (const CmdOpt *p = t; p->name; p++)
    if ((strlen(p->name) == n && !strncmp(p->name, a, n)) || (p->alias && strlen(p->alias) == n && !strncmp(p->alias, a, n)))
      return p;
  return NULL;
}

/* "unknown option '--epoch'; did you mean '--epochs'?" */
static int unknown_opt(const CmdDef *d, const char *a, size_t n) {
  const char *cands[128];
  int k = 0;
  for (const CmdOpt *t = d->opts; t; t = t == common_opts ? NULL : common_opts)
    for (const CmdOpt *p = t; p->name && k < 124; p++) {
      cands[k++] = p->name;
      if (p->alias) cands[k++] = p->alias;
    }
  cands[k] = NULL;
  char name[64];
  snprintf(name, sizeof name, "%.*s", (int)(n < 63 ? n : 63), a);
  const char *s = a[1] == '-' ? diag_suggest(name, cands) : NULL;
  fprintf(stderr, "teslac: unknown option '%s'", name);
  if (s) fprintf(stderr, "; did you mean '%s'?", s);
  fprintf(stderr, "\nsee 'teslac %s --help'\n", d->name);
  return 2;
}

/* one option `p` whose value (if it takes one) is `v` (NULL: none was given) */
static int set_opt(const CmdDef *d, const CmdOpt *p, const char *spelled, const char *v, void *dst) {
  char *field = (char *)dst + p->off;
  if (p->kind == ARG_FLAG) {
    if (v) {
      fprintf(stderr, "teslac: %s takes no value, got '%s'\nsee 'teslac %s --help'\n", spelled, v, d->name);
      return 2;
    }
    *(bool *)field = true;
    return 0;
  }
  if (!v) {   /* an empty value is passed on: "--batch ''" is out of range, "-o ''" an empty path */
    if (p->meta) fprintf(stderr, "teslac: %s needs a value (%s %s)\nsee 'teslac %s --help'\n", spelled, p->name, p->meta, d->name);
    else fprintf(stderr, "teslac: %s needs a value\nsee 'teslac %s --help'\n", spelled, d->name);
    return 2;
  }
  if (p->kind == ARG_STR) {
    *(const char **)field = v;
    return 0;
  }
  double x;
  int rc = cmd_value(d->name, spelled, v, p->lo, p->hi, p->kind == ARG_INT, &x);
  if (rc) return rc;
  if (p->kind == ARG_INT) *(int64_t *)field = (int64_t)x;
  else *(double *)field = x;
  return 0;
}

/* -q, -v: the verbosity; -h: the help, then -1 (the command is done) */
static int common_opt(const CmdDef *d, const CmdOpt *c) {
  if (c == common_opts + 2) {
    cmd_help(d, stdout);
    return -1;
  }
  cmd_verbosity = c == common_opts ? -1 : 1;
  return 0;
}

/* argv[*i] is short options together (GNU): flags, the last one perhaps taking a value (the
 * rest of the word, or the next argument): -qv, -qO, -qo FILE, -qoFILE */
static int short_group(const CmdDef *d, int argc, char **argv, int *i, void *dst) {
  const char *a = argv[*i];
  for (const char *ch = a + 1; *ch; ch++) {
    char one[3] = {'-', *ch, 0};
    const CmdOpt *p = find_opt(d->opts, one, 2), *c = p ? NULL : find_opt(common_opts, one, 2);
    if (c) {
      if (common_opt(d, c) < 0) return -1;
      continue;
    }
    if (!p) {
      fprintf(stderr, "teslac: unknown option '%s' in '%s'\nsee 'teslac %s --help'\n", one, a, d->name);
      return 2;
    }
    if (p->kind == ARG_FLAG) {
      *(bool *)((char *)dst + p->off) = true;
      continue;
    }
    const char *v = ch[1] ? ch + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    return set_opt(d, p, one, v, dst);
  }
  return 0;
}

int cmd_parse(const CmdDef *d, int argc, char **argv, void *dst) {
  cmd_verbosity = 0;
  bool opts_end = false;
  const char **pos = d->pos ? (const char **)((char *)dst + d->pos_off) : NULL;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (opts_end || a[0] != '-' || !a[1]) {   /* a positional argument ("-": standard input) */
      if (!*a) return cmd_usage(d->name, "an empty argument where %s was expected", d->pos ? d->pos : "nothing");
      if (!pos) return cmd_usage(d->name, "unexpected argument '%s'", a);
      if (*pos) {
        char what[32];
        size_t k = 0;
        for (; d->pos[k] && k + 1 < sizeof what; k++) what[k] = (char)tolower((unsigned char)d->pos[k]);
        what[k] = 0;
        fprintf(stderr, "teslac: one %s at a time; '%s' is one too many\nsee 'teslac %s --help'\n", what, a, d->name);
        return 2;
      }
      *pos = a;
      continue;
    }
    if (!strcmp(a, "--")) {
      opts_end = true;
      continue;
    }
    /* --name=value, --name [value], -x [value], -xvalue */
    const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    const CmdOpt *p = find_opt(d->opts, a, n), *c = p ? NULL : find_opt(common_opts, a, n);
    const char *v = eq ? eq + 1 : NULL;
    if (!p && !c && a[1] != '-' && n > 2) {   /* -ovalue, or flags together: -qv, -qo FILE */
      p = find_opt(d->opts, a, 2);
      if (p && p->kind != ARG_FLAG) {
        n = 2, v = a + 2;
      } else if (p || find_opt(common_opts, a, 2)) {
        int rc = short_group(d, argc, argv, &i, dst);
        if (rc) return rc;
        continue;
      }
    }
    char spelled[64];
    snprintf(spelled, sizeof spelled, "%.*s", (int)(n < 63 ? n : 63), a);
    if (c) {
      if (v) {
        fprintf(stderr, "teslac: %s takes no value, got '%s'\nsee 'teslac %s --help'\n", spelled, v, d->name);
        return 2;
      }
      if (common_opt(d, c) < 0) return -1;
      continue;
    }
    if (!p) return unknown_opt(d, a, n);
    if (p->kind != ARG_FLAG && !v) {
      if (i + 1 >= argc) return set_opt(d, p, spelled, NULL, dst);
      v = argv[++i];
    }
    int rc = set_opt(d, p, spelled, v, dst);
    if (rc) return rc;
  }
  if (pos && !*pos) return cmd_usage(d->name, "missing %s", d->pos_hint ? d->pos_hint : d->pos ? d->pos : "");
  for (const CmdOpt *p = d->opts; p->name; p++)   /* a required option is a string one */
    if (p->required && !*(const char **)((char *)dst + p->off)) {
      fprintf(stderr, "teslac: %s needs %s %s\nsee 'teslac %s --help'\n", d->name, p->name, p->meta, d->name);
      return 2;
    }
  return 0;
}

const CmdDef *cmd_find(const char *name) {
  for (int i = 0; cmd_registry[i]; i++)
    if (!strcmp(cmd_registry[i]->name, name)) return cmd_registry[i];
  return NULL;
}

int cmd_parse_opts(const CmdDef *d, int argc, char **argv, TrainOpts *o) {
  memset(o, 0, sizeof *o);
  o->val_split = -1;
  o->seed = -1;
  o->spec = NULL;
  int rc = cmd_parse(d, argc, argv, o);
  if (rc) return rc;
  o->have_seed = o->seed >= 0;
  if (o->no_cache) jit_cache_enable(false);   /* process-wide: every compile of this command */
  const char *cmd = d->name;
  if (o->init && o->resume) return cmd_usage(cmd, "%sgive --init or --resume, not both", "");
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (o->threads > cores && cores > 0)
    fprintf(stderr, "teslac: warning: --threads %lld is more than the %ld cores here; the extra threads only wait for "
                    "each other (the tiles are shared out statically)\n", (long long)o->threads, cores);
  return 0;
}

int cmd_check_output(const char *path, const char *what) {
  struct stat st;
  if (!*path) {
    fprintf(stderr, "teslac: the %s path is empty\n", what);
    return -1;
  }
  if (stat(path, &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      fprintf(stderr, "teslac: cannot write the %s '%s': it exists and is not a regular file\n", what, path);
      return -1;
    }
  } else if (errno != ENOENT) {
    fprintf(stderr, "teslac: cannot write the %s '%s': %s\n", what, path, strerror(errno));
    return -1;
  }
  /* the folder must take a new file: outputs are written next to their path, then renamed */
  const char *slash = strrchr(path, '/');
  int dirlen = slash ? (slash == path ? 1 : (int)(slash - path)) : 1;
  char probe[4200];
  if (snprintf(probe, sizeof probe, "%.*s/.teslac-probe-%ld", dirlen, slash ? path : ".", (long)getpid()) >=
      (int)sizeof probe) {
    fprintf(stderr, "teslac: cannot write the %s '%s': the path is too long\n", what, path);
    return -1;
  }
  int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
  int err = errno;
  if (fd >= 0) close(fd), unlink(probe);
  if (fd < 0) {
    fprintf(stderr, "teslac: cannot write the %s '%s': %s\n", what, path,
            err == ENOENT ? "its folder does not exist" : strerror(err));
    return -1;
  }
  return 0;
}

/* the same file: the same device and inode when both exist; the same name otherwise */
static bool same_file(const char *a, const char *b) {
  struct stat sa, sb;
  bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
  if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return !ea && !eb && !strcmp(a, b);
}

int cmd_check_roles(const CmdFile *in, int nin, const CmdFile *out, int nout, int allow_in, int allow_out) {
  for (int j = 0; j < nout; j++) {
    if (!out[j].path) continue;
    for (int i = 0; i < nin; i++)
      if (in[i].path && !(i == allow_in && j == allow_out) && same_file(in[i].path, out[j].path)) {
        fprintf(stderr, "teslac: the %s '%s' is the %s '%s': writing it would destroy an input of this run; give the "
                        "%s another path\n", out[j].role, out[j].path, in[i].role, in[i].path, out[j].role);
        return -1;
      }
    for (int k = 0; k < j; k++)
      if (out[k].path && same_file(out[k].path, out[j].path)) {
        fprintf(stderr, "teslac: the %s and the %s are the same file '%s'; give them different paths\n", out[k].role,
                out[j].role, out[j].path);
        return -1;
      }
  }
  return 0;
}

void cmd_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p == '\t') fputs("\\t", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

void cmd_json_num(FILE *f, double x, int digits) {
  if (isfinite(x)) fprintf(f, "%.*g", digits, x);
  else fputs("null", f);
}

int cmd_load_split(Ctx *cx, const Spec *sp, const char *images, const char *labels, const char *what,
                      TsDataset *d) {
  if (!images || !labels) {
    diag_at(cx, sp->data.present ? sp->data.key_loc : (SrcLoc){0},
            "the spec has no %s data (data: {%s: {images: ..., labels: ...}})", what, what);
    return -1;
  }
  TsErr e;
  if (ts_dataset_load(images, labels, (float)sp->data.scale, (int)sp->classes, (size_t)shape_elems(&sp->input),
                      d, &e) < 0) {
    fprintf(stderr, "teslac: %s data: %s\n", what, e.msg);
    return -1;
  }
  return 0;
}
