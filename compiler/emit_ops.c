/* emit_ops.c: the forward and backward emitters of the non-spatial ops (dense, batchnorm,
 * relu, leaky_relu, dropout, flatten, softmax), each a pair `x_fwd` / `x_bwd` over an
 * EmitLayer that says where its tensors live. Every shape is a constant in the IR. Dense calls
 * the register-blocked kernels of kernels/ (linked in as bitcode, inlined and specialized to
 * the constant dims), split into tiles over the runtime's thread pool; the rest are loops the
 * O3 pipeline vectorizes. Gradients of parameters accumulate (+=); the optimizer step zeroes
 * them. Convolution and pooling emitters come with their own work (conv issue).
 *
 * These pairs belong with their ops' shape rules in op_*.c; they are gathered here while the
 * front end is being hardened in parallel, and move there next. */
#include "cg.h"

/* ---- dense: y = x Wt + b, Wt (IN, OUT) ------------------------------------------------------ */

#define DENSE_TILE 96    /* output columns per tile: two 48-column kernel panels */
#define DENSE_DX_TILE 64 /* input columns per tile of the data gradient */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Tile t of [0, n) in tiles of w: [t w, t w + w), the last one [full w, n). Emitted so that
 * every kernel call sees a constant width (the tail gets a call of its own), letting the
 * kernel's row and column remainder dispatch fold away. */
typedef void (*TileCall)(Cg *g, const EmitLayer *e, LLVMValueRef lo, LLVMValueRef hi);
static void tile_call(Cg *g, const EmitLayer *e, LLVMValueRef t, int64_t w, int64_t n, TileCall f) {
  int64_t full = n / w, tail = n % w;
  if (full == 0) {
    f(g, e, cg_i64(g, 0), cg_i64(g, n));
    return;
  }
  LLVMValueRef lo = cg_mul(g, t, cg_i64(g, w));
  if (!tail) {
    f(g, e, lo, cg_add(g, lo, cg_i64(g, w)));
    return;
  }
  CgIf c;
  LLVMBasicBlockRef b_tail = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tile.tail");
  c.b_then = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tile.full");
  c.b_done = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tile.done");
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, t, cg_i64(g, full), ""), c.b_then, b_tail);
  LLVMPositionBuilderAtEnd(g->b, c.b_then);
  f(g, e, lo, cg_add(g, lo, cg_i64(g, w)));
  LLVMBuildBr(g->b, c.b_done);
  LLVMPositionBuilderAtEnd(g->b, b_tail);
  f(g, e, cg_i64(g, full * w), cg_i64(g, n));
  LLVMBuildBr(g->b, c.b_done);
  LLVMPositionBuilderAtEnd(g->b, c.b_done);
}

/* A tile width near `target` that divides n and is a multiple of `quantum`, so that one
 * constant-width kernel instantiation serves every tile (half the code to optimize); else
 * `target` and a tail tile. */
static int64_t tile_width(int64_t n, int64_t target, int64_t quantum) {
  if (n <= target) return n;
  for (int64_t d = 0; d <= target / 2; d += quantum) {
    int64_t up = target + d, down = target - d;
    if (n % up == 0) return up;
    if (down >= quantum && n % down == 0) return down;
  }
  return target;
}

/* [t * w, min((t + 1) * w, n)) for loops that do not care about constant widths */
static void tile_range(Cg *g, LLVMValueRef t, int64_t w, int64_t n, LLVMValueRef *lo, LLVMValueRef *hi) {
  *lo = cg_mul(g, t, cg_i64(g, w));
  LLVMValueRef end = cg_add(g, *lo, cg_i64(g, w));
  LLVMValueRef over = LLVMBuildICmp(g->b, LLVMIntSGT, end, cg_i64(g, n), "");
  *hi = LLVMBuildSelect(g->b, over, cg_i64(g, n), end, "");
}

static LLVMValueRef in_ptr(Cg *g, const EmitLayer *e) { return cg_at(g, e->in_block, e->in, NULL); }

static void dense_fwd_call(Cg *g, const EmitLayer *e, LLVMValueRef o0, LLVMValueRef o1) {
  int64_t IN = shape_elems(&e->l->in), OUT = e->l->u.dense.units;
  LLVMValueRef bias = e->w[1] >= 0 ? cg_at(g, TS_P, e->w[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, IN), cg_i64(g, OUT), in_ptr(g, e),
                         cg_at(g, TS_P, e->w[0], NULL), bias, cg_at(g, TS_A, e->out, NULL), o0, o1};
  cg_kernel(g, "tk_dense_fwd", args, 9);
}

static int64_t dense_out_tile(const EmitLayer *e) { return tile_width(e->l->u.dense.units, DENSE_TILE, 16); }
static int64_t dense_in_tile(const EmitLayer *e) { return tile_width(shape_elems(&e->l->in), DENSE_DX_TILE, 4); }

static void dense_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  tile_call(g, e, t, dense_out_tile(e), e->l->u.dense.units, dense_fwd_call);
}

static void dense_fwd(Cg *g, const EmitLayer *e) {
  char name[64];
  snprintf(name, sizeof name, "L%d.dense_fwd", e->l->index);
  cg_parallel(g, name, ceil_div(e->l->u.dense.units, dense_out_tile(e)), dense_fwd_tile, (void *)e);
}

static void dense_dx_call(Cg *g, const EmitLayer *e, LLVMValueRef i0, LLVMValueRef i1) {
  int64_t IN = shape_elems(&e->l->in), OUT = e->l->u.dense.units;
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, IN), cg_i64(g, OUT), cg_at(g, TS_A, e->dout, NULL),
                         cg_at(g, TS_P, e->w[0], NULL), cg_at(g, TS_A, e->din, NULL), i0, i1};
  cg_kernel(g, "tk_dense_bwd_data", args, 8);
}

static void dense_dx_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  tile_call(g, e, t, dense_in_tile(e), shape_elems(&e->l->in), dense_dx_call);
}

static void dense_dw_call(Cg *g, const EmitLayer *e, LLVMValueRef o0, LLVMValueRef o1) {
  int64_t IN = shape_elems(&e->l->in), OUT = e->l->u.dense.units;
  LLVMValueRef dbias = e->dw[1] >= 0 ? cg_at(g, TS_G, e->dw[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, IN), cg_i64(g, OUT), in_ptr(g, e),
                         cg_at(g, TS_A, e->dout, NULL), cg_at(g, TS_G, e->dw[0], NULL), dbias, o0, o1};
  cg_kernel(g, "tk_dense_bwd_weight", args, 9);
}

static void dense_dw_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  tile_call(g, e, t, dense_out_tile(e), e->l->u.dense.units, dense_dw_call);
}

/* dX = dY Wt^T (when needed), dWt += X^T dY, db += sum_b dY */
static void dense_bwd(Cg *g, const EmitLayer *e) {
  char name[64];
  snprintf(name, sizeof name, "L%d.dense_dx", e->l->index);
  if (e->din >= 0)
    cg_parallel(g, name, ceil_div(shape_elems(&e->l->in), dense_in_tile(e)), dense_dx_tile, (void *)e);
  snprintf(name, sizeof name, "L%d.dense_dw", e->l->index);
  cg_parallel(g, name, ceil_div(e->l->u.dense.units, dense_out_tile(e)), dense_dw_tile, (void *)e);
}

const OpEmit op_dense_emit = {dense_fwd, dense_bwd};

/* ---- elementwise activations ------------------------------------------------------------- */

static LLVMValueRef act_slope(Cg *g, const EmitLayer *e) {
  return cg_f32(g, e->l->op == OP_leaky_relu ? e->l->u.act.slope : 0.0);
}

/* y = x > 0 ? x : slope x     over (B, ...) */
static void act_fwd(Cg *g, const EmitLayer *e) {
  int64_t n = e->B * shape_elems(&e->l->in);
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "act", cg_i64(g, 0), cg_i64(g, n));
  LLVMValueRef x = cg_load(g, cg_at(g, e->in_block, e->in, i));
  LLVMValueRef y = cg_select(g, cg_fgt(g, x, cg_f32(g, 0)), x, cg_fmul(g, x, act_slope(g, e)));
  cg_store(g, y, cg_at(g, TS_A, e->out, i));
  cg_for_end(g, &L);
}

/* dx = x > 0 ? dy : slope dy */
static void act_bwd(Cg *g, const EmitLayer *e) {
  if (e->din < 0) return;
  int64_t n = e->B * shape_elems(&e->l->in);
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "act_bwd", cg_i64(g, 0), cg_i64(g, n));
  LLVMValueRef x = cg_load(g, cg_at(g, e->in_block, e->in, i));
  LLVMValueRef dy = cg_load(g, cg_at(g, TS_A, e->dout, i));
  LLVMValueRef dx = cg_select(g, cg_fgt(g, x, cg_f32(g, 0)), dy, cg_fmul(g, dy, act_slope(g, e)));
  cg_store(g, dx, cg_at(g, TS_A, e->din, i));
  cg_for_end(g, &L);
}

const OpEmit op_relu_emit = {act_fwd, act_bwd};
const OpEmit op_leaky_relu_emit = {act_fwd, act_bwd};

/* ---- dropout ------------------------------------------------------------------------------ */

/* A uniform float in [0, 1) from (seed, i): the splitmix64 finalizer, counter based, so any
 * tile order and any thread count give the same mask. */
static LLVMValueRef hash_uniform(Cg *g, LLVMValueRef seed, LLVMValueRef i) {
  LLVMBuilderRef b = g->b;
  LLVMValueRef z = LLVMBuildAdd(b, seed, LLVMBuildMul(b, i, LLVMConstInt(g->t_i64, 0x9E3779B97F4A7C15ull, 0), ""), "");
  z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, cg_i64(g, 30), ""), ""),
                   LLVMConstInt(g->t_i64, 0xBF58476D1CE4E5B9ull, 0), "");
  z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, cg_i64(g, 27), ""), ""),
                   LLVMConstInt(g->t_i64, 0x94D049BB133111EBull, 0), "");
  z = LLVMBuildXor(b, z, LLVMBuildLShr(b, z, cg_i64(g, 31), ""), "");
  LLVMValueRef top = LLVMBuildLShr(b, z, cg_i64(g, 40), "");   /* 24 bits */
  return cg_fmul(g, LLVMBuildUIToFP(b, top, g->t_f32, ""), cg_f32(g, 1.0 / 16777216.0));
}

/* train: mask = (u >= rate) / (1 - rate), y = x mask (mask kept for the backward); eval: y = x */
static void dropout_fwd(Cg *g, const EmitLayer *e) {
  int64_t n = e->B * shape_elems(&e->l->in);
  double rate = e->l->u.drop.rate;
  LLVMValueRef seed = e->train ? LLVMBuildXor(g->b, cg_field(g, TS_SEED),
                                              cg_i64(g, (int64_t)e->l->index * 0x632BE59BD9B4E019ll), "")
                               : NULL;
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "dropout", cg_i64(g, 0), cg_i64(g, n));
  LLVMValueRef x = cg_load(g, cg_at(g, e->in_block, e->in, i));
  if (e->train) {
    LLVMValueRef keep = LLVMBuildFCmp(g->b, LLVMRealOGE, hash_uniform(g, seed, i), cg_f32(g, rate), "");
    LLVMValueRef m = cg_select(g, keep, cg_f32(g, 1.0 / (1.0 - rate)), cg_f32(g, 0));
    cg_store(g, m, cg_at(g, TS_A, e->aux, i));
    x = cg_fmul(g, x, m);
  }
  cg_store(g, x, cg_at(g, TS_A, e->out, i));
  cg_for_end(g, &L);
}

static void dropout_bwd(Cg *g, const EmitLayer *e) {
  if (e->din < 0) return;
  int64_t n = e->B * shape_elems(&e->l->in);
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "dropout_bwd", cg_i64(g, 0), cg_i64(g, n));
  LLVMValueRef dy = cg_load(g, cg_at(g, TS_A, e->dout, i));
  cg_store(g, cg_fmul(g, dy, cg_load(g, cg_at(g, TS_A, e->aux, i))), cg_at(g, TS_A, e->din, i));
  cg_for_end(g, &L);
}

const OpEmit op_dropout_emit = {dropout_fwd, dropout_bwd};

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
  cg_store(g, cg_fadd(g, cg_fmul(g, x, scale), shift), cg_at(g, TS_A, e->out, i));
  cg_for_end(g, &Ls);
  cg_for_end(g, &Lb);
}

static void bn_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  double mom = e->l->u.bn.momentum, eps = e->l->u.bn.eps;
  LLVMValueRef c0, c1;
  tile_range(g, t, BN_TILE, d.C, &c0, &c1);
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
  cg_store(g, y, cg_at(g, TS_A, e->out, cg_mad(g, b, e->l->in.d[0], c)));
}

static void bnv_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnV v = {e, NULL, NULL};
  tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
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
  tile_range(g, t, BN_VTILE, e->l->in.d[0], &v.c0, &v.c1);
  bnv_loop(g, &v, "bn_dzero", false, bnv_zero23);
  bnv_loop(g, &v, "bn_dsum", true, bnv_dsums);
  bnv_loop(g, &v, "bn_dparam", false, bnv_dparams);
  if (e->din >= 0) bnv_loop(g, &v, "bn_dx", true, bnv_dx);
}

static void bn_fwd(Cg *g, const EmitLayer *e) {
  char name[64];
  snprintf(name, sizeof name, "L%d.bn_fwd.%s", e->l->index, e->train ? "train" : "eval");
  if (bn_dims(e).S == 1)
    cg_parallel(g, name, ceil_div(bn_dims(e).C, BN_VTILE), bnv_fwd_tile, (void *)e);
  else
    cg_parallel(g, name, ceil_div(bn_dims(e).C, BN_TILE), bn_fwd_tile, (void *)e);
}

/* dbeta = sum dy, dgamma = sum dy xhat,
 * dx = gamma invstd / n (n dy - dbeta - xhat dgamma) */
static void bn_bwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  BnDims d = bn_dims(e);
  LLVMValueRef c0, c1;
  tile_range(g, t, BN_TILE, d.C, &c0, &c1);
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
    cg_parallel(g, name, ceil_div(bn_dims(e).C, BN_VTILE), bnv_bwd_tile, (void *)e);
  else
    cg_parallel(g, name, ceil_div(bn_dims(e).C, BN_TILE), bn_bwd_tile, (void *)e);
}

const OpEmit op_batchnorm_emit = {bn_fwd, bn_bwd};

/* ---- flatten: a view (emit.c aliases its output and gradient to its input's) ------------- */

static void nothing(Cg *g, const EmitLayer *e) {}
const OpEmit op_flatten_emit = {nothing, nothing};

/* ---- softmax: fused with the loss in training (emit.c); in inference, probabilities ------- */

static void softmax_fwd(Cg *g, const EmitLayer *e) {
  int64_t K = e->l->in.d[0];
  CgLoop Lb, Lk;
  LLVMValueRef b = cg_for(g, &Lb, "sm_b", cg_i64(g, 0), cg_i64(g, e->B));
  LLVMValueRef row = cg_mul(g, b, cg_i64(g, K));
  LLVMValueRef mx = cg_var(g, "max", cg_f32(g, -3.4e38)), sum = cg_var(g, "sum", cg_f32(g, 0));
  LLVMValueRef k = cg_for(g, &Lk, "sm_max", cg_i64(g, 0), cg_i64(g, K));
  LLVMValueRef x = cg_load(g, cg_at(g, e->in_block, e->in, cg_add(g, row, k)));
  cg_store(g, cg_select(g, cg_fgt(g, x, cg_load(g, mx)), x, cg_load(g, mx)), mx);
  cg_for_end(g, &Lk);
  LLVMValueRef m = cg_load(g, mx);
  k = cg_for(g, &Lk, "sm_exp", cg_i64(g, 0), cg_i64(g, K));
  x = cg_load(g, cg_at(g, e->in_block, e->in, cg_add(g, row, k)));
  LLVMValueRef ex = cg_call1(g, "llvm.exp.f32", cg_fsub(g, x, m));
  cg_store(g, ex, cg_at(g, TS_A, e->out, cg_add(g, row, k)));
  cg_store(g, cg_fadd(g, cg_load(g, sum), ex), sum);
  cg_for_end(g, &Lk);
  LLVMValueRef inv = cg_fdiv(g, cg_f32(g, 1), cg_load(g, sum));
  k = cg_for(g, &Lk, "sm_norm", cg_i64(g, 0), cg_i64(g, K));
  LLVMValueRef p = cg_at(g, TS_A, e->out, cg_add(g, row, k));
  cg_store(g, cg_fmul(g, cg_load(g, p), inv), p);
  cg_for_end(g, &Lk);
  cg_for_end(g, &Lb);
}

const OpEmit op_softmax_emit = {softmax_fwd, nothing};

/* ---- spatial ops: their emitters come with the convolution work ----------------------------- */

const OpEmit op_conv_emit = {NULL, NULL};
const OpEmit op_maxpool_emit = {NULL, NULL};
const OpEmit op_avgpool_emit = {NULL, NULL};
