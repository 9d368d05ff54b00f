/* idx.h: read one IDX file (the MNIST family's format), gzip'd or plain, with zlib alone:
 * magic 0x00 0x00 0x08 (unsigned bytes) + ndims, big-endian u32 dims, then exactly prod(dims)
 * bytes. The runtime's ts_idx_load does the same (and more); this keeps classify free of it. */
#ifndef EXAMPLES_IDX_H
#define EXAMPLES_IDX_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

/* where the data is and how pixels scale (meson passes both from its options) */
#ifndef DATA_DIR
#define DATA_DIR "/usr/share/datasets/fashion-mnist"
#endif
#ifndef DATA_SCALE
#define DATA_SCALE 255
#endif

typedef struct idx_file {
  size_t count;          /* dims[0]: images or labels */
  size_t item;           /* bytes per item: prod(dims[1..]) (784 for 28x28 images, 1 for labels) */
  unsigned char *data;   /* count * item bytes (malloc'd) */
} idx_file;

static int idx_fail(gzFile f, const char *path, const char *what) {
  fprintf(stderr, "%s: %s\n", path, what);
  if (f) gzclose(f);
  return -1;
}

/* 0, or -1 with a message on stderr */
static int idx_read(const char *path, idx_file *out) {
  unsigned char h[4], d[4];
  gzFile f = gzopen(path, "rb");   /* plain files read through gzread too */
  if (!f) {
    perror(path);
    return -1;
  }
  if (gzread(f, h, 4) != 4) return idx_fail(f, path, "not an IDX file (shorter than its magic)");
  if (h[0] || h[1] || h[2] != 0x08 || h[3] < 1 || h[3] > 4)
    return idx_fail(f, path, "not an IDX file of unsigned bytes with 1 to 4 dims");
  size_t count = 0, item = 1;
  for (int k = 0; k < h[3]; k++) {
    if (gzread(f, d, 4) != 4) return idx_fail(f, path, "truncated in its dims");
    size_t v = (size_t)d[0] << 24 | (size_t)d[1] << 16 | (size_t)d[2] << 8 | d[3];
    if (k == 0) count = v;
    else if (v && item > SIZE_MAX / v) return idx_fail(f, path, "dims too large");
    else item *= v;
  }
  if (item && count > SIZE_MAX / item) return idx_fail(f, path, "dims too large");
  size_t n = count * item, got = 0;
  unsigned char *p = malloc(n ? n : 1);
  if (!p) return idx_fail(f, path, "out of memory");
  while (got < n) {
    unsigned want = n - got > (1u << 30) ? 1u << 30 : (unsigned)(n - got);
    int r = gzread(f, p + got, want);
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (got != n || gzgetc(f) != -1) {
    free(p);
    return idx_fail(f, path, got != n ? "truncated (fewer bytes than its dims say)" : "trailing bytes after the data");
  }
  gzclose(f);
  out->count = count, out->item = item, out->data = p;
  return 0;
}

#endif
