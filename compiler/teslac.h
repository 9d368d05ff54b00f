/* teslac.h: the one header of the model compiler, one section per file, in pipeline order:
 *
 *   spec.yaml --yaml_load--> YNode tree (every node keeps its file:line:col)
 *             --spec_parse--> Spec: model, layers with their keys, train, data
 *             --check------> shapes inferred and checked per layer (the op registry)
 *             --plan-------> Plan: storage per weight, FLOPs, one memory layout
 *             --emit-------> LLVM module (forward, backward, optimizer step)   [codegen]
 *
 * Dimension legend used in comments: N batch, C channels, H height, W width, K filters
 * (output channels), D features. Errors are reported with diag_at() and passes keep going;
 * the driver (main.c) stops between passes when any were reported. */
#ifndef TESLAC_H
#define TESLAC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TESLAC_VERSION "0.1.0"
#define TESLA_LANG_VERSION 1

/* Largest element count of any one tensor (batch included): 2^40, 4 TiB of f32. A size past
 * this, or one whose product overflows int64, is an error at the line that asked for it. */
#define TS_MAX_ELEMS ((int64_t)1 << 40)
/* Largest single dimension a user may write. */
#define TS_MAX_DIM ((int64_t)1 << 30)

/* ---- diag.c: source locations, diagnostics, the arena ----------------------------------- */

typedef struct SrcLoc {
  int line, col;      /* 1-based; 0 = no location (whole file) */
  int len;            /* columns to underline after the caret (0 or 1 = just the caret) */
} SrcLoc;

typedef struct Arena Arena;

/* One compilation: its source text, its diagnostics, its memory. Everything a pass allocates
 * comes from the arena and is freed at once by ctx_free. */
typedef struct Ctx {
  const char *path;         /* as the user named it */
  char       *src;          /* the file's bytes, NUL-terminated */
  size_t      srclen;
  int         nerrors, nwarnings;
  FILE       *err;          /* stderr, or a memstream in tests */
  bool        color;
  Arena      *arena;
} Ctx;

void  ctx_init(Ctx *cx, const char *path, FILE *err);
/* Reads cx->path; on failure reports "cannot read" and returns -1. */
int   ctx_read_file(Ctx *cx);
void  ctx_set_source(Ctx *cx, const char *text, size_t len);   /* tests, fuzzing */
void  ctx_free(Ctx *cx);

void *arena_alloc(Ctx *cx, size_t n);                /* zeroed, never NULL (aborts on OOM) */
char *arena_strndup(Ctx *cx, const char *s, size_t n);
char *arena_printf(Ctx *cx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void diag_at(Ctx *cx, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void warn_at(Ctx *cx, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void note_at(Ctx *cx, SrcLoc loc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The closest of `cands` (NULL-terminated) to `s` by edit distance, or NULL if none is close. */
const char *diag_suggest(const char *s, const char *const *cands);

/* Checked size arithmetic: false (and *out untouched) on overflow or past TS_MAX_ELEMS. */
bool size_mul(int64_t a, int64_t b, int64_t *out);

/* ---- yaml.c: the YAML tree ---------------------------------------------------------------- */

typedef enum YKind { Y_SCALAR, Y_SEQ, Y_MAP } YKind;

typedef struct YNode YNode;
struct YNode {
  YKind   kind;
  SrcLoc  loc;
  bool    quoted;       /* scalar written in quotes: always a string */
  bool    flow;         /* [..] or {..} */
  char   *str;          /* scalar text (NUL-terminated) */
  size_t  len;
  YNode **kids;         /* seq: items; map: key0, value0, key1, value1, ... */
  int     nkids;
};

/* Parse cx->src into a tree; NULL after reporting a syntax error (libyaml's marks). Aliases,
 * multiple documents and nesting deeper than 64 are refused with a message. */
YNode *yaml_load(Ctx *cx);

/* ---- spec.c: the spec language, version 1 ------------------------------------------------- */

typedef enum OpKind {
#define OP(id, name, def) OP_##id,
#include "ops.def"
#undef OP
  OP_COUNT
} OpKind;

typedef enum PadMode { PAD_EXPLICIT, PAD_SAME, PAD_VALID } PadMode;

/* A tensor shape without the batch dim: rank 1 (D) or 3 (C, H, W). */
typedef struct Shape { int rank; int64_t d[3]; } Shape;

typedef enum InitKind { INIT_DEFAULT, INIT_KAIMING_UNIFORM, INIT_KAIMING_NORMAL, INIT_GLOROT,
                        INIT_GLOROT_NORMAL, INIT_ZEROS, INIT_ONES } InitKind;

typedef struct TTSpec {
  bool    on, autoplan;
  int     rank;                 /* 0 = planner's choice */
  int     d;                    /* number of cores when modes are given, else 0 */
  int64_t in_modes[8], out_modes[8], ranks[8];
  int     order;                /* 0 = the planner's; else 1 + TTOrder (tt.c) */
  SrcLoc  loc;
} TTSpec;

typedef struct SparseSpec {
  bool   on, autoplan;          /* autoplan: `sparsity: auto` (the planner's target) */
  double target;                /* fraction of zeros in (0, 1) */
  bool   gradual;               /* schedule: gradual (default) | oneshot */
  double start, end;            /* fractions of the training steps */
  int    every;                 /* steps between pruning events */
  SrcLoc loc;
} SparseSpec;

/* One layer of `layers:` as written; the op's own keys live in the union. */
typedef struct Layer {
  OpKind  op;
  int     index;
  const char *name;             /* `name:` or its index, as the tensor-name prefix */
  SrcLoc  loc;                  /* the layer's key (e.g. `conv`) */
  YNode  *node;                 /* its value map (may be NULL for `- relu`) */

  /* keys every weighted layer takes */
  int64_t dims[8]; int ndims; SrcLoc dims_loc;
  TTSpec  tt;
  SparseSpec sparse;
  InitKind init; SrcLoc init_loc;

  union {
    struct { int64_t units; bool bias; } dense;
    struct { int64_t filters, kh, kw, sh, sw; int64_t pt, pb, pl, pr; PadMode pad; bool bias; } conv;
    struct { int64_t kh, kw, sh, sw, ph, pw; } pool;
    struct { double eps, momentum; } bn;
    struct { double slope; } act;
    struct { double rate; } drop;
  } u;

  /* filled by check: shapes (batch excluded), weights */
  bool   bad;                   /* its keys had errors: check.c infers no further */
  bool   checked;               /* shapes known */
  Shape  in, out;
  bool   implicit_flatten;      /* a dense on a (C, H, W) input */
} Layer;

typedef enum OptKind { OPT_SGD, OPT_ADAM, OPT_ADAMW } OptKind;
typedef enum SchedKind { SCHED_CONSTANT, SCHED_STEP, SCHED_COSINE } SchedKind;

/* what early stopping and best checkpoints watch: losses fall, accuracies rise */
typedef enum Monitor { MON_VAL_LOSS, MON_VAL_ACC, MON_TRAIN_LOSS, MON_TRAIN_ACC } Monitor;
#define MONITOR_IS_VAL(m) ((m) == MON_VAL_LOSS || (m) == MON_VAL_ACC)
#define MONITOR_IS_ACC(m) ((m) == MON_VAL_ACC || (m) == MON_TRAIN_ACC)
extern const char *const monitor_names[];   /* val_loss, val_accuracy, train_loss, train_accuracy */

typedef struct TrainCfg {
  int     loss;                 /* 0 = cross_entropy (the only one in version 1) */
  OptKind opt;
  double  lr;
  double  beta1, beta2, eps, weight_decay;   /* adam, adamw (weight_decay: sgd too) */
  double  momentum, dampening; bool nesterov; /* sgd */
  SchedKind sched;
  int64_t step_size; double gamma;           /* step: every step_size epochs lr *= gamma */
  int64_t t_max; double eta_min;             /* cosine, over epochs */
  int64_t epochs, batch;
  uint64_t seed;
  bool    shuffle;
  bool    metric_accuracy;
  bool    sync_bn;                           /* data-parallel: batchnorm over all ranks' rows */
  /* early_stopping: stop when `monitor` has not improved by more than min_delta for
   * `patience` epochs (Keras' EarlyStopping); save_best: NAME.best.safetensors on each best */
  bool    early_stop, save_best, test_every_epoch;
  Monitor monitor;
  int64_t patience; double min_delta;
  SrcLoc  loc, batch_loc, monitor_loc;
} TrainCfg;

typedef struct DataCfg {
  bool   present;
  const char *train_images, *train_labels, *test_images, *test_labels;  /* resolved paths */
  /* a validation set: its own files (val:), or a held-out fraction of train (validation_split) */
  const char *val_images, *val_labels;
  double val_split;             /* 0 = none */
  double scale;
  SrcLoc loc, val_loc, key_loc;   /* key_loc: the 'data:' key */
} DataCfg;

typedef struct Compress {
  int64_t max_params;           /* 0 = none */
  double  ratio;                /* 0 = none */
  SrcLoc  loc;
} Compress;

/* a model's name prefixes every symbol of its code and every macro of its header */
#define MAX_NAME 64

typedef struct Spec {
  int      version;
  const char *name;
  Shape    input; SrcLoc input_loc;
  int64_t  classes; SrcLoc classes_loc;      /* 0 = not given */
  /* class names, from `classes: [names]` or `data: {class_names: [names]}` (NULL: none);
   * names_key: "classes" or "data.class_names" when the names' count is the classes (and
   * classes_loc is that list), NULL when classes is an integer or inferred */
  const char **class_names; int nclass_names; const char *names_key;
  Layer   *layers; int nlayers; SrcLoc layers_loc;
  Compress compress;
  TrainCfg train;
  DataCfg  data;
} Spec;

/* Fills *sp from the tree; reports every problem it finds. */
void spec_parse(Ctx *cx, YNode *root, Spec *sp);

/* Class k's display name: its name when the spec gives names, else its index (in buf). */
const char *spec_class_name(const Spec *sp, int64_t k, char buf[24]);

/* Key readers for op files. Each reports a type error at the value and returns false;
 * `out` keeps its default then. */
YNode *spec_get(YNode *map, const char *key);
bool   spec_int(Ctx *cx, YNode *v, const char *key, int64_t lo, int64_t hi, int64_t *out);
bool   spec_num(Ctx *cx, YNode *v, const char *key, double lo, double hi, bool lo_open,
                bool hi_open, double *out);
bool   spec_bool(Ctx *cx, YNode *v, const char *key, bool *out);
/* an int or a two-element list [a, b] */
bool   spec_pair(Ctx *cx, YNode *v, const char *key, int64_t lo, int64_t *a, int64_t *b);
const char *spec_scalar_desc(Ctx *cx, YNode *v);   /* "'abc'", "a list", "a map" */

/* ---- front.c: the front end as one call ------------------------------------------------ */

/* load (cx->src must be set) -> parse -> check. Returns 0, or -1 when errors were reported.
 * Used by the driver, the tests and the fuzz target alike. */
int tesla_front(Ctx *cx, Spec *sp);
/* the same from a file (cx is initialized here, diagnostics to stderr; ctx_free it after) */
int tesla_front_file(Ctx *cx, const char *path, Spec *sp);

/* ---- driver/: one file per command (train.c, eval.c, predict.c, emit_llvm.c, compress.c) ----- */

int train_main(int argc, char **argv);
int eval_main(int argc, char **argv);
int emit_llvm_main(int argc, char **argv);
int predict_main(int argc, char **argv);

/* ---- compress.c: the compress command (TT-SVD of a dense checkpoint into a TT spec's cores) -- */

int compress_main(int argc, char **argv);
int build_main(int argc, char **argv);      /* driver/build.c: an object file and its header */
int plot_main(int argc, char **argv);       /* driver/plot.c: a training log's curves (SVG, PNG) */
int export_main(int argc, char **argv);     /* driver/export.c: an ONNX model of inference */
const char *export_library(void);           /* export.c: protobuf-c's version; NULL: no ONNX export */

/* ---- ops.def + op_*.c: the op registry ------------------------------------------------- */

typedef struct Flops { int64_t fwd, bwd; } Flops;

typedef struct Param {
  const char *pname;            /* "weight", "bias", "running_mean", ... */
  int     ndims;
  int64_t dims[4];              /* PyTorch's layout, e.g. dense (out, in) */
  bool    trainable;            /* false: a buffer (running statistics) */
  bool    stored_t;             /* kept transposed in memory, e.g. dense as (in, out); weight
                                   files always hold PyTorch's layout */
  bool    rank_swap;            /* a TT core (r, m, n, r') kept as (r', m, n, r) (TT_RTL) */
  int     core;                 /* a TT core: its index k + 1 (0: not a core) */
  bool    sparse;               /* a pruned weight (sparse.c): its non-zeros are what counts,
                                   and files hold it as CSR (values, crow and col indices) */
} Param;

/* Everything an op knows. Adding an op = one op_*.c defining an OpDef + one line in ops.def. */
typedef struct OpDef {
  const char *name;
  const char *const *keys;      /* its own keys, NULL-terminated */
  bool weighted;                /* takes dims/tt/sparsity/init */
  bool spatial_only;            /* needs (C, H, W) */
  /* read the op's keys from l->node into l->u (defaults first) */
  void (*parse)(Ctx *cx, Layer *l);
  /* l->in is set; compute l->out, or report and return false */
  bool (*infer)(Ctx *cx, Layer *l);
  /* its tensors, in state_dict order; returns how many */
  int  (*params)(const Layer *l, Param out[4]);
  /* at batch n; need_dx: the backward must produce the input gradient */
  Flops (*flops)(const Layer *l, int64_t n, bool need_dx);
} OpDef;

#define OP(id, name, def) extern const OpDef def;
#include "ops.def"
#undef OP

extern const OpDef *const op_registry[OP_COUNT];
const OpDef *op_find(const char *name);
const char *const *op_names(void);                   /* NULL-terminated */

int64_t shape_elems(const Shape *s);
char   *shape_str(Ctx *cx, const Shape *s, bool with_batch);   /* "(N, 32, 28, 28)" */

/* ---- check.c: shape inference ----------------------------------------------------------- */

/* Infers every layer's shapes, checks dims:, softmax placement, classes. */
void check_spec(Ctx *cx, Spec *sp);
void check_print_table(Ctx *cx, const Spec *sp, FILE *out);

/* ---- plan.c: storage, costs, memory -------------------------------------------------- */

typedef enum Storage { ST_DENSE, ST_TT, ST_SPARSE } Storage;

/* ---- tt.c: tensor-train planning (modes, ranks, contraction order, cost) ----------------- */

#define TT_MAXD 8

/* How a TT layer runs. Dense: y = x W^T with W (N, M), N = prod n, M = prod m, as d cores
 * (r[k], m[k], n[k], r[k+1]), r[0] = r[d] = 1. Conv: a spatial core (1, kh, kw, r[0]) then d
 * channel cores (r[k], c[k], s[k], r[k+1]) over C = prod m and K = prod n, r[d] = 1.
 *   TT_LTR   the input's modes are contracted first to last (tt_emit.c: a chain of GEMMs)
 *   TT_RTL   last to first: the same chain over reversed modes, cores kept rank-swapped
 *   TT_FORM  the weight is formed from the cores each step, then the dense/conv kernels run */
typedef enum TTOrder { TT_LTR, TT_RTL, TT_FORM, TT_NORDERS } TTOrder;

typedef struct TTPlan {
  int      d;                       /* cores (dense) or channel cores (conv) */
  int64_t  m[TT_MAXD], n[TT_MAXD];  /* input and output modes (padded dims multiply out) */
  int64_t  r[TT_MAXD + 1];          /* dense: r[0] = r[d] = 1; conv: r[0] after the spatial core */
  int64_t  M, N;                    /* the layer's dims: dense (in, out); conv (C, K) */
  int64_t  Mp, Np;                  /* prod m, prod n: M, N or padded past them */
  TTOrder  order;
  bool     forced;                  /* the spec fixed rank or modes: TT even when slower */
  Flops    flops[TT_NORDERS];       /* forward and backward FLOPs of each order at the batch
                                       (fwd INT64_MAX: not available) */
  Flops    dense_flops;             /* the same for dense storage */
  int64_t  params;                  /* in the cores */
  /* activation block, relative to the layer's aux: chain states S[1..d+1] (TT_LTR/RTL) or the
   * formed weight's partial products F[1..d] (TT_FORM); then two gradient scratch buffers */
  int64_t  state[TT_MAXD + 2], scratch[2], act_floats;
  int64_t  aux;                     /* where that area starts in the activation block */
  int64_t  full_w, full_dw;         /* TT_FORM: the formed weight (param block, not saved) and
                                       its gradient (gradient block, not optimized) */
} TTPlan;

/* ---- sparse.c: sparse weights (target, kernel, tables, cost) ------------------------------- */

/* How a pruned weight runs. Its matrix view is (R, C): dense (OUT, IN), conv (K, C kh kw).
 *   SK_MASK  the dense kernels on the dense weight, whose pruned entries are zero; a float
 *            mask (1 kept, 0 pruned) zeroes their gradient before the optimizer
 *   SK_CSR   values in CSR order (rows, then columns ascending) with an int32 table the
 *            generated code walks: [0] nnz now; row pointers; column indices; and for the
 *            data gradient a CSC view (column pointers, row indices, positions of the
 *            values). Capacity: every entry (the weight starts dense). */
typedef enum SparseKernel { SK_MASK, SK_CSR } SparseKernel;

typedef struct SparsePlan {
  bool    on;
  double  target;               /* planned final fraction of zeros */
  SparseKernel kernel;
  int64_t R, C;                 /* the matrix view */
  int64_t nnz;                  /* non-zeros at the target */
  int64_t cap;                  /* SK_CSR: entries the values and the table have room for
                                   (R C; a frozen pattern's nnz in teslac build) */
  bool    no_csc;               /* SK_CSR: the table ends after the column indices (an
                                   inference-only object file) */
  int64_t ldt;                  /* SK_CSR: rows of the transposed activations (batch padded) */
  int64_t mask;                 /* SK_MASK: its mask in the parameter block (floats) */
  int64_t tab;                  /* SK_CSR: its table in the parameter block (4-byte units) */
  int64_t xt, yt;               /* SK_CSR: X^T (C, ldt) and Y^T / dY^T (R, ldt) in acts */
  Flops   flops, dense_flops;   /* of the chosen kernel at the target; of dense storage */
  double  cost, csr_cost;       /* estimated (dense-FLOP units): the chosen one, and CSR's */
  bool    auto_chosen;          /* tt: auto + sparsity: auto: chose sparse over the TT plan */
} SparsePlan;

/* where the parts of an SK_CSR table are, in int32 units from its start */
int64_t sp_tab_rowptr(const SparsePlan *s);
int64_t sp_tab_col(const SparsePlan *s);
int64_t sp_tab_colptr(const SparsePlan *s);
int64_t sp_tab_rowidx(const SparsePlan *s);
int64_t sp_tab_perm(const SparsePlan *s);
int64_t sp_tab_size(const SparsePlan *s);
/* the weights a layer of `full` entries keeps at a fraction `sparsity` of zeros: rounded, at
 * least one (the planner's targets and the pruning events alike) */
int64_t sp_kept(double sparsity, int64_t full);
/* the matrix view of a dense or conv layer's weight */
void    sp_matrix(const Layer *l, int64_t *R, int64_t *C);
/* Zhu & Gupta's schedule: the fraction of zeros due at optimizer step t of `total` (pruning
 * events at start, start + every, ..., end; oneshot: the target from start on); and whether
 * step t is an event */
double  sp_sparsity_at(const SparseSpec *s, double target, int64_t t, int64_t total);
bool    sp_is_event(const SparseSpec *s, int64_t t, int64_t total);

typedef struct PlanTensor {
  const char *name;             /* "<layer>.<param>" */
  int     layer;
  Param   p;
  int64_t elems;
  int64_t offset;               /* in floats, within the parameter block (64-byte aligned) */
  int64_t grad_offset;          /* in floats, within the gradient block; -1 for buffers */
} PlanTensor;

typedef struct PlanLayer {
  Storage storage;
  Storage requested;            /* what the spec asked for, while the planner lacks it */
  int64_t params, buffers;      /* trainable elements; running statistics */
  int64_t bytes;
  Flops   flops;
  int64_t dense_params;         /* what dense storage would take */
  int64_t act_elems;            /* its output, batch included */
  int64_t out_off, aux_off;     /* its output, and what it keeps for the backward, in the
                                   activation block (floats); flatten's output is its input */
  int64_t fold_w, fold_b;       /* a dense/conv whose batchnorm is folded into it for
                                   inference: its folded weight and bias in the parameter
                                   block (not saved); -1: not folded */
  TTPlan  tt;                   /* storage ST_TT: modes, ranks, order, where its scratch is */
  SparsePlan sp;                /* storage ST_SPARSE: target, kernel, table, cost */
} PlanLayer;

typedef struct Plan {
  int64_t batch;
  PlanLayer *layers;
  PlanTensor *tensors; int ntensors;
  int64_t params, buffers, bytes, dense_params;
  Flops   flops;
  /* one block per kind of memory, in floats */
  int64_t param_block, grad_block, opt_block, act_block;
  int64_t derived_off;          /* parameter block: what a checkpoint saves ends here; after
                                   it the derived tensors (TT_FORM weights, folded weights) */
  int64_t grad_buf[2];          /* two activation-gradient buffers, used in turn going back */
  /* data-parallel (driver/dist.c): `dist` ranks each run `batch` rows of a global batch of
   * batch x dist; the train step hands every layer's gradients to tesla_dist_bucket and takes
   * the loss gradient over the global batch; sync_bn: batchnorm statistics over the global
   * batch too. 0 or 1: one process (and code that calls no tesla_dist_*) */
  int     dist;
  bool    dist_sync_bn;
} Plan;

void plan_spec(Ctx *cx, const Spec *sp, int64_t batch, Plan *pl);
/* teslac build's plans: the saved tensors stored as in `ref` (its sparse kernels and folds);
 * `caps` (per layer, 0: none) freezes a pruned layer's CSR arrays at that many non-zeros; with
 * `infer_only` its table drops the CSC view only the backward reads */
typedef struct PlanLike { const Plan *ref; const int64_t *caps; bool infer_only; } PlanLike;
void plan_spec_like(Ctx *cx, const Spec *sp, int64_t batch, const PlanLike *like, Plan *pl);
/* sparse.c, for plan.c: the targets of sparse layers (sparsity: auto meets compress with
 * what the tensor trains leave; a layer marked tt: auto and sparsity: auto turns sparse when
 * that runs faster at the TT plan's size), their kernels and costs, into pl->layers[i].sp */
void sp_plan(Ctx *cx, const Spec *sp, int64_t batch, Plan *pl, int64_t budget);

/* tt.c: chooses every tt: layer's modes, ranks and order into pl->layers[i].tt, meeting
 * compress over the tt: auto layers; `fixed_params`: the parameters of the layers without
 * tt:, `dense_total`: the whole model's dense parameters (for compress.ratio). */
void    tt_plan(Ctx *cx, const Spec *sp, int64_t batch, Plan *pl, int64_t fixed_params,
                int64_t dense_total);
/* the chain states and scratch of a planned TT layer in its aux area, at batch B */
bool    tt_plan_scratch(const Layer *l, TTPlan *t, int64_t B);   /* false: too large */
int64_t tt_core_params(const TTPlan *t, int64_t kh_kw);   /* kh_kw 0: dense */
/* a planned TT layer's tensors: core.0 .. core.{n-1} (conv: the spatial core first), then the
 * bias; returns how many */
int     tt_params(const Layer *l, const TTPlan *t, Param *out);
int64_t tt_cost(Flops f);                                /* fwd + bwd, saturating */
double  tt_core_std(const TTPlan *t, bool conv, double var);
const char *tt_order_name(TTOrder o);
void plan_print_table(Ctx *cx, const Spec *sp, const Plan *pl, FILE *out);
void plan_print_json(Ctx *cx, const Spec *sp, const Plan *pl, FILE *out);

/* ---- tt_svd.c: TT-SVD (Oseledets 2011), dense tensors to tensor trains ------------------- */

/* Decomposes T (row-major, modes q[0..n-1], q[0] most significant; n = 1..16) into n cores,
 * sweeping left to right. Each cut k = 1..n-1 keeps the smallest rank whose dropped squared
 * singular values sum to at most (eps^2 / (n-1)) ||T||_F^2 (eps >= 0; eps < 0: no such limit),
 * at most max_rank[k-1] (max_rank: n-1 entries, or NULL), and never more than the unfolding
 * bound; both given: the smaller. So with eps: ||T - TT(T)||_F <= eps ||T||_F (in exact
 * arithmetic; the float cores add their rounding). Out: cores[k] malloc'd (ranks[k], q[k],
 * ranks[k+1]) floats, cores 0..n-2 orthonormal as (ranks[k] q[k], ranks[k+1]) matrices;
 * ranks[0..n], ranks[0] = ranks[n] = 1; *rel_err (unless NULL) = ||T - TT||_F / ||T||_F
 * from the float cores rebuilt (the absolute error when ||T|| = 0). Returns 0, or -1 with a
 * message in err (then no core is left allocated). */
int tt_svd(const double *T, int n, const int64_t *q, double eps, const int64_t *max_rank,
           float **cores, int64_t *ranks, double *rel_err, char *err, size_t errlen);

#endif
