/* op_pool.c: 2-D max and average pooling (nn.MaxPool2d, nn.AvgPool2d with ceil_mode false;
 * avgpool counts padding in its divisor, PyTorch's count_include_pad=True). Window `size`,
 * `stride` (default: size), `padding` (at most half the window, as PyTorch requires).
 * Output: H' = (H + 2 ph - kh) / sh + 1. No weights. */
#include "cg.h"

#include <math.h>

static const char *const keys[] = {"size", "stride", "padding", NULL};

/* maxpool | avgpool: {size: k | [kh, kw], stride: size, padding: 0 | [ph, pw]} */
static void parse(Ctx *cx, Layer *l) {
  typeof(l->u.pool) *p = &l->u.pool;
  YNode *v;
  const char *name = op_registry[l->op]->name;
  if (!(v = spec_get(l->node, "size")))
    diag_at(cx, l->loc, "%s needs 'size' (its window: k or [kh, kw]), e.g. '%s: {size: 2}'", name, name);
  else
    spec_pair(cx, v, "size", 1, &p->kh, &p->kw);
  p->sh = p->kh, p->sw = p->kw;
  if ((v = spec_get(l->node, "stride"))) spec_pair(cx, v, "stride", 1, &p->sh, &p->sw);
  if ((v = spec_get(l->node, "padding")) && spec_pair(cx, v, "padding", 0, &p->ph, &p->pw) &&
      p->kh > 0 && (2 * p->ph > p->kh || 2 * p->pw > p->kw))
    diag_at(cx, v->loc, "%s padding must be at most half its window (%lldx%lld), as in PyTorch",
            name, (long long)p->kh, (long long)p->kw);
}

static bool infer(Ctx *cx, Layer *l) {
  typeof(l->u.pool) *p = &l->u.pool;
  if (p->kh <= 0 || p->sh <= 0) return false;
  int64_t H = l->in.d[1] + 2 * p->ph, W = l->in.d[2] + 2 * p->pw;
  if (p->kh > H || p->kw > W) {
    diag_at(cx, l->loc, "%s window %lldx%lld is larger than its input %s",
            op_registry[l->op]->name, (long long)p->kh, (long long)p->kw, shape_str(cx, &l->in, true));
    return false;
  }
  l->out = (Shape){3, {l->in.d[0], (H - p->kh) / p->sh + 1, (W - p->kw) / p->sw + 1}};
  return true;
}

static int params(const Layer *l, Param p[4]) { return 0; }

/* FLOPs saturate at INT64_MAX instead of overflowing; plan.c reports a saturated count. */
static int64_t sat(__int128 x) { return x > INT64_MAX ? INT64_MAX : (int64_t)x; }

static Flops max_flops(const Layer *l, int64_t n, bool need_dx) {
  __int128 out = (__int128)n * shape_elems(&l->out);
  return (Flops){sat(out * l->u.pool.kh * l->u.pool.kw), need_dx ? sat(out) : 0};
}

static Flops avg_flops(const Layer *l, int64_t n, bool need_dx) {
  __int128 out = (__int128)n * shape_elems(&l->out), win = (__int128)l->u.pool.kh * l->u.pool.kw;
  return (Flops){sat(out * win + out), need_dx ? sat(out * win + out) : 0};
}

const OpDef op_maxpool = {
    .name = "maxpool", .keys = keys, .spatial_only = true,
    .parse = parse, .infer = infer, .params = params, .flops = max_flops,
};

const OpDef op_avgpool = {
    .name = "avgpool", .keys = keys, .spatial_only = true,
    .parse = parse, .infer = infer, .params = params, .flops = avg_flops,
};

/* ==== code generation: forward and backward emitters ==== */

/* ---- pooling, per sample ------------------------------------------------------------------
 *
 * Forward: for every (c, h', w') the window's taps (i, j) are unrolled at emit time; a tap in
 * the padding reads a safe index and is masked by a select, so the loop over w' has no branch.
 * maxpool takes the first maximum in window order (PyTorch's `val > max || isnan(val)`, its
 * argmax starting at the window's first in-bounds tap) and keeps it for the backward as the
 * index h W + w within the (H, W) plane, an i32 in the float slot of aux. avgpool divides by
 * kh kw (count_include_pad=True).
 * Backward: dx_b zeroed, then each output's gradient scattered to its argmax (maxpool) or, over
 * 1/(kh kw), to its window's in-bounds taps (avgpool); windows overlap when stride < size. */

typedef struct PoolDims { int64_t C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo; } PoolDims;

static PoolDims pool_dims(const EmitLayer *e) {
  const Layer *l = e->l;
  const typeof(l->u.pool) *p = &l->u.pool;
  return (PoolDims){l->in.d[0], l->in.d[1], l->in.d[2], p->kh, p->kw, p->sh, p->sw, p->ph, p->pw,
                    l->out.d[1], l->out.d[2]};
}

/* window origin hs = h' sh - ph (likewise ws) and tap (i, j): its plane index h W + w (0 when it
 * is in the padding) and whether it is in bounds (NULL: always, decided at emit time) */
static LLVMValueRef pool_tap(Cg *g, const PoolDims *d, LLVMValueRef ho, LLVMValueRef wo, int64_t i, int64_t j,
                             LLVMValueRef *valid) {
  LLVMValueRef h = cg_mad(g, ho, d->sh, cg_i64(g, i - d->ph)), w = cg_mad(g, wo, d->sw, cg_i64(g, j - d->pw));
  LLVMValueRef ok = NULL;
  /* can this tap fall outside? only near the borders, known from the constants */
  bool h_lo = i < d->ph, h_hi = (d->Ho - 1) * d->sh - d->ph + i >= d->H;
  bool w_lo = j < d->pw, w_hi = (d->Wo - 1) * d->sw - d->pw + j >= d->W;
#define AND(c) ok = ok ? LLVMBuildAnd(g->b, ok, (c), "") : (c)
  if (h_lo) AND(LLVMBuildICmp(g->b, LLVMIntSGE, h, cg_i64(g, 0), ""));
  if (h_hi) AND(LLVMBuildICmp(g->b, LLVMIntSLT, h, cg_i64(g, d->H), ""));
  if (w_lo) AND(LLVMBuildICmp(g->b, LLVMIntSGE, w, cg_i64(g, 0), ""));
  if (w_hi) AND(LLVMBuildICmp(g->b, LLVMIntSLT, w, cg_i64(g, d->W), ""));
#undef AND
  LLVMValueRef idx = cg_mad(g, h, d->W, w);
  if (ok) idx = LLVMBuildSelect(g->b, ok, idx, cg_i64(g, 0), "");
  *valid = ok;
  return idx;
}

static LLVMValueRef smax(Cg *g, LLVMValueRef a, int64_t k) {
  LLVMValueRef c = LLVMBuildICmp(g->b, LLVMIntSGT, a, cg_i64(g, k), "");
  return LLVMBuildSelect(g->b, c, a, cg_i64(g, k), "");
}

/* ---- forward by output-row chunks: no horizontal padding -----------------------------------
 * With pw = 0 every tap column of a window is in bounds, so a chunk of n <= POOL_CHUNK outputs
 * of one output row reads, per tap row i, one contiguous input segment of (n - 1) sw + kw
 * floats as an LLVM vector; tap j is the shuffle of lanes j, j + sw, ...; the window's max (and
 * its argmax, as a vector of i32) or sum stays in registers. A tap row in the vertical
 * padding is masked with one scalar condition. */
#define POOL_CHUNK 16

static LLVMValueRef splat(Cg *g, LLVMValueRef v, unsigned n) {
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(v), n);
  LLVMValueRef x = LLVMBuildInsertElement(g->b, LLVMGetUndef(vt), v, cg_i32(g, 0), "");
  LLVMValueRef zeros[POOL_CHUNK * 8];
  for (unsigned k = 0; k < n; k++) zeros[k] = cg_i32(g, 0);
  return LLVMBuildShuffleVector(g->b, x, LLVMGetUndef(vt), LLVMConstVector(zeros, n), "");
}

static LLVMValueRef vload(Cg *g, LLVMTypeRef vt, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, vt, p, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void vstore(Cg *g, LLVMValueRef v, LLVMValueRef p) { LLVMSetAlignment(LLVMBuildStore(g->b, v, p), 4); }

/* outputs [wo0, wo0 + n) of row ho of channel plane xc -> y row, argmax row */
static void pool_chunk(Cg *g, const EmitLayer *e, const PoolDims *d, LLVMValueRef xc, LLVMValueRef yr,
                       LLVMValueRef ar, LLVMValueRef ho, LLVMValueRef wo0, unsigned n) {
  bool max = e->l->op == OP_maxpool;
  unsigned span = (unsigned)((n - 1) * d->sw + d->kw);
  LLVMTypeRef vf = LLVMVectorType(g->t_f32, n), vseg = LLVMVectorType(g->t_f32, span);
  LLVMTypeRef vi = LLVMVectorType(g->t_i32, n);
  LLVMValueRef acc = splat(g, cg_f32(g, max ? -INFINITY : 0.0), n), arg = NULL;
  LLVMValueRef w0 = cg_mad(g, wo0, d->sw, NULL);   /* first input column of the chunk */
  LLVMValueRef lanes[POOL_CHUNK];
  for (unsigned k = 0; k < n; k++) lanes[k] = cg_i32(g, (int32_t)(k * d->sw));
  LLVMValueRef lane_off = LLVMConstVector(lanes, n);
  for (int64_t i = 0; i < d->kh; i++) {
    LLVMValueRef h = cg_mad(g, ho, d->sh, cg_i64(g, i - d->ph)), ok = NULL;
    if (i < d->ph) ok = LLVMBuildICmp(g->b, LLVMIntSGE, h, cg_i64(g, 0), "");
    if ((d->Ho - 1) * d->sh - d->ph + i >= d->H) {
      LLVMValueRef c = LLVMBuildICmp(g->b, LLVMIntSLT, h, cg_i64(g, d->H), "");
      ok = ok ? LLVMBuildAnd(g->b, ok, c, "") : c;
    }
    LLVMValueRef hs = ok ? LLVMBuildSelect(g->b, ok, h, cg_i64(g, 0), "") : h;   /* a safe row */
    LLVMValueRef base = cg_mad(g, hs, d->W, w0);
    LLVMValueRef seg = vload(g, vseg, cg_gep(g, xc, base));
    if (max && !arg) {   /* the window's first in-bounds tap: its top row is the first valid i */
      LLVMValueRef h0 = cg_mad(g, ho, d->sh, cg_i64(g, -d->ph));
      h0 = LLVMBuildSelect(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, h0, cg_i64(g, 0), ""), h0, cg_i64(g, 0), "");
      LLVMValueRef b0 = LLVMBuildTrunc(g->b, cg_mad(g, h0, d->W, w0), g->t_i32, "");
      arg = LLVMBuildAdd(g->b, splat(g, b0, n), lane_off, "");
    }
    LLVMValueRef vbase = splat(g, LLVMBuildTrunc(g->b, base, g->t_i32, ""), n);
    for (int64_t j = 0; j < d->kw; j++) {
      LLVMValueRef sel[POOL_CHUNK];
      for (unsigned k = 0; k < n; k++) sel[k] = cg_i32(g, (int32_t)(j + k * d->sw));
      LLVMValueRef v = LLVMBuildShuffleVector(g->b, seg, LLVMGetUndef(vseg), LLVMConstVector(sel, n), "");
      if (max) {
        LLVMValueRef take = LLVMBuildOr(g->b, LLVMBuildFCmp(g->b, LLVMRealOGT, v, acc, ""),
                                        LLVMBuildFCmp(g->b, LLVMRealUNO, v, v, ""), "");
        if (ok) take = LLVMBuildAnd(g->b, take, splat(g, ok, n), "");
        acc = LLVMBuildSelect(g->b, take, v, acc, "");
        LLVMValueRef idx = LLVMBuildAdd(g->b, vbase, LLVMBuildAdd(g->b, lane_off, splat(g, cg_i32(g, (int32_t)j), n), ""), "");
        arg = LLVMBuildSelect(g->b, take, idx, arg, "");
      } else {
        if (ok) v = LLVMBuildSelect(g->b, splat(g, ok, n), v, splat(g, cg_f32(g, 0), n), "");
        acc = LLVMBuildFAdd(g->b, acc, v, "");
      }
    }
  }
  if (!max) acc = LLVMBuildFMul(g->b, acc, splat(g, cg_f32(g, 1.0 / (double)(d->kh * d->kw)), n), "");
  vstore(g, acc, cg_gep(g, yr, wo0));
  if (max) vstore(g, arg, LLVMBuildInBoundsGEP2(g->b, g->t_i32, ar, &wo0, 1, ""));
  (void)vf, (void)vi;
}

static void pool_fwd_rows(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  PoolDims d = pool_dims(e);
  LLVMValueRef x = cg_gep(g, cg_in_ptr(g, e), cg_mad(g, b, d.C * d.H * d.W, NULL));
  LLVMValueRef y = cg_at(g, TS_A, e->out, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  LLVMValueRef am = cg_at(g, TS_A, e->aux, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  CgLoop Lc, Lh, Lw;
  LLVMValueRef c = cg_for(g, &Lc, "pool_c", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef xc = cg_gep(g, x, cg_mad(g, c, d.H * d.W, NULL));
  LLVMValueRef ho = cg_for(g, &Lh, "pool_ho", cg_i64(g, 0), cg_i64(g, d.Ho));
  LLVMValueRef o = cg_mad(g, cg_mad(g, c, d.Ho, ho), d.Wo, NULL);
  LLVMValueRef yr = cg_gep(g, y, o), ar = cg_gep(g, am, o);
  int64_t full = d.Wo / POOL_CHUNK, tail = d.Wo % POOL_CHUNK;
  if (full) {
    LLVMValueRef k = cg_for(g, &Lw, "pool_wc", cg_i64(g, 0), cg_i64(g, full));
    pool_chunk(g, e, &d, xc, yr, ar, ho, cg_mad(g, k, POOL_CHUNK, NULL), POOL_CHUNK);
    cg_for_end(g, &Lw);
  }
  if (tail) pool_chunk(g, e, &d, xc, yr, ar, ho, cg_i64(g, full * POOL_CHUNK), (unsigned)tail);
  cg_for_end(g, &Lh);
  cg_for_end(g, &Lc);
}

static void pool_fwd_tile(Cg *g, LLVMValueRef b, void *arg) {
  const EmitLayer *e = arg;
  PoolDims d = pool_dims(e);
  bool max = e->l->op == OP_maxpool;
  if (d.pw == 0 && d.H * d.W < INT32_MAX && (POOL_CHUNK - 1) * d.sw + d.kw <= 8 * POOL_CHUNK) {
    pool_fwd_rows(g, e, b);
    return;
  }
  LLVMValueRef x = cg_gep(g, cg_in_ptr(g, e), cg_mad(g, b, d.C * d.H * d.W, NULL));
  LLVMValueRef y = cg_at(g, TS_A, e->out, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  LLVMValueRef am = cg_at(g, TS_A, e->aux, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  CgLoop Lc, Lh, Lw;
  LLVMValueRef c = cg_for(g, &Lc, "pool_c", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef xc = cg_gep(g, x, cg_mad(g, c, d.H * d.W, NULL));
  LLVMValueRef ho = cg_for(g, &Lh, "pool_ho", cg_i64(g, 0), cg_i64(g, d.Ho));
  LLVMValueRef wo = cg_for(g, &Lw, "pool_wo", cg_i64(g, 0), cg_i64(g, d.Wo));
  LLVMValueRef o = cg_mad(g, cg_mad(g, c, d.Ho, ho), d.Wo, wo);
  LLVMValueRef acc = cg_f32(g, max ? -INFINITY : 0.0), arg_i = NULL;
  if (max) {   /* the window's first in-bounds tap */
    LLVMValueRef h0 = smax(g, cg_mad(g, ho, d.sh, cg_i64(g, -d.ph)), 0);
    LLVMValueRef w0 = smax(g, cg_mad(g, wo, d.sw, cg_i64(g, -d.pw)), 0);
    arg_i = cg_mad(g, h0, d.W, w0);
  }
  for (int64_t i = 0; i < d.kh; i++)
    for (int64_t j = 0; j < d.kw; j++) {
      LLVMValueRef ok;
      LLVMValueRef idx = pool_tap(g, &d, ho, wo, i, j, &ok);
      LLVMValueRef v = cg_load(g, cg_gep(g, xc, idx));
      if (max) {
        LLVMValueRef take = LLVMBuildOr(g->b, cg_fgt(g, v, acc), LLVMBuildFCmp(g->b, LLVMRealUNO, v, v, ""), "");
        if (ok) take = LLVMBuildAnd(g->b, take, ok, "");
        acc = cg_select(g, take, v, acc);
        arg_i = cg_select(g, take, idx, arg_i);
      } else {
        acc = cg_fadd(g, acc, ok ? cg_select(g, ok, v, cg_f32(g, 0)) : v);
      }
    }
  if (max) {
    cg_store(g, acc, cg_gep(g, y, o));
    LLVMBuildStore(g->b, LLVMBuildTrunc(g->b, arg_i, g->t_i32, ""), cg_gep(g, am, o));
  } else {
    cg_store(g, cg_fmul(g, acc, cg_f32(g, 1.0 / (double)(d.kh * d.kw))), cg_gep(g, y, o));
  }
  cg_for_end(g, &Lw);
  cg_for_end(g, &Lh);
  cg_for_end(g, &Lc);
}

/* ---- backward by input rows, windows that do not overlap ----------------------------------
 * With sh >= kh, sw >= kw and pw = 0 every input element lies in at most one window, so dx is
 * gathered instead of scattered: input row h = h' sh - ph + i of a window row takes, for a
 * chunk of n outputs, the n sw columns from w' sw: lane l is output w' = l / sw, tap
 * j = l % sw, and gets dy[h', w'] where j < kw and (maxpool) the argmax is that element, else
 * 0. Written once, no zeroing pass unless some input rows or columns are in no window. */
static void pool_bwd_chunk(Cg *g, const EmitLayer *e, const PoolDims *d, LLVMValueRef dxr, LLVMValueRef dyr,
                           LLVMValueRef ar, LLVMValueRef h, LLVMValueRef wo0, unsigned n) {
  bool max = e->l->op == OP_maxpool;
  unsigned m = (unsigned)(n * d->sw);
  LLVMTypeRef vf = LLVMVectorType(g->t_f32, n), vi = LLVMVectorType(g->t_i32, n);
  LLVMValueRef gy = vload(g, vf, cg_gep(g, dyr, wo0));
  if (!max) gy = LLVMBuildFMul(g->b, gy, splat(g, cg_f32(g, 1.0 / (double)(d->kh * d->kw)), n), "");
  LLVMValueRef spread[POOL_CHUNK * 8], lane[POOL_CHUNK * 8], tapok[POOL_CHUNK * 8];
  for (unsigned l = 0; l < m; l++) {
    spread[l] = cg_i32(g, (int32_t)(l / d->sw));
    lane[l] = cg_i32(g, (int32_t)l);
    tapok[l] = LLVMConstInt(g->t_i1, (int64_t)(l % d->sw) < d->kw, 0);
  }
  LLVMValueRef v = LLVMBuildShuffleVector(g->b, gy, LLVMGetUndef(vf), LLVMConstVector(spread, m), "");
  LLVMValueRef keep = LLVMConstVector(tapok, m);
  LLVMValueRef w0 = cg_mad(g, wo0, d->sw, NULL);
  if (max) {   /* the argmax is this element: h W + w0 + l */
    LLVMValueRef a = vload(g, vi, LLVMBuildInBoundsGEP2(g->b, g->t_i32, ar, &wo0, 1, ""));
    a = LLVMBuildShuffleVector(g->b, a, LLVMGetUndef(vi), LLVMConstVector(spread, m), "");
    LLVMValueRef here = LLVMBuildTrunc(g->b, cg_mad(g, h, d->W, w0), g->t_i32, "");
    here = LLVMBuildAdd(g->b, splat(g, here, m), LLVMConstVector(lane, m), "");
    keep = LLVMBuildAnd(g->b, keep, LLVMBuildICmp(g->b, LLVMIntEQ, a, here, ""), "");
  }
  v = LLVMBuildSelect(g->b, keep, v, splat(g, cg_f32(g, 0), m), "");
  vstore(g, v, cg_gep(g, dxr, w0));
}

static void pool_bwd_rows(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  PoolDims d = pool_dims(e);
  LLVMValueRef dx = cg_at(g, TS_A, e->din, cg_mad(g, b, d.C * d.H * d.W, NULL));
  LLVMValueRef dy = cg_at(g, TS_A, e->dout, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  LLVMValueRef am = cg_at(g, TS_A, e->aux, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  bool covered = d.sh == d.kh && d.sw == d.kw && d.Ho * d.sh - d.ph >= d.H && d.Wo * d.sw >= d.W;
  if (!covered)
    LLVMBuildMemSet(g->b, dx, LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0), cg_i64(g, 4 * d.C * d.H * d.W), 4);
  CgLoop Lc, Lh, Lw;
  LLVMValueRef c = cg_for(g, &Lc, "poolb_c", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef dxc = cg_gep(g, dx, cg_mad(g, c, d.H * d.W, NULL));
  LLVMValueRef ho = cg_for(g, &Lh, "poolb_ho", cg_i64(g, 0), cg_i64(g, d.Ho));
  LLVMValueRef o = cg_mad(g, cg_mad(g, c, d.Ho, ho), d.Wo, NULL);
  LLVMValueRef dyr = cg_gep(g, dy, o), ar = cg_gep(g, am, o);
  int64_t full = d.Wo / POOL_CHUNK, tail = d.Wo % POOL_CHUNK;
  for (int64_t i = 0; i < d.kh; i++) {
    LLVMValueRef h = cg_mad(g, ho, d.sh, cg_i64(g, i - d.ph));
    CgIf in;
    bool check = i < d.ph || (d.Ho - 1) * d.sh - d.ph + i >= d.H;
    if (check) {
      LLVMValueRef ok = LLVMBuildAnd(g->b, LLVMBuildICmp(g->b, LLVMIntSGE, h, cg_i64(g, 0), ""),
                                     LLVMBuildICmp(g->b, LLVMIntSLT, h, cg_i64(g, d.H), ""), "");
      cg_if(g, &in, ok);
    }
    LLVMValueRef dxr = cg_gep(g, dxc, cg_mad(g, h, d.W, NULL));
    if (full) {
      LLVMValueRef k = cg_for(g, &Lw, "poolb_wc", cg_i64(g, 0), cg_i64(g, full));
      pool_bwd_chunk(g, e, &d, dxr, dyr, ar, h, cg_mad(g, k, POOL_CHUNK, NULL), POOL_CHUNK);
      cg_for_end(g, &Lw);
    }
    if (tail) pool_bwd_chunk(g, e, &d, dxr, dyr, ar, h, cg_i64(g, full * POOL_CHUNK), (unsigned)tail);
    if (check) cg_if_end(g, &in);
  }
  cg_for_end(g, &Lh);
  cg_for_end(g, &Lc);
}

static void pool_bwd_tile(Cg *g, LLVMValueRef b, void *arg) {
  const EmitLayer *e = arg;
  PoolDims d = pool_dims(e);
  bool max = e->l->op == OP_maxpool;
  /* (W' sw <= W: the last chunk's n sw columns stay in the row) */
  if (d.pw == 0 && d.sh >= d.kh && d.sw >= d.kw && d.Wo * d.sw <= d.W && d.H * d.W < INT32_MAX &&
      POOL_CHUNK * d.sw <= 8 * POOL_CHUNK) {
    pool_bwd_rows(g, e, b);
    return;
  }
  LLVMValueRef dx = cg_at(g, TS_A, e->din, cg_mad(g, b, d.C * d.H * d.W, NULL));
  LLVMValueRef dy = cg_at(g, TS_A, e->dout, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  LLVMValueRef am = cg_at(g, TS_A, e->aux, cg_mad(g, b, d.C * d.Ho * d.Wo, NULL));
  LLVMBuildMemSet(g->b, dx, LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0), cg_i64(g, 4 * d.C * d.H * d.W), 4);
  CgLoop Lc, Lh, Lw;
  LLVMValueRef c = cg_for(g, &Lc, "poolb_c", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef dxc = cg_gep(g, dx, cg_mad(g, c, d.H * d.W, NULL));
  LLVMValueRef ho = cg_for(g, &Lh, "poolb_ho", cg_i64(g, 0), cg_i64(g, d.Ho));
  LLVMValueRef wo = cg_for(g, &Lw, "poolb_wo", cg_i64(g, 0), cg_i64(g, d.Wo));
  LLVMValueRef o = cg_mad(g, cg_mad(g, c, d.Ho, ho), d.Wo, wo);
  LLVMValueRef gy = cg_load(g, cg_gep(g, dy, o));
  if (max) {
    LLVMValueRef idx = LLVMBuildSExt(g->b, LLVMBuildLoad2(g->b, g->t_i32, cg_gep(g, am, o), ""), g->t_i64, "");
    LLVMValueRef p = cg_gep(g, dxc, idx);
    cg_store(g, cg_fadd(g, cg_load(g, p), gy), p);
  } else {
    gy = cg_fmul(g, gy, cg_f32(g, 1.0 / (double)(d.kh * d.kw)));
    for (int64_t i = 0; i < d.kh; i++)
      for (int64_t j = 0; j < d.kw; j++) {
        LLVMValueRef ok;
        LLVMValueRef p = cg_gep(g, dxc, pool_tap(g, &d, ho, wo, i, j, &ok));
        cg_store(g, cg_fadd(g, cg_load(g, p), ok ? cg_select(g, ok, gy, cg_f32(g, 0)) : gy), p);
      }
  }
  cg_for_end(g, &Lw);
  cg_for_end(g, &Lh);
  cg_for_end(g, &Lc);
}

/* Tiles: the same sample groups as op_conv.c's (CONV_GROUPS), so that a sample's conv output,
 * its pooling and their gradients stay with one thread under the pool's static tile map. */
#define POOL_GROUPS 4

static int64_t group_w(int64_t B) { return cg_ceil_div(B, B < POOL_GROUPS ? B : POOL_GROUPS); }

typedef void (*PoolSample)(Cg *g, LLVMValueRef b, void *arg);
typedef struct PoolGroup { const EmitLayer *e; PoolSample f; } PoolGroup;

static void pool_group_tile(Cg *g, LLVMValueRef t, void *arg) {
  const PoolGroup *pg = arg;
  LLVMValueRef b0, b1;
  cg_tile_range(g, t, group_w(pg->e->B), pg->e->B, &b0, &b1);
  CgLoop Lb;
  LLVMValueRef b = cg_for(g, &Lb, "pool_b", b0, b1);
  pg->f(g, b, (void *)pg->e);
  cg_for_end(g, &Lb);
}

static void pool_fwd(Cg *g, const EmitLayer *e) {
  char name[256];
  cg_tile_name(name, sizeof name, e, e->l->op == OP_maxpool ? "maxpool_fwd" : "avgpool_fwd");
  PoolGroup pg = {e, pool_fwd_tile};
  cg_parallel(g, name, cg_ceil_div(e->B, group_w(e->B)), pool_group_tile, &pg);
}

static void pool_bwd(Cg *g, const EmitLayer *e) {
  if (e->din < 0) return;
  char name[256];
  cg_tile_name(name, sizeof name, e, e->l->op == OP_maxpool ? "maxpool_bwd" : "avgpool_bwd");
  PoolGroup pg = {e, pool_bwd_tile};
  cg_parallel(g, name, cg_ceil_div(e->B, group_w(e->B)), pool_group_tile, &pg);
}

const OpEmit op_maxpool_emit = {pool_fwd, pool_bwd};
const OpEmit op_avgpool_emit = {pool_fwd, pool_bwd};
