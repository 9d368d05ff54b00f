/* rt_idx.c: IDX files (the MNIST family's format) and labelled datasets built from a pair of
 * them. This is where training data enters the runtime: the driver calls ts_dataset_load with
 * the spec's image and label files, and the generated code reads the resulting float array.
 * Files are read through zlib's gz* interface, which inflates .gz files and passes plain files
 * through, so both work by the same path. Validation is strict and each defect gets a
 * one-line message naming the file: a missing file (strerror), a wrong magic, an element type
 * other than unsigned byte, a bad number of dims, dims whose product overflows or exceeds the
 * 4 GiB limit, truncated data, trailing bytes, a corrupt gzip stream (zlib's own words). The
 * buffer grows as data arrives, so a header that lies about its size cannot make us allocate
 * gigabytes for a file that holds a few bytes. */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define IDX_MAX_BYTES ((uint64_t)4 << 30)   /* refuse data larger than 4 GiB */
#define IDX_FIRST_CHUNK ((size_t)64 << 20)  /* first buffer size; doubles up to the total */

static const char *idx_type_name(int t) {
  switch (t) {
  case 0x08: return "unsigned byte";
  case 0x09: return "signed byte";
  case 0x0B: return "int16";
  case 0x0C: return "int32";
  case 0x0D: return "float32";
  case 0x0E: return "float64";
  default: return NULL;
  }
}

/* Read up to n bytes; returns how many were read before EOF or an error. gzread takes an
 * unsigned int length, so big reads go in chunks. */
static size_t gz_read_upto(gzFile g, void *buf, size_t n, int *failed) {
  size_t got = 0;
  *failed = 0;
  while (got < n) {
    size_t want = n - got;
    if (want > ((size_t)1 << 30)) want = (size_t)1 << 30;
    int r = gzread(g, (char *)buf + got, (unsigned)want);
    if (r < 0) {
      *failed = 1;
      break;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return got;
}

/* zlib's message without the "<fd:3>: " it puts in front for a gzdopen'd stream: the file's
 * name is already ours to give */
static const char *z_words(const char *zmsg) {
  if (!zmsg) return "unknown error";
  if (!strncmp(zmsg, "<fd:", 4)) {
    const char *c = strstr(zmsg, ": ");
    if (c) return c + 2;
  }
  return *zmsg ? zmsg : "unknown error";
}

/* A short read: tell a clean end of file (truncated data) from a stream zlib rejected. */
static int short_read(const char *path, gzFile g, const char *what, uint64_t expected,
                      uint64_t got, TsErr *e) {
  int errnum = Z_OK;
  const char *zmsg = gzerror(g, &errnum);
  if (errnum == Z_BUF_ERROR)   // zlib: "unexpected end of file" inside a gzip stream
    return ts_fail(e, "%s: truncated gzip stream: expected %llu bytes of %s, got %llu", path,
                   (unsigned long long)expected, what, (unsigned long long)got);
  if (errnum == Z_ERRNO)
    return ts_fail(e, "%s: read error: %s", path, zmsg && *zmsg ? z_words(zmsg) : strerror(errno));
  if (errnum != Z_OK && errnum != Z_STREAM_END)
    return ts_fail(e, "%s: corrupt gzip stream: %s", path, z_words(zmsg));
  return ts_fail(e, "%s: truncated: expected %llu bytes of %s, got %llu", path,
                 (unsigned long long)expected, what, (unsigned long long)got);
}

static int idx_read(const char *path, gzFile g, TsIdx *out, TsErr *e) {
  uint8_t hdr[4];
  int failed;
  size_t got = gz_read_upto(g, hdr, 4, &failed);
  if (got < 4) return short_read(path, g, "IDX header", 4, got, e);
  if (hdr[0] != 0 || hdr[1] != 0)
    return ts_fail(e, "%s: wrong magic 0x%02x%02x%02x%02x: not an IDX file (expected 0x0000 "
                   "then type and ndims)", path, hdr[0], hdr[1], hdr[2], hdr[3]);
  const char *tname = idx_type_name(hdr[2]);
  if (!tname)
    return ts_fail(e, "%s: unknown IDX element type 0x%02x", path, hdr[2]);
  if (hdr[2] != 0x08)
    return ts_fail(e, "%s: unsupported IDX element type 0x%02x (%s); only 0x08 (unsigned "
                   "byte) is supported", path, hdr[2], tname);
  int ndims = hdr[3];
  if (ndims < 1 || ndims > 4)
    return ts_fail(e, "%s: bad number of dims %d (1 to 4 supported)", path, ndims);

  uint8_t dimb[16];
  got = gz_read_upto(g, dimb, (size_t)ndims * 4, &failed);
  if (got < (size_t)ndims * 4) return short_read(path, g, "dims", (uint64_t)ndims * 4, got, e);
  uint64_t total = 1;
  bool overflow = false;
  out->ndims = ndims;
  for (int i = 0; i < ndims; i++) {
    const uint8_t *b = dimb + 4 * i;
    out->dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    if (__builtin_mul_overflow(total, (uint64_t)out->dims[i], &total)) overflow = true;
  }
  if (overflow)
    return ts_fail(e, "%s: dims %u x %u x %u x %u overflow 64 bits", path, out->dims[0],
                   ndims > 1 ? out->dims[1] : 1, ndims > 2 ? out->dims[2] : 1,
                   ndims > 3 ? out->dims[3] : 1);
  if (total > IDX_MAX_BYTES)
    return ts_fail(e, "%s: data of %llu bytes exceeds the 4 GiB limit", path,
                   (unsigned long long)total);
  out->count = out->dims[0];
  out->item_size = out->count ? (size_t)(total / out->count) : 1;
  if (!out->count)   // prod of the remaining dims, still needed when there are no items
    for (int i = 1; i < ndims; i++) out->item_size *= out->dims[i];

  // Grow as data arrives, so a lying header costs at most twice what the file holds.
  size_t cap = total < IDX_FIRST_CHUNK ? (size_t)total : IDX_FIRST_CHUNK, have = 0;
  out->data = ts_malloc(cap);
  if (!out->data) return ts_fail(e, "%s: out of memory (%zu bytes)", path, cap);
  for (;;) {
    have += gz_read_upto(g, out->data + have, cap - have, &failed);
    if (failed || have < cap) break;
    if (have == total) break;
    size_t ncap = cap * 2 < total ? cap * 2 : (size_t)total;
    uint8_t *p = ts_realloc(out->data, ncap);
    if (!p) return ts_fail(e, "%s: out of memory (%zu bytes)", path, ncap);
    out->data = p;
    cap = ncap;
  }
  if (have < total) return short_read(path, g, "data", total, have, e);

  // Exactly prod(dims) elements: anything after is an error, and reading on also makes zlib
  // check the gzip trailer (CRC and length).
  uint8_t extra[4096];
  got = gz_read_upto(g, extra, sizeof extra, &failed);
  if (got > 0)
    return ts_fail(e, "%s: trailing bytes: %s%zu bytes after the %llu bytes of data", path,
                   got == sizeof extra ? "at least " : "", got, (unsigned long long)total);
  int errnum = Z_OK;
  const char *zmsg = gzerror(g, &errnum);
  if (failed || (errnum != Z_OK && errnum != Z_STREAM_END))
    return ts_fail(e, "%s: corrupt gzip stream: %s", path, z_words(zmsg));
  return 0;
}

int ts_idx_load(const char *path, TsIdx *out, TsErr *e) {
  memset(out, 0, sizeof *out);
  if (!path) return ts_fail(e, "(null): no IDX file given");
  int fd = ts_open_input(path, "an IDX file", e);
  if (fd < 0) return -1;
  return ts_idx_load_fd(fd, path, out, e);
}

int ts_idx_load_fd(int fd, const char *path, TsIdx *out, TsErr *e) {
  memset(out, 0, sizeof *out);
  struct stat st;
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return ts_fail(e, "%s: is a directory, not an IDX file", path);
  }
  gzFile g = gzdopen(fd, "rb");
  if (!g) {
    close(fd);
    return ts_fail(e, "%s: cannot open: out of memory", path);
  }
  gzbuffer(g, 128 * 1024);
  int rc = idx_read(path, g, out, e);
  gzclose(g);   // closes fd
  if (rc) ts_idx_free(out);
  return rc;
}

void ts_idx_free(TsIdx *x) {
  if (!x) return;
  ts_free(x->data);
  memset(x, 0, sizeof *x);
}

/* ---- datasets ------------------------------------------------------------------------- */

static void item_shape(const TsIdx *x, char *buf, size_t n) {
  size_t off = 0;
  buf[0] = 0;
  for (int i = 1; i < x->ndims && off < n; i++)
    off += (size_t)snprintf(buf + off, n - off, "%s%u", i > 1 ? "x" : "", x->dims[i]);
}

int ts_dataset_load(const char *images, const char *labels, float scale, int classes,
                    size_t expect_item, TsDataset *out, TsErr *e) {
  memset(out, 0, sizeof *out);
  if (!(scale > 0) || !isfinite(scale))
    return ts_fail(e, "%s: scale must be a positive finite number, got %g", images,
                   (double)scale);
  if (classes <= 0)
    return ts_fail(e, "%s: the number of classes must be positive, got %d", labels, classes);
  TsIdx xi, yi;
  if (ts_idx_load(images, &xi, e)) return -1;
  if (ts_idx_load(labels, &yi, e)) {
    ts_idx_free(&xi);
    return -1;
  }
  int rc = -1;
  char shape[64];
  item_shape(&xi, shape, sizeof shape);
  if (xi.ndims < 2) {
    ts_fail(e, "%s: images need at least 2 dims (count, item dims...), got 1", images);
    goto done;
  }
  if (yi.ndims != 1) {
    ts_fail(e, "%s: labels must be 1-D, got %d dims", labels, yi.ndims);
    goto done;
  }
  if (xi.count != yi.count) {
    ts_fail(e, "%s: %zu images but %s has %zu labels", images, xi.count, labels, yi.count);
    goto done;
  }
  if (expect_item && xi.item_size != expect_item) {
    ts_fail(e, "%s: each image is %s = %zu values but %zu were expected", images, shape,
            xi.item_size, expect_item);
    goto done;
  }
  for (size_t i = 0; i < yi.count; i++)
    if ((int)yi.data[i] >= classes) {
      ts_fail(e, "%s: label %u at index %zu is out of range [0, %d)", labels, yi.data[i], i,
              classes);
      goto done;
    }
  out->y = ts_malloc(yi.count * sizeof(int32_t) + 1);
  if (!out->y) {
    ts_fail(e, "%s: out of memory", labels);
    goto done;
  }
  out->x = xi.data, xi.data = NULL;   /* the bytes are the dataset's now */
  for (int v = 0; v < 256; v++) out->value[v] = (float)v / scale;
  for (size_t i = 0; i < yi.count; i++) out->y[i] = yi.data[i];
  out->count = xi.count;
  out->item_size = xi.item_size;
  out->item_ndims = xi.ndims - 1;
  for (int i = 1; i < xi.ndims; i++) out->item_dims[i - 1] = xi.dims[i];
  rc = 0;
done:
  ts_idx_free(&xi);
  ts_idx_free(&yi);
  if (rc) ts_dataset_free(out);
  return rc;
}

void ts_dataset_free(TsDataset *d) {
  if (!d) return;
  ts_free(d->x);
  ts_free(d->y);
  memset(d, 0, sizeof *d);
}

int ts_dataset_split(TsDataset *d, const uint8_t *take, TsDataset *held, TsErr *e) {
  size_t n = 0, item = d->item_size;
  for (size_t i = 0; i < d->count; i++) n += take[i] != 0;
  *held = *d;
  held->count = n;
  held->x = ts_malloc(item * (n ? n : 1));
  held->y = ts_malloc(sizeof(int32_t) * (n ? n : 1));
  if (!held->x || !held->y) {
    ts_free(held->x), ts_free(held->y);
    memset(held, 0, sizeof *held);
    return ts_fail(e, "out of memory splitting %zu samples", d->count);
  }
  size_t k = 0, j = 0;   /* the kept rows move forward in place: j <= i */
  for (size_t i = 0; i < d->count; i++) {
    uint8_t *dst = take[i] ? held->x + k * item : d->x + j * item;
    int32_t *ydst = take[i] ? &held->y[k++] : &d->y[j++];
    if (dst != d->x + i * item) memmove(dst, d->x + i * item, item);
    *ydst = d->y[i];
  }
  d->count = j;
  return 0;
}

int ts_dataset_holdout(TsDataset *d, double f, uint64_t seed, TsDataset *held, TsErr *e) {
  memset(held, 0, sizeof *held);
  size_t n = d->count, nval = n - (size_t)floor((double)n * (1 - f));
  if (!(f > 0 && f < 1) || nval == 0 || nval == n)
    return ts_fail(e, "a fraction of %g of %zu samples leaves %s", f, n, nval == n ? "none to train on" : "none to validate on");
  uint32_t *perm = ts_malloc(sizeof(uint32_t) * n);
  uint8_t *take = ts_malloc(n);
  if (!perm || !take) {
    ts_free(perm), ts_free(take);
    return ts_fail(e, "out of memory splitting %zu samples", n);
  }
  for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i, take[i] = 0;
  TsRng r;
  ts_rng_seed(&r, seed, 2000);
  ts_shuffle_u32(&r, perm, n);
  for (size_t i = 0; i < nval; i++) take[perm[i]] = 1;
  int rc = ts_dataset_split(d, take, held, e);
  ts_free(perm), ts_free(take);
  return rc;
}

void ts_dataset_gather(const TsDataset *d, size_t first, size_t n, float *dst) {
  const uint8_t *s = d->x + first * d->item_size;
  for (size_t i = 0; i < n * d->item_size; i++) dst[i] = d->value[s[i]];
}
