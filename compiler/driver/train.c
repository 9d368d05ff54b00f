/* train.c: where compiled code meets data. `teslac train` and `teslac eval` check and plan the
 * spec, emit and JIT its module, carve the plan's four memory blocks (one aligned allocation
 * each; nothing is allocated per step), initialize the weights as PyTorch does, and run the
 * generated <name>_train_step over shuffled batches of the spec's IDX data, evaluating the
 * test set with <name>_infer after every epoch. Checkpoints are safetensors in PyTorch's
 * layout and names, written atomically by the runtime.
 *
 * Batches: training drops a last partial batch (DataLoader(drop_last=True)), since batch
 * statistics are compiled for the batch size; evaluation pads the last one and counts only
 * its real rows, so every test sample counts. */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tesla_rt.h"

typedef struct TrainOpts {
  bool profile, json, optimized;
  const char *spec, *out, *init, *resume, *log, *weights, *input;
  int64_t epochs, steps, batch, threads;
  double lr;
  int64_t seed;
  bool have_seed;
} TrainOpts;

void model_free(Model *m) {
  jit_free(m->jit);
  ts_aligned_free(m->P), ts_aligned_free(m->G), ts_aligned_free(m->O), ts_aligned_free(m->A);
  ts_aligned_free(m->X), ts_aligned_free(m->Y);
  ts_pool_set_global(NULL);
  if (m->pool) ts_pool_destroy(m->pool);
}

static float *block(int64_t floats) { return ts_aligned_alloc((size_t)(floats > 0 ? floats : 1) * sizeof(float)); }

/* plan -> emit -> JIT -> memory */
int model_build(Ctx *cx, Model *m, int64_t batch, int64_t threads, bool verbose) {
  return model_build_ex(cx, m, batch, threads, verbose, false);
}

int model_build_ex(Ctx *cx, Model *m, int64_t batch, int64_t threads, bool verbose, bool profile) {
  if (!emit_supported(cx, &m->sp)) return -1;
  plan_spec(cx, &m->sp, batch, &m->pl);
  if (cx->nerrors) return -1;
  double t0 = ts_now();
  JitTimes jt = {0};
  int parts = threads > 0 ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (jit_compile(cx, &m->sp, &m->pl, profile, parts > 0 ? parts : 1, &m->jit, &jt) < 0) return -1;
  m->train_step = jit_fn(m->jit, "train_step");
  m->infer = jit_fn(m->jit, "infer");
  m->grad = jit_fn(m->jit, "grad");
  if (verbose)
    printf("compiled %s for batch %lld in %.3f s (emit %.3f, O3 + machine code %.3f, link %.3f)\n", m->sp.name,
           (long long)batch, ts_now() - t0, jt.emit, jt.opt, jt.codegen);
  m->in_elems = shape_elems(&m->sp.input);
  m->P = block(m->pl.param_block), m->G = block(m->pl.grad_block), m->O = block(m->pl.opt_block);
  m->A = block(m->pl.act_block), m->X = block(batch * m->in_elems);
  m->Y = ts_aligned_alloc((size_t)batch * sizeof(int32_t));
  if (!m->P || !m->G || !m->O || !m->A || !m->X || !m->Y) {
    diag_at(cx, (SrcLoc){0}, "out of memory for the model's blocks");
    return -1;
  }
  TsErr e;
  m->pool = ts_pool_create((int)threads, &e);
  if (!m->pool) {
    diag_at(cx, (SrcLoc){0}, "%s", e.msg);
    return -1;
  }
  ts_pool_set_global(m->pool);
  return 0;
}

/* ---- initialization: PyTorch's defaults ---------------------------------------------------- */

/* dense and conv: kaiming_uniform(a = sqrt(5)) for the weight, i.e. U(-1/sqrt(fan_in), +), and
 * U(-1/sqrt(fan_in), +) for the bias; batchnorm: weight 1, bias 0, running mean 0, var 1. */
void model_init(Model *m, uint64_t seed) {
  TsRng r;
  ts_rng_seed(&r, seed, 0x7e51a);
  for (int t = 0; t < m->pl.ntensors; t++) {
    const PlanTensor *pt = &m->pl.tensors[t];
    const Layer *l = &m->sp.layers[pt->layer];
    float *p = m->P + pt->offset;
    const char *n = pt->p.pname;
    if (l->op == OP_batchnorm) {
      float v = !strcmp(n, "weight") || !strcmp(n, "running_var") ? 1.0f : 0.0f;
      for (int64_t i = 0; i < pt->elems; i++) p[i] = v;
      continue;
    }
    int64_t fan_in = l->op == OP_dense ? shape_elems(&l->in) : l->in.d[0] * l->u.conv.kh * l->u.conv.kw;
    int64_t fan_out = l->op == OP_dense ? l->u.dense.units : l->u.conv.filters * l->u.conv.kh * l->u.conv.kw;
    double bound = 1.0 / sqrt((double)fan_in);
    if (pt->p.core) {   /* a TT core: normal, scaled so that the chain's product has the
                           variance of the dense weight's init (tt.c: tt_core_std) */
      InitKind k = l->init;
      double var = k == INIT_KAIMING_UNIFORM || k == INIT_KAIMING_NORMAL ? 2.0 / (double)fan_in
                   : k == INIT_GLOROT || k == INIT_GLOROT_NORMAL ? 2.0 / (double)(fan_in + fan_out)
                   : bound * bound / 3.0;   /* U(-bound, bound), PyTorch's default */
      double sd = tt_core_std(&m->pl.layers[pt->layer].tt, l->op == OP_conv, var);
      for (int64_t i = 0; i < pt->elems; i++)
        p[i] = k == INIT_ZEROS ? 0.0f : k == INIT_ONES ? 1.0f : (float)(ts_rng_normal(&r) * sd);
      continue;
    }
    bool weight = !strcmp(n, "weight");
    InitKind k = weight ? l->init : INIT_DEFAULT;
    for (int64_t i = 0; i < pt->elems; i++) {
      double v;
      switch (k) {
      case INIT_ZEROS: v = 0; break;
      case INIT_ONES: v = 1; break;
      case INIT_GLOROT: {
        double a = sqrt(6.0 / (double)(fan_in + fan_out));
        v = (2 * ts_rng_uniform(&r) - 1) * a;
        break;
      }
      case INIT_GLOROT_NORMAL: v = ts_rng_normal(&r) * sqrt(2.0 / (double)(fan_in + fan_out)); break;
      case INIT_KAIMING_NORMAL: v = ts_rng_normal(&r) * sqrt(2.0 / (double)fan_in); break;
      case INIT_KAIMING_UNIFORM: v = (2 * ts_rng_uniform(&r) - 1) * sqrt(6.0 / (double)fan_in); break;
      default: v = (2 * ts_rng_uniform(&r) - 1) * bound; break;
      }
      p[i] = (float)v;   /* stored_t weights: the distribution is the same either way */
    }
  }
}

/* ---- checkpoints -------------------------------------------------------------------------- */

/* PyTorch layout of tensor t into dst (transposing what the plan keeps transposed). */
/* a TT core kept rank-swapped: file (R, M, N, S) <-> stored (S, M, N, R) */
static void core_swap(const PlanTensor *pt, const float *src, float *dst, bool to_file) {
  int64_t R = pt->p.dims[0], MN = pt->p.dims[1] * pt->p.dims[2], S = pt->p.dims[3];
  for (int64_t a = 0; a < R; a++)
    for (int64_t x = 0; x < MN; x++)
      for (int64_t b = 0; b < S; b++) {
        int64_t f = (a * MN + x) * S + b, st = (b * MN + x) * R + a;
        if (to_file) dst[f] = src[st];
        else dst[st] = src[f];
      }
}

static void tensor_export(const Model *m, const PlanTensor *pt, const float *src, float *dst) {
  if (pt->p.rank_swap) {
    core_swap(pt, src, dst, true);
    return;
  }
  if (!pt->p.stored_t) {
    memcpy(dst, src, sizeof(float) * (size_t)pt->elems);
    return;
  }
  int64_t R = pt->p.dims[0], C = pt->p.dims[1];   /* PyTorch (R, C), stored (C, R) */
  for (int64_t c = 0; c < C; c++)
    for (int64_t r = 0; r < R; r++) dst[r * C + c] = src[c * R + r];
}

static void tensor_import(const Model *m, const PlanTensor *pt, const float *src, float *dst) {
  if (pt->p.rank_swap) {
    core_swap(pt, src, dst, false);
    return;
  }
  if (!pt->p.stored_t) {
    memcpy(dst, src, sizeof(float) * (size_t)pt->elems);
    return;
  }
  int64_t R = pt->p.dims[0], C = pt->p.dims[1];
  for (int64_t c = 0; c < C; c++)
    for (int64_t r = 0; r < R; r++) dst[c * R + r] = src[r * C + c];
}

static uint64_t spec_hash(const Ctx *cx) {
  uint64_t h = 1469598103934665603ull;   /* FNV-1a over the spec's text */
  for (size_t i = 0; i < cx->srclen; i++) h = (h ^ (unsigned char)cx->src[i]) * 1099511628211ull;
  return h;
}

/* weights under PyTorch's names; optimizer state under "__opt__.<slot>.<name>"; position and
 * the spec's hash in __metadata__ */
int model_save(Ctx *cx, const Model *m, const char *path, int64_t epoch, TsErr *e) {
  int n = 0, nt = m->pl.ntensors;
  int slots = m->pl.opt_block ? (m->pl.opt_block == m->pl.grad_block ? 1 : 2) : 0;
  TsStOut *out = calloc((size_t)(nt * (1 + slots)), sizeof *out);
  float *tmp = ts_malloc(sizeof(float) * (size_t)(m->pl.param_block + m->pl.opt_block + 1));
  if (!out || !tmp) {
    free(out), ts_free(tmp);
    return ts_fail(e, "out of memory writing %s", path);
  }
  char **names = calloc((size_t)(nt * (1 + slots)), sizeof(char *));
  float *w = tmp;
  for (int t = 0; t < nt; t++) {
    const PlanTensor *pt = &m->pl.tensors[t];
    tensor_export(m, pt, m->P + pt->offset, w);
    out[n] = (TsStOut){pt->name, TS_F32, pt->p.ndims, {0}, w};
    memcpy(out[n].shape, pt->p.dims, sizeof(int64_t) * (size_t)pt->p.ndims);
    n++, w += pt->elems;
  }
  for (int s = 0; s < slots; s++)
    for (int t = 0; t < nt; t++) {
      const PlanTensor *pt = &m->pl.tensors[t];
      if (pt->grad_offset < 0) continue;
      tensor_export(m, pt, m->O + (int64_t)s * m->pl.grad_block + pt->grad_offset, w);
      names[n] = arena_printf(cx, "__opt__.%s.%s", s ? "exp_avg_sq" : (m->sp.train.opt == OPT_SGD ? "momentum" : "exp_avg"), pt->name);
      out[n] = (TsStOut){names[n], TS_F32, pt->p.ndims, {0}, w};
      memcpy(out[n].shape, pt->p.dims, sizeof(int64_t) * (size_t)pt->p.ndims);
      n++, w += pt->elems;
    }
  /* PyTorch's BatchNorm state_dict also has num_batches_tracked (int64, 0-d): the batches
   * seen in training, so that model.load_state_dict(..., strict=True) takes the file */
  int64_t *tracked = calloc((size_t)m->sp.nlayers + 1, sizeof(int64_t));
  TsStOut *all = realloc(out, sizeof *out * (size_t)(nt * (1 + slots) + m->sp.nlayers));
  if (all) out = all;
  for (int i = 0; all && tracked && i < m->sp.nlayers; i++)
    if (m->sp.layers[i].op == OP_batchnorm) {
      tracked[i] = m->t;
      out[n++] = (TsStOut){arena_printf(cx, "%s.num_batches_tracked", m->sp.layers[i].name), TS_I64, 0, {0}, &tracked[i]};
    }
  char hash[32], ep[32], st[32], bt[32];
  snprintf(hash, sizeof hash, "%016llx", (unsigned long long)spec_hash(cx));
  snprintf(ep, sizeof ep, "%lld", (long long)epoch);
  snprintf(st, sizeof st, "%lld", (long long)m->t);
  snprintf(bt, sizeof bt, "%lld", (long long)m->pl.batch);
  const char *meta[] = {"format", "tesla", "model", m->sp.name, "spec_hash", hash, "epoch", ep, "step", st, "batch", bt};
  int rc = ts_st_write(path, out, n, meta, 6, e);
  free(out), free(names), free(tracked), ts_free(tmp);
  return rc;
}

/* Loads weights (and, with `opt`, optimizer state and position) from a safetensors file;
 * the first tensor that is missing or has another shape is named in the error. */
int model_load(Ctx *cx, Model *m, const char *path, bool opt, int64_t *epoch, TsErr *e) {
  TsStFile f;
  if (ts_st_read(path, &f, e) < 0) return -1;
  int rc = 0;
  /* a weights-only file (a state_dict) would otherwise be reported as a missing __opt__ tensor */
  if (opt && (!ts_st_meta(&f, "step") || !ts_st_meta(&f, "epoch"))) {
    rc = ts_fail(e, "%s: not a teslac checkpoint (no step/epoch metadata); use --init for weights", path);
    ts_st_free(&f);
    return rc;
  }
  float *tmp = ts_malloc(sizeof(float) * (size_t)(m->pl.param_block + 1));
  for (int s = 0; s <= (opt ? 2 : 0) && rc == 0; s++) {
    if (s > 0 && (m->pl.opt_block == 0 || (s == 2 && m->pl.opt_block == m->pl.grad_block))) continue;
    for (int t = 0; t < m->pl.ntensors && rc == 0; t++) {
      const PlanTensor *pt = &m->pl.tensors[t];
      if (s > 0 && pt->grad_offset < 0) continue;
      const char *name = s == 0 ? pt->name
                                : arena_printf(cx, "__opt__.%s.%s", s == 2 ? "exp_avg_sq" : (m->sp.train.opt == OPT_SGD ? "momentum" : "exp_avg"), pt->name);
      const TsTensor *tt = ts_st_find(&f, name);
      if (!tt) {
        rc = ts_fail(e, "%s: no tensor '%s' (this checkpoint is not from this spec)", path, name);
        break;
      }
      bool same = tt->ndims == pt->p.ndims;
      for (int d = 0; same && d < tt->ndims; d++) same = tt->shape[d] == pt->p.dims[d];
      if (!same) {
        char have[96] = "", want[96] = "";
        for (int d = 0; d < tt->ndims; d++) snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", d ? ", " : "", (long long)tt->shape[d]);
        for (int d = 0; d < pt->p.ndims; d++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? ", " : "", (long long)pt->p.dims[d]);
        rc = ts_fail(e, "%s: tensor '%s' is (%s) but the spec needs (%s)", path, name, have, want);
        break;
      }
      if (ts_tensor_to_f32(tt, tmp, (size_t)pt->elems, e) < 0) { rc = -1; break; }
      float *dst = s == 0 ? m->P + pt->offset : m->O + (int64_t)(s - 1) * m->pl.grad_block + pt->grad_offset;
      tensor_import(m, pt, tmp, dst);
    }
  }
  if (rc == 0 && opt) {
    m->t = atoll(ts_st_meta(&f, "step")), *epoch = atoll(ts_st_meta(&f, "epoch"));
    /* the position in the epoch is counted in batches: another batch size would misplace it */
    const char *bt = ts_st_meta(&f, "batch");
    if (bt && atoll(bt) != m->pl.batch)
      rc = ts_fail(e, "%s was trained at batch %s; resume it at that batch (--batch %s), not %lld", path, bt, bt,
                   (long long)m->pl.batch);
  }
  if (rc == 0 && opt) {   /* the tensors fit, but the spec may have changed (another lr, schedule, data) */
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)spec_hash(cx));
    const char *h = ts_st_meta(&f, "spec_hash");
    if (h && strcmp(h, hash))
      fprintf(stderr, "teslac: warning: %s was written from another version of %s (spec hash %s, now %s); "
                      "resuming with the spec as it is now\n", path, cx->path, h, hash);
  }
  ts_free(tmp);
  ts_st_free(&f);
  return rc;
}

/* ---- evaluation ----------------------------------------------------------------------------- */

void model_step_init(Model *m, TeslaStep *s) {
  memset(s, 0, sizeof *s);
  s->params = m->P, s->grads = m->G, s->opt = m->O, s->acts = m->A, s->x = m->X, s->y = m->Y;
}

/* loss and accuracy over every sample of d (the last batch padded) */
void model_eval(Model *m, const TsDataset *d, double *loss, double *acc) {
  int64_t B = m->pl.batch;
  double sum = 0;
  int64_t correct = 0;
  TeslaStep s;
  for (size_t at = 0; at < d->count; at += (size_t)B) {
    int64_t n = (int64_t)(d->count - at) < B ? (int64_t)(d->count - at) : B;
    memcpy(m->X, d->x + at * d->item_size, sizeof(float) * (size_t)(n * m->in_elems));
    memcpy(m->Y, d->y + at, sizeof(int32_t) * (size_t)n);
    if (n < B) {
      memset(m->X + n * m->in_elems, 0, sizeof(float) * (size_t)((B - n) * m->in_elems));
      memset(m->Y + n, 0, sizeof(int32_t) * (size_t)(B - n));
    }
    model_step_init(m, &s);
    s.nvalid = (int32_t)n;
    m->infer(&s);
    sum += s.loss, correct += s.correct;
  }
  *loss = sum / (double)d->count;
  *acc = (double)correct / (double)d->count;
}

/* ---- the command line ----------------------------------------------------------------------- */

static int usage(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "teslac: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nsee 'teslac %s --help'\n", cmd);
  return 2;
}

static const char train_help[] =
    "usage: teslac train SPEC [options]\n"
    "\n"
    "Compile SPEC for this CPU and train it on the spec's data; after each epoch print the\n"
    "train loss, test loss and test accuracy, and write a checkpoint.\n"
    "\n"
    "  -o CKPT           checkpoint path (default: NAME.safetensors); written atomically at\n"
    "                    the end of each epoch and of the run\n"
    "  --epochs N        epochs (default: train.epochs)\n"
    "  --steps N         stop after N optimizer steps (short, reproducible runs)\n"
    "  --batch B         batch size (default: train.batch)\n"
    "  --lr X            learning rate (default: train.lr)\n"
    "  --seed S          seed for initialization and shuffling (default: train.seed)\n"
    "  --threads T       threads (default: all cores)\n"
    "  --init W          start from the weights in W (safetensors, PyTorch state_dict names)\n"
    "  --resume CKPT     continue a run from a teslac checkpoint (weights, optimizer, position)\n"
    "  --log FILE        also write one JSON line per epoch to FILE\n"
    "  --profile         time every layer's forward and backward, the loss and the optimizer\n";

static const char eval_help[] =
    "usage: teslac eval SPEC --weights CKPT [--batch B] [--threads T]\n"
    "\n"
    "Test-set loss and accuracy of the weights in CKPT, over every test sample.\n";

static const char predict_help[] =
    "usage: teslac predict SPEC --weights CKPT [--input IDX] [--json] [--batch B] [--threads T]\n\n"
    "Classify every sample of IDX (default: the spec's test images) with the weights in CKPT.\n"
    "Prints one line per sample: its index, its class and that class's probability (its raw\n"
    "score when the spec does not end in softmax); with --json one JSON object per line:\n"
    "{\"index\": i, \"class\": c, \"scores\": [p0, p1, ...]}.\n";

static const char emit_help[] =
    "usage: teslac emit-llvm SPEC [--optimized] [--batch B]\n\n"
    "Print the LLVM IR teslac generates for SPEC: <name>_train_step (forward, loss, backward,\n"
    "optimizer), <name>_grad (the same without the optimizer) and <name>_infer. Kernels are\n"
    "calls until --optimized links them and runs O3 for this CPU.\n";

static int num_opt(const char *cmd, int argc, char **argv, int *i, double lo, double hi, bool integer, double *out) {
  const char *name = argv[*i];
  if (*i + 1 >= argc) return usage(cmd, "%s needs a value", name);
  const char *v = argv[++*i];
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (end == v || *end || errno || !isfinite(d) || d < lo || d > hi || (integer && d != floor(d))) {
    fprintf(stderr, "teslac: %s must be %s from %g to %g, got '%s'\nsee 'teslac %s --help'\n", name,
            integer ? "an integer" : "a number", lo, hi, v, cmd);
    return 2;
  }
  *out = d;
  return 0;
}

static int parse_train_opts(const char *cmd, int argc, char **argv, TrainOpts *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    double d;
    int rc = 0;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(!strcmp(cmd, "train") ? train_help : !strcmp(cmd, "eval") ? eval_help
            : !strcmp(cmd, "predict") ? predict_help : emit_help, stdout);
      return -1;
    }
#define STR_OPT(flag, field)                                             \
  if (!strcmp(a, flag)) {                                                \
    if (i + 1 >= argc) return usage(cmd, "%s needs a value", flag);      \
    o->field = argv[++i];                                                \
    continue;                                                            \
  }
#define NUM_OPT(flag, lo, hi, integer, stmt)                              \
  if (!strcmp(a, flag)) {                                                 \
    if ((rc = num_opt(cmd, argc, argv, &i, lo, hi, integer, &d))) return rc; \
    stmt;                                                                 \
    continue;                                                             \
  }
    bool train = !strcmp(cmd, "train");
    if (train && !strcmp(a, "--profile")) {
      o->profile = true;
      continue;
    }
    if (train) {
      STR_OPT("-o", out)
      STR_OPT("--init", init)
      STR_OPT("--resume", resume)
      STR_OPT("--log", log)
      NUM_OPT("--epochs", 1, 1e6, true, o->epochs = (int64_t)d)
      NUM_OPT("--steps", 1, 1e12, true, o->steps = (int64_t)d)
      NUM_OPT("--lr", 1e-12, 1e6, false, o->lr = d)
      NUM_OPT("--seed", 0, 9e15, true, (o->seed = (int64_t)d, o->have_seed = true))
    } else if (!strcmp(cmd, "emit-llvm")) {
      if (!strcmp(a, "--optimized") || !strcmp(a, "-O")) {
        o->optimized = true;
        continue;
      }
      if (!strcmp(a, "--backward")) continue;   /* train_step always holds the backward */
    } else {
      STR_OPT("--weights", weights)
      if (!strcmp(cmd, "predict")) {
        STR_OPT("--input", input)
        if (!strcmp(a, "--json")) {
          o->json = true;
          continue;
        }
      }
    }
    NUM_OPT("--batch", 1, 1 << 20, true, o->batch = (int64_t)d)
    if (strcmp(cmd, "emit-llvm")) NUM_OPT("--threads", 1, 1024, true, o->threads = (int64_t)d)
#undef STR_OPT
#undef NUM_OPT
    if (a[0] == '-' && a[1]) return usage(cmd, "unknown option '%s'", a);
    if (o->spec) return usage(cmd, "one spec at a time; '%s' is one too many", a);
    o->spec = a;
  }
  if (!o->spec) return usage(cmd, "%smissing SPEC (a model spec, e.g. specs/mlp.yaml)", "");
  if ((!strcmp(cmd, "eval") || !strcmp(cmd, "predict")) && !o->weights)
    return usage(cmd, "%s needs --weights CKPT", cmd);
  if (o->init && o->resume) return usage(cmd, "%sgive --init or --resume, not both", "");
  return 0;
}

static int load_split(Ctx *cx, const Spec *sp, const char *images, const char *labels, const char *what,
                      TsDataset *d) {
  if (!images || !labels) {
    diag_at(cx, sp->data.present ? sp->data.loc : (SrcLoc){0},
            "the spec has no %s data (data: {%s: {images: ..., labels: ...}})", what, what);
    return -1;
  }
  TsErr e;
  if (ts_dataset_load(images, labels, (float)sp->data.scale, (int)sp->classes, (size_t)shape_elems(&sp->input),
                      d, &e) < 0) {
    fprintf(stderr, "teslac: %s data: %s\n", what, e.msg);
    return -1;
  }
  return 0;
}

static double lr_at_epoch(const TrainCfg *t, double lr0, int64_t epoch) {
  switch (t->sched) {
  case SCHED_STEP: return lr0 * pow(t->gamma, (double)(epoch / t->step_size));
  case SCHED_COSINE:   /* CosineAnnealingLR's closed form: past t_max it rises again, as there */
    return t->eta_min + (lr0 - t->eta_min) * (1 + cos(M_PI * (double)epoch / (double)t->t_max)) / 2;
  default: return lr0;
  }
}

/* --profile: where the train steps' time went, per layer and phase */
static void print_profile(const Model *m) {
  int n = m->sp.nlayers;
  double total = 0;
  for (int i = 0; i < 2 * n + 2; i++) total += ts_prof_seconds(i);
  if (total <= 0 || m->t <= 0) return;
  printf("\nprofile over %lld steps: %.3f ms per step\n%3s  %-10s %-11s %10s %10s\n", (long long)m->t,
         1e3 * total / (double)m->t, "#", "name", "layer", "fwd ms", "bwd ms");
  for (int i = 0; i < n; i++)
    printf("%3d  %-10s %-11s %10.3f %10.3f\n", i, m->sp.layers[i].name, op_registry[m->sp.layers[i].op]->name,
           1e3 * ts_prof_seconds(2 * i) / (double)m->t, 1e3 * ts_prof_seconds(2 * i + 1) / (double)m->t);
  printf("     %-22s %10.3f\n     %-22s %10.3f\n", "loss", 1e3 * ts_prof_seconds(2 * n) / (double)m->t,
         "optimizer", 1e3 * ts_prof_seconds(2 * n + 1) / (double)m->t);
}

int train_main(int argc, char **argv) {
  double t_launch = ts_now();   /* for "elapsed": time to accuracy counts the compile too */
  TrainOpts o;
  int rc = parse_train_opts("train", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  Ctx cx;
  Model m = {0};
  TsDataset tr = {0}, te = {0};
  FILE *log = NULL;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  TrainCfg *tc = &m.sp.train;
  if (o.epochs) tc->epochs = o.epochs;
  if (o.lr > 0) tc->lr = o.lr;
  if (o.have_seed) tc->seed = (uint64_t)o.seed;
  int64_t batch = o.batch ? o.batch : tc->batch;
  if (load_split(&cx, &m.sp, m.sp.data.train_images, m.sp.data.train_labels, "train", &tr) < 0) goto out;
  if (m.sp.data.test_images && load_split(&cx, &m.sp, m.sp.data.test_images, m.sp.data.test_labels, "test", &te) < 0)
    goto out;
  if ((int64_t)tr.count < batch) {
    fprintf(stderr, "teslac: the training set has %zu samples, fewer than one batch of %lld\n", tr.count, (long long)batch);
    goto out;
  }
  if (model_build_ex(&cx, &m, batch, o.threads, true, o.profile) < 0) goto out;
  const char *out_path = o.out ? o.out : arena_printf(&cx, "%s.safetensors", m.sp.name);
  int64_t epoch0 = 0;
  TsErr e;
  model_init(&m, tc->seed);
  if (o.init && model_load(&cx, &m, o.init, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: --init: %s\n", e.msg);
    goto out;
  }
  if (o.resume && model_load(&cx, &m, o.resume, true, &epoch0, &e) < 0) {
    fprintf(stderr, "teslac: --resume: %s\n", e.msg);
    goto out;
  }
  if (o.log && !(log = fopen(o.log, "w"))) {
    fprintf(stderr, "teslac: cannot write the log '%s': %s\n", o.log, strerror(errno));
    goto out;
  }
  int64_t per_epoch = (int64_t)tr.count / batch;
  uint32_t *order = ts_malloc(sizeof(uint32_t) * tr.count);
  printf("training %s: %zu samples, %lld steps per epoch, %d threads\n", m.sp.name, tr.count,
         (long long)per_epoch, ts_pool_threads(m.pool));
  double t_start = ts_now();
  /* a resumed run may be at its --steps already: it takes no step (and -o gets the checkpoint) */
  bool stop = o.steps && m.t >= o.steps;
  if (stop) {
    printf("the checkpoint is at step %lld, --steps is %lld: no step to take\n", (long long)m.t, (long long)o.steps);
    if (model_save(&cx, &m, out_path, epoch0, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      ts_free(order);
      goto out;
    }
  }
  /* a resumed run continues inside its epoch: the shuffles are a function of (seed, epoch) */
  for (int64_t ep = epoch0; ep < tc->epochs && !stop; ep++) {
    for (size_t i = 0; i < tr.count; i++) order[i] = (uint32_t)i;
    if (tc->shuffle) {
      TsRng r;
      ts_rng_seed(&r, tc->seed, 1000 + (uint64_t)ep);
      ts_shuffle_u32(&r, order, tr.count);
    }
    double lr = lr_at_epoch(tc, tc->lr, ep), t0 = ts_now(), loss_sum = 0;
    int64_t correct = 0, seen = 0;
    TsProgress pr;
    ts_progress_begin(&pr, (int)ep + 1, (int)tc->epochs, (size_t)(per_epoch * batch));
    for (int64_t st = m.t - ep * per_epoch; st < per_epoch; st++) {
      if (st < 0) st = 0;
      for (int64_t b = 0; b < batch; b++) {
        uint32_t k = order[st * batch + b];
        memcpy(m.X + b * m.in_elems, tr.x + (size_t)k * tr.item_size, sizeof(float) * (size_t)m.in_elems);
        m.Y[b] = tr.y[k];
      }
      TeslaStep s;
      model_step_init(&m, &s);
      m.t++;
      s.t = (int32_t)m.t, s.lr = (float)lr, s.nvalid = (int32_t)batch;
      s.bc1 = (float)(1 - pow(tc->beta1, (double)m.t)), s.bc2 = (float)(1 - pow(tc->beta2, (double)m.t));
      s.seed = tc->seed * 0x9E3779B97F4A7C15ull + (uint64_t)m.t;
      m.train_step(&s);
      loss_sum += s.loss, correct += s.correct, seen += batch;
      ts_progress_update(&pr, (size_t)seen, loss_sum / (double)seen);
      if (o.steps && m.t >= o.steps) { stop = true; break; }
    }
    ts_progress_end(&pr);
    double dt = ts_now() - t0, tl = NAN, ta = NAN;
    if (te.count) model_eval(&m, &te, &tl, &ta);
    double trl = seen ? loss_sum / (double)seen : NAN;
    printf("epoch %lld/%lld  train loss %.4f", (long long)ep + 1, (long long)tc->epochs, trl);
    if (tc->metric_accuracy) printf("  train acc %.4f", seen ? (double)correct / (double)seen : NAN);
    if (te.count) {
      printf("  test loss %.4f", tl);
      if (tc->metric_accuracy) printf("  test acc %.4f", ta);
    }
    printf("  %.1f s  %.0f samples/s  (%.0f s elapsed)\n", dt, (double)seen / dt, ts_now() - t_launch);
    fflush(stdout);
    if (log) {   /* JSON has no NaN: what was not measured (no test data) is null */
      char tls[32] = "null", tas[32] = "null";
      if (te.count) snprintf(tls, sizeof tls, "%.6f", tl), snprintf(tas, sizeof tas, "%.6f", ta);
      fprintf(log, "{\"epoch\": %lld, \"step\": %lld, \"train_loss\": %.6f, \"test_loss\": %s, "
                   "\"test_accuracy\": %s, \"seconds\": %.3f, \"samples_per_second\": %.1f, \"lr\": %g, "
                   "\"elapsed\": %.3f}\n",
              (long long)ep + 1, (long long)m.t, trl, tls, tas, dt, (double)seen / dt, lr, ts_now() - t_launch);
      fflush(log);
    }
    if (model_save(&cx, &m, out_path, stop ? ep : ep + 1, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      ts_free(order);
      goto out;
    }
  }
  ts_free(order);
  if (o.profile) print_profile(&m);
  printf("done in %.1f s; weights in %s\n", ts_now() - t_start, out_path);
  rc = 0;
out:
  if (log) fclose(log);
  model_free(&m);
  ts_dataset_free(&tr), ts_dataset_free(&te);
  ctx_free(&cx);
  return rc;
}

/* teslac predict SPEC --weights CKPT [--input IDX] [--json] [--batch B] [--threads T]:
 * per sample its class and the softmax probabilities, in eval mode */
int predict_main(int argc, char **argv) {
  TrainOpts o;
  int rc = parse_train_opts("predict", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  const char *weights = o.weights, *input = o.input;
  bool json = o.json;
  int64_t batch = o.batch, threads = o.threads;
  Ctx cx;
  Model m = {0};
  TsIdx idx = {0};
  TsErr e;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  if (!input) input = m.sp.data.test_images;
  if (!input) {
    fprintf(stderr, "teslac: predict needs --input IDX (the spec has no test images)\n");
    goto out;
  }
  if (ts_idx_load(input, &idx, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  if ((int64_t)idx.item_size != shape_elems(&m.sp.input)) {
    fprintf(stderr, "teslac: %s: samples of %zu values, but the model's input %s has %lld\n", input,
            idx.item_size, shape_str(&cx, &m.sp.input, true), (long long)shape_elems(&m.sp.input));
    goto out;
  }
  if (model_build(&cx, &m, batch ? batch : m.sp.train.batch, threads, false) < 0) goto out;
  if (model_load(&cx, &m, weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  int64_t B = m.pl.batch, K = m.sp.classes, out_off = emit_output_offset(&m.sp, &m.pl);
  float scale = (float)m.sp.data.scale;
  for (size_t at = 0; at < idx.count; at += (size_t)B) {
    int64_t n = (int64_t)(idx.count - at) < B ? (int64_t)(idx.count - at) : B;
    for (int64_t i = 0; i < B * m.in_elems; i++)
      m.X[i] = i < n * m.in_elems ? (float)idx.data[at * idx.item_size + (size_t)i] / scale : 0.0f;
    TeslaStep s;
    model_step_init(&m, &s);
    s.y = NULL, s.nvalid = (int32_t)n;
    m.infer(&s);
    const float *p = m.A + out_off;   /* probabilities when the spec ends in softmax, else logits */
    for (int64_t b = 0; b < n; b++) {
      int64_t best = 0;
      for (int64_t k = 1; k < K; k++)
        if (p[b * K + k] > p[b * K + best]) best = k;
      if (json) {
        printf("{\"index\": %zu, \"class\": %lld, \"scores\": [", at + (size_t)b, (long long)best);
        for (int64_t k = 0; k < K; k++) printf("%s%.6g", k ? ", " : "", p[b * K + k]);
        printf("]}\n");
      } else
        printf("%zu %lld %.4f\n", at + (size_t)b, (long long)best, p[b * K + best]);
    }
  }
  rc = 0;
out:
  ts_idx_free(&idx);
  model_free(&m);
  ctx_free(&cx);
  return rc;
}

/* teslac emit-llvm SPEC [--optimized] [--batch B]: the specialized module as LLVM IR text */
int emit_llvm_main(int argc, char **argv) {
  TrainOpts o;
  int rc = parse_train_opts("emit-llvm", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  const char *spec = o.spec;
  bool optimized = o.optimized;
  int64_t batch = o.batch;
  Ctx cx;
  Spec sp;
  Plan pl;
  rc = 1;
  if (tesla_front_file(&cx, spec, &sp) < 0 || !emit_supported(&cx, &sp)) goto out;
  plan_spec(&cx, &sp, batch ? batch : sp.train.batch, &pl);
  if (cx.nerrors) goto out;
  Cg g;
  cg_init(&g, sp.name);
  emit_module(&g, &sp, &pl);
  if (optimized) {
    LLVMTargetMachineRef tm = cg_host_machine(&cx);
    if (!tm || cg_optimize(&cx, &g, tm) < 0) {
      if (tm) LLVMDisposeTargetMachine(tm);
      cg_dispose(&g);
      goto out;
    }
    LLVMDisposeTargetMachine(tm);
  }
  char *ir = LLVMPrintModuleToString(g.mod);
  fputs(ir, stdout);
  LLVMDisposeMessage(ir);
  cg_dispose(&g);
  rc = 0;
out:
  ctx_free(&cx);
  return rc;
}

int eval_main(int argc, char **argv) {
  TrainOpts o;
  int rc = parse_train_opts("eval", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  Ctx cx;
  Model m = {0};
  TsDataset te = {0};
  rc = 1;
  TsErr e;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  if (load_split(&cx, &m.sp, m.sp.data.test_images, m.sp.data.test_labels, "test", &te) < 0) goto out;
  if (model_build(&cx, &m, o.batch ? o.batch : m.sp.train.batch, o.threads, false) < 0) goto out;
  if (model_load(&cx, &m, o.weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  double loss, acc;
  model_eval(&m, &te, &loss, &acc);
  printf("test loss %.4f  test accuracy %.4f  (%zu samples)\n", loss, acc, te.count);
  rc = 0;
out:
  model_free(&m);
  ts_dataset_free(&te);
  ctx_free(&cx);
  return rc;
}
