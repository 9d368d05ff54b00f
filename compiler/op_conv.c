/* op_conv.c: 2-D convolution as PyTorch's nn.Conv2d computes it (cross-correlation, NCHW).
 * Weight (K, C, kh, kw), bias (K). Padding is an int, a pair, `same` (stride 1 only, as in
 * PyTorch; an even kernel pads one more at the bottom/right) or `valid` (0).
 * Output: H' = (H + pt + pb - kh) / sh + 1, likewise W'. */
#include "cg.h"

#include <string.h>

static const char *const keys[] = {"filters", "kernel", "stride", "padding", "bias", NULL};

/* conv: {filters: K, kernel: k | [kh, kw], stride: 1 | [sh, sw],
 *        padding: 0 | p | [ph, pw] | same | valid, bias: true} */
static void parse(Ctx *cx, Layer *l) {
  typeof(l->u.conv) *c = &l->u.conv;
  c->sh = c->sw = 1, c->bias = true, c->pad = PAD_EXPLICIT;
  YNode *v;
  if (!(v = spec_get(l->node, "filters")))
    diag_at(cx, l->loc, "conv needs 'filters' (its output channels), e.g. 'conv: {filters: 32, kernel: 3}'");
  else
    spec_int(cx, v, "filters", 1, TS_MAX_DIM, &c->filters);
  if (!(v = spec_get(l->node, "kernel")))
    diag_at(cx, l->loc, "conv needs 'kernel' (its size: k or [kh, kw])");
  else
    spec_pair(cx, v, "kernel", 1, &c->kh, &c->kw);
  if ((v = spec_get(l->node, "stride"))) spec_pair(cx, v, "stride", 1, &c->sh, &c->sw);
  if ((v = spec_get(l->node, "padding"))) {
    if (v->kind == Y_SCALAR && !strcmp(v->str, "same"))
      c->pad = PAD_SAME;
    else if (v->kind == Y_SCALAR && !strcmp(v->str, "valid"))
      c->pad = PAD_VALID;
    else if (v->kind == Y_SCALAR && (v->str[0] < '0' || v->str[0] > '9') && v->str[0] != '-')
      diag_at(cx, v->loc, "'padding' must be an integer, a pair, same or valid, got %s",
              spec_scalar_desc(cx, v));
    else {
      int64_t ph = 0, pw = 0;
      if (spec_pair(cx, v, "padding", 0, &ph, &pw)) c->pt = c->pb = ph, c->pl = c->pr = pw;
    }
    if (c->pad == PAD_SAME && (c->sh != 1 || c->sw != 1))
      diag_at(cx, v->loc, "padding 'same' needs stride 1 (as in PyTorch); give the padding as a number");
  }
}

static bool infer(Ctx *cx, Layer *l) {
  typeof(l->u.conv) *c = &l->u.conv;
  if (c->filters <= 0 || c->kh <= 0) return false;
  if (c->pad == PAD_SAME) {
    c->pt = (c->kh - 1) / 2, c->pb = c->kh - 1 - c->pt;
    c->pl = (c->kw - 1) / 2, c->pr = c->kw - 1 - c->pl;
  }
  int64_t C = l->in.d[0], H = l->in.d[1] + c->pt + c->pb, W = l->in.d[2] + c->pl + c->pr;
  if (c->kh > H || c->kw > W) {
    diag_at(cx, l->loc, "conv kernel %lldx%lld is larger than its padded input %lldx%lld (input %s, "
                        "padding %lld)", (long long)c->kh, (long long)c->kw, (long long)H, (long long)W,
            shape_str(cx, &l->in, true), (long long)c->pt);
    return false;
  }
  if (c->pt >= c->kh || c->pl >= c->kw) {
    diag_at(cx, l->loc, "conv padding %lld is not smaller than its kernel %lldx%lld",
            (long long)(c->pt > c->pl ? c->pt : c->pl), (long long)c->kh, (long long)c->kw);
    return false;
  }
  int64_t w, ck, out;
  l->out = (Shape){3, {c->filters, (H - c->kh) / c->sh + 1, (W - c->kw) / c->sw + 1}};
  if (!size_mul(c->filters, C, &ck) || !size_mul(ck, c->kh * c->kw, &w) ||
      !size_mul(c->filters, l->out.d[1] * l->out.d[2], &out)) {
    diag_at(cx, l->loc, "conv is too large: its weight or output overflows");
    return false;
  }
  return true;
}

static int params(const Layer *l, Param p[4]) {
  const typeof(l->u.conv) *c = &l->u.conv;
  p[0] = (Param){"weight", 4, {c->filters, l->in.d[0], c->kh, c->kw}, true};
  if (!c->bias) return 1;
  p[1] = (Param){"bias", 1, {c->filters}, true};
  return 2;
}

/* FLOPs saturate at INT64_MAX instead of overflowing; plan.c reports a saturated count. */
static int64_t sat(__int128 x) { return x > INT64_MAX ? INT64_MAX : (int64_t)x; }

static Flops flops(const Layer *l, int64_t n, bool need_dx) {
  const typeof(l->u.conv) *c = &l->u.conv;
  __int128 out = (__int128)n * shape_elems(&l->out), mac = out * l->in.d[0] * c->kh * c->kw;
  __int128 b = c->bias ? out : 0;
  return (Flops){sat(2 * mac + b), sat((need_dx ? 2 * mac : 0) + 2 * mac + b)};
}

const OpDef op_conv = {
    .name = "conv", .keys = keys, .weighted = true, .spatial_only = true,
    .parse = parse, .infer = infer, .params = params, .flops = flops,
};

/* ==== code generation: not yet: the convolution work adds its emitters here ==== */

const OpEmit op_conv_emit = {NULL, NULL};
