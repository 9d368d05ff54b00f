/* op_pool.c: 2-D max and average pooling (nn.MaxPool2d, nn.AvgPool2d with ceil_mode false;
 * avgpool counts padding in its divisor, PyTorch's count_include_pad=True). Window `size`,
 * `stride` (default: size), `padding` (at most half the window, as PyTorch requires).
 * Output: H' = (H + 2 ph - kh) / sh + 1. No weights. */
#include "cg.h"

static const char *const keys[] = {"size", "stride", "padding", NULL};

/* maxpool | avgpool: {size: k | [kh, kw], stride: size, padding: 0 | [ph, pw]} */
static void parse(Ctx *cx, Layer *l) {
  typeof(l->u.pool) *p = &l->u.pool;
  YNode *v;
  const char *name = op_registry[l->op]->name;
  if (!(v = spec_get(l->node, "size")))
    diag_at(cx, l->loc, "%s needs 'size' (its window: k or [kh, kw]), e.g. '%s: {size: 2}'", name, name);
  else
    spec_pair(cx, v, "size", 1, &p->kh, &p->kw);
  p->sh = p->kh, p->sw = p->kw;
  if ((v = spec_get(l->node, "stride"))) spec_pair(cx, v, "stride", 1, &p->sh, &p->sw);
  if ((v = spec_get(l->node, "padding")) && spec_pair(cx, v, "padding", 0, &p->ph, &p->pw) &&
      p->kh > 0 && (2 * p->ph > p->kh || 2 * p->pw > p->kw))
    diag_at(cx, v->loc, "%s padding must be at most half its window (%lldx%lld), as in PyTorch",
            name, (long long)p->kh, (long long)p->kw);
}

static bool infer(Ctx *cx, Layer *l) {
  typeof(l->u.pool) *p = &l->u.pool;
  if (p->kh <= 0 || p->sh <= 0) return false;
  int64_t H = l->in.d[1] + 2 * p->ph, W = l->in.d[2] + 2 * p->pw;
  if (p->kh > H || p->kw > W) {
    diag_at(cx, l->loc, "%s window %lldx%lld is larger than its input %s",
            op_registry[l->op]->name, (long long)p->kh, (long long)p->kw, shape_str(cx, &l->in, true));
    return false;
  }
  l->out = (Shape){3, {l->in.d[0], (H - p->kh) / p->sh + 1, (W - p->kw) / p->sw + 1}};
  return true;
}

static int params(const Layer *l, Param p[4]) { return 0; }

/* FLOPs saturate at INT64_MAX instead of overflowing; plan.c reports a saturated count. */
static int64_t sat(__int128 x) { return x > INT64_MAX ? INT64_MAX : (int64_t)x; }

static Flops max_flops(const Layer *l, int64_t n, bool need_dx) {
  __int128 out = (__int128)n * shape_elems(&l->out);
  return (Flops){sat(out * l->u.pool.kh * l->u.pool.kw), need_dx ? sat(out) : 0};
}

static Flops avg_flops(const Layer *l, int64_t n, bool need_dx) {
  __int128 out = (__int128)n * shape_elems(&l->out), win = (__int128)l->u.pool.kh * l->u.pool.kw;
  return (Flops){sat(out * win + out), need_dx ? sat(out * win + out) : 0};
}

const OpDef op_maxpool = {
    .name = "maxpool", .keys = keys, .spatial_only = true,
    .parse = parse, .infer = infer, .params = params, .flops = max_flops,
};

const OpDef op_avgpool = {
    .name = "avgpool", .keys = keys, .spatial_only = true,
    .parse = parse, .infer = infer, .params = params, .flops = avg_flops,
};

/* ==== code generation: not yet: the convolution work adds its emitters here ==== */

const OpEmit op_maxpool_emit = {NULL, NULL};
const OpEmit op_avgpool_emit = {NULL, NULL};
