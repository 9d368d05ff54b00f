/* sparse.c: planning pruned weights. For every layer with `sparsity:` it fixes the target
 * (the spec's, or for `sparsity: auto` the one uniform target that meets `compress` with what
 * the other layers and the tensor trains leave), the non-zeros it keeps, and the kernel:
 *
 *   SK_CSR   (dense layers) CSR products vectorized across the batch, the weight gradient on
 *            the pattern only: FLOPs fall with the density, but a sparse multiply-add costs
 *            more than a dense one (an index load, a gathered row) and the batch is
 *            transposed in and out. Chosen when its estimated cost is below dense's.
 *   SK_MASK  the dense kernels on the dense weight with its pruned entries zero and their
 *            gradient masked: the layer is never slower than dense (plus one mask read per
 *            weight in the optimizer), and its files are still sparse. Convolutions always
 *            run this way in this teslac (no sparse conv kernels yet).
 *
 * A layer marked both `tt: auto` and `sparsity: auto` is planned as a tensor train first
 * (tt.c meets the budget); it turns sparse when a sparse weight with as many non-zeros as the
 * train has parameters is estimated to run faster (the budget stays met).
 *
 * Also the schedule (Zhu & Gupta 2017), shared by the planner's documentation, the driver's
 * pruning (driver/prune.c) and the tests. */
#include "teslac.h"

#include <math.h>
#include <string.h>

#define SP_DEFAULT_TARGET 0.9   /* sparsity: auto without a compress budget */
/* The cost model, in dense multiply-add units (measured, bench/RESULTS.md "Sparse weights"):
 * a CSR multiply-add across the batch costs SP_CSR_MAC dense ones; each element transposed in
 * or out of the batch-last layout SP_CSR_MOVE. */
#define SP_CSR_MAC  3.0
#define SP_CSR_MOVE 2.0

static int64_t al16(int64_t n) { return (n + 15) / 16 * 16; }

/* the table: header (16), row pointers (R + 1), columns (R C), column pointers (C + 1), row
 * indices (R C), positions (R C); each part 64-byte aligned. R C is the capacity `cap`: every entry
 * while training, the non-zeros of a frozen pattern in an object file */
int64_t sp_tab_rowptr(const SparsePlan *s) { (void)s; return 16; }
int64_t sp_tab_col(const SparsePlan *s) { return sp_tab_rowptr(s) + al16(s->R + 1); }
int64_t sp_tab_colptr(const SparsePlan *s) { return sp_tab_col(s) + al16(s->cap); }
int64_t sp_tab_rowidx(const SparsePlan *s) { return sp_tab_colptr(s) + al16(s->C + 1); }
int64_t sp_tab_perm(const SparsePlan *s) { return sp_tab_rowidx(s) + al16(s->cap); }
int64_t sp_tab_size(const SparsePlan *s) { return s->no_csc ? sp_tab_colptr(s) : sp_tab_perm(s) + al16(s->cap); }

void sp_matrix(const Layer *l, int64_t *R, int64_t *C) {
  if (l->op == OP_conv) *R = l->u.conv.filters, *C = l->in.d[0] * l->u.conv.kh * l->u.conv.kw;
  else *R = l->u.dense.units, *C = shape_elems(&l->in);
}

/* ---- the schedule ----------------------------------------------------------------------- */

static int64_t step_of(double frac, int64_t total) { return (int64_t)llround(frac * (double)total); }

/* s(t) = s_f (1 - (1 - (t - t0) / (t1 - t0))^3) for t in [t0, t1], evaluated at the last
 * event at or before t (the mask changes only at events); 0 before t0, s_f from t1 on */
double sp_sparsity_at(const SparseSpec *s, double target, int64_t t, int64_t total) {
  int64_t t0 = step_of(s->start, total), t1 = step_of(s->end, total);
  if (t < t0) return 0;
  if (!s->gradual || t >= t1 || t1 <= t0) return target;
  int64_t ev = t0 + (t - t0) / s->every * s->every;
  double x = 1 - (double)(ev - t0) / (double)(t1 - t0);
  return target * (1 - x * x * x);
}

bool sp_is_event(const SparseSpec *s, int64_t t, int64_t total) {
  int64_t t0 = step_of(s->start, total), t1 = step_of(s->end, total);
  if (!s->gradual) return t == t0;
  if (t1 <= t0) return t == t1;
  return t == t1 || (t >= t0 && t < t1 && (t - t0) % s->every == 0);
}

/* ---- kernels and costs ------------------------------------------------------------------ */

static double cost(Flops f) { return (double)f.fwd + (double)f.bwd; }

/* the kernel and cost of layer l at `nnz` non-zeros, batch B */
static void choose_kernel(const Layer *l, SparsePlan *s, int64_t B, bool need_dx) {
  Flops d = op_registry[l->op]->flops(l, B, need_dx);
  int64_t nb = (l->op == OP_dense ? l->u.dense.bias : l->u.conv.bias) ? B * s->R : 0;
  s->dense_flops = d;
  s->ldt = B < 16 ? B : (B + 15) / 16 * 16;
  if (l->op == OP_dense && s->R * s->C <= INT32_MAX) {   /* the table's indices are int32 */
    Flops c = {2 * B * s->nnz + nb, (need_dx ? 2 : 1) * 2 * B * s->nnz + nb};
    /* X -> X^T, Y^T -> Y, dY -> dY^T, dX^T -> dX */
    double moves = (double)B * (double)(s->C + 2 * s->R + (need_dx ? s->C : 0));
    s->csr_cost = SP_CSR_MAC * (double)(2 * B * s->nnz) * (need_dx ? 3 : 2) + SP_CSR_MOVE * moves;
    if (s->csr_cost < cost(d)) {
      s->kernel = SK_CSR, s->flops = c, s->cost = s->csr_cost;
      return;
    }
  } else
    s->csr_cost = INFINITY;   /* no sparse conv kernels */
  s->kernel = SK_MASK, s->flops = d, s->cost = cost(d);
}

static int64_t bias_of(const Layer *l) {
  return l->op == OP_dense ? (l->u.dense.bias ? l->u.dense.units : 0) : (l->u.conv.bias ? l->u.conv.filters : 0);
}

int64_t sp_kept(double sparsity, int64_t full) {
  int64_t k = (int64_t)llround((1 - sparsity) * (double)full);
  return k < 1 ? 1 : k > full ? full : k;
}

void sp_plan(Ctx *cx, const Spec *sp, int64_t batch, Plan *pl, int64_t budget) {
  bool need_dx = false;
  int nauto = 0;
  int64_t used = 0, auto_dense = 0;   /* what everything but the sparsity:-auto-only layers keeps */
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    PlanLayer *p = &pl->layers[i];
    SparsePlan *s = &p->sp;
    memset(s, 0, sizeof *s);
    if (l->sparse.on) sp_matrix(l, &s->R, &s->C);
    bool sp_auto_only = l->sparse.on && l->sparse.autoplan && !l->tt.on;
    if (l->sparse.on && !l->tt.on) {
      s->on = true;
      if (sp_auto_only) nauto++, auto_dense += s->R * s->C, used += bias_of(l);
      else s->target = l->sparse.target, s->nnz = sp_kept(s->target, s->R * s->C), used += s->nnz + bias_of(l);
    } else if (l->tt.on && p->tt.d)
      used += p->tt.params + bias_of(l);
    else {
      Param q[4];
      int nq = op_registry[l->op]->params(l, q);
      for (int j = 0; j < nq; j++)
        if (q[j].trainable) {
          int64_t e = 1;
          for (int d = 0; d < q[j].ndims; d++) e *= q[j].dims[d];
          used += e;
        }
    }
    /* tt: auto + sparsity: auto: sparse at the train's size when that is faster */
    if (l->sparse.on && l->tt.on && p->tt.d) {
      sp_matrix(l, &s->R, &s->C);
      s->nnz = p->tt.params < s->R * s->C ? p->tt.params : s->R * s->C;
      s->target = 1 - (double)s->nnz / (double)(s->R * s->C);
      choose_kernel(l, s, batch, need_dx);
      if (s->cost < 0.98 * (double)tt_cost(p->tt.flops[p->tt.order])) {
        s->on = s->auto_chosen = true;
        p->tt.d = 0;   /* plan.c lays out a (sparse) dense weight instead of cores */
      } else
        memset(s, 0, sizeof *s);
    } else if (s->on && !sp_auto_only)
      choose_kernel(l, s, batch, need_dx);
    if (op_registry[l->op]->weighted) need_dx = true;
  }
  if (!nauto) return;
  /* sparsity: auto: one target for all of them, from what is left of the budget */
  double target = SP_DEFAULT_TARGET;
  if (budget != INT64_MAX) {
    int64_t left = budget - used;
    if (left < nauto) {
      diag_at(cx, sp->compress.loc, "compress cannot be met: the budget allows %lld parameters, but the "
                                    "layers without 'sparsity: auto' keep %lld and each sparse layer keeps "
                                    "at least one weight; the smallest reachable is %lld",
              (long long)budget, (long long)used, (long long)(used + nauto));
      return;
    }
    target = left >= auto_dense ? 0 : 1 - (double)left / (double)auto_dense;
  }
  need_dx = false;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    SparsePlan *s = &pl->layers[i].sp;
    if (s->on && l->sparse.autoplan && !l->tt.on) {
      s->target = target;
      /* floor, so that the rounding of several layers never breaks the budget */
      s->nnz = (int64_t)floor((1 - target) * (double)(s->R * s->C));
      if (s->nnz < 1) s->nnz = 1;
      s->target = 1 - (double)s->nnz / (double)(s->R * s->C);
      choose_kernel(l, s, batch, need_dx);
    }
    if (op_registry[l->op]->weighted) need_dx = true;
  }
}
