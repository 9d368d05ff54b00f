/* stcmp.c: are the weights in A those in B, bit for bit? Every F32 tensor of A (a weights file
 * from an object's NAME_save) against B (a teslac checkpoint: a pruned weight as CSR values,
 * crow_indices, col_indices, compared densified). Prints the largest difference; exit 0 only
 * when every tensor is there with the same shape and the same bits, or with -t TOL when every
 * value is within TOL of B's (|a - b| <= TOL (1 + |b|): float reassociation, data-parallel). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tesla_rt.h"

static float *dense_of(const TsStFile *f, const TsTensor *a, size_t n) {
  float *d = calloc(n ? n : 1, sizeof(float));
  TsErr e;
  char nm[512];
  const TsTensor *t = ts_st_find(f, a->name);
  if (t) {
    if (ts_tensor_to_f32(t, d, n, &e) < 0) goto bad;
    return d;
  }
  snprintf(nm, sizeof nm, "%s.values", a->name);
  const TsTensor *v = ts_st_find(f, nm);
  snprintf(nm, sizeof nm, "%s.crow_indices", a->name);
  const TsTensor *c = ts_st_find(f, nm);
  snprintf(nm, sizeof nm, "%s.col_indices", a->name);
  const TsTensor *k = ts_st_find(f, nm);
  if (!v || !c || !k || a->ndims < 1) goto bad;
  size_t R = (size_t)a->shape[0], C = n / R, nnz = (size_t)v->shape[0];
  float *vals = malloc(sizeof(float) * (nnz + 1));
  int64_t *crow = malloc(sizeof(int64_t) * (R + 1)), *col = malloc(sizeof(int64_t) * (nnz + 1));
  if (ts_tensor_to_f32(v, vals, nnz, &e) < 0 || ts_tensor_to_i64(c, crow, R + 1, &e) < 0 ||
      ts_tensor_to_i64(k, col, nnz, &e) < 0)
    goto bad;
  for (size_t r = 0; r < R; r++)
    for (int64_t p = crow[r]; p < crow[r + 1]; p++) d[r * C + (size_t)col[p]] = vals[p];
  free(vals), free(crow), free(col);
  return d;
bad:
  free(d);
  return NULL;
}

int main(int argc, char **argv) {
  double tol = -1;
  if (argc == 5 && !strcmp(argv[1], "-t")) tol = atof(argv[2]), argv += 2, argc -= 2;
  if (argc != 3) {
    fprintf(stderr, "usage: stcmp [-t TOL] A.safetensors B.safetensors\n");
    return 2;
  }
  TsStFile a, b;
  TsErr e;
  if (ts_st_read(argv[1], &a, &e) < 0 || ts_st_read(argv[2], &b, &e) < 0) {
    fprintf(stderr, "stcmp: %s\n", e.msg);
    return 2;
  }
  int bad = 0;
  double worst = 0;
  for (int i = 0; i < a.ntensors; i++) {
    const TsTensor *t = &a.tensors[i];
    if (t->dtype != TS_F32) continue;
    size_t n = t->nbytes / 4;
    float *x = dense_of(&a, t, n), *y = dense_of(&b, t, n);
    if (!x || !y) {
      printf("%s: missing in %s\n", t->name, argv[2]);
      bad++;
    } else {
      size_t diff = 0;
      for (size_t j = 0; j < n; j++) {
        double d = fabs((double)x[j] - (double)y[j]);
        if (tol < 0 ? memcmp(&x[j], &y[j], 4) != 0 : !(d <= tol * (1 + fabs((double)y[j])))) diff++;
        if (d > worst || d != d) worst = d;
      }
      if (diff) printf("%s: %zu of %zu values differ\n", t->name, diff, n), bad++;
    }
    free(x), free(y);
  }
  printf("%d tensors, %d differ; largest difference %g\n", a.ntensors, bad, worst);
  ts_st_free(&a), ts_st_free(&b);
  return bad ? 1 : 0;
}
