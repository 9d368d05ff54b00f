/* check.c: the third stage. It walks the layers in order, feeding each op's shape rule the
 * previous layer's output, and checks what the user wrote against what it infers: `dims:`,
 * tensor-train modes, spatial ops on vectors, softmax placement, `classes`. A layer whose
 * shape cannot be inferred stops inference (later layers would only echo the same mistake),
 * but every layer's own keys were already checked by spec.c. Prints the model table. */
#include "teslac.h"

#include <string.h>

static char *dims_str(Ctx *cx, const int64_t *d, int n) {
  char buf[160];
  int k = snprintf(buf, sizeof buf, "[");
  for (int i = 0; i < n; i++) k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", i ? ", " : "", (long long)d[i]);
  snprintf(buf + k, sizeof buf - (size_t)k, "]");
  return arena_strndup(cx, buf, strlen(buf));
}

static void check_dims(Ctx *cx, Layer *l) {
  Param p[4];
  int np = op_registry[l->op]->params(l, p);
  if (!np || !l->ndims) return;
  const Param *w = &p[0];
  bool same = l->ndims == w->ndims;
  for (int i = 0; same && i < w->ndims; i++) same = l->dims[i] == w->dims[i];
  if (same) return;
  diag_at(cx, l->dims_loc, "dims %s disagree with the inferred %s weight %s (input %s)",
          dims_str(cx, l->dims, l->ndims), op_registry[l->op]->name, dims_str(cx, w->dims, w->ndims),
          shape_str(cx, &l->in, true));
}

static void check_storage(Ctx *cx, Layer *l) {
  if (l->op == OP_batchnorm) {
    if (l->tt.on) diag_at(cx, l->tt.loc, "'tt' applies to dense and conv weights, not batchnorm");
    if (l->sparse.on) diag_at(cx, l->sparse.loc, "'sparsity' applies to dense and conv weights, not batchnorm");
    return;
  }
  if (!l->tt.on || l->tt.d == 0) return;
  /* dense: modes factor (in, out); conv: they factor the channels (C, K) */
  int64_t in = l->op == OP_dense ? shape_elems(&l->in) : l->in.d[0];
  int64_t out = l->op == OP_dense ? l->u.dense.units : l->u.conv.filters;
  int64_t pi = 1, po = 1;
  for (int i = 0; i < l->tt.d; i++) {
    if (!size_mul(pi, l->tt.in_modes[i], &pi)) pi = -1;
    if (!size_mul(po, l->tt.out_modes[i], &po)) po = -1;
    if (pi < 0 || po < 0) break;
  }
  const char *what = l->op == OP_dense ? "input features" : "input channels";
  const char *what2 = l->op == OP_dense ? "units" : "filters";
  if (pi != in)
    diag_at(cx, l->tt.loc, "tt in_modes %s multiply to %lld, but the layer has %lld %s",
            dims_str(cx, l->tt.in_modes, l->tt.d), (long long)pi, (long long)in, what);
  if (po != out)
    diag_at(cx, l->tt.loc, "tt out_modes %s multiply to %lld, but the layer has %lld %s",
            dims_str(cx, l->tt.out_modes, l->tt.d), (long long)po, (long long)out, what2);
}

void check_spec(Ctx *cx, Spec *sp) {
  bool known = sp->input.rank > 0;
  Shape cur = sp->input;
  for (int i = 0; i < sp->nlayers; i++) {
    Layer *l = &sp->layers[i];
    if (l->op == OP_COUNT || l->bad) { known = false; continue; }
    const OpDef *op = op_registry[l->op];
    if (l->op == OP_softmax && i != sp->nlayers - 1)
      diag_at(cx, l->loc, "softmax must be the last layer (it is fused with the loss in "
                          "training), but %d more layer%s follow%s it", sp->nlayers - 1 - i,
              sp->nlayers - 1 - i == 1 ? "" : "s", sp->nlayers - 1 - i == 1 ? "s" : "");
    if (!known) continue;
    l->in = cur;
    if (op->spatial_only && l->in.rank != 3) {
      diag_at(cx, l->loc, "%s needs an image input (N, C, H, W), but its input is %s", op->name,
              shape_str(cx, &l->in, true));
      known = false;
      continue;
    }
    if (!op->infer(cx, l)) {   /* reported, or its keys were wrong (reported by spec.c) */
      known = false;
      continue;
    }
    l->checked = true;
    cur = l->out;
    check_dims(cx, l);
    check_storage(cx, l);
  }
  if (!known || sp->nlayers == 0) return;
  Layer *last = &sp->layers[sp->nlayers - 1];
  if (cur.rank != 1) {
    diag_at(cx, last->loc, "the model ends with %s; its last layer must give one score per class "
                           "(add a dense layer)", shape_str(cx, &cur, true));
    return;
  }
  if (sp->classes && cur.d[0] != sp->classes && sp->names_key)
    diag_at(cx, sp->classes_loc, "'%s' names %lld classes, but the last layer gives %lld outputs",
            sp->names_key, (long long)sp->classes, (long long)cur.d[0]);
  else if (sp->classes && cur.d[0] != sp->classes)
    diag_at(cx, sp->classes_loc, "classes is %lld, but the last layer gives %lld outputs",
            (long long)sp->classes, (long long)cur.d[0]);
  if (!sp->classes) sp->classes = cur.d[0];
  if (sp->classes < 2)
    diag_at(cx, last->loc, "the model gives %lld class score; cross_entropy needs at least 2 classes",
            (long long)cur.d[0]);
}

static char *param_dims(Ctx *cx, const Param *p) {
  char buf[96];
  int k = snprintf(buf, sizeof buf, "(");
  for (int i = 0; i < p->ndims; i++)
    k += snprintf(buf + k, sizeof buf - (size_t)k, "%s%lld", i ? ", " : "", (long long)p->dims[i]);
  snprintf(buf + k, sizeof buf - (size_t)k, ")");
  return arena_strndup(cx, buf, strlen(buf));
}

/* The seed's table: one row per layer, its output dims, its weight dims, its params. */
void check_print_table(Ctx *cx, const Spec *sp, FILE *out) {
  fprintf(out, "model %s: input %s, %lld classes\n\n", sp->name, shape_str(cx, &sp->input, true),
          (long long)sp->classes);
  fprintf(out, "%3s  %-10s %-11s %-18s %-26s %12s\n", "#", "name", "layer", "output", "weights", "params");
  int64_t total = 0, buffers = 0;
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    Param p[4];
    int np = op_registry[l->op]->params(l, p);
    char w[128] = "-";
    int64_t n = 0;
    for (int j = 0, k = 0; j < np; j++) {
      int64_t e = 1;
      for (int d = 0; d < p[j].ndims; d++) e *= p[j].dims[d];
      if (!p[j].trainable) { buffers += e; continue; }
      n += e;
      k += snprintf(w + k, sizeof w - (size_t)k, "%s%s", k ? " + " : "",
                    p[j].ndims == 1 ? arena_printf(cx, "%s %s", p[j].pname, param_dims(cx, &p[j]))
                                             : param_dims(cx, &p[j]));
    }
    total += n;
    const char *kind = op_registry[l->op]->name;
    if (l->implicit_flatten) kind = arena_printf(cx, "%s*", kind);
    fprintf(out, "%3d  %-10s %-11s %-18s %-26s %12lld\n", i, l->name, kind,
            shape_str(cx, &l->out, true), w, (long long)n);
  }
  fprintf(out, "\ntotal: %lld parameters", (long long)total);
  if (buffers) fprintf(out, " (+ %lld in batchnorm running statistics)", (long long)buffers);
  fputc('\n', out);
  for (int i = 0; i < sp->nlayers; i++)
    if (sp->layers[i].implicit_flatten) {
      fprintf(out, "* flattens its (C, H, W) input in (C, H, W) order first\n");
      break;
    }
}
