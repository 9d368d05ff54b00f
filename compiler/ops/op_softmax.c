/* op_softmax.c: softmax over the classes; only as the last layer. In training it is fused
 * with cross_entropy (the loss takes logits, as nn.CrossEntropyLoss does), so the exported
 * PyTorch model is the same nn.Sequential without it. */
#include "cg.h"

static const char *const keys[] = {NULL};

static void parse(Ctx *cx, Layer *l) {}

static bool infer(Ctx *cx, Layer *l) {
  if (l->in.rank != 1) {
    diag_at(cx, l->loc, "softmax needs a vector of class scores, got %s; put a dense layer before it",
            shape_str(cx, &l->in, true));
    return false;
  }
  l->out = l->in;
  return true;
}

static int params(const Layer *l, Param p[4]) { return 0; }

/* Per element: max 1, subtract and exp 2, sum 1, divide 1; backward (fused with the loss) 2. */
static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  int64_t e = n * shape_elems(&l->in);
  return (Flops){5 * e, 2 * e};
}

const OpDef op_softmax = {
    .name = "softmax", .keys = keys, .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: probabilities in inference (training fuses it into the loss, emit.c) ==== */

static void nothing(Cg *g, const EmitLayer *e) {}

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

