/* rt_safetensors.c: checkpoints in the safetensors format (the Hugging Face one, which
 * PyTorch's state_dict exporters write), read and written by the teslac driver for
 * `train -o`, `--init`, `--resume`, `eval`, `build` and `compress`. A file is a u64
 * little-endian header length N, N bytes of JSON naming each tensor's dtype, shape and
 * [begin, end) byte range in the data buffer that follows, plus an optional "__metadata__"
 * map of strings. The reader loads the whole file, parses the header with a small strict JSON
 * parser written for exactly this schema (objects, strings with every escape, integer arrays;
 * anything else is rejected with the byte offset), decodes strings in place inside the header
 * bytes (a decoded string is never longer than its quoted source, so names need no
 * allocation), and checks what the reference implementation checks: dtypes, shape product x
 * dtype size == end - begin, offsets in bounds, sorted without gaps or overlap and covering
 * the buffer exactly. The writer builds the header the way the reference does (padded with
 * spaces to a multiple of 8 so the data is aligned) and writes atomically: a temporary file
 * in the target's folder, fsync, rename over the target, fsync of the folder; on failure the
 * temporary is removed and the target is left as it was. */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ULL   /* the reference implementation's limit */
#define ST_MAX_DIMS 8

static const struct { const char *name; size_t size; } dtypes[TS_DTYPE_COUNT] = {
  [TS_F32] = {"F32", 4}, [TS_F64] = {"F64", 8}, [TS_F16] = {"F16", 2}, [TS_BF16] = {"BF16", 2},
  [TS_I64] = {"I64", 8}, [TS_I32] = {"I32", 4}, [TS_I16] = {"I16", 2}, [TS_I8] = {"I8", 1},
  [TS_U8] = {"U8", 1},   [TS_BOOL] = {"BOOL", 1},
};
_Static_assert(TS_DTYPE_COUNT == 10, "dtype table out of date");

/* ---- the header's JSON ---------------------------------------------------------------- */

typedef struct Json {
  const char *path;
  char *s;          // header bytes (decoded in place)
  size_t pos, end;
  TsErr *e;
} Json;

static int jfail(Json *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jfail(Json *j, const char *fmt, ...) {
  char what[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return ts_fail(j->e, "%s: bad header JSON at byte %zu: %s", j->path, (size_t)8 + j->pos,
                 what);
}

static void jws(Json *j) {
  while (j->pos < j->end) {
    char c = j->s[j->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    j->pos++;
  }
}

static int jpeek(Json *j) { return j->pos < j->end ? (unsigned char)j->s[j->pos] : -1; }

static int jexpect(Json *j, char c, const char *where) {
  jws(j);
  if (jpeek(j) != (unsigned char)c) {
    int got = jpeek(j);
    if (got < 0) return jfail(j, "expected '%c' %s, got the end of the header", c, where);
    return jfail(j, "expected '%c' %s, got '%c'", c, where, got >= 32 && got < 127 ? got : '?');
  }
  j->pos++;
  return 0;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(Json *j, size_t at, uint32_t *out) {
  if (at + 4 > j->end) return -1;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval((unsigned char)j->s[at + i]);
    if (h < 0) return -1;
    v = v << 4 | (uint32_t)h;
  }
  *out = v;
  return 0;
}

static char *put_utf8(char *w, uint32_t cp) {
  if (cp < 0x80) {
    *w++ = (char)cp;
  } else if (cp < 0x800) {
    *w++ = (char)(0xC0 | cp >> 6);
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *w++ = (char)(0xE0 | cp >> 12);
    *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *w++ = (char)(0xF0 | cp >> 18);
    *w++ = (char)(0x80 | (cp >> 12 & 0x3F));
    *w++ = (char)(0x80 | (cp >> 6 & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  }
  return w;
}

/* Length of the valid UTF-8 sequence at s[0..n), 0 if invalid (overlong, surrogate, too
 * large, bad continuation). */
static size_t utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len;
  uint32_t cp, min;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
  else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
  else return 0;
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

/* string := '"' (char | escape)* '"'; decoded in place, NUL-terminated, returned in *out.
 * The decoded bytes start at the opening quote, so the write position never passes the
 * read position. */
static int jstring(Json *j, char **out, const char *what) {
  jws(j);
  if (jpeek(j) != '"') return jfail(j, "expected a string (%s)", what);
  char *w = j->s + j->pos, *start = w;
  size_t r = j->pos + 1;
  for (;;) {
    if (r >= j->end) return jfail(j, "unterminated string (%s)", what);
    unsigned char c = (unsigned char)j->s[r];
    if (c == '"') break;
    if (c < 0x20) {
      j->pos = r;
      return jfail(j, "control character 0x%02x in a string (%s)", c, what);
    }
    if (c != '\\') {
      size_t len = utf8_len((const unsigned char *)j->s + r, j->end - r);
      if (!len) {
        j->pos = r;
        return jfail(j, "invalid UTF-8 in a string (%s)", what);
      }
      memmove(w, j->s + r, len);
      w += len, r += len;
      continue;
    }
    if (r + 1 >= j->end) return jfail(j, "unterminated string (%s)", what);
    char esc = j->s[r + 1];
    r += 2;
    switch (esc) {
    case '"': *w++ = '"'; break;
    case '\\': *w++ = '\\'; break;
    case '/': *w++ = '/'; break;
    case 'b': *w++ = '\b'; break;
    case 'f': *w++ = '\f'; break;
    case 'n': *w++ = '\n'; break;
    case 'r': *w++ = '\r'; break;
    case 't': *w++ = '\t'; break;
    case 'u': {
      uint32_t cp, lo;
      j->pos = r - 2;
      if (read_hex4(j, r, &cp)) return jfail(j, "bad \\u escape (%s)", what);
      r += 4;
      if (cp >= 0xDC00 && cp <= 0xDFFF) return jfail(j, "lone low surrogate (%s)", what);
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (r + 2 > j->end || j->s[r] != '\\' || j->s[r + 1] != 'u' || read_hex4(j, r + 2, &lo) ||
            lo < 0xDC00 || lo > 0xDFFF)
          return jfail(j, "high surrogate without a low one (%s)", what);
        r += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      if (cp == 0) return jfail(j, "\\u0000 is not allowed in names (%s)", what);
      w = put_utf8(w, cp);
      break;
    }
    default:
      j->pos = r - 2;
      return jfail(j, "bad escape '\\%c' (%s)", esc >= 32 && esc < 127 ? esc : '?', what);
    }
  }
  *w = 0;
  j->pos = r + 1;
  *out = start;
  return 0;
}

/* integer := '0' | [1-9][0-9]*   (non-negative; no sign, fraction or exponent) */
static int juint(Json *j, uint64_t *out, const char *what) {
  jws(j);
  int c = jpeek(j);
  if (c == '-') return jfail(j, "negative number in %s", what);
  if (c < '0' || c > '9') return jfail(j, "expected an integer in %s", what);
  if (c == '0' && j->pos + 1 < j->end && j->s[j->pos + 1] >= '0' && j->s[j->pos + 1] <= '9')
    return jfail(j, "leading zero in %s", what);
  uint64_t v = 0;
  while ((c = jpeek(j)) >= '0' && c <= '9') {
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(c - '0'), &v) ||
        v > (uint64_t)INT64_MAX)
      return jfail(j, "integer too large in %s", what);
    j->pos++;
  }
  if (c == '.' || c == 'e' || c == 'E') return jfail(j, "expected an integer in %s", what);
  *out = v;
  return 0;
}

/* int_array := '[' (integer (',' integer)*)? ']' */
static int jarray(Json *j, uint64_t *vals, int max, int *n, const char *what) {
  if (jexpect(j, '[', what)) return -1;
  *n = 0;
  jws(j);
  if (jpeek(j) == ']') {
    j->pos++;
    return 0;
  }
  for (;;) {
    if (*n == max) return jfail(j, "%s has more than %d entries", what, max);
    if (juint(j, &vals[(*n)++], what)) return -1;
    jws(j);
    int c = jpeek(j);
    if (c == ']') {
      j->pos++;
      return 0;
    }
    if (c != ',') return jfail(j, "expected ',' or ']' in %s", what);
    j->pos++;
  }
}

/* ---- reading -------------------------------------------------------------------------- */

typedef struct Parse {
  Json j;
  TsStFile *f;
  int cap_t, cap_m;
  size_t data_size;
  const char *data;
} Parse;

/* tensor_info := '{' "dtype": string, "shape": int_array, "data_offsets": [begin, end] '}'
 * (any order, each exactly once, nothing else) */
static int parse_tensor(Parse *ps, char *name) {
  Json *j = &ps->j;
  if (ps->f->ntensors == ps->cap_t) {
    int ncap = ps->cap_t ? ps->cap_t * 2 : 16;
    TsTensor *t = ts_realloc(ps->f->tensors, (size_t)ncap * sizeof *t);
    if (!t) return ts_fail(j->e, "%s: out of memory", j->path);
    ps->f->tensors = t, ps->cap_t = ncap;
  }
  TsTensor *t = &ps->f->tensors[ps->f->ntensors++];
  memset(t, 0, sizeof *t);
  t->name = name;
  bool have_dtype = false, have_shape = false, have_off = false;
  uint64_t shape[ST_MAX_DIMS], off[2];
  int nshape = 0, noff = 0;
  if (jexpect(j, '{', "to open a tensor's entry")) return -1;
  jws(j);
  if (jpeek(j) == '}') return jfail(j, "tensor '%s': empty entry", name);
  for (;;) {
    char *key;
    if (jstring(j, &key, "a tensor field")) return -1;
    if (jexpect(j, ':', "after a key")) return -1;
    if (!strcmp(key, "dtype")) {
      char *dt;
      if (have_dtype) return jfail(j, "tensor '%s': duplicate \"dtype\"", name);
      if (jstring(j, &dt, "dtype")) return -1;
      int k = 0;
      while (k < TS_DTYPE_COUNT && strcmp(dtypes[k].name, dt)) k++;
      if (k == TS_DTYPE_COUNT)
        return ts_fail(j->e, "%s: tensor '%s': unknown dtype '%s' (known: F32 F64 F16 BF16 "
                       "I64 I32 I16 I8 U8 BOOL)", j->path, name, dt);
      t->dtype = (TsDtype)k;
      have_dtype = true;
    } else if (!strcmp(key, "shape")) {
      if (have_shape) return jfail(j, "tensor '%s': duplicate \"shape\"", name);
      if (jarray(j, shape, ST_MAX_DIMS, &nshape, "shape")) return -1;
      have_shape = true;
    } else if (!strcmp(key, "data_offsets")) {
      if (have_off) return jfail(j, "tensor '%s': duplicate \"data_offsets\"", name);
      if (jarray(j, off, 2, &noff, "data_offsets")) return -1;
      if (noff != 2) return jfail(j, "tensor '%s': data_offsets needs [begin, end]", name);
      have_off = true;
    } else {
      return jfail(j, "tensor '%s': unknown field \"%s\"", name, key);
    }
    jws(j);
    if (jpeek(j) == '}') {
      j->pos++;
      break;
    }
    if (jexpect(j, ',', "between a tensor's fields")) return -1;
  }
  if (!have_dtype || !have_shape || !have_off)
    return ts_fail(j->e, "%s: tensor '%s': missing \"%s\"", j->path, name,
                   !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");

  // The tensor's own consistency: elements x dtype size == end - begin, inside the buffer.
  uint64_t nel = 1;
  bool overflow = false;
  t->ndims = nshape;
  for (int i = 0; i < nshape; i++) {
    t->shape[i] = (int64_t)shape[i];
    if (__builtin_mul_overflow(nel, shape[i], &nel)) overflow = true;
  }
  uint64_t nbytes;
  if (overflow || __builtin_mul_overflow(nel, (uint64_t)dtypes[t->dtype].size, &nbytes))
    return ts_fail(j->e, "%s: tensor '%s': shape product overflows", j->path, name);
  if (off[0] > off[1] || off[1] > ps->data_size)
    return ts_fail(j->e, "%s: tensor '%s': data_offsets [%llu, %llu] out of bounds of the "
                   "%zu-byte data buffer", j->path, name, (unsigned long long)off[0],
                   (unsigned long long)off[1], ps->data_size);
  if (nbytes != off[1] - off[0])
    return ts_fail(j->e, "%s: tensor '%s': shape and dtype %s give %llu bytes but "
                   "data_offsets [%llu, %llu] hold %llu", j->path, name, dtypes[t->dtype].name,
                   (unsigned long long)nbytes, (unsigned long long)off[0],
                   (unsigned long long)off[1], (unsigned long long)(off[1] - off[0]));
  t->data = ps->data + off[0];
  t->nbytes = (size_t)nbytes;
  return 0;
}

/* metadata := '{' (string ':' string (',' string ':' string)*)? '}' */
static int parse_meta(Parse *ps) {
  Json *j = &ps->j;
  if (jexpect(j, '{', "to open __metadata__")) return -1;
  jws(j);
  if (jpeek(j) == '}') {
    j->pos++;
    return 0;
  }
  for (;;) {
    char *k, *v;
    if (jstring(j, &k, "a __metadata__ key")) return -1;
    if (jexpect(j, ':', "after a key")) return -1;
    if (jstring(j, &v, "__metadata__ values must be strings")) return -1;
    TsStFile *f = ps->f;
    if (f->nmeta == ps->cap_m) {
      int ncap = ps->cap_m ? ps->cap_m * 2 : 8;
      char **nk = ts_realloc(f->meta_keys, (size_t)ncap * sizeof *nk);
      if (!nk) return ts_fail(j->e, "%s: out of memory", j->path);
      f->meta_keys = nk;
      char **nv = ts_realloc(f->meta_values, (size_t)ncap * sizeof *nv);
      if (!nv) return ts_fail(j->e, "%s: out of memory", j->path);
      f->meta_values = nv;
      ps->cap_m = ncap;
    }
    for (int i = 0; i < f->nmeta; i++)
      if (!strcmp(f->meta_keys[i], k)) return jfail(j, "duplicate __metadata__ key '%s'", k);
    f->meta_keys[f->nmeta] = k;
    f->meta_values[f->nmeta++] = v;
    jws(j);
    if (jpeek(j) == '}') {
      j->pos++;
      return 0;
    }
    if (jexpect(j, ',', "between __metadata__ entries")) return -1;
  }
}

/* header := '{' (member (',' member)*)? '}' spaces
 * member := string ':' (tensor_info | metadata when the key is "__metadata__") */
static int parse_header(Parse *ps) {
  Json *j = &ps->j;
  bool have_meta = false;
  if (jexpect(j, '{', "to open the header")) return -1;
  jws(j);
  if (jpeek(j) == '}') {
    j->pos++;
  } else {
    for (;;) {
      char *name;
      if (jstring(j, &name, "a tensor name")) return -1;
      if (jexpect(j, ':', "after a key")) return -1;
      if (!strcmp(name, "__metadata__")) {
        if (have_meta) return jfail(j, "duplicate __metadata__");
        have_meta = true;
        if (parse_meta(ps)) return -1;
      } else if (parse_tensor(ps, name)) {
        return -1;
      }
      jws(j);
      if (jpeek(j) == '}') {
        j->pos++;
        break;
      }
      if (jexpect(j, ',', "between entries")) return -1;
    }
  }
  jws(j);
  if (j->pos != j->end) return jfail(j, "unexpected text after the header object");
  return 0;
}

static int by_offset(const void *a, const void *b) {
  const TsTensor *x = a, *y = b;
  if (x->data != y->data) return (const char *)x->data < (const char *)y->data ? -1 : 1;
  if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted by offset, each tensor starts where the previous ended, the last ends at the end of
 * the buffer; names unique. */
static int check_layout(Parse *ps) {
  TsStFile *f = ps->f;
  const char *path = ps->j.path;
  TsErr *e = ps->j.e;
  if (f->ntensors > 1) qsort(f->tensors, (size_t)f->ntensors, sizeof *f->tensors, by_offset);
  size_t at = 0;
  for (int i = 0; i < f->ntensors; i++) {
    const TsTensor *t = &f->tensors[i];
    size_t begin = (size_t)((const char *)t->data - ps->data);
    if (begin < at)
      return ts_fail(e, "%s: tensor '%s': data_offsets [%zu, %zu] overlap tensor '%s'", path,
                     t->name, begin, begin + t->nbytes, f->tensors[i - 1].name);
    if (begin > at)
      return ts_fail(e, "%s: tensor '%s': gap of %zu bytes before its data_offsets [%zu, %zu]",
                     path, t->name, begin - at, begin, begin + t->nbytes);
    at = begin + t->nbytes;
  }
  if (at != ps->data_size)
    return ts_fail(e, "%s: the data buffer has %zu bytes but the tensors cover %zu", path,
                   ps->data_size, at);
  if (f->ntensors > 1) {
    char **names = ts_malloc((size_t)f->ntensors * sizeof *names);
    if (!names) return ts_fail(e, "%s: out of memory", path);
    for (int i = 0; i < f->ntensors; i++) names[i] = f->tensors[i].name;
    qsort(names, (size_t)f->ntensors, sizeof *names, by_name);
    for (int i = 1; i < f->ntensors; i++)
      if (!strcmp(names[i - 1], names[i])) {
        ts_fail(e, "%s: duplicate tensor name '%s'", path, names[i]);
        ts_free(names);
        return -1;
      }
    ts_free(names);
  }
  return 0;
}

static int read_file(const char *path, TsStFile *f, TsErr *e) {
  int fd = ts_open_input(path, "a safetensors file", e);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st)) {
    int err = errno;
    close(fd);
    return ts_fail(e, "%s: cannot stat: %s", path, strerror(err));
  }
  size_t size = (size_t)st.st_size;
  if (size < 8) {
    close(fd);
    return ts_fail(e, "%s: truncated: %zu bytes, too short for the 8-byte header length", path,
                   size);
  }
  f->buf = ts_malloc(size);
  if (!f->buf) {
    close(fd);
    return ts_fail(e, "%s: out of memory (%zu bytes)", path, size);
  }
  size_t got = 0;
  while (got < size) {
    ssize_t r = read(fd, (char *)f->buf + got, size - got > (1u << 30) ? (1u << 30) : size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int err = errno;
      close(fd);
      return ts_fail(e, "%s: read error: %s", path, strerror(err));
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (got != size)
    return ts_fail(e, "%s: truncated while reading: %zu of %zu bytes", path, got, size);
  f->size = size;
  return 0;
}

int ts_st_read(const char *path, TsStFile *out, TsErr *e) {
  memset(out, 0, sizeof *out);
  if (!path) return ts_fail(e, "(null): no safetensors file given");
  if (read_file(path, out, e)) goto fail;
  const unsigned char *b = out->buf;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
  if (n > ST_MAX_HEADER) {
    ts_fail(e, "%s: header length %llu is larger than the 100000000-byte limit (not a "
            "safetensors file?)", path, (unsigned long long)n);
    goto fail;
  }
  if (n > out->size - 8) {
    ts_fail(e, "%s: header length %llu is larger than the file (%zu bytes)", path,
            (unsigned long long)n, out->size);
    goto fail;
  }
  Parse ps = {.j = {.path = path, .s = (char *)out->buf + 8, .pos = 0, .end = (size_t)n, .e = e},
              .f = out, .data = (const char *)out->buf + 8 + n,
              .data_size = out->size - 8 - (size_t)n};
  if (parse_header(&ps) || check_layout(&ps)) goto fail;
  return 0;
fail:
  ts_st_free(out);
  return -1;
}

const TsTensor *ts_st_find(const TsStFile *f, const char *name) {
  if (!f || !name) return NULL;
  for (int i = 0; i < f->ntensors; i++)
    if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
  return NULL;
}

const char *ts_st_meta(const TsStFile *f, const char *key) {
  if (!f || !key) return NULL;
  for (int i = 0; i < f->nmeta; i++)
    if (!strcmp(f->meta_keys[i], key)) return f->meta_values[i];
  return NULL;
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = h >> 10 & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0) {   // zero or subnormal: mant x 2^-24, exact in f32
    float v = (float)mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) bits = sign | 0x7F800000u | mant << 13;   // inf, NaN (payload kept)
  else bits = sign | (exp + 112) << 23 | mant << 13;
  float v;
  memcpy(&v, &bits, 4);
  return v;
}

int ts_tensor_to_i64(const TsTensor *t, int64_t *dst, size_t count, TsErr *e) {
  if (!t) return ts_fail(e, "no tensor given");
  if ((unsigned)t->dtype >= TS_DTYPE_COUNT) return ts_fail(e, "tensor '%s': bad dtype", t->name);
  int sz = t->dtype == TS_I64 ? 8 : t->dtype == TS_I32 ? 4 : t->dtype == TS_I16 ? 2
         : t->dtype == TS_I8 || t->dtype == TS_U8 ? 1 : 0;
  if (!sz) return ts_fail(e, "tensor '%s': indices must be an integer dtype (I64, I32, I16, I8, U8)", t->name);
  size_t n = t->nbytes / (size_t)sz;
  if (n != count) return ts_fail(e, "tensor '%s': has %zu elements, %zu expected", t->name, n, count);
  const unsigned char *s = t->data;
  for (size_t i = 0; i < n; i++, s += sz) {   /* little-endian, sign-extended */
    uint64_t u = 0;
    for (int k = sz - 1; k >= 0; k--) u = u << 8 | s[k];
    if (t->dtype == TS_U8) dst[i] = (int64_t)u;
    else {
      int sh = 64 - 8 * sz;
      dst[i] = sh ? (int64_t)(u << sh) >> sh : (int64_t)u;
    }
  }
  return 0;
}

int ts_tensor_to_f32(const TsTensor *t, float *dst, size_t count, TsErr *e) {
  if (!t) return ts_fail(e, "no tensor given");
  if ((unsigned)t->dtype >= TS_DTYPE_COUNT) return ts_fail(e, "tensor '%s': bad dtype", t->name);
  size_t dsize = dtypes[t->dtype].size, n = t->nbytes / dsize;
  if (n != count)
    return ts_fail(e, "tensor '%s': has %zu elements, %zu expected", t->name, n, count);
  const unsigned char *s = t->data;
  // Bytes are assembled little-endian explicitly: correct on any host, and unaligned data
  // (another writer may not pad the header) is fine.
  switch (t->dtype) {
  case TS_F32:
    for (size_t i = 0; i < n; i++, s += 4) {
      uint32_t u = (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
      memcpy(&dst[i], &u, 4);
    }
    return 0;
  case TS_F64:
    for (size_t i = 0; i < n; i++, s += 8) {
      uint64_t u = 0;
      for (int k = 7; k >= 0; k--) u = u << 8 | s[k];
      double d;
      memcpy(&d, &u, 8);
      dst[i] = (float)d;
    }
    return 0;
  case TS_F16:
    for (size_t i = 0; i < n; i++, s += 2) dst[i] = f16_to_f32((uint16_t)(s[0] | s[1] << 8));
    return 0;
  case TS_BF16:
    for (size_t i = 0; i < n; i++, s += 2) {
      uint32_t u = (uint32_t)(s[0] | s[1] << 8) << 16;
      memcpy(&dst[i], &u, 4);
    }
    return 0;
  default:
    return ts_fail(e, "tensor '%s': dtype %s is not a float type", t->name,
                   dtypes[t->dtype].name);
  }
}

void ts_st_free(TsStFile *f) {
  if (!f) return;
  ts_free(f->tensors);
  ts_free(f->meta_keys);
  ts_free(f->meta_values);
  ts_free(f->buf);
  memset(f, 0, sizeof *f);
}

/* ---- writing -------------------------------------------------------------------------- */

typedef struct Buf { char *p; size_t len, cap; bool oom; } Buf;

static void bput(Buf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + n + 1) ncap *= 2;
    char *p = ts_realloc(b->p, ncap);
    if (!p) {
      b->oom = true;
      return;
    }
    b->p = p, b->cap = ncap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void bputs(Buf *b, const char *s) { bput(b, s, strlen(s)); }

static void bprintf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bprintf(Buf *b, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);   // only short numbers go through here
  va_end(ap);
  bput(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void bjson_string(Buf *b, const char *s) {
  bput(b, "\"", 1);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"') bput(b, "\\\"", 2);
    else if (c == '\\') bput(b, "\\\\", 2);
    else if (c < 0x20) bprintf(b, "\\u%04x", c);
    else bput(b, (const char *)&c, 1);
  }
  bput(b, "\"", 1);
}

int ts_st_write(const char *path, const TsStOut *tensors, int n, const char *const *meta_kv,
                int nmeta, TsErr *e) {
  return ts_st_write_fill(path, tensors, n, meta_kv, nmeta, NULL, NULL, e);
}

int ts_st_write_fill(const char *path, const TsStOut *tensors, int n, const char *const *meta_kv,
                     int nmeta, TsStFill fill, void *arg, TsErr *e) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  return ts_fail(e, "%s: writing safetensors on a big-endian host is not supported", path);
#endif
  if (!path || !*path) return ts_fail(e, "(null): no output path given");
  if (n < 0 || nmeta < 0 || (n && !tensors) || (nmeta && !meta_kv))
    return ts_fail(e, "%s: bad tensor or metadata list", path);
  size_t *sizes = ts_calloc(n ? (size_t)n : 1, sizeof *sizes);
  if (!sizes) return ts_fail(e, "%s: out of memory", path);
  Buf h = {0};
  void *scratch = NULL;
  int rc = -1;

  // Validate everything before touching the filesystem.
  for (int i = 0; i < n; i++) {
    const TsStOut *t = &tensors[i];
    if (!t->name || !*t->name) {
      ts_fail(e, "%s: tensor %d has no name", path, i);
      goto out;
    }
    if (!strcmp(t->name, "__metadata__")) {
      ts_fail(e, "%s: '__metadata__' is reserved and cannot name a tensor", path);
      goto out;
    }
    for (int k = 0; k < i; k++)
      if (!strcmp(tensors[k].name, t->name)) {
        ts_fail(e, "%s: duplicate tensor name '%s'", path, t->name);
        goto out;
      }
    if ((unsigned)t->dtype >= TS_DTYPE_COUNT) {
      ts_fail(e, "%s: tensor '%s': unknown dtype %d", path, t->name, (int)t->dtype);
      goto out;
    }
    if (t->ndims < 0 || t->ndims > ST_MAX_DIMS) {
      ts_fail(e, "%s: tensor '%s': %d dims (0 to %d supported)", path, t->name, t->ndims,
              ST_MAX_DIMS);
      goto out;
    }
    size_t nb = dtypes[t->dtype].size;
    for (int d = 0; d < t->ndims; d++)
      if (t->shape[d] < 0 || __builtin_mul_overflow(nb, (size_t)t->shape[d], &nb)) {
        ts_fail(e, "%s: tensor '%s': bad or too large shape", path, t->name);
        goto out;
      }
    if (nb && !t->data && !fill) {
      ts_fail(e, "%s: tensor '%s': no data", path, t->name);
      goto out;
    }
    sizes[i] = nb;
  }
  for (int i = 0; i < 2 * nmeta; i++)
    if (!meta_kv[i]) {
      ts_fail(e, "%s: metadata entry %d is NULL", path, i / 2);
      goto out;
    }

  // The header, in the reference's shape: metadata first, then the tensors in order.
  bputs(&h, "{");
  if (nmeta) {
    bputs(&h, "\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
      if (i) bputs(&h, ",");
      bjson_string(&h, meta_kv[2 * i]);
      bputs(&h, ":");
      bjson_string(&h, meta_kv[2 * i + 1]);
    }
    bputs(&h, "}");
  }
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    const TsStOut *t = &tensors[i];
    if (i || nmeta) bputs(&h, ",");
    bjson_string(&h, t->name);
    bprintf(&h, ":{\"dtype\":\"%s\",\"shape\":[", dtypes[t->dtype].name);
    for (int d = 0; d < t->ndims; d++) bprintf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    bprintf(&h, "],\"data_offsets\":[%llu,", (unsigned long long)off);
    off += sizes[i];
    bprintf(&h, "%llu]}", (unsigned long long)off);
  }
  bputs(&h, "}");
  while (h.len % 8) bputs(&h, " ");   // pad so the data starts 8-byte aligned
  if (h.oom) {
    ts_fail(e, "%s: out of memory building the header", path);
    goto out;
  }

  size_t most = 0;   // the fill buffer: the largest tensor that is made as it is written
  for (int i = 0; i < n; i++)
    if (!tensors[i].data && sizes[i] > most) most = sizes[i];
  if (most && !(scratch = ts_malloc(most))) {
    ts_fail(e, "%s: out of memory (%zu bytes)", path, most);
    goto out;
  }

  unsigned char len8[8];
  for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
  TsOut o;
  if (ts_out_open(&o, path, e) < 0 || ts_out_write(&o, len8, 8, e) < 0 || ts_out_write(&o, h.p, h.len, e) < 0)
    goto out;
  for (int i = 0; i < n; i++) {
    if (!sizes[i]) continue;
    const void *bytes = tensors[i].data;
    if (!bytes) fill(arg, i, scratch), bytes = scratch;
    if (ts_out_write(&o, bytes, sizes[i], e) < 0) goto out;
  }
  if (ts_out_finish(&o, e) < 0 || ts_out_commit(&o, e) < 0) goto out;
  rc = 0;
out:
  ts_free(scratch);
  ts_free(h.p);
  ts_free(sizes);
  return rc;
}
