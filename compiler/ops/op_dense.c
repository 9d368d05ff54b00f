/* op_dense.c: the fully connected layer, y = x W^T + b (PyTorch's nn.Linear). Weight (out, in),
 * bias (out). A (C, H, W) input is flattened in (C, H, W) order first (the implicit flatten).
 * This file holds everything the compiler knows about the op: its keys, its shape rule, its
 * tensors, its cost, and its forward and backward emitters (bottom of the file). A tensor
 * train runs through tt_emit.c, a pruned weight on the CSR kernels through sp_emit.c (with
 * SK_MASK it runs here, as dense). */
#include "cg.h"

static const char *const keys[] = {"units", "bias", NULL};

/* dense: {units: n, bias: true} */
static void parse(Ctx *cx, Layer *l) {
  l->u.dense.bias = true;
  YNode *v;
  if (!(v = spec_get(l->node, "units")))
    diag_at(cx, l->loc, "dense needs 'units' (its number of outputs), e.g. 'dense: {units: 10}'");
  else
    spec_int(cx, v, "units", 1, TS_MAX_DIM, &l->u.dense.units);
  if ((v = spec_get(l->node, "bias"))) spec_bool(cx, v, "bias", &l->u.dense.bias);
}

static bool infer(Ctx *cx, Layer *l) {
  if (l->u.dense.units <= 0) return false;
  int64_t in = shape_elems(&l->in), w;
  if (!size_mul(in, l->u.dense.units, &w)) {
    diag_at(cx, l->loc, "dense weight (%lld, %lld) is too large: more than 2^40 elements",
            (long long)l->u.dense.units, (long long)in);
    return false;
  }
  l->implicit_flatten = l->in.rank > 1;
  l->out = (Shape){1, {l->u.dense.units}};
  return true;
}

static int params(const Layer *l, Param p[4]) {
  int64_t in = shape_elems(&l->in), out = l->u.dense.units;
  p[0] = (Param){"weight", 2, {out, in}, true, .stored_t = true};   /* kept as (in, out) */
  if (!l->u.dense.bias) return 1;
  p[1] = (Param){"bias", 1, {out}, true};
  return 2;
}

/* FLOPs saturate at INT64_MAX instead of overflowing; plan.c reports a saturated count. */
static int64_t sat(__int128 x) { return x > INT64_MAX ? INT64_MAX : (int64_t)x; }

static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  __int128 mac = (__int128)n * shape_elems(&l->in) * l->u.dense.units;
  __int128 b = l->u.dense.bias ? (__int128)n * l->u.dense.units : 0;
  return (Flops){sat(2 * mac + b), sat((need_dx ? 2 * mac : 0) + 2 * mac + b)};
}

const OpDef op_dense = {
    .name = "dense", .keys = keys, .weighted = true,
    .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: forward and backward emitters ==== */

/* ---- dense: y = x Wt + b, Wt (IN, OUT) ------------------------------------------------------ */

#define DENSE_TILE 96    /* output columns per tile: two 48-column kernel panels */
#define DENSE_DX_TILE 64 /* input columns per tile of the data gradient */

static void dense_fwd_call(Cg *g, const EmitLayer *e, LLVMValueRef o0, LLVMValueRef o1) {
  int64_t IN = shape_elems(&e->l->in), OUT = e->l->u.dense.units;
  LLVMValueRef bias = e->w[1] >= 0 ? cg_at(g, TS_P, e->w[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, IN), cg_i64(g, OUT), cg_in_ptr(g, e),
                         cg_at(g, TS_P, e->w[0], NULL), bias, cg_at(g, TS_A, e->out, NULL), o0, o1};
  cg_kernel(g, "tk_dense_fwd", args, 9);
  if (e->act) cg_act_cols(g, e, OUT, o0, o1);   /* the fused activation, over the tile just written */
}

static int64_t dense_out_tile(const EmitLayer *e) { return cg_tile_width(e->l->u.dense.units, DENSE_TILE, 16); }
static int64_t dense_in_tile(const EmitLayer *e) { return cg_tile_width(shape_elems(&e->l->in), DENSE_DX_TILE, 4); }

static void dense_fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  cg_tile_call(g, e, t, dense_out_tile(e), e->l->u.dense.units, dense_fwd_call);
}

static void dense_fwd(Cg *g, const EmitLayer *e) {
  if (e->pl->storage == ST_SPARSE && e->pl->sp.kernel == SK_CSR) {   /* sp_emit.c */
    sp_emit_dense_fwd(g, e);
    return;
  }
  if (e->pl->storage == ST_TT) {   /* a tensor train: tt_emit.c */
    if (e->pl->tt.order != TT_FORM) {
      tt_emit_chain_fwd(g, e);
      return;
    }
    tt_emit_form(g, e);   /* then the dense kernels on the formed weight */
  }
  char name[256];
  cg_tile_name(name, sizeof name, e, "dense_fwd");
  cg_parallel(g, name, cg_ceil_div(e->l->u.dense.units, dense_out_tile(e)), dense_fwd_tile, (void *)e);
}

static void dense_dx_call(Cg *g, const EmitLayer *e, LLVMValueRef i0, LLVMValueRef i1) {
  int64_t IN = shape_elems(&e->l->in), OUT = e->l->u.dense.units;
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, IN), cg_i64(g, OUT), cg_at(g, TS_A, e->dout, NULL),
                         cg_at(g, TS_P, e->w[0], NULL), cg_at(g, TS_A, e->din, NULL), i0, i1};
  cg_kernel(g, "tk_dense_bwd_data", args, 8);
}

static void dense_dx_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  cg_tile_call(g, e, t, dense_in_tile(e), shape_elems(&e->l->in), dense_dx_call);
}

static void dense_dw_call(Cg *g, const EmitLayer *e, LLVMValueRef o0, LLVMValueRef o1) {
  int64_t IN = shape_elems(&e->l->in), OUT = e->l->u.dense.units;
  LLVMValueRef dbias = e->dw[1] >= 0 ? cg_at(g, TS_G, e->dw[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef args[] = {cg_i64(g, e->B), cg_i64(g, IN), cg_i64(g, OUT), cg_in_ptr(g, e),
                         cg_at(g, TS_A, e->dout, NULL), cg_at(g, TS_G, e->dw[0], NULL), dbias, o0, o1};
  cg_kernel(g, "tk_dense_bwd_weight", args, 9);
}

static void dense_dw_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  cg_tile_call(g, e, t, dense_out_tile(e), e->l->u.dense.units, dense_dw_call);
}

/* dX = dY Wt^T (when needed), dWt += X^T dY, db += sum_b dY */
static void dense_bwd(Cg *g, const EmitLayer *e) {
  if (e->pl->storage == ST_SPARSE && e->pl->sp.kernel == SK_CSR) {
    sp_emit_dense_bwd(g, e);
    return;
  }
  if (e->pl->storage == ST_TT && e->pl->tt.order != TT_FORM) {
    tt_emit_chain_bwd(g, e);
    return;
  }
  char name[256];
  cg_tile_name(name, sizeof name, e, "dense_dx");
  if (e->din >= 0)
    cg_parallel(g, name, cg_ceil_div(shape_elems(&e->l->in), dense_in_tile(e)), dense_dx_tile, (void *)e);
  cg_tile_name(name, sizeof name, e, "dense_dw");
  cg_parallel(g, name, cg_ceil_div(e->l->u.dense.units, dense_out_tile(e)), dense_dw_tile, (void *)e);
  if (e->pl->storage == ST_TT) tt_emit_form_bwd(g, e);   /* the cores' gradients from the formed weight's */
}

const OpEmit op_dense_emit = {dense_fwd, dense_bwd, .fuses_act = true};

