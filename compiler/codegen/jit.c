/* jit.c: the last compile stage. It links the kernel library (kernels/kernels.c, compiled to LLVM
 * bitcode at build time and embedded in teslac) into the emitted module, stamps every function
 * with this CPU's name and features (cg_host_cpu: LLVM's name, or for a CPU newer than LLVM 16
 * the nearest one it knows), looks the module up in the compile cache (jit_cache.c), runs the
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
#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tesla_rt.h"

/* the kernel bitcode, embedded by the build (kernels_bc.c) */
extern const unsigned char tk_bitcode[], tk_bitcode_narrow[];
extern const size_t tk_bitcode_size, tk_bitcode_narrow_size;

struct Jit {
  LLVMOrcLLJITRef jit;
  char prefix[MAX_NAME + 1];
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

/* The JIT's code generation runs without LLVM's pre-register-allocation machine scheduler: on
 * the kernels' long unrolled blocks it took two thirds of fashion_cnn's machine-code time (2.7
 * of 4.2 s in llc), and on an out-of-order x86 core the code it leaves ran as fast (training
 * samples/s within run-to-run noise for mlp, fashion_cnn and seed; the same bytes). Objects for
 * other targets (`teslac build`, in-order Cortex-M among them) keep it. A process-wide LLVM
 * option, set once, before the JIT's first target machine; the compile cache's key names it. */
const char *const jit_codegen_opts = "O3, no pre-RA machine scheduler";

static void jit_llvm_options(void) {
  static bool done;
  if (done) return;
  done = true;
#if defined(__x86_64__)
  const char *argv[] = {"teslac", "-enable-misched=false"};
  LLVMParseCommandLineOptions(2, argv, NULL);
#endif
}

/* ---- this CPU ------------------------------------------------------------------------------ */

/* "+name" in LLVM's feature string ("+avx2,-avx512f,...") */
static bool has_feature(const char *features, const char *name) {
  size_t n = strlen(name);
  for (const char *p = features; (p = strstr(p, name)); p += n)
    if (p > features && p[-1] == '+' && (p[n] == ',' || !p[n])) return true;
  return false;
}

/* LLVM 16 predates some CPUs and calls them "generic" (Zen 5, for one), which costs its
 * scheduling model and tuning while the features are still right. Such a CPU gets the newest
 * CPU LLVM 16 knows that has its vector features: AMD's line for AMD, else Intel's. */
const char *cg_nearest_cpu(bool amd, const char *features) {
  bool avx512 = has_feature(features, "avx512f") && has_feature(features, "avx512vl") &&
                has_feature(features, "avx512bw") && has_feature(features, "avx512dq");
  bool avx2 = has_feature(features, "avx2") && has_feature(features, "fma");
  if (amd) return avx512 ? "znver4" : avx2 ? "znver3" : NULL;
  if (avx512 && has_feature(features, "avx512fp16")) return "sapphirerapids";
  if (avx512 && has_feature(features, "avx512vnni")) return "icelake-server";
  if (avx512) return "skylake-avx512";
  return avx2 ? "haswell" : NULL;
}

/* the nearest CPU for this one, and "<vendor> family F model M" in why */
static const char *nearest_cpu(const char *features, char *why, size_t whylen) {
#if defined(__x86_64__)
  unsigned a, b, c, d, vendor[3];
  __asm__("cpuid" : "=a"(a), "=b"(vendor[0]), "=c"(vendor[2]), "=d"(vendor[1]) : "a"(0), "c"(0));
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
  unsigned base = a >> 8 & 15, family = base + (base == 15 ? (a >> 20 & 255) : 0);
  unsigned model = (a >> 4 & 15) | (base == 6 || base == 15 ? (a >> 12 & 0xf0) : 0);
  bool amd = !memcmp(vendor, "AuthenticAMD", 12);
  const char *cpu = cg_nearest_cpu(amd, features);
  if (cpu) snprintf(why, whylen, "%s family %u model %u", amd ? "AMD" : "x86-64", family, model);
  return cpu;
#else
  (void)features, (void)why, (void)whylen;
  return NULL;
#endif
}

void cg_host_cpu(char **cpu, char **features) {
  /* TESLA_JIT_CPU=NAME: compile for an older CPU of this one's line instead (its own features),
   * to measure what that CPU would run, e.g. haswell (AVX2) code on an AVX-512 machine */
  const char *force = getenv("TESLA_JIT_CPU");
  static int force_ok = -1;   /* checked once: a CPU LLVM does not know is a warning, not an abort */
  if (force && *force && force_ok < 0) {
    Ctx cx;
    FILE *quiet = fopen("/dev/null", "w");   /* the warning below says it all */
    ctx_init(&cx, "TESLA_JIT_CPU", quiet ? quiet : stderr);
    LLVMTargetMachineRef tm = cg_target_machine(&cx, NULL, force);
    force_ok = tm != NULL;
    if (tm) LLVMDisposeTargetMachine(tm);
    else fprintf(stderr, "teslac: warning: TESLA_JIT_CPU=%s ignored (LLVM does not know it); compiling for this CPU\n", force);
    ctx_free(&cx);
    if (quiet) fclose(quiet);
  }
  if (force && *force && force_ok) {
    *cpu = LLVMCreateMessage(force), *features = LLVMCreateMessage("");
    return;
  }
  *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
  char why[96];
  const char *near = strcmp(*cpu, "generic") ? NULL : nearest_cpu(*features, why, sizeof why);
  if (near) LLVMDisposeMessage(*cpu), *cpu = LLVMCreateMessage(near);
}

void cg_host_cpu_describe(char *buf, size_t n) {
  init_llvm();
  char *llvm = LLVMGetHostCPUName(), *cpu, *features;
  cg_host_cpu(&cpu, &features);
  char why[96] = "";
  if (strcmp(llvm, cpu)) nearest_cpu(features, why, sizeof why);
  if (*why) snprintf(buf, n, "%s (LLVM 16 names this %s CPU '%s'; %s is the nearest it knows)", cpu, why, llvm, cpu);
  else snprintf(buf, n, "%s", cpu);
  LLVMDisposeMessage(llvm), LLVMDisposeMessage(cpu), LLVMDisposeMessage(features);
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
  char *cpu, *features;
  cg_host_cpu(&cpu, &features);
  LLVMTargetMachineRef tm = LLVMCreateTargetMachine(target, triple, cpu, features, LLVMCodeGenLevelAggressive,
                                                    LLVMRelocPIC, LLVMCodeModelJITDefault);
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(features), LLVMDisposeMessage(triple);
  return tm;
}

/* ---- object files: any target LLVM was built with ------------------------------------------ */

/* LLVM only warns on stderr about a CPU or feature it does not know (and then compiles for a
 * generic one): stderr is captured while the machine is made and an empty function compiled,
 * and the warning looked for. */
typedef struct Capture { FILE *f; int saved; } Capture;

static void capture_begin(Capture *c) {
  fflush(stderr);
  c->f = tmpfile(), c->saved = -1;
  if (c->f) c->saved = dup(2), dup2(fileno(c->f), 2);
}

static void capture_end(Capture *c, char *buf, size_t n) {
  buf[0] = 0;
  fflush(stderr);
  if (!c->f) return;
  dup2(c->saved, 2), close(c->saved);
  rewind(c->f);
  size_t len = fread(buf, 1, n - 1, c->f);
  buf[len] = 0;
  fclose(c->f);
  char *nl = strchr(buf, '\n');
  if (nl) *nl = 0;
}

static void probe_compile(LLVMTargetMachineRef tm) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("probe", ctx);
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMValueRef f = LLVMAddFunction(mod, "probe", LLVMFunctionType(LLVMVoidTypeInContext(ctx), NULL, 0, 0));
  LLVMBuilderRef b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(ctx, f, "entry"));
  LLVMBuildRetVoid(b);
  LLVMDisposeBuilder(b);
  char *msg = NULL;
  LLVMMemoryBufferRef obj = NULL;
  if (!LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMObjectFile, &msg, &obj)) LLVMDisposeMemoryBuffer(obj);
  else LLVMDisposeMessage(msg);
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
}

LLVMTargetMachineRef cg_target_machine(Ctx *cx, const char *triple, const char *cpu) {
  static bool all;
  init_llvm();
  if (!all) {
    LLVMInitializeAllTargetInfos(), LLVMInitializeAllTargets(), LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();
    all = true;
  }
  char *host = LLVMGetDefaultTargetTriple();
  char *norm = LLVMNormalizeTargetTriple(triple ? triple : host);
  char *hostn = LLVMNormalizeTargetTriple(host);
  bool native = !strcmp(norm, hostn);
  LLVMDisposeMessage(host), LLVMDisposeMessage(hostn);
  LLVMTargetMachineRef tm = NULL;
  LLVMTargetRef target;
  char *err = NULL, *hcpu = NULL, *hfeat = NULL;
  if (LLVMGetTargetFromTriple(norm, &target, &err)) {
    diag_at(cx, (SrcLoc){0}, "unknown target triple '%s' (%s); this teslac builds for x86_64-linux-gnu, "
                             "aarch64-linux-gnu, thumbv7em-none-eabihf and the other triples of LLVM 16's "
                             "targets (llc-16 --version lists them)", triple ? triple : norm, err);
    LLVMDisposeMessage(err);
    goto out;
  }
  bool bare = strstr(norm, "-none") != NULL;   /* no OS: no loader, no GOT */
  if (!cpu) cpu = native ? "host" : !strncmp(norm, "thumbv7em", 9) ? "cortex-m4" : "generic";
  const char *features = "";
  if (!strcmp(cpu, "host")) {
    if (!native) {
      diag_at(cx, (SrcLoc){0}, "--cpu host names this machine's CPU, which does not run %s; give --cpu "
                               "(e.g. generic)", norm);
      goto out;
    }
    cg_host_cpu(&hcpu, &hfeat);
    cpu = hcpu, features = hfeat;
  }
  /* bare metal: static; objects for an OS position-independent (PIE executables) */
  Capture cap;
  char why[512];
  /* the probe machine: on x86-64 an unknown CPU has no features, not even 64-bit mode, and LLVM
   * would abort compiling for it ("64-bit code requested on a subtarget that doesn't support
   * it") before its warning could be read; the probe asks for +64bit */
  char pfeat[4096];
  snprintf(pfeat, sizeof pfeat, "%s%s", features,
           strncmp(norm, "x86_64", 6) ? "" : *features ? ",+64bit" : "+64bit");
  capture_begin(&cap);
  LLVMTargetMachineRef probe = LLVMCreateTargetMachine(target, norm, cpu, pfeat, LLVMCodeGenLevelDefault,
                                                       bare ? LLVMRelocStatic : LLVMRelocPIC, LLVMCodeModelDefault);
  if (probe) probe_compile(probe), LLVMDisposeTargetMachine(probe);
  capture_end(&cap, why, sizeof why);
  if (strstr(why, "not a recognized"))
    diag_at(cx, (SrcLoc){0}, "unknown CPU '%s' for %s (LLVM: %s)", cpu, norm, why);
  else
    tm = LLVMCreateTargetMachine(target, norm, cpu, features, LLVMCodeGenLevelAggressive,
                                 bare ? LLVMRelocStatic : LLVMRelocPIC, LLVMCodeModelDefault);
out:
  LLVMDisposeMessage(norm);
  if (hcpu) LLVMDisposeMessage(hcpu);
  if (hfeat) LLVMDisposeMessage(hfeat);
  return tm;
}

/* The kernels' register blocking (kernels/tk_gemm.h): the wide build for targets with
 * AVX-512's 32 registers of 16 floats, the narrow one for every other (AVX2, NEON, Cortex-M).
 * TESLA_KERNELS=wide|narrow overrides the choice (benchmarks, tests). */
bool cg_wide_kernels(const char *features) {
  const char *o = getenv("TESLA_KERNELS");
  if (o && !strcmp(o, "wide")) return true;
  if (o && !strcmp(o, "narrow")) return false;
  return has_feature(features, "avx512f");
}

int cg_link_kernels(Ctx *cx, Cg *g, LLVMTargetMachineRef tm) {
  char *features = LLVMGetTargetMachineFeatureString(tm);
  bool wide = cg_wide_kernels(features);
  LLVMDisposeMessage(features);
  LLVMMemoryBufferRef buf = LLVMCreateMemoryBufferWithMemoryRange(
      (const char *)(wide ? tk_bitcode : tk_bitcode_narrow), wide ? tk_bitcode_size : tk_bitcode_narrow_size,
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
    /* nothing unwinds through generated code (an object for bare metal would otherwise need
     * the EHABI personality routines) */
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex,
                            LLVMCreateEnumAttribute(g->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
    size_t n;
    const char *name = LLVMGetValueName2(f, &n);
    /* the kernels are inlined and then dropped; the model's own functions keep the linkage
     * emission gave them (entry points and, when compiled in parts, shared tiles external) */
    bool model = n > plen && !strncmp(name, g->prefix, plen) && (name[plen] == '_' || name[plen] == '.');
    if (!model) LLVMSetLinkage(f, LLVMInternalLinkage);
  }
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(features);
}

static int run_passes(Ctx *cx, Cg *g, LLVMTargetMachineRef tm, const char *passes) {
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(opts, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(opts, 1);
  LLVMPassBuilderOptionsSetLoopUnrolling(opts, 1);
  LLVMErrorRef err = LLVMRunPasses(g->mod, passes, tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  return err ? llvm_fail(cx, err, "LLVM optimization failed") : 0;
}

/* target, data layout, kernels linked in, CPU stamped, verified; then the kernels inlined
 * (cheap, and it makes each function's size what O3 will work on) */
static int cg_prepare(Ctx *cx, Cg *g, LLVMTargetMachineRef tm) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(g->mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(g->mod, td);
  LLVMDisposeTargetData(td);
  if (cg_link_kernels(cx, g, tm) < 0) return -1;
  stamp_functions(g, tm);
  char *msg = NULL;
  if (LLVMVerifyModule(g->mod, LLVMReturnStatusAction, &msg)) {
    diag_at(cx, (SrcLoc){0}, "internal error: the emitted module does not verify: %s", msg);
    LLVMDisposeMessage(msg);
    return -1;
  }
  LLVMDisposeMessage(msg);
  return run_passes(cx, g, tm, "always-inline,globaldce");
}

int cg_optimize(Ctx *cx, Cg *g, LLVMTargetMachineRef tm) {
  if (cg_prepare(cx, g, tm) < 0) return -1;
  return run_passes(cx, g, tm, "default<O3>");
}

/* ---- parallel compilation -------------------------------------------------------------- */

/* The module is emitted once per part, each in its own context; every part keeps the bodies of
 * its share of the model's functions (balanced by their instruction counts once the kernels
 * are inlined) and declares the rest. Each part is linked with
 * the kernels, optimized at O3 and compiled to an object file in a thread of its own; the JIT
 * links the objects. Emission is deterministic, so every part sees the same functions. */

#define JIT_PARTS_MAX 8

typedef struct Part {
  Cg  g;
  int index, nparts;
  LLVMMemoryBufferRef obj;
  char err[512];
} Part;

/* instructions after the kernels were inlined: what O3 and instruction selection chew on */
static int64_t fn_cost(Cg *g, LLVMValueRef f) {
  int64_t n = 0;
  for (LLVMBasicBlockRef b = LLVMGetFirstBasicBlock(f); b; b = LLVMGetNextBasicBlock(b))
    for (LLVMValueRef i = LLVMGetFirstInstruction(b); i; i = LLVMGetNextInstruction(i)) n++;
  return n;
}

static bool is_model_fn(Cg *g, LLVMValueRef f) {
  size_t n, plen = strlen(g->prefix);
  const char *name = LLVMGetValueName2(f, &n);
  return !LLVMIsDeclaration(f) && n > plen && !strncmp(name, g->prefix, plen) &&
         (name[plen] == '_' || name[plen] == '.');
}

typedef struct FnCost { LLVMValueRef f; int64_t cost; int order; } FnCost;

static int by_cost(const void *a, const void *b) {   /* heaviest first; ties in emission order */
  const FnCost *x = a, *y = b;
  if (x->cost != y->cost) return x->cost > y->cost ? -1 : 1;
  return x->order - y->order;
}

/* keep this part's share of the model's functions; the others become declarations */
static int keep_share(Part *p) {
  Cg *g = &p->g;
  int n = 0, cap = 256;
  FnCost *fns = malloc(sizeof *fns * (size_t)cap);
  for (LLVMValueRef f = LLVMGetFirstFunction(g->mod); f && fns; f = LLVMGetNextFunction(f)) {
    if (!is_model_fn(g, f)) continue;
    if (n == cap) {
      FnCost *m = realloc(fns, sizeof *fns * (size_t)(cap *= 2));
      if (!m) { free(fns); fns = NULL; break; }
      fns = m;
    }
    fns[n] = (FnCost){f, fn_cost(g, f), n};
    n++;
  }
  if (!fns) return -1;
  /* greedy: heaviest first into the lightest part (ties: the lower index), all deterministic */
  qsort(fns, (size_t)n, sizeof *fns, by_cost);
  int64_t load[JIT_PARTS_MAX] = {0};
  for (int k = 0; k < n; k++) {
    int bin = 0;
    for (int b = 1; b < p->nparts; b++)
      if (load[b] < load[bin]) bin = b;
    load[bin] += fns[k].cost;
    if (bin == p->index) {
      LLVMSetLinkage(fns[k].f, LLVMExternalLinkage);   /* other parts call or pass it */
      continue;
    }
    /* another part defines it: a declaration of the same name takes its uses, and the
     * definition goes (LLVMDeleteFunction drops the body's internal references first) */
    size_t len;
    const char *nm = LLVMGetValueName2(fns[k].f, &len);
    char *name = strndup(nm, len);
    LLVMSetValueName2(fns[k].f, "", 0);
    LLVMValueRef decl = LLVMAddFunction(g->mod, name, LLVMGlobalGetValueType(fns[k].f));
    LLVMReplaceAllUsesWith(fns[k].f, decl);
    LLVMDeleteFunction(fns[k].f);
    free(name);
  }
  free(fns);
  return 0;
}

static void *compile_part(void *arg) {
  Part *p = arg;
  Ctx cx;   /* a private diagnostics sink: contexts are not shared across threads */
  char *buf = NULL;
  size_t len = 0;
  FILE *err = open_memstream(&buf, &len);
  ctx_init(&cx, "llvm", err);
  LLVMTargetMachineRef tm = cg_host_machine(&cx);
  bool ok = tm && cg_prepare(&cx, &p->g, tm) == 0;
  if (ok && p->nparts > 1 && keep_share(p) < 0) {
    diag_at(&cx, (SrcLoc){0}, "out of memory splitting the module into parts");
    ok = false;
  }
  if (ok && run_passes(&cx, &p->g, tm, "default<O3>") == 0) {
    char *msg = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, p->g.mod, LLVMObjectFile, &msg, &p->obj)) {
      diag_at(&cx, (SrcLoc){0}, "LLVM code generation failed: %s", msg);
      LLVMDisposeMessage(msg);
      p->obj = NULL;
    }
  }
  if (tm) LLVMDisposeTargetMachine(tm);
  ctx_free(&cx);
  fclose(err);
  if (!p->obj) snprintf(p->err, sizeof p->err, "%s", buf && *buf ? buf : "LLVM failed\n");
  free(buf);
  return NULL;
}

int jit_compile(Ctx *cx, const Spec *sp, const Plan *pl, bool profile, int nparts, Jit **out,
                JitTimes *times) {
  double t0 = ts_now();
  init_llvm();
  jit_llvm_options();
  if (nparts < 1) nparts = 1;
  if (nparts > JIT_PARTS_MAX) nparts = JIT_PARTS_MAX;
  Part parts[JIT_PARTS_MAX];
  memset(parts, 0, sizeof parts);
  for (int i = 0; i < nparts; i++) parts[i].index = i, parts[i].nparts = nparts;
  /* part 0 first: its module is the cache key (every part emits the same module) */
  cg_init(&parts[0].g, sp->name);
  parts[0].g.profile = profile;
  emit_module(&parts[0].g, sp, pl);
  JitCacheKey *key = malloc(sizeof *key);
  char *cpu, *features;
  cg_host_cpu(&cpu, &features);
  LLVMMemoryBufferRef cached[JIT_PARTS_MAX];
  bool hit = key && jit_cache_key(&parts[0].g, cpu, features, nparts, key) == 0 &&
             jit_cache_lookup(key, nparts, cached) == 1;
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(features);
  for (int i = 1; i < nparts && !hit; i++) {
    cg_init(&parts[i].g, sp->name);
    parts[i].g.profile = profile;
    emit_module(&parts[i].g, sp, pl);
  }
  double t1 = ts_now();
  if (hit) {
    for (int i = 0; i < nparts; i++) parts[i].obj = cached[i];
  } else {
    pthread_t th[JIT_PARTS_MAX];
    bool started[JIT_PARTS_MAX] = {0};
    for (int i = 1; i < nparts; i++) started[i] = pthread_create(&th[i], NULL, compile_part, &parts[i]) == 0;
    compile_part(&parts[0]);
    for (int i = 1; i < nparts; i++) {
      if (started[i]) pthread_join(th[i], NULL);
      else compile_part(&parts[i]);
    }
  }
  int rc = 0;
  for (int i = 0; i < nparts; i++)
    if (!parts[i].obj && rc == 0) {
      fprintf(cx->err, "%s", parts[i].err);
      cx->nerrors++;
      rc = -1;
    }
  if (rc == 0 && !hit && key) {
    LLVMMemoryBufferRef objs[JIT_PARTS_MAX];
    for (int i = 0; i < nparts; i++) objs[i] = parts[i].obj;
    jit_cache_store(key, nparts, objs);
  }
  free(key);
  if (times) times->emit = t1 - t0, times->opt = ts_now() - t1, times->cached = hit;
  double t2 = ts_now();

  LLVMOrcLLJITRef jit = NULL;
  if (rc == 0) {
    LLVMOrcJITTargetMachineBuilderRef jtmb;
    LLVMErrorRef err = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
    if (err) rc = llvm_fail(cx, err, "LLVM could not describe this CPU");
    else {
      LLVMOrcLLJITBuilderRef jb = LLVMOrcCreateLLJITBuilder();
      LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(jb, jtmb);   /* jtmb now owned by jb */
      if ((err = LLVMOrcCreateLLJIT(&jit, jb))) rc = llvm_fail(cx, err, "LLVM JIT could not start");
    }
  }
  if (rc == 0) {
    LLVMOrcDefinitionGeneratorRef gen;
    LLVMErrorRef err =
        LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (err) rc = llvm_fail(cx, err, "LLVM JIT could not search this process");
    else LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit), gen);   /* owned by the dylib */
  }
  for (int i = 0; i < nparts; i++) {
    if (rc == 0 && parts[i].obj) {
      /* the object buffer now belongs to the JIT */
      LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(jit, LLVMOrcLLJITGetMainJITDylib(jit), parts[i].obj);
      parts[i].obj = NULL;
      if (err) rc = llvm_fail(cx, err, "LLVM JIT refused an object");
    }
    if (parts[i].obj) LLVMDisposeMemoryBuffer(parts[i].obj);
    cg_dispose(&parts[i].g);   /* a part never emitted (cache hit) is all zero */
  }
  if (rc < 0) {
    if (jit) LLVMOrcDisposeLLJIT(jit);
    return -1;
  }
  Jit *j = calloc(1, sizeof *j);
  j->jit = jit;
  snprintf(j->prefix, sizeof j->prefix, "%s", sp->name);
  bool ok = jit_fn(j, "train_step") && jit_fn(j, "infer") && jit_fn(j, "grad");
  if (times) times->codegen = ts_now() - t2;
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
