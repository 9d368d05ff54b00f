/* cg.h: the code generator's vocabulary. A thin, readable layer over the LLVM 16 C API (in the
 * manner of PostgreSQL's llvmjit_emit.h) so that an op's emitter reads like the loop nest it
 * produces: constants, float pointers at constant offsets, counted loops, stack accumulators,
 * parallel tiles. Values are named v_*, blocks b_*. Also the ABI that generated code shares
 * with the runtime driver (TeslaStep) and the emitter interface every op implements. */
#ifndef TESLAC_CG_H
#define TESLAC_CG_H

#include "teslac.h"

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* ---- the ABI of generated code --------------------------------------------------------- */

/* One argument for every generated function: where the plan's blocks are, this step's
 * scalars, and the outputs. The emitted C header repeats it. */
typedef struct TeslaStep {
  float         *params;     /* the parameter block (trainable tensors and buffers) */
  float         *grads;      /* gradient block (trainable tensors only) */
  float         *opt;        /* optimizer state block */
  float         *acts;       /* activation block */
  const float   *x;          /* (B, input...) this batch */
  const int32_t *y;          /* (B) labels, or NULL (infer: no loss) */
  float          lr;         /* this step's learning rate */
  float          bc1, bc2;   /* Adam bias corrections 1 - beta^t */
  int32_t        t;          /* optimizer step, from 1 */
  uint64_t       seed;       /* dropout stream for this step */
  int32_t        nvalid;     /* rows of the batch that count in loss/correct */
  float          loss;       /* out: summed cross-entropy over the valid rows */
  int32_t        correct;    /* out: valid rows whose argmax is the label */
} TeslaStep;

enum { TS_P, TS_G, TS_O, TS_A, TS_X, TS_Y, TS_LR, TS_BC1, TS_BC2, TS_T, TS_SEED, TS_NVALID,
       TS_LOSS, TS_CORRECT, TS_NFIELDS };

/* ---- the builder ------------------------------------------------------------------------ */

typedef struct Cg {
  struct LLVMOrcOpaqueThreadSafeContext *tsc;
  LLVMContextRef ctx;
  LLVMModuleRef  mod;
  LLVMBuilderRef b;
  LLVMTypeRef    t_void, t_i1, t_i32, t_i64, t_f32, t_ptr, t_step, t_tilefn;
  LLVMValueRef   fn;          /* function being built */
  LLVMValueRef   v_step;      /* its TeslaStep* argument */
  LLVMValueRef   v_base[6];   /* P, G, O, A, X, Y loaded at entry */
  const char    *prefix;      /* the model name: symbol prefix */
  bool           profile;     /* emit ts_prof_mark calls between phases */
  /* an object file (teslac build): tiles run in the calling thread (no ts_parallel_for), and
   * the derived tensors (parameter block from derived_off on) live in the scratch, TS_A at
   * derived_at, so that the weights stay read-only; derived_off 0: the JIT's layout */
  bool           serial;
  int64_t        derived_off, derived_at;
} Cg;

void cg_init(Cg *g, const char *prefix);
void cg_dispose(Cg *g);

LLVMValueRef cg_i64(Cg *g, int64_t v);
LLVMValueRef cg_i32(Cg *g, int32_t v);
LLVMValueRef cg_f32(Cg *g, double v);

/* Start a function `void NAME(TeslaStep *step)` (or a tile `void NAME(TeslaStep *, i64)`),
 * loading the block bases; cg_fn_end adds `ret void`. */
void cg_noinline(Cg *g, LLVMValueRef fn);   /* keep fn out of its callers (O3 cost per function) */
LLVMValueRef cg_fn_begin(Cg *g, const char *name, bool tile, bool exported);
void         cg_fn_end(Cg *g);

/* float* into a block (TS_P .. TS_Y) at a constant element offset, plus an optional index
 * (a derived tensor of TS_P maps into TS_A in an object file) */
LLVMValueRef cg_at(Cg *g, int block, int64_t offset, LLVMValueRef idx);
LLVMValueRef cg_gep(Cg *g, LLVMValueRef base, LLVMValueRef idx);   /* float* + i64 */
LLVMValueRef cg_load(Cg *g, LLVMValueRef p);                        /* float */
void         cg_store(Cg *g, LLVMValueRef v, LLVMValueRef p);
LLVMValueRef cg_field(Cg *g, int field);                            /* load step->field */
LLVMValueRef cg_field_ptr(Cg *g, int field);

/* i64 arithmetic with constant folding, for index expressions */
LLVMValueRef cg_add(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_mul(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_mad(Cg *g, LLVMValueRef a, int64_t k, LLVMValueRef b);   /* a*k + b */

/* float arithmetic */
LLVMValueRef cg_fadd(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fsub(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fmul(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fdiv(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_select(Cg *g, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_fgt(Cg *g, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef cg_call1(Cg *g, const char *intrinsic, LLVMValueRef x);   /* llvm.exp.f32 ... */

/* A counted loop: for (iv = lo; iv < hi; iv++). The body goes between begin and end. */
typedef struct CgLoop { LLVMBasicBlockRef b_head, b_body, b_exit; LLVMValueRef v_iv; } CgLoop;
LLVMValueRef cg_for(Cg *g, CgLoop *L, const char *name, LLVMValueRef lo, LLVMValueRef hi);
void         cg_for_end(Cg *g, CgLoop *L);

/* A float accumulator on the stack (promoted to a register by the optimizer). */
LLVMValueRef cg_var(Cg *g, const char *name, LLVMValueRef init);

/* if (cond) { ... } */
typedef struct CgIf { LLVMBasicBlockRef b_then, b_done; } CgIf;
void cg_if(Cg *g, CgIf *c, LLVMValueRef cond);
void cg_if_end(Cg *g, CgIf *c);

/* Split [0, ntiles) over the runtime's thread pool: emits a tile function whose body `body`
 * builds (given the tile index), and a call to ts_parallel_for in the current function.
 * `name` must say everything the body depends on (layer, phase, mode): entry points that ask
 * for the same name share one tile function. */
typedef void (*CgTileBody)(Cg *g, LLVMValueRef v_tile, void *arg);
void cg_parallel(Cg *g, const char *name, int64_t ntiles, CgTileBody body, void *arg);
/* The same tiles run one after another in this thread (work too small to be worth waking the
 * pool), still one shared tile function. */
void cg_serial(Cg *g, const char *name, int64_t ntiles, CgTileBody body, void *arg);

/* With g->profile: the phase that just ended is `id` (ts_prof_mark); -1 restarts the clock. */
void cg_prof(Cg *g, int32_t id);

/* Call a kernel from the bitcode library (kernels/kernels.c) by name; args are i64 or ptr. */
LLVMValueRef cg_kernel(Cg *g, const char *name, LLVMValueRef *args, int nargs);

/* ---- the op emitters --------------------------------------------------------------------- */

/* Where one layer's tensors are, as element offsets in their blocks. */
typedef struct EmitLayer {
  const Layer     *l;
  const PlanLayer *pl;
  int64_t B;                        /* batch, a constant */
  int     in_block;  int64_t in;    /* its input: TS_X (the batch) or TS_A */
  int     out_block; int64_t out;   /* its output: TS_A, or its input's place for views */
  bool    act;                      /* a following relu/leaky_relu is fused into this op's
                                       output loop: y = y > 0 ? y : act_slope y */
  double  act_slope;
  bool    fused;                    /* this activation was fused into its producer, or this
                                       batchnorm folded into it (inference): a view */
  bool    folded;                   /* w[0], w[1] are the batchnorm-folded weight and bias */
  int64_t aux;                      /* saved for the backward in TS_A (argmax, stats, mask) */
  int64_t din, dout;                /* gradients in TS_A; din < 0: not needed */
  int64_t w[4], dw[4];              /* its tensors in TS_P, their gradients in TS_G (-1: none);
                                       a TT layer: w[0] its formed weight (TT_FORM), w[1] bias */
  int     ncores;                   /* a TT layer's cores (file order: conv's spatial first) */
  int64_t core[TT_MAXD + 1], dcore[TT_MAXD + 1];
  bool    train;
  int     sync_ranks;               /* data-parallel batchnorm with statistics over this many
                                       ranks' batches (tesla_dist_sum); 0: this batch's */
} EmitLayer;

typedef struct OpEmit {
  void (*fwd)(Cg *g, const EmitLayer *e);
  void (*bwd)(Cg *g, const EmitLayer *e);
  bool fuses_act;   /* fwd applies e->act to its output, and bwd never reads its output */
} OpEmit;

/* y > 0 ? y : slope y  (relu: slope 0) */
LLVMValueRef cg_act(Cg *g, LLVMValueRef y, double slope);
/* the fused activation (e->act) over columns [lo, hi) of every row of e's output, rows of
 * `row` floats: run right after a tile wrote them, while they are in cache */
void cg_act_cols(Cg *g, const EmitLayer *e, int64_t row, LLVMValueRef lo, LLVMValueRef hi);

/* ---- tt_emit.c: tensor-train layers (the plan's TTPlan in e->pl->tt) -------------------- */

/* dense TT_LTR / TT_RTL: y = act(x W^T + b) as a chain of GEMMs over the cores */
void tt_emit_chain_fwd(Cg *g, const EmitLayer *e);
void tt_emit_chain_bwd(Cg *g, const EmitLayer *e);
/* the chain's steps alone, S_0 -> S_d and back to dS_0 (need_ds0) in the plan's states:
 * conv's direct path fills S_0 (r0, C, B, H' W') from its spatial core and reads S_d (K, B,
 * H' W') itself (op_conv.c); tt_dstate: where dS_k is */
void tt_emit_chain_steps_fwd(Cg *g, const EmitLayer *e);
void tt_emit_chain_steps_bwd(Cg *g, const EmitLayer *e, bool need_ds0);
int64_t tt_dstate(const EmitLayer *e, int k);
/* TT_FORM (dense and conv): the full weight from the cores into w[0] (dense (IN, OUT), conv
 * (K, C, kh, kw)); and back: the cores' gradients from dw[0], which it zeroes */
void tt_emit_form(Cg *g, const EmitLayer *e);
void tt_emit_form_bwd(Cg *g, const EmitLayer *e);

/* ---- sp_emit.c: pruned dense layers on the CSR kernels (the plan's SK_CSR) ---------------- */

void sp_emit_dense_fwd(Cg *g, const EmitLayer *e);
void sp_emit_dense_bwd(Cg *g, const EmitLayer *e);

/* ---- emit.c: the module ----------------------------------------------------------------- */

bool    emit_supported(Ctx *cx, const Spec *sp);      /* every layer has emitters */
void    emit_module(Cg *g, const Spec *sp, const Plan *pl);   /* EMIT_ALL */
/* some of them: EMIT_PREPARE makes the inference's batchnorm folds <name>_prepare, a function
 * of their own (emit_has_prepare: there are some), and <name>_infer the forward alone */
enum { EMIT_TRAIN = 1, EMIT_GRAD = 2, EMIT_INFER = 4, EMIT_PREPARE = 8, EMIT_ALL = 7 };
void    emit_functions(Cg *g, const Spec *sp, const Plan *pl, unsigned what);
bool    emit_has_prepare(const Spec *sp, const Plan *pl);
int64_t emit_output_offset(const Spec *sp, const Plan *pl);   /* last layer's output in acts */
/* where <name>_infer leaves the logits its loss and correct count read: TS_A or TS_X, offset */
void    emit_logits_at(const Spec *sp, const Plan *pl, int *block, int64_t *off);

/* ---- obj_emit.c: the module of an object file (teslac build) ------------------------------ */

typedef struct ObjModel {
  const Spec *sp;               /* sp->name: the C prefix of every symbol */
  const Plan *pl[2];            /* at the spec's batch; and at batch 1 (the short tail) */
  int         nplans;
  bool        train_step;       /* NAME_train_* too */
  const void *weights;          /* the weights image (4 derived_off bytes); NULL: external */
  uint64_t    weights_hash;     /* FNV-1a 64 of the image */
  int         ptr_bits;         /* the target's size_t */
} ObjModel;

typedef struct ObjLayout {
  char    iname[2][160];        /* each plan's functions: NAME__b<batch>_infer, ... */
  int64_t derived_at[2], out[2];  /* floats in the scratch: derived tensors, the output */
  int64_t pad_x;                /* floats in the scratch: a padded input batch */
  int64_t infer_scratch, train_scratch;            /* bytes */
  int64_t state_bytes, state_params, state_grads, state_opt;   /* the training state, bytes */
} ObjLayout;

void    obj_layout(const ObjModel *om, ObjLayout *lo);
int64_t lo_weights_bytes(const ObjModel *om);
/* the model's functions (serial, g->serial set by the caller) and the C ABI around them */
void    emit_object(Cg *g, const ObjModel *om, const ObjLayout *lo);

/* ---- jit.c: optimize for the host and JIT ---------------------------------------------- */

typedef struct Jit Jit;
typedef struct JitTimes { double emit, opt, codegen; bool cached; } JitTimes;

/* Emits the model in `nparts` parts (one per core), each optimized at O3 for this CPU (with the
 * kernel bitcode linked in) and compiled to an object file in its own thread; an ORC LLJIT
 * links them with this process (the runtime's ts_parallel_for, libm) and the entry points
 * <name>_train_step, _grad and _infer are looked up. -1 with a diagnostic on any LLVM error. */
int  jit_compile(Ctx *cx, const Spec *sp, const Plan *pl, bool profile, int nparts, Jit **out,
                 JitTimes *times);
void (*jit_fn(Jit *j, const char *suffix))(TeslaStep *);
void jit_free(Jit *j);
/* ---- jit_cache.c: compiled objects reused across runs ----------------------------------- */

typedef struct JitCacheKey { bool valid; char hex[33]; char desc[4096]; } JitCacheKey;

void jit_cache_enable(bool on);   /* default on; `--no-cache` turns it off */
/* the key of a freshly emitted module (before the kernels are linked); -1 when off */
int  jit_cache_key(Cg *g, const char *cpu, const char *features, int nparts, JitCacheKey *k);
/* 1 and the parts' objects on a hit; 0 on a miss (a damaged entry: a warning, then a miss) */
int  jit_cache_lookup(const JitCacheKey *k, int nparts, LLVMMemoryBufferRef *objs);
/* the parts' objects under the key (a warning if it cannot be written) */
void jit_cache_store(const JitCacheKey *k, int nparts, LLVMMemoryBufferRef *objs);

/* Link the kernels and optimize in place for a target machine (jit and object files). */
int  cg_link_kernels(Ctx *cx, Cg *g, LLVMTargetMachineRef tm);
/* the wide (AVX-512) kernel build for these target features, else the narrow one */
bool cg_wide_kernels(const char *features);
extern const char *const jit_codegen_opts;   /* the JIT's code generation options, for the cache key (jit.c) */
int  cg_optimize(Ctx *cx, Cg *g, LLVMTargetMachineRef tm);
LLVMTargetMachineRef cg_host_machine(Ctx *cx);
/* this CPU's name and features as the JIT compiles for them (LLVMDisposeMessage both) */
void cg_host_cpu(char **cpu, char **features);
/* the CPU LLVM 16 knows nearest to one it calls "generic", from its vendor and features; NULL
 * when none fits (kept generic) */
const char *cg_nearest_cpu(bool amd, const char *features);
/* the JIT's CPU name, and why when it is not LLVM's (a CPU newer than LLVM 16) */
void cg_host_cpu_describe(char *buf, size_t n);
/* A target machine for an object file: triple NULL = this machine's, cpu NULL = "host" there
 * and the triple's default elsewhere (cortex-m4 for thumbv7em). An unknown triple or CPU: a
 * diagnostic and NULL. */
LLVMTargetMachineRef cg_target_machine(Ctx *cx, const char *triple, const char *cpu);

/* ---- tiles (cg.c): splitting a dimension for the pool ----------------------------------- */

int64_t cg_ceil_div(int64_t a, int64_t b);
/* a tile width near `target` dividing n, a multiple of `quantum` (else target, and a tail) */
int64_t cg_tile_width(int64_t n, int64_t target, int64_t quantum);
/* tile t of [0, n) in widths w, calling f with constant-width bounds (the tail separately) */
typedef void (*CgTileCall)(Cg *g, const EmitLayer *e, LLVMValueRef lo, LLVMValueRef hi);
void cg_tile_call(Cg *g, const EmitLayer *e, LLVMValueRef t, int64_t w, int64_t n, CgTileCall f);
/* [t w, min(t w + w, n)) as values */
void cg_tile_range(Cg *g, LLVMValueRef t, int64_t w, int64_t n, LLVMValueRef *lo, LLVMValueRef *hi);
/* the name of a layer's tile function: layer, phase `what`, mode and every offset it uses */
void cg_tile_name(char *buf, size_t n, const EmitLayer *e, const char *what);
/* float* to the layer's input (the batch or an activation) */
LLVMValueRef cg_in_ptr(Cg *g, const EmitLayer *e);

#define OP(id, name, def) extern const OpEmit def##_emit;
#include "ops.def"
#undef OP

#endif
