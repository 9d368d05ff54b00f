/* objcheck.c: a user's program around an object from `teslac build`, for tests/build_test.sh.
 * Compiled once per model against its header: -DMODEL=name -DMODEL_UC=NAME -DMODEL_H='"name.h"',
 * linked with the object and the runtime (IDX files, safetensors).
 *
 *   objcheck infer IMAGES.idx[.gz] N SCALE          the first N images through NAME_infer in
 *                                                   one call; `teslac predict --json` lines
 *   objcheck train IMAGES LABELS STEPS SCALE OUT    STEPS of NAME_train_step on the samples in
 *                                                   file order from the embedded weights, the
 *                                                   weights to OUT (NAME_save); loss per step */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tesla_rt.h"
#include MODEL_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(s) CAT(MODEL, s)
#define M(s) CAT(MODEL_UC, s)

static void *aligned(size_t n) {
  void *p = NULL;
  if (posix_memalign(&p, M(_ALIGNMENT), n ? n : 1)) return NULL;
  memset(p, 0xff, n);   /* not zero: code that reads scratch before writing it shows */
  return p;
}

static int load(const char *path, TsIdx *idx) {
  TsErr e;
  if (ts_idx_load(path, idx, &e) < 0) {
    fprintf(stderr, "objcheck: %s\n", e.msg);
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "infer")) {
    TsIdx idx;
    long n = atol(argv[3]);
    float scale = (float)atof(argv[4]);
    if (load(argv[2], &idx) < 0 || n < 1 || (size_t)n > idx.count || idx.item_size != M(_INPUT_SIZE)) return 1;
    float *x = malloc(sizeof(float) * (size_t)n * M(_INPUT_SIZE)), *y = malloc(sizeof(float) * (size_t)n * M(_OUTPUT_SIZE));
    void *scratch = aligned(M(_ACTIVATIONS_SIZE));
    if (!x || !y || !scratch) return 1;
    for (size_t i = 0; i < (size_t)n * M(_INPUT_SIZE); i++) x[i] = (float)idx.data[i] / scale;
    FN(_infer)(x, y, (int)n, scratch);
    for (long b = 0; b < n; b++) {
      const float *p = y + b * M(_OUTPUT_SIZE);
      int best = 0;
      for (int k = 1; k < M(_OUTPUT_SIZE); k++)
        if (p[k] > p[best]) best = k;
      printf("{\"index\": %ld, \"class\": %d, \"scores\": [", b, best);
      for (int k = 0; k < M(_OUTPUT_SIZE); k++) printf("%s%.9g", k ? ", " : "", p[k]);
      printf("]}\n");
    }
    free(x), free(y), free(scratch);
    ts_idx_free(&idx);
    return 0;
  }
#ifdef HAVE_TRAIN
  if (argc == 7 && !strcmp(argv[1], "train")) {
    TsIdx im, lb;
    long steps = atol(argv[4]);
    float scale = (float)atof(argv[5]);
    if (load(argv[2], &im) < 0 || load(argv[3], &lb) < 0) return 1;
    if ((size_t)(steps * M(_BATCH)) > im.count || im.item_size != M(_INPUT_SIZE)) return 1;
    void *state = aligned(M(_TRAIN_STATE_SIZE)), *scratch = aligned(M(_TRAIN_ACTIVATIONS_SIZE));
    float *x = malloc(sizeof(float) * M(_BATCH) * M(_INPUT_SIZE));
    int32_t *y = malloc(sizeof(int32_t) * M(_BATCH));
    if (!state || !scratch || !x || !y) return 1;
    FN(_train_init)(state);
    for (long s = 0; s < steps; s++) {
      for (long i = 0; i < M(_BATCH) * M(_INPUT_SIZE); i++)
        x[i] = (float)im.data[(size_t)s * M(_BATCH) * M(_INPUT_SIZE) + (size_t)i] / scale;
      for (long b = 0; b < M(_BATCH); b++) y[b] = lb.data[s * M(_BATCH) + b];
      float loss = FN(_train_step)(state, x, y, scratch);
      printf("step %ld loss %.6f\n", s + 1, loss);
    }
    TsErr e;
    int rc = FN(_save)(FN(_train_weights)(state), argv[6], &e) < 0;
    if (rc) fprintf(stderr, "objcheck: %s\n", e.msg);
    free(state), free(scratch), free(x), free(y);
    ts_idx_free(&im), ts_idx_free(&lb);
    return rc;
  }
#endif
  fprintf(stderr, "usage: objcheck infer IMAGES N SCALE | train IMAGES LABELS STEPS SCALE OUT\n");
  return 2;
}
