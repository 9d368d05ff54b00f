/*
 * f32cmp.c: the cross test's float32 tool (C99, host only; no python needed).
 *
 *   f32cmp [-t TOL] [-r ROW] A B     compare two float32 vectors element by element
 *   f32cmp -g COUNT SEED OUT.f32     write COUNT deterministic floats in [0, 1) (the inputs)
 *   f32cmp -d FILE                   print FILE's floats as hex bits and %.9g, one a line
 *
 * A and B are raw little-endian float32 files, or `hex:PATH`: a text dump of the uint32 bits
 * of each float, whitespace-separated 8-digit hex words (what the Cortex-M4 firmware prints).
 * They match when they have the same number of elements and |a - b| <= TOL (absolute,
 * default 1e-5) for every element; a NaN or infinity anywhere is a mismatch. With -r ROW, A
 * is also checked to be rows of ROW probabilities: each in [0, 1] and each row summing to 1
 * within 1e-4 (softmax outputs), which catches a reference that is itself garbage. Prints one
 * summary line (and the first mismatches). Exit status: 0 match; 1 mismatch; 2 usage or I/O.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint32_t *u;
  size_t n, cap;
} Vec;

static int push(Vec *v, uint32_t u) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 1024;
    uint32_t *p = realloc(v->u, cap * sizeof *p);
    if (!p) return -1;
    v->u = p;
    v->cap = cap;
  }
  v->u[v->n++] = u;
  return 0;
}

static float as_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int load_raw(const char *path, Vec *v) {
  FILE *f = fopen(path, "rb");
  unsigned char b[4];
  size_t got;
  if (!f) {
    fprintf(stderr, "f32cmp: %s: %s\n", path, strerror(errno));
    return -1;
  }
  while ((got = fread(b, 1, 4, f)) == 4)
    if (push(v, (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                    (uint32_t)b[3] << 24) != 0) {
      fclose(f);
      fprintf(stderr, "f32cmp: out of memory\n");
      return -1;
    }
  fclose(f);
  if (got != 0) {
    fprintf(stderr, "f32cmp: %s: size is not a multiple of 4 bytes\n", path);
    return -1;
  }
  return 0;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int load_hex(const char *path, Vec *v) {
  FILE *f = fopen(path, "r");
  int c, line = 1;
  if (!f) {
    fprintf(stderr, "f32cmp: %s: %s\n", path, strerror(errno));
    return -1;
  }
  for (;;) {
    uint32_t u = 0;
    int digits = 0;
    while ((c = fgetc(f)) == ' ' || c == '\t' || c == '\r' || c == '\n')
      if (c == '\n') line++;
    if (c == EOF) break;
    for (; c != EOF && hexval(c) >= 0; c = fgetc(f), digits++) u = u << 4 | (uint32_t)hexval(c);
    if (digits != 8 || (c != EOF && c != ' ' && c != '\t' && c != '\r' && c != '\n')) {
      fprintf(stderr, "f32cmp: %s:%d: expected 8-digit hex words\n", path, line);
      fclose(f);
      return -1;
    }
    if (c == '\n') line++;
    if (push(v, u) != 0) {
      fprintf(stderr, "f32cmp: out of memory\n");
      fclose(f);
      return -1;
    }
    if (c == EOF) break;
  }
  fclose(f);
  return 0;
}

static int load(const char *arg, Vec *v) {
  if (strncmp(arg, "hex:", 4) == 0) return load_hex(arg + 4, v);
  return load_raw(arg, v);
}

/* xorshift32: the same stream on every host */
static int gen(const char *count_s, const char *seed_s, const char *path) {
  char *e1, *e2;
  unsigned long count = strtoul(count_s, &e1, 10), seed = strtoul(seed_s, &e2, 10);
  uint32_t s = (uint32_t)seed * 2654435761u + 0x9e3779b9u;
  unsigned long i;
  FILE *f;
  if (*e1 || *e2 || count == 0) {
    fprintf(stderr, "f32cmp: -g COUNT SEED OUT: COUNT and SEED are integers, COUNT > 0\n");
    return 2;
  }
  if (s == 0) s = 1;
  if (!(f = fopen(path, "wb"))) {
    fprintf(stderr, "f32cmp: %s: %s\n", path, strerror(errno));
    return 2;
  }
  for (i = 0; i < count; i++) {
    float x;
    uint32_t u;
    unsigned char b[4];
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    x = (float)(s >> 8) * (1.0f / 16777216.0f); /* k / 2^24: exact in float */
    memcpy(&u, &x, 4);
    b[0] = (unsigned char)u;
    b[1] = (unsigned char)(u >> 8);
    b[2] = (unsigned char)(u >> 16);
    b[3] = (unsigned char)(u >> 24);
    fwrite(b, 1, 4, f);
  }
  if (fclose(f) != 0) {
    fprintf(stderr, "f32cmp: %s: write error\n", path);
    return 2;
  }
  return 0;
}

static int dump(const char *arg) {
  Vec v = {0};
  size_t i;
  if (load(arg, &v) != 0) return 2;
  for (i = 0; i < v.n; i++) printf("%08lx %.9g\n", (unsigned long)v.u[i], (double)as_float(v.u[i]));
  free(v.u);
  return 0;
}

/* bytes on stdin (an IDX file's pixels) to float32 byte / scale, as teslac scales data */
static int from_bytes(const char *scale_s, const char *path) {
  float scale = (float)strtod(scale_s, NULL);
  FILE *f = fopen(path, "wb");
  int c;
  if (!f || !(scale > 0)) return 2;
  while ((c = getchar()) != EOF) {
    float v = (float)c / scale;
    uint32_t u;
    unsigned char b[4];
    memcpy(&u, &v, 4);
    b[0] = (unsigned char)u, b[1] = (unsigned char)(u >> 8), b[2] = (unsigned char)(u >> 16);
    b[3] = (unsigned char)(u >> 24);
    fwrite(b, 1, 4, f);
  }
  return fclose(f) != 0 ? 2 : 0;
}

static void usage(void) {
  fprintf(stderr, "usage: f32cmp [-t TOL] [-r ROW] A B   (A, B: raw float32 LE, or hex:PATH)\n"
                  "       f32cmp -g COUNT SEED OUT.f32\n"
                  "       f32cmp -b SCALE OUT.f32 < BYTES\n"
                  "       f32cmp -d FILE\n");
}

int main(int argc, char **argv) {
  double tol = 1e-5, maxdiff = 0;
  long row = 0;
  size_t i, bad = 0, worst = 0, shown = 0;
  int argi = 1, rc;
  Vec a = {0}, b = {0};

  if (argc >= 2 && strcmp(argv[1], "-g") == 0) {
    if (argc != 5) return usage(), 2;
    return gen(argv[2], argv[3], argv[4]);
  }
  if (argc >= 2 && strcmp(argv[1], "-b") == 0) {
    if (argc != 4) return usage(), 2;
    return from_bytes(argv[2], argv[3]);
  }
  if (argc >= 2 && strcmp(argv[1], "-d") == 0) {
    if (argc != 3) return usage(), 2;
    return dump(argv[2]);
  }
  while (argi < argc && argv[argi][0] == '-' && argv[argi][1]) {
    char *end;
    if (strcmp(argv[argi], "-t") == 0 && argi + 1 < argc) {
      tol = strtod(argv[argi + 1], &end);
      if (*end || !(tol >= 0)) return usage(), 2;
    } else if (strcmp(argv[argi], "-r") == 0 && argi + 1 < argc) {
      row = strtol(argv[argi + 1], &end, 10);
      if (*end || row < 1) return usage(), 2;
    } else {
      return usage(), 2;
    }
    argi += 2;
  }
  if (argc - argi != 2) return usage(), 2;
  if (load(argv[argi], &a) != 0 || load(argv[argi + 1], &b) != 0) return 2;

  rc = 0;
  if (a.n != b.n) {
    printf("f32cmp: %s has %lu floats, %s has %lu\n", argv[argi], (unsigned long)a.n,
           argv[argi + 1], (unsigned long)b.n);
    rc = 1;
  }
  if (a.n == 0) {
    printf("f32cmp: %s is empty\n", argv[argi]);
    rc = 1;
  }
  if (row && a.n % (size_t)row) {
    printf("f32cmp: %s: %lu floats is not whole rows of %ld\n", argv[argi], (unsigned long)a.n, row);
    rc = 1;
  } else if (row) {
    size_t r, k;
    for (r = 0; r < a.n / (size_t)row; r++) {
      double sum = 0;
      int ok = 1;
      for (k = 0; k < (size_t)row; k++) {
        float p = as_float(a.u[r * (size_t)row + k]);
        if (!(p >= 0.0f && p <= 1.0f)) ok = 0;
        sum += p;
      }
      if (!ok || !(fabs(sum - 1.0) <= 1e-4)) {
        printf("f32cmp: %s: row %lu is not a probability vector (sum %.9g)\n", argv[argi],
               (unsigned long)r, sum);
        rc = 1;
        break;
      }
    }
  }
  for (i = 0; i < a.n && i < b.n; i++) {
    float fa = as_float(a.u[i]), fb = as_float(b.u[i]);
    double d = fabs((double)fa - (double)fb);
    if (!isfinite(fa) || !isfinite(fb) || !(d <= tol)) {
      if (shown++ < 10) {
        if (row)
          printf("  [%lu][%lu]: %.9g (%08lx) vs %.9g (%08lx)\n", (unsigned long)(i / (size_t)row),
                 (unsigned long)(i % (size_t)row), (double)fa, (unsigned long)a.u[i], (double)fb,
                 (unsigned long)b.u[i]);
        else
          printf("  [%lu]: %.9g (%08lx) vs %.9g (%08lx)\n", (unsigned long)i, (double)fa,
                 (unsigned long)a.u[i], (double)fb, (unsigned long)b.u[i]);
      }
      bad++;
      if (!(d <= maxdiff)) maxdiff = d, worst = i; /* NaN differences count as worst */
    } else if (d > maxdiff) {
      maxdiff = d;
      worst = i;
    }
  }
  if (bad) rc = 1;
  printf("f32cmp: %lu floats, %lu over %g, max |diff| %.3g at [%lu]: %s\n", (unsigned long)a.n,
         (unsigned long)bad, tol, maxdiff, (unsigned long)worst, rc ? "MISMATCH" : "ok");
  free(a.u);
  free(b.u);
  return rc;
}
