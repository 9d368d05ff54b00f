/* op_dropout.c: inverted dropout as nn.Dropout: in training each element is zeroed with
 * probability `rate` and the rest scaled by 1 / (1 - rate); in eval it is the identity. */
#include "teslac.h"

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
