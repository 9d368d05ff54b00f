/* net.h: what the test suites that compile models in process and train through the built
 * teslac share (test_jit.c, test_sparse.c): a Net (one spec built by tesla_front ->
 * model_build, with its compilation context) and the batches, steps and losses the tests drive
 * it with; the central-difference check of every trainable tensor's gradient through
 * <name>_grad (pruned weights included: only their live entries are parameters); and for the
 * command-line tests, teslac runs in the scratch folder, the synthetic IDX dataset's writers
 * and checkpoint comparisons. Header-only, on top of cli.h: each suite is one executable. */
#ifndef TESLA_TESTS_NET_H
#define TESLA_TESTS_NET_H

#include "model.h"

#include <check.h>

#include "cli.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* ---- building models ----------------------------------------------------------------------- */

/* One compiled model with its compilation context; diagnostics go to a memstream. */
typedef struct Net {
  Ctx     cx;
  Model   m;
  int64_t B;
  char   *err;
  size_t  errlen;
  FILE   *errf;
} Net;

/* A spec from its parts: `layers` is the YAML list, `optimizer` the train.optimizer value. */
static __attribute__((unused)) char *spec_src(const char *name, const char *input, int classes, const char *layers,
                                              const char *optimizer, int batch) {
  return xprintf("tesla: 1\nname: %s\ninput: %s\nclasses: %d\nlayers:\n%s"
                 "train:\n  optimizer: %s\n  batch: %d\n  seed: 3\n",
                 name, input, classes, layers, optimizer, batch);
}

static __attribute__((unused)) Net *net_new(const char *src, int64_t batch) {
  Net *n = calloc(1, sizeof *n);
  n->errf = open_memstream(&n->err, &n->errlen);
  ctx_init(&n->cx, "mem.yaml", n->errf);
  ctx_set_source(&n->cx, src, strlen(src));
  int rc = tesla_front(&n->cx, &n->m.sp);
  fflush(n->errf);
  ck_assert_msg(rc == 0, "spec errors:\n%s\nin:\n%s", n->err, src);
  rc = model_build(&n->cx, &n->m, batch, 2, NULL);
  fflush(n->errf);
  ck_assert_msg(rc == 0, "model_build failed:\n%s", n->err);
  ck_assert_ptr_nonnull(n->m.grad);
  model_init(&n->m, 1);
  n->B = batch;
  return n;
}

static __attribute__((unused)) void net_free(Net *n) {
  model_free(&n->m);
  ctx_free(&n->cx);
  fclose(n->errf);
  free(n->err);
  free(n);
}

/* the plan's tensor `name`; the test fails when there is none */
static __attribute__((unused)) const PlanTensor *tensor(const Net *n, const char *name) {
  for (int t = 0; t < n->m.pl.ntensors; t++)
    if (!strcmp(n->m.pl.tensors[t].name, name)) return &n->m.pl.tensors[t];
  ck_abort_msg("no tensor %s", name);
  return NULL;
}

/* layer `layer`'s sparse plan (->on false for a dense layer) */
static __attribute__((unused)) const SparsePlan *splan(const Net *n, int layer) { return &n->m.pl.layers[layer].sp; }

/* A batch: inputs uniform in [-1, 1), labels uniform over the classes; deterministic in seed. */
static __attribute__((unused)) void fill_batch(Net *n, uint64_t seed) {
  TsRng r;
  ts_rng_seed(&r, seed, 77);
  for (int64_t i = 0; i < n->B * n->m.in_elems; i++) n->m.X[i] = 2 * ts_rng_uniform(&r) - 1;
  for (int64_t b = 0; b < n->B; b++) n->m.Y[b] = (int32_t)ts_rng_below(&r, (uint32_t)n->m.sp.classes);
}

/* The step train.c would make for optimizer step t. */
static __attribute__((unused)) TeslaStep net_step(Net *n, int32_t t, float lr, uint64_t seed) {
  TeslaStep s;
  model_step_init(&n->m, &s);
  const TrainCfg *tc = &n->m.sp.train;
  s.t = t, s.lr = lr, s.seed = seed, s.nvalid = (int32_t)n->B;
  s.bc1 = (float)(1 - pow(tc->beta1, t)), s.bc2 = (float)(1 - pow(tc->beta2, t));
  return s;
}

static __attribute__((unused)) void zero_grads(Net *n) {
  memset(n->m.G, 0, sizeof(float) * (size_t)n->m.pl.grad_block);
}

/* NaN over the whole activation block before every call: a value read before the call wrote
 * it (a tile that misses a column, a gradient buffer read stale) then shows as NaN instead of
 * as the nearly right value the previous, nearly identical call left there. */
static __attribute__((unused)) void poison_acts(Net *n) {
  memset(n->m.A, 0xff, sizeof(float) * (size_t)n->m.pl.act_block);
}

/* Train-mode loss (the sum over the batch) at the current parameters. _grad also adds into G
 * and updates batchnorm's running statistics; neither changes the train-mode loss. */
static __attribute__((unused)) double loss_at(Net *n, const TeslaStep *proto) {
  poison_acts(n);
  TeslaStep s = *proto;
  n->m.grad(&s);
  return s.loss;
}

/* Which side of its kink every relu / leaky_relu input is on, after a loss_at (a hash of the
 * sign pattern). A central difference whose two evaluations see another pattern than the
 * analytic gradient measured the kink, not the derivative: such entries are skipped. */
static __attribute__((unused)) uint64_t kink_pattern(const Net *n) {
  uint64_t h = 1469598103934665603ull;
  const Spec *sp = &n->m.sp;
  for (int i = 0; i < sp->nlayers; i++) {
    if (sp->layers[i].op != OP_relu && sp->layers[i].op != OP_leaky_relu) continue;
    const float *z = i ? n->m.A + n->m.pl.layers[i - 1].out_off : n->m.X;
    for (int64_t k = 0; k < n->B * shape_elems(&sp->layers[i].in); k++) h = (h ^ (z[k] > 0)) * 1099511628211ull;
  }
  /* maxpool's argmax: two window entries within eps of each other swap places the same way */
  for (int i = 0; i < sp->nlayers; i++) {
    if (sp->layers[i].op != OP_maxpool) continue;
    const int32_t *a = (const int32_t *)(n->m.A + n->m.pl.layers[i].aux_off);
    for (int64_t k = 0; k < n->B * shape_elems(&sp->layers[i].out); k++) h = (h ^ (uint64_t)a[k]) * 1099511628211ull;
  }
  return h;
}

/* ---- gradients: central differences through <name>_grad ------------------------------------ */

/* Why these numbers. The loss L is a float sum over B samples carried through tens of float
 * operations each: its rounding error is below ~1e-6 |L| (16 ulps). A central difference
 * (L+ - L-) / (2 eps B) therefore carries a rounding error of about
 *     noise = 1e-6 |L| / (eps B)          (5e-4 at eps 3e-3, B 5, |L| 5 x ln 3)
 * plus the truncation error eps^2 |d3L/dp3| / 6, which for these O(1) functions is a few 1e-3
 * relative at eps = 3e-3 (batchnorm over a batch of 5 is the most curved: 2e-2 at eps 1e-2,
 * 2e-3 at 3e-3, falling as eps^2 as it should). So an error is measured relative to
 * max(|analytic|, |numeric|, noise) and must stay below 1e-2: above rounding and truncation,
 * far below what a real bug gives (a missing 1/B, a transposed weight, a dropped term or a
 * wrong tile offset are O(1) relative errors). Below |g| ~ noise / 1e-2 a relative error means
 * nothing (a bias feeding a batchnorm has a zero gradient, a dead unit's weights too), so the
 * relative error is taken against max(|analytic|, |numeric|, noise / 1e-2): an absolute error
 * up to `noise` is accepted there. */
#define FD_EPS 3e-3
#define FD_TOL 1e-2

/* the entries of tensor pt that are parameters now: all, or a pruned weight's pattern (CSR:
 * values 0 .. nnz-1; masked: where the mask is 1). Returns how many; idx gets them. */
static __attribute__((unused)) int64_t live_entries(const Net *n, const PlanTensor *pt, int64_t *idx) {
  int64_t k = 0;
  if (!pt->p.sparse) {
    for (int64_t i = 0; i < pt->elems; i++) idx[k++] = i;
    return k;
  }
  const SparsePlan *s = splan(n, pt->layer);
  if (s->kernel == SK_CSR) {
    int64_t nnz = sparse_nnz(&n->m, pt->layer);
    for (int64_t i = 0; i < nnz; i++) idx[k++] = i;
    return k;
  }
  for (int64_t i = 0; i < pt->elems; i++)
    if (n->m.P[s->mask + i] != 0) idx[k++] = i;
  return k;
}

/* Every trainable tensor's gradient against central differences on its live entries; big
 * tensors are sampled (every 7th entry and the last 16, which hold the last kernel tile's
 * remainder columns). A pruned weight's other entries must have a gradient of exactly 0, and
 * a CSR weight's values past nnz must not change the loss. */
static __attribute__((unused)) void fd_check(Net *n, const char *label, uint64_t data_seed) {
  Model *m = &n->m;
  TeslaStep s = net_step(n, 1, 0, 0xd0d0 + data_seed);
  fill_batch(n, data_seed);
  zero_grads(n);
  poison_acts(n);
  TeslaStep a = s;
  m->grad(&a);
  ck_assert_msg(isfinite(a.loss), "%s: loss %g", label, a.loss);
  size_t gbytes = sizeof(float) * (size_t)m->pl.grad_block;
  float *g = malloc(gbytes);
  memcpy(g, m->G, gbytes);
  double noise = 1e-6 * fabs(a.loss) / (FD_EPS * (double)n->B);
  uint64_t pattern = kink_pattern(n);
  double worst = 0;
  int ntens = 0, skipped = 0, total = 0;
  for (int t = 0; t < m->pl.ntensors; t++) {
    const PlanTensor *pt = &m->pl.tensors[t];
    if (pt->grad_offset < 0) continue;
    ntens++;
    int64_t *idx = malloc(sizeof(int64_t) * (size_t)pt->elems);
    int64_t nlive = live_entries(n, pt, idx);
    /* pruned entries: a gradient of exactly 0 (masked: zeros where the mask is 0; CSR: the
     * grad block holds nnz values, nothing past them) */
    int64_t npruned = 0;
    if (pt->p.sparse) {
      const SparsePlan *sp = splan(n, pt->layer);
      for (int64_t i = 0, k = 0; i < pt->elems; i++) {
        if (k < nlive && idx[k] == i) { k++; continue; }
        npruned++;
        ck_assert_msg(g[pt->grad_offset + i] == 0, "%s: %s[%lld] is pruned (%s) but its gradient is %g", label,
                      pt->name, (long long)i, sp->kernel == SK_CSR ? "past nnz" : "mask 0", g[pt->grad_offset + i]);
      }
      /* CSR: values past nnz are not read: changing them changes nothing, bit for bit */
      if (sp->kernel == SK_CSR && nlive < pt->elems) {
        double l0 = loss_at(n, &s);
        for (int64_t i = nlive; i < pt->elems; i += 1 + (pt->elems - nlive) / 8) m->P[pt->offset + i] = 1e3f;
        double l1 = loss_at(n, &s);
        for (int64_t i = nlive; i < pt->elems; i++) m->P[pt->offset + i] = 0;
        ck_assert_msg(l0 == l1, "%s: %s: values past nnz changed the loss (%.9g -> %.9g)", label, pt->name, l0, l1);
      }
    }
    double max_rel = 0, max_abs = 0, max_g = 0;
    int checked = 0;
    for (int64_t k = 0; k < nlive; k++) {
      if (nlive > 160 && k % 7 && k < nlive - 16) continue;
      int64_t i = idx[k];
      float *p = m->P + pt->offset + i, p0 = *p;
      float hi = p0 + (float)FD_EPS, lo = p0 - (float)FD_EPS;
      *p = hi;
      double lp = loss_at(n, &s);
      bool kink = kink_pattern(n) != pattern;
      *p = lo;
      double lm = loss_at(n, &s);
      kink |= kink_pattern(n) != pattern;
      *p = p0;
      total++;
      double num = (lp - lm) / (((double)hi - (double)lo) * (double)n->B);
      double ana = g[pt->grad_offset + i];
      double abs_err = fabs(num - ana);
      double rel = abs_err / fmax(fmax(fabs(num), fabs(ana)), noise / FD_TOL);
      if (rel > FD_TOL && kink) {   /* measured the kink */
        skipped++;
        continue;
      }
      max_rel = fmax(max_rel, rel), max_abs = fmax(max_abs, abs_err), max_g = fmax(max_g, fabs(ana));
      checked++;
      ck_assert_msg(rel <= FD_TOL, "%s: %s[%lld]: analytic %.7g, central difference %.7g (rel err %.3g)", label,
                    pt->name, (long long)i, ana, num, rel);
    }
    char live[48] = "entries";
    if (pt->p.sparse) snprintf(live, sizeof live, "live (%lld pruned)", (long long)npruned);
    printf("  fd %-18s %-16s %4d of %4lld %s  max |g| %.3e  max rel err %.3e  max abs err %.3e\n", label, pt->name,
           checked, (long long)nlive, live, max_g, max_rel, max_abs);
    /* a gradient that is all zero would pass vacuously; but a bias feeding a batchnorm has a
     * zero gradient (the normalization removes it) */
    const Spec *sp = &n->m.sp;
    bool bn_next = pt->layer + 1 < sp->nlayers && sp->layers[pt->layer + 1].op == OP_batchnorm &&
                   !strcmp(pt->p.pname, "bias");
    if (bn_next) ck_assert_msg(max_g < 1e-6, "%s: %s feeds a batchnorm: its gradient is %g, not 0", label, pt->name, max_g);
    else ck_assert_msg(max_g > 1e-4, "%s: %s: the gradient is zero everywhere", label, pt->name);
    worst = fmax(worst, max_rel);
    free(idx);
  }
  printf("  fd %-18s worst rel err %.3e over %d tensors (eps %g, noise floor %.1e; %d of %d entries skipped: "
         "off across a kink)\n", label, worst, ntens, FD_EPS, noise, skipped, total);
  ck_assert_msg(skipped * 20 <= total, "%s: %d of %d entries cross a kink", label, skipped, total);
  fflush(stdout);
  free(g);
}

/* ---- the command line: teslac in the scratch folder ----------------------------------------- */

/* teslac with the given arguments (NULL-terminated), stdout and stderr captured. Others may be
 * relinking teslac while this runs: an exec that failed (127, nothing run) is retried for up
 * to 10 s. */
static __attribute__((unused)) Cli cli_v(const char *const *args) {
  Cli c = cli_run(teslac_bin, tmpdir, NULL, args);
  for (int k = 0; k < 20 && c.status == 127 && !*c.out && !*c.err; k++) {
    cli_free(&c);
    usleep(500000);
    c = cli_run(teslac_bin, tmpdir, NULL, args);
  }
  return c;
}

#define CLI(...) cli_v((const char *const[]){__VA_ARGS__, NULL})

static __attribute__((unused)) void cli_ok(const Cli *c) {
  ck_assert_msg(c->status == 0, "teslac exited %d\nstdout:\n%s\nstderr:\n%s", c->status, c->out, c->err);
}

/* exit status `want`, stderr ending in a newline (for 1: exactly one line) that contains
 * every `needle` */
static __attribute__((unused)) void cli_fails(const Cli *c, int want, const char *what, const char *const *needles) {
  ck_assert_msg(c->status == want, "%s: exit %d, expected %d\nstdout:\n%s\nstderr:\n%s", what, c->status, want, c->out,
                c->err);
  size_t len = strlen(c->err);
  int lines = 0;
  for (size_t i = 0; i < len; i++) lines += c->err[i] == '\n';
  ck_assert_msg(len > 0 && c->err[len - 1] == '\n', "%s: no message", what);
  if (want == 1) ck_assert_msg(lines == 1, "%s: expected one line, got:\n%s", what, c->err);
  for (; needles && *needles; needles++)
    ck_assert_msg(strstr(c->err, *needles), "%s: the message does not mention '%s':\n%s", what, *needles, c->err);
  printf("  cli %-34s exit %d: %s", what, c->status, c->err);
  fflush(stdout);
}

/* the last number after `key` in text (-1 when key is not there) */
static __attribute__((unused)) double parse_last(const char *text, const char *key) {
  double v = -1;
  for (const char *p = text; (p = strstr(p, key)); p += strlen(key)) v = atof(p + strlen(key));
  return v;
}

/* ---- the synthetic IDX dataset -------------------------------------------------------------- */

static __attribute__((unused)) void write_bytes(const char *path, const void *data, size_t n, bool gz) {
  if (gz) {
    gzFile f = gzopen(path, "wb");
    NEED(f);
    NEED(gzwrite(f, data, (unsigned)n) == (int)n);
    NEED(gzclose(f) == Z_OK);
  } else {
    FILE *f = fopen(path, "wb");
    NEED(f);
    NEED(fwrite(data, 1, n, f) == n);
    NEED(fclose(f) == 0);
  }
}

/* An IDX file in the scratch folder: 00 00 08 ndims, big-endian dims, then `payload` bytes of
 * data (which may disagree with the dims, for the bad-data tests). */
static __attribute__((unused)) void write_idx(const char *name, const uint32_t *dims, int ndims, const uint8_t *data,
                                              size_t payload, bool gz) {
  size_t n = 4 + 4 * (size_t)ndims + payload;
  uint8_t *buf = malloc(n), *q = buf;
  *q++ = 0, *q++ = 0, *q++ = 8, *q++ = (uint8_t)ndims;
  for (int d = 0; d < ndims; d++) *q++ = dims[d] >> 24, *q++ = dims[d] >> 16, *q++ = dims[d] >> 8, *q++ = dims[d];
  memcpy(q, data, payload);
  char *path = tmp_path(name);
  write_bytes(path, buf, n, gz);
  free(path), free(buf);
}

/* 4 classes of 8x8 images: a horizontal bar, a vertical bar, the diagonal, the border, each
 * drawn at 150 over uniform noise in [0, 105). */
enum { NTRAIN = 1024, NTEST = 256, SIDE = 8, NCLASS = 4 };

static __attribute__((unused)) void synth(uint8_t *img, uint8_t *lab, size_t n, uint64_t seed) {
  TsRng r;
  ts_rng_seed(&r, seed, 5);
  for (size_t k = 0; k < n; k++) {
    int c = (int)ts_rng_below(&r, NCLASS);
    lab[k] = (uint8_t)c;
    int shift = (int)ts_rng_below(&r, 3);
    for (int i = 0; i < SIDE; i++)
      for (int j = 0; j < SIDE; j++) {
        bool on = c == 0 ? (i == 2 + shift || i == 3 + shift)
                : c == 1 ? (j == 2 + shift || j == 3 + shift)
                : c == 2 ? abs(i - j) <= 1
                         : (i == 0 || j == 0 || i == SIDE - 1 || j == SIDE - 1);
        img[k * SIDE * SIDE + i * SIDE + j] = (uint8_t)(ts_rng_below(&r, 105) + (on ? 150 : 0));
      }
  }
}

/* The training set (train-images.gz, train-labels.gz: NTRAIN samples, seed 1) and the test
 * set (test-images.gz, test-labels.gz: NTEST, seed 2) in the scratch folder. */
static __attribute__((unused)) void synth_dataset(void) {
  uint8_t *img = malloc(NTRAIN * SIDE * SIDE), *lab = malloc(NTRAIN);
  uint32_t di[3] = {NTRAIN, SIDE, SIDE}, dl[1] = {NTRAIN};
  synth(img, lab, NTRAIN, 1);
  write_idx("train-images.gz", di, 3, img, NTRAIN * SIDE * SIDE, true);
  write_idx("train-labels.gz", dl, 1, lab, NTRAIN, true);
  synth(img, lab, NTEST, 2);
  uint32_t ti[3] = {NTEST, SIDE, SIDE}, tl[1] = {NTEST};
  write_idx("test-images.gz", ti, 3, img, NTEST * SIDE * SIDE, true);
  write_idx("test-labels.gz", tl, 1, lab, NTEST, true);
  free(img), free(lab);
}

/* A spec over the synthetic data in the scratch folder, `file` there (returned): `layers` the
 * YAML list, 3 epochs of batch 32 at lr 0.01, the given (relative) training files and, with
 * `with_test`, the test set. */
static __attribute__((unused)) char *synth_spec(const char *file, const char *layers, const char *optimizer,
                                                const char *train_images, const char *train_labels, bool with_test) {
  char *src = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n%s"
                      "train:\n  optimizer: %s\n  lr: 0.01\n  epochs: 3\n  batch: 32\n  seed: 7\n  shuffle: true\n"
                      "data:\n  format: idx\n  train: {images: %s, labels: %s}\n%s  scale: 255\n",
                      layers, optimizer, train_images, train_labels,
                      with_test ? "  test: {images: test-images.gz, labels: test-labels.gz}\n" : "");
  char *path = tmp_path(file);
  write_bytes(path, src, strlen(src), false);
  free(src);
  return path;
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

/* Every tensor of a and b: the same names, dtypes, shapes and bytes, and no more in either;
 * `opt_too`: the optimizer state as well. Returns how many tensors differ; prints the first. */
static __attribute__((unused)) int ckpt_diff(const char *a, const char *b, bool opt_too) {
  TsStFile fa, fb;
  TsErr e;
  ck_assert_msg(ts_st_read(a, &fa, &e) == 0, "%s", e.msg);
  ck_assert_msg(ts_st_read(b, &fb, &e) == 0, "%s", e.msg);
  int diff = 0, n = 0;
  for (int i = 0; i < fa.ntensors; i++) {
    const TsTensor *x = &fa.tensors[i];
    if (!opt_too && !strncmp(x->name, "__opt__", 7)) continue;
    const TsTensor *y = ts_st_find(&fb, x->name);
    ck_assert_msg(y, "%s has no tensor %s", b, x->name);
    n++;
    if (x->dtype != y->dtype || x->ndims != y->ndims || memcmp(x->shape, y->shape, sizeof x->shape) ||
        x->nbytes != y->nbytes || memcmp(x->data, y->data, x->nbytes)) {
      if (diff++) continue;
      size_t k = 0;
      if (x->dtype == TS_F32 && y->dtype == TS_F32 && x->nbytes == y->nbytes) {
        const float *u = x->data, *v = y->data;
        while (k < x->nbytes / 4 && !memcmp(&u[k], &v[k], 4)) k++;
        if (k < x->nbytes / 4) {
          printf("  first difference: %s[%zu]: %.9g vs %.9g\n", x->name, k, u[k], v[k]);
          continue;
        }
      }
      printf("  first difference: %s (%zu vs %zu bytes, or another dtype or shape)\n", x->name, x->nbytes, y->nbytes);
    }
  }
  int nb = 0;   /* b has no tensors a lacks */
  for (int i = 0; i < fb.ntensors; i++) nb += opt_too || strncmp(fb.tensors[i].name, "__opt__", 7);
  ck_assert_int_eq(n, nb);
  ck_assert_int_gt(n, 0);
  ts_st_free(&fa), ts_st_free(&fb);
  return diff;
}

/* checkpoint metadata `key` into buf ("" when there is none) */
static __attribute__((unused)) const char *ckpt_meta(const char *path, const char *key, char *buf, size_t n) {
  TsStFile f;
  TsErr e;
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  const char *v = ts_st_meta(&f, key);
  snprintf(buf, n, "%s", v ? v : "");
  ts_st_free(&f);
  return buf;
}

#endif
