/*
 * run_infer.c: the portable (C99) test program around an object file emitted by
 * `teslac build`. It reads N input samples as raw little-endian float32, runs the model's
 * <name>_infer over them in chunks of at most <NAME>_BATCH samples, and writes the
 * N x <NAME>_OUTPUT_SIZE probabilities as raw little-endian float32.
 *
 *   cc -std=c99 -O2 -DMODEL_H='"DIR/seed.h"' -DMODEL=seed -DMODEL_UC=SEED \
 *      run_infer.c DIR/seed.o -lm -o run_infer
 *   ./run_infer IN.f32 OUT.f32 N
 *
 * MODEL_H is the header as a string literal, MODEL the model's name (the prefix of its
 * functions), MODEL_UC the same upper case (the prefix of its macros). The scratch block
 * (<NAME>_ACTIVATIONS_SIZE bytes, aligned to <NAME>_ALIGNMENT) is allocated on the heap, and
 * it and the outputs are first filled with SCRATCH_FILL bytes (default 0xff: every float a
 * NaN), so that code reading scratch it did not write, or leaving outputs unwritten, shows
 * up as NaNs rather than as whatever the allocator handed out. Exit status: 0; 1 an I/O or
 * allocation error; 2 the command line.
 */
#if defined(__unix__) || defined(__APPLE__)
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#define HAVE_POSIX_MEMALIGN 1
#endif
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_abi.h"

/* the header's promises, checked where the compiler can */
typedef char check_batch[(M_BATCH) >= 1 ? 1 : -1];
typedef char check_sizes[(M_INPUT_SIZE) >= 1 && (M_OUTPUT_SIZE) >= 1 ? 1 : -1];
typedef char check_align[(M_ALIGNMENT) >= 1 && ((M_ALIGNMENT) & ((M_ALIGNMENT) - 1)) == 0 ? 1 : -1];

static const char *prog = "run_infer";

/* heap block of at least `size` bytes aligned to `align` (a power of two); *base is what
 * free() takes */
static void *alloc_aligned(size_t size, size_t align, void **base) {
  if (size == 0) size = 1;
  if (align < sizeof(void *)) align = sizeof(void *);
  size = (size + align - 1) / align * align; /* aligned_alloc's rule; harmless elsewhere */
#ifdef HAVE_POSIX_MEMALIGN
  {
    void *p = NULL;
    if (posix_memalign(&p, align, size) != 0) return NULL;
    *base = p;
    return p;
  }
#else
  {
    unsigned char *raw = malloc(size + align - 1);
    uintptr_t a;
    if (!raw) return NULL;
    a = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
    *base = raw;
    return (void *)a;
  }
#endif
}

/* n floats from the raw little-endian file at path; -1 with a message */
static int read_f32(const char *path, float *v, size_t n) {
  FILE *f = fopen(path, "rb");
  size_t i;
  long extra;
  if (!f) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return -1;
  }
  for (i = 0; i < n; i++) {
    unsigned char b[4];
    uint32_t u;
    if (fread(b, 1, 4, f) != 4) {
      fprintf(stderr, "%s: %s: %lu floats, expected %lu\n", prog, path, (unsigned long)i,
              (unsigned long)n);
      fclose(f);
      return -1;
    }
    u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    memcpy(&v[i], &u, 4);
  }
  extra = 0;
  while (fgetc(f) != EOF) extra++;
  fclose(f);
  if (extra) {
    fprintf(stderr, "%s: %s: %ld bytes after the %lu floats expected\n", prog, path, extra,
            (unsigned long)n);
    return -1;
  }
  return 0;
}

static int write_f32(const char *path, const float *v, size_t n) {
  FILE *f = fopen(path, "wb");
  size_t i;
  if (!f) {
    fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
    return -1;
  }
  for (i = 0; i < n; i++) {
    unsigned char b[4];
    uint32_t u;
    memcpy(&u, &v[i], 4);
    b[0] = (unsigned char)u;
    b[1] = (unsigned char)(u >> 8);
    b[2] = (unsigned char)(u >> 16);
    b[3] = (unsigned char)(u >> 24);
    if (fwrite(b, 1, 4, f) != 4) break;
  }
  if (fclose(f) != 0 || i != n) {
    fprintf(stderr, "%s: %s: write error\n", prog, path);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const size_t in_size = (size_t)(M_INPUT_SIZE), out_size = (size_t)(M_OUTPUT_SIZE);
  const int batch = (int)(M_BATCH);
  char *end;
  long n;
  float *x, *y;
  void *scratch, *scratch_base = NULL;
  int i, rc = 1;

  if (argc != 4) {
    fprintf(stderr, "usage: %s IN.f32 OUT.f32 N\n", prog);
    return 2;
  }
  errno = 0;
  n = strtol(argv[3], &end, 10);
  if (errno || *end || n < 1 || n > 100000000L) {
    fprintf(stderr, "%s: N must be a positive integer, not '%s'\n", prog, argv[3]);
    return 2;
  }

  x = malloc((size_t)n * in_size * sizeof *x);
  y = malloc((size_t)n * out_size * sizeof *y);
  scratch = alloc_aligned((size_t)(M_ACTIVATIONS_SIZE), (size_t)(M_ALIGNMENT), &scratch_base);
  if (!x || !y || !scratch) {
    fprintf(stderr, "%s: out of memory\n", prog);
    goto out;
  }
  if (read_f32(argv[1], x, (size_t)n * in_size) != 0) goto out;
  memset(y, SCRATCH_FILL, (size_t)n * out_size * sizeof *y);
  memset(scratch, SCRATCH_FILL, (size_t)(M_ACTIVATIONS_SIZE) ? (size_t)(M_ACTIVATIONS_SIZE) : 1);

  for (i = 0; i < n; i += batch) {
    int rows = n - i < batch ? (int)(n - i) : batch;
    M_INFER(x + (size_t)i * in_size, y + (size_t)i * out_size, rows, scratch);
  }
  if (write_f32(argv[2], y, (size_t)n * out_size) != 0) goto out;
  rc = 0;
out:
  free(x);
  free(y);
  free(scratch_base);
  return rc;
}
