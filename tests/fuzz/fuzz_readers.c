/* fuzz_readers.c: libFuzzer targets for the runtime's two file readers, which take whatever a
 * user points --init, --resume, --weights and the data: paths at: the safetensors reader
 * (ts_st_read, then every tensor converted to float32 the way model_load does) and the IDX
 * reader (ts_idx_load; gzip or plain). Each input is a file's bytes, handed over as a memfd
 * (a regular file, as the readers require) through its /proc/self/fd path. Built twice, with
 * -DFUZZ_IDX choosing the second reader; any crash, sanitizer report, leak or hang is a bug:
 * every input gets a TsErr. Build and run: tests/fuzz/run.sh [SECONDS] [safetensors|idx]. */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("fuzz", MFD_CLOEXEC);
  if (fd < 0) abort();
  if (size && write(fd, data, size) != (ssize_t)size) abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  TsErr e;
#ifdef FUZZ_IDX
  TsIdx x;
  if (ts_idx_load(path, &x, &e) == 0) {
    volatile uint8_t sum = 0;   /* touch every byte the reader says it holds */
    for (size_t i = 0; i < x.count * x.item_size; i++) sum += x.data[i];
    ts_idx_free(&x);
  }
#else
  TsStFile f;
  if (ts_st_read(path, &f, &e) == 0) {
    for (int i = 0; i < f.ntensors; i++) {
      const TsTensor *t = &f.tensors[i];
      size_t n = 1;
      for (int d = 0; d < t->ndims; d++) n *= (size_t)t->shape[d];
      if (n > ((size_t)1 << 24)) continue;
      float *out = malloc(sizeof(float) * (n ? n : 1));
      if (out) ts_tensor_to_f32(t, out, n, &e);
      free(out);
    }
    (void)ts_st_meta(&f, "step");
    ts_st_free(&f);
  }
#endif
  close(fd);
  return 0;
}
