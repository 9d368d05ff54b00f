/* op_dense.c: the fully connected layer, y = x W^T + b (PyTorch's nn.Linear). Weight (out, in),
 * bias (out). A (C, H, W) input is flattened in (C, H, W) order first (the implicit flatten).
 * This file holds everything the compiler knows about the op: its keys, its shape rule, its
 * tensors and its cost; code generation adds its emitters here. */
#include "teslac.h"

static const char *const keys[] = {"units", "bias", NULL};

/* dense: {units: n, bias: true} */
static void parse(Ctx *cx, Layer *l) {
  l->u.dense.bias = true;
  YNode *v;
  if (!(v = spec_get(l->node, "units")))
    diag_at(cx, l->loc, "dense needs 'units' (its number of outputs), e.g. 'dense: {units: 10}'");
  else
    spec_int(cx, v, "units", 1, TS_MAX_DIM, &l->u.dense.units);
  if ((v = spec_get(l->node, "bias"))) spec_bool(cx, v, "bias", &l->u.dense.bias);
}

static bool infer(Ctx *cx, Layer *l) {
  if (l->u.dense.units <= 0) return false;
  int64_t in = shape_elems(&l->in), w;
  if (!size_mul(in, l->u.dense.units, &w)) {
    diag_at(cx, l->loc, "dense weight (%lld, %lld) is too large: more than 2^40 elements",
            (long long)l->u.dense.units, (long long)in);
    return false;
  }
  l->implicit_flatten = l->in.rank > 1;
  l->out = (Shape){1, {l->u.dense.units}};
  return true;
}

static int params(const Layer *l, Param p[4]) {
  int64_t in = shape_elems(&l->in), out = l->u.dense.units;
  p[0] = (Param){"weight", 2, {out, in}, true, .stored_t = true};   /* kept as (in, out) */
  if (!l->u.dense.bias) return 1;
  p[1] = (Param){"bias", 1, {out}, true};
  return 2;
}

/* FLOPs saturate at INT64_MAX instead of overflowing; plan.c reports a saturated count. */
static int64_t sat(__int128 x) { return x > INT64_MAX ? INT64_MAX : (int64_t)x; }

static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  __int128 mac = (__int128)n * shape_elems(&l->in) * l->u.dense.units;
  __int128 b = l->u.dense.bias ? (__int128)n * l->u.dense.units : 0;
  return (Flops){sat(2 * mac + b), sat((need_dx ? 2 * mac : 0) + 2 * mac + b)};
}

const OpDef op_dense = {
    .name = "dense", .keys = keys, .weighted = true,
    .parse = parse, .infer = infer, .params = params, .flops = flops,
};
