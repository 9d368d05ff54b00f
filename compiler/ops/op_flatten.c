/* op_flatten.c: (C, H, W) -> (C*H*W) in (C, H, W) order, as nn.Flatten. A view: no work, no
 * memory. A dense layer after a spatial one flattens implicitly, so this layer is optional. */
#include "cg.h"

static const char *const keys[] = {NULL};

static void parse(Ctx *cx, Layer *l) {}

static bool infer(Ctx *cx, Layer *l) {
  l->out = (Shape){1, {shape_elems(&l->in)}};
  return true;
}

static int params(const Layer *l, Param p[4]) { return 0; }

static Flops flops(const Layer *l, int64_t n, bool need_dx) { return (Flops){0, 0}; }

const OpDef op_flatten = {
    .name = "flatten", .keys = keys, .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: no code: a view ==== */

/* ---- flatten: a view (emit.c aliases its output and gradient to its input's) ------------- */

static void nothing(Cg *g, const EmitLayer *e) {}
const OpEmit op_flatten_emit = {nothing, nothing};

