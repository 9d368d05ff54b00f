/* jit.c: the last compile stage. It links the kernel library (kernels/kernels.c, compiled to LLVM
 * bitcode at build time and embedded in teslac) into the emitted module, stamps every function
 * with this CPU's name and features (LLVMGetHostCPUName: znver4 and AVX-512 here), runs the
 * new pass manager's default<O3> pipeline, and hands the module to an ORC LLJIT whose symbol
 * search includes this process, so that generated code finds the runtime (ts_parallel_for)
 * and libm. Every LLVMErrorRef is checked where it is returned. */
#include "cg.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/BitReader.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdlib.h>
#include <string.h>

#include "tesla_rt.h"

/* the kernel bitcode, embedded by the build (kernels_bc.c) */
extern const unsigned char tk_bitcode[];
extern const size_t tk_bitcode_size;

struct Jit {
  LLVMOrcLLJITRef jit;
  char prefix[128];
};

static int llvm_fail(Ctx *cx, LLVMErrorRef err, const char *what) {
  char *msg = LLVMGetErrorMessage(err);   /* consumes err */
  diag_at(cx, (SrcLoc){0}, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return -1;
}

static void init_llvm(void) {
  static bool done;
  if (done) return;
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  done = true;
}

LLVMTargetMachineRef cg_host_machine(Ctx *cx) {
  init_llvm();
  char *triple = LLVMGetDefaultTargetTriple(), *err = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &err)) {
    diag_at(cx, (SrcLoc){0}, "no LLVM target for %s: %s", triple, err);
    LLVMDisposeMessage(err), LLVMDisposeMessage(triple);
    return NULL;
  }
  char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocPIC, LLVMCodeModelJITDefault);
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(features), LLVMDisposeMessage(triple);
  return tm;
}

int cg_link_kernels(Ctx *cx, Cg *g) {
  LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRange((const char *)tk_bitcode, tk_bitcode_size,
                                                                  "kernels.bc", 0);
  LLVMModuleRef km;
  if (LLVMParseBitcodeInContext2(g->ctx, buf, &km)) {
    LLVMDisposeMemoryBuffer(buf);
    diag_at(cx, (SrcLoc){0}, "internal error: the embedded kernel bitcode does not load");
    return -1;
  }
  LLVMDisposeMemoryBuffer(buf);
  LLVMSetTarget(km, LLVMGetTarget(g->mod));
  LLVMSetDataLayout(km, LLVMGetDataLayoutStr(g->mod));
  if (LLVMLinkModules2(g->mod, km)) {   /* km is destroyed either way */
    diag_at(cx, (SrcLoc){0}, "internal error: linking the kernels failed");
    return -1;
  }
  return 0;
}

/* Every definition gets the target's CPU and features (the kernels were compiled for none), and
 * everything but the entry points becomes internal so that O3 can inline and drop it. */
static void stamp_functions(Cg *g, LLVMTargetMachineRef tm) {
  char *cpu = LLVMGetTargetMachineCPU(tm), *features = LLVMGetTargetMachineFeatureString(tm);
  size_t plen = strlen(g->prefix);
  for (LLVMValueRef f = LLVMGetFirstFunction(g->mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    LLVMRemoveStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, "target-cpu", 10);
    LLVMRemoveStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, "target-features", 15);
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(g->ctx, "target-cpu", 10, cpu, (unsigned)strlen(cpu)));
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateStringAttribute(g->ctx, "target-features", 15, features,
                                                      (unsigned)strlen(features)));
    size_t n;
    const char *name = LLVMGetValueName2(f, &n);
    bool entry = n > plen && !strncmp(name, g->prefix, plen) && name[plen] == '_' && !strchr(name + plen, '.');
    if (!entry) LLVMSetLinkage(f, LLVMInternalLinkage);
  }
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(features);
}

int cg_optimize(Ctx *cx, Cg *g, LLVMTargetMachineRef tm) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(g->mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(g->mod, td);
  LLVMDisposeTargetData(td);
  if (cg_link_kernels(cx, g) < 0) return -1;
  stamp_functions(g, tm);
  char *msg = NULL;
  if (LLVMVerifyModule(g->mod, LLVMReturnStatusAction, &msg)) {
    diag_at(cx, (SrcLoc){0}, "internal error: the emitted module does not verify: %s", msg);
    LLVMDisposeMessage(msg);
    return -1;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(opts, 1);
  LLVMErrorRef err = LLVMRunPasses(g->mod, "default<O3>", tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (err) return llvm_fail(cx, err, "LLVM optimization failed");
  return 0;
}

int jit_compile(Ctx *cx, Cg *g, Jit **out, JitTimes *times) {
  double t0 = ts_now();
  LLVMTargetMachineRef tm = cg_host_machine(cx);
  if (!tm) return -1;
  int rc = cg_optimize(cx, g, tm);
  LLVMDisposeTargetMachine(tm);
  if (rc < 0) return -1;
  double t1 = ts_now();

  LLVMOrcJITTargetMachineBuilderRef jtmb;
  LLVMErrorRef err = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
  if (err) return llvm_fail(cx, err, "LLVM could not describe this CPU");
  LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb);   /* jtmb now owned by jb */
  LLVMOrcLLJITRef jit;
  if ((err = LLVMOrcCreateLLJIT(&jit, jb))) return llvm_fail(cx, err, "LLVM JIT could not start");  /* jb consumed */

  LLVMOrcDefinitionGeneratorRef gen;
  err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
  if (err) {
    LLVMOrcDisposeLLJIT(jit);
    return llvm_fail(cx, err, "LLVM JIT could not search this process");
  }
  LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), gen);   /* owned by the dylib */

  /* the module and its context now belong to the JIT */
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(g->mod, g->tsc);
  LLVMOrcDisposeThreadSafeContext(g->tsc);   /* the module keeps its own reference */
  LLVMDisposeBuilder(g->b);
  g->mod = NULL, g->tsc = NULL, g->ctx = NULL, g->b = NULL;
  if ((err = LLVMOrcLLJITAddLLVMIRModule(jit, LLVMOrcLLJITGetMainJITDylib(jit), tsm))) {
    LLVMOrcDisposeLLJIT(jit);
    return llvm_fail(cx, err, "LLVM JIT refused the module");
  }
  Jit *j = calloc(1, sizeof *j);
  j->jit = jit;
  snprintf(j->prefix, sizeof j->prefix, "%s", g->prefix);
  /* the first lookup compiles the module to machine code */
  bool ok = jit_fn(j, "train_step") && jit_fn(j, "infer");
  if (times) times->opt = t1 - t0, times->codegen = ts_now() - t1;
  if (!ok) {
    jit_free(j);
    diag_at(cx, (SrcLoc){0}, "internal error: the JIT did not produce the model's entry points");
    return -1;
  }
  *out = j;
  return 0;
}

void (*jit_fn(Jit *j, const char *suffix))(TeslaStep *) {
  char name[200];
  snprintf(name, sizeof name, "%s_%s", j->prefix, suffix);
  LLVMOrcExecutorAddress addr = 0;
  LLVMErrorRef err = LLVMOrcLLJITLookup(j->jit, &addr, name);
  if (err) {
    LLVMConsumeError(err);
    return NULL;
  }
  return (void (*)(TeslaStep *))(uintptr_t)addr;
}

void jit_free(Jit *j) {
  if (!j) return;
  LLVMErrorRef err = LLVMOrcDisposeLLJIT(j->jit);
  if (err) LLVMConsumeError(err);
  free(j);
}
