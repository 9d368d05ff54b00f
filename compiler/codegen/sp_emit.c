/* sp_emit.c: pruned dense layers on the CSR kernels (the plan's SK_CSR; kernels/tk_sparse.h).
 * The weight's values sit in CSR order in the parameter block, their pattern in an int32 table
 * the generated code walks (sparse.c fixes its layout; the driver's prune.c fills it at every
 * pruning event and on load). The table's first word is the number of non-zeros now, so the
 * same code runs the whole schedule, from the dense start to the frozen mask, in training,
 * evaluation and inference alike.
 *
 *   forward   X -> X^T (tiles over IN); per row tile: Y^T = CSR X^T, Y = (Y^T)^T + b, act
 *   backward  per row tile: dY -> dY^T (into Y^T's place) and db, dval on the pattern; then
 *             (when needed) per column tile: dX^T = CSC dY^T (into X^T's place), dX
 * While every entry is still kept (nnz = R C, before the first pruning event) the values are the
 * dense W (OUT, IN) and the same phases run dense GEMMs instead (tk_spd_*): a CSR multiply-add
 * costs about three dense ones. Work below SP_PAR_MACS multiply-adds runs in the calling
 * thread (cg_serial). */
#include "cg.h"

#define SP_ROWS 32             /* rows (outputs) per tile */
#define SP_COLS 64             /* columns (inputs) per tile */
#define SP_PAR_MACS (1 << 15)  /* below this, not worth waking the pool */

static int64_t in_dim(const EmitLayer *e) { return shape_elems(&e->l->in); }
static int64_t out_dim(const EmitLayer *e) { return e->l->u.dense.units; }
static LLVMValueRef tab(Cg *g, const EmitLayer *e, int64_t part) { return cg_at(g, TS_P, e->pl->sp.tab + part, NULL); }

/* At batch 1 a row and its transpose are the same floats: X^T is the input, Y^T the output,
 * dY^T the output's gradient and dX^T the input's (the transposing kernels then copy each
 * element onto itself, adding the bias), and the X^T pass is skipped. */
static LLVMValueRef xt_ptr(Cg *g, const EmitLayer *e) { return e->B == 1 ? cg_in_ptr(g, e) : cg_at(g, TS_A, e->pl->sp.xt, NULL); }
static LLVMValueRef yt_ptr(Cg *g, const EmitLayer *e) { return e->B == 1 ? cg_at(g, TS_A, e->out, NULL) : cg_at(g, TS_A, e->pl->sp.yt, NULL); }
static LLVMValueRef dyt_ptr(Cg *g, const EmitLayer *e) { return e->B == 1 ? cg_at(g, TS_A, e->dout, NULL) : cg_at(g, TS_A, e->pl->sp.yt, NULL); }
static LLVMValueRef dxt_ptr(Cg *g, const EmitLayer *e) { return e->B == 1 ? cg_at(g, TS_A, e->din, NULL) : cg_at(g, TS_A, e->pl->sp.xt, NULL); }

static void run(Cg *g, const EmitLayer *e, const char *what, int64_t ntiles, CgTileBody body) {
  char name[256];
  cg_tile_name(name, sizeof name, e, what);
  const SparsePlan *s = &e->pl->sp;
  if (s->nnz * e->B < SP_PAR_MACS) cg_serial(g, name, ntiles, body, (void *)e);
  else cg_parallel(g, name, ntiles, body, (void *)e);
}

static void in_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, SP_COLS, in_dim(e), &lo, &hi);
  LLVMValueRef a[] = {cg_i64(g, e->B), cg_i64(g, in_dim(e)), cg_i64(g, e->pl->sp.ldt), cg_in_ptr(g, e),
                      cg_at(g, TS_A, e->pl->sp.xt, NULL), lo, hi};
  cg_kernel(g, "tk_sp_in", a, 7);
}

static void fwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  const SparsePlan *s = &e->pl->sp;
  int64_t OUT = out_dim(e);
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, SP_ROWS, OUT, &lo, &hi);
  LLVMValueRef yt = yt_ptr(g, e);
  LLVMValueRef a[] = {cg_i64(g, s->ldt), tab(g, e, sp_tab_rowptr(s)), tab(g, e, sp_tab_col(s)),
                      cg_at(g, TS_P, e->w[0], NULL), xt_ptr(g, e), yt, lo, hi};
  cg_kernel(g, "tk_csr_fwd", a, 8);
  LLVMValueRef bias = e->w[1] >= 0 ? cg_at(g, TS_P, e->w[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef b[] = {cg_i64(g, e->B), cg_i64(g, OUT), cg_i64(g, s->ldt), yt, bias,
                      cg_at(g, TS_A, e->out, NULL), lo, hi};
  cg_kernel(g, "tk_sp_out", b, 8);
  if (e->act) cg_act_cols(g, e, OUT, lo, hi);   /* the fused activation over the tile just written */
}

/* ---- every entry kept: dense GEMMs on W (OUT, IN) ---- */

#define SPD_TILE 96   /* outputs (forward, weight gradient) or inputs (data gradient) per tile */

static void dfwd_call(Cg *g, const EmitLayer *e, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMValueRef bias = e->w[1] >= 0 ? cg_at(g, TS_P, e->w[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef a[] = {cg_i64(g, e->B), cg_i64(g, in_dim(e)), cg_i64(g, out_dim(e)), cg_in_ptr(g, e),
                      cg_at(g, TS_P, e->w[0], NULL), bias, cg_at(g, TS_A, e->out, NULL), lo, hi};
  cg_kernel(g, "tk_spd_fwd", a, 9);
  if (e->act) cg_act_cols(g, e, out_dim(e), lo, hi);
}

static void ddx_call(Cg *g, const EmitLayer *e, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMValueRef a[] = {cg_i64(g, e->B), cg_i64(g, in_dim(e)), cg_i64(g, out_dim(e)), cg_at(g, TS_A, e->dout, NULL),
                      cg_at(g, TS_P, e->w[0], NULL), cg_at(g, TS_A, e->din, NULL), lo, hi};
  cg_kernel(g, "tk_spd_dx", a, 8);
}

static void ddw_call(Cg *g, const EmitLayer *e, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMValueRef dbias = e->dw[1] >= 0 ? cg_at(g, TS_G, e->dw[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef a[] = {cg_i64(g, e->B), cg_i64(g, in_dim(e)), cg_i64(g, out_dim(e)), cg_in_ptr(g, e),
                      cg_at(g, TS_A, e->dout, NULL), cg_at(g, TS_G, e->dw[0], NULL), dbias, lo, hi};
  cg_kernel(g, "tk_spd_dw", a, 9);
}

static void dfwd_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  cg_tile_call(g, e, t, cg_tile_width(out_dim(e), SPD_TILE, 16), out_dim(e), dfwd_call);
}
static void ddx_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  cg_tile_call(g, e, t, cg_tile_width(in_dim(e), SPD_TILE, 16), in_dim(e), ddx_call);
}
static void ddw_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  cg_tile_call(g, e, t, cg_tile_width(out_dim(e), SPD_TILE, 16), out_dim(e), ddw_call);
}

/* if every entry is kept: `dense`, else `csr` (both emitted; the table's nnz decides) */
static void split(Cg *g, const EmitLayer *e, void (*dense)(Cg *, const EmitLayer *), void (*csr)(Cg *, const EmitLayer *)) {
  const SparsePlan *s = &e->pl->sp;
  LLVMValueRef nnz = LLVMBuildLoad2(g->b, g->t_i32, cg_at(g, TS_P, s->tab, NULL), "nnz");
  LLVMValueRef full = LLVMBuildICmp(g->b, LLVMIntEQ, nnz, cg_i32(g, (int32_t)(s->R * s->C)), "");
  CgIf c;
  cg_if(g, &c, full);
  dense(g, e);
  cg_if_end(g, &c);
  cg_if(g, &c, LLVMBuildNot(g->b, full, ""));
  csr(g, e);
  cg_if_end(g, &c);
}

static void fwd_dense(Cg *g, const EmitLayer *e) {
  run(g, e, "spd_fwd", cg_ceil_div(out_dim(e), cg_tile_width(out_dim(e), SPD_TILE, 16)), dfwd_tile);
}

static void fwd_csr(Cg *g, const EmitLayer *e) {
  if (e->B > 1) run(g, e, "sp_in", cg_ceil_div(in_dim(e), SP_COLS), in_tile);
  run(g, e, "sp_fwd", cg_ceil_div(out_dim(e), SP_ROWS), fwd_tile);
}

void sp_emit_dense_fwd(Cg *g, const EmitLayer *e) { split(g, e, fwd_dense, fwd_csr); }

static void dw_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  const SparsePlan *s = &e->pl->sp;
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, SP_ROWS, out_dim(e), &lo, &hi);
  LLVMValueRef yt = dyt_ptr(g, e);
  LLVMValueRef dbias = e->dw[1] >= 0 ? cg_at(g, TS_G, e->dw[1], NULL) : LLVMConstNull(g->t_ptr);
  LLVMValueRef a[] = {cg_i64(g, e->B), cg_i64(g, out_dim(e)), cg_i64(g, s->ldt), cg_at(g, TS_A, e->dout, NULL),
                      yt, dbias, lo, hi};
  cg_kernel(g, "tk_sp_dy", a, 8);
  LLVMValueRef b[] = {cg_i64(g, s->ldt), tab(g, e, sp_tab_rowptr(s)), tab(g, e, sp_tab_col(s)),
                      xt_ptr(g, e), yt, cg_at(g, TS_G, e->dw[0], NULL), lo, hi};
  cg_kernel(g, "tk_csr_dw", b, 8);
}

static void dx_tile(Cg *g, LLVMValueRef t, void *arg) {
  const EmitLayer *e = arg;
  const SparsePlan *s = &e->pl->sp;
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, SP_COLS, in_dim(e), &lo, &hi);
  LLVMValueRef xt = dxt_ptr(g, e);   /* dX^T replaces X^T, read by dW before */
  LLVMValueRef a[] = {cg_i64(g, s->ldt), tab(g, e, sp_tab_colptr(s)), tab(g, e, sp_tab_rowidx(s)),
                      tab(g, e, sp_tab_perm(s)), cg_at(g, TS_P, e->w[0], NULL), dyt_ptr(g, e),
                      xt, lo, hi};
  cg_kernel(g, "tk_csc_dx", a, 9);
  LLVMValueRef b[] = {cg_i64(g, e->B), cg_i64(g, in_dim(e)), cg_i64(g, s->ldt), xt, cg_at(g, TS_A, e->din, NULL), lo, hi};
  cg_kernel(g, "tk_sp_dx_out", b, 7);
}

static void bwd_dense(Cg *g, const EmitLayer *e) {
  if (e->din >= 0) run(g, e, "spd_dx", cg_ceil_div(in_dim(e), cg_tile_width(in_dim(e), SPD_TILE, 16)), ddx_tile);
  run(g, e, "spd_dw", cg_ceil_div(out_dim(e), cg_tile_width(out_dim(e), SPD_TILE, 16)), ddw_tile);
}

static void bwd_csr(Cg *g, const EmitLayer *e) {
  run(g, e, "sp_dw", cg_ceil_div(out_dim(e), SP_ROWS), dw_tile);
  if (e->din >= 0) run(g, e, "sp_dx", cg_ceil_div(in_dim(e), SP_COLS), dx_tile);
}

void sp_emit_dense_bwd(Cg *g, const EmitLayer *e) { split(g, e, bwd_dense, bwd_csr); }
