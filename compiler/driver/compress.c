/* compress.c: `teslac compress`, from a trained dense model to its tensor-train spec. It checks
 * and plans the TT spec (front.c, plan.c) to learn each TT layer's modes and ranks, reads the
 * dense weights, runs TT-SVD (tt_svd.c) on every such layer's weight rearranged so that core k
 * of the sweep is the file's `<layer>.core.<k>`, copies every other tensor the spec has, and
 * writes one safetensors file (atomically) that `teslac train SPEC --init` and `teslac eval`
 * read. Exit status as everywhere: 1 the spec or the data is wrong, 2 the command line is.
 *
 * The tensor a weight becomes (TTPlan: input modes m, output modes n, both row-major):
 *   dense W (N, M), padded with zeros to (Np, Mp): T[(i_0 j_0)(i_1 j_1)..] = W[j, i], q_k = m_k n_k
 *   conv  W (K, C, kh, kw), C and K padded:       T[(x y)(c_0 s_0)..] = W[s, c, x, y],
 *                                                 q_0 = kh kw, q_{k+1} = m_k n_k
 * and core k (r_k, q_k, r_{k+1}) is the file's (r_k, m_k, n_k, r_{k+1}) (conv: core.0 is
 * (1, kh, kw, r_0)), since q_k's index is i_k n_k + j_k. */
#include "cmd.h"
#include "tesla_rt.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_DATA = 1, EXIT_USAGE = 2 };

typedef struct CompressOpts {
  const char *spec, *weights, *out;
  const char *eps_arg;  /* --eps as given: read below, in (0, 1) */
  double eps;           /* < 0: not given */
  int64_t rank;         /* 0: not given */
  int64_t batch;        /* 0: the spec's */
} CompressOpts;

#define F(field) offsetof(CompressOpts, field)
static const CmdOpt compress_opts[] = {
    {"--weights", NULL, ARG_STR, "DENSE", 0, 0, F(weights), "the dense weights (safetensors, PyTorch state_dict names; any float dtype)"},
    {"-o", NULL, ARG_STR, "OUT", 0, 0, F(out), "the output (safetensors, written atomically)"},
    {"--eps", NULL, ARG_STR, "E", 0, 0, F(eps_arg), "the smallest ranks with ||W - TT(W)||_F <= E ||W||_F, 0 < E < 1"},
    {"--rank", NULL, ARG_INT, "R", 1, 4096, F(rank), "every rank R (1 to 4096), clamped by the unfolding bounds\n(neither: the spec's planned ranks, so that 'teslac train SPEC --init OUT'\nand 'teslac eval SPEC --weights OUT' take the file as it is)"},
    {"--batch", NULL, ARG_INT, "B", 1, 1 << 20, F(batch), "plan at batch B, as 'teslac train --batch B' will (the modes may depend on it)"},
    {NULL}};
#undef F

const CmdDef cmd_compress = {
    .name = "compress", .args = "SPEC --weights DENSE -o OUT [--eps E | --rank R] [--batch B]",
    .summary = "dense weights to the tensor trains SPEC plans (TT-SVD)",
    .about = "Convert dense weights into the tensor trains SPEC plans, by TT-SVD (Oseledets 2011): for\n"
             "every layer SPEC stores as a tensor train (tt:), read <layer>.weight from DENSE, (N, M) for\n"
             "dense and (K, C, kh, kw) for conv, and write its cores <layer>.core.<k> at the planned modes;\n"
             "copy every other tensor SPEC has (biases, batchnorm, the layers kept dense) from DENSE.\n"
             "Prints per layer the modes, the ranks, the weight's parameters before and after, the relative\n"
             "error ||W - TT(W)||_F / ||W||_F and the time.",
    .pos = "SPEC", .pos_off = offsetof(CompressOpts, spec),
    .pos_hint = "SPEC (the tensor-train spec, e.g. specs/fashion_cnn_tt.yaml)",
    .opts = compress_opts,
    .quiet = "no per-layer table or summary line",
    .run = compress_main};

/* -1: --help printed; 0: ok; 2: usage error reported */
static int parse_opts(int argc, char **argv, CompressOpts *o) {
  *o = (CompressOpts){.eps = -1};
  int rc = cmd_parse(&cmd_compress, argc, argv, o);
  if (rc) return rc;
  if (o->eps_arg) {
    o->eps = cmd_decimal(o->eps_arg, false) ? strtod(o->eps_arg, NULL) : NAN;
    if (!(o->eps > 0 && o->eps < 1)) return cmd_usage("compress", "--eps must be a number in (0, 1), got '%s'", o->eps_arg);
  }
  if (!o->weights) return cmd_usage("compress", "%scompress needs --weights DENSE (the dense weights to convert)", "");
  if (!o->out) return cmd_usage("compress", "%scompress needs -o OUT (where to write the tensor trains)", "");
  if (o->eps_arg && o->rank) return cmd_usage("compress", "%sgive --eps or --rank, not both", "");
  return 0;
}

/* "[4, 4, 8, 8]" */
static char *list_str(Ctx *cx, const int64_t *v, int n) {
  char buf[256] = "[";
  for (int i = 0; i < n; i++)
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld", i ? ", " : "", (long long)v[i]);
  snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "]");
  return arena_printf(cx, "%s", buf);
}

static char *shape_of(Ctx *cx, const int64_t *d, int n) {
  char buf[160] = "(";
  for (int i = 0; i < n; i++)
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld", i ? ", " : "", (long long)d[i]);
  snprintf(buf + strlen(buf), sizeof buf - strlen(buf), ")");
  return arena_printf(cx, "%s", buf);
}

/* What compress writes: tensors pointing at buffers it owns (freed at the end) */
typedef struct Out {
  TsStOut *t;
  int n, cap;
  void **owned;
  int nowned;
} Out;

static int out_add(Out *o, TsStOut t, void *owned) {
  if (o->n == o->cap) {
    int cap = o->cap ? 2 * o->cap : 32;
    TsStOut *nt = realloc(o->t, sizeof *nt * (size_t)cap);
    void **no = realloc(o->owned, sizeof *no * (size_t)cap);
    if (nt) o->t = nt;
    if (no) o->owned = no;
    if (!nt || !no) return -1;
    o->cap = cap;
  }
  o->t[o->n++] = t;
  if (owned) o->owned[o->nowned++] = owned;
  return 0;
}

/* one TT layer's totals, for the summary */
typedef struct LayerSum { int64_t before, after; bool differs; } LayerSum;

/* <layer>.weight from f -> TT-SVD at the plan's modes -> <layer>.core.<k> into out */
static int compress_layer(Ctx *cx, const CompressOpts *o, const Layer *l, const TTPlan *t,
                          const TsStFile *f, Out *out, LayerSum *sum) {
  bool conv = l->op == OP_conv;
  const char *wname = arena_printf(cx, "%s.weight", l->name);
  int64_t want[4], nd = conv ? 4 : 2, S = conv ? l->u.conv.kh * l->u.conv.kw : 1;
  if (conv) want[0] = t->N, want[1] = t->M, want[2] = l->u.conv.kh, want[3] = l->u.conv.kw;
  else want[0] = t->N, want[1] = t->M;
  const TsTensor *src = ts_st_find(f, wname);
  if (!src) {
    bool has_core = ts_st_find(f, arena_printf(cx, "%s.core.0", l->name)) != NULL;
    fprintf(stderr, "teslac: %s: no tensor '%s' (layer %s is a tensor train in %s; compress needs its "
                    "dense weight %s)%s\n", o->weights, wname, l->name, o->spec, shape_of(cx, want, (int)nd),
            has_core ? "; the file has its cores already" : "");
    return -1;
  }
  bool same = src->ndims == nd;
  for (int k = 0; same && k < nd; k++) same = src->shape[k] == want[k];
  if (!same) {
    fprintf(stderr, "teslac: %s: tensor '%s' is %s but layer %s of %s needs the dense %s %s\n", o->weights,
            wname, shape_of(cx, src->shape, src->ndims), l->name, o->spec, conv ? "(K, C, kh, kw)" : "(N, M)",
            shape_of(cx, want, (int)nd));
    return -1;
  }
  int64_t elems = t->N * t->M * S, numel = t->Np * t->Mp * S;
  float *W = malloc(sizeof(float) * (size_t)elems);
  double *T = calloc((size_t)numel, sizeof(double));
  int64_t *ci = malloc(sizeof(int64_t) * (size_t)(t->Mp + t->Np)), *cj = ci ? ci + t->Mp : NULL;
  int rc = -1;
  float *cores[TT_MAXD + 1] = {0};
  TsErr e;
  if (!W || !T || !ci) {
    fprintf(stderr, "teslac: out of memory converting '%s' (%lld values)\n", wname, (long long)numel);
    goto done;
  }
  if (ts_tensor_to_f32(src, W, (size_t)elems, &e) < 0) {
    fprintf(stderr, "teslac: %s: %s\n", o->weights, e.msg);
    goto done;
  }
  for (int64_t i = 0; i < elems; i++)
    if (!isfinite(W[i])) {
      fprintf(stderr, "teslac: %s: tensor '%s' holds a non-finite value (at flat index %lld)\n", o->weights,
              wname, (long long)i);
      goto done;
    }
  /* where input index i and output index j land in T: digit k of i (over m) and of j (over n)
   * make q_k's index i_k n_k + j_k, of stride q_{k+1} .. q_{d-1} */
  int d = t->d;
  int64_t stride[TT_MAXD];
  for (int k = d - 1; k >= 0; k--) stride[k] = k == d - 1 ? 1 : stride[k + 1] * t->m[k + 1] * t->n[k + 1];
  for (int64_t i = 0; i < t->Mp; i++) {
    int64_t rem = i, at = 0;
    for (int k = d - 1; k >= 0; k--) at += rem % t->m[k] * t->n[k] * stride[k], rem /= t->m[k];
    ci[i] = at;
  }
  for (int64_t j = 0; j < t->Np; j++) {
    int64_t rem = j, at = 0;
    for (int k = d - 1; k >= 0; k--) at += rem % t->n[k] * stride[k], rem /= t->n[k];
    cj[j] = at;
  }
  int64_t PQ = t->Mp * t->Np;   /* the channel modes' span: the spatial mode's stride */
  for (int64_t j = 0; j < t->N; j++)
    for (int64_t i = 0; i < t->M; i++)
      for (int64_t xy = 0; xy < S; xy++) T[xy * PQ + ci[i] + cj[j]] = W[(j * t->M + i) * S + xy];

  /* the tensor's modes and the ranks asked for */
  int nq = conv ? d + 1 : d;
  int64_t q[TT_MAXD + 1], maxr[TT_MAXD + 1], ranks[TT_MAXD + 2], planned[TT_MAXD + 1];
  if (conv) q[0] = S;
  for (int k = 0; k < d; k++) q[k + conv] = t->m[k] * t->n[k];
  for (int c = 0; c < nq - 1; c++) planned[c] = conv ? t->r[c] : t->r[c + 1];
  for (int c = 0; c < nq - 1; c++) maxr[c] = o->rank ? o->rank : planned[c];
  double rel = 0, t0 = ts_now();
  char err[256];
  if (tt_svd(T, nq, q, o->eps, o->eps > 0 ? NULL : maxr, cores, ranks, &rel, err, sizeof err) < 0) {
    fprintf(stderr, "teslac: layer %s: TT-SVD of '%s': %s\n", l->name, wname, err);
    goto done;
  }
  double ms = (ts_now() - t0) * 1e3;

  int64_t after = 0;
  for (int k = 0; k < nq; k++) {
    TsStOut c = {arena_printf(cx, "%s.core.%d", l->name, k), TS_F32, 4, {0}, cores[k]};
    if (conv && k == 0) c.shape[0] = 1, c.shape[1] = l->u.conv.kh, c.shape[2] = l->u.conv.kw, c.shape[3] = ranks[1];
    else {
      int mk = k - conv;
      c.shape[0] = ranks[k], c.shape[1] = t->m[mk], c.shape[2] = t->n[mk], c.shape[3] = ranks[k + 1];
    }
    after += c.shape[0] * c.shape[1] * c.shape[2] * c.shape[3];
    if (out_add(out, c, cores[k]) < 0) {
      fprintf(stderr, "teslac: out of memory\n");
      for (int j = k; j < nq; j++) free(cores[j]);
      goto done;
    }
    cores[k] = NULL;
  }
  bool differs = false;
  for (int c = 0; c < nq - 1; c++) differs |= ranks[c + 1] != planned[c];
  const char *pad = "";
  if (t->Mp != t->M || t->Np != t->N) {
    const char *pm = arena_printf(cx, "%lld -> %lld %s", (long long)t->M, (long long)t->Mp, conv ? "channels" : "inputs");
    const char *pn = arena_printf(cx, "%lld -> %lld %s", (long long)t->N, (long long)t->Np, conv ? "filters" : "outputs");
    pad = arena_printf(cx, " (padded: %s%s%s)", t->Mp != t->M ? pm : "", t->Mp != t->M && t->Np != t->N ? ", " : "",
                       t->Np != t->N ? pn : "");
  }
  if (cmd_verbosity >= 0)
    printf("layer %s (%s%s): in_modes %s, out_modes %s%s, ranks %s: %lld -> %lld weight parameters (%.1fx), "
         "relative error %.4g, %.1f ms\n",
         l->name, conv ? "conv " : "dense", conv ? arena_printf(cx, "%lldx%lld", (long long)l->u.conv.kh, (long long)l->u.conv.kw) : "",
         list_str(cx, t->m, d), list_str(cx, t->n, d), pad, list_str(cx, ranks + 1, nq - 1), (long long)elems,
         (long long)after, (double)elems / (double)after, rel, ms);
  if (differs) {
    printf("  note: %s plans ranks %s for layer %s; 'teslac train --init %s' needs a spec with these ranks",
           o->spec, list_str(cx, planned, nq - 1), l->name, o->out);
    if (*pad)
      printf(", and its modes are padded, which in_modes/out_modes cannot say: use a spec whose plan has "
             "these modes and ranks\n");
    else
      printf(". In the layer put:\n    tt: {in_modes: %s, out_modes: %s, ranks: %s}\n", list_str(cx, t->m, d),
             list_str(cx, t->n, d), list_str(cx, ranks + 1, nq - 1));
  }
  sum->before = elems, sum->after = after, sum->differs = differs;
  rc = 0;
done:
  free(W), free(T), free(ci);
  for (int k = 0; k <= TT_MAXD; k++) free(cores[k]);
  return rc;
}

/* copies tensor pt (not a TT core) from f under its name, as f32, after checking its shape */
static int copy_tensor(Ctx *cx, const CompressOpts *o, const PlanTensor *pt, const TsStFile *f, Out *out) {
  const TsTensor *src = ts_st_find(f, pt->name);
  if (!src) {
    fprintf(stderr, "teslac: %s: no tensor '%s' (%s needs it, %s)\n", o->weights, pt->name, o->spec,
            shape_of(cx, pt->p.dims, pt->p.ndims));
    return -1;
  }
  bool same = src->ndims == pt->p.ndims;
  for (int k = 0; same && k < src->ndims; k++) same = src->shape[k] == pt->p.dims[k];
  if (!same) {
    fprintf(stderr, "teslac: %s: tensor '%s' is %s but %s needs %s\n", o->weights, pt->name,
            shape_of(cx, src->shape, src->ndims), o->spec, shape_of(cx, pt->p.dims, pt->p.ndims));
    return -1;
  }
  float *v = malloc(sizeof(float) * (size_t)(pt->elems ? pt->elems : 1));
  TsErr e;
  if (!v) {
    fprintf(stderr, "teslac: out of memory copying '%s'\n", pt->name);
    return -1;
  }
  if (ts_tensor_to_f32(src, v, (size_t)pt->elems, &e) < 0) {
    fprintf(stderr, "teslac: %s: %s\n", o->weights, e.msg);
    free(v);
    return -1;
  }
  TsStOut t = {pt->name, TS_F32, pt->p.ndims, {0}, v};
  memcpy(t.shape, pt->p.dims, sizeof(int64_t) * (size_t)pt->p.ndims);
  if (out_add(out, t, v) < 0) {
    free(v);
    fprintf(stderr, "teslac: out of memory\n");
    return -1;
  }
  return 0;
}

/* check + plan SPEC -> read DENSE -> TT-SVD per TT layer, copy the rest -> write OUT */
int compress_main(int argc, char **argv) {
  CompressOpts o;
  int rc = parse_opts(argc, argv, &o);
  if (rc) return rc < 0 ? EXIT_OK : rc;
  Ctx cx;
  Spec sp;
  if (tesla_front_file(&cx, o.spec, &sp) < 0) {
    ctx_free(&cx);
    return EXIT_DATA;
  }
  Plan pl;
  plan_spec(&cx, &sp, o.batch ? o.batch : sp.train.batch, &pl);
  if (cx.nerrors) {
    ctx_free(&cx);
    return EXIT_DATA;
  }
  int ntt = 0;
  for (int i = 0; i < sp.nlayers; i++) ntt += pl.layers[i].storage == ST_TT;
  if (!ntt) {
    fprintf(stderr, "teslac: %s plans no layer as a tensor train, so there is nothing to compress; give a "
                    "dense or conv layer 'tt:' (e.g. tt: {rank: 8})\n", o.spec);
    ctx_free(&cx);
    return EXIT_DATA;
  }
  TsStFile f;
  TsErr e;
  if (ts_st_read(o.weights, &f, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    ctx_free(&cx);
    return EXIT_DATA;
  }
  Out out = {0};
  int64_t before = 0, after = 0;
  int ndiff = 0;
  rc = EXIT_OK;
  /* the plan's tensors in its order, each TT layer's cores where its first core stands */
  for (int i = 0; i < pl.ntensors && rc == EXIT_OK; i++) {
    const PlanTensor *pt = &pl.tensors[i];
    const Layer *l = &sp.layers[pt->layer];
    if (pl.layers[pt->layer].storage == ST_TT && pt->p.core) {
      if (pt->p.core != 1) continue;
      LayerSum s;
      if (compress_layer(&cx, &o, l, &pl.layers[pt->layer].tt, &f, &out, &s) < 0) rc = EXIT_DATA;
      else before += s.before, after += s.after, ndiff += s.differs;
    } else if (copy_tensor(&cx, &o, pt, &f, &out) < 0)
      rc = EXIT_DATA;
  }
  /* PyTorch's batchnorm counter, when the input has it (teslac ignores it when reading) */
  for (int i = 0; i < sp.nlayers && rc == EXIT_OK; i++) {
    if (sp.layers[i].op != OP_batchnorm) continue;
    const char *name = arena_printf(&cx, "%s.num_batches_tracked", sp.layers[i].name);
    const TsTensor *src = ts_st_find(&f, name);
    if (!src || src->dtype != TS_I64 || src->nbytes != 8) continue;
    TsStOut t = {name, TS_I64, src->ndims, {0}, src->data};
    memcpy(t.shape, src->shape, sizeof(int64_t) * (size_t)src->ndims);
    if (out_add(&out, t, NULL) < 0) rc = EXIT_DATA;
  }
  if (rc == EXIT_OK) {
    const char *how = o.eps > 0 ? arena_printf(&cx, "eps %g", o.eps)
                      : o.rank ? arena_printf(&cx, "rank %lld", (long long)o.rank) : "planned ranks";
    const char *meta[] = {"format", "tesla", "model", sp.name, "compressed_from", o.weights, "tt_svd", how};
    if (ts_st_write(o.out, out.t, out.n, meta, 4, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      rc = EXIT_DATA;
    } else {
      if (cmd_verbosity >= 0)
        printf("wrote %s: %d tensors; the tt layers' weights %lld -> %lld parameters (%.1fx)\n", o.out, out.n,
             (long long)before, (long long)after, after ? (double)before / (double)after : 0.0);
      if (ndiff)
        printf("%d layer%s other ranks than %s plans: 'teslac train %s --init %s' will refuse the file until "
               "the spec has them (see the note%s above)\n", ndiff, ndiff > 1 ? "s have" : " has", o.spec, o.spec,
               o.out, ndiff > 1 ? "s" : "");
    }
  }
  for (int i = 0; i < out.nowned; i++) free(out.owned[i]);
  free(out.t), free(out.owned);
  ts_st_free(&f);
  ctx_free(&cx);
  return rc;
}
