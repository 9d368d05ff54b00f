/* op_batchnorm.c: batch normalization over channels (nn.BatchNorm2d on (N, C, H, W)) or
 * features (nn.BatchNorm1d on (N, D)). Training normalizes with the biased batch variance and
 * updates running_var with the unbiased one: running = (1 - momentum) running + momentum batch.
 * Tensors: weight, bias (trainable), running_mean, running_var (buffers). */
#include "teslac.h"

static const char *const keys[] = {"eps", "momentum", NULL};

/* batchnorm: {eps: 1e-5, momentum: 0.1} */
static void parse(Ctx *cx, Layer *l) {
  l->u.bn.eps = 1e-5, l->u.bn.momentum = 0.1;
  YNode *v;
  if ((v = spec_get(l->node, "eps"))) spec_num(cx, v, "eps", 0, 1, true, false, &l->u.bn.eps);
  if ((v = spec_get(l->node, "momentum")))
    spec_num(cx, v, "momentum", 0, 1, false, false, &l->u.bn.momentum);
}

static bool infer(Ctx *cx, Layer *l) {
  l->out = l->in;
  return true;
}

static int params(const Layer *l, Param p[4]) {
  int64_t c = l->in.d[0];
  p[0] = (Param){"weight", 1, {c}, true};
  p[1] = (Param){"bias", 1, {c}, true};
  p[2] = (Param){"running_mean", 1, {c}, false};
  p[3] = (Param){"running_var", 1, {c}, false};
  return 4;
}

/* Per element: forward mean 1, variance 2, normalize-scale-shift 2; backward 2 for the
 * parameter gradients, 5 more for the input gradient. */
static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  int64_t e = n * shape_elems(&l->in);
  return (Flops){5 * e, (need_dx ? 7 : 2) * e};
}

const OpDef op_batchnorm = {
    .name = "batchnorm", .keys = keys, .weighted = true,
    .parse = parse, .infer = infer, .params = params, .flops = flops,
};
