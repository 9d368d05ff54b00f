/* obj_emit.c: the module of an object file (teslac build). The model's functions are emitted as
 * for the JIT, once per plan (the spec's batch, and batch 1 for short calls), but serial (no
 * thread pool: the object needs nothing beyond libc and libm) and with the derived tensors
 * (folded batchnorms, formed TT weights) in the caller's scratch, so that the weights are
 * read-only data and every call is reentrant. Around them, the C ABI the header (driver/
 * build.c) declares, with NAME the model's name:
 *
 *   void  NAME_infer_weights(const void *w, const float *x, float *y, int n, void *scratch)
 *   void  NAME_infer(const float *x, float *y, int n, void *scratch)        (embedded weights)
 *   int   NAME_check_weights(const void *w, size_t size)      0: the size and hash are right
 *   void  NAME_train_init_weights(void *state, const void *w)                   (--train-step)
 *   void  NAME_train_init(void *state)                                    (embedded weights)
 *   float NAME_train_step_lr(void *state, const float *x, const int32_t *y, float lr, void *s)
 *   float NAME_train_step(void *state, const float *x, const int32_t *y, void *scratch)
 *   const void *NAME_train_weights(const void *state)
 *
 * NAME_infer runs full batches on the batch plan, and a short tail row by row on the batch-1
 * plan when that is cheaper than one padded batch. The training state is one block: a 64-byte
 * header (the step count), the weights (the image a checkpoint's tensors make, as embedded),
 * the gradients, the optimizer state. Weights, gradients and the step follow the JIT's train
 * step exactly, so that the object trains to the same bytes as `teslac train`. */
#include "cg.h"

#include <string.h>

#include "tesla_rt.h"   /* TS_FNV1A_TESLA: the hash build.c computes */

static LLVMValueRef fn_of(Cg *g, const char *iname, const char *what) {
  char name[200];
  snprintf(name, sizeof name, "%s_%s", iname, what);
  return LLVMGetNamedFunction(g->mod, name);
}

static LLVMValueRef bytes_at(Cg *g, LLVMValueRef base, LLVMValueRef off) {   /* i8* + i64 */
  return LLVMBuildInBoundsGEP2(g->b, LLVMInt8TypeInContext(g->ctx), base, &off, 1, "");
}

static void set_field(Cg *g, LLVMValueRef step, int field, LLVMValueRef v) {
  LLVMBuildStore(g->b, v, LLVMBuildStructGEP2(g->b, g->t_step, step, (unsigned)field, ""));
}

/* a TeslaStep on the stack, zeroed */
static LLVMValueRef new_step(Cg *g) {
  LLVMValueRef s = LLVMBuildAlloca(g->b, g->t_step, "step");
  LLVMBuildStore(g->b, LLVMConstNull(g->t_step), s);
  return s;
}

static void call_step_fn(Cg *g, LLVMValueRef f, LLVMValueRef step) {
  LLVMTypeRef ft = LLVMFunctionType(g->t_void, &g->t_ptr, 1, 0);
  LLVMBuildCall2(g->b, ft, f, &step, 1, "");
}

static void copy(Cg *g, LLVMValueRef dst, LLVMValueRef src, LLVMValueRef nbytes) {
  LLVMBuildMemCpy(g->b, dst, 4, src, 4, nbytes);
}

static LLVMValueRef begin(Cg *g, const char *name, LLVMTypeRef ret, LLVMTypeRef *args, int n) {
  LLVMValueRef f = LLVMAddFunction(g->mod, name, LLVMFunctionType(ret, args, (unsigned)n, 0));
  g->fn = f;
  LLVMPositionBuilderAtEnd(g->b, LLVMAppendBasicBlockInContext(g->ctx, f, "entry"));
  return f;
}

/* ---- inference --------------------------------------------------------------------------- */

static void emit_infer_weights(Cg *g, const ObjModel *om, const ObjLayout *lo) {
  const Spec *sp = om->sp;
  char name[200];
  snprintf(name, sizeof name, "%s_infer_weights", sp->name);
  LLVMTypeRef args[5] = {g->t_ptr, g->t_ptr, g->t_ptr, g->t_i32, g->t_ptr};
  LLVMValueRef f = begin(g, name, g->t_void, args, 5);
  LLVMValueRef w = LLVMGetParam(f, 0), x = LLVMGetParam(f, 1), y = LLVMGetParam(f, 2);
  LLVMValueRef n = LLVMBuildSExt(g->b, LLVMGetParam(f, 3), g->t_i64, "n"), scratch = LLVMGetParam(f, 4);
  int64_t B = om->pl[0]->batch, IN = shape_elems(&sp->input), K = sp->classes;
  LLVMValueRef steps[2];
  for (int k = 0; k < om->nplans; k++) {
    steps[k] = new_step(g);
    set_field(g, steps[k], TS_P, w);
    set_field(g, steps[k], TS_A, scratch);
    set_field(g, steps[k], TS_NVALID, cg_i32(g, (int32_t)om->pl[k]->batch));
  }
  LLVMValueRef q = LLVMBuildSDiv(g->b, n, cg_i64(g, B), "q"), r = LLVMBuildSRem(g->b, n, cg_i64(g, B), "r");
  /* the tail: row by row at batch 1 while that is cheaper than one padded batch */
  int64_t thresh = om->nplans > 1 ? (B + 3) / 4 : 1;
  LLVMValueRef padded = LLVMBuildICmp(g->b, LLVMIntSGE, r, cg_i64(g, thresh), "padded");
  LLVMValueRef use0 = LLVMBuildOr(g->b, LLVMBuildICmp(g->b, LLVMIntSGT, q, cg_i64(g, 0), ""), padded, "");
  LLVMValueRef f0 = fn_of(g, lo->iname[0], "infer"), p0 = fn_of(g, lo->iname[0], "prepare");
  LLVMValueRef out0 = bytes_at(g, scratch, cg_i64(g, 4 * lo->out[0]));
  CgIf c;
  if (p0) {
    cg_if(g, &c, use0);
    call_step_fn(g, p0, steps[0]);
    cg_if_end(g, &c);
  }
  CgLoop L;
  LLVMValueRef b = cg_for(g, &L, "batch", cg_i64(g, 0), q);
  set_field(g, steps[0], TS_X, bytes_at(g, x, cg_mul(g, b, cg_i64(g, 4 * B * IN))));
  call_step_fn(g, f0, steps[0]);
  copy(g, bytes_at(g, y, cg_mul(g, b, cg_i64(g, 4 * B * K))), out0, cg_i64(g, 4 * B * K));
  cg_for_end(g, &L);
  LLVMValueRef done = cg_mul(g, q, cg_i64(g, B));   /* rows done */
  CgIf tail;
  cg_if(g, &tail, LLVMBuildICmp(g->b, LLVMIntSGT, r, cg_i64(g, 0), ""));
  /* one padded batch: the tail's rows, then zeros (eval mode: rows are independent) */
  LLVMBasicBlockRef b_pad = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "pad");
  LLVMBasicBlockRef b_rows = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "rows");
  LLVMBasicBlockRef b_end = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tail_end");
  LLVMBuildCondBr(g->b, padded, b_pad, b_rows);
  LLVMPositionBuilderAtEnd(g->b, b_pad);
  LLVMValueRef pad = bytes_at(g, scratch, cg_i64(g, 4 * lo->pad_x));
  LLVMValueRef rb = cg_mul(g, r, cg_i64(g, 4 * IN));
  copy(g, pad, bytes_at(g, x, cg_mul(g, done, cg_i64(g, 4 * IN))), rb);
  LLVMBuildMemSet(g->b, bytes_at(g, pad, rb), LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0),
                  LLVMBuildSub(g->b, cg_i64(g, 4 * B * IN), rb, ""), 4);
  set_field(g, steps[0], TS_X, pad);
  call_step_fn(g, f0, steps[0]);
  copy(g, bytes_at(g, y, cg_mul(g, done, cg_i64(g, 4 * K))), out0, cg_mul(g, r, cg_i64(g, 4 * K)));
  LLVMBuildBr(g->b, b_end);
  LLVMPositionBuilderAtEnd(g->b, b_rows);
  if (om->nplans > 1) {
    LLVMValueRef f1 = fn_of(g, lo->iname[1], "infer"), p1 = fn_of(g, lo->iname[1], "prepare");
    if (p1) call_step_fn(g, p1, steps[1]);
    LLVMValueRef j = cg_for(g, &L, "row", cg_i64(g, 0), r);
    LLVMValueRef row = cg_add(g, done, j);
    set_field(g, steps[1], TS_X, bytes_at(g, x, cg_mul(g, row, cg_i64(g, 4 * IN))));
    call_step_fn(g, f1, steps[1]);
    copy(g, bytes_at(g, y, cg_mul(g, row, cg_i64(g, 4 * K))), bytes_at(g, scratch, cg_i64(g, 4 * lo->out[1])),
         cg_i64(g, 4 * K));
    cg_for_end(g, &L);
  }
  LLVMBuildBr(g->b, b_end);
  LLVMPositionBuilderAtEnd(g->b, b_end);
  cg_if_end(g, &tail);
  LLVMBuildRetVoid(g->b);
}

/* NAME_infer and NAME_train_init: the weights-taking versions on the embedded weights */
static void emit_embedded(Cg *g, const ObjModel *om, LLVMValueRef weights) {
  char name[200], target[200];
  snprintf(name, sizeof name, "%s_infer", om->sp->name);
  snprintf(target, sizeof target, "%s_infer_weights", om->sp->name);
  LLVMTypeRef args[5] = {g->t_ptr, g->t_ptr, g->t_ptr, g->t_i32, g->t_ptr};
  LLVMValueRef f = begin(g, name, g->t_void, args + 1, 4);
  LLVMValueRef a[5] = {weights, LLVMGetParam(f, 0), LLVMGetParam(f, 1), LLVMGetParam(f, 2), LLVMGetParam(f, 3)};
  LLVMValueRef t = LLVMGetNamedFunction(g->mod, target);
  LLVMBuildCall2(g->b, LLVMGlobalGetValueType(t), t, a, 5, "");
  LLVMBuildRetVoid(g->b);
  if (!om->train_step) return;
  snprintf(name, sizeof name, "%s_train_init", om->sp->name);
  snprintf(target, sizeof target, "%s_train_init_weights", om->sp->name);
  f = begin(g, name, g->t_void, args, 1);
  LLVMValueRef b[2] = {LLVMGetParam(f, 0), weights};
  t = LLVMGetNamedFunction(g->mod, target);
  LLVMBuildCall2(g->b, LLVMGlobalGetValueType(t), t, b, 2, "");
  LLVMBuildRetVoid(g->b);
}

/* FNV-1a 64 over the bytes, as build.c computes it */
static void emit_check_weights(Cg *g, const ObjModel *om, LLVMTypeRef t_size) {
  char name[200];
  snprintf(name, sizeof name, "%s_check_weights", om->sp->name);
  LLVMTypeRef args[2] = {g->t_ptr, t_size};
  LLVMValueRef f = begin(g, name, g->t_i32, args, 2);
  LLVMValueRef size = LLVMBuildZExt(g->b, LLVMGetParam(f, 1), g->t_i64, "");
  LLVMBasicBlockRef b_bad = LLVMAppendBasicBlockInContext(g->ctx, f, "bad");
  LLVMBasicBlockRef b_hash = LLVMAppendBasicBlockInContext(g->ctx, f, "hash");
  LLVMValueRef ok = LLVMBuildAnd(g->b, LLVMBuildIsNotNull(g->b, LLVMGetParam(f, 0), ""),
                                 LLVMBuildICmp(g->b, LLVMIntEQ, size, cg_i64(g, lo_weights_bytes(om)), ""), "");
  LLVMBuildCondBr(g->b, ok, b_hash, b_bad);
  LLVMPositionBuilderAtEnd(g->b, b_bad);
  LLVMBuildRet(g->b, cg_i32(g, -1));
  LLVMPositionBuilderAtEnd(g->b, b_hash);
  LLVMValueRef h = cg_var(g, "h", LLVMConstInt(g->t_i64, TS_FNV1A_TESLA, 0));
  CgLoop L;
  LLVMValueRef i = cg_for(g, &L, "byte", cg_i64(g, 0), size);
  LLVMValueRef byte = LLVMBuildLoad2(g->b, LLVMInt8TypeInContext(g->ctx), bytes_at(g, LLVMGetParam(f, 0), i), "");
  LLVMValueRef hv = LLVMBuildXor(g->b, LLVMBuildLoad2(g->b, g->t_i64, h, ""), LLVMBuildZExt(g->b, byte, g->t_i64, ""), "");
  LLVMBuildStore(g->b, LLVMBuildMul(g->b, hv, LLVMConstInt(g->t_i64, 1099511628211ull, 0), ""), h);
  cg_for_end(g, &L);
  LLVMValueRef same = LLVMBuildICmp(g->b, LLVMIntEQ, LLVMBuildLoad2(g->b, g->t_i64, h, ""),
                                    LLVMConstInt(g->t_i64, om->weights_hash, 0), "");
  LLVMBuildRet(g->b, LLVMBuildSelect(g->b, same, cg_i32(g, 0), cg_i32(g, -1), ""));
}

/* ---- training ------------------------------------------------------------------------------ */

static void emit_train(Cg *g, const ObjModel *om, const ObjLayout *lo) {
  const Spec *sp = om->sp;
  const Plan *pl = om->pl[0];
  const TrainCfg *tc = &sp->train;
  char name[200];
  /* init: the weights into the state, gradients and optimizer state zero, step 0 */
  snprintf(name, sizeof name, "%s_train_init_weights", sp->name);
  LLVMTypeRef args[5] = {g->t_ptr, g->t_ptr, g->t_ptr, g->t_f32, g->t_ptr};
  LLVMValueRef f = begin(g, name, g->t_void, args, 2);
  LLVMValueRef st = LLVMGetParam(f, 0);
  LLVMValueRef zero8 = LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0);
  LLVMBuildMemSet(g->b, st, zero8, cg_i64(g, lo->state_bytes), 8);
  copy(g, bytes_at(g, st, cg_i64(g, lo->state_params)), LLVMGetParam(f, 1), cg_i64(g, lo_weights_bytes(om)));
  LLVMBuildRetVoid(g->b);

  snprintf(name, sizeof name, "%s_train_weights", sp->name);
  f = begin(g, name, g->t_ptr, args, 1);
  LLVMBuildRet(g->b, bytes_at(g, LLVMGetParam(f, 0), cg_i64(g, lo->state_params)));

  /* one step, as train.c takes it: t += 1, Adam's bias corrections in double, the dropout
   * stream of (seed, t) */
  snprintf(name, sizeof name, "%s_train_step_lr", sp->name);
  f = begin(g, name, g->t_f32, args, 5);
  st = LLVMGetParam(f, 0);
  LLVMValueRef s = new_step(g);
  LLVMValueRef t = LLVMBuildAdd(g->b, LLVMBuildLoad2(g->b, g->t_i64, st, "t"), cg_i64(g, 1), "t1");
  LLVMBuildStore(g->b, t, st);
  set_field(g, s, TS_P, bytes_at(g, st, cg_i64(g, lo->state_params)));
  set_field(g, s, TS_G, bytes_at(g, st, cg_i64(g, lo->state_grads)));
  set_field(g, s, TS_O, bytes_at(g, st, cg_i64(g, lo->state_opt)));
  set_field(g, s, TS_A, LLVMGetParam(f, 4));
  set_field(g, s, TS_X, LLVMGetParam(f, 1));
  set_field(g, s, TS_Y, LLVMGetParam(f, 2));
  set_field(g, s, TS_LR, LLVMGetParam(f, 3));
  LLVMTypeRef t_f64 = LLVMDoubleTypeInContext(g->ctx);
  LLVMTypeRef pa[2] = {t_f64, t_f64};
  LLVMTypeRef powt = LLVMFunctionType(t_f64, pa, 2, 0);
  LLVMValueRef powf_ = LLVMGetNamedFunction(g->mod, "llvm.pow.f64");
  if (!powf_) powf_ = LLVMAddFunction(g->mod, "llvm.pow.f64", powt);
  LLVMValueRef td = LLVMBuildSIToFP(g->b, t, t_f64, "");
  double betas[2] = {tc->beta1, tc->beta2};
  for (int k = 0; k < 2; k++) {
    LLVMValueRef pv[2] = {LLVMConstReal(t_f64, betas[k]), td};
    LLVMValueRef bc = LLVMBuildFSub(g->b, LLVMConstReal(t_f64, 1), LLVMBuildCall2(g->b, powt, powf_, pv, 2, ""), "");
    set_field(g, s, k ? TS_BC2 : TS_BC1, LLVMBuildFPTrunc(g->b, bc, g->t_f32, ""));
  }
  set_field(g, s, TS_T, LLVMBuildTrunc(g->b, t, g->t_i32, ""));
  set_field(g, s, TS_SEED, LLVMBuildAdd(g->b, LLVMConstInt(g->t_i64, tc->seed * 0x9E3779B97F4A7C15ull, 0), t, ""));
  set_field(g, s, TS_NVALID, cg_i32(g, (int32_t)pl->batch));
  call_step_fn(g, fn_of(g, lo->iname[0], "train_step"), s);
  LLVMValueRef loss = LLVMBuildLoad2(g->b, g->t_f32, LLVMBuildStructGEP2(g->b, g->t_step, s, TS_LOSS, ""), "");
  LLVMBuildRet(g->b, LLVMBuildFDiv(g->b, loss, cg_f32(g, (double)pl->batch), ""));

  snprintf(name, sizeof name, "%s_train_step", sp->name);
  LLVMTypeRef a4[4] = {g->t_ptr, g->t_ptr, g->t_ptr, g->t_ptr};
  f = begin(g, name, g->t_f32, a4, 4);
  snprintf(name, sizeof name, "%s_train_step_lr", sp->name);
  LLVMValueRef tgt = LLVMGetNamedFunction(g->mod, name);
  LLVMValueRef ca[5] = {LLVMGetParam(f, 0), LLVMGetParam(f, 1), LLVMGetParam(f, 2), cg_f32(g, tc->lr), LLVMGetParam(f, 3)};
  LLVMBuildRet(g->b, LLVMBuildCall2(g->b, LLVMGlobalGetValueType(tgt), tgt, ca, 5, ""));
}

/* ---- the layout and the module ---------------------------------------------------------------- */

static int64_t al16(int64_t n) { return (n + 15) / 16 * 16; }

int64_t lo_weights_bytes(const ObjModel *om) { return 4 * om->pl[0]->derived_off; }

void obj_layout(const ObjModel *om, ObjLayout *lo) {
  memset(lo, 0, sizeof *lo);
  int64_t top = 0;
  for (int k = 0; k < om->nplans; k++) {
    const Plan *pl = om->pl[k];
    snprintf(lo->iname[k], sizeof lo->iname[k], "%s__b%lld", om->sp->name, (long long)pl->batch);
    /* inference alone ends where the activation gradients would begin */
    lo->derived_at[k] = al16(k == 0 && om->train_step ? pl->act_block : pl->grad_buf[0]);
    lo->out[k] = emit_output_offset(om->sp, pl);
    int64_t end = lo->derived_at[k] + al16(pl->param_block - pl->derived_off);
    if (k == 0) lo->train_scratch = 4 * end;
    if (end > top) top = end;
  }
  lo->pad_x = top;
  lo->infer_scratch = 4 * (top + al16(om->pl[0]->batch * shape_elems(&om->sp->input)));
  const Plan *p0 = om->pl[0];
  lo->state_params = 64;
  lo->state_grads = lo->state_params + 4 * al16(p0->derived_off);
  lo->state_opt = lo->state_grads + 4 * al16(p0->grad_block);
  lo->state_bytes = lo->state_opt + 4 * al16(p0->opt_block);
}

void emit_object(Cg *g, const ObjModel *om, const ObjLayout *lo) {
  for (int k = 0; k < om->nplans; k++) {
    Spec s = *om->sp;
    s.name = lo->iname[k];
    g->prefix = lo->iname[k];
    g->derived_off = om->pl[k]->derived_off, g->derived_at = lo->derived_at[k];
    emit_functions(g, &s, om->pl[k], EMIT_PREPARE | (k == 0 && om->train_step ? EMIT_TRAIN : 0));
  }
  g->prefix = om->sp->name, g->derived_off = 0;
  emit_infer_weights(g, om, lo);
  if (om->train_step) emit_train(g, om, lo);
  LLVMTypeRef t_size = om->ptr_bits == 32 ? g->t_i32 : g->t_i64;
  if (om->weights) {
    /* the weights as one read-only array, 64-byte aligned */
    char name[200];
    snprintf(name, sizeof name, "%s_weights", om->sp->name);
    LLVMValueRef init = LLVMConstStringInContext(g->ctx, om->weights, (unsigned)lo_weights_bytes(om), 1);
    LLVMValueRef gv = LLVMAddGlobal(g->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMInternalLinkage);
    LLVMSetAlignment(gv, 64);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    emit_embedded(g, om, gv);
  } else
    emit_check_weights(g, om, t_size);
}
