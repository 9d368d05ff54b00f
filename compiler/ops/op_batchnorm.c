/* op_batchnorm.c: batch normalization over channels (nn.BatchNorm2d on (N, C, H, W)) or
 * features (nn.BatchNorm1d on (N, D)). Training normalizes with the biased batch variance and
 * updates running_var with the unbiased one: running = (1 - momentum) running + momentum batch.
 * Tensors: weight, bias (trainable), running_mean, running_var (buffers). */
#include "cg.h"

static const char *const keys[] = {"eps", "momentum", NULL};

/* batchnorm: {eps: 1e-5, momentum: 0.1} */
static void parse(Ctx *cx, Layer *l) {
  l->u.bn.eps = 1e-5, l->u.bn.momentum = 0.1;
  YNode *v;
  if ((v = spec_get(l->node, "eps"))) spec_num(cx, v, "eps", 0, 1, true, false, &l->u.bn.eps);
  if ((v = spec_get(l->node, "momentum")))
    spec_num(cx, v, "momentum", 0, 1, false, false, &l->u.bn.momentum);
}

static bool infer(Ctx *cx, Layer *l) {
  l->out = l->in;
  return true;
}

static int params(const Layer *l, Param p[4]) {
  int64_t c = l->in.d[0];
  p[0] = (Param){"weight", 1, {c}, true};
  p[1] = (Param){"bias", 1, {c}, true};
  p[2] = (Param){"running_mean", 1, {c}, false};
  p[3] = (Param){"running_var", 1, {c}, false};
  return 4;
}

/* Per element: forward mean 1, variance 2, normalize-scale-shift 2; backward 2 for the
 * parameter gradients, 5 more for the input gradient. */
static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  int64_t e = n * shape_elems(&l->in);
  return (Flops){5 * e, (need_dx ? 7 : 2) * e};
}

const OpDef op_batchnorm = {
    .name = "batchnorm", .keys = keys, .weighted = true,
    .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: forward and backward emitters ==== */

/* ---- batchnorm over channels: x (B, C, S), S = H W (1 for vectors) ------------------------ */

#define BN_TILE 16   /* channels per tile */

typedef struct BnDims { int64_t C, S, n; } BnDims;
static BnDims bn_dims(const EmitLayer *e) {
  int64_t C = e->l->in.d[0], S = shape_elems(&e->l->in) / C;
  return (BnDims){C, S, e->B * S};
}

/* Images (S > 1): each pass is a kernel over a tile of channels (kernels.c, tk_bn2d_*), with
 * the S contiguous elements of each (b, c) in vector registers; the per-channel scalars in
 * between are emitted here. aux: [0, C) mean, [C, 2C) 1/std, [2C, 3C) and [3C, 4C) the
 * forward's scale and shift, then the backward's sum dy and sum dy (x - mean). */
static LLVMValueRef bn_auxp(Cg *g, const EmitLayer *e, int k) {
  return cg_at(g, TS_A, e->aux + k * e->l->in.d[0], NULL);
}

/* a synchronized batchnorm's statistics: this batch's per channel (mean in aux0, biased
 * variance in aux1), before they are combined over the ranks */
static void bn_stats_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  LLVMValueRef c0, c1;
  cg_tile_range(g, t, BN_TILE, d.C, &c0, &c1);
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, d.C), cg_i64(g, d.S), cg_in_ptr(g, e), bn_auxp(g, e, 0),
                         bn_auxp(g, e, 1), c0, c1};
  cg_kernel(g, "tk_bn2d_stats", args, 8);
}

/* ... combined over the ranks (equal batches), in the calling thread: the global mean is the
 * ranks' mean of means, the global biased variance the mean of (var_r + (mean_r - mean)^2)
 * (Chan et al.); aux2 keeps this rank's mean meanwhile. Two tesla_dist_sum calls of C. */
static void bn_sync_stats(Cg *g, const EmitLayer *e) {
  int64_t C = e->l->in.d[0];
  double inv = 1.0 / e->sync_ranks;
  CgLoop L;
  LLVMValueRef c = cg_for(g, &L, "bn_sync_copy", cg_i64(g, 0), cg_i64(g, C));
  cg_store(g, cg_load(g, cg_at(g, TS_A, e->aux, c)), cg_at(g, TS_A, e->aux + 2 * C, c));
  cg_for_end(g, &L);
  LLVMValueRef a0[] = {bn_auxp(g, e, 0), cg_i64(g, C)};
  cg_kernel(g, "tesla_dist_sum", a0, 2);
  c = cg_for(g, &L, "bn_sync_var", cg_i64(g, 0), cg_i64(g, C));
  LLVMValueRef pm = cg_at(g, TS_A, e->aux, c), pv = cg_at(g, TS_A, e->aux + C, c);
  LLVMValueRef mean = cg_fmul(g, cg_load(g, pm), cg_f32(g, inv));
  cg_store(g, mean, pm);
  LLVMValueRef dm = cg_fsub(g, cg_load(g, cg_at(g, TS_A, e->aux + 2 * C, c)), mean);
  cg_store(g, cg_fadd(g, cg_load(g, pv), cg_fmul(g, dm, dm)), pv);
  cg_for_end(g, &L);
  LLVMValueRef a1[] = {bn_auxp(g, e, 1), cg_i64(g, C)};
  cg_kernel(g, "tesla_dist_sum", a1, 2);
  c = cg_for(g, &L, "bn_sync_mean", cg_i64(g, 0), cg_i64(g, C));
  pv = cg_at(g, TS_A, e->aux + C, c);
  cg_store(g, cg_fmul(g, cg_load(g, pv), cg_f32(g, inv)), pv);
  cg_for_end(g, &L);
}

static void bn_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  double mom = e->l->u.bn.momentum, eps = e->l->u.bn.eps;
  LLVMValueRef c0, c1;
  cg_tile_range(g, t, BN_TILE, d.C, &c0, &c1);
  LLVMValueRef dims[3] = {cg_i64(g, e->B), cg_i64(g, d.C), cg_i64(g, d.S)};
  if (e->sync_ranks) d.n *= e->sync_ranks;   /* aux0/aux1 hold every rank's statistics */
  else if (e->train) {   /* mean -> aux0, biased variance -> aux1 */
    LLVMValueRef args[] = {dims[0], dims[1], dims[2], cg_in_ptr(g, e), bn_auxp(g, e, 0), bn_auxp(g, e, 1), c0, c1};
    cg_kernel(g, "tk_bn2d_stats", args, 8);
  }
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "bn_c", c0, c1);
  LLVMValueRef gamma = cg_load(g, cg_at(g, TS_P, e->w[0], c)), beta = cg_load(g, cg_at(g, TS_P, e->w[1], c));
  LLVMValueRef p_rm = cg_at(g, TS_P, e->w[2], c), p_rv = cg_at(g, TS_P, e->w[3], c);
  LLVMValueRef mean, invstd;
  if (e->train) {
    mean = cg_load(g, cg_at(g, TS_A, e->aux, c));
    LLVMValueRef var = cg_load(g, cg_at(g, TS_A, e->aux + d.C, c));
    invstd = cg_fdiv(g, cg_f32(g, 1), cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, var, cg_f32(g, eps))));
    cg_store(g, invstd, cg_at(g, TS_A, e->aux + d.C, c));
    /* running statistics: the unbiased variance, as PyTorch */
    double unbias = d.n > 1 ? (double)d.n / (double)(d.n - 1) : 1.0;
    cg_store(g, cg_fadd(g, cg_fmul(g, cg_load(g, p_rm), cg_f32(g, 1 - mom)), cg_fmul(g, mean, cg_f32(g, mom))), p_rm);
    cg_store(g, cg_fadd(g, cg_fmul(g, cg_load(g, p_rv), cg_f32(g, 1 - mom)), cg_fmul(g, var, cg_f32(g, mom * unbias))), p_rv);
  } else {
    mean = cg_load(g, p_rm);
    invstd = cg_fdiv(g, cg_f32(g, 1), cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, cg_load(g, p_rv), cg_f32(g, eps))));
  }
  LLVMValueRef scale = cg_fmul(g, gamma, invstd);
  cg_store(g, scale, cg_at(g, TS_A, e->aux + 2 * d.C, c));
  cg_store(g, cg_fsub(g, beta, cg_fmul(g, mean, scale)), cg_at(g, TS_A, e->aux + 3 * d.C, c));
  cg_for_end(g, &Lc);
  /* y = x scale + shift, and a fused relu / leaky_relu */
  LLVMValueRef args[] = {dims[0], dims[1], dims[2], cg_in_ptr(g, e), bn_auxp(g, e, 2), bn_auxp(g, e, 3),
                         cg_at(g, TS_A, e->out, NULL), cg_i32(g, e->act), cg_f32(g, e->act ? e->act_slope : 0), c0, c1};
  cg_kernel(g, "tk_bn2d_apply", args, 11);
}

/* Vectors (S = 1): channels are contiguous, so every pass runs over a tile of channels in
 * the inner loop (vectorized) with the batch outside, keeping per-channel sums in aux:
 * aux[0, C) mean, aux[C, 2C) 1/std, aux[2C, 3C) and aux[3C, 4C) the backward's two sums. */
#define BN_VTILE 128

typedef struct BnV { const EmitLayer *e; LLVMValueRef c0, c1; } BnV;

/* for b in [0, B): for c in [c0, c1): body(b, c), c contiguous */
typedef void (*BnVBody)(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c);
static void bnv_loop(Cg *g, const BnV *v, const char *name, bool over_b, BnVBody body) {
  CgLoop Lb, Lc;
  LLVMValueRef b = over_b ? cg_for(g, &Lb, name, cg_i64(g, 0), cg_i64(g, v->e->B)) : NULL;
  LLVMValueRef c = cg_for(g, &Lc, "c", v->c0, v->c1);
  body(g, v, b, c);
  cg_for_end(g, &Lc);
  if (over_b) cg_for_end(g, &Lb);
}

static LLVMValueRef bnv_aux(Cg *g, const BnV *v, int k, LLVMValueRef c) {
  return cg_at(g, TS_A, v->e->aux + k * v->e->l->in.d[0], c);
}
static LLVMValueRef bnv_x(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  return cg_load(g, cg_at(g, v->e->in_block, v->e->in, cg_mad(g, b, v->e->l->in.d[0], c)));
}
static LLVMValueRef bnv_dy(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  return cg_load(g, cg_at(g, TS_A, v->e->dout, cg_mad(g, b, v->e->l->in.d[0], c)));
}
static void bnv_add(Cg *g, LLVMValueRef p, LLVMValueRef x) { cg_store(g, cg_fadd(g, cg_load(g, p), x), p); }

static void bnv_zero01(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  cg_store(g, cg_f32(g, 0), bnv_aux(g, v, 0, c));
  cg_store(g, cg_f32(g, 0), bnv_aux(g, v, 1, c));
}
static void bnv_sum(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  bnv_add(g, bnv_aux(g, v, 0, c), bnv_x(g, v, b, c));
}
/* aux k /= B: a sum over this batch into its mean */
static void bnv_per_row(Cg *g, const BnV *v, int k, LLVMValueRef c) {
  LLVMValueRef p = bnv_aux(g, v, k, c);
  cg_store(g, cg_fmul(g, cg_load(g, p), cg_f32(g, 1.0 / (double)v->e->B)), p);
}
static void bnv_mean(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) { bnv_per_row(g, v, 0, c); }
static void bnv_sqdev(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef d = cg_fsub(g, bnv_x(g, v, b, c), cg_load(g, bnv_aux(g, v, 0, c)));
  bnv_add(g, bnv_aux(g, v, 1, c), cg_fmul(g, d, d));
}
/* var -> 1/std, running statistics (unbiased variance, as PyTorch) */
static void bnv_stats(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  const EmitLayer *e = v->e;
  double n = (double)e->B * (e->sync_ranks ? e->sync_ranks : 1), mom = e->l->u.bn.momentum;
  double unbias = n > 1 ? n / (n - 1) : 1.0;
  LLVMValueRef var = cg_load(g, bnv_aux(g, v, 1, c));   /* synchronized: already the variance */
  if (!e->sync_ranks) var = cg_fmul(g, var, cg_f32(g, 1.0 / n));
  cg_store(g, cg_fdiv(g, cg_f32(g, 1), cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, var, cg_f32(g, e->l->u.bn.eps)))),
           bnv_aux(g, v, 1, c));
  LLVMValueRef p_rm = cg_at(g, TS_P, e->w[2], c), p_rv = cg_at(g, TS_P, e->w[3], c);
  LLVMValueRef mean = cg_load(g, bnv_aux(g, v, 0, c));
  cg_store(g, cg_fadd(g, cg_fmul(g, cg_load(g, p_rm), cg_f32(g, 1 - mom)), cg_fmul(g, mean, cg_f32(g, mom))), p_rm);
  cg_store(g, cg_fadd(g, cg_fmul(g, cg_load(g, p_rv), cg_f32(g, 1 - mom)), cg_fmul(g, var, cg_f32(g, mom * unbias))), p_rv);
}
/* y = (x - mean) (1/std) gamma + beta; eval: the running statistics */
static void bnv_apply(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  const EmitLayer *e = v->e;
  LLVMValueRef mean, invstd;
  if (e->train) {
    mean = cg_load(g, bnv_aux(g, v, 0, c)), invstd = cg_load(g, bnv_aux(g, v, 1, c));
  } else {
    mean = cg_load(g, cg_at(g, TS_P, e->w[2], c));
    LLVMValueRef var = cg_load(g, cg_at(g, TS_P, e->w[3], c));
    invstd = cg_fdiv(g, cg_f32(g, 1), cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, var, cg_f32(g, e->l->u.bn.eps))));
  }
  LLVMValueRef scale = cg_fmul(g, invstd, cg_load(g, cg_at(g, TS_P, e->w[0], c)));
  LLVMValueRef y = cg_fadd(g, cg_fmul(g, cg_fsub(g, bnv_x(g, v, b, c), mean), scale),
                           cg_load(g, cg_at(g, TS_P, e->w[1], c)));
  if (e->act) y = cg_act(g, y, e->act_slope);   /* a fused relu / leaky_relu */
  cg_store(g, y, cg_at(g, TS_A, e->out, cg_mad(g, b, e->l->in.d[0], c)));
}

/* this batch's mean (aux0) and sum of squared deviations (aux1) */
static void bnv_local_stats(Cg *g, const BnV *v) {
  bnv_loop(g, v, "bn_zero", false, bnv_zero01);
  bnv_loop(g, v, "bn_sum", true, bnv_sum);
  bnv_loop(g, v, "bn_mean", false, bnv_mean);
  bnv_loop(g, v, "bn_var", true, bnv_sqdev);
}

/* synchronized: this batch's statistics first, aux1 as the biased variance (bn_sync_stats
 * combines them over the ranks) */
static void bnv_var_local(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) { bnv_per_row(g, v, 1, c); }
static void bnv_stats_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  bnv_local_stats(g, &v);
  bnv_loop(g, &v, "bn_var_local", false, bnv_var_local);
}

static void bnv_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  if (e->train && !e->sync_ranks) bnv_local_stats(g, &v);
  if (e->train) bnv_loop(g, &v, "bn_stats", false, bnv_stats);
  bnv_loop(g, &v, "bn_y", true, bnv_apply);
}

static LLVMValueRef bnv_xhat(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  return cg_fmul(g, cg_fsub(g, bnv_x(g, v, b, c), cg_load(g, bnv_aux(g, v, 0, c))), cg_load(g, bnv_aux(g, v, 1, c)));
}
static void bnv_zero23(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  cg_store(g, cg_f32(g, 0), bnv_aux(g, v, 2, c));
  cg_store(g, cg_f32(g, 0), bnv_aux(g, v, 3, c));
}
/* aux2 = sum dy (dbeta), aux3 = sum dy xhat (dgamma) */
static void bnv_dsums(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef dy = bnv_dy(g, v, b, c);
  bnv_add(g, bnv_aux(g, v, 2, c), dy);
  bnv_add(g, bnv_aux(g, v, 3, c), cg_fmul(g, dy, bnv_xhat(g, v, b, c)));
}
static void bnv_dparams(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  bnv_add(g, cg_at(g, TS_G, v->e->dw[0], c), cg_load(g, bnv_aux(g, v, 3, c)));
  bnv_add(g, cg_at(g, TS_G, v->e->dw[1], c), cg_load(g, bnv_aux(g, v, 2, c)));
}
/* dx = gamma (1/std) / n (n dy - dbeta - xhat dgamma) */
static void bnv_dx(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  const EmitLayer *e = v->e;
  double n = (double)e->B * (e->sync_ranks ? e->sync_ranks : 1);   /* the rows of the statistics */
  LLVMValueRef k = cg_fmul(g, cg_load(g, cg_at(g, TS_P, e->w[0], c)),
                           cg_fmul(g, cg_load(g, bnv_aux(g, v, 1, c)), cg_f32(g, 1.0 / n)));
  LLVMValueRef t = cg_fsub(g, cg_fsub(g, cg_fmul(g, bnv_dy(g, v, b, c), cg_f32(g, n)), cg_load(g, bnv_aux(g, v, 2, c))),
                           cg_fmul(g, bnv_xhat(g, v, b, c), cg_load(g, bnv_aux(g, v, 3, c))));
  cg_store(g, cg_fmul(g, k, t), cg_at(g, TS_A, e->din, cg_mad(g, b, e->l->in.d[0], c)));
}

/* the backward in two parts when synchronized: this batch's sums and the parameter
 * gradients from them (the gradient reduction adds the ranks' up), then, once the sums are
 * every rank's (tesla_dist_sum), the input gradient */
static void bnv_bwd_sums(Cg *g, const BnV *v) {
  bnv_loop(g, v, "bn_dzero", false, bnv_zero23);
  bnv_loop(g, v, "bn_dsum", true, bnv_dsums);
  bnv_loop(g, v, "bn_dparam", false, bnv_dparams);
}
static void bnv_bwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  bnv_bwd_sums(g, &v);
  if (e->din >= 0) bnv_loop(g, &v, "bn_dx", true, bnv_dx);
}
static void bnv_bwd_sums_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  bnv_bwd_sums(g, &v);
}
static void bnv_bwd_dx_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  bnv_loop(g, &v, "bn_dx", true, bnv_dx);
}

static void bn_fwd(Cg *g, const EmitLayer *e) {
  if (e->fused) return;   /* folded into the layer before it (inference, emit.c) */
  char name[256];
  bool vec = bn_dims(e).S == 1;
  int64_t ntiles = cg_ceil_div(bn_dims(e).C, vec ? BN_VTILE : BN_TILE);
  if (e->sync_ranks) {   /* this batch's statistics, combined over the ranks, then the rest */
    cg_tile_name(name, sizeof name, e, "bn_stats_sync");
    cg_parallel(g, name, ntiles, vec ? bnv_stats_tile : bn_stats_tile, (void *)e);
    bn_sync_stats(g, e);
  }
  cg_tile_name(name, sizeof name, e, e->train ? "bn_fwd_train" : "bn_fwd_eval");
  if (bn_dims(e).S == 1)
    cg_parallel(g, name, cg_ceil_div(bn_dims(e).C, BN_VTILE), bnv_fwd_tile, (void *)e);
  else
    cg_parallel(g, name, cg_ceil_div(bn_dims(e).C, BN_TILE), bn_fwd_tile, (void *)e);
}

/* dx over channels [c0, c1), n the rows of the statistics (every rank's when synchronized) */
static void bn_dx_call(Cg *g, const EmitLayer *e, LLVMValueRef c0, LLVMValueRef c1) {
  BnDims d = bn_dims(e);
  LLVMValueRef a[] = {cg_i64(g, e->B), cg_i64(g, d.C), cg_i64(g, d.S), cg_i64(g, d.n * (e->sync_ranks ? e->sync_ranks : 1)),
                      cg_in_ptr(g, e), cg_at(g, TS_A, e->dout, NULL), bn_auxp(g, e, 0), bn_auxp(g, e, 1),
                      cg_at(g, TS_P, e->w[0], NULL), bn_auxp(g, e, 2), bn_auxp(g, e, 3),
                      cg_at(g, TS_A, e->din, NULL), c0, c1};
  cg_kernel(g, "tk_bn2d_dx", a, 14);
}

/* dbeta = sum dy, dgamma = sum dy xhat,
 * dx = gamma invstd / n (n dy - dbeta - xhat dgamma) */
static void bn_bwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  LLVMValueRef c0, c1;
  cg_tile_range(g, t, BN_TILE, d.C, &c0, &c1);
  LLVMValueRef dims[3] = {cg_i64(g, e->B), cg_i64(g, d.C), cg_i64(g, d.S)};
  LLVMValueRef dy = cg_at(g, TS_A, e->dout, NULL);
  LLVMValueRef args[] = {dims[0], dims[1], dims[2], cg_in_ptr(g, e), dy, bn_auxp(g, e, 0), bn_auxp(g, e, 2),
                         bn_auxp(g, e, 3), c0, c1};
  cg_kernel(g, "tk_bn2d_dsums", args, 10);
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "bn_c", c0, c1);
  LLVMValueRef invstd = cg_load(g, cg_at(g, TS_A, e->aux + d.C, c));
  LLVMValueRef p_dg = cg_at(g, TS_G, e->dw[0], c), p_db = cg_at(g, TS_G, e->dw[1], c);
  cg_store(g, cg_fadd(g, cg_load(g, p_dg), cg_fmul(g, cg_load(g, cg_at(g, TS_A, e->aux + 3 * d.C, c)), invstd)), p_dg);
  cg_store(g, cg_fadd(g, cg_load(g, p_db), cg_load(g, cg_at(g, TS_A, e->aux + 2 * d.C, c))), p_db);
  cg_for_end(g, &Lc);
  if (e->din >= 0 && !e->sync_ranks) bn_dx_call(g, e, c0, c1);
}

static void bn_dx_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  LLVMValueRef c0, c1;
  cg_tile_range(g, t, BN_TILE, bn_dims(e).C, &c0, &c1);
  bn_dx_call(g, e, c0, c1);
}

static void bn_bwd(Cg *g, const EmitLayer *e) {
  char name[256];
  bool vec = bn_dims(e).S == 1;
  int64_t ntiles = cg_ceil_div(bn_dims(e).C, vec ? BN_VTILE : BN_TILE);
  cg_tile_name(name, sizeof name, e, "bn_bwd");
  if (!e->sync_ranks) {
    cg_parallel(g, name, ntiles, vec ? bnv_bwd_tile : bn_bwd_tile, (void *)e);
    return;
  }
  /* synchronized: local sums and parameter gradients; every rank's sums; the input gradient */
  cg_parallel(g, name, ntiles, vec ? bnv_bwd_sums_tile : bn_bwd_tile, (void *)e);
  if (e->din < 0) return;
  LLVMValueRef a[] = {bn_auxp(g, e, 2), cg_i64(g, 2 * bn_dims(e).C)};   /* sum dy, sum dy xhat */
  cg_kernel(g, "tesla_dist_sum", a, 2);
  cg_tile_name(name, sizeof name, e, "bn_bwd_dx");
  cg_parallel(g, name, ntiles, vec ? bnv_bwd_dx_tile : bn_dx_tile, (void *)e);
}

const OpEmit op_batchnorm_emit = {bn_fwd, bn_bwd, .fuses_act = true};

