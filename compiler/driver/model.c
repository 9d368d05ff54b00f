/* model.c: a compiled, runnable model (model.h): plan -> emit -> JIT -> the plan's four memory
 * blocks (one aligned allocation each; nothing is allocated per step), PyTorch's default
 * initialization (tensor-train cores scaled so that the chain has the dense init's variance),
 * evaluation over a dataset, and checkpoints: safetensors in PyTorch's layout and names (TT
 * cores as (r, m, n, r')), optimizer state and position, written atomically by the runtime.
 * The commands in this folder and the tests drive it.
 *
 * Batches: evaluation pads the last one and counts only its real rows, so every test sample
 * counts. */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>



void model_free(Model *m) {
  jit_free(m->jit);
  ts_aligned_free(m->P), ts_aligned_free(m->G), ts_aligned_free(m->O), ts_aligned_free(m->A);
  ts_aligned_free(m->X), ts_aligned_free(m->Y);
  ts_pool_set_global(NULL);
  if (m->pool) ts_pool_destroy(m->pool);
}

static float *block(int64_t floats) { return ts_aligned_alloc((size_t)(floats > 0 ? floats : 1) * sizeof(float)); }

int model_alloc(Ctx *cx, Model *m) {
  int64_t batch = m->pl.batch;
  m->in_elems = shape_elems(&m->sp.input);
  m->P = block(m->pl.param_block), m->G = block(m->pl.grad_block), m->O = block(m->pl.opt_block);
  m->A = block(m->pl.act_block), m->X = block(batch * m->in_elems);
  m->Y = ts_aligned_alloc((size_t)batch * sizeof(int32_t));
  if (!m->P || !m->G || !m->O || !m->A || !m->X || !m->Y) {
    diag_at(cx, (SrcLoc){0}, "out of memory for the model's blocks");
    return -1;
  }
  return 0;
}

/* plan -> emit -> JIT -> memory */
int model_build(Ctx *cx, Model *m, int64_t batch, int64_t threads, FILE *say) {
  return model_build_ex(cx, m, batch, threads, say, false);
}

int model_build_ex(Ctx *cx, Model *m, int64_t batch, int64_t threads, FILE *say, bool profile) {
  if (!emit_supported(cx, &m->sp)) return -1;
  plan_spec(cx, &m->sp, batch, &m->pl);
  if (cx->nerrors) return -1;
  m->pl.dist = m->dist, m->pl.dist_sync_bn = m->sync_bn;
  double t0 = ts_now();
  JitTimes jt = {0};
  int parts = threads > 0 ? (int)threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (jit_compile(cx, &m->sp, &m->pl, profile, parts > 0 ? parts : 1, &m->jit, &jt) < 0) return -1;
  m->train_step = jit_fn(m->jit, "train_step");
  m->infer = jit_fn(m->jit, "infer");
  m->grad = jit_fn(m->jit, "grad");
  if (say)
    fprintf(say, jt.cached ? "compiled %s for batch %lld in %.3f s (emit %.3f, from the compile cache %.3f, link %.3f)\n"
                     : "compiled %s for batch %lld in %.3f s (emit %.3f, O3 + machine code %.3f, link %.3f)\n",
           m->sp.name, (long long)batch, ts_now() - t0, jt.emit, jt.opt, jt.codegen);
  if (model_alloc(cx, m) < 0) return -1;
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
    if (k == INIT_DEFAULT || k == INIT_GLOROT || k == INIT_KAIMING_UNIFORM) {   /* U(-a, a), in one loop */
      ts_rng_uniform_fill(&r, p, pt->elems, k == INIT_GLOROT ? sqrt(6.0 / (double)(fan_in + fan_out))
                                            : k == INIT_KAIMING_UNIFORM ? sqrt(6.0 / (double)fan_in) : bound);
      continue;
    }
    for (int64_t i = 0; i < pt->elems; i++) {
      double v;
      switch (k) {
      case INIT_ZEROS: v = 0; break;
      case INIT_ONES: v = 1; break;
      case INIT_GLOROT_NORMAL: v = ts_rng_normal(&r) * sqrt(2.0 / (double)(fan_in + fan_out)); break;
      default: v = ts_rng_normal(&r) * sqrt(2.0 / (double)fan_in); break;   /* INIT_KAIMING_NORMAL */
      }
      p[i] = (float)v;   /* stored_t weights: the distribution is the same either way */
    }
  }
  sparse_reset(m);   /* pruned weights start with every entry kept */
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

int model_tensor_get(const Model *m, const PlanTensor *pt, float *dst) {
  if (!pt->p.sparse) {
    tensor_export(m, pt, m->P + pt->offset, dst);
    return 0;
  }
  const SparsePlan *s = &m->pl.layers[pt->layer].sp;   /* the matrix view (R, C) is PyTorch's order */
  int64_t nnz = sparse_nnz(m, pt->layer);
  int32_t *crow = malloc(sizeof(int32_t) * (size_t)(s->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)(nnz ? nnz : 1));
  float *vals = malloc(sizeof(float) * (size_t)(nnz ? nnz : 1));
  int rc = crow && col && vals ? 0 : -1;
  memset(dst, 0, sizeof(float) * (size_t)(s->R * s->C));
  if (rc == 0) {
    sparse_export(m, pt->layer, crow, col, vals, -1);
    for (int64_t r = 0; r < s->R; r++)
      for (int32_t k = crow[r]; k < crow[r + 1]; k++) dst[r * s->C + col[k]] = vals[k];
  }
  free(crow), free(col), free(vals);
  return rc;
}

/* the batch a checkpoint records: the global one (every rank's rows when data-parallel) */
static int64_t global_batch(const Model *m) { return m->pl.batch * (m->dist > 1 ? m->dist : 1); }

static uint64_t spec_hash(const Ctx *cx) { return ts_fnv1a(cx->src, cx->srclen, TS_FNV1A_TESLA); }

/* ts_st_write_fill's fill: entry i's tensor, read from its place in the model, in PyTorch's
 * layout */
typedef struct SaveFill { const PlanTensor **pt; const float **src; } SaveFill;
static void export_fill(void *arg, int i, void *dst) {
  const SaveFill *f = arg;
  tensor_export(NULL, f->pt[i], f->src[i], dst);
}

/* weights under PyTorch's names; optimizer state under "__opt__.<slot>.<name>"; position and
 * the spec's hash in __metadata__ */
int model_save(Ctx *cx, const Model *m, const char *path, int64_t epoch, TsErr *e) {
  int n = 0, nt = m->pl.ntensors;
  int slots = m->pl.opt_block ? (m->pl.opt_block == m->pl.grad_block ? 1 : 2) : 0;
  /* a pruned weight takes three entries (values, crow_indices, col_indices), its optimizer
   * state one per slot (values, on the weight's pattern) */
  int cap = nt * (3 + slots) + m->sp.nlayers + 1;
  TsStOut *out = calloc((size_t)cap, sizeof *out);
  SaveFill fill = {calloc((size_t)cap, sizeof *fill.pt), calloc((size_t)cap, sizeof *fill.src)};
  /* dense tensors are converted to PyTorch's layout as they are written (export_fill); only
   * the pruned weights' values (and their optimizer state) are gathered here first */
  int64_t sparse_elems = 0;
  for (int t = 0; t < nt; t++)
    if (m->pl.tensors[t].p.sparse) sparse_elems += sparse_nnz(m, m->pl.tensors[t].layer) * (1 + slots);
  float *tmp = ts_malloc(sizeof(float) * (size_t)(sparse_elems + 1));
  int32_t **ints = calloc((size_t)nt * 2 + 1, sizeof(int32_t *));
  int nints = 0;
  int64_t *tracked = calloc((size_t)m->sp.nlayers + 1, sizeof(int64_t));
  if (!out || !tmp || !ints || !tracked || !fill.pt || !fill.src) {
    free(out), ts_free(tmp), free(ints), free(tracked), free(fill.pt), free(fill.src);
    return ts_fail(e, "out of memory writing %s", path);
  }
  float *w = tmp;
  int rc = 0;
  for (int t = 0; t < nt; t++) {
    const PlanTensor *pt = &m->pl.tensors[t];
    if (pt->p.sparse) {
      const SparsePlan *sp = &m->pl.layers[pt->layer].sp;
      int64_t nnz = sparse_nnz(m, pt->layer);
      int32_t *crow = malloc(sizeof(int32_t) * (size_t)(sp->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)(nnz ? nnz : 1));
      ints[nints++] = crow, ints[nints++] = col;
      if (!crow || !col) { rc = ts_fail(e, "out of memory writing %s", path); goto done; }
      sparse_export(m, pt->layer, crow, col, w, -1);
      out[n++] = (TsStOut){arena_printf(cx, "%s.values", pt->name), TS_F32, 1, {nnz}, w};
      out[n++] = (TsStOut){arena_printf(cx, "%s.crow_indices", pt->name), TS_I32, 1, {sp->R + 1}, crow};
      out[n++] = (TsStOut){arena_printf(cx, "%s.col_indices", pt->name), TS_I32, 1, {nnz}, col};
      w += nnz;
      continue;
    }
    out[n] = (TsStOut){pt->name, TS_F32, pt->p.ndims, {0}, NULL};   /* made by export_fill */
    memcpy(out[n].shape, pt->p.dims, sizeof(int64_t) * (size_t)pt->p.ndims);
    fill.pt[n] = pt, fill.src[n] = m->P + pt->offset;
    n++;
  }
  for (int s = 0; s < slots; s++)
    for (int t = 0; t < nt; t++) {
      const PlanTensor *pt = &m->pl.tensors[t];
      if (pt->grad_offset < 0) continue;
      const char *nm = arena_printf(cx, "__opt__.%s.%s", s ? "exp_avg_sq" : (m->sp.train.opt == OPT_SGD ? "momentum" : "exp_avg"), pt->name);
      if (pt->p.sparse) {
        int64_t nnz = sparse_nnz(m, pt->layer);
        sparse_export(m, pt->layer, NULL, NULL, w, s);
        out[n++] = (TsStOut){arena_printf(cx, "%s.values", nm), TS_F32, 1, {nnz}, w};
        w += nnz;
        continue;
      }
      out[n] = (TsStOut){nm, TS_F32, pt->p.ndims, {0}, NULL};
      memcpy(out[n].shape, pt->p.dims, sizeof(int64_t) * (size_t)pt->p.ndims);
      fill.pt[n] = pt, fill.src[n] = m->O + (int64_t)s * m->pl.grad_block + pt->grad_offset;
      n++;
    }
  /* PyTorch's BatchNorm state_dict also has num_batches_tracked (int64, 0-d): the batches
   * seen in training, so that model.load_state_dict(..., strict=True) takes the file */
  for (int i = 0; i < m->sp.nlayers; i++)
    if (m->sp.layers[i].op == OP_batchnorm) {
      tracked[i] = m->t;
      out[n++] = (TsStOut){arena_printf(cx, "%s.num_batches_tracked", m->sp.layers[i].name), TS_I64, 0, {0}, &tracked[i]};
    }
  char hash[32], ep[32], st[32], bt[32], pt_[32], wb[40], we[32], ww[32], sd[32], lr[40], vs[40];
  snprintf(hash, sizeof hash, "%016llx", (unsigned long long)spec_hash(cx));
  snprintf(ep, sizeof ep, "%lld", (long long)epoch);
  snprintf(st, sizeof st, "%lld", (long long)m->t);
  snprintf(bt, sizeof bt, "%lld", (long long)global_batch(m));   /* the global batch */
  snprintf(pt_, sizeof pt_, "%lld", (long long)m->prune_total);
  const char **meta = arena_alloc(cx, sizeof(char *) * (size_t)(2 * (12 + nt)));   /* a shape per tensor at most */
  const char *head[] = {"format", "tesla", "model", m->sp.name, "spec_hash", hash, "epoch", ep, "step", st, "batch", bt};
  memcpy(meta, head, sizeof head);
  int nmeta = 6;
  /* what a faithful resume needs besides the position: the seed (shuffles, dropout, the
   * validation split), the base lr, the validation split */
  snprintf(sd, sizeof sd, "%llu", (unsigned long long)m->sp.train.seed);
  snprintf(lr, sizeof lr, "%.17g", m->sp.train.lr);
  snprintf(vs, sizeof vs, "%.17g", m->sp.data.val_split);
  const char *run[] = {"seed", sd, "lr", lr, "validation_split", vs};
  memcpy(meta + 2 * nmeta, run, sizeof run);
  nmeta += 3;
  bool pruned = false;
  for (int t = 0; t < nt; t++) pruned |= m->pl.tensors[t].p.sparse;
  /* the schedule's length in steps (resume keeps it) */
  if (pruned && m->prune_total > 0) meta[2 * nmeta] = "prune_total_steps", meta[2 * nmeta + 1] = pt_, nmeta++;
  if (m->watch.best_epoch > 0) {   /* the monitor's best so far (train.c's early stopping, --save-best) */
    snprintf(wb, sizeof wb, "%.17g", m->watch.best);
    snprintf(we, sizeof we, "%lld", (long long)m->watch.best_epoch);
    snprintf(ww, sizeof ww, "%lld", (long long)m->watch.wait);
    const char *kv[] = {"monitor_best", wb, "monitor_best_epoch", we, "monitor_wait", ww};
    memcpy(meta + 2 * nmeta, kv, sizeof kv);
    nmeta += 3;
  }
  /* the dense shape of each pruned weight, for torch.sparse_csr_tensor(..., size=...) */
  for (int t = 0; t < nt; t++) {
    const PlanTensor *q = &m->pl.tensors[t];
    if (!q->p.sparse) continue;
    char sh[128] = "[";
    for (int d = 0; d < q->p.ndims; d++) snprintf(sh + strlen(sh), sizeof sh - strlen(sh), "%s%lld", d ? ", " : "", (long long)q->p.dims[d]);
    strcat(sh, "]");
    meta[2 * nmeta] = arena_printf(cx, "%s.shape", q->name), meta[2 * nmeta + 1] = arena_strndup(cx, sh, strlen(sh)), nmeta++;
  }
  rc = ts_st_write_fill(path, out, n, meta, nmeta, export_fill, &fill, e);
done:
  for (int k = 0; k < nints; k++) free(ints[k]);
  free(out), free(ints), free(tracked), ts_free(tmp), free(fill.pt), free(fill.src);
  return rc;
}

/* the runtime's conversion errors name the tensor; the file goes in front */
static int prefix_path(TsErr *e, const char *path) {
  char m[sizeof e->msg];
  snprintf(m, sizeof m, "%s", e->msg);
  return ts_fail(e, "%s: %s", path, m);
}

/* A pruned weight (and with `opt` its optimizer state) from CSR entries NAME.values,
 * NAME.crow_indices, NAME.col_indices, validated against the spec; or from a dense NAME (a
 * PyTorch state_dict: every entry kept). */
static int load_sparse(Ctx *cx, Model *m, const TsStFile *f, const char *path, const PlanTensor *pt, bool opt, TsErr *e) {
  const SparsePlan *sp = &m->pl.layers[pt->layer].sp;
  int ns = opt && m->pl.opt_block ? (m->pl.opt_block == m->pl.grad_block ? 1 : 2) : 0;
  int64_t R = sp->R, C = sp->C, full = R * C, nnz = 0;
  const TsTensor *tv = ts_st_find(f, arena_printf(cx, "%s.values", pt->name));
  const TsTensor *tc = ts_st_find(f, arena_printf(cx, "%s.crow_indices", pt->name));
  const TsTensor *tl = ts_st_find(f, arena_printf(cx, "%s.col_indices", pt->name));
  const TsTensor *td = ts_st_find(f, pt->name);
  int64_t *crow = malloc(sizeof(int64_t) * (size_t)(R + 1)), *col = malloc(sizeof(int64_t) * (size_t)full);
  float *vals[3] = {malloc(sizeof(float) * (size_t)full), NULL, NULL};
  int rc = 0;
  bool csr = tv || tc || tl;
  if (!crow || !col || !vals[0]) { rc = ts_fail(e, "out of memory reading %s", path); goto out; }
  if (csr) {
    if (!tv || !tc || !tl) {
      rc = ts_fail(e, "%s: the pruned weight '%s' needs %s.values, %s.crow_indices and %s.col_indices; '%s.%s' is missing",
                   path, pt->name, pt->name, pt->name, pt->name, pt->name, !tv ? "values" : !tc ? "crow_indices" : "col_indices");
      goto out;
    }
    if (tv->ndims != 1 || tc->ndims != 1 || tl->ndims != 1 || tc->shape[0] != R + 1 || tv->shape[0] != tl->shape[0] ||
        tv->shape[0] > full) {
      rc = ts_fail(e, "%s: the pruned weight '%s' of shape (%lld, %lld) needs crow_indices (%lld) and values and "
                      "col_indices of one length <= %lld; the file has (%lld), (%lld), (%lld)",
                   path, pt->name, (long long)R, (long long)C, (long long)(R + 1), (long long)full,
                   (long long)(tc->ndims ? tc->shape[0] : 0), (long long)(tv->ndims ? tv->shape[0] : 0),
                   (long long)(tl->ndims ? tl->shape[0] : 0));
      goto out;
    }
    nnz = tv->shape[0];
    if (ts_tensor_to_i64(tc, crow, (size_t)(R + 1), e) < 0 || ts_tensor_to_i64(tl, col, (size_t)nnz, e) < 0 ||
        ts_tensor_to_f32(tv, vals[0], (size_t)nnz, e) < 0) { rc = prefix_path(e, path); goto out; }
    for (int64_t r = 0; r <= R && rc == 0; r++)   /* in range before any row is walked */
      if (crow[r] < 0 || crow[r] > nnz)
        rc = ts_fail(e, "%s: '%s.crow_indices'[%lld] is %lld, outside [0, %lld] (the number of values)", path,
                     pt->name, (long long)r, (long long)crow[r], (long long)nnz);
    if (rc) goto out;
    if (crow[0] != 0 || crow[R] != nnz) {
      rc = ts_fail(e, "%s: '%s.crow_indices' must run from 0 to the number of values (%lld); it runs from %lld to %lld",
                   path, pt->name, (long long)nnz, (long long)crow[0], (long long)crow[R]);
      goto out;
    }
    for (int64_t r = 0; r < R && rc == 0; r++) {
      if (crow[r + 1] < crow[r]) {
        rc = ts_fail(e, "%s: '%s.crow_indices' decreases at row %lld (%lld then %lld)", path, pt->name, (long long)r,
                     (long long)crow[r], (long long)crow[r + 1]);
        break;
      }
      for (int64_t p = crow[r]; p < crow[r + 1]; p++) {
        if (col[p] < 0 || col[p] >= C) {
          rc = ts_fail(e, "%s: '%s.col_indices'[%lld] is %lld, outside [0, %lld)", path, pt->name, (long long)p,
                       (long long)col[p], (long long)C);
          break;
        }
        if (p > crow[r] && col[p] <= col[p - 1]) {
          rc = ts_fail(e, "%s: '%s.col_indices' are not sorted and unique in row %lld (position %lld: %lld after %lld)",
                       path, pt->name, (long long)r, (long long)p, (long long)col[p], (long long)col[p - 1]);
          break;
        }
      }
    }
    if (rc) goto out;
  } else if (td) {
    bool same = td->ndims == pt->p.ndims;
    for (int d = 0; same && d < td->ndims; d++) same = td->shape[d] == pt->p.dims[d];
    if (!same) {
      rc = ts_fail(e, "%s: tensor '%s' does not have the shape the spec needs (%lld x %lld as a matrix)", path, pt->name,
                   (long long)R, (long long)C);
      goto out;
    }
    if (ts_tensor_to_f32(td, vals[0], (size_t)full, e) < 0) { rc = prefix_path(e, path); goto out; }
    nnz = full;
    for (int64_t r = 0; r <= R; r++) crow[r] = r * C;
    for (int64_t p = 0; p < full; p++) col[p] = p % C;
  } else {
    rc = ts_fail(e, "%s: no tensor '%s' (a pruned weight: '%s.values', '.crow_indices', '.col_indices'; or a dense '%s')",
                 path, pt->name, pt->name, pt->name);
    goto out;
  }
  for (int k = 0; k < ns; k++) {
    const char *nm = arena_printf(cx, "__opt__.%s.%s", k ? "exp_avg_sq" : (m->sp.train.opt == OPT_SGD ? "momentum" : "exp_avg"), pt->name);
    const TsTensor *to = ts_st_find(f, csr ? arena_printf(cx, "%s.values", nm) : nm);
    if (!to) {
      rc = ts_fail(e, "%s: no tensor '%s%s' (this checkpoint is not from this spec)", path, nm, csr ? ".values" : "");
      goto out;
    }
    vals[1 + k] = malloc(sizeof(float) * (size_t)(nnz ? nnz : 1));
    if (!vals[1 + k]) { rc = ts_fail(e, "out of memory reading %s", path); goto out; }
    if (ts_tensor_to_f32(to, vals[1 + k], (size_t)nnz, e) < 0) { rc = prefix_path(e, path); goto out; }
  }
  sparse_set(m, pt->layer, crow, col, nnz, (const float *const *)vals);
out:
  free(crow), free(col), free(vals[0]), free(vals[1]), free(vals[2]);
  return rc;
}

/* A metadata value that must be an integer in [lo, hi], written as teslac writes it (digits
 * only); absent: *out untouched, 0 (or an error when required). */
static int meta_int(const TsStFile *f, const char *path, const char *key, int64_t lo, int64_t hi, bool required,
                    int64_t *out, TsErr *e) {
  const char *v = ts_st_meta(f, key);
  if (!v) return required ? ts_fail(e, "%s: the checkpoint has no '%s' in its metadata", path, key) : 0;
  bool digits = *v && strlen(v) <= 19 && strspn(v, "0123456789") == strlen(v);
  long long x = digits ? strtoll(v, NULL, 10) : 0;
  if (!digits || x < lo || x > hi)
    return ts_fail(e, "%s: checkpoint metadata '%s' is \"%.40s\"; it must be an integer from %lld to %lld", path, key, v,
                   (long long)lo, (long long)hi);
  *out = x;
  return 0;
}

/* ... a finite number in [lo, hi] */
static int meta_num(const TsStFile *f, const char *path, const char *key, double lo, double hi, double *out, TsErr *e) {
  const char *v = ts_st_meta(f, key);
  if (!v) return 0;
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi || isspace((unsigned char)*v))
    return ts_fail(e, "%s: checkpoint metadata '%s' is \"%.40s\"; it must be a number from %g to %g", path, key, v, lo, hi);
  *out = x;
  return 0;
}

/* the position and the run's settings in a --resume checkpoint, each checked */
static int load_position(Model *m, const TsStFile *f, const char *path, int64_t *epoch, TsErr *e) {
  int64_t bt = 0, seed = -1, we = 0, ww = 0;
  double lr = 0, vs = 0, wb = 0;
  if (meta_int(f, path, "step", 0, INT32_MAX, true, &m->t, e) < 0 ||
      meta_int(f, path, "epoch", 0, 1000000, true, epoch, e) < 0 ||
      meta_int(f, path, "batch", 1, 1 << 20, false, &bt, e) < 0 ||
      meta_int(f, path, "prune_total_steps", 1, (int64_t)1 << 53, false, &m->prune_total, e) < 0 ||
      meta_int(f, path, "seed", 0, INT64_MAX, false, &seed, e) < 0 || meta_num(f, path, "lr", 1e-300, 1e6, &lr, e) < 0 ||
      meta_num(f, path, "validation_split", 0, 0.999999, &vs, e) < 0)
    return -1;
  /* the position in the epoch is counted in batches: another batch size would misplace it */
  if (bt && bt != global_batch(m))
    return ts_fail(e, "%s was trained at batch %lld; resume it at that batch (--batch %lld), not %lld", path, (long long)bt,
                   (long long)bt, (long long)global_batch(m));
  bool watched = ts_st_meta(f, "monitor_best") || ts_st_meta(f, "monitor_best_epoch") || ts_st_meta(f, "monitor_wait");
  if (watched) {
    if (!ts_st_meta(f, "monitor_best") || !ts_st_meta(f, "monitor_best_epoch") || !ts_st_meta(f, "monitor_wait"))
      return ts_fail(e, "%s: checkpoint metadata has some of monitor_best, monitor_best_epoch, monitor_wait but not all", path);
    if (meta_num(f, path, "monitor_best", -1e300, 1e300, &wb, e) < 0 ||
        meta_int(f, path, "monitor_best_epoch", 1, *epoch > 0 ? *epoch : 1, true, &we, e) < 0 ||
        meta_int(f, path, "monitor_wait", 0, *epoch, true, &ww, e) < 0)
      return -1;
    m->watch.best = wb, m->watch.best_epoch = we, m->watch.wait = ww;
  }
  if (ts_st_meta(f, "seed") && ts_st_meta(f, "lr")) {
    m->saved.present = true;
    m->saved.seed = (uint64_t)seed, m->saved.lr = lr, m->saved.val_split = vs;
  }
  return 0;
}

/* ---- matching a file's tensors to the spec's ------------------------------------------------ */

static void shape_text(char *buf, size_t cap, const int64_t *d, int n) {
  size_t k = (size_t)snprintf(buf, cap, "(");
  for (int i = 0; i < n && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)d[i]);
  if (k < cap) snprintf(buf + k, cap - k, ")");
}

/* One list of the error below: items while they fit in `budget` characters (at most 6), then a
 * count of the rest. */
typedef struct NameList { char text[400]; int shown, more; } NameList;

static void list_add(NameList *l, size_t budget, const char *item) {
  size_t n = strlen(l->text), k = strlen(item);
  if (l->shown < 6 && n + k + 2 <= budget && n + k + 2 < sizeof l->text) {
    snprintf(l->text + n, sizeof l->text - n, "%s%s", l->shown ? ", " : "", item);
    l->shown++;
  } else
    l->more++;
}

static const char *list_end(NameList *l, char *buf, size_t cap) {
  if (l->more) snprintf(buf, cap, "%s and %d more", l->text, l->more);
  else snprintf(buf, cap, "%s", l->text);
  return buf;
}

/* Whether the file's tensor `name` is one the spec reads (a tensor of the plan or a pruned
 * weight's CSR part) or one every reader ignores (optimizer state, num_batches_tracked). */
static bool name_expected(const Model *m, const char *name) {
  if (!strncmp(name, "__opt__.", 8)) return true;
  size_t n = strlen(name), t = strlen(".num_batches_tracked");
  if (n > t && !strcmp(name + n - t, ".num_batches_tracked")) return true;
  static const char *const csr[] = {"", ".values", ".crow_indices", ".col_indices"};
  for (int i = 0; i < m->pl.ntensors; i++) {
    const char *p = m->pl.tensors[i].name;
    size_t k = strlen(p);
    if (n < k || strncmp(name, p, k)) continue;
    for (int c = 0; c < 4; c++)
      if (!strcmp(name + k, csr[c])) return true;
  }
  return false;
}

/* The weights' names, all at once: when the file lacks a tensor of the spec (or holds one in
 * another shape), one error lists every missing one with the shape the spec needs, every
 * wrong shape, and every tensor of the file the spec does not name with its shape, so that a
 * renamed state_dict is seen at a glance. Extra tensors alone are no error (they are ignored).
 * One wrong shape and nothing else keeps its own message. */
static int match_names(const Model *m, const TsStFile *f, const char *path, TsErr *e) {
  NameList miss = {0}, wrong = {0}, extra = {0};
  const PlanTensor *only = NULL;
  const TsTensor *only_t = NULL;
  char item[320], a[96], b[96];
  for (int t = 0; t < m->pl.ntensors; t++) {
    const PlanTensor *pt = &m->pl.tensors[t];
    const TsTensor *x = ts_st_find(f, pt->name);
    char csr[160];
    snprintf(csr, sizeof csr, "%s.values", pt->name);
    if (!x && ts_st_find(f, csr)) continue;   /* a pruned weight: load_sparse and model_load check it */
    shape_text(a, sizeof a, pt->p.dims, pt->p.ndims);
    if (!x) {   /* a pruned weight may come as its CSR parts instead */
      snprintf(item, sizeof item, "%s %s%s", pt->name, a, pt->p.sparse ? " (or its CSR .values, .crow_indices, .col_indices)" : "");
      list_add(&miss, 200, item);
      continue;
    }
    if (pt->p.sparse) continue;   /* its dense form is checked as a matrix in load_sparse */
    bool same = x->ndims == pt->p.ndims;
    for (int d = 0; same && d < x->ndims; d++) same = x->shape[d] == pt->p.dims[d];
    if (same) continue;
    shape_text(b, sizeof b, x->shape, x->ndims);
    snprintf(item, sizeof item, "%s is %s not %s", pt->name, b, a);
    list_add(&wrong, 160, item);
    only = pt, only_t = x;
  }
  if (!miss.shown && !miss.more && !wrong.shown && !wrong.more) return 0;
  if (!miss.shown && !miss.more && wrong.shown + wrong.more == 1) {
    shape_text(a, sizeof a, only->p.dims, only->p.ndims);
    shape_text(b, sizeof b, only_t->shape, only_t->ndims);
    return ts_fail(e, "%s: tensor '%s' is %s but the spec needs %s", path, only->name, b, a);
  }
  for (int i = 0; i < f->ntensors; i++) {
    const TsTensor *x = &f->tensors[i];
    if (name_expected(m, x->name)) continue;
    shape_text(b, sizeof b, x->shape, x->ndims);
    snprintf(item, sizeof item, "%s %s", x->name, b);
    list_add(&extra, 160, item);
  }
  char l1[480], l2[480], l3[480];
  bool has_miss = miss.shown || miss.more, has_extra = extra.shown || extra.more;
  return ts_fail(e, "%s: its tensors do not match the spec's: %s%s%s%s%s%s%s", path,
                 has_miss ? "missing: " : "", has_miss ? list_end(&miss, l1, sizeof l1) : "",
                 wrong.shown ? (has_miss ? "; wrong shape: " : "wrong shape: ") : "",
                 wrong.shown ? list_end(&wrong, l2, sizeof l2) : "",
                 has_extra ? "; extra: " : has_miss ? "; the file has no other tensors" : "",
                 has_extra ? list_end(&extra, l3, sizeof l3) : "",
                 has_miss && has_extra ? " (teslac names a tensor <layer>.<param>, the layer by its 'name:' or its index)"
                                       : "");
}

/* Loads weights (and, with `opt`, optimizer state and position) from a safetensors file.
 * Names first (match_names: every mismatch in one error), then each tensor. */
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
  if (match_names(m, &f, path, e) < 0) {
    ts_st_free(&f);
    return -1;
  }
  float *tmp = ts_malloc(sizeof(float) * (size_t)(m->pl.param_block + 1));
  for (int s = 0; s <= (opt ? 2 : 0) && rc == 0; s++) {
    if (s > 0 && (m->pl.opt_block == 0 || (s == 2 && m->pl.opt_block == m->pl.grad_block))) continue;
    for (int t = 0; t < m->pl.ntensors && rc == 0; t++) {
      const PlanTensor *pt = &m->pl.tensors[t];
      if (s > 0 && pt->grad_offset < 0) continue;
      if (pt->p.sparse) {   /* the weight and its optimizer state together */
        if (s == 0) rc = load_sparse(cx, m, &f, path, pt, opt, e);
        continue;
      }
      const char *name = s == 0 ? pt->name
                                : arena_printf(cx, "__opt__.%s.%s", s == 2 ? "exp_avg_sq" : (m->sp.train.opt == OPT_SGD ? "momentum" : "exp_avg"), pt->name);
      const TsTensor *tt = ts_st_find(&f, name);
      if (!tt && ts_st_find(&f, arena_printf(cx, "%s.values", name))) {
        rc = ts_fail(e, "%s: '%s' is a pruned (CSR) weight there, but layer %s is not sparse in the spec; add "
                        "'sparsity:' to it, or densify the file first", path, name, m->sp.layers[pt->layer].name);
        break;
      }
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
      if (ts_tensor_to_f32(tt, tmp, (size_t)pt->elems, e) < 0) { rc = prefix_path(e, path); break; }   /* the file in front */
      float *dst = s == 0 ? m->P + pt->offset : m->O + (int64_t)(s - 1) * m->pl.grad_block + pt->grad_offset;
      tensor_import(m, pt, tmp, dst);
    }
  }
  if (rc == 0 && opt) rc = load_position(m, &f, path, epoch, e);
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

const char *model_nonfinite(const Model *m) {
  for (int t = 0; t < m->pl.ntensors; t++) {
    const PlanTensor *pt = &m->pl.tensors[t];
    const float *p = m->P + pt->offset;
    for (int64_t k = 0; k < pt->elems; k++)
      if (!isfinite(p[k])) return pt->name;
  }
  return NULL;
}

/* ---- evaluation ----------------------------------------------------------------------------- */

void model_step_init(Model *m, TeslaStep *s) {
  memset(s, 0, sizeof *s);
  s->params = m->P, s->grads = m->G, s->opt = m->O, s->acts = m->A, s->x = m->X, s->y = m->Y;
}

/* loss and accuracy over every sample of d (the last batch padded) */
void model_eval(Model *m, const TsDataset *d, double *loss, double *acc) {
  model_eval_confusion(m, d, loss, acc, NULL);
}

/* the first argmax of each valid row's logits into the confusion counts, as emit_loss finds it
 * (a strict > from -3.4e38: a NaN never wins) */
static void count_confusion(Model *m, int64_t n, const int32_t *y, int64_t *confusion) {
  int block;
  int64_t off, K = m->sp.classes;
  emit_logits_at(&m->sp, &m->pl, &block, &off);
  const float *logits = (block == TS_X ? m->X : m->A) + off;
  for (int64_t b = 0; b < n; b++) {
    const float *row = logits + b * K;
    float mx = -3.4e38f;
    int64_t arg = 0;
    for (int64_t k = 0; k < K; k++)
      if (row[k] > mx) mx = row[k], arg = k;
    confusion[(int64_t)y[b] * K + arg]++;
  }
}

void model_eval_confusion(Model *m, const TsDataset *d, double *loss, double *acc, int64_t *confusion) {
  int64_t B = m->pl.batch;
  double sum = 0;
  int64_t correct = 0;
  TeslaStep s;
  if (confusion) memset(confusion, 0, sizeof(int64_t) * (size_t)(m->sp.classes * m->sp.classes));
  for (size_t at = 0; at < d->count; at += (size_t)B) {
    int64_t n = (int64_t)(d->count - at) < B ? (int64_t)(d->count - at) : B;
    ts_dataset_gather(d, at, (size_t)n, m->X);
    memcpy(m->Y, d->y + at, sizeof(int32_t) * (size_t)n);
    if (n < B) {
      memset(m->X + n * m->in_elems, 0, sizeof(float) * (size_t)((B - n) * m->in_elems));
      memset(m->Y + n, 0, sizeof(int32_t) * (size_t)(B - n));
    }
    model_step_init(m, &s);
    s.nvalid = (int32_t)n;
    m->infer(&s);
    sum += s.loss, correct += s.correct;
    if (confusion) count_confusion(m, n, d->y + at, confusion);
  }
  *loss = sum / (double)d->count;
  *acc = (double)correct / (double)d->count;
}
