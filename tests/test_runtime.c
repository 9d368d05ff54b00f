/* test_runtime.c: the Check suite for the runtime library (runtime/tesla_rt.h). Every test
 * builds its own input files in a fresh temporary folder (IDX plain and gzipped through
 * zlib, safetensors byte by byte), so nothing outside the test is needed; the one exception
 * is the real Fashion-MNIST test, which runs only when /usr/share/datasets/fashion-mnist has
 * the files. Each bad input has a test that checks the one-line message names the problem.
 * TCases: core (errors, allocation hook, failure injection), idx, dataset, rng, pool,
 * safetensors, progress. */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define FMNIST "/usr/share/datasets/fashion-mnist"

/* ---- fixtures and helpers ------------------------------------------------------------- */

static char tmpdir[256];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  chmod(p, 0700);
  return remove(p);
}

static void setup_tmp(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/tesla-rt-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown_tmp(void) {
  chmod(tmpdir, 0700);
  nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *tpath(const char *name) {
  static char buf[4][512];
  static int k;
  char *b = buf[k++ % 4];
  snprintf(b, 512, "%s/%s", tmpdir, name);
  return b;
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(p, 1, n, f), n);
  fclose(f);
}

static void write_gz(const char *path, const void *p, size_t n) {
  gzFile g = gzopen(path, "wb");
  ck_assert_ptr_nonnull(g);
  ck_assert_int_eq(gzwrite(g, p, (unsigned)n), (int)n);
  ck_assert_int_eq(gzclose(g), Z_OK);
}

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *p = malloc(*n + 1);
  ck_assert_uint_eq(fread(p, 1, *n, f), *n);
  fclose(f);
  return p;
}

/* An IDX image: header (type, dims) then `ndata` bytes of payload (which may disagree with the
 * dims on purpose). Returns a malloc'd buffer, its size in *n. */
static unsigned char *make_idx(int type, int ndims, const uint32_t *dims, const uint8_t *data,
                               size_t ndata, size_t *n) {
  *n = 4 + 4 * (size_t)ndims + ndata;
  unsigned char *b = malloc(*n), *w = b;
  *w++ = 0, *w++ = 0, *w++ = (unsigned char)type, *w++ = (unsigned char)ndims;
  for (int i = 0; i < ndims; i++) {
    *w++ = (unsigned char)(dims[i] >> 24), *w++ = (unsigned char)(dims[i] >> 16);
    *w++ = (unsigned char)(dims[i] >> 8), *w++ = (unsigned char)dims[i];
  }
  if (ndata) memcpy(w, data, ndata);
  return b;
}

static void put_idx(const char *path, bool gz, int ndims, const uint32_t *dims,
                    const uint8_t *data, size_t ndata) {
  size_t n;
  unsigned char *b = make_idx(0x08, ndims, dims, data, ndata, &n);
  if (gz) write_gz(path, b, n);
  else write_bytes(path, b, n);
  free(b);
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
  closedir(d);
  return n;
}

#define ASSERT_ERR(call, err, needle)                                                      \
  do {                                                                                     \
    (err).msg[0] = 0;                                                                      \
    ck_assert_int_ne((call), 0);                                                           \
    ck_assert_msg(strstr((err).msg, (needle)) != NULL, "message '%s' lacks '%s'",          \
                  (err).msg, (needle));                                                    \
    ck_assert_msg(strchr((err).msg, '\n') == NULL, "message has a newline");               \
  } while (0)

/* ---- a counting, failing allocator ------------------------------------------------------ */

static struct {
  long allocs, frees, live;
  long fail_at;   // fail the fail_at-th allocation (1-based); 0 = never
  bool failed;
} hook;

static void *test_alloc(void *ud, void *ptr, size_t size) {
  (void)ud;
  if (size == 0) {
    if (ptr) hook.frees++, hook.live--;
    free(ptr);
    return NULL;
  }
  long k = ++hook.allocs;   // reallocs count as allocations too: both can fail
  if (hook.fail_at && k == hook.fail_at) {
    hook.failed = true;
    return NULL;
  }
  void *p = realloc(ptr, size);
  if (p && !ptr) hook.live++;
  return p;
}

static void hook_reset(long fail_at) {
  memset(&hook, 0, sizeof hook);
  hook.fail_at = fail_at;
  ts_set_allocator(test_alloc, NULL);
}

/* ---- core ----------------------------------------------------------------------------- */

START_TEST(test_fail_message) {
  TsErr e;
  ck_assert_int_eq(ts_fail(&e, "%s: %d", "file", 3), -1);
  ck_assert_str_eq(e.msg, "file: 3");
  ck_assert_int_eq(ts_fail(NULL, "x"), -1);
  ts_fail(&e, "a\nb\rc");
  ck_assert_str_eq(e.msg, "a b c");
  char big[2000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = 0;
  ts_fail(&e, "%s", big);
  ck_assert_uint_eq(strlen(e.msg), sizeof e.msg - 1);
}
END_TEST

START_TEST(test_alloc_basics) {
  for (size_t n = 0; n < 200; n += 13) {
    unsigned char *p = ts_aligned_alloc(n);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % 64, 0);
    for (size_t i = 0; i < n; i++) ck_assert_uint_eq(p[i], 0);
    ts_aligned_free(p);
  }
  ck_assert_ptr_null(ts_calloc(SIZE_MAX / 2, 4));
  int *z = ts_calloc(10, sizeof(int));
  ck_assert_ptr_nonnull(z);
  for (int i = 0; i < 10; i++) ck_assert_int_eq(z[i], 0);
  z = ts_realloc(z, 1000 * sizeof(int));
  ck_assert_ptr_nonnull(z);
  ts_free(z);
  ts_free(NULL);
  ts_aligned_free(NULL);
  double t0 = ts_now(), t1 = ts_now();
  ck_assert(t1 >= t0 && t0 > 0);
}
END_TEST

START_TEST(test_alloc_hook_counts) {
  uint32_t dims[3] = {3, 2, 2}, ldims[1] = {3};
  uint8_t px[12] = {0}, lb[3] = {0, 1, 2};
  put_idx(tpath("x.idx"), true, 3, dims, px, 12);
  put_idx(tpath("y.idx"), false, 1, ldims, lb, 3);
  hook_reset(0);
  TsDataset d;
  TsErr e;
  ck_assert_msg(ts_dataset_load(tpath("x.idx"), tpath("y.idx"), 255, 3, 4, &d, &e) == 0, "%s",
                e.msg);
  ck_assert_int_gt(hook.allocs, 0);
  ck_assert_int_gt(hook.live, 0);
  ts_dataset_free(&d);
  ck_assert_int_eq(hook.live, 0);
  ts_set_allocator(NULL, NULL);
}
END_TEST

/* Fail each allocation in turn: every call returns an error (never crashes), leaks nothing,
 * and succeeds once the failure point is past its last allocation. */
START_TEST(test_alloc_injected_failures) {
  uint32_t dims[3] = {3, 2, 2}, ldims[1] = {3};
  uint8_t px[12] = {0}, lb[3] = {0, 1, 2};
  put_idx(tpath("x.gz"), true, 3, dims, px, 12);
  put_idx(tpath("y.gz"), true, 1, ldims, lb, 3);
  TsErr e;
  bool ok = false;
  for (long k = 1; k < 100 && !ok; k++) {
    hook_reset(k);
    TsIdx x;
    int rc = ts_idx_load(tpath("x.gz"), &x, &e);
    if (rc == 0) {
      ck_assert(!hook.failed);
      ts_idx_free(&x);
      ok = true;
    } else {
      ck_assert(hook.failed);
      ck_assert_msg(strstr(e.msg, "out of memory") && strstr(e.msg, "x.gz"), "%s", e.msg);
    }
    ck_assert_int_eq(hook.live, 0);
  }
  ck_assert(ok);

  ok = false;
  for (long k = 1; k < 100 && !ok; k++) {
    hook_reset(k);
    TsDataset d;
    if (ts_dataset_load(tpath("x.gz"), tpath("y.gz"), 255, 3, 0, &d, &e) == 0) {
      ts_dataset_free(&d);
      ok = true;
    } else {
      ck_assert_msg(strstr(e.msg, "out of memory"), "%s", e.msg);
    }
    ck_assert_int_eq(hook.live, 0);
  }
  ck_assert(ok);

  // safetensors: write and read under the same injection
  float w[6] = {1, 2, 3, 4, 5, 6};
  int64_t ids[2] = {7, 8};
  TsStOut t[3] = {{"w", TS_F32, 2, {2, 3}, w}, {"ids", TS_I64, 1, {2}, ids},
                  {"v", TS_F32, 1, {3}, w}};
  const char *meta[] = {"format", "pt"};
  ok = false;
  for (long k = 1; k < 100 && !ok; k++) {
    hook_reset(k);
    if (ts_st_write(tpath("m.safetensors"), t, 3, meta, 1, &e) == 0) ok = true;
    else ck_assert_msg(strstr(e.msg, "out of memory"), "%s", e.msg);
    ck_assert_int_eq(hook.live, 0);
    ck_assert_int_le(count_entries(tmpdir), 3);   // x.gz y.gz and at most the target
  }
  ck_assert(ok);
  ok = false;
  for (long k = 1; k < 100 && !ok; k++) {
    hook_reset(k);
    TsStFile f;
    if (ts_st_read(tpath("m.safetensors"), &f, &e) == 0) {
      ck_assert_int_eq(f.ntensors, 3);
      ts_st_free(&f);
      ok = true;
    } else {
      ck_assert_msg(strstr(e.msg, "out of memory"), "%s", e.msg);
    }
    ck_assert_int_eq(hook.live, 0);
  }
  ck_assert(ok);

  hook_reset(1);
  TsPool *p = ts_pool_create(2, &e);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(e.msg, "out of memory"), "%s", e.msg);
  ts_set_allocator(NULL, NULL);
}
END_TEST

/* ---- IDX ------------------------------------------------------------------------------ */

START_TEST(test_idx_good) {
  uint32_t dims[3] = {3, 2, 4};
  uint8_t px[24];
  for (int i = 0; i < 24; i++) px[i] = (uint8_t)(i * 10);
  for (int gz = 0; gz < 2; gz++) {
    const char *p = tpath(gz ? "good.gz" : "good.idx");
    put_idx(p, gz, 3, dims, px, 24);
    TsIdx x;
    TsErr e;
    ck_assert_msg(ts_idx_load(p, &x, &e) == 0, "%s", e.msg);
    ck_assert_int_eq(x.ndims, 3);
    ck_assert_uint_eq(x.dims[0], 3);
    ck_assert_uint_eq(x.dims[1], 2);
    ck_assert_uint_eq(x.dims[2], 4);
    ck_assert_uint_eq(x.count, 3);
    ck_assert_uint_eq(x.item_size, 8);
    ck_assert_mem_eq(x.data, px, 24);
    ts_idx_free(&x);
    ck_assert_ptr_null(x.data);
    ts_idx_free(&x);   // twice is harmless
  }
  // An empty set is well formed.
  uint32_t zd[2] = {0, 5};
  put_idx(tpath("empty.idx"), false, 2, zd, NULL, 0);
  TsIdx x;
  TsErr e;
  ck_assert_msg(ts_idx_load(tpath("empty.idx"), &x, &e) == 0, "%s", e.msg);
  ck_assert_uint_eq(x.count, 0);
  ck_assert_uint_eq(x.item_size, 5);
  ts_idx_free(&x);
}
END_TEST

START_TEST(test_idx_bad_header) {
  TsIdx x;
  TsErr e;
  ASSERT_ERR(ts_idx_load(tpath("nope.gz"), &x, &e), e, "No such file");
  ck_assert_msg(strstr(e.msg, "nope.gz"), "%s", e.msg);
  ck_assert_ptr_null(x.data);
  ASSERT_ERR(ts_idx_load(tmpdir, &x, &e), e, "directory");

  write_bytes(tpath("empty"), "", 0);
  ASSERT_ERR(ts_idx_load(tpath("empty"), &x, &e), e, "truncated");
  write_bytes(tpath("short"), "\0\0", 2);
  ASSERT_ERR(ts_idx_load(tpath("short"), &x, &e), e, "truncated");

  unsigned char magic[] = {0x12, 0x34, 0x08, 0x01, 0, 0, 0, 0};
  write_bytes(tpath("magic"), magic, sizeof magic);
  ASSERT_ERR(ts_idx_load(tpath("magic"), &x, &e), e, "wrong magic");
  ck_assert_msg(strstr(e.msg, "magic"), "%s", e.msg);

  uint32_t dims[2] = {1, 1};
  size_t n;
  unsigned char *b = make_idx(0x0D, 2, dims, (const uint8_t *)"abcd", 4, &n);
  write_bytes(tpath("float.idx"), b, n);
  free(b);
  ASSERT_ERR(ts_idx_load(tpath("float.idx"), &x, &e), e, "unsupported IDX element type 0x0d");
  b = make_idx(0x42, 2, dims, (const uint8_t *)"a", 1, &n);
  write_gz(tpath("weird.gz"), b, n);
  free(b);
  ASSERT_ERR(ts_idx_load(tpath("weird.gz"), &x, &e), e, "unknown IDX element type 0x42");

  b = make_idx(0x08, 0, dims, NULL, 0, &n);
  write_bytes(tpath("nd0"), b, n);
  free(b);
  ASSERT_ERR(ts_idx_load(tpath("nd0"), &x, &e), e, "number of dims 0");
  uint32_t d5[5] = {1, 1, 1, 1, 1};
  b = make_idx(0x08, 5, d5, (const uint8_t *)"a", 1, &n);
  write_bytes(tpath("nd5"), b, n);
  free(b);
  ASSERT_ERR(ts_idx_load(tpath("nd5"), &x, &e), e, "number of dims 5");

  // Dims cut short.
  b = make_idx(0x08, 3, (uint32_t[]){1, 2, 3}, NULL, 0, &n);
  write_bytes(tpath("dims"), b, n - 3);
  free(b);
  ASSERT_ERR(ts_idx_load(tpath("dims"), &x, &e), e, "truncated");
}
END_TEST

START_TEST(test_idx_sizes) {
  TsIdx x;
  TsErr e;
  uint32_t big[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 2};
  put_idx(tpath("ovf"), false, 4, big, NULL, 0);
  ASSERT_ERR(ts_idx_load(tpath("ovf"), &x, &e), e, "overflow");
  uint32_t huge[3] = {65536, 65536, 2};   // 8 GiB
  put_idx(tpath("huge"), false, 3, huge, NULL, 0);
  ASSERT_ERR(ts_idx_load(tpath("huge"), &x, &e), e, "4 GiB limit");
  // Just under the limit but holding 10 bytes: truncated, without allocating 4 GiB first.
  uint32_t lie[2] = {65536, 65535};
  hook_reset(0);
  put_idx(tpath("lie"), true, 2, lie, (const uint8_t *)"0123456789", 10);
  ASSERT_ERR(ts_idx_load(tpath("lie"), &x, &e), e, "truncated");
  ck_assert_msg(strstr(e.msg, "expected 4294901760 bytes of data, got 10"), "%s", e.msg);
  ts_set_allocator(NULL, NULL);
}
END_TEST

START_TEST(test_idx_truncated_trailing) {
  uint32_t dims[2] = {4, 3};
  uint8_t px[13] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};
  TsIdx x;
  TsErr e;
  for (int gz = 0; gz < 2; gz++) {
    put_idx(tpath("t"), gz, 2, dims, px, 10);
    ASSERT_ERR(ts_idx_load(tpath("t"), &x, &e), e, "truncated");
    ck_assert_msg(strstr(e.msg, "expected 12 bytes of data, got 10"), "%s", e.msg);
    ck_assert_ptr_null(x.data);
    put_idx(tpath("t"), gz, 2, dims, px, 13);
    ASSERT_ERR(ts_idx_load(tpath("t"), &x, &e), e, "trailing bytes");
  }
  // A gzip file cut in the middle of its stream.
  uint8_t many[5000];
  for (int i = 0; i < 5000; i++) many[i] = (uint8_t)(i * 7 % 251);
  uint32_t d2[2] = {50, 100};
  put_idx(tpath("cut.gz"), true, 2, d2, many, 5000);
  size_t n;
  unsigned char *b = read_bytes(tpath("cut.gz"), &n);
  write_bytes(tpath("cut.gz"), b, n / 2);
  ASSERT_ERR(ts_idx_load(tpath("cut.gz"), &x, &e), e, "truncated gzip stream");
  // Only the gzip trailer (CRC, length) missing: all data is there, the stream is not whole.
  write_bytes(tpath("cut.gz"), b, n - 4);
  ASSERT_ERR(ts_idx_load(tpath("cut.gz"), &x, &e), e, "gzip");
  free(b);
}
END_TEST

START_TEST(test_idx_corrupt_gzip) {
  uint8_t data[20000];
  uint32_t s = 12345;
  for (int i = 0; i < 20000; i++) {
    s = s * 1103515245u + 12345u;
    data[i] = (uint8_t)((s >> 16) % 16);   // compressible but not trivially
  }
  uint32_t dims[2] = {200, 100};
  put_idx(tpath("c.gz"), true, 2, dims, data, 20000);
  size_t n;
  unsigned char *b = read_bytes(tpath("c.gz"), &n);
  ck_assert_uint_gt(n, 200);
  for (size_t i = n / 2; i < n / 2 + 16; i++) b[i] ^= 0x5A;
  write_bytes(tpath("c.gz"), b, n);
  free(b);
  TsIdx x;
  TsErr e;
  ASSERT_ERR(ts_idx_load(tpath("c.gz"), &x, &e), e, "corrupt gzip stream");
  ck_assert_msg(strstr(e.msg, "c.gz"), "%s", e.msg);

  // A flipped CRC: the data inflates fine, the check at the end fails.
  put_idx(tpath("crc.gz"), true, 2, dims, data, 20000);
  b = read_bytes(tpath("crc.gz"), &n);
  b[n - 6] ^= 0xFF;
  write_bytes(tpath("crc.gz"), b, n);
  free(b);
  ASSERT_ERR(ts_idx_load(tpath("crc.gz"), &x, &e), e, "corrupt gzip stream");
}
END_TEST

/* ---- datasets ------------------------------------------------------------------------- */

START_TEST(test_dataset_good) {
  uint32_t dims[3] = {3, 2, 2}, ldims[1] = {3};
  uint8_t px[12] = {0, 255, 51, 102, 1, 2, 3, 4, 5, 6, 7, 8}, lb[3] = {2, 0, 1};
  put_idx(tpath("x.gz"), true, 3, dims, px, 12);
  put_idx(tpath("y"), false, 1, ldims, lb, 3);
  TsDataset d;
  TsErr e;
  ck_assert_msg(ts_dataset_load(tpath("x.gz"), tpath("y"), 255.0f, 3, 4, &d, &e) == 0, "%s",
                e.msg);
  ck_assert_uint_eq(d.count, 3);
  ck_assert_uint_eq(d.item_size, 4);
  ck_assert_int_eq(d.item_ndims, 2);
  ck_assert_uint_eq(d.item_dims[0], 2);
  ck_assert_uint_eq(d.item_dims[1], 2);
  float xf[12];
  ts_dataset_gather(&d, 0, 3, xf);   /* 3 samples of 4 */
  for (int i = 0; i < 12; i++) ck_assert_float_eq(xf[i], (float)px[i] / 255.0f);
  ck_assert_float_eq(xf[1], 1.0f);
  ts_dataset_gather(&d, 2, 1, xf);
  for (int i = 0; i < 4; i++) ck_assert_float_eq(xf[i], (float)px[8 + i] / 255.0f);
  for (int i = 0; i < 3; i++) ck_assert_int_eq(d.y[i], lb[i]);
  ts_dataset_free(&d);
  ck_assert_ptr_null(d.x);
}
END_TEST

START_TEST(test_dataset_bad) {
  uint32_t dims[3] = {3, 2, 2}, l3[1] = {3}, l2[1] = {2}, l2d[2] = {3, 1};
  uint8_t px[12] = {0}, lb[3] = {0, 5, 1};
  put_idx(tpath("x"), false, 3, dims, px, 12);
  put_idx(tpath("y3bad"), false, 1, l3, lb, 3);
  put_idx(tpath("y2"), false, 1, l2, lb, 2);
  put_idx(tpath("y2d"), false, 2, l2d, lb, 3);
  TsDataset d;
  TsErr e;
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("y2"), 255, 10, 0, &d, &e), e,
             "3 images but");
  ck_assert_msg(strstr(e.msg, "has 2 labels"), "%s", e.msg);
  ck_assert_ptr_null(d.x);
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("y3bad"), 255, 3, 0, &d, &e), e,
             "label 5 at index 1 is out of range [0, 3)");
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("y2d"), 255, 10, 0, &d, &e), e, "1-D");
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("y3bad"), 255, 10, 5, &d, &e), e,
             "2x2 = 4 values but 5 were expected");
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("y3bad"), 0, 10, 0, &d, &e), e, "scale");
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("y3bad"), 255, 0, 0, &d, &e), e, "classes");
  ASSERT_ERR(ts_dataset_load(tpath("x"), tpath("missing"), 255, 10, 0, &d, &e), e, "missing");
  ASSERT_ERR(ts_dataset_load(tpath("y2"), tpath("y2"), 255, 10, 0, &d, &e), e, "2 dims");
}
END_TEST

START_TEST(test_dataset_fashion_mnist) {
  const char *xi = FMNIST "/train-images-idx3-ubyte.gz", *yl = FMNIST "/train-labels-idx1-ubyte.gz";
  if (access(xi, R_OK) || access(yl, R_OK)) {
    fprintf(stderr, "fashion-mnist not installed; skipping\n");
    return;
  }
  TsDataset d;
  TsErr e;
  ck_assert_msg(ts_dataset_load(xi, yl, 255.0f, 10, 784, &d, &e) == 0, "%s", e.msg);
  ck_assert_uint_eq(d.count, 60000);
  ck_assert_uint_eq(d.item_size, 784);
  ck_assert_uint_eq(d.item_dims[0], 28);
  ck_assert_uint_eq(d.item_dims[1], 28);
  long hist[10] = {0};
  for (size_t i = 0; i < d.count; i++) {
    ck_assert(d.y[i] >= 0 && d.y[i] < 10);
    hist[d.y[i]]++;
  }
  for (int c = 0; c < 10; c++) ck_assert_int_eq(hist[c], 6000);   // Fashion-MNIST is balanced
  float lo = 1, hi = 0;
  float *xf = malloc(sizeof(float) * d.item_size);
  for (size_t k = 0; k < d.count; k++) {
    ts_dataset_gather(&d, k, 1, xf);
    for (size_t i = 0; i < d.item_size; i++) {
      if (xf[i] < lo) lo = xf[i];
      if (xf[i] > hi) hi = xf[i];
    }
  }
  free(xf);
  ck_assert_float_eq(lo, 0.0f);
  ck_assert_float_eq(hi, 1.0f);
  ts_dataset_free(&d);
  const char *ti = FMNIST "/t10k-images-idx3-ubyte.gz", *tl = FMNIST "/t10k-labels-idx1-ubyte.gz";
  if (!access(ti, R_OK) && !access(tl, R_OK)) {
    ck_assert_msg(ts_dataset_load(ti, tl, 255.0f, 10, 784, &d, &e) == 0, "%s", e.msg);
    ck_assert_uint_eq(d.count, 10000);
    ts_dataset_free(&d);
  }
}
END_TEST

/* ---- RNG ------------------------------------------------------------------------------ */

START_TEST(test_rng_reference) {
  // pcg32-demo's first outputs for pcg32_srandom_r(&rng, 42, 54).
  static const uint32_t want[6] = {0xa15c02b7, 0x7b47f409, 0xba1d3330,
                                   0x83d2f293, 0xbfa4784b, 0xcbed606e};
  TsRng r;
  ts_rng_seed(&r, 42, 54);
  for (int i = 0; i < 6; i++) ck_assert_uint_eq(ts_rng_u32(&r), want[i]);
}
END_TEST

START_TEST(test_rng_determinism) {
  TsRng a, b, c;
  ts_rng_seed(&a, 7, 1);
  ts_rng_seed(&b, 7, 1);
  ts_rng_seed(&c, 7, 2);
  int same_c = 0;
  for (int i = 0; i < 1000; i++) {
    uint32_t x = ts_rng_u32(&a);
    ck_assert_uint_eq(x, ts_rng_u32(&b));
    same_c += x == ts_rng_u32(&c);
  }
  ck_assert_int_lt(same_c, 3);
  TsRng d = a;   // a copy replays exactly, normals included
  for (int i = 0; i < 100; i++) ck_assert_float_eq(ts_rng_normal(&a), ts_rng_normal(&d));
}
END_TEST

START_TEST(test_rng_ranges) {
  TsRng r;
  ts_rng_seed(&r, 1, 0);
  const uint32_t ns[] = {1, 2, 7, 1000, 0x80000001u, 0xFFFFFFFFu};
  for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++)
    for (int i = 0; i < 10000; i++) ck_assert_uint_lt(ts_rng_below(&r, ns[k]), ns[k]);
  ck_assert_uint_eq(ts_rng_below(&r, 0), 0);
  long hist[7] = {0};
  for (int i = 0; i < 70000; i++) hist[ts_rng_below(&r, 7)]++;
  for (int i = 0; i < 7; i++) ck_assert_msg(labs(hist[i] - 10000) < 500, "bucket %d: %ld", i, hist[i]);
  double sum = 0, sum2 = 0;
  for (int i = 0; i < 100000; i++) {
    float u = ts_rng_uniform(&r);
    ck_assert(u >= 0.0f && u < 1.0f);
    float g = ts_rng_normal(&r);
    ck_assert(isfinite(g));
    sum += g, sum2 += (double)g * g;
  }
  double mean = sum / 100000, var = sum2 / 100000 - mean * mean;
  ck_assert_msg(fabs(mean) < 0.02 && fabs(var - 1) < 0.03, "mean %g var %g", mean, var);
}
END_TEST

/* the jumped-ahead fill gives the one-call-per-draw values, bit for bit, and leaves the
 * generator where those calls would (every length around the 8-lane blocks) */
START_TEST(test_rng_uniform_fill) {
  static float got[100];
  for (int n = 0; n <= 41; n++) {
    TsRng a, b;
    ts_rng_seed(&a, 7, (uint64_t)n), ts_rng_seed(&b, 7, (uint64_t)n);
    const double scale = n % 2 ? 0.0357142857 : 1.5;
    ts_rng_uniform_fill(&a, got, n, scale);
    for (int i = 0; i < n; i++) {
      float want = (float)((2 * ts_rng_uniform(&b) - 1) * scale);
      ck_assert_msg(memcmp(&got[i], &want, sizeof want) == 0, "n %d, draw %d: %a, not %a", n, i, got[i], want);
    }
    ck_assert_uint_eq(ts_rng_u32(&a), ts_rng_u32(&b));
  }
}
END_TEST

START_TEST(test_rng_shuffle) {
  enum { N = 1000 };
  uint32_t a[N], b[N];
  for (int i = 0; i < N; i++) a[i] = b[i] = (uint32_t)i;
  TsRng r1, r2;
  ts_rng_seed(&r1, 3, 3);
  ts_rng_seed(&r2, 3, 3);
  ts_shuffle_u32(&r1, a, N);
  ts_shuffle_u32(&r2, b, N);
  ck_assert_mem_eq(a, b, sizeof a);
  int seen[N] = {0}, fixed = 0;
  for (int i = 0; i < N; i++) {
    ck_assert_uint_lt(a[i], N);
    seen[a[i]]++;
    fixed += a[i] == (uint32_t)i;
  }
  for (int i = 0; i < N; i++) ck_assert_int_eq(seen[i], 1);
  ck_assert_int_lt(fixed, 10);
  ts_shuffle_u32(&r1, a, 0);
  ts_shuffle_u32(&r1, a, 1);
}
END_TEST

/* ---- thread pool ---------------------------------------------------------------------- */

typedef struct Tally {
  _Atomic int hits[1000];
  pthread_t who[1000];
  TsPool *pool;
  _Atomic long inner;
} Tally;

static void tally_tile(void *ctx, int64_t t) {
  Tally *c = ctx;
  atomic_fetch_add(&c->hits[t], 1);
  c->who[t] = pthread_self();
}

static void inner_tile(void *ctx, int64_t t) {
  (void)t;
  atomic_fetch_add(&((Tally *)ctx)->inner, 1);
}

static void outer_tile(void *ctx, int64_t t) {
  Tally *c = ctx;
  atomic_fetch_add(&c->hits[t], 1);
  ts_pool_run(c->pool, inner_tile, c, 5);   // nested: runs serially, still all 5 tiles
  ts_parallel_for(inner_tile, c, 3);        // and through the global pool too
}

START_TEST(test_pool_every_tile_once) {
  static Tally c;
  for (int nt = 1; nt <= 2; nt++) {
    TsErr e;
    TsPool *p = ts_pool_create(nt, &e);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(ts_pool_threads(p), nt);
    const int64_t sizes[] = {0, 1, 7, 1000};
    for (int round = 0; round < 3; round++)
      for (size_t k = 0; k < 4; k++) {
        memset(&c, 0, sizeof c);
        ts_pool_run(p, tally_tile, &c, sizes[k]);
        for (int64_t t = 0; t < 1000; t++)
          ck_assert_int_eq(atomic_load(&c.hits[t]), t < sizes[k] ? 1 : 0);
        // one thread: every tile on the caller
        for (int64_t t = 0; nt == 1 && t < sizes[k]; t++) ck_assert(pthread_equal(c.who[t], pthread_self()));
        if (round == 1) usleep(3000);   // let the workers fall asleep: the futex path
      }
    ts_pool_destroy(p);
  }
}
END_TEST

/* A worker that is not there (descheduled on a busy machine; here: stuck in a long tile) does
 * not hold the call up: the caller runs the stuck worker's unclaimed tiles itself. Tile 1 is
 * the worker's first claim (the caller waits 50 ms in tile 0 to give the worker time to wake
 * and claim it); when the worker runs it, it stalls 300 ms, and every other tile
 * must run on the caller meanwhile. Then a call after it: the stalled worker, when it comes
 * back, must not run a tile of a job that is over (every tile exactly once, every round). */
typedef struct Stall {
  _Atomic int hits[200];
  pthread_t who[200];
  pthread_t caller;
  _Atomic int stalled;
} Stall;

static void stall_tile(void *ctx, int64_t t) {
  Stall *c = ctx;
  atomic_fetch_add(&c->hits[t], 1);
  c->who[t] = pthread_self();
  if (t == 1 && !pthread_equal(pthread_self(), c->caller)) {
    atomic_store(&c->stalled, 1);
    usleep(300000);
  } else if (t == 0 && pthread_equal(pthread_self(), c->caller)) {
    usleep(50000);   /* time for the worker to wake and claim tile 1 */
  }
}

START_TEST(test_pool_steals_from_a_stalled_worker) {
  static Stall c;
  TsErr e;
  TsPool *p = ts_pool_create(2, &e);
  ck_assert_ptr_nonnull(p);
  int stalls = 0;
  for (int round = 0; round < 6; round++) {
    memset(&c, 0, sizeof c);
    c.caller = pthread_self();
    ts_pool_run(p, stall_tile, &c, 200);
    for (int t = 0; t < 200; t++) ck_assert_int_eq(atomic_load(&c.hits[t]), 1);
    if (!atomic_load(&c.stalled)) continue;   /* the caller took tile 1 first: nothing stalled */
    stalls++;
    int on_caller = 0;
    for (int t = 0; t < 200; t++) on_caller += pthread_equal(c.who[t], c.caller) != 0;
    /* the worker ran tile 1, and perhaps a few before it noticed nothing: the caller the rest */
    ck_assert_msg(on_caller >= 190, "round %d: the caller ran only %d of 200 tiles while the worker stalled", round,
                  on_caller);
  }
  ck_assert_msg(stalls > 0, "the worker never ran tile 1 in 6 rounds");
  ts_pool_destroy(p);
}
END_TEST

START_TEST(test_pool_nested_and_global) {
  static Tally c;
  TsErr e;
  TsPool *p = ts_pool_create(2, &e);
  ck_assert_ptr_nonnull(p);
  memset(&c, 0, sizeof c);
  c.pool = p;
  ts_pool_set_global(p);
  ts_parallel_for(outer_tile, &c, 100);
  for (int t = 0; t < 100; t++) ck_assert_int_eq(atomic_load(&c.hits[t]), 1);
  ck_assert_int_eq(atomic_load(&c.inner), 100 * 8);
  ts_pool_destroy(p);   // also clears the global pool
  memset(&c, 0, sizeof c);
  ts_parallel_for(tally_tile, &c, 10);   // no pool: serial on this thread
  for (int t = 0; t < 10; t++) {
    ck_assert_int_eq(atomic_load(&c.hits[t]), 1);
    ck_assert(pthread_equal(c.who[t], pthread_self()));
  }
  ts_pool_run(NULL, tally_tile, &c, 10);
  ck_assert_int_eq(atomic_load(&c.hits[9]), 2);
  TsPool *all = ts_pool_create(0, &e);
  ck_assert_ptr_nonnull(all);
  ck_assert_int_eq(ts_pool_threads(all), (int)sysconf(_SC_NPROCESSORS_ONLN));
  ts_pool_destroy(all);
  ts_pool_destroy(NULL);
  ck_assert_ptr_null(ts_pool_create(100000, &e));
  ck_assert_msg(strstr(e.msg, "threads"), "%s", e.msg);
}
END_TEST

static void sum_tile(void *ctx, int64_t t) { atomic_fetch_add((_Atomic long *)ctx, t); }

/* Many quick calls (the training loop's pattern), with the overhead printed for the record. */
START_TEST(test_pool_many_calls) {
  TsErr e;
  TsPool *p = ts_pool_create(2, &e);
  ck_assert_ptr_nonnull(p);
  _Atomic long sum = 0;
  const int calls = 20000;
  double t0 = ts_now();
  for (int i = 0; i < calls; i++) ts_pool_run(p, sum_tile, &sum, 4);
  double per = (ts_now() - t0) / calls;
  ck_assert_int_eq(atomic_load(&sum), (long)calls * 6);
  fprintf(stderr, "pool: %.2f us per ts_pool_run call (2 threads, 4 empty tiles)\n", per * 1e6);
  ck_assert_msg(per < 5e-3, "%.1f us per call", per * 1e6);   // sanity only: load varies
  ts_pool_destroy(p);
}
END_TEST

/* ---- safetensors ---------------------------------------------------------------------- */

/* A raw file: u64 header length, the header text, then `ndata` data bytes. */
static void put_st(const char *path, const char *header, const void *data, size_t ndata) {
  size_t hn = strlen(header), n = 8 + hn + ndata;
  unsigned char *b = malloc(n);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hn >> (8 * i));
  memcpy(b + 8, header, hn);
  if (ndata) memcpy(b + 8 + hn, data, ndata);
  write_bytes(path, b, n);
  free(b);
}

START_TEST(test_st_round_trip) {
  float w[6] = {1.5f, -2, 3e-8f, 4e30f, -0.0f, 6};
  int64_t ids[4] = {-1, 0, 1LL << 40, INT64_MAX};
  float s = 42;
  TsStOut t[4] = {
    {"layer.0.weight", TS_F32, 2, {2, 3}, w},
    {"ids \"quoted\"\n", TS_I64, 1, {4}, ids},
    {"scalar", TS_F32, 0, {0}, &s},
    {"empty", TS_F32, 2, {0, 3}, NULL},
  };
  const char *meta[] = {"format", "pt", "note", "tab\there \\ \"q\" \x01 é"};
  TsErr e;
  const char *path = tpath("model.safetensors");
  ck_assert_msg(ts_st_write(path, t, 4, meta, 2, &e) == 0, "%s", e.msg);
  ck_assert_int_eq(count_entries(tmpdir), 1);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0644);

  size_t n;
  unsigned char *raw = read_bytes(path, &n);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = hl << 8 | raw[i];
  ck_assert_uint_eq(hl % 8, 0);
  ck_assert_uint_eq(n, 8 + hl + 6 * 4 + 4 * 8 + 4);
  ck_assert(memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0);
  ck_assert(raw[8 + hl - 1] == '}' || raw[8 + hl - 1] == ' ');   // padded with spaces
  free(raw);

  TsStFile f;
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  ck_assert_int_eq(f.ntensors, 4);
  ck_assert_str_eq(ts_st_meta(&f, "format"), "pt");
  ck_assert_str_eq(ts_st_meta(&f, "note"), meta[3]);
  ck_assert_ptr_null(ts_st_meta(&f, "missing"));
  const TsTensor *a = ts_st_find(&f, "layer.0.weight");
  ck_assert_ptr_nonnull(a);
  ck_assert_int_eq(a->dtype, TS_F32);
  ck_assert_int_eq(a->ndims, 2);
  ck_assert_int_eq(a->shape[0], 2);
  ck_assert_int_eq(a->shape[1], 3);
  ck_assert_uint_eq(a->nbytes, sizeof w);
  ck_assert_mem_eq(a->data, w, sizeof w);
  float back[6];
  ck_assert_int_eq(ts_tensor_to_f32(a, back, 6, &e), 0);
  ck_assert_mem_eq(back, w, sizeof w);
  const TsTensor *b = ts_st_find(&f, "ids \"quoted\"\n");
  ck_assert_ptr_nonnull(b);
  ck_assert_int_eq(b->dtype, TS_I64);
  ck_assert_mem_eq(b->data, ids, sizeof ids);
  ASSERT_ERR(ts_tensor_to_f32(b, back, 4, &e), e, "not a float type");
  ASSERT_ERR(ts_tensor_to_f32(a, back, 5, &e), e, "has 6 elements, 5 expected");
  const TsTensor *c = ts_st_find(&f, "scalar");
  ck_assert_int_eq(c->ndims, 0);
  ck_assert_uint_eq(c->nbytes, 4);
  ck_assert_mem_eq(c->data, &s, 4);
  const TsTensor *z = ts_st_find(&f, "empty");
  ck_assert_int_eq(z->ndims, 2);
  ck_assert_int_eq(z->shape[0], 0);
  ck_assert_uint_eq(z->nbytes, 0);
  ck_assert_ptr_null(ts_st_find(&f, "nope"));
  for (int i = 1; i < f.ntensors; i++)   // data-offset order
    ck_assert((const char *)f.tensors[i - 1].data + f.tensors[i - 1].nbytes ==
              (const char *)f.tensors[i].data);
  ts_st_free(&f);

  // No tensors, no metadata: "{}" padded to 8.
  ck_assert_msg(ts_st_write(path, NULL, 0, NULL, 0, &e) == 0, "%s", e.msg);
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  ck_assert_int_eq(f.ntensors, 0);
  ck_assert_uint_eq(f.size, 16);
  ts_st_free(&f);
}
END_TEST

/* ts_st_write_fill: the bytes of tensors without data made as they are written, one reused
 * buffer (a checkpoint's transposes) */
static void fill_scaled(void *arg, int i, void *dst) {
  const float *const *src = arg;                       /* src[i]: tensor i's source, reversed... */
  int64_t n = i == 0 ? 5 : 2;
  for (int64_t k = 0; k < n; k++) ((float *)dst)[k] = src[i][n - 1 - k] * (float)(i + 2);   /* ...and scaled */
}
START_TEST(test_st_write_fill) {
  float a[5] = {1, 2, 3, 4, 5}, b[2] = {-1, 7};
  const float *src[3] = {a, NULL, b};
  TsStOut t[3] = {
    {"a", TS_F32, 1, {5}, NULL},
    {"plain", TS_F32, 1, {2}, b},
    {"b", TS_F32, 2, {1, 2}, NULL},   /* smaller than the buffer: reused */
  };
  TsErr e;
  const char *path = tpath("fill.safetensors");
  ck_assert_msg(ts_st_write_fill(path, t, 3, NULL, 0, fill_scaled, src, &e) == 0, "%s", e.msg);
  TsStFile f;
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  float want_a[5] = {10, 8, 6, 4, 2}, want_b[2] = {28, -4};
  ck_assert_mem_eq(ts_st_find(&f, "a")->data, want_a, sizeof want_a);
  ck_assert_mem_eq(ts_st_find(&f, "plain")->data, b, sizeof b);
  ck_assert_mem_eq(ts_st_find(&f, "b")->data, want_b, sizeof want_b);
  ck_assert(a[0] == 1 && b[0] == -1);   /* the sources are untouched */
  ts_st_free(&f);
  ASSERT_ERR(ts_st_write(path, t, 3, NULL, 0, &e), e, "no data");   /* no fill: no data is an error */
}
END_TEST

START_TEST(test_st_write_bad_args) {
  float w[2] = {1, 2};
  TsErr e;
  TsStOut dup[2] = {{"a", TS_F32, 1, {2}, w}, {"a", TS_F32, 1, {2}, w}};
  ASSERT_ERR(ts_st_write(tpath("o"), dup, 2, NULL, 0, &e), e, "duplicate tensor name 'a'");
  TsStOut res = {"__metadata__", TS_F32, 1, {2}, w};
  ASSERT_ERR(ts_st_write(tpath("o"), &res, 1, NULL, 0, &e), e, "reserved");
  TsStOut neg = {"n", TS_F32, 1, {-2}, w};
  ASSERT_ERR(ts_st_write(tpath("o"), &neg, 1, NULL, 0, &e), e, "shape");
  TsStOut nod = {"n", TS_F32, 1, {2}, NULL};
  ASSERT_ERR(ts_st_write(tpath("o"), &nod, 1, NULL, 0, &e), e, "no data");
  TsStOut badt = {"n", (TsDtype)99, 1, {2}, w};
  ASSERT_ERR(ts_st_write(tpath("o"), &badt, 1, NULL, 0, &e), e, "dtype");
  TsStOut dims = {"n", TS_F32, 9, {1}, w};
  ASSERT_ERR(ts_st_write(tpath("o"), &dims, 1, NULL, 0, &e), e, "9 dims");
  ck_assert_int_eq(count_entries(tmpdir), 0);
}
END_TEST

START_TEST(test_st_atomic) {
  float big[1000], small[2] = {7, 8};
  for (int i = 0; i < 1000; i++) big[i] = (float)i;
  TsStOut tb = {"w", TS_F32, 1, {1000}, big}, ts = {"w", TS_F32, 1, {2}, small};
  TsErr e;
  // A folder that does not exist: a clean failure naming the path, nothing created.
  ASSERT_ERR(ts_st_write(tpath("no/such/dir/m.safetensors"), &tb, 1, NULL, 0, &e), e,
             "No such file");
  ck_assert_msg(strstr(e.msg, "m.safetensors"), "%s", e.msg);
  ck_assert_int_eq(count_entries(tmpdir), 0);

  // A folder we may not write to (meaningless as root, who may write anywhere).
  mkdir(tpath("ro"), 0555);
  if (access(tpath("ro"), W_OK) != 0) {
    ASSERT_ERR(ts_st_write(tpath("ro/m.safetensors"), &tb, 1, NULL, 0, &e), e,
               "Permission denied");
    ck_assert_int_eq(count_entries(tpath("ro")), 0);
  }

  // Overwriting replaces the file whole (a smaller file leaves no tail of the bigger one).
  const char *path = tpath("m.safetensors");
  ck_assert_msg(ts_st_write(path, &tb, 1, NULL, 0, &e) == 0, "%s", e.msg);
  chmod(path, 0600);
  ck_assert_msg(ts_st_write(path, &ts, 1, NULL, 0, &e) == 0, "%s", e.msg);
  struct stat st;
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_int_eq(st.st_mode & 0777, 0600);   // the target's mode is kept
  TsStFile f;
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  ck_assert_int_eq(f.tensors[0].shape[0], 2);
  ck_assert_mem_eq(f.tensors[0].data, small, sizeof small);
  size_t small_size = f.size;
  ts_st_free(&f);
  ck_assert_int_eq(count_entries(tmpdir), 2);   // ro/ and the file

  // A write that fails half way (file size limit): the old file stays, the temp goes.
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = 1024;
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  int rc = ts_st_write(path, &tb, 1, NULL, 0, &e);
  setrlimit(RLIMIT_FSIZE, &old);
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strstr(e.msg, "write of the temporary file"), "%s", e.msg);
  ck_assert_int_eq(count_entries(tmpdir), 2);
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  ck_assert_uint_eq(f.size, small_size);
  ts_st_free(&f);

  // A path with no folder part writes in the current folder.
  char cwd[512];
  ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
  ck_assert_int_eq(chdir(tmpdir), 0);
  ck_assert_msg(ts_st_write("here.safetensors", &ts, 1, NULL, 0, &e) == 0, "%s", e.msg);
  ck_assert_int_eq(chdir(cwd), 0);
  ck_assert_int_eq(access(tpath("here.safetensors"), R_OK), 0);
}
END_TEST

static void expect_st_error(const char *header, const void *data, size_t ndata,
                            const char *needle) {
  const char *p = tpath("bad.safetensors");
  put_st(p, header, data, ndata);
  TsStFile f;
  TsErr e;
  e.msg[0] = 0;
  int rc = ts_st_read(p, &f, &e);
  ck_assert_msg(rc != 0, "accepted: %s", header);
  ck_assert_msg(strstr(e.msg, needle) && strstr(e.msg, "bad.safetensors"),
                "header %s: message '%s' lacks '%s'", header, e.msg, needle);
  ck_assert_ptr_null(f.buf);
}

START_TEST(test_st_reader_rejects) {
  unsigned char d[64] = {0};
  TsStFile f;
  TsErr e;
  // Files too short, header length beyond the file or absurd.
  write_bytes(tpath("tiny"), "\x02\0\0", 3);
  ASSERT_ERR(ts_st_read(tpath("tiny"), &f, &e), e, "truncated");
  ASSERT_ERR(ts_st_read(tpath("absent"), &f, &e), e, "No such file");
  unsigned char hdr[12] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' '};
  write_bytes(tpath("long"), hdr, sizeof hdr);
  ASSERT_ERR(ts_st_read(tpath("long"), &f, &e), e, "larger than the file");
  hdr[7] = 0x80;
  write_bytes(tpath("huge"), hdr, sizeof hdr);
  ASSERT_ERR(ts_st_read(tpath("huge"), &f, &e), e, "limit");
  // A good file, cut short: its tensors no longer fit.
  float w[4] = {1, 2, 3, 4};
  TsStOut t = {"w", TS_F32, 1, {4}, w};
  ck_assert_int_eq(ts_st_write(tpath("cut"), &t, 1, NULL, 0, &e), 0);
  size_t n;
  unsigned char *raw = read_bytes(tpath("cut"), &n);
  write_bytes(tpath("cut"), raw, n - 3);
  free(raw);
  ASSERT_ERR(ts_st_read(tpath("cut"), &f, &e), e, "out of bounds");

  // Bad JSON.
  expect_st_error("", d, 0, "got the end of the header");
  expect_st_error("[]", d, 0, "expected '{'");
  expect_st_error("{", d, 0, "bad header JSON");
  expect_st_error("{}x", d, 0, "unexpected text after");
  expect_st_error("{}{}", d, 0, "unexpected text after");
  expect_st_error("{\"a\":1}", d, 0, "expected '{'");
  expect_st_error("{\"a\" {}}", d, 0, "expected ':'");
  expect_st_error("{a:{}}", d, 0, "expected a string");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",}}", d, 0, "expected a string");
  expect_st_error("{\"a\":{\"dtype\":\"F32\" \"shape\":[]}}", d, 0, "expected ','");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}", d, 4,
                  "expected an integer");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", d, 4,
                  "expected an integer");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", d, 4,
                  "leading zero");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", d, 4,
                  "negative");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],"
                  "\"data_offsets\":[0,4]}}", d, 4, "too large");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
                  d, 4, "unknown field \"x\"");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\"}}", d, 4, "duplicate \"dtype\"");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", d, 4, "missing \"data_offsets\"");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", d, 4,
                  "[begin, end]");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", d, 4,
                  "more than 2");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                  "\"data_offsets\":[0,4]}}", d, 4, "more than 8");
  expect_st_error("{\"a\\q\":{}}", d, 0, "bad escape");
  expect_st_error("{\"a\\u12\":{}}", d, 0, "bad \\u escape");
  expect_st_error("{\"a\\ud800\":{}}", d, 0, "surrogate");
  expect_st_error("{\"a\\udc00\":{}}", d, 0, "surrogate");
  expect_st_error("{\"a\\u0000\":{}}", d, 0, "\\u0000");
  expect_st_error("{\"a\tb\":{}}", d, 0, "control character");
  expect_st_error("{\"a\xff\":{}}", d, 0, "UTF-8");
  expect_st_error("{\"a\xc0\x80\":{}}", d, 0, "UTF-8");   // overlong NUL
  expect_st_error("{\"abc", d, 0, "unterminated");
  expect_st_error("{\"a\":{}}", d, 0, "empty entry");
  expect_st_error("{\"__metadata__\":{\"k\":1}}", d, 0, "values must be strings");
  expect_st_error("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", d, 0, "duplicate __metadata__ key");
  expect_st_error("{\"__metadata__\":{},\"__metadata__\":{}}", d, 0, "duplicate __metadata__");

  // Well-formed JSON, bad contents.
  expect_st_error("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", d, 1,
                  "unknown dtype 'F8_E4M3'");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", d, 8,
                  "out of bounds");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", d, 8,
                  "out of bounds");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", d, 8,
                  "give 12 bytes but data_offsets [0, 8] hold 8");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                  "\"data_offsets\":[0,8]}}", d, 8, "overflow");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 12,
                  "overlap");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", d, 8,
                  "gap of 4 bytes");
  expect_st_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 8,
                  "the data buffer has 8 bytes but the tensors cover 4");
  expect_st_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                  "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", d, 2,
                  "duplicate tensor name 'a'");
}
END_TEST

START_TEST(test_st_reader_accepts) {
  // Other writers' liberties: whitespace, any field order, unsorted entries, escapes,
  // an unpadded header (unaligned data).
  unsigned char d[7] = {1, 2, 3, 0, 0, 0x80, 0x3F};
  const char *h = " { \"b\" : { \"data_offsets\" : [ 3 , 7 ] , \"shape\" : [ 1 ] , "
                  "\"dtype\" : \"F32\" } ,\n\t\"caf\\u00e9\\ud83d\\ude00\\/\\\\\":{\"dtype\":"
                  "\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}, \"__metadata__\" : {} }   ";
  put_st(tpath("ok"), h, d, sizeof d);
  TsStFile f;
  TsErr e;
  ck_assert_msg(ts_st_read(tpath("ok"), &f, &e) == 0, "%s", e.msg);
  ck_assert_int_eq(f.ntensors, 2);
  ck_assert_int_eq(f.nmeta, 0);
  ck_assert_str_eq(f.tensors[0].name, "caf\xc3\xa9\xf0\x9f\x98\x80/\\");
  ck_assert_int_eq(f.tensors[0].dtype, TS_U8);
  ck_assert_str_eq(f.tensors[1].name, "b");
  float v;
  ck_assert_int_eq(ts_tensor_to_f32(&f.tensors[1], &v, 1, &e), 0);
  ck_assert_float_eq(v, 1.0f);
  ts_st_free(&f);
}
END_TEST

START_TEST(test_st_half_conversions) {
  static const uint16_t f16[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x0400, 0x7C00, 0xFC00,
                                 0x8000, 0x3555, 0x03FF};
  static const float want16[] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f,
                                 6.103515625e-5f, INFINITY, -INFINITY, -0.0f,
                                 0.333251953125f, 6.09755516052246e-5f};
  enum { N16 = sizeof f16 / sizeof f16[0] };
  unsigned char raw[2 * N16 + 2];
  for (int i = 0; i < N16; i++) raw[2 * i] = f16[i] & 0xFF, raw[2 * i + 1] = f16[i] >> 8;
  TsTensor t = {.name = "h", .dtype = TS_F16, .ndims = 1, .shape = {N16}, .data = raw,
                .nbytes = 2 * N16};
  float out[N16];
  TsErr e;
  ck_assert_int_eq(ts_tensor_to_f32(&t, out, N16, &e), 0);
  for (int i = 0; i < N16; i++) {
    ck_assert_msg(out[i] == want16[i], "f16 0x%04x -> %g, want %g", f16[i], out[i], want16[i]);
    ck_assert_int_eq(signbit(out[i]) != 0, signbit(want16[i]) != 0);
  }
  raw[0] = 0x00, raw[1] = 0x7E;   // NaN
  t.nbytes = 2;
  ck_assert_int_eq(ts_tensor_to_f32(&t, out, 1, &e), 0);
  ck_assert(isnan(out[0]));

  static const uint16_t bf[] = {0x3F80, 0xC040, 0x7F80, 0x4049, 0x0001};
  static const float wantbf[] = {1.0f, -3.0f, INFINITY, 3.140625f, 9.18354962e-41f};
  for (int i = 0; i < 5; i++) raw[2 * i] = bf[i] & 0xFF, raw[2 * i + 1] = bf[i] >> 8;
  t.dtype = TS_BF16, t.nbytes = 10;
  ck_assert_int_eq(ts_tensor_to_f32(&t, out, 5, &e), 0);
  for (int i = 0; i < 5; i++) ck_assert_msg(out[i] == wantbf[i], "bf16 %d -> %g", i, out[i]);

  double dd[3] = {0.1, -1e300, 2.5};
  TsTensor td = {.name = "d", .dtype = TS_F64, .ndims = 1, .shape = {3}, .data = dd,
                 .nbytes = sizeof dd};
  ck_assert_int_eq(ts_tensor_to_f32(&td, out, 3, &e), 0);
  ck_assert_float_eq(out[0], 0.1f);
  ck_assert(isinf(out[1]) && out[1] < 0);
  ck_assert_float_eq(out[2], 2.5f);
}
END_TEST

/* ---- progress ------------------------------------------------------------------------- */

START_TEST(test_progress) {
  // Into a file, posing as a terminal, to see what a terminal would get.
  fflush(stdout);
  int saved = dup(STDOUT_FILENO);
  ck_assert_ptr_nonnull(freopen(tpath("out.txt"), "w", stdout));
  TsProgress p;
  ts_progress_begin(&p, 3, 10, 60000);
  ck_assert(!p.tty);
  ts_progress_update(&p, 100, 1.0);   // not a tty: nothing
  p.tty = true;
  ts_progress_update(&p, 31200, 0.4123);
  ts_progress_update(&p, 31300, 0.4);   // within 0.1 s: skipped
  ts_progress_update(&p, 60000, 0.3);   // the end is always drawn
  ts_progress_end(&p);
  fflush(stdout);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  size_t n;
  char *s = (char *)read_bytes(tpath("out.txt"), &n);
  s[n] = 0;
  ck_assert_msg(strstr(s, "\r\033[Kepoch 3/10 [") && strstr(s, "] 31200/60000 ") &&
                strstr(s, "loss 0.4123") && strstr(s, "ETA ") && !strstr(s, "31300") &&
                strstr(s, "60000/60000") && !strchr(s, '\n'), "got '%s'", s);
  ck_assert(n >= 4 && memcmp(s + n - 4, "\r\033[K", 4) == 0);   // ends cleared
  free(s);
}
END_TEST

/* ---- the suite ------------------------------------------------------------------------ */

static Suite *runtime_suite(void) {
  Suite *s = suite_create("runtime");
  TCase *tc;

  tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
  tcase_add_test(tc, test_fail_message);
  tcase_add_test(tc, test_alloc_basics);
  tcase_add_test(tc, test_alloc_hook_counts);
  tcase_add_test(tc, test_alloc_injected_failures);
  suite_add_tcase(s, tc);

  tc = tcase_create("idx");
  tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
  tcase_add_test(tc, test_idx_good);
  tcase_add_test(tc, test_idx_bad_header);
  tcase_add_test(tc, test_idx_sizes);
  tcase_add_test(tc, test_idx_truncated_trailing);
  tcase_add_test(tc, test_idx_corrupt_gzip);
  suite_add_tcase(s, tc);

  tc = tcase_create("dataset");
  tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_dataset_good);
  tcase_add_test(tc, test_dataset_bad);
  tcase_add_test(tc, test_dataset_fashion_mnist);
  suite_add_tcase(s, tc);

  tc = tcase_create("rng");
  tcase_add_test(tc, test_rng_reference);
  tcase_add_test(tc, test_rng_determinism);
  tcase_add_test(tc, test_rng_ranges);
  tcase_add_test(tc, test_rng_uniform_fill);
  tcase_add_test(tc, test_rng_shuffle);
  suite_add_tcase(s, tc);

  tc = tcase_create("pool");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_pool_every_tile_once);
  tcase_add_test(tc, test_pool_steals_from_a_stalled_worker);
  tcase_add_test(tc, test_pool_nested_and_global);
  tcase_add_test(tc, test_pool_many_calls);
  suite_add_tcase(s, tc);

  tc = tcase_create("safetensors");
  tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
  tcase_add_test(tc, test_st_round_trip);
  tcase_add_test(tc, test_st_write_fill);
  tcase_add_test(tc, test_st_write_bad_args);
  tcase_add_test(tc, test_st_atomic);
  tcase_add_test(tc, test_st_reader_rejects);
  tcase_add_test(tc, test_st_reader_accepts);
  tcase_add_test(tc, test_st_half_conversions);
  suite_add_tcase(s, tc);

  tc = tcase_create("progress");
  tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
  tcase_add_test(tc, test_progress);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(runtime_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
