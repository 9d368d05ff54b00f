/* op_dropout.c: inverted dropout as nn.Dropout: in training each element is zeroed with
 * probability `rate` and the rest scaled by 1 / (1 - rate); in eval it is the identity. */
#include "cg.h"

static const char *const keys[] = {"rate", NULL};

/* dropout: {rate: 0.5} */
static void parse(Ctx *cx, Layer *l) {
  l->u.drop.rate = 0.5;
  YNode *v;
  if ((v = spec_get(l->node, "rate"))) spec_num(cx, v, "rate", 0, 1, false, true, &l->u.drop.rate);
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

const OpDef op_dropout = {
    .name = "dropout", .keys = keys, .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: forward and backward emitters ==== */

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
                                              LLVMConstInt(g->t_i64, (unsigned long long)e->l->index * 0x632BE59BD9B4E019ull, 0), "")
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

