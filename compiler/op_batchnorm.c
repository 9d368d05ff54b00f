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

/* element (b, c, s) of an (B, C, S) tensor: (b C + c) S + s */
static LLVMValueRef bn_idx(Cg *g, BnDims d, LLVMValueRef b, LLVMValueRef c, LLVMValueRef s) {
  return cg_add(g, cg_mad(g, cg_mad(g, b, d.C, c), d.S, NULL), s);
}

/* sum over (b, s) of f(b, c, s) for one channel c, into a fresh accumulator */
typedef LLVMValueRef (*BnTerm)(Cg *g, const EmitLayer *e, LLVMValueRef idx, LLVMValueRef c, void *arg);
static LLVMValueRef bn_sum(Cg *g, const EmitLayer *e, LLVMValueRef c, BnTerm f, void *arg) {
  BnDims d = bn_dims(e);
  LLVMValueRef acc = cg_var(g, "acc", cg_f32(g, 0));
  CgLoop Lb, Ls;
  LLVMValueRef b = cg_for(g, &Lb, "bn_b", cg_i64(g, 0), cg_i64(g, e->B));
  LLVMValueRef s = cg_for(g, &Ls, "bn_s", cg_i64(g, 0), cg_i64(g, d.S));
  LLVMValueRef v = f(g, e, bn_idx(g, d, b, c, s), c, arg);
  cg_store(g, cg_fadd(g, cg_load(g, acc), v), acc);
  cg_for_end(g, &Ls);
  cg_for_end(g, &Lb);
  return cg_load(g, acc);
}

static LLVMValueRef term_x(Cg *g, const EmitLayer *e, LLVMValueRef i, LLVMValueRef c, void *arg) {
  return cg_load(g, cg_at(g, e->in_block, e->in, i));
}
static LLVMValueRef term_var(Cg *g, const EmitLayer *e, LLVMValueRef i, LLVMValueRef c, void *mean) {
  LLVMValueRef dx = cg_fsub(g, cg_load(g, cg_at(g, e->in_block, e->in, i)), (LLVMValueRef)mean);
  return cg_fmul(g, dx, dx);
}
static LLVMValueRef term_dy(Cg *g, const EmitLayer *e, LLVMValueRef i, LLVMValueRef c, void *arg) {
  return cg_load(g, cg_at(g, TS_A, e->dout, i));
}
/* dy * xhat, xhat = (x - mean) invstd */
static LLVMValueRef xhat(Cg *g, const EmitLayer *e, LLVMValueRef i, LLVMValueRef c) {
  BnDims d = bn_dims(e);
  LLVMValueRef mean = cg_load(g, cg_at(g, TS_A, e->aux, c));
  LLVMValueRef invstd = cg_load(g, cg_at(g, TS_A, e->aux + d.C, c));
  return cg_fmul(g, cg_fsub(g, cg_load(g, cg_at(g, e->in_block, e->in, i)), mean), invstd);
}
static LLVMValueRef term_dy_xhat(Cg *g, const EmitLayer *e, LLVMValueRef i, LLVMValueRef c, void *arg) {
  return cg_fmul(g, cg_load(g, cg_at(g, TS_A, e->dout, i)), xhat(g, e, i, c));
}

/* y = x scale[c] + shift[c] over one channel */
static void bn_apply(Cg *g, const EmitLayer *e, LLVMValueRef c, LLVMValueRef scale, LLVMValueRef shift) {
  BnDims d = bn_dims(e);
  CgLoop Lb, Ls;
  LLVMValueRef b = cg_for(g, &Lb, "bn_yb", cg_i64(g, 0), cg_i64(g, e->B));
  LLVMValueRef s = cg_for(g, &Ls, "bn_ys", cg_i64(g, 0), cg_i64(g, d.S));
  LLVMValueRef i = bn_idx(g, d, b, c, s);
  LLVMValueRef x = cg_load(g, cg_at(g, e->in_block, e->in, i));
  LLVMValueRef y = cg_fadd(g, cg_fmul(g, x, scale), shift);
  cg_store(g, e->act ? cg_act(g, y, e->act_slope) : y, cg_at(g, TS_A, e->out, i));
  cg_for_end(g, &Ls);
  cg_for_end(g, &Lb);
}

static void bn_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  double mom = e->l->u.bn.momentum, eps = e->l->u.bn.eps;
  LLVMValueRef c0, c1;
  cg_tile_range(g, t, BN_TILE, d.C, &c0, &c1);
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "bn_c", c0, c1);
  LLVMValueRef gamma = cg_load(g, cg_at(g, TS_P, e->w[0], c)), beta = cg_load(g, cg_at(g, TS_P, e->w[1], c));
  LLVMValueRef p_rm = cg_at(g, TS_P, e->w[2], c), p_rv = cg_at(g, TS_P, e->w[3], c);
  LLVMValueRef mean, invstd;
  if (e->train) {
    mean = cg_fdiv(g, bn_sum(g, e, c, term_x, NULL), cg_f32(g, (double)d.n));
    LLVMValueRef var = cg_fdiv(g, bn_sum(g, e, c, term_var, mean), cg_f32(g, (double)d.n));
    invstd = cg_fdiv(g, cg_f32(g, 1), cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, var, cg_f32(g, eps))));
    cg_store(g, mean, cg_at(g, TS_A, e->aux, c));
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
  bn_apply(g, e, c, scale, cg_fsub(g, beta, cg_fmul(g, mean, scale)));
  cg_for_end(g, &Lc);
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
static void bnv_mean(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef p = bnv_aux(g, v, 0, c);
  cg_store(g, cg_fmul(g, cg_load(g, p), cg_f32(g, 1.0 / (double)v->e->B)), p);
}
static void bnv_sqdev(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef d = cg_fsub(g, bnv_x(g, v, b, c), cg_load(g, bnv_aux(g, v, 0, c)));
  bnv_add(g, bnv_aux(g, v, 1, c), cg_fmul(g, d, d));
}
/* var -> 1/std, running statistics (unbiased variance, as PyTorch) */
static void bnv_stats(Cg *g, const BnV *v, LLVMValueRef b, LLVMValueRef c) {
  const EmitLayer *e = v->e;
  double n = (double)e->B, mom = e->l->u.bn.momentum, unbias = n > 1 ? n / (n - 1) : 1.0;
  LLVMValueRef var = cg_fmul(g, cg_load(g, bnv_aux(g, v, 1, c)), cg_f32(g, 1.0 / n));
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

static void bnv_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  if (e->train) {
    bnv_loop(g, &v, "bn_zero", false, bnv_zero01);
    bnv_loop(g, &v, "bn_sum", true, bnv_sum);
    bnv_loop(g, &v, "bn_mean", false, bnv_mean);
    bnv_loop(g, &v, "bn_var", true, bnv_sqdev);
    bnv_loop(g, &v, "bn_stats", false, bnv_stats);
  }
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
  double n = (double)e->B;
  LLVMValueRef k = cg_fmul(g, cg_load(g, cg_at(g, TS_P, e->w[0], c)),
                           cg_fmul(g, cg_load(g, bnv_aux(g, v, 1, c)), cg_f32(g, 1.0 / n)));
  LLVMValueRef t = cg_fsub(g, cg_fsub(g, cg_fmul(g, bnv_dy(g, v, b, c), cg_f32(g, n)), cg_load(g, bnv_aux(g, v, 2, c))),
                           cg_fmul(g, bnv_xhat(g, v, b, c), cg_load(g, bnv_aux(g, v, 3, c))));
  cg_store(g, cg_fmul(g, k, t), cg_at(g, TS_A, e->din, cg_mad(g, b, e->l->in.d[0], c)));
}

static void bnv_bwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  cg_tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  bnv_loop(g, &v, "bn_dzero", false, bnv_zero23);
  bnv_loop(g, &v, "bn_dsum", true, bnv_dsums);
  bnv_loop(g, &v, "bn_dparam", false, bnv_dparams);
  if (e->din >= 0) bnv_loop(g, &v, "bn_dx", true, bnv_dx);
}

static void bn_fwd(Cg *g, const EmitLayer *e) {
  char name[64];
  snprintf(name, sizeof name, "L%d.bn_fwd.%s", e->l->index, e->train ? "train" : "eval");
  if (bn_dims(e).S == 1)
    cg_parallel(g, name, cg_ceil_div(bn_dims(e).C, BN_VTILE), bnv_fwd_tile, (void *)e);
  else
    cg_parallel(g, name, cg_ceil_div(bn_dims(e).C, BN_TILE), bn_fwd_tile, (void *)e);
}

/* dbeta = sum dy, dgamma = sum dy xhat,
 * dx = gamma invstd / n (n dy - dbeta - xhat dgamma) */
static void bn_bwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  LLVMValueRef c0, c1;
  cg_tile_range(g, t, BN_TILE, d.C, &c0, &c1);
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "bn_c", c0, c1);
  LLVMValueRef dbeta = bn_sum(g, e, c, term_dy, NULL), dgamma = bn_sum(g, e, c, term_dy_xhat, NULL);
  LLVMValueRef p_dg = cg_at(g, TS_G, e->dw[0], c), p_db = cg_at(g, TS_G, e->dw[1], c);
  cg_store(g, cg_fadd(g, cg_load(g, p_dg), dgamma), p_dg);
  cg_store(g, cg_fadd(g, cg_load(g, p_db), dbeta), p_db);
  if (e->din >= 0) {
    LLVMValueRef gamma = cg_load(g, cg_at(g, TS_P, e->w[0], c));
    LLVMValueRef invstd = cg_load(g, cg_at(g, TS_A, e->aux + d.C, c));
    LLVMValueRef k = cg_fdiv(g, cg_fmul(g, gamma, invstd), cg_f32(g, (double)d.n));
    CgLoop Lb, Ls;
    LLVMValueRef b = cg_for(g, &Lb, "bn_db", cg_i64(g, 0), cg_i64(g, e->B));
    LLVMValueRef s = cg_for(g, &Ls, "bn_ds", cg_i64(g, 0), cg_i64(g, d.S));
    LLVMValueRef i = bn_idx(g, d, b, c, s);
    LLVMValueRef dy = cg_load(g, cg_at(g, TS_A, e->dout, i));
    LLVMValueRef v = cg_fsub(g, cg_fsub(g, cg_fmul(g, dy, cg_f32(g, (double)d.n)), dbeta),
                             cg_fmul(g, xhat(g, e, i, c), dgamma));
    cg_store(g, cg_fmul(g, k, v), cg_at(g, TS_A, e->din, i));
    cg_for_end(g, &Ls);
    cg_for_end(g, &Lb);
  }
  cg_for_end(g, &Lc);
}

static void bn_bwd(Cg *g, const EmitLayer *e) {
  char name[64];
  snprintf(name, sizeof name, "L%d.bn_bwd", e->l->index);
  if (bn_dims(e).S == 1)
    cg_parallel(g, name, cg_ceil_div(bn_dims(e).C, BN_VTILE), bnv_bwd_tile, (void *)e);
  else
    cg_parallel(g, name, cg_ceil_div(bn_dims(e).C, BN_TILE), bn_bwd_tile, (void *)e);
}

const OpEmit op_batchnorm_emit = {bn_fwd, bn_bwd, .fuses_act = true};

