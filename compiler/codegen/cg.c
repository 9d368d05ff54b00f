/* cg.c: the helpers of cg.h over the LLVM C API. Nothing model-specific lives here; emit.c
 * and the op emitters build on it. Loops are emitted in the canonical form LLVM's loop
 * vectorizer expects (preheader, header phi, latch), and constants stay constants so that
 * the O3 pipeline unrolls and vectorizes loops whose trip counts are the model's shapes. */
#include "cg.h"

#include <llvm-c/Orc.h>
#include <stdio.h>
#include <string.h>

void cg_init(Cg *g, const char *prefix) {
  memset(g, 0, sizeof *g);
  g->tsc = LLVMOrcCreateNewThreadSafeContext();   /* so that the JIT can own the module */
  g->ctx = LLVMOrcThreadSafeContextGetContext(g->tsc);
  g->mod = LLVMModuleCreateWithNameInContext(prefix, g->ctx);
  g->b = LLVMCreateBuilderInContext(g->ctx);
  g->prefix = prefix;
  g->t_void = LLVMVoidTypeInContext(g->ctx);
  g->t_i1 = LLVMInt1TypeInContext(g->ctx);
  g->t_i32 = LLVMInt32TypeInContext(g->ctx);
  g->t_i64 = LLVMInt64TypeInContext(g->ctx);
  g->t_f32 = LLVMFloatTypeInContext(g->ctx);
  g->t_ptr = LLVMPointerTypeInContext(g->ctx, 0);
  /* TeslaStep, field for field (cg.h) */
  LLVMTypeRef f[TS_NFIELDS] = {
      [TS_P] = g->t_ptr, [TS_G] = g->t_ptr, [TS_O] = g->t_ptr, [TS_A] = g->t_ptr,
      [TS_X] = g->t_ptr, [TS_Y] = g->t_ptr, [TS_LR] = g->t_f32, [TS_BC1] = g->t_f32,
      [TS_BC2] = g->t_f32, [TS_T] = g->t_i32, [TS_SEED] = g->t_i64, [TS_NVALID] = g->t_i32,
      [TS_LOSS] = g->t_f32, [TS_CORRECT] = g->t_i32};
  g->t_step = LLVMStructCreateNamed(g->ctx, "TeslaStep");
  LLVMStructSetBody(g->t_step, f, TS_NFIELDS, 0);
  LLVMTypeRef targs[2] = {g->t_ptr, g->t_i64};
  g->t_tilefn = LLVMFunctionType(g->t_void, targs, 2, 0);
}

void cg_dispose(Cg *g) {
  if (g->b) LLVMDisposeBuilder(g->b);
  if (g->mod) LLVMDisposeModule(g->mod);
  if (g->tsc) LLVMOrcDisposeThreadSafeContext(g->tsc);   /* and the context with it */
  memset(g, 0, sizeof *g);
}

LLVMValueRef cg_i64(Cg *g, int64_t v) { return LLVMConstInt(g->t_i64, (unsigned long long)v, 1); }
LLVMValueRef cg_i32(Cg *g, int32_t v) { return LLVMConstInt(g->t_i32, (unsigned long long)(int64_t)v, 1); }
LLVMValueRef cg_f32(Cg *g, double v) { return LLVMConstReal(g->t_f32, v); }

LLVMValueRef cg_field_ptr(Cg *g, int field) {
  return LLVMBuildStructGEP2(g->b, g->t_step, g->v_step, (unsigned)field, "");
}

LLVMValueRef cg_field(Cg *g, int field) {
  LLVMTypeRef t = field <= TS_Y ? g->t_ptr : field == TS_T || field == TS_NVALID || field == TS_CORRECT
                                                 ? g->t_i32
                                             : field == TS_SEED ? g->t_i64 : g->t_f32;
  return LLVMBuildLoad2(g->b, t, cg_field_ptr(g, field), "");
}

void cg_noinline(Cg *g, LLVMValueRef fn) {
  unsigned k = LLVMGetEnumAttributeKindForName("noinline", 8);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, k, 0));
}

LLVMValueRef cg_fn_begin(Cg *g, const char *name, bool tile, bool exported) {
  LLVMTypeRef args[2] = {g->t_ptr, g->t_i64};
  LLVMTypeRef ft = LLVMFunctionType(g->t_void, args, tile ? 2 : 1, 0);
  g->fn = LLVMAddFunction(g->mod, name, ft);
  if (!exported) LLVMSetLinkage(g->fn, LLVMInternalLinkage);
  /* the blocks never alias each other, and the step struct outlives the call */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  LLVMAddAttributeAtIndex(g->fn, 1, LLVMCreateEnumAttribute(g->ctx, noalias, 0));
  unsigned nounwind = LLVMGetEnumAttributeKindForName("nounwind", 8);
  LLVMAddAttributeAtIndex(g->fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(g->ctx, nounwind, 0));
  g->v_step = LLVMGetParam(g->fn, 0);
  LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "entry");
  LLVMPositionBuilderAtEnd(g->b, entry);
  static const char *const names[6] = {"v_P", "v_G", "v_O", "v_A", "v_X", "v_Y"};
  for (int i = 0; i < 6; i++) {
    g->v_base[i] = LLVMBuildLoad2(g->b, g->t_ptr, cg_field_ptr(g, i), names[i]);
    /* every block is 64-byte aligned (the plan's offsets keep that) */
  }
  return g->fn;
}

void cg_fn_end(Cg *g) { LLVMBuildRetVoid(g->b); }

LLVMValueRef cg_gep(Cg *g, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(g->b, g->t_f32, base, &idx, 1, "");
}

LLVMValueRef cg_at(Cg *g, int block, int64_t offset, LLVMValueRef idx) {
  if (block == TS_P && g->derived_off > 0 && offset >= g->derived_off)   /* object: in scratch */
    block = TS_A, offset = offset - g->derived_off + g->derived_at;
  LLVMValueRef i = cg_i64(g, offset);
  if (idx) i = cg_add(g, i, idx);
  return cg_gep(g, g->v_base[block], i);
}

LLVMValueRef cg_load(Cg *g, LLVMValueRef p) { return LLVMBuildLoad2(g->b, g->t_f32, p, ""); }
void cg_store(Cg *g, LLVMValueRef v, LLVMValueRef p) { LLVMBuildStore(g->b, v, p); }

LLVMValueRef cg_add(Cg *g, LLVMValueRef a, LLVMValueRef b) {
  if (LLVMIsConstant(b) && LLVMConstIntGetSExtValue(b) == 0) return a;
  return LLVMBuildNSWAdd(g->b, a, b, "");
}
LLVMValueRef cg_mul(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildNSWMul(g->b, a, b, ""); }
LLVMValueRef cg_mad(Cg *g, LLVMValueRef a, int64_t k, LLVMValueRef b) {
  LLVMValueRef m = k == 1 ? a : cg_mul(g, a, cg_i64(g, k));
  return b ? cg_add(g, m, b) : m;
}

LLVMValueRef cg_fadd(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFAdd(g->b, a, b, ""); }
LLVMValueRef cg_fsub(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFSub(g->b, a, b, ""); }
LLVMValueRef cg_fmul(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFMul(g->b, a, b, ""); }
LLVMValueRef cg_fdiv(Cg *g, LLVMValueRef a, LLVMValueRef b) { return LLVMBuildFDiv(g->b, a, b, ""); }
LLVMValueRef cg_select(Cg *g, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(g->b, c, a, b, "");
}
LLVMValueRef cg_fgt(Cg *g, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(g->b, LLVMRealOGT, a, b, "");
}

LLVMValueRef cg_call1(Cg *g, const char *intrinsic, LLVMValueRef x) {
  LLVMTypeRef ft = LLVMFunctionType(g->t_f32, &g->t_f32, 1, 0);
  LLVMValueRef f = LLVMGetNamedFunction(g->mod, intrinsic);
  if (!f) f = LLVMAddFunction(g->mod, intrinsic, ft);
  return LLVMBuildCall2(g->b, ft, f, &x, 1, "");
}

LLVMValueRef cg_for(Cg *g, CgLoop *L, const char *name, LLVMValueRef lo, LLVMValueRef hi) {
  LLVMBasicBlockRef b_pre = LLVMGetInsertBlock(g->b);
  char buf[64];
  snprintf(buf, sizeof buf, "%s.head", name);
  L->b_head = LLVMAppendBasicBlockInContext(g->ctx, g->fn, buf);
  snprintf(buf, sizeof buf, "%s.body", name);
  L->b_body = LLVMAppendBasicBlockInContext(g->ctx, g->fn, buf);
  snprintf(buf, sizeof buf, "%s.exit", name);
  L->b_exit = LLVMAppendBasicBlockInContext(g->ctx, g->fn, buf);
  LLVMBuildBr(g->b, L->b_head);
  LLVMPositionBuilderAtEnd(g->b, L->b_head);
  L->v_iv = LLVMBuildPhi(g->b, g->t_i64, name);
  LLVMAddIncoming(L->v_iv, &lo, &b_pre, 1);
  LLVMValueRef c = LLVMBuildICmp(g->b, LLVMIntSLT, L->v_iv, hi, "");
  LLVMBuildCondBr(g->b, c, L->b_body, L->b_exit);
  LLVMPositionBuilderAtEnd(g->b, L->b_body);
  return L->v_iv;
}

void cg_for_end(Cg *g, CgLoop *L) {
  LLVMValueRef next = LLVMBuildNSWAdd(g->b, L->v_iv, cg_i64(g, 1), "");
  LLVMBasicBlockRef b_latch = LLVMGetInsertBlock(g->b);
  LLVMBuildBr(g->b, L->b_head);
  LLVMAddIncoming(L->v_iv, &next, &b_latch, 1);
  LLVMPositionBuilderAtEnd(g->b, L->b_exit);
}

LLVMValueRef cg_var(Cg *g, const char *name, LLVMValueRef init) {
  LLVMBasicBlockRef cur = LLVMGetInsertBlock(g->b);
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(g->fn);
  LLVMValueRef first = LLVMGetFirstInstruction(entry);
  if (first) LLVMPositionBuilderBefore(g->b, first);
  else LLVMPositionBuilderAtEnd(g->b, entry);
  LLVMValueRef a = LLVMBuildAlloca(g->b, LLVMTypeOf(init), name);
  LLVMPositionBuilderAtEnd(g->b, cur);
  LLVMBuildStore(g->b, init, a);
  return a;
}

void cg_if(Cg *g, CgIf *c, LLVMValueRef cond) {
  c->b_then = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "then");
  c->b_done = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "endif");
  LLVMBuildCondBr(g->b, cond, c->b_then, c->b_done);
  LLVMPositionBuilderAtEnd(g->b, c->b_then);
}

void cg_if_end(Cg *g, CgIf *c) {
  LLVMBuildBr(g->b, c->b_done);
  LLVMPositionBuilderAtEnd(g->b, c->b_done);
}

/* the tile function `name`: the first entry point that needs it builds it; the rest share it */
static LLVMValueRef tile_fn_of(Cg *g, const char *name, CgTileBody body, void *arg) {
  char buf[320];
  snprintf(buf, sizeof buf, "%s.%s", g->prefix, name);
  LLVMValueRef tile_fn = LLVMGetNamedFunction(g->mod, buf);
  if (!tile_fn) {
    LLVMValueRef saved_fn = g->fn, saved_step = g->v_step, saved_base[6];
    memcpy(saved_base, g->v_base, sizeof saved_base);
    LLVMBasicBlockRef saved_bb = LLVMGetInsertBlock(g->b);
    tile_fn = cg_fn_begin(g, buf, true, false);
    cg_noinline(g, tile_fn);   /* cg_serial calls it in a loop: keep it one function */
    body(g, LLVMGetParam(tile_fn, 1), arg);
    cg_fn_end(g);
    g->fn = saved_fn, g->v_step = saved_step;
    memcpy(g->v_base, saved_base, sizeof saved_base);
    LLVMPositionBuilderAtEnd(g->b, saved_bb);
  }
  return tile_fn;
}

void cg_serial(Cg *g, const char *name, int64_t ntiles, CgTileBody body, void *arg) {
  LLVMValueRef tile_fn = tile_fn_of(g, name, body, arg);
  CgLoop L;
  LLVMValueRef t = cg_for(g, &L, "serial", cg_i64(g, 0), cg_i64(g, ntiles));
  LLVMValueRef args[2] = {g->v_step, t};
  LLVMBuildCall2(g->b, g->t_tilefn, tile_fn, args, 2, "");
  cg_for_end(g, &L);
}

/* One tile's body as a function of its own (tile index 0, a constant in it), called directly:
 * each layer's phase stays a function of its own size, so that O3's cost grows with the
 * model's layers instead of with the square of one entry point's size (500 small dense layers
 * inlined into one train_step took 480 s and 1.2 GB to compile), and the entry points share it
 * by name. */
static void call_single(Cg *g, const char *name, CgTileBody body, void *arg) {
  char buf[320];
  snprintf(buf, sizeof buf, "%s.%s.one", g->prefix, name);
  LLVMValueRef fn = LLVMGetNamedFunction(g->mod, buf);
  if (!fn) {
    LLVMValueRef saved_fn = g->fn, saved_step = g->v_step, saved_base[6];
    memcpy(saved_base, g->v_base, sizeof saved_base);
    LLVMBasicBlockRef saved_bb = LLVMGetInsertBlock(g->b);
    fn = cg_fn_begin(g, buf, false, false);
    cg_noinline(g, fn);
    body(g, cg_i64(g, 0), arg);
    cg_fn_end(g);
    g->fn = saved_fn, g->v_step = saved_step;
    memcpy(g->v_base, saved_base, sizeof saved_base);
    LLVMPositionBuilderAtEnd(g->b, saved_bb);
  }
  LLVMTypeRef ft = LLVMFunctionType(g->t_void, &g->t_ptr, 1, 0);
  LLVMBuildCall2(g->b, ft, fn, &g->v_step, 1, "");
}

void cg_parallel(Cg *g, const char *name, int64_t ntiles, CgTileBody body, void *arg) {
  if (ntiles <= 1) {   /* one tile: no thread pool, a direct call */
    call_single(g, name, body, arg);
    return;
  }
  if (g->serial) {   /* an object file: no runtime, no threads */
    cg_serial(g, name, ntiles, body, arg);
    return;
  }
  LLVMValueRef tile_fn = tile_fn_of(g, name, body, arg);

  /* void ts_parallel_for(void (*fn)(void *, int64_t), void *ctx, int64_t ntiles) */
  LLVMTypeRef pargs[3] = {g->t_ptr, g->t_ptr, g->t_i64};
  LLVMTypeRef pft = LLVMFunctionType(g->t_void, pargs, 3, 0);
  LLVMValueRef pf = LLVMGetNamedFunction(g->mod, "ts_parallel_for");
  if (!pf) pf = LLVMAddFunction(g->mod, "ts_parallel_for", pft);
  LLVMValueRef args[3] = {tile_fn, g->v_step, cg_i64(g, ntiles)};
  LLVMBuildCall2(g->b, pft, pf, args, 3, "");
}

LLVMValueRef cg_kernel(Cg *g, const char *name, LLVMValueRef *args, int nargs) {
  LLVMTypeRef at[16];
  for (int i = 0; i < nargs && i < 16; i++) at[i] = LLVMTypeOf(args[i]);
  LLVMValueRef f = LLVMGetNamedFunction(g->mod, name);
  LLVMTypeRef ft = f ? LLVMGlobalGetValueType(f) : LLVMFunctionType(g->t_void, at, (unsigned)nargs, 0);
  if (!f) f = LLVMAddFunction(g->mod, name, ft);
  return LLVMBuildCall2(g->b, ft, f, args, (unsigned)nargs, "");
}

void cg_prof(Cg *g, int32_t id) {
  if (!g->profile) return;
  LLVMTypeRef ft = LLVMFunctionType(g->t_void, &g->t_i32, 1, 0);
  LLVMValueRef f = LLVMGetNamedFunction(g->mod, "ts_prof_mark");
  if (!f) f = LLVMAddFunction(g->mod, "ts_prof_mark", ft);
  LLVMValueRef v = cg_i32(g, id);
  LLVMBuildCall2(g->b, ft, f, &v, 1, "");
}

/* ---- tiles ---------------------------------------------------------------------------- */

int64_t cg_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Tile t of [0, n) in tiles of w: [t w, t w + w), the last one [full w, n). Emitted so that
 * every kernel call sees a constant width (the tail gets a call of its own), letting the
 * kernel's row and column remainder dispatch fold away. */
void cg_tile_call(Cg *g, const EmitLayer *e, LLVMValueRef t, int64_t w, int64_t n, CgTileCall f) {
  int64_t full = n / w, tail = n % w;
  if (full == 0) {
    f(g, e, cg_i64(g, 0), cg_i64(g, n));
    return;
  }
  LLVMValueRef lo = cg_mul(g, t, cg_i64(g, w));
  if (!tail) {
    f(g, e, lo, cg_add(g, lo, cg_i64(g, w)));
    return;
  }
  CgIf c;
  LLVMBasicBlockRef b_tail = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tile.tail");
  c.b_then = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tile.full");
  c.b_done = LLVMAppendBasicBlockInContext(g->ctx, g->fn, "tile.done");
  LLVMBuildCondBr(g->b, LLVMBuildICmp(g->b, LLVMIntSLT, t, cg_i64(g, full), ""), c.b_then, b_tail);
  LLVMPositionBuilderAtEnd(g->b, c.b_then);
  f(g, e, lo, cg_add(g, lo, cg_i64(g, w)));
  LLVMBuildBr(g->b, c.b_done);
  LLVMPositionBuilderAtEnd(g->b, b_tail);
  f(g, e, cg_i64(g, full * w), cg_i64(g, n));
  LLVMBuildBr(g->b, c.b_done);
  LLVMPositionBuilderAtEnd(g->b, c.b_done);
}

/* A tile width near `target` that divides n and is a multiple of `quantum`, so that one
 * constant-width kernel instantiation serves every tile (half the code to optimize); else
 * `target` and a tail tile. */
int64_t cg_tile_width(int64_t n, int64_t target, int64_t quantum) {
  if (n <= target) return n;
  for (int64_t d = 0; d <= target / 2; d += quantum) {
    int64_t up = target + d, down = target - d;
    if (n % up == 0) return up;
    if (down >= quantum && n % down == 0) return down;
  }
  return target;
}

/* [t * w, min((t + 1) * w, n)) for loops that do not care about constant widths */
void cg_tile_range(Cg *g, LLVMValueRef t, int64_t w, int64_t n, LLVMValueRef *lo, LLVMValueRef *hi) {
  *lo = cg_mul(g, t, cg_i64(g, w));
  LLVMValueRef end = cg_add(g, *lo, cg_i64(g, w));
  LLVMValueRef over = LLVMBuildICmp(g->b, LLVMIntSGT, end, cg_i64(g, n), "");
  *hi = LLVMBuildSelect(g->b, over, cg_i64(g, n), end, "");
}

LLVMValueRef cg_in_ptr(Cg *g, const EmitLayer *e) { return cg_at(g, e->in_block, e->in, NULL); }


LLVMValueRef cg_act(Cg *g, LLVMValueRef y, double slope) {
  return cg_select(g, cg_fgt(g, y, cg_f32(g, 0)), y, slope == 0 ? cg_f32(g, 0) : cg_fmul(g, y, cg_f32(g, slope)));
}

/* A tile function's name says everything its body depends on (cg_parallel shares tiles by
 * name across entry points): the layer, the phase, and where its tensors are this time. An op
 * whose body also depends on training vs inference says so in `what`. */
void cg_tile_name(char *buf, size_t n, const EmitLayer *e, const char *what) {
  snprintf(buf, n, "L%d.%s.i%d_%lld.o%lld.w%lld_%lld.a%lld.g%lld_%lld.act%g%s", e->l->index, what, e->in_block, (long long)e->in, (long long)e->out, (long long)e->w[0],
           (long long)e->w[1], (long long)e->aux, (long long)e->din, (long long)e->dout,
           e->act ? e->act_slope : -1.0, e->fused ? ".view" : "");
}

void cg_act_cols(Cg *g, const EmitLayer *e, int64_t row, LLVMValueRef lo, LLVMValueRef hi) {
  CgLoop Lb, Lo;
  LLVMValueRef b = cg_for(g, &Lb, "act_b", cg_i64(g, 0), cg_i64(g, e->B));
  LLVMValueRef o = cg_for(g, &Lo, "act_o", lo, hi);
  LLVMValueRef p = cg_at(g, TS_A, e->out, cg_mad(g, b, row, o));
  cg_store(g, cg_act(g, cg_load(g, p), e->act_slope), p);
  cg_for_end(g, &Lo);
  cg_for_end(g, &Lb);
}
