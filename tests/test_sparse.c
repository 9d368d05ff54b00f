/* test_sparse.c: pruned weights (`sparsity:` on dense and conv layers) end to end: the planner
 * (plan/sparse.c), the CSR kernels (codegen/sp_emit.c, kernels/tk_sparse.h) and the masked
 * dense kernels, magnitude pruning on Zhu & Gupta's schedule and the CSR patterns on the host
 * (driver/prune.c), CSR checkpoints (driver/model.c) and `teslac train` (driver/train.c). Each
 * test builds small specs in process (tesla_front -> model_build: net.h's Net, shared with
 * test_jit.c, as is the gradient check fd_check) or runs the built `teslac` ($TESLAC) on
 * net.h's synthetic IDX dataset in a scratch folder.
 *
 *   gradients   central differences of the loss through <name>_grad with a real pattern set
 *               (random with an empty row and an empty column, or by magnitude pruning, or
 *               every entry kept): on SK_CSR (batch 1 and 5: the scalar path; 20, 32, 70: the
 *               vector path, 70 past 64 lanes with padding; first layer or between layers; a
 *               fused leaky_relu; no bias) and SK_MASK (dense and conv); pruned entries have
 *               gradient exactly 0 and (CSR) values outside the pattern are never read
 *   agreement   the same masked weights in a dense spec and a sparse one: probabilities,
 *               loss and every gradient agree (1e-5 of each tensor's largest entry), also on
 *               parallel tiles and with a batchnorm folded into a masked layer for inference
 *   schedule    sp_sparsity_at / sp_is_event against the cubic evaluated at the last event;
 *               pruning along it in process (nnz per step, only the smallest go, ties to the
 *               lower index); after `teslac train` the nnz is round((1 - s_f) R C)
 *   optimizers  Adam, AdamW with decay, SGD with momentum (and nesterov) + decay: pruned
 *               weights and their optimizer state stay exactly 0, the pattern never changes
 *   checkpoints resume half way == uninterrupted, bit for bit (CSR indices and optimizer
 *               values included); the file's CSR lengths; smaller than the dense model's
 *   planner     sparsity: auto under compress (max_params, ratio), CSR vs mask choice, conv
 *               always masked, tt: auto + sparsity: auto, a budget that cannot be met
 *   bad input   spec errors at file:line:col, bad CSR checkpoints (indices out of range,
 *               unsorted, crow not ending at nnz, ...), CSR into a dense spec; a dense
 *               state_dict into a sparse spec loads and is pruned by magnitude; PyTorch's I64
 *               indices load as teslac's I32
 *
 * Two tests pin bugs found while writing this (fixed since): cli_bad_crow_past_nnz (load_sparse
 * read col_indices past nnz when a crow_indices entry pointed past the values) and
 * many_sparse_layers_save (model_save's metadata array overflowed with 62 or more pruned
 * layers).
 *
 * Every numeric check prints the largest error it saw. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "model.h"

#include <check.h>

#include "net.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ---- patterns ------------------------------------------------------------------------------- */

/* where entry (r, c) of a masked weight's matrix view lives in its memory */
static int64_t mask_index(const PlanTensor *pt, const SparsePlan *s, int64_t r, int64_t c) {
  return pt->p.stored_t ? c * s->R + r : r * s->C + c;
}

/* layer i's weight as a dense (R, C) row-major matrix, from sparse_export (zeros off the
 * pattern); *kept (R C) 1 on the pattern; returns nnz */
static int64_t dense_view(const Net *n, int i, float *W, bool *kept) {
  const SparsePlan *s = splan(n, i);
  int64_t full = s->R * s->C;
  int32_t *crow = malloc(sizeof(int32_t) * (size_t)(s->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)full);
  float *v = malloc(sizeof(float) * (size_t)full);
  sparse_export(&n->m, i, crow, col, v, -1);
  if (W) memset(W, 0, sizeof(float) * (size_t)full);
  if (kept) memset(kept, 0, (size_t)full);
  for (int64_t r = 0; r < s->R; r++)
    for (int32_t p = crow[r]; p < crow[r + 1]; p++) {
      if (W) W[r * s->C + col[p]] = v[p];
      if (kept) kept[r * s->C + col[p]] = true;
    }
  int64_t nnz = crow[s->R];
  free(crow), free(col), free(v);
  return nnz;
}

/* A random pattern of exactly `nnz` entries on layer i, avoiding row 1 and column 2 (an empty
 * row: its outputs are the bias alone; an empty column: that input gets no gradient), at the
 * layer's current weight values (the dense init). */
static void set_random_pattern(Net *n, int i, uint64_t seed) {
  const SparsePlan *s = splan(n, i);
  int64_t R = s->R, C = s->C, full = R * C, nnz = s->nnz;
  float *W = malloc(sizeof(float) * (size_t)full);
  ck_assert_int_eq(dense_view(n, i, W, NULL), full);   /* a fresh model keeps every entry */
  int64_t *cand = malloc(sizeof(int64_t) * (size_t)full), nc = 0;
  for (int64_t x = 0; x < full; x++)
    if ((R < 3 || x / C != 1) && (C < 4 || x % C != 2)) cand[nc++] = x;
  ck_assert_msg(nc >= nnz, "layer %d: %lld candidates for %lld non-zeros", i, (long long)nc, (long long)nnz);
  TsRng r;
  ts_rng_seed(&r, seed, 11);
  for (int64_t k = 0; k < nnz; k++) {   /* partial Fisher-Yates */
    int64_t j = k + (int64_t)ts_rng_below(&r, (uint32_t)(nc - k));
    int64_t t = cand[k];
    cand[k] = cand[j], cand[j] = t;
  }
  bool *on = calloc((size_t)full, 1);
  for (int64_t k = 0; k < nnz; k++) on[cand[k]] = true;
  int64_t *crow = malloc(sizeof(int64_t) * (size_t)(R + 1)), *col = malloc(sizeof(int64_t) * (size_t)full);
  float *v = malloc(sizeof(float) * (size_t)full);
  int64_t p = 0;
  for (int64_t rr = 0; rr < R; rr++) {
    crow[rr] = p;
    for (int64_t c = 0; c < C; c++)
      if (on[rr * C + c]) col[p] = c, v[p] = W[rr * C + c], p++;
  }
  crow[R] = p;
  const float *vals[3] = {v, NULL, NULL};
  sparse_set(&n->m, i, crow, col, p, vals);
  ck_assert_int_eq(sparse_nnz(&n->m, i), nnz);
  free(W), free(cand), free(on), free(crow), free(col), free(v);
}

/* ---- 1. gradients with masks (fd_check, net.h: live entries only, pruned ones exactly 0) ----- */

enum { PAT_FULL, PAT_RANDOM, PAT_PRUNE };

typedef struct FdCase {
  const char *label, *input, *layers;
  int batch;
  SparseKernel kernel;   /* what every sparse layer must be planned as */
  int pattern;
} FdCase;

/* A: dense 64 -> 48 at 0.9 between two dense layers (its input gradient is used); B: as the
 * first layer without a bias (no input gradient); C: with a fused leaky_relu; D: masked dense
 * 24 -> 16 at 0.3; E: two masked convs (the second without bias, strided). PAT_PRUNE: the
 * oneshot event prunes by magnitude; PAT_FULL: every entry kept (the values are the dense
 * W (OUT, IN): for CSR the dense path the generated code takes until the first event). */
#define LAYERS_A(sp) "  - dense: {units: 64}\n  - dense: {units: 48, " sp "}\n  - dense: {units: 3}\n  - softmax: {}\n"
#define LAYERS_B "  - dense: {units: 48, bias: false, sparsity: 0.9}\n  - dense: {units: 3}\n  - softmax: {}\n"
#define LAYERS_C "  - dense: {units: 64}\n  - dense: {units: 48, sparsity: 0.9}\n  - leaky_relu: {slope: 0.1}\n" \
                 "  - dense: {units: 3}\n  - softmax: {}\n"
#define LAYERS_D(sp) "  - dense: {units: 24}\n  - dense: {units: 16, " sp "}\n  - dense: {units: 3}\n  - softmax: {}\n"
#define LAYERS_E "  - conv: {filters: 5, kernel: 3, padding: 1, sparsity: 0.5}\n" \
                 "  - conv: {filters: 4, kernel: [3, 2], stride: 2, bias: false, sparsity: 0.6}\n" \
                 "  - dense: {units: 3}\n  - softmax: {}\n"
#define ONESHOT(t) "sparsity: {target: " t ", schedule: oneshot, start: 0.5}"

static const FdCase fd_cases[] = {
    {"csr_b1", "[20]", LAYERS_A("sparsity: 0.9"), 1, SK_CSR, PAT_RANDOM},
    {"csr_b5", "[20]", LAYERS_A("sparsity: 0.9"), 5, SK_CSR, PAT_RANDOM},
    {"csr_b20", "[20]", LAYERS_A("sparsity: 0.9"), 20, SK_CSR, PAT_RANDOM},
    {"csr_b32", "[20]", LAYERS_A("sparsity: 0.9"), 32, SK_CSR, PAT_RANDOM},
    {"csr_b70", "[20]", LAYERS_A("sparsity: 0.9"), 70, SK_CSR, PAT_RANDOM},
    {"csr_nobias_b5", "[64]", LAYERS_B, 5, SK_CSR, PAT_RANDOM},
    {"csr_nobias_b70", "[64]", LAYERS_B, 70, SK_CSR, PAT_RANDOM},
    {"csr_nobias2_b32", "[20]", LAYERS_A("bias: false, sparsity: 0.9"), 32, SK_CSR, PAT_RANDOM},
    {"csr_lrelu_b20", "[20]", LAYERS_C, 20, SK_CSR, PAT_RANDOM},
    {"csr_prune_b32", "[20]", LAYERS_A(ONESHOT("0.9")), 32, SK_CSR, PAT_PRUNE},
    {"csr_full_b5", "[20]", LAYERS_A("sparsity: 0.9"), 5, SK_CSR, PAT_FULL},
    {"csr_full_b32", "[20]", LAYERS_A("sparsity: 0.9"), 32, SK_CSR, PAT_FULL},
    {"mask_b5", "[20]", LAYERS_D("sparsity: 0.3"), 5, SK_MASK, PAT_RANDOM},
    {"mask_b32", "[20]", LAYERS_D("sparsity: 0.3"), 32, SK_MASK, PAT_RANDOM},
    {"mask_nobias_b20", "[20]", LAYERS_D("bias: false, sparsity: 0.3"), 20, SK_MASK, PAT_RANDOM},
    {"mask_prune_b5", "[20]", LAYERS_D(ONESHOT("0.3")), 5, SK_MASK, PAT_PRUNE},
    {"conv_mask_b3", "[3, 7, 6]", LAYERS_E, 3, SK_MASK, PAT_RANDOM},
};

/* a model whose sparse layers are planned as `want`, with the case's pattern on each */
#define ANY_KERNEL (-1)

static Net *sparse_net(const char *label, const char *input, const char *layers, int batch, const char *opt,
                       int want, int pattern) {
  char *src = spec_src(label, input, 3, layers, opt, batch);
  Net *n = net_new(src, batch);
  free(src);
  int nsp = 0;
  for (int i = 0; i < n->m.sp.nlayers; i++) {
    const SparsePlan *s = splan(n, i);
    if (!s->on) continue;
    nsp++;
    ck_assert_msg(n->m.pl.layers[i].storage == ST_SPARSE, "%s: layer %d is not stored sparse", label, i);
    ck_assert_msg(want == ANY_KERNEL || (int)s->kernel == want, "%s: layer %d planned %s, the test needs %s (csr cost %.4g, dense %.4g)",
                  label, i, s->kernel == SK_CSR ? "csr" : "mask", want == SK_CSR ? "csr" : "mask", s->csr_cost,
                  (double)s->dense_flops.fwd + (double)s->dense_flops.bwd);
    ck_assert_ptr_nonnull(sparse_tensor(&n->m, i));
    ck_assert_int_eq(sparse_nnz(&n->m, i), s->R * s->C);   /* init: every entry kept */
    if (pattern == PAT_RANDOM) set_random_pattern(n, i, 100 + (uint64_t)i);
  }
  ck_assert_int_gt(nsp, 0);
  if (pattern == PAT_PRUNE) {   /* oneshot at start 0.5 of 10 steps: the event is step 5 */
    n->m.t = 4;
    ck_assert_int_eq(sparse_prune(&n->m, 10), 0);
    n->m.t = 5;
    ck_assert_int_eq(sparse_prune(&n->m, 10), nsp);
    for (int i = 0; i < n->m.sp.nlayers; i++)
      if (splan(n, i)->on) ck_assert_int_eq(sparse_nnz(&n->m, i), splan(n, i)->nnz);
    n->m.t = 6;
    ck_assert_int_eq(sparse_prune(&n->m, 10), 0);
  }
  return n;
}

START_TEST(fd_sparse) {
  const FdCase *c = &fd_cases[_i];
  Net *n = sparse_net(c->label, c->input, c->layers, c->batch, "adam", c->kernel, c->pattern);
  fd_check(n, c->label, 11);
  net_free(n);
}
END_TEST

/* ---- 2. sparse and dense kernels agree ---------------------------------------------------- */

typedef struct AgreeCase {
  const char *label, *input, *layers;   /* layers: a format with one %s, the sparsity key */
  const char *sparsity;
  int batch;
  SparseKernel kernel;
  int pattern;
} AgreeCase;

static const AgreeCase agree_cases[] = {
    {"csr_b5", "[20]", "  - dense: {units: 64}\n  - dense: {units: 48%s}\n  - dense: {units: 3}\n  - softmax: {}\n",
     ", sparsity: 0.9", 5, SK_CSR, PAT_RANDOM},
    {"csr_b32", "[20]", "  - dense: {units: 64}\n  - dense: {units: 48%s}\n  - dense: {units: 3}\n  - softmax: {}\n",
     ", sparsity: 0.9", 32, SK_CSR, PAT_RANDOM},
    {"csr_b70", "[20]", "  - dense: {units: 64}\n  - dense: {units: 48%s}\n  - dense: {units: 3}\n  - softmax: {}\n",
     ", sparsity: 0.9", 70, SK_CSR, PAT_RANDOM},
    {"csr_full_b70", "[20]", "  - dense: {units: 64}\n  - dense: {units: 48%s}\n  - dense: {units: 3}\n  - softmax: {}\n",
     ", sparsity: 0.9", 70, SK_CSR, PAT_FULL},
    /* 6000 non-zeros x 70: parallel tiles; 300 inputs: 5 column tiles (the last of 44), 200
     * outputs: 7 row tiles (the last of 8) */
    {"csr_par_b70", "[40]", "  - dense: {units: 300}\n  - dense: {units: 200%s}\n  - dense: {units: 3}\n  - softmax: {}\n",
     ", sparsity: 0.9", 70, SK_CSR, PAT_RANDOM},
    {"csr_bn_b33", "[20]", "  - dense: {units: 64}\n  - dense: {units: 48, bias: false%s}\n  - batchnorm: {}\n"
                           "  - leaky_relu: {}\n  - dense: {units: 3}\n  - softmax: {}\n", ", sparsity: 0.9", 33, SK_CSR, PAT_RANDOM},
    /* at batch 70 inference folds the batchnorm into the masked layer (70 x 16 outputs > 384
     * weights) */
    {"mask_bn_b70", "[20]", "  - dense: {units: 24}\n  - dense: {units: 16%s}\n  - batchnorm: {}\n  - dense: {units: 3}\n"
                            "  - softmax: {}\n", ", sparsity: 0.3", 70, SK_MASK, PAT_RANDOM},
    {"conv_mask_b3", "[3, 7, 6]", "  - conv: {filters: 5, kernel: 3, padding: 1%s}\n  - dense: {units: 3}\n  - softmax: {}\n",
     ", sparsity: 0.5", 3, SK_MASK, PAT_RANDOM},
};

/* the largest |a - b| over the largest |b| */
typedef struct Diff { double err, big; } Diff;

static void diff_add(Diff *d, double a, double b) {
  d->err = fmax(d->err, fabs(a - b));
  d->big = fmax(d->big, fabs(b));
}

static double diff_rel(const Diff *d) { return d->big > 0 ? d->err / d->big : d->err; }

START_TEST(sparse_dense_agree) {
  const AgreeCase *c = &agree_cases[_i];
  char *lsp = xprintf(c->layers, c->sparsity), *lde = xprintf(c->layers, "");
  Net *S = sparse_net(c->label, c->input, lsp, c->batch, "adam", c->kernel, c->pattern);
  char *src = spec_src(c->label, c->input, 3, lde, "adam", c->batch);
  Net *D = net_new(src, c->batch);
  free(src), free(lsp), free(lde);
  ck_assert_int_eq(S->m.pl.ntensors, D->m.pl.ntensors);
  /* the same weights: the sparse layer's pattern values into the dense weight, zero elsewhere */
  for (int t = 0; t < S->m.pl.ntensors; t++) {
    const PlanTensor *ps = &S->m.pl.tensors[t], *pd = tensor(D, ps->name);
    ck_assert_int_eq(ps->elems, pd->elems);
    if (!ps->p.sparse) {
      memcpy(D->m.P + pd->offset, S->m.P + ps->offset, sizeof(float) * (size_t)ps->elems);
      continue;
    }
    const SparsePlan *s = splan(S, ps->layer);
    float *W = malloc(sizeof(float) * (size_t)(s->R * s->C));
    dense_view(S, ps->layer, W, NULL);
    for (int64_t r = 0; r < s->R; r++)
      for (int64_t k = 0; k < s->C; k++) D->m.P[pd->offset + mask_index(pd, s, r, k)] = W[r * s->C + k];
    free(W);
  }
  fill_batch(S, 21);
  memcpy(D->m.X, S->m.X, sizeof(float) * (size_t)(c->batch * S->m.in_elems));
  memcpy(D->m.Y, S->m.Y, sizeof(int32_t) * (size_t)c->batch);
  /* eval-mode forward: the probabilities (and the loss) */
  TeslaStep ss = net_step(S, 1, 0, 5), sd = net_step(D, 1, 0, 5);
  poison_acts(S), poison_acts(D);
  S->m.infer(&ss), D->m.infer(&sd);
  int64_t os = emit_output_offset(&S->m.sp, &S->m.pl), od = emit_output_offset(&D->m.sp, &D->m.pl);
  Diff prob = {0};
  for (int64_t k = 0; k < c->batch * 3; k++) {
    ck_assert_msg(isfinite(S->m.A[os + k]), "%s: probability %lld is %g", c->label, (long long)k, S->m.A[os + k]);
    diff_add(&prob, S->m.A[os + k], D->m.A[od + k]);
  }
  double lrel = fabs(ss.loss - sd.loss) / fabs(sd.loss);
  printf("  agree %-13s infer: probabilities max abs err %.3e, loss %.7g vs %.7g (rel %.2e)\n", c->label, prob.err,
         ss.loss, sd.loss, lrel);
  ck_assert_msg(prob.err <= 1e-5, "%s: probabilities differ by %g", c->label, prob.err);
  ck_assert_msg(lrel <= 1e-5, "%s: eval loss %.9g vs %.9g", c->label, ss.loss, sd.loss);
  /* train-mode forward and backward: the loss and every gradient */
  zero_grads(S), zero_grads(D);
  ss = net_step(S, 1, 0, 5), sd = net_step(D, 1, 0, 5);
  poison_acts(S), poison_acts(D);
  S->m.grad(&ss), D->m.grad(&sd);
  lrel = fabs(ss.loss - sd.loss) / fabs(sd.loss);
  ck_assert_msg(lrel <= 1e-5, "%s: train loss %.9g vs %.9g", c->label, ss.loss, sd.loss);
  double worst = 0;
  for (int t = 0; t < S->m.pl.ntensors; t++) {
    const PlanTensor *ps = &S->m.pl.tensors[t], *pd = tensor(D, ps->name);
    if (ps->grad_offset < 0) continue;
    Diff d = {0};
    const float *gs = S->m.G + ps->grad_offset, *gd = D->m.G + pd->grad_offset;
    if (!ps->p.sparse)
      for (int64_t k = 0; k < ps->elems; k++) diff_add(&d, gs[k], gd[k]);
    else {   /* on the pattern: the dense gradient at (r, col); off it the sparse one is 0 */
      const SparsePlan *s = splan(S, ps->layer);
      int64_t full = s->R * s->C;
      int32_t *crow = malloc(sizeof(int32_t) * (size_t)(s->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)full);
      sparse_export(&S->m, ps->layer, crow, col, NULL, -1);
      for (int64_t r = 0; r < s->R; r++)
        for (int32_t p = crow[r]; p < crow[r + 1]; p++) {
          double a = s->kernel == SK_CSR ? gs[p] : gs[mask_index(ps, s, r, col[p])];
          diff_add(&d, a, gd[mask_index(pd, s, r, col[p])]);
        }
      if (s->kernel == SK_MASK)
        for (int64_t k = 0; k < ps->elems; k++)
          if (S->m.P[s->mask + k] == 0) ck_assert_msg(gs[k] == 0, "%s: masked gradient %g", c->label, gs[k]);
      free(crow), free(col);
    }
    double rel = diff_rel(&d);
    printf("  agree %-13s grad %-10s max |g| %.3e  max err %.3e (rel %.2e)\n", c->label, ps->name, d.big, d.err, rel);
    ck_assert_msg(d.big > 0, "%s: %s: zero gradient", c->label, ps->name);
    ck_assert_msg(rel <= 1e-5, "%s: %s: sparse and dense gradients differ by %g of %g", c->label, ps->name, d.err, d.big);
    worst = fmax(worst, rel);
  }
  printf("  agree %-13s train loss rel err %.2e, gradients worst rel err %.2e\n", c->label, lrel, worst);
  fflush(stdout);
  net_free(S), net_free(D);
}
END_TEST

/* ---- 3. the schedule ------------------------------------------------------------------------ */

/* Zhu & Gupta written out independently of sparse.c: the event steps listed, the sparsity the
 * cubic gives at the last of them at or before t */
static double ref_sparsity(const SparseSpec *s, double sf, int64_t t, int64_t total, bool *event) {
  int64_t t0 = (int64_t)llround(s->start * (double)total), t1 = (int64_t)llround(s->end * (double)total);
  int64_t last = -1;
  *event = false;
  if (!s->gradual) {
    *event = t == t0;
    return t < t0 ? 0 : sf;
  }
  for (int64_t e = t0; e < t1; e += s->every) {
    if (e <= t) last = e;
    if (e == t) *event = true;
  }
  if (t1 <= t) last = t1;
  if (t == t1) *event = true;
  if (last < 0) return 0;
  if (last >= t1) return sf;
  double x = 1 - (double)(last - t0) / (double)(t1 - t0);
  return sf * (1 - x * x * x);
}

START_TEST(schedule_formula) {
  static const struct { bool gradual; double start, end; int every; int64_t total; double sf; } cases[] = {
      {true, 0.15, 0.75, 100, 1000, 0.9},   /* the defaults */
      {true, 0.15, 0.75, 7, 333, 0.8},      /* every does not divide end - start */
      {true, 0, 1, 1, 40, 0.5},             /* an event every step, from step 0 */
      {true, 0.1, 0.6, 5, 96, 0.95},
      {true, 0.2, 0.9, 1000, 50, 0.7},      /* every past the span: events at start and end */
      {true, 0.5, 0.75, 3, 3, 0.9},         /* start and end round to adjacent steps */
      {false, 0.3, 0.75, 100, 100, 0.9},    /* oneshot: only at start */
      {false, 0, 0.75, 100, 64, 0.6},
  };
  double worst = 0;
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    SparseSpec s = {.on = true, .target = cases[c].sf, .gradual = cases[c].gradual, .start = cases[c].start,
                    .end = cases[c].end, .every = cases[c].every};
    int events = 0;
    double prev = 0;
    for (int64_t t = 0; t <= cases[c].total + 5; t++) {
      bool ev;
      double want = ref_sparsity(&s, cases[c].sf, t, cases[c].total, &ev);
      double got = sp_sparsity_at(&s, cases[c].sf, t, cases[c].total);
      ck_assert_msg(fabs(got - want) <= 1e-12, "case %zu step %lld: sparsity %.15g, expected %.15g", c, (long long)t,
                    got, want);
      ck_assert_msg(sp_is_event(&s, t, cases[c].total) == ev, "case %zu step %lld: event %d, expected %d", c,
                    (long long)t, !ev, ev);
      ck_assert_msg(got >= prev, "case %zu step %lld: the sparsity fell from %g to %g", c, (long long)t, prev, got);
      prev = got, events += ev;
      worst = fmax(worst, fabs(got - want));
    }
    ck_assert_msg(prev == cases[c].sf, "case %zu: ends at %.17g, not the target", c, prev);
    printf("  schedule %-8s start %.2f end %.2f every %4d over %4lld steps: %3d events, max err %.1e\n",
           cases[c].gradual ? "gradual" : "oneshot", cases[c].start, cases[c].end, cases[c].every,
           (long long)cases[c].total, events, worst);
  }
  /* the defaults: events at 150, 250, ..., 650 and 750; 0 before 150 */
  SparseSpec d = {.on = true, .target = 0.9, .gradual = true, .start = 0.15, .end = 0.75, .every = 100};
  ck_assert(sp_sparsity_at(&d, 0.9, 149, 1000) == 0);
  ck_assert(sp_is_event(&d, 150, 1000) && sp_is_event(&d, 650, 1000) && sp_is_event(&d, 750, 1000));
  ck_assert(!sp_is_event(&d, 149, 1000) && !sp_is_event(&d, 700, 1000) && !sp_is_event(&d, 850, 1000));
  ck_assert(fabs(sp_sparsity_at(&d, 0.9, 299, 1000) - 0.9 * (1 - pow(1 - 100.0 / 600, 3))) < 1e-12);
  ck_assert(sp_sparsity_at(&d, 0.9, 750, 1000) == 0.9 && sp_sparsity_at(&d, 0.9, 10000, 1000) == 0.9);
  fflush(stdout);
}
END_TEST

/* the top k of |w| over v[0..n) (ties: the lower index), as a flag per entry */
static const float *topk_v;

static int topk_cmp(const void *a, const void *b) {
  int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
  float x = fabsf(topk_v[i]), y = fabsf(topk_v[j]);
  if (x != y) return x > y ? -1 : 1;
  return i < j ? -1 : i > j;
}

static void ref_topk(const float *v, int64_t n, int64_t k, bool *keep) {
  int64_t *ord = malloc(sizeof(int64_t) * (size_t)n);
  for (int64_t i = 0; i < n; i++) ord[i] = i;
  topk_v = v;
  qsort(ord, (size_t)n, sizeof *ord, topk_cmp);
  memset(keep, 0, (size_t)n);
  for (int64_t i = 0; i < k && i < n; i++) keep[ord[i]] = true;
  free(ord);
}

/* the nnz sparse_prune must leave at step t: (1 - s(t)) R C rounded, the target's at the end */
static int64_t due_nnz(const Net *n, int i, int64_t t, int64_t total) {
  const SparsePlan *s = splan(n, i);
  const SparseSpec *ss = &n->m.sp.layers[i].sparse;
  bool ev;
  double due = ref_sparsity(ss, s->target, t, total, &ev);
  int64_t k = due >= s->target ? s->nnz : (int64_t)llround((1 - due) * (double)(s->R * s->C));
  return k < s->nnz ? s->nnz : k;
}

/* Pruning along gradual schedules without training, on a CSR and a masked layer: at every step
 * the nnz is the one due, only events change it, and (the weights do not move) what is left
 * is the top |w| of the start, ties to the lower index: values quantized to three magnitudes
 * put many ties at every threshold. A pruned entry never returns (the pattern only shrinks). */
START_TEST(schedule_prune_steps) {
  Net *n = sparse_net("sched", "[20]",
                      "  - dense: {units: 64}\n"
                      "  - dense: {units: 48, sparsity: {target: 0.85, start: 0.2, end: 0.7, every: 4}}\n"
                      "  - dense: {units: 16, sparsity: {target: 0.4, start: 0.1, end: 0.5, every: 3}}\n"
                      "  - dense: {units: 3}\n  - softmax: {}\n", 16, "adam", ANY_KERNEL, PAT_FULL);
  const int L[2] = {1, 2};
  ck_assert_int_eq(splan(n, 1)->kernel, SK_CSR);
  ck_assert_int_eq(splan(n, 2)->kernel, SK_MASK);
  const int64_t total = 50;
  float *W0[2];
  bool *prev[2], *now = malloc(3072), *want = malloc(3072);
  TsRng r;
  ts_rng_seed(&r, 5, 5);
  for (int k = 0; k < 2; k++) {
    const SparsePlan *s = splan(n, L[k]);
    const PlanTensor *pt = sparse_tensor(&n->m, L[k]);
    int64_t full = s->R * s->C;
    W0[k] = malloc(sizeof(float) * (size_t)full), prev[k] = malloc((size_t)full);
    for (int64_t x = 0; x < full; x++) {   /* |w| in {0.1, 0.2, 0.3}, random signs */
      float v = 0.1f * (float)(1 + ts_rng_below(&r, 3)) * (ts_rng_below(&r, 2) ? 1 : -1);
      W0[k][x] = v;
      n->m.P[pt->offset + (s->kernel == SK_CSR ? x : mask_index(pt, s, x / s->C, x % s->C))] = v;
      prev[k][x] = true;
    }
  }
  int nevents = 0, nchanged = 0;
  char *rep = NULL;
  size_t replen = 0;
  for (int64_t t = 0; t <= total + 3; t++) {
    n->m.t = t;
    int changed = sparse_prune(&n->m, total), expect_changed = 0;
    for (int k = 0; k < 2; k++) {
      const SparsePlan *s = splan(n, L[k]);
      int64_t full = s->R * s->C, nnz = sparse_nnz(&n->m, L[k]), due = due_nnz(n, L[k], t, total);
      ck_assert_msg(nnz == due, "layer %d step %lld: %lld kept, %lld due", L[k], (long long)t, (long long)nnz,
                    (long long)due);
      float *W = malloc(sizeof(float) * (size_t)full);
      ck_assert_int_eq(dense_view(n, L[k], W, now), nnz);
      ref_topk(W0[k], full, nnz, want);
      int64_t gone = 0;
      for (int64_t x = 0; x < full; x++) {
        ck_assert_msg(!now[x] || prev[k][x], "layer %d step %lld: entry %lld came back", L[k], (long long)t, (long long)x);
        ck_assert_msg(now[x] == want[x], "layer %d step %lld: entry %lld (|w| %g) %s, magnitude order says %s", L[k],
                      (long long)t, (long long)x, fabsf(W0[k][x]), now[x] ? "kept" : "pruned", want[x] ? "keep" : "prune");
        if (now[x]) ck_assert(W[x] == W0[k][x]);   /* the kept values are untouched */
        gone += prev[k][x] && !now[x];
        prev[k][x] = now[x];
      }
      bool ev;
      ref_sparsity(&n->m.sp.layers[L[k]].sparse, s->target, t, total, &ev);
      ck_assert_msg(ev || !gone, "layer %d: step %lld is no event but pruned %lld", L[k], (long long)t, (long long)gone);
      expect_changed += gone > 0, nevents += ev;
      free(W);
    }
    ck_assert_int_eq(changed, expect_changed);
    nchanged += changed;
  }
  for (int k = 0; k < 2; k++) ck_assert_int_eq(sparse_nnz(&n->m, L[k]), splan(n, L[k])->nnz);
  FILE *f = open_memstream(&rep, &replen);
  sparse_report(&n->m, f);
  fclose(f);
  printf("  schedule in process: %d events, %d pruning layer-steps; report:\n", nevents, nchanged);
  for (char *l = strtok(rep, "\n"); l; l = strtok(NULL, "\n")) printf("    %s\n", l);
  free(rep), rep = NULL;   /* strtok cut it: write it again */
  f = open_memstream(&rep, &replen);
  sparse_report(&n->m, f);
  fclose(f);
  char *want1 = xprintf("%lld of 3072 weights kept", (long long)splan(n, 1)->nnz);
  char *want2 = xprintf("%lld of 768 weights kept", (long long)splan(n, 2)->nnz);
  ck_assert_msg(strstr(rep, want1) && strstr(rep, want2), "report:\n%s", rep);
  ck_assert_int_eq(splan(n, 1)->nnz, 461);   /* round(0.15 x 3072) */
  ck_assert_int_eq(splan(n, 2)->nnz, 461);   /* round(0.6 x 768) */
  free(want1), free(want2), free(rep);
  for (int k = 0; k < 2; k++) free(W0[k]), free(prev[k]);
  free(now), free(want);
  net_free(n);
  fflush(stdout);
}
END_TEST

/* ---- 4. optimizer steps keep pruned weights at zero ---------------------------------------- */

static const struct { const char *label, *yaml; } opt_cases[] = {
    {"adam", "{adam: {lr: 0.01}}"},
    {"adamw", "{adamw: {lr: 0.01, weight_decay: 0.1}}"},
    {"sgd_momentum", "{sgd: {lr: 0.1, momentum: 0.9, weight_decay: 0.05}}"},
    {"sgd_nesterov", "{sgd: {lr: 0.1, momentum: 0.8, nesterov: true, dampening: 0, weight_decay: 0.01}}"},
    {"sgd_plain", "{sgd: {lr: 0.1, weight_decay: 0.02}}"},
};

/* layer i's weight (slot -1) or optimizer slot as a dense (R, C) matrix, zeros off the pattern */
static float *layer_dense(const Net *n, int i, int slot) {
  const SparsePlan *s = splan(n, i);
  int64_t full = s->R * s->C;
  int32_t *crow = malloc(sizeof(int32_t) * (size_t)(s->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)full);
  float *v = malloc(sizeof(float) * (size_t)full), *d = calloc((size_t)full, sizeof(float));
  sparse_export(&n->m, i, crow, col, v, slot);
  for (int64_t r = 0; r < s->R; r++)
    for (int32_t p = crow[r]; p < crow[r + 1]; p++) d[r * s->C + col[p]] = v[p];
  free(crow), free(col), free(v);
  return d;
}

static int opt_slots(const Model *m) { return m->pl.opt_block ? (m->pl.opt_block == m->pl.grad_block ? 1 : 2) : 0; }

/* A CSR layer and a masked one, oneshot at step 3 of 6. Three dense steps (the optimizer
 * state fills in everywhere), the event (pruned weights and their state go to 0), then six
 * more steps: the pattern is the same after each, every pruned weight and its state exactly
 * 0, the CSR arrays past nnz too, and the kept weights move. */
START_TEST(optimizer_keeps_pattern) {
  Net *n = sparse_net(opt_cases[_i].label, "[20]",
                      "  - dense: {units: 64}\n"
                      "  - dense: {units: 48, " ONESHOT("0.9") "}\n"
                      "  - leaky_relu: {slope: 0.1}\n"
                      "  - dense: {units: 16, " ONESHOT("0.3") "}\n"
                      "  - dense: {units: 3}\n  - softmax: {}\n", 32, opt_cases[_i].yaml, ANY_KERNEL, PAT_FULL);
  Model *m = &n->m;
  const int L[2] = {1, 3};
  ck_assert_int_eq(splan(n, 1)->kernel, SK_CSR);
  ck_assert_int_eq(splan(n, 3)->kernel, SK_MASK);
  int ns = opt_slots(m);
  float *before[2][3];   /* [layer][weight, slot 0, slot 1] as dense (R, C), just before the event */
  for (int32_t t = 1; t <= 3; t++) {
    fill_batch(n, 40 + (uint64_t)t);
    TeslaStep s = net_step(n, t, (float)m->sp.train.lr, 9);
    m->train_step(&s);
    m->t = t;
    if (t == 3)
      for (int k = 0; k < 2; k++)
        for (int q = 0; q < 1 + ns; q++) before[k][q] = layer_dense(n, L[k], q - 1);
    ck_assert_int_eq(sparse_prune(m, 6), t == 3 ? 2 : 0);
  }
  /* the event kept the survivors' weights and optimizer state, each at its (row, column): CSR
   * compacts values and state together */
  int64_t same = 0;
  for (int k = 0; k < 2; k++) {
    const SparsePlan *s = splan(n, L[k]);
    for (int q = 0; q < 1 + ns; q++) {
      float *after = layer_dense(n, L[k], q - 1);
      bool *on = malloc((size_t)(s->R * s->C));
      dense_view(n, L[k], NULL, on);
      for (int64_t x = 0; x < s->R * s->C; x++) {
        if (!on[x]) continue;
        ck_assert_msg(after[x] == before[k][q][x], "%s: layer %d entry (%lld, %lld): %s %g before the event, %g after",
                      opt_cases[_i].label, L[k], (long long)(x / s->C), (long long)(x % s->C),
                      q ? "optimizer state" : "weight", before[k][q][x], after[x]);
        same++;
      }
      free(after), free(on), free(before[k][q]);
    }
  }
  bool *kept[2];
  int32_t *crow0[2], *col0[2];
  float *kept_w[2];
  for (int k = 0; k < 2; k++) {
    const SparsePlan *s = splan(n, L[k]);
    int64_t full = s->R * s->C;
    kept[k] = malloc((size_t)full);
    ck_assert_int_eq(dense_view(n, L[k], NULL, kept[k]), s->nnz);
    crow0[k] = malloc(sizeof(int32_t) * (size_t)(s->R + 1)), col0[k] = malloc(sizeof(int32_t) * (size_t)full);
    kept_w[k] = malloc(sizeof(float) * (size_t)full);
    sparse_export(m, L[k], crow0[k], col0[k], kept_w[k], -1);
    /* state on the pattern is live (not vacuous), off it 0 */
    int64_t live = 0;
    for (int q = 0; q < ns; q++) {
      float *st = malloc(sizeof(float) * (size_t)full);
      sparse_export(m, L[k], NULL, NULL, st, q);
      for (int64_t p = 0; p < s->nnz; p++) live += st[p] != 0;
      free(st);
    }
    if (ns) ck_assert_msg(live > s->nnz * ns / 2, "layer %d: optimizer state mostly 0 before the steps", L[k]);
  }
  int64_t moved = 0, nkept = 0;
  for (int32_t t = 4; t <= 9; t++) {
    fill_batch(n, 40 + (uint64_t)t);
    TeslaStep s = net_step(n, t, (float)m->sp.train.lr, 9);
    m->train_step(&s);
    m->t = t;
    ck_assert_int_eq(sparse_prune(m, 6), 0);   /* oneshot: no event after the start */
    for (int k = 0; k < 2; k++) {
      const SparsePlan *s2 = splan(n, L[k]);
      const PlanTensor *pt = sparse_tensor(m, L[k]);
      int64_t full = s2->R * s2->C;
      ck_assert_int_eq(sparse_nnz(m, L[k]), s2->nnz);
      int32_t *crow = malloc(sizeof(int32_t) * (size_t)(s2->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)full);
      sparse_export(m, L[k], crow, col, NULL, -1);
      ck_assert_msg(!memcmp(crow, crow0[k], sizeof(int32_t) * (size_t)(s2->R + 1)) &&
                        !memcmp(col, col0[k], sizeof(int32_t) * (size_t)s2->nnz),
                    "%s: layer %d's pattern changed at step %d", opt_cases[_i].label, L[k], t);
      free(crow), free(col);
      const float *w = m->P + pt->offset, *g = m->G + pt->grad_offset;
      for (int64_t i = 0; i < pt->elems; i++) {
        bool live = s2->kernel == SK_CSR ? i < s2->nnz : m->P[s2->mask + i] != 0;
        ck_assert_msg(g[i] == 0, "%s: the step left a gradient", opt_cases[_i].label);
        if (live) continue;
        ck_assert_msg(w[i] == 0, "%s step %d: layer %d's pruned %s %lld is %g", opt_cases[_i].label, t, L[k],
                      s2->kernel == SK_CSR ? "slot" : "weight", (long long)i, w[i]);
        for (int q = 0; q < ns; q++) {
          float o = m->O[(int64_t)q * m->pl.grad_block + pt->grad_offset + i];
          ck_assert_msg(o == 0, "%s step %d: layer %d's pruned entry %lld has optimizer state %g (slot %d)",
                        opt_cases[_i].label, t, L[k], (long long)i, o, q);
        }
      }
      if (t == 9) {   /* the kept weights trained */
        float *v = malloc(sizeof(float) * (size_t)full);
        sparse_export(m, L[k], NULL, NULL, v, -1);
        for (int64_t p = 0; p < s2->nnz; p++) moved += v[p] != kept_w[k][p];
        nkept += s2->nnz;
        free(v);
      }
    }
  }
  printf("  opt %-13s the event kept %lld survivors' values and state; 6 steps after it: pattern fixed, pruned "
         "weights and state 0; %lld of %lld kept weights moved\n", opt_cases[_i].label, (long long)same,
         (long long)moved, (long long)nkept);
  ck_assert_msg(moved * 10 > nkept * 9, "only %lld of %lld kept weights moved", (long long)moved, (long long)nkept);
  for (int k = 0; k < 2; k++) free(kept[k]), free(crow0[k]), free(col0[k]), free(kept_w[k]);
  net_free(n);
  fflush(stdout);
}
END_TEST

/* ---- the command line: a synthetic IDX dataset and the built teslac ------------------------ */

/* optimizer steps per epoch over net.h's synthetic training set at batch 32 */
enum { STEPS_PER_EPOCH = NTRAIN / 32 };

/* three kinds of pruned weight in one model: a masked conv (4 x 9), a CSR dense 64 -> 48 and
 * a masked dense 48 -> 4, on a gradual schedule from step 10 to 77 of 96, every 8 */
#define SCHED "start: 0.1, end: 0.8, every: 8"
static const char sparse_layers[] =
    "  - conv: {filters: 4, kernel: 3, padding: same, sparsity: {target: 0.5, " SCHED "}}\n"
    "  - relu: {}\n"
    "  - maxpool: {size: 2}\n"
    "  - dense: {units: 48, sparsity: {target: 0.9, " SCHED "}}\n"
    "  - relu: {}\n"
    "  - dense: {units: 4, sparsity: {target: 0.5, " SCHED "}}\n"
    "  - softmax: {}\n";

/* a spec over the synthetic training and test sets, in the scratch folder */
static char *write_spec(const char *file, const char *layers, const char *optimizer) {
  return synth_spec(file, layers, optimizer, "train-images.gz", "train-labels.gz", true);
}

static void make_dataset(void) {
  synth_dataset();
  free(write_spec("sparse.yaml", sparse_layers, "adam"));
}

/* The CSR entries of `name` in checkpoint f: lengths, crow from 0 to nnz and non-decreasing,
 * columns in range and strictly increasing per row, the optimizer values on the pattern.
 * Returns nnz. */
static int64_t check_csr(const TsStFile *f, const char *name, int64_t R, int64_t C, int slots, const char *slot0) {
  char key[128];
  snprintf(key, sizeof key, "%s.values", name);
  const TsTensor *v = ts_st_find(f, key);
  snprintf(key, sizeof key, "%s.crow_indices", name);
  const TsTensor *cr = ts_st_find(f, key);
  snprintf(key, sizeof key, "%s.col_indices", name);
  const TsTensor *cl = ts_st_find(f, key);
  ck_assert_msg(v && cr && cl, "%s: no CSR entries", name);
  ck_assert_msg(!ts_st_find(f, name), "%s: a dense copy as well", name);
  ck_assert(v->dtype == TS_F32 && cr->dtype == TS_I32 && cl->dtype == TS_I32);
  ck_assert(v->ndims == 1 && cr->ndims == 1 && cl->ndims == 1);
  int64_t nnz = v->shape[0];
  ck_assert_int_eq(cl->shape[0], nnz);
  ck_assert_int_eq(cr->shape[0], R + 1);
  const int32_t *crow = cr->data, *col = cl->data;
  ck_assert_int_eq(crow[0], 0);
  ck_assert_int_eq(crow[R], nnz);
  for (int64_t r = 0; r < R; r++) {
    ck_assert_int_le(crow[r], crow[r + 1]);
    for (int32_t p = crow[r]; p < crow[r + 1]; p++) {
      ck_assert(col[p] >= 0 && col[p] < C);
      if (p > crow[r]) ck_assert_int_gt(col[p], col[p - 1]);
    }
  }
  const float *val = v->data;
  for (int64_t p = 0; p < nnz; p++) ck_assert_msg(val[p] != 0, "%s.values[%lld] is 0", name, (long long)p);
  for (int s = 0; s < slots; s++) {
    snprintf(key, sizeof key, "__opt__.%s.%s.values", s ? "exp_avg_sq" : slot0, name);
    const TsTensor *o = ts_st_find(f, key);
    ck_assert_msg(o && o->ndims == 1 && o->shape[0] == nnz, "%s: missing or of another length", key);
    snprintf(key, sizeof key, "__opt__.%s.%s", s ? "exp_avg_sq" : slot0, name);
    ck_assert_msg(!ts_st_find(f, key), "%s: dense optimizer state as well", key);
  }
  return nnz;
}

/* the three sparse layers of sparse_layers: name, matrix view, target */
static const struct { const char *name; int64_t R, C; double target; const char *shape; } cli_sparse[] = {
    {"0.weight", 4, 9, 0.5, "[4, 1, 3, 3]"},
    {"3.weight", 48, 64, 0.9, "[48, 64]"},
    {"5.weight", 4, 48, 0.5, "[4, 48]"},
};

/* nnz due at step t of 96 on sparse_layers' schedule */
static int64_t cli_due(int k, int64_t t) {
  SparseSpec s = {.on = true, .gradual = true, .start = 0.1, .end = 0.8, .every = 8, .target = cli_sparse[k].target};
  bool ev;
  double due = ref_sparsity(&s, s.target, t, 3 * STEPS_PER_EPOCH, &ev);
  int64_t full = cli_sparse[k].R * cli_sparse[k].C, fin = (int64_t)llround((1 - s.target) * (double)full);
  int64_t n = due >= s.target ? fin : (int64_t)llround((1 - due) * (double)full);
  return n < fin ? fin : n;
}

/* ---- 5. training, checkpoints, resume ------------------------------------------------------- */

/* 96 steps straight against 40, resumed to 70, resumed to the end: every tensor the same
 * bytes (values, CSR indices, optimizer values). The schedule spans the run (events 10, 18,
 * ..., 74, 77), so both halves prune. Then the file's CSR: nnz at the target, round((1 - s_f)
 * R C), at step 40 the nnz the schedule had due; the metadata; the report; it learned. */
START_TEST(cli_resume_sparse) {
  char *spec = tmp_path("sparse.yaml"), *full = tmp_path("sp_full.st"), *r40 = tmp_path("sp_r40.st"),
       *r70 = tmp_path("sp_r70.st"), *r96 = tmp_path("sp_r96.st");
  Cli a = CLI("train", spec, "--threads", "2", "-o", full);
  cli_ok(&a);
  Cli b = CLI("train", spec, "--steps", "40", "--threads", "2", "-o", r40);
  cli_ok(&b);
  Cli c = CLI("train", spec, "--steps", "70", "--threads", "2", "--resume", r40, "-o", r70);
  cli_ok(&c);
  Cli d = CLI("train", spec, "--threads", "2", "--resume", r70, "-o", r96);
  cli_ok(&d);
  char buf[64];
  ck_assert_str_eq(ckpt_meta(r40, "step", buf, sizeof buf), "40");
  ck_assert_str_eq(ckpt_meta(r70, "step", buf, sizeof buf), "70");
  ck_assert_str_eq(ckpt_meta(full, "step", buf, sizeof buf), "96");
  ck_assert_str_eq(ckpt_meta(r40, "prune_total_steps", buf, sizeof buf), "96");
  ck_assert_str_eq(ckpt_meta(full, "prune_total_steps", buf, sizeof buf), "96");
  int diff = ckpt_diff(full, r96, true);
  printf("  sparse resume 40 -> 70 -> 96 vs 96 straight: %d tensors differ\n", diff);
  ck_assert_int_eq(diff, 0);
  for (int which = 0; which < 3; which++) {
    const char *path = which == 0 ? r40 : which == 1 ? r70 : full;
    int64_t step = which == 0 ? 40 : which == 1 ? 70 : 96;
    TsStFile f;
    TsErr e;
    ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
    for (int k = 0; k < 3; k++) {
      int64_t nnz = check_csr(&f, cli_sparse[k].name, cli_sparse[k].R, cli_sparse[k].C, 2, "exp_avg");
      int64_t due = cli_due(k, step);
      printf("  %s at step %lld: %lld of %lld kept (schedule: %lld)\n", cli_sparse[k].name, (long long)step,
             (long long)nnz, (long long)(cli_sparse[k].R * cli_sparse[k].C), (long long)due);
      ck_assert_int_eq(nnz, due);
      char key[64];
      snprintf(key, sizeof key, "%s.shape", cli_sparse[k].name);
      ck_assert_str_eq(ts_st_meta(&f, key) ? ts_st_meta(&f, key) : "(none)", cli_sparse[k].shape);
    }
    ts_st_free(&f);
  }
  /* at the end every layer is at its target: round((1 - s_f) R C) */
  ck_assert_int_eq(cli_due(0, 96), 18);
  ck_assert_int_eq(cli_due(1, 96), 307);
  ck_assert_int_eq(cli_due(2, 96), 96);
  ck_assert_msg(strstr(a.out, "18 of 36 weights kept") && strstr(a.out, "307 of 3072 weights kept") &&
                    strstr(a.out, "96 of 192 weights kept"), "the report:\n%s", a.out);
  double acc = parse_last(a.out, "test acc ");
  printf("  sparse synthetic: test accuracy %.4f after 3 epochs\n", acc);
  ck_assert_msg(acc > 0.8, "test accuracy %.4f", acc);
  /* eval reads the CSR checkpoint and agrees with the last epoch's evaluation */
  Cli ev = CLI("eval", spec, "--weights", full, "--threads", "2");
  cli_ok(&ev);
  double acc2 = parse_last(ev.out, "test accuracy ");
  ck_assert_msg(fabs(acc - acc2) < 1e-4, "train said %.4f, eval says %.4f", acc, acc2);
  Cli pr = CLI("predict", spec, "--weights", full);
  cli_ok(&pr);
  /* eval at other batches: the scalar path (1) and past 64 lanes (70) give the same numbers */
  for (int k = 0; k < 2; k++) {
    Cli eb = CLI("eval", spec, "--weights", full, "--batch", k ? "70" : "1");
    cli_ok(&eb);
    double l0 = parse_last(ev.out, "test loss "), l1 = parse_last(eb.out, "test loss ");
    double a1 = parse_last(eb.out, "test accuracy ");
    printf("  eval --batch %s: test loss %.6f accuracy %.4f (batch 32: %.6f, %.4f)\n", k ? "70" : "1", l1, a1, l0, acc2);
    ck_assert_msg(fabs(l0 - l1) < 1e-4 && fabs(a1 - acc2) < 1e-9, "--batch %s:\n%s", k ? "70" : "1", eb.out);
    cli_free(&eb);
  }
  /* a resumed run keeps the schedule's length from the checkpoint (96 steps), even when
   * --epochs now asks for 4 epochs: at step 60 the nnz is the 96-step schedule's */
  char *r60 = tmp_path("sp_r60_e4.st"), buf2[64];
  Cli e4 = CLI("train", spec, "--epochs", "4", "--steps", "60", "--threads", "2", "--resume", r40, "-o", r60);
  cli_ok(&e4);
  ck_assert_str_eq(ckpt_meta(r60, "prune_total_steps", buf2, sizeof buf2), "96");
  {
    TsStFile f;
    TsErr e;
    ck_assert_msg(ts_st_read(r60, &f, &e) == 0, "%s", e.msg);
    for (int k = 0; k < 3; k++) {
      int64_t nnz = check_csr(&f, cli_sparse[k].name, cli_sparse[k].R, cli_sparse[k].C, 2, "exp_avg");
      ck_assert_msg(nnz == cli_due(k, 60), "%s at step 60 after a resume with --epochs 4: %lld kept, the 96-step "
                    "schedule has %lld", cli_sparse[k].name, (long long)nnz, (long long)cli_due(k, 60));
    }
    ts_st_free(&f);
  }
  cli_free(&e4);
  free(r60);
  cli_free(&a), cli_free(&b), cli_free(&c), cli_free(&d), cli_free(&ev), cli_free(&pr);
  free(spec), free(full), free(r40), free(r70), free(r96);
}
END_TEST

/* the same resume with SGD + momentum (one optimizer slot, 'momentum') and a masked-only
 * model, resumed at an epoch boundary (32) */
START_TEST(cli_resume_sgd) {
  char *spec = write_spec("sparse_sgd.yaml",
                          "  - dense: {units: 24, sparsity: {target: 0.4, start: 0.2, end: 0.6, every: 5}}\n"
                          "  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n",
                          "{sgd: {momentum: 0.9, weight_decay: 0.01}}");
  char *full = tmp_path("sgd_full.st"), *r32 = tmp_path("sgd_r32.st"), *r96 = tmp_path("sgd_r96.st");
  Cli a = CLI("train", spec, "--threads", "2", "-o", full);
  cli_ok(&a);
  Cli b = CLI("train", spec, "--steps", "32", "--threads", "2", "-o", r32);
  cli_ok(&b);
  Cli c = CLI("train", spec, "--threads", "2", "--resume", r32, "-o", r96);
  cli_ok(&c);
  int diff = ckpt_diff(full, r96, true);
  printf("  sgd sparse resume 32 -> 96 vs 96 straight: %d tensors differ\n", diff);
  ck_assert_int_eq(diff, 0);
  TsStFile f;
  TsErr e;
  ck_assert_msg(ts_st_read(full, &f, &e) == 0, "%s", e.msg);
  int64_t nnz = check_csr(&f, "0.weight", 24, 64, 1, "momentum");
  ck_assert_int_eq(nnz, 922);   /* round(0.6 x 1536) */
  ck_assert(!ts_st_find(&f, "__opt__.exp_avg_sq.0.weight.values"));
  ts_st_free(&f);
  cli_free(&a), cli_free(&b), cli_free(&c);
  free(spec), free(full), free(r32), free(r96);
}
END_TEST

/* 90% pruned from step 0 (oneshot at start 0): the file holds a tenth of the weight plus its
 * indices, and is much smaller than the dense model's */
START_TEST(cli_file_size) {
  char *sspec = write_spec("size_sparse.yaml",
                           "  - dense: {units: 256, sparsity: {target: 0.9, schedule: oneshot, start: 0}}\n"
                           "  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n", "adam");
  char *dspec = write_spec("size_dense.yaml", "  - dense: {units: 256}\n  - relu: {}\n  - dense: {units: 4}\n"
                                              "  - softmax: {}\n", "adam");
  char *sp = tmp_path("size_sparse.st"), *dp = tmp_path("size_dense.st");
  Cli a = CLI("train", sspec, "--steps", "3", "--threads", "2", "-o", sp);
  cli_ok(&a);
  Cli b = CLI("train", dspec, "--steps", "3", "--threads", "2", "-o", dp);
  cli_ok(&b);
  TsStFile f;
  TsErr e;
  ck_assert_msg(ts_st_read(sp, &f, &e) == 0, "%s", e.msg);
  int64_t nnz = check_csr(&f, "0.weight", 256, 64, 2, "exp_avg");
  ts_st_free(&f);
  long ss = file_size(sp), ds = file_size(dp);
  printf("  file size: sparse 90%% %ld bytes, dense %ld bytes (%.3fx); %lld of 16384 kept\n", ss, ds,
         (double)ss / (double)ds, (long long)nnz);
  ck_assert_int_eq(nnz, 1638);   /* round(0.1 x 16384): pruned before the first step */
  ck_assert_msg(ss > 0 && ds > 0 && ss * 10 < ds * 3, "the sparse file is %ld bytes, the dense %ld", ss, ds);
  cli_free(&a), cli_free(&b);
  free(sspec), free(dspec), free(sp), free(dp);
}
END_TEST


/* ---- 6. the planner ------------------------------------------------------------------------- */

typedef struct Planned {
  Ctx   cx;
  Spec  sp;
  Plan  pl;
  char *err;
  size_t errlen;
  FILE *errf;
} Planned;

static Planned *plan_src(const char *src) {
  Planned *p = calloc(1, sizeof *p);
  p->errf = open_memstream(&p->err, &p->errlen);
  ctx_init(&p->cx, "mem.yaml", p->errf);
  ctx_set_source(&p->cx, src, strlen(src));
  int rc = tesla_front(&p->cx, &p->sp);
  fflush(p->errf);
  ck_assert_msg(rc == 0, "spec errors:\n%s\nin:\n%s", p->err, src);
  plan_spec(&p->cx, &p->sp, p->sp.train.batch, &p->pl);
  fflush(p->errf);
  return p;
}

static void plan_free(Planned *p) {
  ctx_free(&p->cx);
  fclose(p->errf);
  free(p->err);
  free(p);
}

static int64_t bias_params(const Layer *l) {
  return l->op == OP_dense ? (l->u.dense.bias ? l->u.dense.units : 0) : (l->u.conv.bias ? l->u.conv.filters : 0);
}

/* the plan's parameters, summed here from its layers: a sparse layer counts its nnz */
static int64_t plan_params(const Planned *p) {
  int64_t n = 0;
  for (int i = 0; i < p->sp.nlayers; i++) n += p->pl.layers[i].params;
  ck_assert_int_eq(n, p->pl.params);
  return n;
}

/* sparsity: auto under max_params and ratio: one target for the auto layers (each nnz is
 * floor((1 - s) R C)), the budget met and nearly reached */
START_TEST(planner_auto_budget) {
  const char *layers = "  - dense: {units: 512, sparsity: auto}\n  - relu: {}\n"
                       "  - dense: {units: 256, sparsity: auto}\n  - relu: {}\n"
                       "  - dense: {units: 10}\n  - softmax: {}\n";
  const char *compress[] = {"{max_params: 100000}", "{max_params: 30000}", "{max_params: 8000}", "{ratio: 10}",
                            "{ratio: 50}"};
  int64_t dense_total = 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10;
  for (size_t c = 0; c < sizeof compress / sizeof *compress; c++) {
    char *base = spec_src("plan", "[784]", 10, layers, "adam", 32);
    char *src = xprintf("%scompress: %s\n", base, compress[c]);
    Planned *p = plan_src(src);
    ck_assert_msg(p->cx.nerrors == 0 && p->errlen == 0, "%s: diagnostics:\n%s", compress[c], p->err);
    int64_t budget = strstr(compress[c], "max_params") ? atoll(strchr(compress[c], ':') + 1)
                                                       : dense_total / atoll(strchr(compress[c], ':') + 1);
    int64_t params = plan_params(p);
    const SparsePlan *a = &p->pl.layers[0].sp, *b = &p->pl.layers[2].sp;
    ck_assert(a->on && b->on && p->pl.layers[0].storage == ST_SPARSE && p->pl.layers[2].storage == ST_SPARSE);
    /* one target: what the budget leaves (everything but the auto weights) over their size */
    int64_t fixed = 512 + 256 + 256 * 10 + 10, autos = 784 * 512 + 512 * 256;
    double s = 1 - (double)(budget - fixed) / (double)autos;
    ck_assert_int_eq(a->nnz, (int64_t)floor((1 - s) * (double)(784 * 512)));
    ck_assert_int_eq(b->nnz, (int64_t)floor((1 - s) * (double)(512 * 256)));
    ck_assert_int_eq(p->pl.layers[0].params, a->nnz + 512);
    double dt = fabs(a->target - b->target);
    printf("  planner %-22s budget %7lld: %7lld params, targets %.6f and %.6f (%s, %s)\n", compress[c],
           (long long)budget, (long long)params, a->target, b->target, a->kernel == SK_CSR ? "csr" : "mask",
           b->kernel == SK_CSR ? "csr" : "mask");
    ck_assert_msg(params <= budget, "%s: %lld params over the budget %lld", compress[c], (long long)params,
                  (long long)budget);
    ck_assert_msg(params >= budget - 2, "%s: %lld params, the budget %lld allows more", compress[c],
                  (long long)params, (long long)budget);
    ck_assert_msg(dt < 1e-4, "targets %g and %g", a->target, b->target);
    plan_free(p);
    free(base), free(src);
  }
  /* without compress: 0.9 */
  char *src = spec_src("plan", "[784]", 10, layers, "adam", 32);
  Planned *p = plan_src(src);
  ck_assert_msg(p->cx.nerrors == 0, "%s", p->err);
  ck_assert_int_eq(p->pl.layers[0].sp.nnz, (int64_t)floor((1 - 0.9) * (double)(784 * 512)));
  ck_assert(fabs(p->pl.layers[2].sp.target - 0.9) < 1e-4);
  plan_free(p);
  free(src);
  /* a budget below what the fixed layers keep: an error at compress */
  char *base = spec_src("plan", "[784]", 10, layers, "adam", 32);
  src = xprintf("%scompress: {max_params: 3000}\n", base);
  p = plan_src(src);
  ck_assert_msg(p->cx.nerrors >= 1 && strstr(p->err, "compress cannot be met") && strstr(p->err, "mem.yaml:"),
                "%s", p->err);
  printf("  planner: budget 3000: %s", p->err);
  plan_free(p);
  free(base), free(src);
}
END_TEST

/* the kernel by the cost model: a 1024 x 1024 dense layer at batch 32 runs CSR at 0.9 and masked
 * at 0.2; a conv is always masked (no sparse conv kernels), even at 0.99 */
START_TEST(planner_kernels) {
  static const struct { const char *input, *layer; int idx; SparseKernel want; int64_t R, C; double target; } cases[] = {
      {"[64]", "  - dense: {units: 1024}\n  - dense: {units: 1024, sparsity: 0.9}\n", 1, SK_CSR, 1024, 1024, 0.9},
      {"[64]", "  - dense: {units: 1024}\n  - dense: {units: 1024, sparsity: 0.2}\n", 1, SK_MASK, 1024, 1024, 0.2},
      {"[1024]", "  - dense: {units: 1024, sparsity: 0.9}\n", 0, SK_CSR, 1024, 1024, 0.9},
      {"[1024]", "  - dense: {units: 1024, bias: false, sparsity: 0.2}\n", 0, SK_MASK, 1024, 1024, 0.2},
      {"[16, 12, 12]", "  - conv: {filters: 32, kernel: 3, sparsity: 0.99}\n", 0, SK_MASK, 32, 144, 0.99},
      {"[16, 12, 12]", "  - conv: {filters: 8, kernel: 3}\n  - conv: {filters: 32, kernel: 3, sparsity: 0.95}\n", 1,
       SK_MASK, 32, 72, 0.95},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    char *layers = xprintf("%s  - dense: {units: 10}\n  - softmax: {}\n", cases[c].layer);
    char *src = spec_src("kern", cases[c].input, 10, layers, "adam", 32);
    Planned *p = plan_src(src);
    ck_assert_msg(p->cx.nerrors == 0, "%s", p->err);
    const PlanLayer *pl = &p->pl.layers[cases[c].idx];
    const SparsePlan *s = &pl->sp;
    int64_t full = cases[c].R * cases[c].C, nnz = (int64_t)llround((1 - cases[c].target) * (double)full);
    double dense_cost = (double)s->dense_flops.fwd + (double)s->dense_flops.bwd;
    const char *line = cases[c].layer;
    for (int k = 0; k < cases[c].idx; k++) line = strchr(line, '\n') + 1;
    printf("  planner %-46.*s at batch 32: %s (csr cost %.4g, dense %.4g)\n", (int)strcspn(line + 4, "\n"), line + 4,
           s->kernel == SK_CSR ? "csr" : "mask", s->csr_cost, dense_cost);
    ck_assert_int_eq(pl->storage, ST_SPARSE);
    ck_assert_int_eq(s->kernel, cases[c].want);
    ck_assert_int_eq(s->R, cases[c].R);
    ck_assert_int_eq(s->C, cases[c].C);
    ck_assert_int_eq(s->nnz, nnz);
    ck_assert_int_eq(pl->params, nnz + bias_params(&p->sp.layers[cases[c].idx]));
    ck_assert_int_eq(pl->dense_params, full + bias_params(&p->sp.layers[cases[c].idx]));
    /* the choice is the cheaper one */
    if (s->kernel == SK_CSR) ck_assert(s->csr_cost < dense_cost && s->flops.fwd < s->dense_flops.fwd);
    else ck_assert(s->csr_cost >= dense_cost || p->sp.layers[cases[c].idx].op == OP_conv);
    if (p->sp.layers[cases[c].idx].op == OP_conv) ck_assert(isinf(s->csr_cost));
    plan_free(p);
    free(layers), free(src);
  }
}
END_TEST

/* tt: auto + sparsity: auto on the same layers: each gets one of them, the budget is met */
START_TEST(planner_tt_or_sparse) {
  const char *layers = "  - dense: {units: 1024, tt: auto, sparsity: auto}\n  - leaky_relu: {}\n"
                       "  - dense: {units: 1024, tt: auto, sparsity: auto}\n  - leaky_relu: {}\n"
                       "  - dense: {units: 10}\n  - softmax: {}\n";
  int64_t budgets[] = {200000, 60000, 20000};
  for (int bi = 0; bi < 3; bi++) {
    char *base = spec_src("both", "[1024]", 10, layers, "adam", 32);
    char *src = xprintf("%scompress: {max_params: %lld}\n", base, (long long)budgets[bi]);
    Planned *p = plan_src(src);
    ck_assert_msg(p->cx.nerrors == 0, "%s", p->err);
    int64_t params = plan_params(p);
    for (int i = 0; i < 3; i += 2) {
      const PlanLayer *pl = &p->pl.layers[i];
      ck_assert_msg(pl->storage == ST_TT || pl->storage == ST_SPARSE, "budget %lld: layer %d is %d",
                    (long long)budgets[bi], i, pl->storage);
      if (pl->storage == ST_TT) ck_assert(!pl->sp.on && pl->tt.d > 0);
      else ck_assert(pl->sp.on && pl->sp.auto_chosen && pl->tt.d == 0 && pl->sp.nnz > 0);
    }
    printf("  planner tt/sparse budget %6lld: %6lld params; layer 0 %s, layer 2 %s\n", (long long)budgets[bi],
           (long long)params, p->pl.layers[0].storage == ST_TT ? "tt" : "sparse",
           p->pl.layers[2].storage == ST_TT ? "tt" : "sparse");
    ck_assert_msg(params <= budgets[bi], "budget %lld: %lld params", (long long)budgets[bi], (long long)params);
    plan_free(p);
    free(base), free(src);
  }
}
END_TEST

/* Many pruned layers: the checkpoint lists each one's dense shape in its metadata next to the
 * fixed keys. A regression test: model_save's metadata once was a fixed array of 68 pairs that
 * 62 or more pruned layers overflowed (SIGSEGV after writing the file); here model_save runs on
 * the plan alone (no JIT: the 64 layers would take seconds to compile). */
START_TEST(many_sparse_layers_save) {
  char *layers = strdup("");
  for (int i = 0; i < 64; i++) {
    char *l = xprintf("%s  - dense: {units: 4, sparsity: 0.5}\n", layers);
    free(layers), layers = l;
  }
  char *l2 = xprintf("%s  - softmax: {}\n", layers);
  char *src = spec_src("many", "[4]", 4, l2, "adam", 4);
  Planned *p = plan_src(src);
  ck_assert_msg(p->cx.nerrors == 0, "%s", p->err);
  Model *m = calloc(1, sizeof *m);
  m->sp = p->sp, m->pl = p->pl;
  m->P = calloc((size_t)m->pl.param_block + 1, sizeof(float));
  m->O = calloc((size_t)m->pl.opt_block + 1, sizeof(float));
  m->t = 1, m->prune_total = 10;
  sparse_reset(m);
  for (int t = 0; t < m->pl.ntensors; t++)   /* weights that are not 0 */
    for (int64_t k = 0; k < m->pl.tensors[t].elems; k++) m->P[m->pl.tensors[t].offset + k] = 0.5f + (float)k;
  char *path = tmp_path("many.st");
  TsErr e;
  ck_assert_msg(model_save(&p->cx, m, path, 0, &e) == 0, "%s", e.msg);
  TsStFile f;
  ck_assert_msg(ts_st_read(path, &f, &e) == 0, "%s", e.msg);
  int shapes = 0;
  for (int k = 0; k < f.nmeta; k++) shapes += strstr(f.meta_keys[k], ".shape") != NULL;
  printf("  64 pruned layers: %d metadata keys, %d shapes\n", f.nmeta, shapes);
  ck_assert_int_eq(shapes, 64);
  ck_assert_str_eq(ts_st_meta(&f, "format"), "tesla");
  ck_assert_str_eq(ts_st_meta(&f, "step"), "1");
  ck_assert_str_eq(ts_st_meta(&f, "prune_total_steps"), "10");
  ck_assert_str_eq(ts_st_meta(&f, "63.weight.shape"), "[4, 4]");
  ts_st_free(&f);
  free(m->P), free(m->O), free(m);
  plan_free(p);
  free(layers), free(l2), free(src), free(path);
}
END_TEST

/* ---- 7. bad input ------------------------------------------------------------------------- */

/* Spec errors on `sparsity:`: `teslac check` and `teslac train -o` exit 1 with the message at
 * file:line:col, and train writes nothing. */
START_TEST(cli_bad_sparsity_spec) {
  static const struct { const char *layer, *at, *msg; } cases[] = {
      {"dense: {units: 32, sparsity: 1.5}", "1.5", "must be in (0, 1)"},
      {"dense: {units: 32, sparsity: 0}", "0}", "must be in (0, 1)"},
      {"dense: {units: 32, sparsity: -0.25}", "-0.25", "must be in (0, 1)"},
      {"dense: {units: 32, sparsity: 1}", "1}", "must be in (0, 1)"},
      {"conv: {filters: 2, kernel: 3, sparsity: 2}", "2}", "must be in (0, 1)"},
      {"dense: {units: 32, sparsity: {target: 1.0}}", "1.0", "'target' must be in (0, 1)"},
      {"dense: {units: 32, sparsity: {target: 0.9, start: 0.8, end: 0.2}}", "0.2}", "must come after"},
      {"dense: {units: 32, sparsity: {target: 0.9, start: 1.5}}", "1.5", "'start'"},
      {"dense: {units: 32, sparsity: {target: 0.9, schedule: weekly}}", "weekly", "gradual or oneshot"},
      {"dense: {units: 32, sparsity: {start: 0.1}}", "{start", "needs a 'target'"},
      {"dense: {units: 32, sparsity: {target: 0.9, every: 0}}", "0}", "'every'"},
      {"dense: {units: 32, sparsity: {target: 0.9, bogus: 1}}", "bogus", "unknown key 'bogus'"},
      {"dense: {units: 32, sparsity: lots}", "lots", "must be a number"},
      {"dense: {units: 32, sparsity: 0.5, tt: {rank: 2}}", "0.5", "either as a tensor train or sparse"},
      {"batchnorm: {sparsity: 0.5}", "0.5", "applies to dense and conv"},
  };
  char *out = tmp_path("bad-spec.st");
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    char file[32];
    snprintf(file, sizeof file, "badsp-%zu.yaml", c);
    char *layers = xprintf("  - %s\n  - dense: {units: 4}\n  - softmax: {}\n", cases[c].layer);
    char *spec = write_spec(file, layers, "adam");
    /* the bad layer is line 6 of write_spec's text */
    const char *line = strstr(layers, cases[c].layer);
    int col = (int)(strstr(line, cases[c].at) - line) + 1 + 4;   /* after "  - " */
    char *where = xprintf("%s:6:%d: error: ", spec, col);
    for (int cmd = 0; cmd < 2; cmd++) {
      unlink(out);
      Cli r = cmd == 0 ? CLI("check", spec) : CLI("train", spec, "--steps", "1", "-o", out);
      ck_assert_msg(r.status == 1, "%s: %s exited %d\n%s", cases[c].layer, cmd ? "train" : "check", r.status, r.err);
      ck_assert_msg(strstr(r.err, where) && strstr(r.err, cases[c].msg), "%s: expected '%s' ... '%s' in:\n%s",
                    cases[c].layer, where, cases[c].msg, r.err);
      ck_assert_msg(!file_exists(out), "%s: train wrote %s", cases[c].layer, out);
      if (cmd == 0) printf("  spec %-66s %.*s\n", cases[c].layer, (int)strcspn(strstr(r.err, ": error: ") + 2, "\n"),
                           strstr(r.err, ": error: ") + 2);
      cli_free(&r);
    }
    free(layers), free(spec), free(where);
  }
  free(out);
  fflush(stdout);
}
END_TEST

/* A checkpoint, its tensors copied so that they can be edited, written back with ts_st_write. */
typedef struct Ckpt {
  TsStFile f;
  int n;
  TsStOut t[64];
  void *own[64];
  const char *meta[128];
  int nmeta;
} Ckpt;

static void ckpt_open(Ckpt *c, const char *path) {
  TsErr e;
  memset(c, 0, sizeof *c);
  ck_assert_msg(ts_st_read(path, &c->f, &e) == 0, "%s", e.msg);
  ck_assert(c->f.ntensors <= 64 && c->f.nmeta <= 64);
  for (int i = 0; i < c->f.ntensors; i++) {
    const TsTensor *x = &c->f.tensors[i];
    c->own[i] = malloc(x->nbytes + 8);
    memcpy(c->own[i], x->data, x->nbytes);
    c->t[i] = (TsStOut){x->name, x->dtype, x->ndims, {0}, c->own[i]};
    memcpy(c->t[i].shape, x->shape, sizeof x->shape);
  }
  c->n = c->f.ntensors;
  for (int i = 0; i < c->f.nmeta; i++) c->meta[2 * i] = c->f.meta_keys[i], c->meta[2 * i + 1] = c->f.meta_values[i];
  c->nmeta = c->f.nmeta;
}

static TsStOut *ckpt_get(Ckpt *c, const char *name) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->t[i].name, name)) return &c->t[i];
  ck_abort_msg("no tensor %s", name);
  return NULL;
}

static void ckpt_drop(Ckpt *c, const char *name) {
  TsStOut *t = ckpt_get(c, name);
  int i = (int)(t - c->t);
  void *o = c->own[i];
  memmove(&c->t[i], &c->t[i + 1], sizeof *c->t * (size_t)(c->n - i - 1));
  memmove(&c->own[i], &c->own[i + 1], sizeof *c->own * (size_t)(c->n - i - 1));
  c->own[c->n - 1] = o;   /* freed with the rest */
  c->n--;
}

/* the tensor's data replaced by a copy of `data` (nbytes), with a new length (1-d) */
static void ckpt_set(Ckpt *c, const char *name, TsDtype dt, const void *data, size_t nbytes, int64_t len) {
  TsStOut *t = ckpt_get(c, name);
  int i = (int)(t - c->t);
  free(c->own[i]);
  c->own[i] = malloc(nbytes + 8);
  memcpy(c->own[i], data, nbytes);
  t->data = c->own[i], t->dtype = dt, t->ndims = 1, t->shape[0] = len;
}

static void ckpt_write(Ckpt *c, const char *path, bool with_meta) {
  TsErr e;
  ck_assert_msg(ts_st_write(path, c->t, c->n, with_meta ? c->meta : NULL, with_meta ? c->nmeta : 0, &e) == 0, "%s",
                e.msg);
}

static void ckpt_close(Ckpt *c) {
  for (int i = 0; i < c->f.ntensors; i++) free(c->own[i]);
  ts_st_free(&c->f);
}

/* the first row of `crow` (R + 1) with at least `k` entries */
static int64_t row_with(const int32_t *crow, int64_t R, int k) {
  for (int64_t r = 0; r < R; r++)
    if (crow[r + 1] - crow[r] >= k) return r;
  ck_abort_msg("no row with %d entries", k);
  return -1;
}

enum { MUT_COL_RANGE, MUT_COL_NEG, MUT_UNSORTED, MUT_DUP, MUT_CROW_END, MUT_CROW_START, MUT_CROW_DEC,
       MUT_CROW_PAST, MUT_LEN, MUT_CROW_LEN, MUT_NO_COL, MUT_COL_F32, MUT_TOO_MANY, MUT_OPT_LEN, MUT_COUNT };

/* good.st with one defect in 3.weight (48 x 64, CSR) */
static void write_bad(const char *good, const char *path, int mut) {
  Ckpt c;
  ckpt_open(&c, good);
  TsStOut *tc = ckpt_get(&c, "3.weight.crow_indices"), *tl = ckpt_get(&c, "3.weight.col_indices"),
          *tv = ckpt_get(&c, "3.weight.values");
  int64_t R = 48, nnz = tv->shape[0];
  int32_t *crow = (int32_t *)tc->data, *col = (int32_t *)tl->data;
  switch (mut) {
  case MUT_COL_RANGE: col[crow[row_with(crow, R, 1) + 1] - 1] = 64; break;   /* the last of a row */
  case MUT_COL_NEG: col[crow[row_with(crow, R, 1)]] = -1; break;             /* the first of a row */
  case MUT_UNSORTED: {
    int64_t p = crow[row_with(crow, R, 2)];
    int32_t t = col[p];
    col[p] = col[p + 1], col[p + 1] = t;
    break;
  }
  case MUT_DUP: {
    int64_t p = crow[row_with(crow, R, 2)];
    col[p + 1] = col[p];
    break;
  }
  case MUT_CROW_END: crow[R] = (int32_t)nnz - 1; break;
  case MUT_CROW_START: crow[0] = 1; break;
  case MUT_CROW_DEC: {   /* row 4 ends before it starts */
    ck_assert_int_gt(crow[4], 0);
    crow[5] = crow[4] - 1;
    break;
  }
  case MUT_CROW_PAST: {   /* the nnz values spread over rows 0 .. 46 (columns 0, 1, ... in each:
                             a valid CSR with row 47 empty), then row 46 made to end 5 past them
                             (and row 47 to decrease) */
    for (int64_t r = 0; r <= R - 1; r++) crow[r] = (int32_t)(r * nnz / (R - 1));
    crow[R] = (int32_t)nnz;
    for (int64_t r = 0; r < R; r++)
      for (int32_t p = crow[r]; p < crow[r + 1]; p++) col[p] = p - crow[r];
    ck_assert_int_le(crow[1] - crow[0] + 1, 64);
    crow[R - 1] = (int32_t)nnz + 5;
    break;
  }
  case MUT_LEN: tv->shape[0] = nnz - 1; break;   /* values one short of col_indices */
  case MUT_CROW_LEN: tc->shape[0] = R; break;
  case MUT_NO_COL: ckpt_drop(&c, "3.weight.col_indices"); break;
  case MUT_COL_F32: {
    float *f = malloc(sizeof(float) * (size_t)nnz);
    for (int64_t p = 0; p < nnz; p++) f[p] = (float)col[p];
    ckpt_set(&c, "3.weight.col_indices", TS_F32, f, sizeof(float) * (size_t)nnz, nnz);
    free(f);
    break;
  }
  case MUT_TOO_MANY: {   /* 3073 values for a 48 x 64 weight */
    int64_t n = 48 * 64 + 1;
    float *v = calloc((size_t)n, sizeof(float));
    int32_t *cl = calloc((size_t)n, sizeof(int32_t));
    ckpt_set(&c, "3.weight.values", TS_F32, v, sizeof(float) * (size_t)n, n);
    ckpt_set(&c, "3.weight.col_indices", TS_I32, cl, sizeof(int32_t) * (size_t)n, n);
    tc = ckpt_get(&c, "3.weight.crow_indices");
    ((int32_t *)tc->data)[R] = (int32_t)n;
    free(v), free(cl);
    break;
  }
  case MUT_OPT_LEN: ckpt_get(&c, "__opt__.exp_avg.3.weight.values")->shape[0] = nnz - 1; break;
  }
  ckpt_write(&c, path, true);
  ckpt_close(&c);
}

static const struct { const char *what; int mut; const char *needles[3]; bool no_file; } bad_ckpts[] = {
    {"col_indices out of range", MUT_COL_RANGE, {"'3.weight.col_indices'", "is 64, outside [0, 64)"}},
    {"col_indices negative", MUT_COL_NEG, {"'3.weight.col_indices'", "is -1, outside [0, 64)"}},
    {"col_indices unsorted in a row", MUT_UNSORTED, {"'3.weight.col_indices'", "not sorted"}},
    {"col_indices repeated in a row", MUT_DUP, {"'3.weight.col_indices'", "unique"}},
    {"crow_indices not ending at nnz", MUT_CROW_END, {"'3.weight.crow_indices'", "must run from 0"}},
    {"crow_indices not starting at 0", MUT_CROW_START, {"'3.weight.crow_indices'", "must run from 0"}},
    {"crow_indices decreasing", MUT_CROW_DEC, {"'3.weight.crow_indices'", "decreases at row 4"}},
    {"values shorter than col_indices", MUT_LEN, {"'3.weight'", "one length"}},
    {"crow_indices of the wrong length", MUT_CROW_LEN, {"'3.weight'", "crow_indices (49)"}},
    {"col_indices missing", MUT_NO_COL, {"'3.weight.col_indices' is missing"}},
    /* (this message, from ts_tensor_to_i64, names the tensor but not the file) */
    {"col_indices not integers", MUT_COL_F32, {"3.weight.col_indices", "integer dtype"}, true},
    {"more values than entries", MUT_TOO_MANY, {"'3.weight'", "<= 3072"}},
};

/* good.st: 20 steps of sparse.yaml (pruned twice: 3.weight has 2 of its 3 events behind it) */
static char *good_sparse_ckpt(void) {
  char *spec = tmp_path("sparse.yaml"), *good = tmp_path("good.st");
  if (!file_exists(good)) {
    char *tmp = tmp_path("good.tmp.st");
    Cli r = CLI("train", spec, "--steps", "20", "--threads", "2", "-o", tmp);
    cli_ok(&r);
    cli_free(&r);
    NEED(rename(tmp, good) == 0);
    free(tmp);
  }
  free(spec);
  return good;
}

/* Each defect through model_load in process (weights only, as --init and eval read them, and
 * with the optimizer state, as --resume does) on one build of sparse.yaml, then through the
 * CLI (--init, --resume and eval in turn): exit 1, one line naming the file and the tensor,
 * nothing written. */
START_TEST(cli_bad_csr_checkpoint) {
  char *spec = tmp_path("sparse.yaml"), *good = good_sparse_ckpt(), *out = tmp_path("bad-out.st");
  char *src = slurp(spec, NULL);
  Net *n = net_new(src, 32);
  for (int i = 0; i < (int)(sizeof bad_ckpts / sizeof *bad_ckpts); i++) {
    char file[32];
    snprintf(file, sizeof file, "bad-csr-%d.st", i);
    char *bad = tmp_path(file);
    write_bad(good, bad, bad_ckpts[i].mut);
    const char *needles[5] = {bad_ckpts[i].no_file ? "tensor" : file, bad_ckpts[i].needles[0],
                              bad_ckpts[i].needles[1], bad_ckpts[i].needles[2], NULL};
    for (int opt = 0; opt < 2; opt++) {
      TsErr e;
      int64_t epoch = -1;
      e.msg[0] = 0;
      int rc = model_load(&n->cx, &n->m, bad, opt, &epoch, &e);
      ck_assert_msg(rc < 0, "%s: model_load (%s) took the file", bad_ckpts[i].what, opt ? "resume" : "weights");
      for (const char *const *nd = needles; *nd; nd++)
        ck_assert_msg(strstr(e.msg, *nd), "%s (%s): the message does not mention '%s':\n%s", bad_ckpts[i].what,
                      opt ? "resume" : "weights", *nd, e.msg);
    }
    needles[0] = bad_ckpts[i].no_file ? "teslac: " : file;
    int how = i % 3;
    unlink(out);
    Cli r = how == 0   ? CLI("train", spec, "--steps", "1", "--init", bad, "-o", out)
            : how == 1 ? CLI("train", spec, "--steps", "25", "--resume", bad, "-o", out)
                       : CLI("eval", spec, "--weights", bad);
    char *what = xprintf("%s (%s)", bad_ckpts[i].what, how == 0 ? "--init" : how == 1 ? "--resume" : "eval");
    cli_fails(&r, 1, what, needles);
    ck_assert_msg(!file_exists(out), "%s: %s was written", what, out);
    free(what), free(bad);
    cli_free(&r);
  }
  net_free(n);
  free(spec), free(good), free(out), free(src);
}
END_TEST

/* the optimizer state of a pruned weight, one short of its values: --resume refuses it (and
 * --init, which reads no optimizer state, takes the file) */
/* An entry of crow_indices past the number of values must be named as such. A regression
 * test: load_sparse once walked the rows first, read col_indices past nnz (the uninitialized
 * rest of its buffer) and blamed col_indices with a garbage value. */
START_TEST(cli_bad_crow_past_nnz) {
  char *spec = tmp_path("sparse.yaml"), *good = good_sparse_ckpt(), *out = tmp_path("bad-crow-out.st"),
       *bad = tmp_path("bad-crow-past.st");
  write_bad(good, bad, MUT_CROW_PAST);
  char *src = slurp(spec, NULL);
  Net *n = net_new(src, 32);
  TsErr e;
  e.msg[0] = 0;
  ck_assert(model_load(&n->cx, &n->m, bad, false, NULL, &e) < 0);
  printf("  crow_indices past nnz: model_load says: %s\n", e.msg);
  ck_assert_msg(strstr(e.msg, "'3.weight.crow_indices'"), "crow_indices[47] = nnz + 5, but the message is:\n%s", e.msg);
  unlink(out);
  Cli r = CLI("train", spec, "--steps", "1", "--init", bad, "-o", out);
  cli_fails(&r, 1, "crow_indices past nnz (--init)", (const char *const[]){"bad-crow-past.st", "'3.weight.crow_indices'", NULL});
  ck_assert(!file_exists(out));
  cli_free(&r);
  net_free(n);
  free(spec), free(good), free(out), free(bad), free(src);
}
END_TEST

START_TEST(cli_bad_opt_state) {
  char *spec = tmp_path("sparse.yaml"), *good = good_sparse_ckpt(), *out = tmp_path("bad-opt-out.st"),
       *bad = tmp_path("bad-opt.st");
  write_bad(good, bad, MUT_OPT_LEN);
  unlink(out);
  Cli r = CLI("train", spec, "--steps", "25", "--resume", bad, "-o", out);
  cli_fails(&r, 1, "opt values of the wrong length", (const char *const[]){"__opt__.exp_avg.3.weight.values", NULL});
  ck_assert(!file_exists(out));
  cli_free(&r);
  r = CLI("train", spec, "--steps", "1", "--init", bad, "-o", out);
  cli_ok(&r);
  cli_free(&r);
  free(spec), free(good), free(out), free(bad);
}
END_TEST

/* A CSR checkpoint into a spec without sparsity: refused with a message that says so. PyTorch's
 * default index dtype (I64) loads as well as teslac's I32, to the same model. */
START_TEST(cli_csr_into_dense) {
  char *good = good_sparse_ckpt(), *spec = tmp_path("sparse.yaml"), *out = tmp_path("csr-dense-out.st");
  char *dspec = write_spec("dense_twin.yaml",
                           "  - conv: {filters: 4, kernel: 3, padding: same}\n  - relu: {}\n  - maxpool: {size: 2}\n"
                           "  - dense: {units: 48}\n  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n", "adam");
  unlink(out);
  Cli r = CLI("train", dspec, "--steps", "1", "--init", good, "-o", out);
  cli_fails(&r, 1, "CSR weights into a dense spec", (const char *const[]){"pruned (CSR)", "'0.weight'", "not sparse", NULL});
  ck_assert(!file_exists(out));
  cli_free(&r);
  r = CLI("eval", dspec, "--weights", good);
  cli_fails(&r, 1, "eval CSR weights, dense spec", (const char *const[]){"pruned (CSR)", NULL});
  cli_free(&r);
  /* I64 indices */
  Ckpt c;
  ckpt_open(&c, good);
  for (int k = 0; k < 3; k++)
    for (int which = 0; which < 2; which++) {
      char name[64];
      snprintf(name, sizeof name, "%s.%s", cli_sparse[k].name, which ? "col_indices" : "crow_indices");
      TsStOut *t = ckpt_get(&c, name);
      int64_t n = t->shape[0], *w = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
      for (int64_t i = 0; i < n; i++) w[i] = ((const int32_t *)t->data)[i];
      ckpt_set(&c, name, TS_I64, w, sizeof(int64_t) * (size_t)n, n);
      free(w);
    }
  char *i64 = tmp_path("good-i64.st"), *o32 = tmp_path("from-i32.st"), *o64 = tmp_path("from-i64.st");
  ckpt_write(&c, i64, true);
  ckpt_close(&c);
  Cli a = CLI("eval", spec, "--weights", good), b = CLI("eval", spec, "--weights", i64);
  cli_ok(&a), cli_ok(&b);
  ck_assert_msg(fabs(parse_last(a.out, "test loss ") - parse_last(b.out, "test loss ")) < 1e-9, "%s\n%s", a.out, b.out);
  cli_free(&a), cli_free(&b);
  a = CLI("train", spec, "--steps", "22", "--threads", "2", "--resume", good, "-o", o32);
  b = CLI("train", spec, "--steps", "22", "--threads", "2", "--resume", i64, "-o", o64);
  cli_ok(&a), cli_ok(&b);
  int d = ckpt_diff(o32, o64, true);
  printf("  I64 CSR indices: eval and a resumed run agree with I32's (%d tensors differ)\n", d);
  ck_assert_int_eq(d, 0);
  cli_free(&a), cli_free(&b);
  free(good), free(spec), free(out), free(dspec), free(i64), free(o32), free(o64);
}
END_TEST

/* A dense state_dict (a PyTorch model's weights) into a sparse spec: --init takes it, every
 * entry kept; with a oneshot schedule at start 0 the first event (before step 1) prunes it
 * to the target by magnitude: the pattern is the top |w| of the file's weights. eval of the
 * dense file through the sparse spec keeps every entry: the dense model's accuracy. */
START_TEST(cli_dense_into_sparse) {
  char *dspec = tmp_path("dense_twin.yaml");
  if (!file_exists(dspec))
    free(write_spec("dense_twin.yaml",
                    "  - conv: {filters: 4, kernel: 3, padding: same}\n  - relu: {}\n  - maxpool: {size: 2}\n"
                    "  - dense: {units: 48}\n  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n", "adam"));
  char *ospec = write_spec("oneshot0.yaml",
                           "  - conv: {filters: 4, kernel: 3, padding: same, sparsity: {target: 0.5, schedule: oneshot, start: 0}}\n"
                           "  - relu: {}\n  - maxpool: {size: 2}\n"
                           "  - dense: {units: 48, sparsity: {target: 0.9, schedule: oneshot, start: 0}}\n"
                           "  - relu: {}\n"
                           "  - dense: {units: 4, sparsity: {target: 0.5, schedule: oneshot, start: 0}}\n"
                           "  - softmax: {}\n", "adam");
  char *dense = tmp_path("dense-20.st"), *wonly = tmp_path("dense-weights.st"), *out = tmp_path("pruned-from-dense.st");
  Cli r = CLI("train", dspec, "--steps", "20", "--threads", "2", "-o", dense);
  cli_ok(&r);
  cli_free(&r);
  Ckpt c;
  ckpt_open(&c, dense);
  for (int i = c.n - 1; i >= 0; i--)
    if (!strncmp(c.t[i].name, "__opt__", 7)) ckpt_drop(&c, c.t[i].name);
  ckpt_write(&c, wonly, false);
  ckpt_close(&c);
  /* eval through the sparse spec: nothing pruned, the dense model's numbers */
  Cli a = CLI("eval", dspec, "--weights", wonly), b = CLI("eval", ospec, "--weights", wonly);
  cli_ok(&a), cli_ok(&b);
  double la = parse_last(a.out, "test loss "), lb = parse_last(b.out, "test loss ");
  printf("  dense weights: dense spec test loss %.4f, sparse spec %.4f\n", la, lb);
  ck_assert_msg(fabs(la - lb) < 2e-4, "dense spec:\n%s\nsparse spec:\n%s", a.out, b.out);
  cli_free(&a), cli_free(&b);
  r = CLI("train", ospec, "--steps", "1", "--threads", "2", "--init", wonly, "-o", out);
  cli_ok(&r);
  cli_free(&r);
  TsStFile fd, fs;
  TsErr e;
  ck_assert_msg(ts_st_read(wonly, &fd, &e) == 0, "%s", e.msg);
  ck_assert_msg(ts_st_read(out, &fs, &e) == 0, "%s", e.msg);
  for (int k = 0; k < 3; k++) {
    int64_t R = cli_sparse[k].R, C = cli_sparse[k].C, full = R * C;
    int64_t nnz = check_csr(&fs, cli_sparse[k].name, R, C, 2, "exp_avg");
    int64_t want_nnz = (int64_t)llround((1 - cli_sparse[k].target) * (double)full);
    const TsTensor *w = ts_st_find(&fd, cli_sparse[k].name);
    ck_assert_ptr_nonnull(w);
    bool *keep = malloc((size_t)full);
    ref_topk(w->data, full, want_nnz, keep);
    char *crow_name = xprintf("%s.crow_indices", cli_sparse[k].name), *col_name = xprintf("%s.col_indices", cli_sparse[k].name);
    const int32_t *crow = ts_st_find(&fs, crow_name)->data;
    const int32_t *col = ts_st_find(&fs, col_name)->data;
    free(crow_name), free(col_name);
    int64_t agree = 0;
    for (int64_t rr = 0; rr < R; rr++)
      for (int32_t p = crow[rr]; p < crow[rr + 1]; p++) agree += keep[rr * C + col[p]];
    printf("  dense -> %s pruned at step 0: %lld kept (want %lld), %lld of them the file's largest |w|\n",
           cli_sparse[k].name, (long long)nnz, (long long)want_nnz, (long long)agree);
    ck_assert_int_eq(nnz, want_nnz);
    ck_assert_int_eq(agree, nnz);
    free(keep);
  }
  ts_st_free(&fd), ts_st_free(&fs);
  /* a dense weight of another shape */
  ckpt_open(&c, wonly);
  ckpt_get(&c, "3.weight")->shape[0] = 64, ckpt_get(&c, "3.weight")->shape[1] = 48;
  char *bad = tmp_path("dense-transposed.st");
  ckpt_write(&c, bad, false);
  ckpt_close(&c);
  unlink(out);
  r = CLI("train", ospec, "--steps", "1", "--init", bad, "-o", out);
  cli_fails(&r, 1, "dense weight of another shape", (const char *const[]){"'3.weight'", "shape", NULL});
  ck_assert(!file_exists(out));
  cli_free(&r);
  free(dspec), free(ospec), free(dense), free(wonly), free(out), free(bad);
}
END_TEST

/* ---- the suite -------------------------------------------------------------------------------- */

static Suite *sparse_suite(void) {
  Suite *s = suite_create("sparse");
  TCase *tc = tcase_create("gradients");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, fd_sparse, 0, (int)(sizeof fd_cases / sizeof *fd_cases));
  suite_add_tcase(s, tc);

  tc = tcase_create("agreement");
  tcase_set_timeout(tc, 120);
  tcase_add_loop_test(tc, sparse_dense_agree, 0, (int)(sizeof agree_cases / sizeof *agree_cases));
  suite_add_tcase(s, tc);

  tc = tcase_create("schedule");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, schedule_formula);
  tcase_add_test(tc, schedule_prune_steps);
  suite_add_tcase(s, tc);

  tc = tcase_create("optimizers");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, optimizer_keeps_pattern, 0, (int)(sizeof opt_cases / sizeof *opt_cases));
  suite_add_tcase(s, tc);

  tc = tcase_create("planner");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, planner_auto_budget);
  tcase_add_test(tc, planner_kernels);
  tcase_add_test(tc, planner_tt_or_sparse);
  suite_add_tcase(s, tc);

  tc = tcase_create("cli");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, cli_resume_sparse);
  tcase_add_test(tc, cli_resume_sgd);
  tcase_add_test(tc, cli_file_size);
  tcase_add_test(tc, cli_bad_sparsity_spec);
  tcase_add_test(tc, cli_bad_csr_checkpoint);
  tcase_add_test(tc, cli_bad_crow_past_nnz);
  tcase_add_test(tc, cli_bad_opt_state);
  tcase_add_test(tc, many_sparse_layers_save);
  tcase_add_test(tc, cli_csr_into_dense);
  tcase_add_test(tc, cli_dense_into_sparse);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return suite_main(argc, argv, "test_sparse", make_dataset, sparse_suite); }
