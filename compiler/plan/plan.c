/* plan.c: the fourth stage. For each weight it chooses the storage (dense, or a tensor train
 * whose modes, ranks and order tt.c chooses, or pruned: target and kernel from sparse.c), counts
 * parameters the way PyTorch does (trainable tensors only; batchnorm running statistics are
 * buffers; a pruned weight counts its non-zeros at the target), prices forward and backward FLOPs at the compiled batch size, and lays out memory:
 * one block each for parameters, gradients, optimizer state and activations, every tensor at
 * a 64-byte aligned offset. `teslac plan` prints it as a table or as JSON (specs/README.md
 * documents the fields).
 *
 * FLOPs: a multiply-add is 2. The backward of the first layer with weights, and of every layer
 * before it, skips the input gradient nobody needs. */
#include "teslac.h"

#include <math.h>
#include <string.h>

#define ALIGN_FLOATS 16   /* 64 bytes */

static int64_t align_up(int64_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

void plan_spec(Ctx *cx, const Spec *sp, int64_t batch, Plan *pl) { plan_spec_like(cx, sp, batch, NULL, pl); }

void plan_spec_like(Ctx *cx, const Spec *sp, int64_t batch, const PlanLike *lk, Plan *pl) {
  const Plan *like = lk ? lk->ref : NULL;
  const int64_t *caps = lk ? lk->caps : NULL;
  memset(pl, 0, sizeof *pl);
  pl->batch = batch;
  pl->layers = arena_alloc(cx, sizeof(PlanLayer) * (size_t)(sp->nlayers ? sp->nlayers : 1));
  pl->tensors = arena_alloc(cx, sizeof(PlanTensor) * (size_t)((TT_MAXD + 3) * sp->nlayers + 1));
  int nerr = cx->nerrors;

  /* dense sizes first: compress.ratio is measured against them, and the layers without tt:
   * or sparsity: keep them; a pruned layer counts its non-zeros. Then the tensor trains
   * (tt.c), which get the budget less the fixed layers and less the share of the
   * sparsity: auto layers (in proportion to the dense sizes of the auto layers); then the
   * sparse layers (sparse.c), the auto ones taking what is left. */
  int64_t dense_total = 0, fixed = 0, tt_auto = 0, sp_auto = 0;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    Param p[4];
    int np = op_registry[l->op]->params(l, p);
    for (int j = 0; j < np; j++) {
      if (!p[j].trainable) continue;
      int64_t e = 1;
      for (int d = 0; d < p[j].ndims; d++) e *= p[j].dims[d];
      dense_total += e;
      bool weight = !strcmp(p[j].pname, "weight");
      if (l->tt.on) {
        if (weight && l->tt.autoplan) tt_auto += e;
      } else if (l->sparse.on && weight) {
        if (l->sparse.autoplan) sp_auto += e;
        else fixed += sp_kept(l->sparse.target, e);
      } else
        fixed += e;
    }
  }
  int64_t budget = INT64_MAX;
  if (sp->compress.max_params) budget = sp->compress.max_params;
  else if (sp->compress.ratio > 1) budget = (int64_t)floor((double)dense_total / sp->compress.ratio);
  int64_t sp_share = 0;
  if (budget != INT64_MAX && sp_auto && budget > fixed)
    sp_share = (int64_t)((double)(budget - fixed) * (double)sp_auto / (double)(sp_auto + tt_auto));
  tt_plan(cx, sp, batch, pl, fixed + sp_share, dense_total);
  if (cx->nerrors > nerr) return;
  sp_plan(cx, sp, batch, pl, budget);
  if (cx->nerrors > nerr) return;
  for (int i = 0; i < sp->nlayers; i++) {
    SparsePlan *s = &pl->layers[i].sp;
    if (!s->on) continue;
    if (like) s->kernel = like->layers[i].sp.kernel, s->ldt = batch < 16 ? batch : (batch + 15) / 16 * 16;
    s->cap = caps && caps[i] > 0 && s->kernel == SK_CSR ? caps[i] : s->R * s->C;
    s->no_csc = lk && lk->infer_only && s->kernel == SK_CSR;
  }

  bool need_dx = false;      /* a layer before this one has weights */
  int64_t in_elems = shape_elems(&sp->input), max_act = in_elems, acts = 0;
  if (!size_mul(in_elems, batch, &acts)) {
    diag_at(cx, sp->train.batch_loc, "batch %lld of inputs %s is too large", (long long)batch,
            shape_str(cx, &sp->input, true));
    return;
  }
  acts = 0;   /* the input batch has a block of its own (TeslaStep.x) */
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    PlanLayer *pli = &pl->layers[i];
    const OpDef *op = op_registry[l->op];
    Param p[TT_MAXD + 3];
    int np = op->params(l, p);
    int64_t dense_params = 0;
    for (int j = 0; j < np; j++)
      if (p[j].trainable) {
        int64_t e = 1;
        for (int d = 0; d < p[j].ndims; d++) e *= p[j].dims[d];
        dense_params += e;
      }
    TTPlan *tt = &pli->tt;
    SparsePlan *spp = &pli->sp;
    if (tt->d) np = tt_params(l, tt, p);   /* the cores replace the weight */
    for (int j = 0; j < np && spp->on; j++)
      if (!strcmp(p[j].pname, "weight")) {
        p[j].sparse = true;
        if (spp->kernel == SK_CSR) p[j].stored_t = false;   /* values in CSR order */
      }
    for (int j = 0; j < np; j++) {
      int64_t e = 1;
      for (int d = 0; d < p[j].ndims; d++) e *= p[j].dims[d];   /* bounded by infer */
      if (p[j].sparse && spp->kernel == SK_CSR) e = spp->cap;    /* values in CSR order */
      PlanTensor *t = &pl->tensors[pl->ntensors++];
      t->name = arena_printf(cx, "%s.%s", l->name, p[j].pname);
      t->layer = i, t->p = p[j], t->elems = e;
      t->offset = pl->param_block;
      pl->param_block += align_up(e);
      t->grad_offset = -1;
      if (p[j].trainable) {
        t->grad_offset = pl->grad_block;
        pl->grad_block += align_up(e);
        pli->params += p[j].sparse ? spp->nnz : e;   /* a pruned weight: its non-zeros */
      } else
        pli->buffers += e;
    }
    pli->dense_params = dense_params;
    pli->requested = l->tt.on && !(l->sparse.on && spp->on) ? ST_TT : l->sparse.on ? ST_SPARSE : ST_DENSE;
    pli->storage = tt->d ? ST_TT : spp->on ? ST_SPARSE : ST_DENSE;
    pli->bytes = 4 * (pli->params + pli->buffers);
    if (spp->on) {   /* as saved: CSR, int32 row pointers and column indices */
      pli->bytes += 4 * (spp->R + 1 + spp->nnz);
      if (spp->kernel == SK_MASK) spp->mask = pl->param_block, pl->param_block += align_up(spp->R * spp->C);
      else spp->tab = pl->param_block, pl->param_block += align_up(sp_tab_size(spp));
    }
    int64_t out;
    if (!size_mul(shape_elems(&l->out), batch, &out)) {
      diag_at(cx, l->loc, "this layer's output at batch %lld is too large", (long long)batch);
      return;
    }
    pli->act_elems = out;
    pli->flops = tt->d ? tt->flops[tt->order] : spp->on ? spp->flops : op->flops(l, batch, need_dx);
    if (pli->flops.fwd == INT64_MAX || pli->flops.bwd == INT64_MAX ||
        __builtin_add_overflow(pl->flops.fwd, pli->flops.fwd, &pl->flops.fwd) ||
        __builtin_add_overflow(pl->flops.bwd, pli->flops.bwd, &pl->flops.bwd)) {
      diag_at(cx, l->loc, "this layer's FLOPs at batch %lld overflow a 64-bit count; the model is "
                          "far too large to train", (long long)batch);
      return;
    }
    pl->params += pli->params, pl->buffers += pli->buffers, pl->bytes += pli->bytes;
    pl->dense_params += pli->dense_params;
    /* outputs are kept for the backward (flatten is a view); maxpool keeps an argmax index per
     * output, batchnorm its per-channel mean and 1/std, dropout its mask, conv its im2col */
    pli->out_off = i ? pl->layers[i - 1].out_off : -1;   /* -1: the input batch */
    if (l->op != OP_flatten) pli->out_off = acts, acts += align_up(out);
    pli->aux_off = acts;
    if (l->op == OP_maxpool || l->op == OP_dropout) acts += align_up(out);
    if (l->op == OP_batchnorm) acts += align_up(4 * l->in.d[0]);   /* mean, 1/std, 2 sums */
    if (l->op == OP_conv) {   /* its im2col (B, C kh kw, H' W'), which the backward's dcol
                                 reuses, then one partial weight and bias gradient (K, C kh kw)
                                 + (K) per sample group (op_conv.c: CONV_GROUPS of them) */
      int64_t q = l->in.d[0] * l->u.conv.kh * l->u.conv.kw, col;
      if (!size_mul(q, shape_elems(&l->out) / l->out.d[0], &col) || !size_mul(col, batch, &col)) {
        diag_at(cx, l->loc, "this conv's im2col at batch %lld is too large", (long long)batch);
        return;
      }
      acts += align_up(col) + 4 * align_up(l->u.conv.filters * (q + 1));
    }
    if (spp->on && spp->kernel == SK_CSR) {   /* X^T, then Y^T (reused for dY^T) */
      spp->xt = acts, acts += align_up(spp->C * spp->ldt);
      spp->yt = acts, acts += align_up(spp->R * spp->ldt);
    }
    if (tt->d) {   /* the chain's states and scratch (tt.c), after the op's own */
      if (!tt_plan_scratch(l, tt, batch)) {
        diag_at(cx, l->tt.loc, "this tensor train's intermediate states at batch %lld are too large "
                               "(more than 2^40 elements); use smaller ranks or a smaller batch", (long long)batch);
        return;
      }
      tt->aux = acts, acts += align_up(tt->act_floats);
      tt->full_w = tt->full_dw = -1;   /* TT_FORM: placed with the derived tensors below */
    }
    if (shape_elems(&l->out) > max_act) max_act = shape_elems(&l->out);
    if (op->weighted) need_dx = true;
  }
  /* The derived tensors, after everything a checkpoint saves (pl->derived_off): a TT_FORM
   * layer's formed weight (and its gradient), not saved, not optimized; the folded weights
   * below. Functions of the saved ones, written by the generated code; an object file
   * (teslac build) keeps them in its scratch, so that its weights stay read-only. */
  pl->derived_off = pl->param_block;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    TTPlan *tt = &pl->layers[i].tt;
    if (!tt->d || tt->order != TT_FORM) continue;
    int64_t w = l->op == OP_dense ? tt->M * tt->N : tt->M * tt->N * l->u.conv.kh * l->u.conv.kw;
    tt->full_w = pl->param_block, pl->param_block += align_up(w);
    tt->full_dw = pl->grad_block, pl->grad_block += align_up(w);
  }
  /* Inference folds a batchnorm into the dense or conv before it (W' = W gamma / std,
   * b' = (b - mean) gamma / std + beta) when that costs less than the batchnorm pass it saves:
   * the fold touches the weight once per batch, the pass every output element. */
  for (int i = 0; i < sp->nlayers; i++) {
    PlanLayer *pli = &pl->layers[i];
    pli->fold_w = pli->fold_b = -1;
    if (i + 1 >= sp->nlayers || sp->layers[i + 1].op != OP_batchnorm) continue;
    const Layer *l = &sp->layers[i];
    if ((l->op != OP_dense && l->op != OP_conv) || pli->storage == ST_TT) continue;
    if (pli->sp.on && pli->sp.kernel == SK_CSR) continue;   /* the CSR kernels read the values */
    int64_t K = l->op == OP_dense ? l->u.dense.units : l->u.conv.filters;
    int64_t w = pli->sp.on ? pli->sp.R * pli->sp.C
                           : pli->params - (l->op == OP_dense ? (l->u.dense.bias ? K : 0) : (l->u.conv.bias ? K : 0));
    if (like ? like->layers[i].fold_w < 0 : pli->act_elems <= w) continue;
    pli->fold_w = pl->param_block, pl->param_block += align_up(w);
    pli->fold_b = pl->param_block, pl->param_block += align_up(K);
  }
  /* two gradient buffers for the activations, used in turn going backward */
  pl->grad_buf[0] = acts, pl->grad_buf[1] = acts + align_up(max_act * batch);
  pl->act_block = acts + 2 * align_up(max_act * batch);
  pl->opt_block = sp->train.opt == OPT_SGD ? (sp->train.momentum > 0 ? pl->grad_block : 0)
                                           : 2 * pl->grad_block;

  for (int i = 0; i < sp->nlayers; i++) {
    const PlanLayer *pli = &pl->layers[i];
    const TTPlan *t = &pli->tt;
    if (pli->storage == ST_TT && !t->forced && tt_cost(pli->flops) > tt_cost(t->dense_flops))
      warn_at(cx, sp->layers[i].tt.loc, "layer %d's tensor train (%s) costs %.2fx the FLOPs of its dense "
                                        "weight at batch %lld (%.3g against %.3g per step, forward + backward); "
                                        "it keeps %lld of %lld parameters",
              i, tt_order_name(t->order), (double)tt_cost(pli->flops) / (double)tt_cost(t->dense_flops),
              (long long)batch, (double)tt_cost(pli->flops), (double)tt_cost(t->dense_flops),
              (long long)pli->params, (long long)pli->dense_params);
  }
  if (sp->compress.max_params && pl->params > sp->compress.max_params)
    warn_at(cx, sp->compress.loc, "compress: max_params %lld is not met: the plan has %lld "
                                  "parameters (mark layers 'tt: auto' or 'sparsity: auto' to let the planner meet it)",
            (long long)sp->compress.max_params, (long long)pl->params);
  if (sp->compress.ratio > 1 && (double)pl->dense_params / (double)pl->params < sp->compress.ratio)
    warn_at(cx, sp->compress.loc, "compress: ratio %g is not met: the plan keeps %lld of %lld "
                                  "parameters (mark layers 'tt: auto' or 'sparsity: auto' to let the planner meet it)",
            sp->compress.ratio, (long long)pl->params, (long long)pl->dense_params);
}

static const char *storage_name(Storage s) {
  return s == ST_TT ? "tt" : s == ST_SPARSE ? "sparse" : "dense";
}

/* 1234567 -> "1.23M" style, for the human table only */
static const char *human(Ctx *cx, double v) {
  const char *u = "";
  if (v >= 1e12) v /= 1e12, u = "T";
  else if (v >= 1e9) v /= 1e9, u = "G";
  else if (v >= 1e6) v /= 1e6, u = "M";
  else if (v >= 1e3) v /= 1e3, u = "K";
  else return arena_printf(cx, "%.0f", v);
  return arena_printf(cx, "%.2f%s", v, u);
}

static const char *bytes_h(Ctx *cx, double b) {
  if (b >= 1 << 30) return arena_printf(cx, "%.2f GiB", b / (1 << 30));
  if (b >= 1 << 20) return arena_printf(cx, "%.2f MiB", b / (1 << 20));
  if (b >= 1 << 10) return arena_printf(cx, "%.1f KiB", b / (1 << 10));
  return arena_printf(cx, "%.0f B", b);
}

static const char *dims_s(Ctx *cx, const int64_t *d, int n) {
  char buf[256];
  int k = snprintf(buf, sizeof buf, "[");
  for (int i = 0; i < n; i++) k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", i ? ", " : "", (long long)d[i]);
  snprintf(buf + k, sizeof buf - (size_t)k, "]");
  return arena_strndup(cx, buf, strlen(buf));
}

/* every rank between two cores: dense r[1..d-1], conv r[0..d-1] (r[0] after the spatial core) */
static int inner_ranks(const Layer *l, const TTPlan *t, int64_t *r) {
  int n = 0;
  for (int k = l->op == OP_conv ? 0 : 1; k < t->d; k++) r[n++] = t->r[k];
  return n;
}

static const char *full_ranks(Ctx *cx, const Layer *l, const TTPlan *t) {
  int64_t r[TT_MAXD + 2];
  int n = inner_ranks(l, t, r);
  return dims_s(cx, r, n);
}

static const char *tt_ranks_str(Ctx *cx, const Layer *l, const PlanLayer *p) {
  if (p->storage != ST_TT) return "-";
  int64_t r[TT_MAXD + 2];
  int n = inner_ranks(l, &p->tt, r);
  char buf[128] = "";
  for (int i = 0; i < n; i++) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld", i ? "," : "", (long long)r[i]);
  return arena_strndup(cx, buf, strlen(buf));
}

static const char *order_key(TTOrder o) { return o == TT_LTR ? "ltr" : o == TT_RTL ? "rtl" : "form_w"; }

void plan_print_table(Ctx *cx, const Spec *sp, const Plan *pl, FILE *out) {
  fprintf(out, "plan for %s at batch %lld\n\n", sp->name, (long long)pl->batch);
  fprintf(out, "%3s  %-10s %-11s %-8s %-10s %-9s %10s %10s %9s %9s %9s\n", "#", "name", "layer",
          "storage", "tt ranks", "sparsity", "params", "bytes", "fwd FLOP", "bwd FLOP", "vs dense");
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    const PlanLayer *p = &pl->layers[i];
    bool w = p->params + p->buffers > 0;
    fprintf(out, "%3d  %-10s %-11s %-8s %-10s %-9s %10lld %10s %9s %9s %9s\n", i, l->name,
            op_registry[l->op]->name, w ? storage_name(p->storage) : "-", tt_ranks_str(cx, l, p),
            p->storage == ST_SPARSE ? arena_printf(cx, "%.3g %s", p->sp.target, p->sp.kernel == SK_CSR ? "csr" : "mask") : "-",
            (long long)p->params, w ? bytes_h(cx, (double)p->bytes) : "-",
            human(cx, (double)p->flops.fwd), human(cx, (double)p->flops.bwd),
            p->params ? arena_printf(cx, "%.2fx", (double)p->dense_params / (double)p->params) : "-");
  }
  fprintf(out, "\ntotal: %lld parameters", (long long)pl->params);
  if (pl->buffers) fprintf(out, " + %lld buffers", (long long)pl->buffers);
  fprintf(out, " (%s); %s forward, %s backward FLOP per step of %lld\n", bytes_h(cx, (double)pl->bytes),
          human(cx, (double)pl->flops.fwd), human(cx, (double)pl->flops.bwd), (long long)pl->batch);
  bool any = false;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    const PlanLayer *p = &pl->layers[i];
    const TTPlan *t = &p->tt;
    if (p->storage != ST_TT) continue;
    if (!any) fprintf(out, "\ntensor trains (forward + backward FLOP per step of %lld):\n", (long long)pl->batch);
    any = true;
    fprintf(out, "  layer %d%s%s (%s %lld -> %lld): modes %s -> %s, ranks %s%s; %lld core parameters, %.1fx fewer than dense\n",
            i, strcmp(l->name, arena_printf(cx, "%d", i)) ? " " : "", strcmp(l->name, arena_printf(cx, "%d", i)) ? l->name : "", op_registry[l->op]->name, (long long)t->M, (long long)t->N, dims_s(cx, t->m, t->d),
            dims_s(cx, t->n, t->d), full_ranks(cx, l, t), l->op == OP_conv ? " (after the spatial core)" : "",
            (long long)t->params, (double)(p->dense_params - (p->params - t->params)) / (double)t->params);
    fprintf(out, "    runs %s: %s", tt_order_name(t->order), human(cx, (double)tt_cost(t->flops[t->order])));
    const char *sep = " (";
    for (int o = 0; o < TT_NORDERS; o++) {
      if (o == (int)t->order) continue;
      fprintf(out, "%s%s %s", sep, tt_order_name((TTOrder)o),
              t->flops[o].fwd == INT64_MAX ? "n/a" : human(cx, (double)tt_cost(t->flops[o])));
      sep = ", ";
    }
    double ratio = (double)tt_cost(t->flops[t->order]) / (double)tt_cost(t->dense_flops);
    fprintf(out, "); dense %s: %.2fx dense's FLOPs%s\n", human(cx, (double)tt_cost(t->dense_flops)), ratio,
            ratio > 1 ? (t->forced ? " (forced by the spec)" : ", slower than dense") : "");
    if (t->Mp != t->M || t->Np != t->N)
      fprintf(out, "    padded: %lld -> %lld inputs, %lld -> %lld outputs (the extra rows and columns are zero)\n",
              (long long)t->M, (long long)t->Mp, (long long)t->N, (long long)t->Np);
  }
  bool sany = false;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    const SparsePlan *s = &pl->layers[i].sp;
    if (pl->layers[i].storage != ST_SPARSE) continue;
    if (!any && !sany) fputc('\n', out);
    if (!sany) fprintf(out, "sparse weights (forward + backward FLOP per step of %lld):\n", (long long)pl->batch);
    sany = true;
    fprintf(out, "  layer %d%s%s (%s, weight %lld x %lld): %.1f%% zeros (%s%s), %lld of %lld weights kept, "
                 "stored as CSR: %s\n",
            i, strcmp(l->name, arena_printf(cx, "%d", i)) ? " " : "", strcmp(l->name, arena_printf(cx, "%d", i)) ? l->name : "",
            op_registry[l->op]->name, (long long)s->R, (long long)s->C, 100 * s->target,
            s->auto_chosen ? "sparsity: auto, chosen over its tensor train" : l->sparse.autoplan ? "sparsity: auto" : "the spec's",
            l->sparse.autoplan || s->auto_chosen ? "" : l->sparse.gradual ? ", gradual" : ", oneshot",
            (long long)s->nnz, (long long)(s->R * s->C), bytes_h(cx, 4.0 * (double)(2 * s->nnz + s->R + 1)));
    if (s->kernel == SK_CSR)
      fprintf(out, "    runs csr: %s FLOP, estimated %.2fx dense's time (dense %s)\n", human(cx, (double)tt_cost(s->flops)),
              s->cost / (double)tt_cost(s->dense_flops), human(cx, (double)tt_cost(s->dense_flops)));
    else if (l->op == OP_conv)
      fprintf(out, "    runs dense with a mask: %s FLOP (no sparse conv kernels in this teslac)\n",
              human(cx, (double)tt_cost(s->flops)));
    else
      fprintf(out, "    runs dense with a mask: %s FLOP; csr would cost an estimated %.2fx dense's time\n",
              human(cx, (double)tt_cost(s->flops)), s->csr_cost / (double)tt_cost(s->dense_flops));
  }
  if (any || sany) fputc('\n', out);
  fprintf(out, "memory: parameters %s, gradients %s, optimizer state %s, activations %s\n",
          bytes_h(cx, 4.0 * (double)pl->param_block), bytes_h(cx, 4.0 * (double)pl->grad_block),
          bytes_h(cx, 4.0 * (double)pl->opt_block), bytes_h(cx, 4.0 * (double)pl->act_block));
}

static void json_str(FILE *o, const char *s) {
  fputc('"', o);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') fprintf(o, "\\%c", c);
    else if (c < 0x20) fprintf(o, "\\u%04x", c);
    else fputc(c, o);
  }
  fputc('"', o);
}

static void json_dims(FILE *o, const int64_t *d, int n) {
  fputc('[', o);
  for (int i = 0; i < n; i++) fprintf(o, "%s%lld", i ? ", " : "", (long long)d[i]);
  fputc(']', o);
}

/* One JSON document; its fields are documented in specs/README.md ("teslac plan --json"). */
void plan_print_json(Ctx *cx, const Spec *sp, const Plan *pl, FILE *o) {
  fprintf(o, "{\n  \"model\": ");
  json_str(o, sp->name);
  fprintf(o, ",\n  \"batch\": %lld,\n  \"input\": ", (long long)pl->batch);
  json_dims(o, sp->input.d, sp->input.rank);
  fprintf(o, ",\n  \"classes\": %lld,\n  \"layers\": [", (long long)sp->classes);
  int tn = 0;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    const PlanLayer *p = &pl->layers[i];
    fprintf(o, "%s\n    {\"index\": %d, \"name\": ", i ? "," : "", i);
    json_str(o, l->name);
    fprintf(o, ", \"kind\": \"%s\", \"output\": ", op_registry[l->op]->name);
    json_dims(o, l->out.d, l->out.rank);
    /* layers without tensors have no storage: null, as the table's "-" */
    bool w = p->params + p->buffers > 0;
    fprintf(o, ", \"storage\": %s, \"requested\": %s, \"tt\": ",
            w ? arena_printf(cx, "\"%s\"", storage_name(p->storage)) : "null",
            w ? arena_printf(cx, "\"%s\"", storage_name(p->requested)) : "null");
    if (p->storage == ST_TT) {
      const TTPlan *t = &p->tt;
      int64_t r[TT_MAXD + 2];
      int nr = inner_ranks(l, t, r);
      fprintf(o, "{\"in_modes\": ");
      json_dims(o, t->m, t->d);
      fprintf(o, ", \"out_modes\": ");
      json_dims(o, t->n, t->d);
      fprintf(o, ", \"ranks\": ");
      json_dims(o, r, nr);
      fprintf(o, ", \"order\": \"%s\", \"forced\": %s, \"in_dim\": %lld, \"out_dim\": %lld, "
                 "\"padded_in\": %lld, \"padded_out\": %lld, \"core_params\": %lld, \"flops\": {",
              order_key(t->order), t->forced ? "true" : "false", (long long)t->M, (long long)t->N,
              (long long)t->Mp, (long long)t->Np, (long long)t->params);
      for (int k = 0; k < TT_NORDERS; k++) {
        fprintf(o, "\"%s\": ", order_key((TTOrder)k));
        if (t->flops[k].fwd == INT64_MAX) fprintf(o, "null, ");
        else fprintf(o, "{\"forward\": %lld, \"backward\": %lld}, ", (long long)t->flops[k].fwd, (long long)t->flops[k].bwd);
      }
      fprintf(o, "\"dense\": {\"forward\": %lld, \"backward\": %lld}}}", (long long)t->dense_flops.fwd,
              (long long)t->dense_flops.bwd);
    } else
      fprintf(o, "null");
    fprintf(o, ", \"sparsity\": %s", p->storage == ST_SPARSE ? arena_printf(cx, "%.17g", p->sp.target) : "null");
    if (p->storage == ST_SPARSE)
      fprintf(o, ", \"sparse\": {\"kernel\": \"%s\", \"format\": \"csr\", \"rows\": %lld, \"cols\": %lld, "
                 "\"nnz\": %lld, \"auto\": %s, \"chosen_over_tt\": %s, \"estimated_cost\": %.0f, "
                 "\"csr_estimated_cost\": %s, \"dense_flops\": {\"forward\": %lld, \"backward\": %lld}}",
              p->sp.kernel == SK_CSR ? "csr" : "mask", (long long)p->sp.R, (long long)p->sp.C, (long long)p->sp.nnz,
              l->sparse.autoplan ? "true" : "false", p->sp.auto_chosen ? "true" : "false", p->sp.cost,
              isinf(p->sp.csr_cost) ? "null" : arena_printf(cx, "%.0f", p->sp.csr_cost),
              (long long)p->sp.dense_flops.fwd, (long long)p->sp.dense_flops.bwd);
    else
      fprintf(o, ", \"sparse\": null");
    fprintf(o, ", \"params\": %lld, \"buffers\": %lld, \"bytes\": %lld, \"dense_params\": %lld",
            (long long)p->params, (long long)p->buffers, (long long)p->bytes, (long long)p->dense_params);
    fprintf(o, ", \"flops\": {\"forward\": %lld, \"backward\": %lld}, \"activation_elems\": %lld",
            (long long)p->flops.fwd, (long long)p->flops.bwd, (long long)p->act_elems);
    fprintf(o, ", \"tensors\": [");
    int k = 0;
    for (; tn < pl->ntensors && pl->tensors[tn].layer == i; tn++) {   /* in layer order */
      const PlanTensor *pt = &pl->tensors[tn];
      fprintf(o, "%s{\"name\": ", k++ ? ", " : "");
      json_str(o, pt->name);
      fprintf(o, ", \"shape\": ");
      json_dims(o, pt->p.dims, pt->p.ndims);
      fprintf(o, ", \"trainable\": %s, \"offset\": %lld, \"grad_offset\": %lld}",
              pt->p.trainable ? "true" : "false", (long long)pt->offset, (long long)pt->grad_offset);
    }
    fprintf(o, "]}");
  }
  fprintf(o, "\n  ],\n  \"totals\": {\"params\": %lld, \"buffers\": %lld, \"bytes\": %lld, "
             "\"dense_params\": %lld, \"flops\": {\"forward\": %lld, \"backward\": %lld}},\n",
          (long long)pl->params, (long long)pl->buffers, (long long)pl->bytes,
          (long long)pl->dense_params, (long long)pl->flops.fwd, (long long)pl->flops.bwd);
  fprintf(o, "  \"memory\": {\"parameters\": %lld, \"gradients\": %lld, \"optimizer\": %lld, "
             "\"activations\": %lld}\n}\n",
          (long long)(4 * pl->param_block), (long long)(4 * pl->grad_block),
          (long long)(4 * pl->opt_block), (long long)(4 * pl->act_block));
}
