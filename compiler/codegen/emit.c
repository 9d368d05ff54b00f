/* emit.c: the fifth stage. From a checked spec and its plan it builds one LLVM module with the
 * model's entry points, every shape and offset a constant:
 *
 *   void <name>_train_step(TeslaStep *s)   forward (batch statistics, dropout), softmax +
 *                                          cross-entropy, backward, optimizer update
 *   void <name>_grad(TeslaStep *s)         the same without the optimizer: gradients add up
 *                                          in the gradient block
 *   void <name>_infer(TeslaStep *s)        forward in eval mode (running statistics, no
 *                                          dropout); probabilities of the last softmax; loss
 *                                          and correct count when s->y is given
 *
 * It walks the layers, tells each op's emitter (in its op_*.c) where its input, output and
 * gradients live, and adds the loss and the optimizer, whose formulas follow torch.optim.
 * The same module is JIT-compiled for training (jit.c) and written as an object file. */
#include "cg.h"

#include <string.h>

static const OpEmit *const op_emitters[OP_COUNT] = {
#define OP(id, name, def) [OP_##id] = &def##_emit,
#include "ops.def"
#undef OP
};

/* Does every layer have emitters? Reports the first that does not. */
bool emit_supported(Ctx *cx, const Spec *sp) {
  for (int i = 0; i < sp->nlayers; i++)
    if (!op_emitters[sp->layers[i].op]->fwd) {
      diag_at(cx, sp->layers[i].loc, "'%s' layers cannot be trained by this teslac yet (check and "
                                     "plan work; code generation for it comes later)",
              op_registry[sp->layers[i].op]->name);
      return false;
    }
  return true;
}

/* Where each layer's tensors live, from the plan. */
static void layout(const Spec *sp, const Plan *pl, bool train, EmitLayer *el) {
  int gb = 0;   /* which gradient buffer holds the gradient of the current output */
  for (int i = 0; i < sp->nlayers; i++) {
    EmitLayer *e = &el[i];
    const Layer *l = &sp->layers[i];
    const PlanLayer *p = &pl->layers[i];
    memset(e, 0, sizeof *e);
    e->l = l, e->pl = p, e->B = pl->batch, e->train = train;
    e->sync_ranks = train && pl->dist > 1 && pl->dist_sync_bn ? pl->dist : 0;
    e->in_block = i ? el[i - 1].out_block : TS_X;
    e->in = i ? el[i - 1].out : 0;
    e->out_block = TS_A, e->out = p->out_off;
    e->aux = p->aux_off;
    for (int k = 0; k < 4; k++) e->w[k] = e->dw[k] = -1;
    for (int t = 0, k = 0; t < pl->ntensors; t++) {
      const PlanTensor *pt = &pl->tensors[t];
      if (pt->layer != i) continue;
      if (pt->p.core) e->core[e->ncores] = pt->offset, e->dcore[e->ncores++] = pt->grad_offset;
      else if (p->storage == ST_TT) e->w[1] = pt->offset, e->dw[1] = pt->grad_offset;   /* bias */
      else e->w[k] = pt->offset, e->dw[k++] = pt->grad_offset;
    }
    if (p->storage == ST_TT && p->tt.order == TT_FORM) e->w[0] = p->tt.full_w, e->dw[0] = p->tt.full_dw;
    /* inference: a batchnorm folded into the layer before it (plan.c decides) is a view, and
     * that layer runs on the folded weight and bias */
    if (!train && l->op == OP_batchnorm && i > 0 && pl->layers[i - 1].fold_w >= 0) {
      el[i - 1].w[0] = pl->layers[i - 1].fold_w, el[i - 1].w[1] = pl->layers[i - 1].fold_b;
      el[i - 1].folded = true;
      e->fused = true;
    }
    /* an activation right after an op that can apply it in its own output loop rides there,
     * in place; its backward reads the activated values, whose sign is the input's (slope > 0) */
    bool is_act = l->op == OP_relu || (l->op == OP_leaky_relu && l->u.act.slope > 0);
    if (is_act && i > 0 && op_emitters[sp->layers[i - 1].op]->fuses_act && !el[i - 1].act &&
        !el[i - 1].fused) {
      el[i - 1].act = true;
      el[i - 1].act_slope = l->op == OP_leaky_relu ? l->u.act.slope : 0;
      e->fused = true;
    }
    if (e->fused || l->op == OP_flatten) e->out_block = e->in_block, e->out = e->in;   /* views */
  }
  /* gradients, going backward: the loss writes buffer 0; each layer reads its output's
   * gradient from one buffer and writes its input's into the other (flatten passes through) */
  bool need = false;   /* does some layer at or before i have weights? */
  int64_t first_w = sp->nlayers;
  for (int i = 0; i < sp->nlayers && first_w == sp->nlayers; i++)
    if (op_registry[sp->layers[i].op]->weighted) first_w = i;
  for (int i = sp->nlayers - 1; i >= 0; i--) {
    EmitLayer *e = &el[i];
    e->dout = pl->grad_buf[gb];
    need = i > first_w;
    if (!need) e->din = -1;
    else if (sp->layers[i].op == OP_flatten || sp->layers[i].op == OP_softmax) e->din = e->dout;
    else gb ^= 1, e->din = pl->grad_buf[gb];
  }
}

/* ---- loss: softmax + cross-entropy over the logits, fused ---------------------------------- */

/* loss = sum over valid rows of logsumexp(x) - x[y]; correct = rows whose first argmax is y;
 * in training also dx = (softmax(x) - onehot(y)) / B into `dlogits`. */
/* the loss gradient is the batch mean's: over the global batch when data-parallel (gB = B x
 * ranks), so that the ranks' summed gradients are the global batch's mean gradient */
static void emit_loss(Cg *g, int logits_block, int64_t logits, int64_t K, int64_t B, int64_t gB, int64_t dlogits) {
  LLVMValueRef v_loss = cg_var(g, "loss", cg_f32(g, 0));
  LLVMValueRef v_correct = cg_var(g, "correct", cg_i32(g, 0));
  LLVMValueRef nvalid = LLVMBuildSExt(g->b, cg_field(g, TS_NVALID), g->t_i64, "");
  LLVMValueRef p_y = g->v_base[TS_Y];
  CgLoop Lb, Lk;
  LLVMValueRef b = cg_for(g, &Lb, "loss_b", cg_i64(g, 0), cg_i64(g, B));
  LLVMValueRef row = cg_mul(g, b, cg_i64(g, K));
  LLVMValueRef mx = cg_var(g, "max", cg_f32(g, -3.4e38)), arg = cg_var(g, "argmax", cg_i64(g, 0));
  LLVMValueRef k = cg_for(g, &Lk, "loss_max", cg_i64(g, 0), cg_i64(g, K));
  LLVMValueRef x = cg_load(g, cg_at(g, logits_block, logits, cg_add(g, row, k)));
  LLVMValueRef gt = cg_fgt(g, x, cg_load(g, mx));
  cg_store(g, cg_select(g, gt, x, cg_load(g, mx)), mx);
  LLVMBuildStore(g->b, cg_select(g, gt, k, LLVMBuildLoad2(g->b, g->t_i64, arg, "")), arg);
  cg_for_end(g, &Lk);
  LLVMValueRef m = cg_load(g, mx);
  LLVMValueRef sum = cg_var(g, "sumexp", cg_f32(g, 0));
  k = cg_for(g, &Lk, "loss_exp", cg_i64(g, 0), cg_i64(g, K));
  x = cg_load(g, cg_at(g, logits_block, logits, cg_add(g, row, k)));
  cg_store(g, cg_fadd(g, cg_load(g, sum), cg_call1(g, "llvm.exp.f32", cg_fsub(g, x, m))), sum);
  cg_for_end(g, &Lk);
  LLVMValueRef s = cg_load(g, sum);
  LLVMValueRef y = LLVMBuildSExt(g->b, LLVMBuildLoad2(g->b, g->t_i32,
                                 LLVMBuildInBoundsGEP2(g->b, g->t_i32, p_y, &b, 1, ""), ""), g->t_i64, "");
  LLVMValueRef xy = cg_load(g, cg_at(g, logits_block, logits, cg_add(g, row, y)));
  LLVMValueRef nll = cg_fsub(g, cg_fadd(g, cg_call1(g, "llvm.log.f32", s), m), xy);
  CgIf valid;
  cg_if(g, &valid, LLVMBuildICmp(g->b, LLVMIntSLT, b, nvalid, ""));
  cg_store(g, cg_fadd(g, cg_load(g, v_loss), nll), v_loss);
  LLVMValueRef hit = LLVMBuildICmp(g->b, LLVMIntEQ, LLVMBuildLoad2(g->b, g->t_i64, arg, ""), y, "");
  LLVMValueRef c = LLVMBuildLoad2(g->b, g->t_i32, v_correct, "");
  LLVMBuildStore(g->b, LLVMBuildAdd(g->b, c, LLVMBuildZExt(g->b, hit, g->t_i32, ""), ""), v_correct);
  cg_if_end(g, &valid);
  if (dlogits >= 0) {
    LLVMValueRef inv = cg_fdiv(g, cg_f32(g, 1.0 / (double)gB), s);
    k = cg_for(g, &Lk, "loss_grad", cg_i64(g, 0), cg_i64(g, K));
    x = cg_load(g, cg_at(g, logits_block, logits, cg_add(g, row, k)));
    LLVMValueRef p = cg_fmul(g, cg_call1(g, "llvm.exp.f32", cg_fsub(g, x, m)), inv);
    LLVMValueRef is_y = LLVMBuildICmp(g->b, LLVMIntEQ, k, y, "");
    p = cg_fsub(g, p, cg_select(g, is_y, cg_f32(g, 1.0 / (double)gB), cg_f32(g, 0)));
    cg_store(g, p, cg_at(g, TS_A, dlogits, cg_add(g, row, k)));
    cg_for_end(g, &Lk);
  }
  cg_for_end(g, &Lb);
  cg_store(g, cg_load(g, v_loss), cg_field_ptr(g, TS_LOSS));
  LLVMBuildStore(g->b, LLVMBuildLoad2(g->b, g->t_i32, v_correct, ""), cg_field_ptr(g, TS_CORRECT));
}

/* ---- optimizer: torch.optim's formulas, per trainable tensor; zeroes the gradient ---------- */

#define OPT_TILE 16384   /* elements per optimizer tile */

typedef struct OptArg { const Spec *sp; const Plan *pl; const PlanTensor *pt; } OptArg;

/* one tile of one tensor: elements [t OPT_TILE, min(+OPT_TILE, n)) */
static void opt_tile(Cg *g, LLVMValueRef v_tile, void *arg) {
  const OptArg *a = arg;
  const TrainCfg *tc = &a->sp->train;
  const PlanTensor *pt = a->pt;
  LLVMValueRef lr = cg_field(g, TS_LR);
  LLVMValueRef step_size = cg_fdiv(g, lr, cg_field(g, TS_BC1));                 /* lr / bc1 */
  LLVMValueRef sbc2 = cg_call1(g, "llvm.sqrt.f32", cg_field(g, TS_BC2));        /* sqrt(bc2) */
  LLVMValueRef first = LLVMBuildICmp(g->b, LLVMIntEQ, cg_field(g, TS_T), cg_i32(g, 1), "");
  LLVMValueRef decay = cg_fsub(g, cg_f32(g, 1), cg_fmul(g, lr, cg_f32(g, tc->weight_decay)));
  /* a pruned weight: on the CSR kernels only its nnz values (the table's first word) exist;
   * with the mask the pruned entries' gradients are zeroed, so they stay zero */
  const SparsePlan *sp = pt->p.sparse ? &a->pl->layers[pt->layer].sp : NULL;
  LLVMValueRef n = cg_i64(g, pt->elems);
  if (sp && sp->kernel == SK_CSR)
    n = LLVMBuildSExt(g->b, LLVMBuildLoad2(g->b, g->t_i32, cg_at(g, TS_P, sp->tab, NULL), "nnz"), g->t_i64, "");
  LLVMValueRef lo = cg_mul(g, v_tile, cg_i64(g, OPT_TILE));
  LLVMValueRef hi = cg_add(g, lo, cg_i64(g, OPT_TILE));
  hi = cg_select(g, LLVMBuildICmp(g->b, LLVMIntSGT, hi, n, ""), n, hi);
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "opt", lo, hi);
  LLVMValueRef pp = cg_at(g, TS_P, pt->offset, i), pg = cg_at(g, TS_G, pt->grad_offset, i);
  LLVMValueRef p = cg_load(g, pp), gr = cg_load(g, pg);
  if (sp && sp->kernel == SK_MASK) gr = cg_fmul(g, gr, cg_load(g, cg_at(g, TS_P, sp->mask, i)));
  if (tc->opt != OPT_ADAMW && tc->weight_decay > 0)
    gr = cg_fadd(g, gr, cg_fmul(g, p, cg_f32(g, tc->weight_decay)));
  if (tc->opt == OPT_SGD) {
    if (tc->momentum > 0) {
      LLVMValueRef pb = cg_at(g, TS_O, pt->grad_offset, i);
      LLVMValueRef buf = cg_fadd(g, cg_fmul(g, cg_load(g, pb), cg_f32(g, tc->momentum)),
                                 cg_fmul(g, gr, cg_f32(g, 1 - tc->dampening)));
      buf = cg_select(g, first, gr, buf);   /* torch: the first step's buffer is the gradient */
      cg_store(g, buf, pb);
      gr = tc->nesterov ? cg_fadd(g, gr, cg_fmul(g, buf, cg_f32(g, tc->momentum))) : buf;
    }
    p = cg_fsub(g, p, cg_fmul(g, lr, gr));
  } else {
    if (tc->opt == OPT_ADAMW) p = cg_fmul(g, p, decay);
    LLVMValueRef pm = cg_at(g, TS_O, pt->grad_offset, i), pv = cg_at(g, TS_O, a->pl->grad_block + pt->grad_offset, i);
    LLVMValueRef m = cg_fadd(g, cg_fmul(g, cg_load(g, pm), cg_f32(g, tc->beta1)), cg_fmul(g, gr, cg_f32(g, 1 - tc->beta1)));
    LLVMValueRef v = cg_fadd(g, cg_fmul(g, cg_load(g, pv), cg_f32(g, tc->beta2)),
                             cg_fmul(g, cg_fmul(g, gr, gr), cg_f32(g, 1 - tc->beta2)));
    cg_store(g, m, pm), cg_store(g, v, pv);
    LLVMValueRef denom = cg_fadd(g, cg_fdiv(g, cg_call1(g, "llvm.sqrt.f32", v), sbc2), cg_f32(g, tc->eps));
    p = cg_fsub(g, p, cg_fmul(g, step_size, cg_fdiv(g, m, denom)));
  }
  cg_store(g, p, pp);
  cg_store(g, cg_f32(g, 0), pg);
  cg_for_end(g, &L);
}

/* Each trainable tensor in tiles over the pool: memory-bound, so both cores' bandwidth counts. */
static void emit_optimizer(Cg *g, const Spec *sp, const Plan *pl) {
  for (int t = 0; t < pl->ntensors; t++) {
    const PlanTensor *pt = &pl->tensors[t];
    if (pt->grad_offset < 0) continue;
    OptArg a = {sp, pl, pt};
    char name[64];
    snprintf(name, sizeof name, "T%d.opt", t);
    cg_parallel(g, name, (pt->elems + OPT_TILE - 1) / OPT_TILE, opt_tile, &a);
  }
}

/* _grad: a masked pruned weight's gradient is zero where it is pruned (train_step does this
 * inside the optimizer) */
static void emit_grad_masks(Cg *g, const Plan *pl) {
  for (int t = 0; t < pl->ntensors; t++) {
    const PlanTensor *pt = &pl->tensors[t];
    const SparsePlan *sp = &pl->layers[pt->layer].sp;
    if (!pt->p.sparse || sp->kernel != SK_MASK) continue;
    CgLoop L;
    LLVMValueRef i = cg_for(g, &L, "grad_mask", cg_i64(g, 0), cg_i64(g, pt->elems));
    LLVMValueRef pg = cg_at(g, TS_G, pt->grad_offset, i);
    cg_store(g, cg_fmul(g, cg_load(g, pg), cg_load(g, cg_at(g, TS_P, sp->mask, i))), pg);
    cg_for_end(g, &L);
  }
}

/* data-parallel: layer i's gradients are final once its backward ran; the range covering its
 * trainable tensors goes to the reduction (driver/dist.c) while the layers below it run */
static void emit_dist_bucket(Cg *g, const Plan *pl, int i) {
  int64_t lo = -1, hi = -1;
  for (int t = 0; t < pl->ntensors; t++) {
    const PlanTensor *pt = &pl->tensors[t];
    if (pt->layer != i || pt->grad_offset < 0) continue;
    if (lo < 0 || pt->grad_offset < lo) lo = pt->grad_offset;
    if (pt->grad_offset + pt->elems > hi) hi = pt->grad_offset + pt->elems;
  }
  if (lo < 0) return;
  LLVMValueRef args[] = {g->v_base[TS_G], cg_i64(g, lo), cg_i64(g, hi - lo)};
  cg_kernel(g, "tesla_dist_bucket", args, 3);
}

/* ---- the module -------------------------------------------------------------------------- */

static int last_compute_layer(const Spec *sp) {
  int n = sp->nlayers;
  return sp->layers[n - 1].op == OP_softmax ? n - 2 : n - 1;
}

static void logits_at(const Spec *sp, const EmitLayer *el, int *block, int64_t *off) {
  int last = last_compute_layer(sp);
  if (last < 0) *block = TS_X, *off = 0;
  else *block = el[last].out_block, *off = el[last].out;
}

/* train_step: forward, loss, backward, optimizer. grad (with_opt false): the same without the
 * optimizer, gradients accumulating into the gradient block (tests, accumulation). */
static void emit_train_step(Cg *g, const Spec *sp, const Plan *pl, EmitLayer *el, bool with_opt) {
  char name[160];
  snprintf(name, sizeof name, "%s_%s", sp->name, with_opt ? "train_step" : "grad");
  cg_fn_begin(g, name, false, true);
  int last = last_compute_layer(sp);
  layout(sp, pl, true, el);
  /* profile slots: layer i forward 2i, backward 2i + 1, loss 2n, optimizer 2n + 1 */
  int n = sp->nlayers;
  cg_prof(g, -1);
  for (int i = 0; i <= last; i++) {
    op_emitters[sp->layers[i].op]->fwd(g, &el[i]);
    cg_prof(g, 2 * i);
  }
  int lb;
  int64_t lo;
  logits_at(sp, el, &lb, &lo);
  bool dist = with_opt && pl->dist > 1;
  emit_loss(g, lb, lo, sp->classes, pl->batch, dist ? pl->batch * pl->dist : pl->batch, pl->grad_buf[0]);
  cg_prof(g, 2 * n);
  for (int i = last; i >= 0; i--) {
    op_emitters[sp->layers[i].op]->bwd(g, &el[i]);
    if (dist) emit_dist_bucket(g, pl, i);
    cg_prof(g, 2 * i + 1);
  }
  if (dist) cg_kernel(g, "tesla_dist_wait", NULL, 0);   /* a function of this process, like the kernels' calls */
  if (with_opt) emit_optimizer(g, sp, pl);
  else emit_grad_masks(g, pl);
  cg_prof(g, 2 * n + 1);
  cg_fn_end(g);
}

/* Layer i's weight and bias with batchnorm i + 1 folded in, from the current parameters (so
 * inference after any training step is right): per output k, s = gamma / sqrt(var + eps),
 * W'[k, :] = W[k, :] s, b'[k] = (b[k] - mean) s + beta. Dense keeps W as (IN, OUT). */
static void emit_fold(Cg *g, const Spec *sp, const Plan *pl, int i) {
  const Layer *l = &sp->layers[i], *bn = &sp->layers[i + 1];
  const PlanLayer *p = &pl->layers[i];
  int64_t w = -1, b = -1, gm = -1, bt = -1, rm = -1, rv = -1;
  for (int t = 0; t < pl->ntensors; t++) {
    const PlanTensor *pt = &pl->tensors[t];
    const char *n = pt->p.pname;
    if (pt->layer == i) *(!strcmp(n, "weight") ? &w : &b) = pt->offset;
    if (pt->layer == i + 1)
      *(!strcmp(n, "weight") ? &gm : !strcmp(n, "bias") ? &bt : !strcmp(n, "running_mean") ? &rm : &rv) = pt->offset;
  }
  bool dense = l->op == OP_dense;
  int64_t K = dense ? l->u.dense.units : l->u.conv.filters;
  int64_t R = dense ? shape_elems(&l->in) : l->in.d[0] * l->u.conv.kh * l->u.conv.kw;   /* per output */
  CgLoop Lk, Lr;
  /* the folded bias, and the scale kept in the folded bias's slot meanwhile is avoided:
   * the scale is recomputed where needed (this runs once per inference call) */
  LLVMValueRef k = cg_for(g, &Lk, "fold_k", cg_i64(g, 0), cg_i64(g, K));
  LLVMValueRef s = cg_fdiv(g, cg_load(g, cg_at(g, TS_P, gm, k)),
                           cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, cg_load(g, cg_at(g, TS_P, rv, k)), cg_f32(g, bn->u.bn.eps))));
  LLVMValueRef bias = b >= 0 ? cg_load(g, cg_at(g, TS_P, b, k)) : cg_f32(g, 0);
  LLVMValueRef nb = cg_fadd(g, cg_fmul(g, cg_fsub(g, bias, cg_load(g, cg_at(g, TS_P, rm, k))), s),
                            cg_load(g, cg_at(g, TS_P, bt, k)));
  cg_store(g, nb, cg_at(g, TS_P, p->fold_b, k));
  if (!dense) {   /* conv: row k of (K, C kh kw) */
    LLVMValueRef r = cg_for(g, &Lr, "fold_r", cg_i64(g, 0), cg_i64(g, R));
    LLVMValueRef idx = cg_mad(g, k, R, r);
    cg_store(g, cg_fmul(g, cg_load(g, cg_at(g, TS_P, w, idx)), s), cg_at(g, TS_P, p->fold_w, idx));
    cg_for_end(g, &Lr);
  }
  cg_for_end(g, &Lk);
  if (dense) {    /* column k of (IN, OUT): rows outside, so the inner loop is contiguous */
    LLVMValueRef r = cg_for(g, &Lr, "fold_i", cg_i64(g, 0), cg_i64(g, R));
    k = cg_for(g, &Lk, "fold_o", cg_i64(g, 0), cg_i64(g, K));
    s = cg_fdiv(g, cg_load(g, cg_at(g, TS_P, gm, k)),
                cg_call1(g, "llvm.sqrt.f32", cg_fadd(g, cg_load(g, cg_at(g, TS_P, rv, k)), cg_f32(g, bn->u.bn.eps))));
    LLVMValueRef idx = cg_mad(g, r, K, k);
    cg_store(g, cg_fmul(g, cg_load(g, cg_at(g, TS_P, w, idx)), s), cg_at(g, TS_P, p->fold_w, idx));
    cg_for_end(g, &Lk);
    cg_for_end(g, &Lr);
  }
}

/* infer: the folds first, then the forward in eval mode. split: the folds are a function of
 * their own, <name>_prepare, that an object file runs once per call (not once per batch) */
static void emit_infer(Cg *g, const Spec *sp, const Plan *pl, EmitLayer *el, bool split) {
  char name[160];
  layout(sp, pl, false, el);
  bool folds = false;
  for (int i = 0; i + 1 < sp->nlayers; i++) folds |= el[i].folded;
  snprintf(name, sizeof name, "%s_%s", sp->name, split && folds ? "prepare" : "infer");
  cg_fn_begin(g, name, false, true);
  for (int i = 0; i + 1 < sp->nlayers; i++)
    if (el[i].folded) emit_fold(g, sp, pl, i);
  if (split && folds) {
    cg_fn_end(g);
    snprintf(name, sizeof name, "%s_infer", sp->name);
    cg_fn_begin(g, name, false, true);
  }
  for (int i = 0; i < sp->nlayers; i++) op_emitters[sp->layers[i].op]->fwd(g, &el[i]);
  int lb;
  int64_t lo;
  logits_at(sp, el, &lb, &lo);
  CgIf has_y;
  cg_if(g, &has_y, LLVMBuildIsNotNull(g->b, g->v_base[TS_Y], ""));
  emit_loss(g, lb, lo, sp->classes, pl->batch, pl->batch, -1);
  cg_if_end(g, &has_y);
  cg_fn_end(g);
}

void emit_module(Cg *g, const Spec *sp, const Plan *pl) { emit_functions(g, sp, pl, EMIT_ALL); }

void emit_functions(Cg *g, const Spec *sp, const Plan *pl, unsigned what) {
  EmitLayer el[sp->nlayers > 0 ? sp->nlayers : 1];
  if (what & EMIT_TRAIN) emit_train_step(g, sp, pl, el, true);
  if (what & EMIT_GRAD) emit_train_step(g, sp, pl, el, false);
  if (what & (EMIT_INFER | EMIT_PREPARE)) emit_infer(g, sp, pl, el, what & EMIT_PREPARE);
}

bool emit_has_prepare(const Spec *sp, const Plan *pl) {
  for (int i = 0; i + 1 < sp->nlayers; i++)
    if (pl->layers[i].fold_w >= 0 && sp->layers[i + 1].op == OP_batchnorm) return true;
  return false;
}

void emit_logits_at(const Spec *sp, const Plan *pl, int *block, int64_t *off) {
  EmitLayer el[sp->nlayers > 0 ? sp->nlayers : 1];
  layout(sp, pl, false, el);
  logits_at(sp, el, block, off);
}

int64_t emit_output_offset(const Spec *sp, const Plan *pl) {
  EmitLayer el[sp->nlayers > 0 ? sp->nlayers : 1];
  layout(sp, pl, false, el);
  return el[sp->nlayers - 1].out;
}
