/* op_softmax.c: softmax over the classes; only as the last layer. In training it is fused
 * with cross_entropy (the loss takes logits, as nn.CrossEntropyLoss does), so the exported
 * PyTorch model is the same nn.Sequential without it. */
#include "teslac.h"

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
