/* diag.c: where every compilation starts and how every problem is told. A Ctx holds the spec's
 * text, an arena that all passes allocate from (freed at once), and the diagnostics count.
 * diag_at() prints `file:line:col: error: message`, then the source line and a caret under the
 * column (with ~ under the rest of the token), the way C compilers do; passes call it and keep
 * going so that one run reports every problem. diag_suggest() gives the "did you mean". */
#include "teslac.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- arena ---------------------------------------------------------------------------- */

typedef struct Chunk { struct Chunk *next; size_t used, cap; _Alignas(16) char data[]; } Chunk;
struct Arena { Chunk *head; };

void *arena_alloc(Ctx *cx, size_t n) {
  n = (n + 15) & ~(size_t)15;
  Chunk *c = cx->arena->head;
  if (!c || c->used + n > c->cap) {
    size_t cap = n > 65536 ? n : 65536;
    c = malloc(sizeof(Chunk) + cap);
    if (!c) {
      fprintf(stderr, "teslac: out of memory\n");
      abort();
    }
    c->next = cx->arena->head, c->used = 0, c->cap = cap;
    cx->arena->head = c;
  }
  void *p = c->data + c->used;
  c->used += n;
  memset(p, 0, n);
  return p;
}

char *arena_strndup(Ctx *cx, const char *s, size_t n) {
  char *p = arena_alloc(cx, n + 1);
  memcpy(p, s, n);
  return p;
}

char *arena_printf(Ctx *cx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *p = arena_alloc(cx, (size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}

/* ---- context -------------------------------------------------------------------------- */

void ctx_init(Ctx *cx, const char *path, FILE *err) {
  memset(cx, 0, sizeof *cx);
  cx->path = path;
  cx->err = err ? err : stderr;
  cx->color = cx->err == stderr && isatty(2) && !getenv("NO_COLOR");
  cx->arena = calloc(1, sizeof(Arena));
  if (!cx->arena) abort();
}

void ctx_set_source(Ctx *cx, const char *text, size_t len) {
  cx->src = arena_strndup(cx, text, len);
  cx->srclen = len;
}

/* A spec is a small text file: refuse directories, huge files and unreadable ones plainly. */
int ctx_read_file(Ctx *cx) {
  SrcLoc none = {0};
  /* O_NONBLOCK: a FIFO must not block open(); it is refused below with any non-regular file */
  int fd = open(cx->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    diag_at(cx, none, "cannot read the spec: %s", strerror(errno));
    return -1;
  }
  struct stat st = {0};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    diag_at(cx, none, "cannot read the spec: it is %s", S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                      : S_ISCHR(st.st_mode) ? "a character device" : "not a regular file");
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  FILE *f = fl >= 0 && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    diag_at(cx, none, "cannot read the spec: %s", strerror(errno));
    close(fd);
    return -1;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (n == cap) {
      if (cap >= (size_t)16 << 20) {
        free(buf), fclose(f);
        diag_at(cx, none, "the spec is larger than 16 MiB; is this the right file?");
        return -1;
      }
      cap *= 2;
      buf = realloc(buf, cap);
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    diag_at(cx, none, "cannot read the spec: read error");
    return -1;
  }
  ctx_set_source(cx, buf, n);
  free(buf);
  return 0;
}

void ctx_free(Ctx *cx) {
  if (!cx->arena) return;
  for (Chunk *c = cx->arena->head, *next; c; c = next) next = c->next, free(c);
  free(cx->arena);
  cx->arena = NULL;
}

/* ---- diagnostics ---------------------------------------------------------------------- */

/* The text of line `line` (1-based) and its length; NULL if out of range. */
static const char *source_line(Ctx *cx, int line, int *len) {
  if (!cx->src || line < 1) return NULL;
  const char *p = cx->src, *end = cx->src + cx->srclen;
  for (int l = 1; l < line; l++) {
    p = memchr(p, '\n', (size_t)(end - p));
    if (!p) return NULL;
    p++;
  }
  const char *e = memchr(p, '\n', (size_t)(end - p));
  if (!e) e = end;
  if (e > p && e[-1] == '\r') e--;
  *len = (int)(e - p);
  return p;
}

static void vreport(Ctx *cx, SrcLoc loc, const char *kind, const char *color, const char *fmt,
                    va_list ap) {
  FILE *o = cx->err;
  const char *bold = cx->color ? "\033[1m" : "", *reset = cx->color ? "\033[0m" : "";
  if (!cx->color) color = "";
  if (loc.line > 0)
    fprintf(o, "%s%s:%d:%d:%s ", bold, cx->path, loc.line, loc.col, reset);
  else
    fprintf(o, "%s%s:%s ", bold, cx->path, reset);
  fprintf(o, "%s%s:%s ", color, kind, reset);
  vfprintf(o, fmt, ap);
  fputc('\n', o);

  int len;
  const char *text = loc.line > 0 ? source_line(cx, loc.line, &len) : NULL;
  if (!text) return;
  /* the line, with tabs and control bytes shown as spaces so the caret lines up, and bytes
   * that are not UTF-8 as '?' so the terminal gets text; a long line shows a window of
   * SHOW_COLS characters around the caret, "..." marking what is cut (a one-line spec of
   * megabytes gets a screen line per error, not the whole line) */
  enum { SHOW_COLS = 160, LEAD = 60 };
  int nchars = 0;
  for (int i = 0; i < len; i++) nchars += ((unsigned char)text[i] & 0xc0) != 0x80;
  int caret = loc.col - 1 < 0 ? 0 : loc.col - 1;   /* characters before the caret */
  int ws = 0, we = nchars;
  if (nchars > SHOW_COLS + 40) {
    ws = caret > LEAD ? caret - LEAD : 0;
    if (ws > nchars - SHOW_COLS) ws = nchars - SHOW_COLS;
    we = ws + SHOW_COLS;
  }
  char buf[4 * SHOW_COLS + 256];
  size_t n = 0;
  n += (size_t)snprintf(buf, sizeof buf, "%5d | %s", loc.line, ws > 0 ? "..." : "");
  int c = 0;   /* the character at byte i */
  for (int i = 0; i < len && c < we; c++) {
    unsigned char ch = (unsigned char)text[i];
    int w = ch < 0x80 ? 1 : ch >= 0xc2 && ch <= 0xdf ? 2 : ch >= 0xe0 && ch <= 0xef ? 3 : ch >= 0xf0 && ch <= 0xf4 ? 4 : 0;
    int k = 1;
    while (w > 1 && k < w && i + k < len && ((unsigned char)text[i + k] & 0xc0) == 0x80) k++;
    bool ok = w > 0 && k == w;
    if (c >= ws) {
      if (ch < 0x80) buf[n++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
      else if (ok) memcpy(buf + n, text + i, (size_t)w), n += (size_t)w;
      else buf[n++] = '?';
    }
    i += ok ? w : 1;
    while (!ok && i < len && ((unsigned char)text[i] & 0xc0) == 0x80) i++;   /* a stray continuation */
  }
  if (we < nchars) memcpy(buf + n, "...", 3), n += 3;
  buf[n] = 0;
  fputs(buf, o);
  fputs("\n      | ", o);
  /* libyaml counts columns in characters: the pad is the characters before the caret */
  int pad = (ws > 0 ? 3 : 0) + (caret < ws ? 0 : caret > we ? we - ws : caret - ws);
  n = 0;
  for (int i = 0; i < pad && n < sizeof buf - 1; i++) buf[n++] = ' ';
  buf[n] = 0;
  fputs(buf, o);
  fprintf(o, "%s^", color);
  n = 0;
  for (int i = 1; i < loc.len && caret + i < we && caret + i < nchars && n < sizeof buf - 1; i++) buf[n++] = '~';
  buf[n] = 0;
  fprintf(o, "%s%s\n", buf, reset);
}

/* Past this many errors the rest are counted but not shown: a file that is wrong everywhere
 * (or not a spec at all) gets a screenful, not one line per byte, and printing each source line
 * stays cheap. */
#define MAX_SHOWN_ERRORS 100

void diag_at(Ctx *cx, SrcLoc loc, const char *fmt, ...) {
  cx->nerrors++;
  if (cx->nerrors > MAX_SHOWN_ERRORS) {
    if (cx->nerrors == MAX_SHOWN_ERRORS + 1)
      fprintf(cx->err, "%s: too many errors; the first %d are shown above\n", cx->path,
              MAX_SHOWN_ERRORS);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vreport(cx, loc, "error", "\033[1;31m", fmt, ap);
  va_end(ap);
}

void warn_at(Ctx *cx, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cx, loc, "warning", "\033[1;35m", fmt, ap);
  va_end(ap);
  cx->nwarnings++;
}

void note_at(Ctx *cx, SrcLoc loc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cx, loc, "note", "\033[1;36m", fmt, ap);
  va_end(ap);
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* Damerau-Levenshtein (adjacent swaps count 1) on short ASCII keys, ignoring case: "Dense",
 * "ReLU" and "SGD" are teslac's dense, relu and sgd as Keras and PyTorch spell them. */
static int edit_distance(const char *a, const char *b) {
  int n = (int)strlen(a), m = (int)strlen(b);
  if (n > 40 || m > 40) return 99;
  int d[41][41];
  for (int i = 0; i <= n; i++) d[i][0] = i;
  for (int j = 0; j <= m; j++) d[0][j] = j;
  for (int i = 1; i <= n; i++)
    for (int j = 1; j <= m; j++) {
      int c = lower(a[i - 1]) != lower(b[j - 1]);
      int v = d[i - 1][j - 1] + c;
      if (d[i - 1][j] + 1 < v) v = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1]) &&
          d[i - 2][j - 2] + 1 < v)
        v = d[i - 2][j - 2] + 1;
      d[i][j] = v;
    }
  return d[n][m];
}

const char *diag_suggest(const char *s, const char *const *cands) {
  const char *best = NULL;
  int bestd = 99, n = (int)strlen(s);
  for (int i = 0; cands[i]; i++) {
    int dist = edit_distance(s, cands[i]);
    /* a prefix of 4 or more letters also counts, as one edit ("kaiming" ~ "kaiming_uniform",
     * "batch" ~ "batchnorm"); the first such candidate wins */
    int m = (int)strlen(cands[i]);
    if (dist > 1 && (n < m ? n : m) >= 4 && !strncasecmp(s, cands[i], (size_t)(n < m ? n : m))) dist = 1;
    if (dist < bestd) bestd = dist, best = cands[i];
  }
  int limit = n <= 3 ? 1 : n <= 6 ? 2 : 3;
  return bestd <= limit ? best : NULL;
}

bool size_mul(int64_t a, int64_t b, int64_t *out) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > TS_MAX_ELEMS) return false;
  *out = r;
  return true;
}
