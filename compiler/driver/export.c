/* export.c: `teslac export`: a checked spec with its checkpoint's weights as an ONNX model of
 * inference (IR version 8, opset 13), written through protobuf-c from the ONNX schema's subset
 * in onnx_subset.proto (compiled by protoc-c at build time). It stands beside build.c at the end
 * of the pipeline: front -> plan (the checkpoint's tensor layout) -> model_load -> one ONNX node
 * list per layer -> the packed ModelProto, written atomically.
 *
 * What each layer becomes (specs/README.md, "teslac export"): dense -> Gemm (transB), conv ->
 * Conv, pools -> MaxPool / AveragePool (count_include_pad), batchnorm -> BatchNormalization with
 * the running statistics, relu / leaky_relu -> Relu / LeakyRelu, flatten and the implicit
 * flatten -> Flatten, softmax -> Softmax (axis 1), dropout -> nothing (the identity at
 * inference). A tensor-train layer stays a train: its cores are initializers under their
 * checkpoint names and the graph contracts them one Einsum per core (Novikov's chain; for a TT
 * conv Garipov's direct path: the spatial core as a convolution of every input channel, then the
 * chain over the channel modes), never forming the weight. A pruned weight is written dense.
 * The model takes what `teslac predict` feeds the network: float32 (N, C, H, W) or (N, D) after
 * data.scale; it gives the last layer's output (probabilities after a softmax, else logits).
 *
 * Legend: N batch, C channels, H height, W width, K filters, D features; TT: m/n the input and
 * output modes, r the ranks, Q the product of the input modes still to contract, P the product
 * of the output modes produced so far, L = H' W' output positions. */
#include "cmd.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifdef TESLA_ONNX
#include "onnx_subset.pb-c.h"

enum { ONNX_IR_VERSION = 8, ONNX_OPSET = 13 };

/* The graph under construction: every message, string and tensor from the compilation's arena
 * (freed at once with it); nodes and initializers in arrays that grow by doubling. */
typedef struct Gx {
  Ctx *cx;
  const Model *m;
  Onnx__NodeProto **node;
  size_t nnode, capnode;
  Onnx__TensorProto **init;
  size_t ninit, capinit;
  int nconst;   /* shape constants made so far: their names' serial */
} Gx;

static void *grow(Ctx *cx, void *arr, size_t n, size_t *cap) {
  if (n < *cap) return arr;
  size_t nc = *cap ? *cap * 2 : 64;
  void **a = arena_alloc(cx, nc * sizeof(void *));
  if (n) memcpy(a, arr, n * sizeof(void *));
  *cap = nc;
  return a;
}

static char *dup(Gx *g, const char *s) { return arena_strndup(g->cx, s, strlen(s)); }

/* ---- nodes and their attributes --------------------------------------------------------------- */

/* a node `op` named `name` from nin inputs to one output `out` */
static Onnx__NodeProto *gx_node(Gx *g, const char *op, const char *name, int nin, const char *const *in,
                                const char *out) {
  Onnx__NodeProto *n = arena_alloc(g->cx, sizeof *n);
  onnx__node_proto__init(n);
  n->op_type = dup(g, op), n->name = dup(g, name);
  n->n_input = (size_t)nin, n->input = arena_alloc(g->cx, sizeof(char *) * (size_t)(nin ? nin : 1));
  for (int k = 0; k < nin; k++) n->input[k] = dup(g, in[k]);
  n->n_output = 1, n->output = arena_alloc(g->cx, sizeof(char *));
  n->output[0] = dup(g, out);
  g->node = grow(g->cx, g->node, g->nnode, &g->capnode);
  g->node[g->nnode++] = n;
  return n;
}

static Onnx__AttributeProto *gx_attr(Gx *g, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType t) {
  Onnx__AttributeProto *a = arena_alloc(g->cx, sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = dup(g, name), a->has_type = true, a->type = t;
  Onnx__AttributeProto **arr = arena_alloc(g->cx, sizeof(void *) * (n->n_attribute + 1));
  if (n->n_attribute) memcpy(arr, n->attribute, sizeof(void *) * n->n_attribute);
  arr[n->n_attribute++] = a;
  n->attribute = arr;
  return a;
}

static void attr_int(Gx *g, Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = gx_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  a->has_i = true, a->i = v;
}

static void attr_float(Gx *g, Onnx__NodeProto *n, const char *name, double v) {
  Onnx__AttributeProto *a = gx_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  a->has_f = true, a->f = (float)v;
}

static void attr_ints(Gx *g, Onnx__NodeProto *n, const char *name, int cnt, const int64_t *v) {
  Onnx__AttributeProto *a = gx_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  a->n_ints = (size_t)cnt, a->ints = arena_alloc(g->cx, sizeof(int64_t) * (size_t)cnt);
  memcpy(a->ints, v, sizeof(int64_t) * (size_t)cnt);
}

static void attr_str(Gx *g, Onnx__NodeProto *n, const char *name, const char *s) {
  Onnx__AttributeProto *a = gx_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
  a->has_s = true, a->s.data = (uint8_t *)dup(g, s), a->s.len = strlen(s);
}

/* ---- initializers ------------------------------------------------------------------------------ */

/* bytes little-endian, as raw_data has them (a no-op on the hosts teslac runs on) */
static void to_le(uint8_t *p, size_t elems, size_t size) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (size_t i = 0; i < elems; i++, p += size)
    for (size_t a = 0, b = size - 1; a < b; a++, b--) {
      uint8_t t = p[a];
      p[a] = p[b], p[b] = t;
    }
#else
  (void)p, (void)elems, (void)size;
#endif
}

/* an initializer `name` of `dtype` over `data` (taken over: arena memory, host order) */
static const char *gx_tensor(Gx *g, const char *name, int32_t dtype, int ndims, const int64_t *dims, void *data,
                             size_t elem_size) {
  Onnx__TensorProto *t = arena_alloc(g->cx, sizeof *t);
  onnx__tensor_proto__init(t);
  size_t elems = 1;
  t->name = dup(g, name), t->has_data_type = true, t->data_type = dtype;
  t->n_dims = (size_t)ndims, t->dims = arena_alloc(g->cx, sizeof(int64_t) * (size_t)(ndims ? ndims : 1));
  for (int k = 0; k < ndims; k++) t->dims[k] = dims[k], elems *= (size_t)dims[k];
  to_le(data, elems, elem_size);
  t->has_raw_data = true, t->raw_data.data = data, t->raw_data.len = elems * elem_size;
  g->init = grow(g->cx, g->init, g->ninit, &g->capinit);
  g->init[g->ninit++] = t;
  return t->name;
}

/* a 1-d int64 constant (a shape, pads, slice bounds), named after its layer */
static const char *gx_ints(Gx *g, const char *layer, int cnt, const int64_t *v) {
  int64_t *d = arena_alloc(g->cx, sizeof(int64_t) * (size_t)cnt), dim = cnt;
  memcpy(d, v, sizeof(int64_t) * (size_t)cnt);
  return gx_tensor(g, arena_printf(g->cx, "%s.const.%d", layer, g->nconst++), ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1,
                   &dim, d, sizeof(int64_t));
}

/* layer i's tensor `pname` (PyTorch's layout, a pruned weight dense) as an initializer under its
 * checkpoint name; NULL when the layer has none (a layer without bias) */
static const char *gx_weight(Gx *g, int i, const char *pname) {
  const Plan *pl = &g->m->pl;
  for (int t = 0; t < pl->ntensors; t++) {
    const PlanTensor *pt = &pl->tensors[t];
    if (pt->layer != i || strcmp(pt->p.pname, pname)) continue;
    int64_t elems = 1;
    for (int k = 0; k < pt->p.ndims; k++) elems *= pt->p.dims[k];
    float *w = arena_alloc(g->cx, sizeof(float) * (size_t)elems);
    if (model_tensor_get(g->m, pt, w) < 0) {
      diag_at(g->cx, (SrcLoc){0}, "out of memory reading the weights of '%s'", pt->name);
      return NULL;
    }
    return gx_tensor(g, pt->name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, pt->p.ndims, pt->p.dims, w, sizeof(float));
  }
  return NULL;
}

/* ---- the layers -------------------------------------------------------------------------------- */

/* one node of one input: "<layer>.<what>" from x */
static const char *op1(Gx *g, const Layer *l, const char *op, const char *what, const char *x, Onnx__NodeProto **n) {
  const char *out = arena_printf(g->cx, "%s.%s", l->name, what);
  Onnx__NodeProto *nd = gx_node(g, op, out, 1, &x, out);
  if (n) *n = nd;
  return out;
}

/* x reshaped to `cnt` dims (0: that dim of x, i.e. N; -1: the rest) */
static const char *reshape(Gx *g, const Layer *l, const char *what, const char *x, int cnt, const int64_t *dims) {
  const char *out = arena_printf(g->cx, "%s.%s", l->name, what);
  const char *in[] = {x, gx_ints(g, l->name, cnt, dims)};
  gx_node(g, "Reshape", out, 2, in, out);
  return out;
}

/* (N, ...) -> (N, F): the (C, H, W) order, as nn.Flatten */
static const char *flatten(Gx *g, const Layer *l, const char *x) {
  Onnx__NodeProto *n;
  const char *y = op1(g, l, "Flatten", "flatten", x, &n);
  attr_int(g, n, "axis", 1);
  return y;
}

/* zeros appended to axis `axis` of a rank-`rank` x, from `have` to `want` entries (TT padding) */
static const char *pad_axis(Gx *g, const Layer *l, const char *x, int rank, int axis, int64_t have, int64_t want) {
  if (want == have) return x;
  int64_t pads[8] = {0};
  pads[rank + axis] = want - have;
  const char *out = arena_printf(g->cx, "%s.pad", l->name);
  const char *in[] = {x, gx_ints(g, l->name, 2 * rank, pads)};
  gx_node(g, "Pad", out, 2, in, out);
  return out;
}

/* the first `keep` entries of axis 1 (a padded TT's extra outputs dropped) */
static const char *slice_axis1(Gx *g, const Layer *l, const char *x, int64_t have, int64_t keep) {
  if (have == keep) return x;
  int64_t zero = 0, one = 1;
  const char *out = arena_printf(g->cx, "%s.slice", l->name);
  const char *in[] = {x, gx_ints(g, l->name, 1, &zero), gx_ints(g, l->name, 1, &keep), gx_ints(g, l->name, 1, &one)};
  gx_node(g, "Slice", out, 4, in, out);
  return out;
}

/* The TT chain over d cores (r[k], m[k], n[k], r[k+1]) named core.<first + k>. In: (N, r[0],
 * m[0], Q, 1[, L]) with Q = m[1] ... m[d-1]; step k contracts r[k] and m[k] with core k:
 *   (N, r, m, Q, P[, L]) x (r, m, n, s) -> (N, s, Q, P, n[, L])
 * and views the result as (N, s, m[k+1], Q / m[k+1], P n[, L]) for the next. Out: the state
 * (N, 1, 1, P, n[d-1][, L]), i.e. the output modes row-major (the first most significant). */
static const char *tt_chain(Gx *g, const Layer *l, const TTPlan *t, int first, const char *x, bool spatial,
                            int64_t Lp) {
  int64_t Q = 1, P = 1;
  for (int k = 1; k < t->d; k++) Q *= t->m[k];
  const char *eq = spatial ? "nrmqpl,rmjs->nsqpjl" : "nrmqp,rmjs->nsqpj";
  for (int k = 0; k < t->d; k++) {
    const char *core = gx_weight(g, l->index, arena_printf(g->cx, "core.%d", first + k));
    if (!core) return NULL;
    const char *out = arena_printf(g->cx, "%s.tt%d", l->name, k);
    const char *in[] = {x, core};
    Onnx__NodeProto *n = gx_node(g, "Einsum", out, 2, in, out);
    attr_str(g, n, "equation", eq);
    x = out;
    P *= t->n[k];
    if (k + 1 < t->d) {
      int64_t s = t->r[k + 1], mk = t->m[k + 1];
      Q /= mk;
      int64_t dims[] = {0, s, mk, Q, P, Lp};
      x = reshape(g, l, arena_printf(g->cx, "tt%d.view", k), x, spatial ? 6 : 5, dims);
    }
  }
  return x;
}

/* dense: Gemm (x W^T + b); a tensor train: its chain, the bias added after */
static const char *ex_dense(Gx *g, const Layer *l, const PlanLayer *p, const char *x) {
  if (l->in.rank == 3) x = flatten(g, l, x);   /* the implicit flatten */
  const char *b = gx_weight(g, l->index, "bias");
  if (p->storage != ST_TT) {
    const char *w = gx_weight(g, l->index, "weight");
    if (!w) return NULL;
    const char *out = arena_printf(g->cx, "%s.gemm", l->name);
    const char *in[] = {x, w, b};
    Onnx__NodeProto *n = gx_node(g, "Gemm", out, b ? 3 : 2, in, out);
    attr_int(g, n, "transB", 1);
    return out;
  }
  const TTPlan *t = &p->tt;
  x = pad_axis(g, l, x, 2, 1, t->M, t->Mp);                      // (N, Mp)
  int64_t dims[] = {0, 1, t->m[0], t->Mp / t->m[0], 1};
  x = reshape(g, l, "tt.in", x, 5, dims);                        // (N, 1, m0, Q, 1)
  if (!(x = tt_chain(g, l, t, 0, x, false, 1))) return NULL;
  int64_t flat[] = {0, t->Np};
  x = reshape(g, l, "tt.out", x, 2, flat);                       // (N, Np)
  x = slice_axis1(g, l, x, t->Np, t->N);                         // (N, units)
  if (!b) return x;
  const char *out = arena_printf(g->cx, "%s.bias_add", l->name), *in[] = {x, b};
  gx_node(g, "Add", out, 2, in, out);
  return out;
}

/* conv: Conv (pads top, left, bottom, right); a tensor train: Garipov's direct path */
static const char *ex_conv(Gx *g, const Layer *l, const PlanLayer *p, const char *x) {
  const typeof(l->u.conv) *c = &l->u.conv;
  int64_t kernel[] = {c->kh, c->kw}, strides[] = {c->sh, c->sw}, pads[] = {c->pt, c->pl, c->pb, c->pr};
  const char *b = gx_weight(g, l->index, "bias");
  if (p->storage != ST_TT) {
    const char *w = gx_weight(g, l->index, "weight");
    if (!w) return NULL;
    const char *out = arena_printf(g->cx, "%s.conv", l->name);
    const char *in[] = {x, w, b};
    Onnx__NodeProto *n = gx_node(g, "Conv", out, b ? 3 : 2, in, out);
    attr_ints(g, n, "kernel_shape", 2, kernel), attr_ints(g, n, "strides", 2, strides), attr_ints(g, n, "pads", 4, pads);
    return out;
  }
  const TTPlan *t = &p->tt;
  int64_t H = l->in.d[1], W = l->in.d[2], Ho = l->out.d[1], Wo = l->out.d[2], L = Ho * Wo, r0 = t->r[0];
  x = pad_axis(g, l, x, 4, 1, t->M, t->Mp);                      // (N, Cp, H, W)
  int64_t one[] = {-1, 1, H, W};
  x = reshape(g, l, "tt.planes", x, 4, one);                     // (N Cp, 1, H, W)
  /* the spatial core (1, kh, kw, r0) as r0 filters of one channel: (r0, 1, kh, kw) */
  const char *g0 = gx_weight(g, l->index, "core.0");
  if (!g0) return NULL;
  Onnx__NodeProto *n;
  const char *filt = op1(g, l, "Transpose", "core.0.filters", g0, &n);
  int64_t perm0[] = {3, 0, 1, 2};
  attr_ints(g, n, "perm", 4, perm0);
  const char *sp = arena_printf(g->cx, "%s.tt.spatial", l->name), *in[] = {x, filt};
  n = gx_node(g, "Conv", sp, 2, in, sp);
  attr_ints(g, n, "kernel_shape", 2, kernel), attr_ints(g, n, "strides", 2, strides), attr_ints(g, n, "pads", 4, pads);
  int64_t per[] = {-1, t->Mp, r0, L};
  x = reshape(g, l, "tt.rank_planes", sp, 4, per);               // (N, Cp, r0, L)
  x = op1(g, l, "Transpose", "tt.rank_first", x, &n);            // (N, r0, Cp, L)
  int64_t perm1[] = {0, 2, 1, 3};
  attr_ints(g, n, "perm", 4, perm1);
  int64_t dims[] = {0, r0, t->m[0], t->Mp / t->m[0], 1, L};
  x = reshape(g, l, "tt.in", x, 6, dims);                        // (N, r0, m0, Q, 1, L)
  if (!(x = tt_chain(g, l, t, 1, x, true, L))) return NULL;
  int64_t img[] = {0, t->Np, Ho, Wo};
  x = reshape(g, l, "tt.out", x, 4, img);                        // (N, Kp, H', W')
  x = slice_axis1(g, l, x, t->Np, t->N);                         // (N, K, H', W')
  if (!b) return x;
  int64_t col[] = {c->filters, 1, 1};
  const char *bcol = arena_printf(g->cx, "%s.bias_kxx", l->name), *bin[] = {b, gx_ints(g, l->name, 3, col)};
  gx_node(g, "Reshape", bcol, 2, bin, bcol);
  const char *out = arena_printf(g->cx, "%s.bias_add", l->name), *ain[] = {x, bcol};
  gx_node(g, "Add", out, 2, ain, out);
  return out;
}

static const char *ex_pool(Gx *g, const Layer *l, const char *x) {
  const typeof(l->u.pool) *p = &l->u.pool;
  int64_t kernel[] = {p->kh, p->kw}, strides[] = {p->sh, p->sw}, pads[] = {p->ph, p->pw, p->ph, p->pw};
  Onnx__NodeProto *n;
  bool avg = l->op == OP_avgpool;
  const char *y = op1(g, l, avg ? "AveragePool" : "MaxPool", avg ? "avgpool" : "maxpool", x, &n);
  attr_ints(g, n, "kernel_shape", 2, kernel), attr_ints(g, n, "strides", 2, strides), attr_ints(g, n, "pads", 4, pads);
  if (avg) attr_int(g, n, "count_include_pad", 1);   /* PyTorch's default: every window / (kh kw) */
  return y;
}

static const char *ex_batchnorm(Gx *g, const Layer *l, const char *x) {
  const char *in[] = {x, gx_weight(g, l->index, "weight"), gx_weight(g, l->index, "bias"),
                      gx_weight(g, l->index, "running_mean"), gx_weight(g, l->index, "running_var")};
  for (int k = 1; k < 5; k++)
    if (!in[k]) return NULL;
  const char *out = arena_printf(g->cx, "%s.batchnorm", l->name);
  Onnx__NodeProto *n = gx_node(g, "BatchNormalization", out, 5, in, out);   /* opset 9's: inference */
  attr_float(g, n, "epsilon", l->u.bn.eps);
  return out;
}

/* layer i from x; the value it gives, or NULL after a diagnostic */
static const char *ex_layer(Gx *g, int i, const char *x) {
  const Layer *l = &g->m->sp.layers[i];
  const PlanLayer *p = &g->m->pl.layers[i];
  Onnx__NodeProto *n;
  switch (l->op) {
  case OP_dense: return ex_dense(g, l, p, x);
  case OP_conv: return ex_conv(g, l, p, x);
  case OP_maxpool:
  case OP_avgpool: return ex_pool(g, l, x);
  case OP_batchnorm: return ex_batchnorm(g, l, x);
  case OP_relu: return op1(g, l, "Relu", "relu", x, NULL);
  case OP_leaky_relu: {
    const char *y = op1(g, l, "LeakyRelu", "leaky_relu", x, &n);
    attr_float(g, n, "alpha", l->u.act.slope);
    return y;
  }
  case OP_dropout: return x;   /* the identity at inference */
  case OP_flatten: return l->in.rank == 3 ? flatten(g, l, x) : x;
  case OP_softmax: {
    const char *y = op1(g, l, "Softmax", "softmax", x, &n);
    attr_int(g, n, "axis", 1);
    return y;
  }
  case OP_COUNT: break;   /* no default: a new op in ops.def warns here (-Wswitch) */
  }
  diag_at(g->cx, l->loc, "layer %s has no ONNX export in this teslac", l->name);
  return NULL;
}

/* a float32 tensor value (batch, shape...): the batch fixed, or the symbolic "N" */
static Onnx__ValueInfoProto *value_info(Gx *g, const char *name, int64_t batch, const Shape *s) {
  Onnx__ValueInfoProto *v = arena_alloc(g->cx, sizeof *v);
  Onnx__TypeProto *ty = arena_alloc(g->cx, sizeof *ty);
  Onnx__TypeProto__Tensor *tt = arena_alloc(g->cx, sizeof *tt);
  Onnx__TensorShapeProto *sh = arena_alloc(g->cx, sizeof *sh);
  onnx__value_info_proto__init(v), onnx__type_proto__init(ty), onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  sh->n_dim = (size_t)s->rank + 1, sh->dim = arena_alloc(g->cx, sizeof(void *) * sh->n_dim);
  for (size_t k = 0; k < sh->n_dim; k++) {
    Onnx__TensorShapeProto__Dimension *d = arena_alloc(g->cx, sizeof *d);
    onnx__tensor_shape_proto__dimension__init(d);
    if (k == 0 && !batch) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM, d->dim_param = dup(g, "N");
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = k ? s->d[k - 1] : batch;
    }
    sh->dim[k] = d;
  }
  tt->has_elem_type = true, tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, tt->shape = sh;
  ty->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE, ty->tensor_type = tt;
  v->name = dup(g, name), v->type = ty;
  return v;
}

static Onnx__StringStringEntryProto *meta(Gx *g, const char *key, const char *value) {
  Onnx__StringStringEntryProto *e = arena_alloc(g->cx, sizeof *e);
  onnx__string_string_entry_proto__init(e);
  e->key = dup(g, key), e->value = dup(g, value);
  return e;
}

/* The whole model: the graph "input" -> layers -> "output", its initializers, the opset and the
 * metadata (the input scale, what the output holds, the class names). NULL after a diagnostic. */
static Onnx__ModelProto *build_model(Gx *g, int64_t batch) {
  const Spec *sp = &g->m->sp;
  const char *x = "input";
  for (int i = 0; i < sp->nlayers && x; i++) x = ex_layer(g, i, x);
  if (!x) return NULL;
  /* the last value is "output": the last node's, renamed; an Identity when no node gave it */
  Onnx__NodeProto *last = g->nnode ? g->node[g->nnode - 1] : NULL;
  if (last && !strcmp(last->output[0], x)) last->output[0] = dup(g, "output");
  else gx_node(g, "Identity", "output", 1, &x, "output");

  Onnx__GraphProto *gr = arena_alloc(g->cx, sizeof *gr);
  onnx__graph_proto__init(gr);
  gr->name = dup(g, sp->name);
  gr->n_node = g->nnode, gr->node = g->node;
  gr->n_initializer = g->ninit, gr->initializer = g->init;
  gr->n_input = 1, gr->input = arena_alloc(g->cx, sizeof(void *));
  gr->input[0] = value_info(g, "input", batch, &sp->input);
  gr->input[0]->doc_string = arena_printf(g->cx, "float32, the raw values divided by data.scale (%g)", sp->data.scale);
  bool probs = sp->nlayers && sp->layers[sp->nlayers - 1].op == OP_softmax;
  gr->n_output = 1, gr->output = arena_alloc(g->cx, sizeof(void *));
  gr->output[0] = value_info(g, "output", batch, &sp->layers[sp->nlayers - 1].out);
  gr->output[0]->doc_string = dup(g, probs ? "class probabilities (softmax)" : "class scores (logits)");

  Onnx__ModelProto *mp = arena_alloc(g->cx, sizeof *mp);
  onnx__model_proto__init(mp);
  mp->has_ir_version = true, mp->ir_version = ONNX_IR_VERSION;
  Onnx__OperatorSetIdProto *os = arena_alloc(g->cx, sizeof *os);
  onnx__operator_set_id_proto__init(os);
  os->domain = dup(g, ""), os->has_version = true, os->version = ONNX_OPSET;
  mp->n_opset_import = 1, mp->opset_import = arena_alloc(g->cx, sizeof(void *));
  mp->opset_import[0] = os;
  mp->producer_name = dup(g, "teslac"), mp->producer_version = dup(g, TESLAC_VERSION);
  mp->doc_string = arena_printf(g->cx, "%s, exported by teslac %s for inference", sp->name, TESLAC_VERSION);
  mp->graph = gr;

  char *names = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&names, &len);
  if (!f) {
    diag_at(g->cx, (SrcLoc){0}, "out of memory writing the model's metadata");
    return NULL;
  }
  fputc('[', f);
  for (int k = 0; k < sp->nclass_names; k++) fputs(k ? ", " : "", f), cmd_json_str(f, sp->class_names[k]);
  fputc(']', f);
  fclose(f);
  mp->n_metadata_props = 0, mp->metadata_props = arena_alloc(g->cx, sizeof(void *) * 3);
  mp->metadata_props[mp->n_metadata_props++] = meta(g, "input_scale", arena_printf(g->cx, "%.17g", sp->data.scale));
  mp->metadata_props[mp->n_metadata_props++] = meta(g, "output", probs ? "probabilities" : "logits");
  if (sp->class_names) mp->metadata_props[mp->n_metadata_props++] = meta(g, "class_names", names);
  free(names);
  return mp;
}

const char *export_library(void) { return protobuf_c_version(); }

#else
const char *export_library(void) { return NULL; }
#endif

static const CmdOpt export_opts[] = {
    CMD_OPT_WEIGHTS("the weights (safetensors: a teslac checkpoint or PyTorch state_dict names)"),
    {"-o", NULL, ARG_STR, "OUT.onnx", 0, 0, offsetof(TrainOpts, out), "the model (default: the model's name + .onnx)"},
    CMD_OPT_BATCH("a fixed batch dim (default: the symbolic dim \"N\", any batch)"),
    {NULL}};

const CmdDef cmd_export = {
    .name = "export", .args = "SPEC --weights CKPT [-o OUT.onnx] [--batch N]",
    .summary = "an ONNX model (opset 13) of inference with the weights",
    .about = "Write SPEC with the weights in CKPT as an ONNX model of inference (opset 13; specs/README.md,\n"
             "'teslac export'): input \"input\" float32 (N, C, H, W) or (N, D), the values after data.scale, as\n"
             "teslac predict feeds them; output \"output\" (N, classes), probabilities when the spec ends in\n"
             "softmax. Tensor trains stay trains (their cores contracted in the graph); pruned weights dense.",
    CMD_POS_SPEC(TrainOpts),
    .opts = export_opts,
    .quiet = "no summary line",
    .verbose = "the usual output (nothing more to say)",
    .run = export_main};

/* teslac export SPEC --weights CKPT [-o OUT.onnx] [--batch N] [-q] */
int export_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts(&cmd_export, argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
#ifndef TESLA_ONNX
  fprintf(stderr, "teslac: this teslac was built without ONNX export (it needs protobuf-c: install Debian's "
                  "libprotobuf-c-dev and protobuf-c-compiler, then reconfigure with meson -Donnx=enabled)\n");
  return 1;
#else
  Ctx cx;
  Model m = {0};
  char *path = NULL;
  uint8_t *buf = NULL;
  TsOut out;
  bool opened = false;
  TsErr e;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto done;
  path = o.out ? strdup(o.out) : NULL;
  if (!path && (path = malloc(strlen(m.sp.name) + 6))) sprintf(path, "%s.onnx", m.sp.name);
  if (!path) {
    fprintf(stderr, "teslac: out of memory\n");
    goto done;
  }
  const CmdFile role_in[] = {{o.spec, "spec"}, {o.weights, "--weights checkpoint"}};
  const CmdFile role_out[] = {{path, "ONNX model"}};
  if (cmd_check_roles(role_in, 2, role_out, 1, -1, -1) < 0 || cmd_check_output(path, "ONNX model") < 0) goto done;

  /* the weights, as build and predict load them: the plan of the spec's batch lays them out */
  plan_spec(&cx, &m.sp, m.sp.train.batch, &m.pl);
  if (cx.nerrors || model_alloc(&cx, &m) < 0) goto done;
  if (model_load(&cx, &m, o.weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto done;
  }
  const char *bad = model_nonfinite(&m);
  if (bad) {
    fprintf(stderr, "teslac: %s: '%s' holds non-finite values (NaN or infinity); the run that wrote it diverged\n",
            o.weights, bad);
    goto done;
  }
  Gx g = {.cx = &cx, .m = &m};
  Onnx__ModelProto *mp = build_model(&g, o.batch);
  if (!mp) goto done;
  size_t size = protobuf_c_message_get_packed_size(&mp->base);
  if (size > ((size_t)2 << 30) - 1) {   /* protobuf's limit on one message */
    fprintf(stderr, "teslac: the ONNX model would be %zu bytes, past protobuf's 2 GiB limit\n", size);
    goto done;
  }
  if (!(buf = malloc(size ? size : 1))) {
    fprintf(stderr, "teslac: out of memory for the %zu-byte ONNX model\n", size);
    goto done;
  }
  protobuf_c_message_pack(&mp->base, buf);
  if (ts_out_open(&out, path, &e) < 0) goto fail;
  opened = true;   /* removed at the end unless committed */
  if (ts_out_write(&out, buf, size, &e) < 0 || ts_out_finish(&out, &e) < 0 || ts_out_commit(&out, &e) < 0) goto fail;
  if (cmd_verbosity >= 0)
    printf("wrote %s (%zu bytes: %zu nodes, %zu initializers, opset %d, input (%s, %s float32)\n", path, size, g.nnode,
           g.ninit, ONNX_OPSET, o.batch ? arena_printf(&cx, "%lld", (long long)o.batch) : "N",
           shape_str(&cx, &m.sp.input, false) + 1);
  rc = 0;
  goto done;
fail:
  fprintf(stderr, "teslac: %s\n", e.msg);
done:
  if (opened) ts_out_abort(&out);
  free(buf), free(path);
  model_free(&m);
  ctx_free(&cx);
  return rc;
#endif
}
