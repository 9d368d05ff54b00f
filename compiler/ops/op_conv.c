/* op_conv.c: 2-D convolution as PyTorch's nn.Conv2d computes it (cross-correlation, NCHW).
 * Weight (K, C, kh, kw), bias (K). Padding is an int, a pair, `same` (stride 1 only, as in
 * PyTorch; an even kernel pads one more at the bottom/right) or `valid` (0).
 * Output: H' = (H + pt + pb - kh) / sh + 1, likewise W'. */
#include "cg.h"

#include <string.h>

static const char *const keys[] = {"filters", "kernel", "stride", "padding", "bias", NULL};

/* conv: {filters: K, kernel: k | [kh, kw], stride: 1 | [sh, sw],
 *        padding: 0 | p | [ph, pw] | same | valid, bias: true} */
static void parse(Ctx *cx, Layer *l) {
  typeof(l->u.conv) *c = &l->u.conv;
  c->sh = c->sw = 1, c->bias = true, c->pad = PAD_EXPLICIT;
  YNode *v;
  if (!(v = spec_get(l->node, "filters")))
    diag_at(cx, l->loc, "conv needs 'filters' (its output channels), e.g. 'conv: {filters: 32, kernel: 3}'");
  else
    spec_int(cx, v, "filters", 1, TS_MAX_DIM, &c->filters);
  if (!(v = spec_get(l->node, "kernel")))
    diag_at(cx, l->loc, "conv needs 'kernel' (its size: k or [kh, kw])");
  else
    spec_pair(cx, v, "kernel", 1, &c->kh, &c->kw);
  if ((v = spec_get(l->node, "stride"))) spec_pair(cx, v, "stride", 1, &c->sh, &c->sw);
  if ((v = spec_get(l->node, "padding"))) {
    if (v->kind == Y_SCALAR && !strcmp(v->str, "same"))
      c->pad = PAD_SAME;
    else if (v->kind == Y_SCALAR && !strcmp(v->str, "valid"))
      c->pad = PAD_VALID;
    else if (v->kind == Y_SCALAR && (v->str[0] < '0' || v->str[0] > '9') && v->str[0] != '-')
      diag_at(cx, v->loc, "'padding' must be an integer, a pair, same or valid, got %s",
              spec_scalar_desc(cx, v));
    else {
      int64_t ph = 0, pw = 0;
      if (spec_pair(cx, v, "padding", 0, &ph, &pw)) c->pt = c->pb = ph, c->pl = c->pr = pw;
    }
    if (c->pad == PAD_SAME && (c->sh != 1 || c->sw != 1))
      diag_at(cx, v->loc, "padding 'same' needs stride 1 (as in PyTorch); give the padding as a number");
  }
  if ((v = spec_get(l->node, "bias"))) spec_bool(cx, v, "bias", &c->bias);
}

static bool infer(Ctx *cx, Layer *l) {
  typeof(l->u.conv) *c = &l->u.conv;
  if (c->filters <= 0 || c->kh <= 0) return false;
  if (c->pad == PAD_SAME) {
    c->pt = (c->kh - 1) / 2, c->pb = c->kh - 1 - c->pt;
    c->pl = (c->kw - 1) / 2, c->pr = c->kw - 1 - c->pl;
  }
  int64_t C = l->in.d[0], H = l->in.d[1] + c->pt + c->pb, W = l->in.d[2] + c->pl + c->pr;
  if (c->kh > H || c->kw > W) {
    diag_at(cx, l->loc, "conv kernel %lldx%lld is larger than its padded input %lldx%lld (input %s, "
                        "padding %lld)", (long long)c->kh, (long long)c->kw, (long long)H, (long long)W,
            shape_str(cx, &l->in, true), (long long)c->pt);
    return false;
  }
  int64_t w, ck, out;
  l->out = (Shape){3, {c->filters, (H - c->kh) / c->sh + 1, (W - c->kw) / c->sw + 1}};
  if (!size_mul(c->filters, C, &ck) || !size_mul(ck, c->kh * c->kw, &w) ||
      !size_mul(c->filters, l->out.d[1] * l->out.d[2], &out)) {
    diag_at(cx, l->loc, "conv is too large: its weight or output overflows");
    return false;
  }
  return true;
}

static int params(const Layer *l, Param p[4]) {
  const typeof(l->u.conv) *c = &l->u.conv;
  p[0] = (Param){"weight", 4, {c->filters, l->in.d[0], c->kh, c->kw}, true};
  if (!c->bias) return 1;
  p[1] = (Param){"bias", 1, {c->filters}, true};
  return 2;
}

/* FLOPs saturate at INT64_MAX instead of overflowing; plan.c reports a saturated count. */
static int64_t sat(__int128 x) { return x > INT64_MAX ? INT64_MAX : (int64_t)x; }

static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  const typeof(l->u.conv) *c = &l->u.conv;
  __int128 out = (__int128)n * shape_elems(&l->out), mac = out * l->in.d[0] * c->kh * c->kw;
  __int128 b = c->bias ? out : 0;
  return (Flops){sat(2 * mac + b), sat((need_dx ? 2 * mac : 0) + 2 * mac + b)};
}

const OpDef op_conv = {
    .name = "conv", .keys = keys, .weighted = true, .spatial_only = true,
    .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: forward and backward emitters ==== */

/* ---- conv as a GEMM over im2col -------------------------------------------------------------
 *
 * Legend: Q = C kh kw (the weight as a matrix is (K, Q), PyTorch's layout as it stands),
 * P = H' W' (output positions). Per sample b:
 *
 *   forward    col_b (Q, P) = im2col(x_b) with zero padding;  y_b (K, P) = W col_b + bias
 *              (the bias is the GEMM accumulators' initial value: no pass of its own)
 *   keeps      col (B, Q, P) in the layer's aux area for the backward
 *   backward   per sample group g: partial dW_g (K, Q) = sum_b dy_b col_b^T and db_g = sum over
 *              (b, p) of dy, then dW += dW_0 + dW_1 + ... in that order (deterministic, no
 *              races); then, only when the input gradient is needed, per sample:
 *              dcol_b = W^T dy_b written over col_b (dW is done with it) and scattered back by
 *              col2im into dx_b.
 *
 * Tiles: every phase runs over the same CONV_GROUPS sample groups (op_pool.c too), so that
 * under the pool's static tile-to-thread map a sample's col, output and gradients stay in
 * the cache of the core that made them (measured on seed: the im2col pass took 4x longer on
 * two threads than on one when the weight gradient's tiles read every sample's col).
 *
 * im2col and col2im are emitted with (i, j) of the kernel unrolled at emit time, so the valid
 * range of every output row and column is a constant: each row's valid segment is one LLVM
 * vector load and store (a shuffle at stride > 1), and the padding a few constant memsets. */

typedef struct ConvDims { int64_t C, H, W, K, kh, kw, sh, sw, pt, pl, Ho, Wo, P, Q; } ConvDims;

static ConvDims conv_dims(const EmitLayer *e) {
  const Layer *l = e->l;
  const typeof(l->u.conv) *c = &l->u.conv;
  ConvDims d = {l->in.d[0], l->in.d[1], l->in.d[2], c->filters, c->kh, c->kw, c->sh, c->sw,
                c->pt, c->pl, l->out.d[1], l->out.d[2], 0, 0};
  d.P = d.Ho * d.Wo, d.Q = d.C * d.kh * d.kw;
  return d;
}

/* [lo, hi): the outputs o in [0, out) whose input o s - pad + k lies in [0, n) */
static void valid_range(int64_t n, int64_t out, int64_t s, int64_t pad, int64_t k, int64_t *lo, int64_t *hi) {
  int64_t off = k - pad;
  int64_t l = off >= 0 ? 0 : (-off + s - 1) / s;
  int64_t h = n - 1 - off < 0 ? 0 : (n - 1 - off) / s + 1;
  if (h > out) h = out;
  if (l > h) l = h;
  *lo = l, *hi = h;
}

/* p[lo, hi) = 0, constant bounds */
static void conv_zero(Cg *g, LLVMValueRef p, int64_t lo, int64_t hi) {
  if (hi <= lo) return;
  LLVMBuildMemSet(g->b, cg_gep(g, p, cg_i64(g, lo)), LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0),
                  cg_i64(g, 4 * (hi - lo)), 4);
}

/* Vectors of n floats: the valid part of one col row segment, as one LLVM vector op (the
 * backend splits it into 16/8/4-lane pieces; no scalar remainder loop). */
#define CONV_SEG 64   /* lanes per segment op */

static LLVMValueRef vload(Cg *g, unsigned n, LLVMValueRef p) {
  LLVMValueRef v = LLVMBuildLoad2(g->b, LLVMVectorType(g->t_f32, n), p, "");
  LLVMSetAlignment(v, 4);
  return v;
}
static void vstore(Cg *g, LLVMValueRef v, LLVMValueRef p) { LLVMSetAlignment(LLVMBuildStore(g->b, v, p), 4); }

/* im2col: col[0, n) = x[0], x[s], ..., x[(n - 1) s]
 * col2im: x[0], x[s], ... += col[0, n) */
static void conv_seg(Cg *g, bool gather, LLVMValueRef p_col, LLVMValueRef p_x, unsigned n, int64_t s) {
  unsigned span = (unsigned)((n - 1) * s + 1);
  if (s == 1) {
    if (gather) vstore(g, vload(g, n, p_x), p_col);
    else vstore(g, LLVMBuildFAdd(g->b, vload(g, n, p_x), vload(g, n, p_col), ""), p_x);
    return;
  }
  LLVMValueRef idx[CONV_SEG * 8];
  if (gather) {   /* lanes 0, s, 2s, ... of the input span */
    for (unsigned k = 0; k < n; k++) idx[k] = LLVMConstInt(g->t_i32, k * (unsigned)s, 0);
    LLVMValueRef v = vload(g, span, p_x);
    vstore(g, LLVMBuildShuffleVector(g->b, v, LLVMGetUndef(LLVMTypeOf(v)), LLVMConstVector(idx, n), ""), p_col);
    return;
  }
  /* spread col over the span, zeros between, and add */
  LLVMValueRef c = vload(g, n, p_col);
  LLVMValueRef z = LLVMConstNull(LLVMTypeOf(c));
  for (unsigned l = 0; l < span; l++) idx[l] = LLVMConstInt(g->t_i32, l % s ? n : l / s, 0);
  LLVMValueRef v = LLVMBuildShuffleVector(g->b, c, z, LLVMConstVector(idx, span), "");
  vstore(g, LLVMBuildFAdd(g->b, vload(g, span, p_x), v, ""), p_x);
}

/* For every channel c and kernel tap (i, j), over the valid output rows ho and columns wo:
 * im2col (gather) copies x_c[h, w] into col row (c, i, j) at ho W' + wo and zeroes the rest of
 * the row; col2im adds it back into x_c (the rest of the row is padding: skipped). */
static void conv_taps(Cg *g, const ConvDims *d, LLVMValueRef x, LLVMValueRef col, bool gather) {
  bool zero = gather;
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "conv_c", cg_i64(g, 0), cg_i64(g, d->C));
  LLVMValueRef xc = cg_gep(g, x, cg_mad(g, c, d->H * d->W, NULL));
  LLVMValueRef colc = cg_gep(g, col, cg_mad(g, c, d->kh * d->kw * d->P, NULL));
  for (int64_t i = 0; i < d->kh; i++)
    for (int64_t j = 0; j < d->kw; j++) {
      LLVMValueRef colr = cg_gep(g, colc, cg_i64(g, (i * d->kw + j) * d->P));
      int64_t hlo, hhi, wlo, whi;
      valid_range(d->H, d->Ho, d->sh, d->pt, i, &hlo, &hhi);
      valid_range(d->W, d->Wo, d->sw, d->pl, j, &wlo, &whi);
      if (hhi <= hlo || whi <= wlo) {
        if (zero) conv_zero(g, colr, 0, d->P);
        continue;
      }
      if (zero) conv_zero(g, colr, 0, hlo * d->Wo);
      CgLoop Lh;
      LLVMValueRef ho = cg_for(g, &Lh, "conv_ho", cg_i64(g, hlo), cg_i64(g, hhi));
      LLVMValueRef row = cg_gep(g, colr, cg_mad(g, ho, d->Wo, NULL));
      /* x row h = ho sh - pt + i, column w = wo sw - pl + j */
      LLVMValueRef xr = cg_gep(g, xc, cg_mad(g, ho, d->sh * d->W, cg_i64(g, (i - d->pt) * d->W + j - d->pl)));
      if (zero) conv_zero(g, row, 0, wlo);
      int64_t seg = d->sw > 8 ? (8 * CONV_SEG - 1) / d->sw + 1 : CONV_SEG;   /* span <= 8 CONV_SEG */
      for (int64_t w = wlo; w < whi; w += seg) {
        unsigned n = (unsigned)(whi - w < seg ? whi - w : seg);
        conv_seg(g, gather, cg_gep(g, row, cg_i64(g, w)), cg_gep(g, xr, cg_i64(g, w * d->sw)), n, d->sw);
      }
      if (zero) conv_zero(g, row, whi, d->Wo);
      cg_for_end(g, &Lh);
      if (zero) conv_zero(g, colr, hhi * d->Wo, d->P);
    }
  cg_for_end(g, &Lc);
}

static LLVMValueRef conv_col(Cg *g, const EmitLayer *e, const ConvDims *d, LLVMValueRef b) {
  return cg_at(g, TS_A, e->aux, cg_mad(g, b, d->Q * d->P, NULL));
}

/* ---- sample groups: the tiles of every phase ---------------------------------------------- */

#define CONV_GROUPS 4   /* as op_pool.c's POOL_GROUPS; plan.c sizes the partial gradients */

static int64_t group_w(int64_t B) { return cg_ceil_div(B, B < CONV_GROUPS ? B : CONV_GROUPS); }
static int64_t ngroups(int64_t B) { return cg_ceil_div(B, group_w(B)); }

/* for b in group t: f(b) */
typedef void (*ConvSample)(Cg *g, const EmitLayer *e, LLVMValueRef b);
static void conv_group(Cg *g, const EmitLayer *e, LLVMValueRef t, ConvSample f) {
  LLVMValueRef b0, b1;
  cg_tile_range(g, t, group_w(e->B), e->B, &b0, &b1);
  CgLoop Lb;
  LLVMValueRef b = cg_for(g, &Lb, "conv_b", b0, b1);
  f(g, e, b);
  cg_for_end(g, &Lb);
}

/* one sample b: col_b = im2col(x_b); y_b = W col_b + bias */
static void conv_fwd_sample(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  ConvDims d = conv_dims(e);
  LLVMValueRef x = cg_gep(g, cg_in_ptr(g, e), cg_mad(g, b, d.C * d.H * d.W, NULL));
  LLVMValueRef col = conv_col(g, e, &d, b);
  conv_taps(g, &d, x, col, true);
  LLVMValueRef bias = e->w[1] >= 0 ? cg_at(g, TS_P, e->w[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef args[] = {cg_i64(g, d.K), cg_i64(g, d.P), cg_i64(g, d.Q), cg_at(g, TS_P, e->w[0], NULL), col, bias,
                         cg_at(g, TS_A, e->out, cg_mad(g, b, d.K * d.P, NULL)),
                         cg_i64(g, 0), cg_i64(g, d.K), cg_i64(g, 0), cg_i64(g, d.P)};
  cg_kernel(g, "tk_conv_fwd", args, 11);
}

static void conv_fwd_tile(Cg *g, LLVMValueRef t, void *arg) { conv_group(g, arg, t, conv_fwd_sample); }


/* ---- tensor train, the direct path (Garipov et al. 2016) -----------------------------------
 *
 * The kernel is never formed. Legend: R = r[0] (the spatial core's rank), S = kh kw, T = B P.
 *   forward    per sample b: col_b = im2col(x_b) (C, S, P), as for a dense conv; per channel c
 *              S_0[:, c, b, :] (R, P) = G0^T (R, S) @ col_b[c] (S, P), straight into the chain's
 *              first state (R, C, B, P) (tt_emit.c); the chain over the channel modes leaves
 *              S_d (K, B, P), and y[b, k, p] = S_d[k, b, p] + bias[k]
 *   backward   dS_d from dy (and the bias gradient), the chain back to dS_0; then
 *              dG0 (S, R) += sum over (b, c) of col_b[c] @ dS_0[:, c, b, :]^T (in one thread:
 *              the same order every time), and, for dx, dcol_b[c] = G0 @ dS_0[:, c, b, :] over
 *              col_b, scattered back by col2im */

static LLVMValueRef ttd_S0(Cg *g, const EmitLayer *e, bool grad, LLVMValueRef b, LLVMValueRef c) {
  ConvDims d = conv_dims(e);
  int64_t T = e->B * d.P;
  int64_t at = grad ? tt_dstate(e, 0) : e->pl->tt.aux + e->pl->tt.state[0];
  return cg_at(g, TS_A, at, cg_add(g, cg_mul(g, c, cg_i64(g, T)), cg_mul(g, b, cg_i64(g, d.P))));
}

static void ttd_fwd_sample(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  ConvDims d = conv_dims(e);
  int64_t R = e->pl->tt.r[0], S = d.kh * d.kw, T = e->B * d.P;
  LLVMValueRef x = cg_gep(g, cg_in_ptr(g, e), cg_mad(g, b, d.C * d.H * d.W, NULL));
  LLVMValueRef col = conv_col(g, e, &d, b);
  conv_taps(g, &d, x, col, true);
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "ttd_c", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef args[] = {cg_i64(g, R), cg_i64(g, d.P), cg_i64(g, S), cg_at(g, TS_P, e->core[0], NULL), cg_i64(g, R),
                         cg_gep(g, col, cg_mul(g, c, cg_i64(g, S * d.P))), cg_i64(g, d.P),
                         ttd_S0(g, e, false, b, c), cg_i64(g, d.C * T), cg_i32(g, 0),
                         cg_i64(g, 0), cg_i64(g, R), cg_i64(g, 0), cg_i64(g, d.P)};
  cg_kernel(g, "tk_gemm_tn", args, 14);
  cg_for_end(g, &Lc);
}

static void ttd_fwd_tile(Cg *g, LLVMValueRef t, void *arg) { conv_group(g, arg, t, ttd_fwd_sample); }

/* y[b, k, p] = S_d[k, b, p] + bias[k] (out), or dS_d[k, b, p] = dy[b, k, p], db[k] += sum */
typedef struct TtdOut { const EmitLayer *e; bool grad; } TtdOut;

static void ttd_out_tile(Cg *g, LLVMValueRef t, void *arg) {
  const TtdOut *a = arg;
  const EmitLayer *e = a->e;
  ConvDims d = conv_dims(e);
  int64_t T = e->B * d.P, kt = cg_ceil_div(d.K, 8);
  int64_t Sd = e->pl->tt.aux + e->pl->tt.state[e->pl->tt.d], dSd = tt_dstate(e, e->pl->tt.d);
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, kt, d.K, &lo, &hi);
  CgLoop Lk, Lb, Lp;
  LLVMValueRef k = cg_for(g, &Lk, "ttd_k", lo, hi);
  LLVMValueRef sum = a->grad ? cg_var(g, "ttd_db", cg_f32(g, 0)) : NULL;
  LLVMValueRef bias = !a->grad && e->w[1] >= 0 ? cg_load(g, cg_at(g, TS_P, e->w[1], k)) : NULL;
  LLVMValueRef b = cg_for(g, &Lb, "ttd_b", cg_i64(g, 0), cg_i64(g, e->B));
  LLVMValueRef p = cg_for(g, &Lp, "ttd_p", cg_i64(g, 0), cg_i64(g, d.P));
  LLVMValueRef chain = cg_add(g, cg_mul(g, k, cg_i64(g, T)), cg_mad(g, b, d.P, p));
  LLVMValueRef layer = cg_add(g, cg_mul(g, b, cg_i64(g, d.K * d.P)), cg_mad(g, k, d.P, p));
  if (a->grad) {
    LLVMValueRef dy = cg_load(g, cg_at(g, TS_A, e->dout, layer));
    cg_store(g, dy, cg_at(g, TS_A, dSd, chain));
    cg_store(g, cg_fadd(g, cg_load(g, sum), dy), sum);
  } else {
    LLVMValueRef y = cg_load(g, cg_at(g, TS_A, Sd, chain));
    if (bias) y = cg_fadd(g, y, bias);
    cg_store(g, y, cg_at(g, TS_A, e->out, layer));
  }
  cg_for_end(g, &Lp);
  cg_for_end(g, &Lb);
  if (a->grad && e->dw[1] >= 0) {
    LLVMValueRef pb = cg_at(g, TS_G, e->dw[1], k);
    cg_store(g, cg_fadd(g, cg_load(g, pb), cg_load(g, sum)), pb);
  }
  cg_for_end(g, &Lk);
}

static void ttd_fwd(Cg *g, const EmitLayer *e) {
  char name[256];
  cg_tile_name(name, sizeof name, e, "ttd_fwd");
  cg_parallel(g, name, ngroups(e->B), ttd_fwd_tile, (void *)e);
  tt_emit_chain_steps_fwd(g, e);
  TtdOut a = {e, false};
  cg_tile_name(name, sizeof name, e, "ttd_out");
  cg_parallel(g, name, cg_ceil_div(e->l->u.conv.filters, cg_ceil_div(e->l->u.conv.filters, 8)), ttd_out_tile, &a);
}

/* dG0 += col_b[c] (S, P) @ dS_0[:, c, b, :]^T for every (b, c), in order */
static void ttd_dcore0_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  ConvDims d = conv_dims(e);
  int64_t R = e->pl->tt.r[0], S = d.kh * d.kw, T = e->B * d.P;
  CgLoop Lb, Lc;
  LLVMValueRef b = cg_for(g, &Lb, "ttd_gb", cg_i64(g, 0), cg_i64(g, e->B));
  LLVMValueRef c = cg_for(g, &Lc, "ttd_gc", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef args[] = {cg_i64(g, S), cg_i64(g, R), cg_i64(g, d.P),
                         cg_gep(g, conv_col(g, e, &d, b), cg_mul(g, c, cg_i64(g, S * d.P))), cg_i64(g, d.P),
                         ttd_S0(g, e, true, b, c), cg_i64(g, d.C * T),
                         cg_at(g, TS_G, e->dcore[0], NULL), cg_i64(g, R), cg_i32(g, 1),
                         cg_i64(g, 0), cg_i64(g, S), cg_i64(g, 0), cg_i64(g, R)};
  cg_kernel(g, "tk_gemm_nt", args, 14);
  cg_for_end(g, &Lc);
  cg_for_end(g, &Lb);
}

/* dcol_b[c] = G0 (S, R) @ dS_0[:, c, b, :] (R, P) over col_b; dx_b = col2im */
static void ttd_dx_sample(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  ConvDims d = conv_dims(e);
  int64_t R = e->pl->tt.r[0], S = d.kh * d.kw, T = e->B * d.P;
  LLVMValueRef col = conv_col(g, e, &d, b);
  CgLoop Lc;
  LLVMValueRef c = cg_for(g, &Lc, "ttd_dc", cg_i64(g, 0), cg_i64(g, d.C));
  LLVMValueRef args[] = {cg_i64(g, S), cg_i64(g, d.P), cg_i64(g, R), cg_at(g, TS_P, e->core[0], NULL), cg_i64(g, R),
                         ttd_S0(g, e, true, b, c), cg_i64(g, d.C * T),
                         cg_gep(g, col, cg_mul(g, c, cg_i64(g, S * d.P))), cg_i64(g, d.P), cg_i32(g, 0),
                         cg_i64(g, 0), cg_i64(g, S), cg_i64(g, 0), cg_i64(g, d.P)};
  cg_kernel(g, "tk_gemm_nn", args, 14);
  cg_for_end(g, &Lc);
  LLVMValueRef dx = cg_at(g, TS_A, e->din, cg_mad(g, b, d.C * d.H * d.W, NULL));
  conv_zero(g, dx, 0, d.C * d.H * d.W);
  conv_taps(g, &d, dx, col, false);
}

static void ttd_dx_tile(Cg *g, LLVMValueRef t, void *arg) { conv_group(g, arg, t, ttd_dx_sample); }

static void ttd_bwd(Cg *g, const EmitLayer *e) {
  char name[256];
  TtdOut a = {e, true};
  cg_tile_name(name, sizeof name, e, "ttd_dy");
  cg_parallel(g, name, cg_ceil_div(e->l->u.conv.filters, cg_ceil_div(e->l->u.conv.filters, 8)), ttd_out_tile, &a);
  tt_emit_chain_steps_bwd(g, e, true);
  cg_tile_name(name, sizeof name, e, "ttd_dcore0");
  cg_serial(g, name, 1, ttd_dcore0_tile, (void *)e);
  if (e->din < 0) return;
  cg_tile_name(name, sizeof name, e, "ttd_dx");
  cg_parallel(g, name, ngroups(e->B), ttd_dx_tile, (void *)e);
}

/* One tile function for train and eval (the same code: eval keeps col too, unused): a second
 * instance of the inlined GEMM would cost ~0.4 s of compile time per conv. */
static void conv_fwd(Cg *g, const EmitLayer *e) {
  if (e->pl->storage == ST_TT && e->pl->tt.order != TT_FORM) {   /* a tensor train, direct */
    ttd_fwd(g, e);
    return;
  }
  if (e->pl->storage == ST_TT) tt_emit_form(g, e);   /* a tensor train: the kernel from its cores */
  char name[256];
  cg_tile_name(name, sizeof name, e, "conv_fwd");
  cg_parallel(g, name, ngroups(e->B), conv_fwd_tile, (void *)e);
}

/* ---- weight gradient: partial sums per sample group, then their sum in group order ------- */

/* group t's partial dW (K, Q) then db (K), after the im2col in aux */
static int64_t conv_part(const EmitLayer *e, int64_t t) {
  ConvDims d = conv_dims(e);
  int64_t col = (e->B * d.Q * d.P + 15) / 16 * 16, part = (d.K * (d.Q + 1) + 15) / 16 * 16;
  return e->aux + col + t * part;
}

static void conv_dw_sample(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  ConvDims d = conv_dims(e);
  LLVMValueRef t = LLVMBuildSDiv(g->b, b, cg_i64(g, group_w(e->B)), "");
  LLVMValueRef part = cg_at(g, TS_A, conv_part(e, 0), cg_mad(g, t, conv_part(e, 1) - conv_part(e, 0), NULL));
  LLVMValueRef dy = cg_at(g, TS_A, e->dout, cg_mad(g, b, d.K * d.P, NULL));
  /* dW_t (K, Q) += dy_b (K, P) @ col_b (Q, P)^T */
  LLVMValueRef args[] = {cg_i64(g, d.K), cg_i64(g, d.Q), cg_i64(g, d.P), dy, cg_i64(g, d.P),
                         conv_col(g, e, &d, b), cg_i64(g, d.P), part, cg_i64(g, d.Q), cg_i32(g, 1),
                         cg_i64(g, 0), cg_i64(g, d.K), cg_i64(g, 0), cg_i64(g, d.Q)};
  cg_kernel(g, "tk_gemm_nt", args, 14);
  if (e->dw[1] >= 0) {   /* db_t += the row sums of dy_b */
    LLVMValueRef a[] = {cg_i64(g, d.P), dy, cg_i64(g, d.P), cg_gep(g, part, cg_i64(g, d.K * d.Q)),
                        cg_i64(g, 0), cg_i64(g, d.K)};
    cg_kernel(g, "tk_rowsum", a, 6);
  }
}

static void conv_dw_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  ConvDims d = conv_dims(e);
  LLVMValueRef part = cg_at(g, TS_A, conv_part(e, 0), cg_mad(g, t, conv_part(e, 1) - conv_part(e, 0), NULL));
  LLVMBuildMemSet(g->b, part, LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0), cg_i64(g, 4 * d.K * (d.Q + 1)), 4);
  conv_group(g, e, t, conv_dw_sample);
}

/* dW += dW_0 + dW_1 + ..., db likewise: (K, Q + 1) floats, the groups in order */
static void conv_dw_sum(Cg *g, const EmitLayer *e, int64_t n, int64_t grad, int64_t at) {
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "dw_sum", cg_i64(g, 0), cg_i64(g, n));
  LLVMValueRef s = cg_load(g, cg_at(g, TS_A, conv_part(e, 0) + at, i));
  for (int64_t t = 1; t < ngroups(e->B); t++) s = cg_fadd(g, s, cg_load(g, cg_at(g, TS_A, conv_part(e, t) + at, i)));
  LLVMValueRef p = cg_at(g, TS_G, grad, i);
  cg_store(g, cg_fadd(g, cg_load(g, p), s), p);
  cg_for_end(g, &L);
}

/* ---- data gradient, per sample: dcol_b = W^T dy_b over col_b, then col2im into dx_b ------ */

static void conv_dx_sample(Cg *g, const EmitLayer *e, LLVMValueRef b) {
  ConvDims d = conv_dims(e);
  LLVMValueRef col = conv_col(g, e, &d, b);
  /* dcol (Q, P) = W^T (Q, K) @ dy_b (K, P): tn with A = W (K, Q) */
  LLVMValueRef args[] = {cg_i64(g, d.Q), cg_i64(g, d.P), cg_i64(g, d.K),
                         cg_at(g, TS_P, e->w[0], NULL), cg_i64(g, d.Q),
                         cg_at(g, TS_A, e->dout, cg_mad(g, b, d.K * d.P, NULL)), cg_i64(g, d.P),
                         col, cg_i64(g, d.P), cg_i32(g, 0),
                         cg_i64(g, 0), cg_i64(g, d.Q), cg_i64(g, 0), cg_i64(g, d.P)};
  cg_kernel(g, "tk_gemm_tn", args, 14);
  LLVMValueRef dx = cg_at(g, TS_A, e->din, cg_mad(g, b, d.C * d.H * d.W, NULL));
  conv_zero(g, dx, 0, d.C * d.H * d.W);
  conv_taps(g, &d, dx, col, false);
}

static void conv_dx_tile(Cg *g, LLVMValueRef t, void *arg) { conv_group(g, arg, t, conv_dx_sample); }

static void conv_bwd(Cg *g, const EmitLayer *e) {
  if (e->pl->storage == ST_TT && e->pl->tt.order != TT_FORM) {
    ttd_bwd(g, e);
    return;
  }
  ConvDims d = conv_dims(e);
  char name[256];
  cg_tile_name(name, sizeof name, e, "conv_dw");
  cg_parallel(g, name, ngroups(e->B), conv_dw_tile, (void *)e);
  conv_dw_sum(g, e, d.K * d.Q, e->dw[0], 0);
  if (e->dw[1] >= 0) conv_dw_sum(g, e, d.K, e->dw[1], d.K * d.Q);
  if (e->pl->storage == ST_TT) tt_emit_form_bwd(g, e);   /* the cores' gradients from the kernel's */
  if (e->din < 0) return;
  cg_tile_name(name, sizeof name, e, "conv_dx");
  cg_parallel(g, name, ngroups(e->B), conv_dx_tile, (void *)e);
}

const OpEmit op_conv_emit = {conv_fwd, conv_bwd};
