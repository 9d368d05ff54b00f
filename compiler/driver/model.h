/* model.h: a compiled, runnable model: the spec, its plan, the JIT's entry points and the
 * four memory blocks. model.c implements it for the train/eval/predict commands; the tests drive
 * the same calls (gradient checks through the generated code, optimizer steps, checkpoints). */
#ifndef TESLAC_MODEL_H
#define TESLAC_MODEL_H

#include "cg.h"
#include "tesla_rt.h"

typedef struct Model {
  Spec     sp;
  Plan     pl;
  Jit     *jit;
  void   (*train_step)(TeslaStep *);   /* forward, loss, backward, optimizer */
  void   (*grad)(TeslaStep *);         /* forward, loss, backward: gradients add up */
  void   (*infer)(TeslaStep *);        /* eval-mode forward (+ loss when y is given) */
  float   *P, *G, *O, *A, *X;          /* the plan's blocks and the input batch */
  int32_t *Y;
  int64_t  in_elems;
  int64_t  t;                          /* optimizer steps taken */
  int64_t  prune_total;                /* the pruning schedule's length in steps (train.c sets
                                          it; checkpoints keep it) */
  TsPool  *pool;
  int      dist;                       /* data-parallel ranks (train.c, dist.c); 0: one process */
  bool     sync_bn;                    /* ... with batchnorm statistics over all of them */
  struct {                             /* early stopping's and --save-best's monitor (train.c;
                                          checkpoints keep it, so that a resume goes on counting) */
    int64_t best_epoch;                /* 0: nothing seen yet */
    int64_t wait;                      /* epochs since the best */
    double  best;
  } watch;
  struct {                             /* what a --resume checkpoint says the run was trained
                                          with (model_load; train.c takes it over the spec's) */
    bool     present;
    uint64_t seed;
    double   lr, val_split;
  } saved;
} Model;

/* m->sp must be checked; plans for `batch`, emits, JITs, allocates, starts `threads` threads
 * (0: all cores). -1 after a diagnostic. */
int  model_build(Ctx *cx, Model *m, int64_t batch, int64_t threads, FILE *say);
int  model_build_ex(Ctx *cx, Model *m, int64_t batch, int64_t threads, FILE *say, bool profile);
void model_free(Model *m);
/* the blocks of m->pl, planned by the caller, without code (teslac build's weights) */
int  model_alloc(Ctx *cx, Model *m);
/* PyTorch's default initialization (or the layer's init:), from `seed` */
void model_init(Model *m, uint64_t seed);
/* a TeslaStep pointing at the model's blocks, everything else zero */
void model_step_init(Model *m, TeslaStep *s);
/* loss (mean) and accuracy over every sample of d */
void model_eval(Model *m, const TsDataset *d, double *loss, double *acc);
/* the same, and with `confusion` (classes x classes, zeroed here; NULL: none) the count of
 * samples of each true class (row) by predicted class (column): the first argmax of the
 * logits, as the generated correct count takes it, so that its diagonal sums to that count */
void model_eval_confusion(Model *m, const TsDataset *d, double *loss, double *acc, int64_t *confusion);
/* safetensors in PyTorch's names and layouts; with optimizer state and position */
int  model_save(Ctx *cx, const Model *m, const char *path, int64_t epoch, TsErr *e);
/* tensor pt in PyTorch's layout and shape into dst (its dims' product of floats), as a
 * checkpoint holds it; a pruned weight dense, zeros included (teslac export). -1: out of memory */
int  model_tensor_get(const Model *m, const PlanTensor *pt, float *dst);
/* the first tensor of the parameter block holding a NaN or an infinity, or NULL */
const char *model_nonfinite(const Model *m);
/* weights (opt false: any safetensors with the right names, e.g. a PyTorch state_dict), or a
 * whole teslac checkpoint (opt true: optimizer state, step, epoch) */
int  model_load(Ctx *cx, Model *m, const char *path, bool opt, int64_t *epoch, TsErr *e);

/* ---- prune.c: pruned weights on the host (patterns, magnitude pruning, CSR in and out) ---- */

const PlanTensor *sparse_tensor(const Model *m, int layer);   /* NULL: the layer is not pruned */
int64_t sparse_nnz(const Model *m, int layer);
void sparse_reset(Model *m);                                  /* every weight kept */
/* the pattern from validated CSR; vals[0] weights, vals[1..] optimizer slots (NULL: zero) */
void sparse_set(Model *m, int layer, const int64_t *crow, const int64_t *col, int64_t nnz,
                const float *const *vals);
/* as CSR: crow (R + 1), col, values of the weight (slot -1) or optimizer slot; NULL: skip */
void sparse_export(const Model *m, int layer, int32_t *crow, int32_t *col, float *vals, int slot);
int  sparse_prune(Model *m, int64_t total);                   /* at step m->t of total */
void sparse_report(const Model *m, FILE *out);

#endif
