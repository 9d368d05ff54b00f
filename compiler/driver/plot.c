/* plot.c: `teslac plot LOG.jsonl [-o OUT.svg|OUT.png]`, the loss and accuracy curves of a
 * training run. It reads the JSON lines `teslac train --log` writes (one flat object per epoch;
 * a small strict parser: a malformed line is an error at LOG:line:col), lays out one figure,
 * two panels side by side (loss and accuracy, each with train, validation and test series,
 * axes with ticks at 1, 2 or 5 times a power of ten, a legend and a title) and draws it through
 * one of two small backends behind the Canvas calls: an SVG text writer (always built) or cairo
 * for PNG (built with -Dcairo). The bytes go to the runtime's atomic temporary (ts_out_*), so
 * a failure never leaves a partial file. Exit status as everywhere: 1 the log is wrong or the
 * output cannot be written, 2 the command line is wrong. */
#include "cmd.h"
#include "tesla_rt.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#ifdef TESLA_CAIRO
#include <cairo.h>
#endif
#ifdef TESLA_FONTCONFIG
#include <fontconfig/fontconfig.h>
#endif

enum { EXIT_OK = 0, EXIT_DATA = 1, EXIT_USAGE = 2 };

typedef struct PlotOpts { const char *log, *out; } PlotOpts;

static const CmdOpt plot_opts[] = {
    {"-o", NULL, ARG_STR, "OUT", 0, 0, offsetof(PlotOpts, out), "the figure (default: LOG with .jsonl, .json or .log replaced by .svg);\n"
     "its extension picks the format: .svg, or .png when teslac was built\nwith cairo. Written atomically."},
    {NULL}};

const CmdDef cmd_plot = {
    .name = "plot", .args = "LOG [-o OUT.svg | -o OUT.png]",
    .summary = "loss and accuracy curves per epoch of a 'train --log' LOG (.svg, .png)",
    .about = "Draw the loss and accuracy curves (train, validation, test) per epoch of LOG, the JSON\n"
             "lines that 'teslac train --log LOG' writes. Keys read: epoch, train_loss, val_loss,\n"
             "test_loss, train_accuracy, val_accuracy, test_accuracy (absent or null: no point); other\n"
             "keys are ignored. A series with no value is left out of the plot and its legend.",
    .pos = "LOG", .pos_off = offsetof(PlotOpts, log),
    .pos_hint = "LOG (the JSON lines of 'teslac train --log LOG')",
    .opts = plot_opts,
    .quiet = "no summary line",
    .verbose = "the usual output (nothing more to say)",
    .run = plot_main};

/* ---- the log --------------------------------------------------------------------------------- */

enum { LOSS, ACC, NMET };
enum { TRAIN, VAL, TEST, NSPLIT };
static const char *const metric_key[NMET][NSPLIT] = {
    {"train_loss", "val_loss", "test_loss"}, {"train_accuracy", "val_accuracy", "test_accuracy"}};
static const char *const metric_name[NMET] = {"loss", "accuracy"};
static const char *const split_name[NSPLIT] = {"train", "validation", "test"};
static const char *const split_id[NSPLIT] = {"train", "val", "test"};

typedef struct Point {
  double epoch;
  double v[NMET][NSPLIT];   /* NAN: null or absent */
} Point;

typedef struct Log {
  Point *pt;
  int    n, cap;
} Log;

/* One line being parsed; errors point into it. */
typedef struct Lex {
  const char *path, *line, *end, *p;
  int lineno;
} Lex;

/* "LOG:line:col: error: ..." with the line and a caret under the column, as diag.c shows specs */
static int lex_error(Lex *lx, const char *at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int lex_error(Lex *lx, const char *at, const char *fmt, ...) {
  int col = (int)(at - lx->line) + 1;
  fprintf(stderr, "%s:%d:%d: error: ", lx->path, lx->lineno, col);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  size_t len = (size_t)(lx->end - lx->line);
  if (len <= 240 && col <= 241) {   /* a long line would only wrap: the position says enough */
    fprintf(stderr, "%5d | ", lx->lineno);
    for (const char *c = lx->line; c < lx->end; c++) fputc((unsigned char)*c < 0x20 ? ' ' : *c, stderr);
    fprintf(stderr, "\n      | %*s^\n", col - 1, "");
  }
  return -1;
}

static void skip_ws(Lex *lx) {
  while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\r')) lx->p++;
}

static const char *show_char(const char *p, const char *end, char buf[16]) {
  if (p >= end) return "the end of the line";
  unsigned char c = (unsigned char)*p;
  if (c >= 0x20 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
  else snprintf(buf, 16, "byte 0x%02x", c);
  return buf;
}

/* string: '"' (any byte >= 0x20 but '"' and '\\' | '\\' ["\\/bfnrt] | "\\u" 4 hex)* '"'.
 * Copies up to cap-1 bytes of the raw text into key (keys are plain ASCII). */
static int lex_string(Lex *lx, char *key, size_t cap) {
  const char *start = lx->p++;
  size_t k = 0;
  while (lx->p < lx->end && *lx->p != '"') {
    unsigned char c = (unsigned char)*lx->p;
    if (c < 0x20) return lex_error(lx, lx->p, "a control character inside a string (write it as \\u%04x)", c);
    if (c == '\\') {
      const char *e = ++lx->p;
      if (e >= lx->end) break;
      if (*e == 'u') {
        for (int i = 1; i <= 4; i++)
          if (e + i >= lx->end || !strchr("0123456789abcdefABCDEF", e[i]) || !e[i])
            return lex_error(lx, e - 1, "'\\u' needs four hexadecimal digits");
        lx->p += 4;
      } else if (!strchr("\"\\/bfnrt", *e) || !*e) {
        char b[16];
        return lex_error(lx, e - 1, "unknown escape '\\' then %s in a string", show_char(e, lx->end, b));
      }
    }
    if (key && k + 1 < cap) key[k++] = (char)c;
    lx->p++;
  }
  if (lx->p >= lx->end) return lex_error(lx, start, "the string is not closed on this line");
  lx->p++;
  if (key) key[k] = 0;
  return 0;
}

/* number: '-'? ('0' | [1-9][0-9]*) ('.' [0-9]+)? ([eE] [+-]? [0-9]+)? , finite as a double */
static int lex_number(Lex *lx, double *out) {
  const char *s = lx->p, *p = s, *e = lx->end;
  if (p < e && *p == '-') p++;
  if (p >= e || *p < '0' || *p > '9') return lex_error(lx, s, "a number needs a digit after '-'");
  if (*p == '0') p++;
  else while (p < e && *p >= '0' && *p <= '9') p++;
  if (p < e && *p == '.') {
    if (++p >= e || *p < '0' || *p > '9') return lex_error(lx, p, "a number needs a digit after '.'");
    while (p < e && *p >= '0' && *p <= '9') p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    if (++p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || *p < '0' || *p > '9') return lex_error(lx, p, "a number needs a digit in its exponent");
    while (p < e && *p >= '0' && *p <= '9') p++;
  }
  char buf[64];
  if ((size_t)(p - s) >= sizeof buf) return lex_error(lx, s, "a number of more than 63 characters");
  memcpy(buf, s, (size_t)(p - s));
  buf[p - s] = 0;
  double d = strtod(buf, NULL);
  if (!isfinite(d)) return lex_error(lx, s, "the number %s is out of range", buf);
  *out = d;
  lx->p = p;
  return 0;
}

static bool lex_word(Lex *lx, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(lx->end - lx->p) < n || memcmp(lx->p, w, n)) return false;
  lx->p += n;
  return true;
}

/* One line: blank, or one flat object
 *   '{' (key ':' value (',' key ':' value)*)? '}'
 *   value: number | string | true | false | null
 * epoch (a number) is required; the metric keys are numbers or null; any other key is read
 * and ignored. Returns 1 with *pt filled, 0 for a blank line, -1 after a message. */
static int parse_line(Lex *lx, Point *pt) {
  lx->p = lx->line;
  skip_ws(lx);
  if (lx->p == lx->end) return 0;
  char b[16];
  if (*lx->p != '{')
    return lex_error(lx, lx->p, "expected '{': each line of a log is one JSON object, got %s",
                     show_char(lx->p, lx->end, b));
  lx->p++;
  bool have_epoch = false, seen[NMET][NSPLIT] = {{false}};
  pt->epoch = 0;
  for (int m = 0; m < NMET; m++)
    for (int s = 0; s < NSPLIT; s++) pt->v[m][s] = NAN;
  skip_ws(lx);
  if (lx->p < lx->end && *lx->p == '}') {
    lx->p++;
  } else {
    for (;;) {
      skip_ws(lx);
      if (lx->p >= lx->end || *lx->p != '"')
        return lex_error(lx, lx->p, "expected a key (a string in double quotes), got %s",
                         show_char(lx->p, lx->end, b));
      const char *kat = lx->p;
      char key[40];
      if (lex_string(lx, key, sizeof key) < 0) return -1;
      skip_ws(lx);
      if (lx->p >= lx->end || *lx->p != ':')
        return lex_error(lx, lx->p, "expected ':' after the key \"%s\", got %s", key, show_char(lx->p, lx->end, b));
      lx->p++;
      skip_ws(lx);
      /* which field the key names: -1 epoch, m * NSPLIT + s a metric, -2 none */
      int field = !strcmp(key, "epoch") ? -1 : -2;
      for (int m = 0; m < NMET; m++)
        for (int s = 0; s < NSPLIT; s++)
          if (!strcmp(key, metric_key[m][s])) field = m * NSPLIT + s;
      bool *dup = field == -1 ? &have_epoch : field >= 0 ? &seen[field / NSPLIT][field % NSPLIT] : NULL;
      if (dup && *dup) return lex_error(lx, kat, "the key \"%s\" appears twice", key);
      if (dup) *dup = true;
      const char *vat = lx->p;
      double d = NAN;
      bool number = false, null = false;
      if (lx->p >= lx->end) {
        return lex_error(lx, lx->p, "expected a value after \"%s\":, got the end of the line", key);
      } else if (*lx->p == '"') {
        if (lex_string(lx, NULL, 0) < 0) return -1;
      } else if (*lx->p == '-' || (*lx->p >= '0' && *lx->p <= '9')) {
        if (lex_number(lx, &d) < 0) return -1;
        number = true;
      } else if (lex_word(lx, "null")) {
        null = true;
      } else if (lex_word(lx, "true") || lex_word(lx, "false")) {
      } else if (*lx->p == '{' || *lx->p == '[') {
        return lex_error(lx, lx->p, "a log line holds numbers, strings and null, not %s",
                         *lx->p == '{' ? "objects" : "arrays");
      } else {
        return lex_error(lx, lx->p, "expected a value (a number, a string, true, false or null), got %s",
                         show_char(lx->p, lx->end, b));
      }
      if (field == -1 && !number) return lex_error(lx, vat, "\"epoch\" must be a number");
      if (field >= 0 && !number && !null) return lex_error(lx, vat, "\"%s\" must be a number or null", key);
      if (field == -1) pt->epoch = d;
      if (field >= 0) pt->v[field / NSPLIT][field % NSPLIT] = d;
      skip_ws(lx);
      if (lx->p < lx->end && *lx->p == ',') {
        lx->p++;
        continue;
      }
      if (lx->p < lx->end && *lx->p == '}') {
        lx->p++;
        break;
      }
      if (lx->p >= lx->end) return lex_error(lx, lx->p, "the line ends inside the object (no closing '}')");
      return lex_error(lx, lx->p, "expected ',' or '}' after the value of \"%s\", got %s", key,
                       show_char(lx->p, lx->end, b));
    }
  }
  skip_ws(lx);
  if (lx->p < lx->end) return lex_error(lx, lx->p, "text after the object's closing '}': one object per line");
  if (!have_epoch) return lex_error(lx, lx->line, "this line has no \"epoch\"");
  return 1;
}

/* the whole file in memory: NULL after a message */
static char *read_file(const char *path, size_t *len) {
  struct stat st;
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "teslac: cannot read the log '%s': %s\n", path, strerror(errno));
    return NULL;
  }
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fprintf(stderr, "teslac: cannot read the log '%s': it is a directory\n", path);
    fclose(f);
    return NULL;
  }
  size_t n = 0, cap = 1 << 16;
  char *buf = malloc(cap);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *nb = cap < ((size_t)1 << 32) ? realloc(buf, cap * 2) : NULL;
    if (!nb) free(buf);
    buf = nb, cap *= 2;
  }
  bool err = ferror(f);
  fclose(f);
  if (!buf || err) {
    fprintf(stderr, "teslac: cannot read the log '%s': %s\n", path, buf ? strerror(errno) : "too large or out of memory");
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

/* every line of the log into *lg; -1 after a message (a bad line, no epochs) */
static int log_read(const char *path, Log *lg) {
  memset(lg, 0, sizeof *lg);
  size_t len;
  char *text = read_file(path, &len);
  if (!text) return -1;
  Lex lx = {.path = path, .line = text, .lineno = 1};
  int rc = 0;
  for (const char *end = text + len; lx.line < end; lx.lineno++) {
    const char *nl = memchr(lx.line, '\n', (size_t)(end - lx.line));
    lx.end = nl ? nl : end;
    Point pt;
    int r = parse_line(&lx, &pt);
    if (r < 0) {
      rc = -1;
      break;
    }
    if (r > 0) {
      if (lg->n == lg->cap) {
        int cap = lg->cap ? lg->cap * 2 : 64;
        Point *np = realloc(lg->pt, sizeof *np * (size_t)cap);
        if (!np) {
          fprintf(stderr, "teslac: %s: out of memory\n", path);
          rc = -1;
          break;
        }
        lg->pt = np, lg->cap = cap;
      }
      lg->pt[lg->n++] = pt;
    }
    if (!nl) break;
    lx.line = nl + 1;
  }
  free(text);
  if (rc == 0 && lg->n == 0) {
    fprintf(stderr, "teslac: %s: no epochs in the log (%s)\n", path,
            len ? "only blank lines" : "the file is empty");
    rc = -1;
  }
  if (rc) free(lg->pt), lg->pt = NULL;
  return rc;
}

/* ---- the output bytes ------------------------------------------------------------------------ */

typedef struct Buf {
  char  *p;
  size_t n, cap;
  bool   oom;
} Buf;

static void buf_add(Buf *b, const void *s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1 << 14;
    while (cap < b->n + n + 1) cap *= 2;
    char *np = realloc(b->p, cap);
    if (!np) {
      b->oom = true;
      return;
    }
    b->p = np, b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
}

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(Buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) b->oom = true;
  else buf_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- the canvas: what the figure is drawn with ------------------------------------------------ */

enum { DASH_SOLID, DASH_DASHED, DASH_DOTTED };
enum { ANCHOR_START = -1, ANCHOR_MIDDLE = 0, ANCHOR_END = 1 };
#define NO_FILL 0xff000000u

typedef struct Canvas Canvas;
struct Canvas {
  void (*group)(Canvas *, const char *id);   /* a named group (SVG <g id>); NULL ends it */
  void (*line)(Canvas *, const double *xy, int n, unsigned rgb, double width, int dash);
  void (*rect)(Canvas *, double x, double y, double w, double h, unsigned stroke, unsigned fill);
  void (*dot)(Canvas *, double x, double y, double r, unsigned rgb);
  /* y is the baseline; vertical: rotated a quarter turn counter-clockwise about (x, y) */
  void (*text)(Canvas *, double x, double y, const char *s, double size, int anchor, bool bold,
               bool vertical);
  Buf  *out;
  void *cr;   /* cairo_t * */
};

/* ---- the figure: one layout for both backends ------------------------------------------------ */

enum { FIG_W = 960, FIG_H = 420 };
static const unsigned split_rgb[NSPLIT] = {0x1f77b4, 0xff7f0e, 0x2ca02c};
static const int split_dash[NSPLIT] = {DASH_SOLID, DASH_DASHED, DASH_DOTTED};

typedef struct Axis {
  double lo, hi, step;
  int    nticks, digits;
} Axis;

/* Ticks at a step of 1, 2 or 5 times a power of ten (at least min_step) giving about five
 * intervals; the axis runs from the tick at or below lo to the one at or above hi. unit: the
 * values are fractions (accuracy), so an axis over data in [0, 1] stays in [0, 1]. */
static void axis_fit(double lo, double hi, double min_step, bool unit, Axis *a) {
  if (!(lo <= hi)) lo = 0, hi = 1;   /* no data */
  unit = unit && lo >= 0 && hi <= 1;
  if (hi == lo) {
    double pad = fmax(min_step, lo != 0 ? fabs(lo) * 0.1 : 0.5);
    lo -= pad, hi += pad;
    if (unit) lo = fmax(lo, 0), hi = fmin(hi, 1);
  }
  double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
  double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
  if (step < min_step) step = min_step;
  a->step = step;
  a->lo = floor(lo / step + 1e-9) * step;
  a->hi = ceil(hi / step - 1e-9) * step;
  if (unit) a->lo = fmax(a->lo, 0), a->hi = fmin(a->hi, 1);   /* 1 is a multiple of every step < 1 */
  a->nticks = (int)lround((a->hi - a->lo) / step) + 1;
  int d = (int)-floor(log10(step) + 1e-9);
  a->digits = d < 0 ? 0 : d > 9 ? 9 : d;
}

static void tick_label(const Axis *a, double v, char buf[32]) {
  if (fabs(v) < a->step * 1e-6) v = 0;   /* no "-0.00" */
  if (fabs(v) >= 1e9) snprintf(buf, 32, "%.3g", v);
  else snprintf(buf, 32, "%.*f", a->digits, v);
}

/* the plot area's frame lies PAD pixels outside the axes' ends, so that a point at an end (a
 * curve's first epoch, its lowest loss) is drawn whole */
enum { PAD = 8 };

typedef struct Panel {
  double x0, y0, x1, y1;   /* where the axes' ends fall */
  Axis   ax, ay;
} Panel;

static double px(const Panel *p, double v) { return p->x0 + (v - p->ax.lo) / (p->ax.hi - p->ax.lo) * (p->x1 - p->x0); }
static double py(const Panel *p, double v) { return p->y1 - (v - p->ay.lo) / (p->ay.hi - p->ay.lo) * (p->y1 - p->y0); }

static int series_count(const Log *lg, int m, int s) {
  int k = 0;
  for (int i = 0; i < lg->n; i++) k += !isnan(lg->pt[i].v[m][s]);
  return k;
}

/* One panel: frame, grid, ticks, labels, then every series that has a value: a line through
 * its points in the log's order (over nulls) and a marker at each (a single epoch shows). */
static int draw_panel(Canvas *c, const Log *lg, int m, double left, double width, double *xy) {
  Panel p = {left + 64 + PAD, 84 + PAD, left + width - 18 - PAD, FIG_H - 52 - PAD, {0}, {0}};
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  int nseries = 0;
  for (int i = 0; i < lg->n; i++) {
    xlo = fmin(xlo, lg->pt[i].epoch), xhi = fmax(xhi, lg->pt[i].epoch);
    for (int s = 0; s < NSPLIT; s++) {
      double v = lg->pt[i].v[m][s];
      if (!isnan(v)) ylo = fmin(ylo, v), yhi = fmax(yhi, v);
    }
  }
  axis_fit(xlo, xhi, 1, false, &p.ax);
  axis_fit(ylo, yhi, 0, m == ACC, &p.ay);
  c->text(c, (p.x0 + p.x1) / 2, p.y0 - PAD - 10, metric_name[m], 14, ANCHOR_MIDDLE, true, false);
  char lab[32], id[40];
  snprintf(id, sizeof id, "%s-grid", metric_name[m]);   /* ids are unique in a document */
  c->group(c, id);
  for (int t = 0; t < p.ax.nticks; t++) {
    double v = p.ax.lo + t * p.ax.step, x = px(&p, v);
    double seg[4] = {x, p.y0 - PAD, x, p.y1 + PAD};
    c->line(c, seg, 2, 0xe4e4e4, 1, DASH_SOLID);
    tick_label(&p.ax, v, lab);
    c->text(c, x, p.y1 + PAD + 17, lab, 11, ANCHOR_MIDDLE, false, false);
  }
  for (int t = 0; t < p.ay.nticks; t++) {
    double v = p.ay.lo + t * p.ay.step, y = py(&p, v);
    double seg[4] = {p.x0 - PAD, y, p.x1 + PAD, y};
    c->line(c, seg, 2, 0xe4e4e4, 1, DASH_SOLID);
    tick_label(&p.ay, v, lab);
    c->text(c, p.x0 - PAD - 6, y + 4, lab, 11, ANCHOR_END, false, false);
  }
  c->group(c, NULL);
  c->rect(c, p.x0 - PAD, p.y0 - PAD, p.x1 - p.x0 + 2 * PAD, p.y1 - p.y0 + 2 * PAD, 0x555555, NO_FILL);
  c->text(c, (p.x0 + p.x1) / 2, p.y1 + PAD + 38, "epoch", 12, ANCHOR_MIDDLE, false, false);
  c->text(c, left + 16, (p.y0 + p.y1) / 2, metric_name[m], 12, ANCHOR_MIDDLE, false, true);
  for (int s = 0; s < NSPLIT; s++) {
    int k = 0;
    for (int i = 0; i < lg->n; i++) {
      double v = lg->pt[i].v[m][s];
      if (!isnan(v)) xy[2 * k] = px(&p, lg->pt[i].epoch), xy[2 * k + 1] = py(&p, v), k++;
    }
    if (!k) continue;
    snprintf(id, sizeof id, "%s-%s", metric_name[m], split_id[s]);
    c->group(c, id);
    if (k > 1) c->line(c, xy, k, split_rgb[s], 2, split_dash[s]);
    for (int i = 0; i < k; i++) c->dot(c, xy[2 * i], xy[2 * i + 1], 3, split_rgb[s]);
    c->group(c, NULL);
    nseries++;
  }
  if (!nseries)
    c->text(c, (p.x0 + p.x1) / 2, (p.y0 + p.y1) / 2, m == LOSS ? "no loss in the log" : "no accuracy in the log",
            13, ANCHOR_MIDDLE, false, false);
  return 0;
}

/* The figure: the title (the log's name), one legend for the splits that have any value, the
 * loss panel on the left and the accuracy panel on the right. */
static int draw_figure(Canvas *c, const Log *lg, const char *title) {
  double *xy = malloc(sizeof *xy * 2 * (size_t)lg->n);
  if (!xy) return -1;
  c->rect(c, 0, 0, FIG_W, FIG_H, NO_FILL, 0xffffff);
  c->text(c, FIG_W / 2.0, 26, title, 16, ANCHOR_MIDDLE, true, false);
  bool present[NSPLIT];
  for (int s = 0; s < NSPLIT; s++) present[s] = series_count(lg, LOSS, s) + series_count(lg, ACC, s) > 0;
  c->group(c, "legend");
  /* entries: a line sample, the name (about 7 px a letter at 12 px), a gap */
  double width = 0, y = 50;
  for (int s = 0; s < NSPLIT; s++)
    if (present[s]) width += 46 + 7.0 * (double)strlen(split_name[s]) + 28;
  double x = (FIG_W - width) / 2;
  for (int s = 0; s < NSPLIT; s++) {
    if (!present[s]) continue;
    double seg[4] = {x + 10, y - 4, x + 40, y - 4};
    c->line(c, seg, 2, split_rgb[s], 2, split_dash[s]);
    c->dot(c, x + 25, y - 4, 3, split_rgb[s]);
    c->text(c, x + 46, y, split_name[s], 12, ANCHOR_START, false, false);
    x += 46 + 7.0 * (double)strlen(split_name[s]) + 28;
  }
  c->group(c, NULL);
  for (int m = 0; m < NMET; m++) draw_panel(c, lg, m, m * FIG_W / 2.0, FIG_W / 2.0, xy);
  free(xy);
  return 0;
}

/* ---- the SVG backend: elements as text into c->out -------------------------------------------- */

static void svg_rgb(Buf *b, const char *attr, unsigned rgb) {
  if (rgb == NO_FILL) buf_printf(b, " %s=\"none\"", attr);
  else buf_printf(b, " %s=\"#%06x\"", attr, rgb);
}

/* text content, XML-escaped (the text is UTF-8: log_title makes it so) */
static void svg_escape(Buf *b, const char *s) {
  for (; *s; s++) {
    const char *rep = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" : *s == '>' ? "&gt;" : *s == '"' ? "&quot;" : NULL;
    if (rep) buf_add(b, rep, strlen(rep));
    else buf_add(b, s, 1);
  }
}

static void svg_group(Canvas *c, const char *id) {
  if (!id) buf_printf(c->out, "</g>\n");
  else buf_printf(c->out, "<g id=\"%s\">\n", id);
}

static void svg_line(Canvas *c, const double *xy, int n, unsigned rgb, double width, int dash) {
  buf_printf(c->out, "<polyline fill=\"none\"");
  svg_rgb(c->out, "stroke", rgb);
  buf_printf(c->out, " stroke-width=\"%g\" stroke-linejoin=\"round\"%s points=\"", width,
             dash == DASH_DASHED ? " stroke-dasharray=\"7 4\"" : dash == DASH_DOTTED ? " stroke-dasharray=\"2 3\"" : "");
  for (int i = 0; i < n; i++) buf_printf(c->out, "%s%.2f,%.2f", i ? " " : "", xy[2 * i], xy[2 * i + 1]);
  buf_printf(c->out, "\"/>\n");
}

static void svg_rect(Canvas *c, double x, double y, double w, double h, unsigned stroke, unsigned fill) {
  buf_printf(c->out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\"", x, y, w, h);
  svg_rgb(c->out, "fill", fill);
  svg_rgb(c->out, "stroke", stroke);
  buf_printf(c->out, "/>\n");
}

static void svg_dot(Canvas *c, double x, double y, double r, unsigned rgb) {
  buf_printf(c->out, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%g\"", x, y, r);
  svg_rgb(c->out, "fill", rgb);
  buf_printf(c->out, "/>\n");
}

static void svg_text(Canvas *c, double x, double y, const char *s, double size, int anchor, bool bold,
                     bool vertical) {
  buf_printf(c->out, "<text x=\"%.2f\" y=\"%.2f\" font-size=\"%g\" text-anchor=\"%s\"%s", x, y, size,
             anchor < 0 ? "start" : anchor > 0 ? "end" : "middle", bold ? " font-weight=\"bold\"" : "");
  if (vertical) buf_printf(c->out, " transform=\"rotate(-90 %.2f %.2f)\"", x, y);
  buf_printf(c->out, ">");
  svg_escape(c->out, s);
  buf_printf(c->out, "</text>\n");
}

static int render_svg(const Log *lg, const char *title, Buf *out) {
  Canvas c = {svg_group, svg_line, svg_rect, svg_dot, svg_text, out, NULL};
  buf_printf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                  "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" fill=\"#222222\">\n",
             FIG_W, FIG_H, FIG_W, FIG_H);
  buf_printf(out, "<title>");
  svg_escape(out, title);
  buf_printf(out, "</title>\n");
  if (draw_figure(&c, lg, title) < 0) out->oom = true;
  buf_printf(out, "</svg>\n");
  return out->oom ? -1 : 0;
}

/* ---- the cairo backend: PNG ------------------------------------------------------------------- */

#ifdef TESLA_CAIRO
static void cr_rgb(cairo_t *cr, unsigned rgb) {
  cairo_set_source_rgb(cr, (rgb >> 16 & 255) / 255.0, (rgb >> 8 & 255) / 255.0, (rgb & 255) / 255.0);
}

static void cr_group(Canvas *c, const char *id) {}

static void cr_line(Canvas *c, const double *xy, int n, unsigned rgb, double width, int dash) {
  cairo_t *cr = c->cr;
  static const double dashed[] = {7, 4}, dotted[] = {2, 3};
  cairo_set_dash(cr, dash == DASH_DASHED ? dashed : dotted, dash == DASH_SOLID ? 0 : 2, 0);
  cairo_set_line_width(cr, width);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  cairo_move_to(cr, xy[0], xy[1]);
  for (int i = 1; i < n; i++) cairo_line_to(cr, xy[2 * i], xy[2 * i + 1]);
  cr_rgb(cr, rgb);
  cairo_stroke(cr);
  cairo_set_dash(cr, NULL, 0, 0);
}

static void cr_rect(Canvas *c, double x, double y, double w, double h, unsigned stroke, unsigned fill) {
  cairo_t *cr = c->cr;
  cairo_rectangle(cr, x, y, w, h);
  if (fill != NO_FILL) cr_rgb(cr, fill), cairo_fill_preserve(cr);
  if (stroke != NO_FILL) cr_rgb(cr, stroke), cairo_set_line_width(cr, 1), cairo_stroke_preserve(cr);
  cairo_new_path(cr);
}

static void cr_dot(Canvas *c, double x, double y, double r, unsigned rgb) {
  cairo_t *cr = c->cr;
  cairo_new_sub_path(cr);
  cairo_arc(cr, x, y, r, 0, 2 * M_PI);
  cr_rgb(cr, rgb);
  cairo_fill(cr);
}

static void cr_text(Canvas *c, double x, double y, const char *s, double size, int anchor, bool bold,
                    bool vertical) {
  cairo_t *cr = c->cr;
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, size);
  cairo_text_extents_t ext;
  cairo_text_extents(cr, s, &ext);
  cairo_save(cr);
  cairo_translate(cr, x, y);
  if (vertical) cairo_rotate(cr, -M_PI / 2);
  cairo_move_to(cr, -ext.x_advance * (anchor + 1) / 2, 0);
  cr_rgb(cr, 0x222222);
  cairo_show_text(cr, s);
  cairo_restore(cr);
}

static cairo_status_t cr_write(void *closure, const unsigned char *data, unsigned int n) {
  Buf *b = closure;
  buf_add(b, data, n);
  return b->oom ? CAIRO_STATUS_NO_MEMORY : CAIRO_STATUS_SUCCESS;
}

static int render_png(const Log *lg, const char *title, Buf *out) {
  cairo_surface_t *sf = cairo_image_surface_create(CAIRO_FORMAT_RGB24, FIG_W, FIG_H);
  cairo_t *cr = cairo_create(sf);
  Canvas c = {cr_group, cr_line, cr_rect, cr_dot, cr_text, out, cr};
  int rc = cairo_status(cr) == CAIRO_STATUS_SUCCESS ? draw_figure(&c, lg, title) : -1;
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  cairo_surface_flush(sf);
  if (rc == 0 && st == CAIRO_STATUS_SUCCESS) st = cairo_surface_write_to_png_stream(sf, cr_write, out);
  cairo_surface_destroy(sf);
  /* no cairo object is left: let go of its font caches and fontconfig's (cairo finds its fonts
   * through fontconfig), so that a leak checker sees nothing left */
  cairo_debug_reset_static_data();
#ifdef TESLA_FONTCONFIG
  FcFini();
#endif
  if (st != CAIRO_STATUS_SUCCESS) {
    fprintf(stderr, "teslac: drawing the PNG failed: %s\n", cairo_status_to_string(st));
    return -1;
  }
  return rc < 0 ? (fprintf(stderr, "teslac: out of memory\n"), -1) : 0;
}
#endif

/* ---- the command ----------------------------------------------------------------------------- */

static bool has_ext(const char *s, const char *ext) {
  size_t n = strlen(s), e = strlen(ext);
  return n > e && !strcasecmp(s + n - e, ext);
}

/* LOG with .jsonl, .json or .log replaced by .svg, or .svg appended */
static char *default_out(const char *log) {
  size_t n = strlen(log);
  const char *base = strrchr(log, '/') ? strrchr(log, '/') + 1 : log;
  for (const char *ext = ".jsonl\0.json\0.log\0"; *ext; ext += strlen(ext) + 1)
    if (has_ext(base, ext)) {
      n -= strlen(ext);
      break;
    }
  char *s = malloc(n + 5);
  if (s) memcpy(s, log, n), memcpy(s + n, ".svg", 5);
  return s;
}

/* the title: the log's file name without its folder and extension, as UTF-8 (XML and cairo
 * need it): a control byte, or one that is not part of a UTF-8 sequence (a file name may have
 * them), becomes '?' */
static void log_title(const char *log, char *buf, size_t cap) {
  const char *base = strrchr(log, '/') ? strrchr(log, '/') + 1 : log;
  snprintf(buf, cap, "%s", *base ? base : log);
  char *dot = strrchr(buf, '.');
  if (dot && dot != buf) *dot = 0;
  for (unsigned char *p = (unsigned char *)buf; *p;) {
    int len = *p < 0x80 ? 1 : *p >= 0xc2 && *p < 0xe0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : *p >= 0xf0 && *p < 0xf5 ? 4 : 0;
    for (int i = 1; i < len; i++)
      if ((p[i] & 0xc0) != 0x80) len = 0;   /* also stops at the NUL */
    if (len == 0 || *p < 0x20) *p = '?', len = 1;
    p += len;
  }
}

int plot_main(int argc, char **argv) {
  PlotOpts po = {0};
  int prc = cmd_parse(&cmd_plot, argc, argv, &po);
  if (prc) return prc < 0 ? EXIT_OK : prc;
  const char *log = po.log, *out = po.out;
  char *def = out ? NULL : default_out(log);
  if (!out && !def) return fprintf(stderr, "teslac: out of memory\n"), EXIT_DATA;
  const char *path = out ? out : def;
  bool png = has_ext(path, ".png");
  if (!png && !has_ext(path, ".svg")) {
    free(def);
    return cmd_usage("plot", "the output must end in .svg or .png, got '%s'", path);
  }
#ifndef TESLA_CAIRO
  if (png) {
    fprintf(stderr, "teslac: %s: PNG needs teslac built with cairo (libcairo2-dev, meson -Dcairo=enabled); "
                    "write .svg instead\n", path);
    free(def);
    return EXIT_DATA;
  }
#endif
  Log lg;
  if (log_read(log, &lg) < 0) {
    free(def);
    return EXIT_DATA;
  }
  char title[256];
  log_title(log, title, sizeof title);
  Buf b = {0};
  int rc = EXIT_OK;
#ifdef TESLA_CAIRO
  int r = png ? render_png(&lg, title, &b) : render_svg(&lg, title, &b);
#else
  int r = render_svg(&lg, title, &b);
#endif
  TsErr e;
  TsOut o;
  if (r < 0 || b.oom) {
    if (!png) fprintf(stderr, "teslac: %s: out of memory\n", path);
    rc = EXIT_DATA;
  } else if (ts_out_open(&o, path, &e) < 0 || ts_out_write(&o, b.p, b.n, &e) < 0 || ts_out_finish(&o, &e) < 0 ||
             ts_out_commit(&o, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    rc = EXIT_DATA;
  } else if (cmd_verbosity >= 0) {
    printf("wrote %s: loss and accuracy over %d epoch%s of %s\n", path, lg.n, lg.n == 1 ? "" : "s", log);
  }
  free(b.p);
  free(lg.pt);
  free(def);
  return rc;
}
