/* predict.c: `teslac predict`: per sample the class and the softmax probabilities of a
 * checkpoint, in eval mode, over the spec's test images or --input. */
#include "cmd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* teslac predict SPEC --weights CKPT [--input IDX] [--json] [--batch B] [--threads T]:
 * per sample its class and the softmax probabilities, in eval mode */
int predict_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts("predict", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  const char *weights = o.weights, *input = o.input;
  bool json = o.json;
  int64_t batch = o.batch, threads = o.threads;
  Ctx cx;
  Model m = {0};
  TsIdx idx = {0};
  TsErr e;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  if (!input) input = m.sp.data.test_images;
  if (!input) {
    fprintf(stderr, "teslac: predict needs --input IDX (the spec has no test images)\n");
    goto out;
  }
  if (ts_idx_load(input, &idx, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  if ((int64_t)idx.item_size != shape_elems(&m.sp.input)) {
    fprintf(stderr, "teslac: %s: samples of %zu values, but the model's input %s has %lld\n", input,
            idx.item_size, shape_str(&cx, &m.sp.input, true), (long long)shape_elems(&m.sp.input));
    goto out;
  }
  if (model_build(&cx, &m, batch ? batch : m.sp.train.batch, threads, false) < 0) goto out;
  if (model_load(&cx, &m, weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  int64_t B = m.pl.batch, K = m.sp.classes, out_off = emit_output_offset(&m.sp, &m.pl);
  float scale = (float)m.sp.data.scale;
  for (size_t at = 0; at < idx.count; at += (size_t)B) {
    int64_t n = (int64_t)(idx.count - at) < B ? (int64_t)(idx.count - at) : B;
    for (int64_t i = 0; i < B * m.in_elems; i++)
      m.X[i] = i < n * m.in_elems ? (float)idx.data[at * idx.item_size + (size_t)i] / scale : 0.0f;
    TeslaStep s;
    model_step_init(&m, &s);
    s.y = NULL, s.nvalid = (int32_t)n;
    m.infer(&s);
    const float *p = m.A + out_off;   /* probabilities when the spec ends in softmax, else logits */
    for (int64_t b = 0; b < n; b++) {
      int64_t best = 0;
      for (int64_t k = 1; k < K; k++)
        if (p[b * K + k] > p[b * K + best]) best = k;
      if (json) {
        printf("{\"index\": %zu, \"class\": %lld, \"scores\": [", at + (size_t)b, (long long)best);
        for (int64_t k = 0; k < K; k++) printf("%s%.6g", k ? ", " : "", p[b * K + k]);
        printf("]}\n");
      } else
        printf("%zu %lld %.4f\n", at + (size_t)b, (long long)best, p[b * K + best]);
    }
  }
  rc = 0;
out:
  ts_idx_free(&idx);
  model_free(&m);
  ctx_free(&cx);
  return rc;
}
