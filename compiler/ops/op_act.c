/* op_act.c: the elementwise activations relu and leaky_relu (slope 0.01 by default, as
 * nn.LeakyReLU). No weights; in generated code they ride in their producer's loop. */
#include "cg.h"

static const char *const no_keys[] = {NULL};
static const char *const leaky_keys[] = {"slope", NULL};

static void relu_parse(Ctx *cx, Layer *l) {}

/* leaky_relu: {slope: 0.01} */
static void leaky_parse(Ctx *cx, Layer *l) {
  l->u.act.slope = 0.01;
  YNode *v;
  if ((v = spec_get(l->node, "slope"))) spec_num(cx, v, "slope", -1e6, 1e6, false, false, &l->u.act.slope);
}

static bool infer(Ctx *cx, Layer *l) {
  l->out = l->in;
  return true;
}

static int params(const Layer *l, Param p[4]) { return 0; }

static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  int64_t e = n * shape_elems(&l->in);
  return (Flops){e, need_dx ? e : 0};
}

const OpDef op_relu = {
    .name = "relu", .keys = no_keys, .parse = relu_parse, .infer = infer, .params = params, .flops = flops,
};

const OpDef op_leaky_relu = {
    .name = "leaky_relu", .keys = leaky_keys, .parse = leaky_parse, .infer = infer, .params = params,
    .flops = flops,
};

/* ==== code generation: forward and backward emitters ==== */

/* ---- elementwise activations ------------------------------------------------------------- */

static LLVMValueRef act_slope(Cg *g, const EmitLayer *e) {
  return cg_f32(g, e->l->op == OP_leaky_relu ? e->l->u.act.slope : 0.0);
}

/* y = x > 0 ? x : slope x     over (B, ...) */
static void act_fwd(Cg *g, const EmitLayer *e) {
  if (e->fused) return;   /* its producer applied it (emit.c's layout) */
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

