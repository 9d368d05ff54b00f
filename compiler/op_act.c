/* op_act.c: the elementwise activations relu and leaky_relu (slope 0.01 by default, as
 * nn.LeakyReLU). No weights; in generated code they ride in their producer's loop. */
#include "teslac.h"

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
