/* build.c: `teslac build`: a spec and its trained weights into an object file and a C header,
 * for programs that embed the model. The weights are loaded as `teslac predict` loads them;
 * a pruned layer's pattern is frozen at the checkpoint's non-zeros (its CSR arrays sized to
 * them), and the plans at the spec's batch and at batch 1 are emitted serial, with the
 * derived tensors in the caller's scratch (codegen/obj_emit.c), optimized at O3 for the
 * target and written as an object. The header says everything a caller must know: shapes,
 * the bytes of every region, the functions, the tensors of the weights image.
 *
 * Outputs are written to the runtime's atomic temporaries (ts_out_*) and renamed into place only
 * when all of them are complete: a failure leaves no partial file. */
#include "cmd.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* ---- the header ------------------------------------------------------------------------------ */

typedef struct Hdr { FILE *f; const char *lc; char uc[160]; } Hdr;

static const char *layout_name(const PlanTensor *pt, const Plan *pl) {
  if (pt->p.sparse && pl->layers[pt->layer].sp.kernel == SK_CSR) return "CSR";
  return pt->p.rank_swap ? "CORE_SWAPPED" : pt->p.stored_t ? "TRANSPOSED" : "PLAIN";
}

static void write_header(Hdr *h, const Spec *sp, const ObjModel *om, const ObjLayout *lo, const char *spec_path,
                         const char *triple, const char *cpu, const char *ext) {
  FILE *f = h->f;
  const char *n = h->lc, *N = h->uc;
  const Plan *pl = om->pl[0];
  fprintf(f, "/* %s.h: the model '%s' of %s as compiled by teslac %s into an object file for\n", n, sp->name,
          spec_path, TESLAC_VERSION);
  fprintf(f, " * %s (CPU %s). Generated; do not edit. Single-threaded, reentrant: no heap, no\n", triple, cpu);
  fprintf(f, " * global state; every call works in the memory it is given. Needs libc's memcpy and memset\n"
             " * and libm.\n *\n");
  fprintf(f, " * Inference: x holds n samples of %s_INPUT_SIZE floats (%s, row-major), y receives n rows\n", N,
          "the spec's input shape");
  fprintf(f, " * of %s_OUTPUT_SIZE floats (%s); scratch is %s_ACTIVATIONS_SIZE bytes aligned to\n", N,
          sp->layers[sp->nlayers - 1].op == OP_softmax ? "softmax probabilities" : "the last layer's outputs", N);
  fprintf(f, " * %s_ALIGNMENT (static, stack or aligned_alloc). Any n >= 1.\n", N);
  if (ext)
    fprintf(f, " *\n * Weights: not in the object. Load the file %s (%s_WEIGHTS_SIZE bytes) into memory\n"
               " * aligned to %s_ALIGNMENT, check it once with %s_check_weights (its size and FNV-1a hash),\n"
               " * then pass it to %s_infer_weights.\n", ext, N, N, n, n);
  if (om->train_step)
    fprintf(f, " *\n * Training: a state of %s_TRAIN_STATE_SIZE bytes (aligned to %s_ALIGNMENT) holds the step\n"
               " * count, the weights, their gradients and the optimizer's state; %s_train_init* fills it,\n"
               " * %s_train_step takes one optimizer step on %s_BATCH samples (labels in [0, %s_CLASSES))\n"
               " * with a scratch of %s_TRAIN_ACTIVATIONS_SIZE bytes and returns the batch's mean loss.\n"
               " * %s_train_weights(state) is a weights image for %s_infer_weights and %s_tensor.\n",
            N, N, n, n, N, N, N, n, n, n);
  fprintf(f, " */\n#ifndef %s_H_INCLUDED\n#define %s_H_INCLUDED\n\n#include <stddef.h>\n#include <stdint.h>\n\n", N, N);
  fprintf(f, "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
  fprintf(f, "/* the model */\n#define %s_INPUT_RANK %d\n", N, sp->input.rank);
  for (int d = 0; d < sp->input.rank; d++) fprintf(f, "#define %s_INPUT_DIM%d %lld\n", N, d, (long long)sp->input.d[d]);
  fprintf(f, "#define %s_INPUT_SIZE %lld    /* floats per sample of x */\n", N, (long long)shape_elems(&sp->input));
  fprintf(f, "#define %s_CLASSES %lld\n", N, (long long)sp->classes);
  fprintf(f, "#define %s_OUTPUT_SIZE %lld   /* floats per sample of y */\n", N, (long long)sp->classes);
  fprintf(f, "#define %s_BATCH %lld         /* the spec's batch: %s_infer's unit, %s_train_step's batch */\n", N,
          (long long)pl->batch, n, n);
  fprintf(f, "\n/* memory, in bytes */\n#define %s_ALIGNMENT 64\n", N);
  fprintf(f, "#define %s_ACTIVATIONS_SIZE %lld\n", N, (long long)lo->infer_scratch);
  fprintf(f, "#define %s_WEIGHTS_SIZE %lld\n", N, (long long)lo_weights_bytes(om));
  fprintf(f, "#define %s_WEIGHTS_HASH 0x%016llxull   /* FNV-1a 64 of the weights image */\n", N,
          (unsigned long long)om->weights_hash);
  fprintf(f, "#define %s_WEIGHTS_EMBEDDED %d\n", N, om->weights ? 1 : 0);
  if (om->train_step) {
    fprintf(f, "#define %s_TRAIN_ACTIVATIONS_SIZE %lld\n", N, (long long)lo->train_scratch);
    fprintf(f, "#define %s_PARAMS_SIZE %lld       /* the weights in the state */\n", N,
            (long long)(lo->state_grads - lo->state_params));
    fprintf(f, "#define %s_GRADS_SIZE %lld\n", N, (long long)(lo->state_opt - lo->state_grads));
    fprintf(f, "#define %s_OPT_STATE_SIZE %lld\n", N, (long long)(lo->state_bytes - lo->state_opt));
    fprintf(f, "#define %s_TRAIN_STATE_SIZE %lld  /* 64 + params + grads + optimizer state */\n", N,
            (long long)lo->state_bytes);
    fprintf(f, "#define %s_LR %.9gf            /* the spec's learning rate */\n", N, sp->train.lr);
  }
  fprintf(f, "\n/* inference */\n");
  if (om->weights) fprintf(f, "void %s_infer(const float *x, float *y, int n, void *scratch);\n", n);
  fprintf(f, "void %s_infer_weights(const void *weights, const float *x, float *y, int n, void *scratch);\n", n);
  if (!om->weights) fprintf(f, "int %s_check_weights(const void *weights, size_t size);   /* 0: they fit */\n", n);
  if (om->train_step) {
    fprintf(f, "\n/* training */\n");
    if (om->weights) fprintf(f, "void %s_train_init(void *state);\n", n);
    fprintf(f, "void %s_train_init_weights(void *state, const void *weights);\n", n);
    fprintf(f, "float %s_train_step(void *state, const float *x, const int32_t *labels, void *scratch);\n", n);
    fprintf(f, "float %s_train_step_lr(void *state, const float *x, const int32_t *labels, float lr, void *scratch);\n", n);
    fprintf(f, "const void *%s_train_weights(const void *state);\n", n);
  }
  /* the tensors of the weights image, for reading them back out */
  int nt = pl->ntensors;
  fprintf(f, "\n/* The tensors of a weights image under their checkpoint names and PyTorch shapes. layout:\n"
             " * PLAIN (PyTorch's order), TRANSPOSED (a 2-d weight stored as its transpose), CORE_SWAPPED (a\n"
             " * tensor-train core (r, m, n, s) stored as (s, m, n, r)), CSR (a pruned weight: `offset`\n"
             " * floats of values in row order, and at int32 offset `table` from the image's start: nnz,\n"
             " * then at table + 16 the R + 1 row pointers, then the column indices 64-byte aligned). */\n");
  fprintf(f, "enum { %s_PLAIN, %s_TRANSPOSED, %s_CORE_SWAPPED, %s_CSR };\n", N, N, N, N);
  fprintf(f, "#define %s_NTENSORS %d\n", N, nt);
  fprintf(f, "typedef struct %s_tensor {\n  const char *name;\n  int ndims;\n  int64_t dims[4];\n"
             "  int64_t offset;   /* floats from the image's start */\n  int64_t elems;    /* stored */\n"
             "  int layout;\n  int64_t table;    /* CSR: int32 units from the image's start */\n} %s_tensor;\n\n", n, n);
  fprintf(f, "/* tensor i (0 <= i < %s_NTENSORS): 0, or -1 when there is none */\n", N);
  fprintf(f, "static inline int %s_tensor_info(int i, %s_tensor *t) {\n  switch (i) {\n", n, n);
  for (int t = 0; t < nt; t++) {
    const PlanTensor *pt = &pl->tensors[t];
    const SparsePlan *s = &pl->layers[pt->layer].sp;
    bool csr = pt->p.sparse && s->kernel == SK_CSR;
    fprintf(f, "  case %d: t->name = \"%s\", t->ndims = %d", t, pt->name, pt->p.ndims);
    for (int d = 0; d < 4; d++) fprintf(f, ", t->dims[%d] = %lld", d, (long long)(d < pt->p.ndims ? pt->p.dims[d] : 1));
    fprintf(f, ",\n         t->offset = %lld, t->elems = %lld, t->layout = %s_%s, t->table = %lld; return 0;\n",
            (long long)pt->offset, (long long)pt->elems, N, layout_name(pt, pl), (long long)(csr ? s->tab : -1));
  }
  fprintf(f, "  default: return -1;\n  }\n}\n\n");
  fprintf(f,
          "/* tensor i of a weights image in PyTorch's dense layout into dst (product of dims floats):\n"
          " * 0, or -1 when there is no tensor i */\n"
          "static inline int %s_tensor_get(const void *weights, int i, float *dst) {\n"
          "  %s_tensor t;\n"
          "  const float *w = (const float *)weights;\n"
          "  int64_t k, a, b, c, n = 1;\n"
          "  if (%s_tensor_info(i, &t)) return -1;\n"
          "  for (k = 0; k < t.ndims; k++) n *= t.dims[k];\n"
          "  if (t.layout == %s_CSR) {\n"
          "    const int32_t *tab = (const int32_t *)weights + t.table, *rp = tab + 16;\n"
          "    const int32_t *col = rp + (t.dims[0] + 1 + 15) / 16 * 16;\n"
          "    int64_t C = n / t.dims[0];\n"
          "    for (k = 0; k < n; k++) dst[k] = 0;\n"
          "    for (a = 0; a < t.dims[0]; a++)\n"
          "      for (b = rp[a]; b < rp[a + 1]; b++) dst[a * C + col[b]] = w[t.offset + b];\n"
          "  } else if (t.layout == %s_TRANSPOSED) {\n"
          "    for (a = 0; a < t.dims[0]; a++)\n"
          "      for (b = 0; b < t.dims[1]; b++) dst[a * t.dims[1] + b] = w[t.offset + b * t.dims[0] + a];\n"
          "  } else if (t.layout == %s_CORE_SWAPPED) {\n"
          "    int64_t mn = t.dims[1] * t.dims[2];\n"
          "    for (a = 0; a < t.dims[0]; a++)\n"
          "      for (b = 0; b < mn; b++)\n"
          "        for (c = 0; c < t.dims[3]; c++)\n"
          "          dst[(a * mn + b) * t.dims[3] + c] = w[t.offset + (c * mn + b) * t.dims[0] + a];\n"
          "  } else\n"
          "    for (k = 0; k < n; k++) dst[k] = w[t.offset + k];\n"
          "  return 0;\n}\n\n",
          n, n, n, N, N, N);
  fprintf(f,
          "#ifdef TESLA_RT_H\n"
          "/* With the runtime (tesla_rt.h included first, -ltesla_rt): the weights image as a\n"
          " * safetensors file that `teslac eval` and PyTorch's load_state_dict read (pruned weights\n"
          " * dense, zeros included); written atomically. 0, or -1 with e->msg. */\n"
          "static inline int %s_save(const void *weights, const char *path, TsErr *e) {\n"
          "  TsStOut out[%s_NTENSORS];\n"
          "  float *buf[%s_NTENSORS];\n"
          "  int i, k, rc = 0;\n"
          "  for (i = 0; i < %s_NTENSORS; i++) {\n"
          "    %s_tensor t;\n"
          "    int64_t n = 1;\n"
          "    %s_tensor_info(i, &t);\n"
          "    for (k = 0; k < t.ndims; k++) n *= t.dims[k];\n"
          "    buf[i] = (float *)ts_malloc(sizeof(float) * (size_t)n);\n"
          "    if (!buf[i]) rc = -1;\n"
          "    else %s_tensor_get(weights, i, buf[i]);\n"
          "    out[i].name = t.name, out[i].dtype = TS_F32, out[i].ndims = t.ndims, out[i].data = buf[i];\n"
          "    for (k = 0; k < 8; k++) out[i].shape[k] = k < t.ndims ? t.dims[k] : 0;\n"
          "  }\n"
          "  if (rc) ts_fail(e, \"out of memory writing %%s\", path);\n"
          "  else {\n"
          "    const char *meta[] = {\"format\", \"tesla\", \"model\", \"%s\"};\n"
          "    rc = ts_st_write(path, out, %s_NTENSORS, meta, 2, e);\n"
          "  }\n"
          "  for (i = 0; i < %s_NTENSORS; i++) ts_free(buf[i]);\n"
          "  return rc;\n}\n#endif\n\n",
          n, N, N, N, n, n, n, sp->name, N, N);
  fprintf(f, "#ifdef __cplusplus\n}\n#endif\n#endif\n");
}

/* ---- the command --------------------------------------------------------------------------- */

static char *with_ext(const char *path, const char *ext) {
  size_t n = strlen(path);
  const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
  if (dot && (!slash || dot > slash)) n = (size_t)(dot - path);
  char *s = malloc(n + strlen(ext) + 1);
  if (s) memcpy(s, path, n), strcpy(s + n, ext);
  return s;
}

/* a pruned layer's pattern at its checkpoint's non-zeros: a plan whose CSR arrays are that
 * long, the weights moved over (values and table rebuilt by sparse_set) */
static int freeze_sparse(Ctx *cx, Model *m, Model *fz, bool infer_only) {
  int n = m->sp.nlayers;
  int64_t *caps = arena_alloc(cx, sizeof(int64_t) * (size_t)(n ? n : 1));
  bool any = false;
  for (int i = 0; i < n; i++) {
    caps[i] = 0;
    if (sparse_tensor(m, i) && m->pl.layers[i].sp.kernel == SK_CSR) caps[i] = sparse_nnz(m, i), any = true;
  }
  fz->sp = m->sp;
  if (!any) return 0;
  PlanLike lk = {&m->pl, caps, infer_only};
  plan_spec_like(cx, &fz->sp, m->pl.batch, &lk, &fz->pl);
  if (cx->nerrors || model_alloc(cx, fz) < 0) return -1;
  for (int t = 0; t < m->pl.ntensors; t++) {
    const PlanTensor *a = &m->pl.tensors[t], *b = &fz->pl.tensors[t];
    if (a->p.sparse && caps[a->layer]) continue;
    memcpy(fz->P + b->offset, m->P + a->offset, sizeof(float) * (size_t)a->elems);
  }
  for (int i = 0; i < n; i++) {
    const SparsePlan *s = &m->pl.layers[i].sp;
    if (s->on && s->kernel == SK_MASK)
      memcpy(fz->P + fz->pl.layers[i].sp.mask, m->P + s->mask, sizeof(float) * (size_t)(s->R * s->C));
    if (!caps[i]) continue;
    int64_t nnz = caps[i];
    int32_t *crow = malloc(sizeof(int32_t) * (size_t)(s->R + 1)), *col = malloc(sizeof(int32_t) * (size_t)nnz);
    int64_t *crow64 = malloc(sizeof(int64_t) * (size_t)(s->R + 1)), *col64 = malloc(sizeof(int64_t) * (size_t)nnz);
    float *vals = malloc(sizeof(float) * (size_t)nnz);
    if (!crow || !col || !crow64 || !col64 || !vals) {
      free(crow), free(col), free(crow64), free(col64), free(vals);
      diag_at(cx, (SrcLoc){0}, "out of memory freezing a pruned layer");
      return -1;
    }
    sparse_export(m, i, crow, col, vals, -1);
    for (int64_t r = 0; r <= s->R; r++) crow64[r] = crow[r];
    for (int64_t k = 0; k < nnz; k++) col64[k] = col[k];
    const float *v[3] = {vals, NULL, NULL};
    sparse_set(fz, i, crow64, col64, nnz, v);
    free(crow), free(col), free(crow64), free(col64), free(vals);
  }
  return 1;
}

/* the batch-1 plan lays the saved parameters out as the batch plan does */
static bool same_saved_layout(const Plan *a, const Plan *b) {
  if (a->derived_off != b->derived_off || a->ntensors != b->ntensors || a->grad_block != b->grad_block) return false;
  for (int t = 0; t < a->ntensors; t++)
    if (a->tensors[t].offset != b->tensors[t].offset || a->tensors[t].elems != b->tensors[t].elems) return false;
  return true;
}

#define F(field) offsetof(TrainOpts, field)
static const CmdOpt build_opts[] = {
    CMD_OPT_WEIGHTS("the weights to embed (safetensors: a teslac checkpoint or PyTorch names)"),
    {"-o", NULL, ARG_STR, "NAME.o", 0, 0, F(out), "the object (default: the model's name + .o)"},
    {"--header", NULL, ARG_STR, "PATH", 0, 0, F(header), "the header (default: the object's path with .h)"},
    {"--train-step", NULL, ARG_FLAG, NULL, 0, 0, F(train_step), "also NAME_train_step: one optimizer step of the spec's optimizer on\nthe spec's batch, with the training state's sizes"},
    {"--external-weights", NULL, ARG_STR, "F", 0, 0, F(ext_weights), "the weights go to file F instead of the object's read-only data"},
    {"--target", NULL, ARG_STR, "TRIPLE", 0, 0, F(target), "e.g. x86_64-linux-gnu, aarch64-linux-gnu, thumbv7em-none-eabihf\n(default: this machine)"},
    {"--cpu", NULL, ARG_STR, "CPU", 0, 0, F(cpu), "e.g. host, x86-64, znver4, cortex-a72, cortex-m4 (default: host for\nthis machine's triple, cortex-m4 for thumbv7em, else generic)"},
    CMD_OPT_BATCH("the batch NAME_infer computes at once and NAME_train_step takes\n(default: train.batch; 1 gives the smallest scratch)"),
    {"--name", NULL, ARG_STR, "PREFIX", 0, 0, F(name), "the C prefix of the symbols and macros (default: the model's name)"},
    {NULL}};
#undef F

const CmdDef cmd_build = {
    .name = "build", .args = "SPEC --weights CKPT [-o NAME.o] [options]",
    .summary = "an object file and a C header that embed the model",
    .about = "Compile SPEC with the weights in CKPT into an object file and a C header that declares its\n"
             "functions and sizes (specs/README.md, 'Object files'). Single-threaded, no heap, no global\n"
             "state; needs only libc's memcpy/memset and libm.",
    CMD_POS_SPEC(TrainOpts),
    .opts = build_opts,
    .quiet = "no summary line",
    .verbose = "also the target, the CPU and what the compile took",
    .run = build_main};

int build_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts(&cmd_build, argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  Ctx cx;
  Model m = {0}, fz = {0};
  Spec sp;
  Plan p1;
  Cg g;
  bool have_g = false;
  LLVMTargetMachineRef tm = NULL;
  LLVMMemoryBufferRef obj = NULL;
  char *hdr_text = NULL, *obj_path = NULL, *hdr_path = NULL;
  size_t hdr_len = 0;
  TsOut outs[3];   /* object, header, weights file: the runtime's atomic outputs */
  int nouts = 0;
  TsErr e;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0 || !emit_supported(&cx, &m.sp)) goto out;
  sp = m.sp;
  if (o.name) sp.name = o.name;
  if (strlen(sp.name) > MAX_NAME || !*sp.name) {
    fprintf(stderr, "teslac: the symbol prefix '%.80s%s' is %zu characters long; give --name PREFIX of 1 to %d\n", sp.name,
            strlen(sp.name) > 80 ? "..." : "", strlen(sp.name), MAX_NAME);
    goto out;
  }
  for (const char *c = sp.name; *c; c++)
    if (!(isalnum((unsigned char)*c) || *c == '_') || isdigit((unsigned char)sp.name[0])) {
      fprintf(stderr, "teslac: the symbol prefix '%s' is not a C identifier; give --name PREFIX\n", sp.name);
      goto out;
    }
  obj_path = o.out ? strdup(o.out) : with_ext(sp.name, ".o");
  hdr_path = o.header ? strdup(o.header) : with_ext(obj_path, ".h");
  if (!obj_path || !hdr_path) goto out;
  if (!strcmp(obj_path, hdr_path) || (o.ext_weights && (!strcmp(o.ext_weights, obj_path) || !strcmp(o.ext_weights, hdr_path)))) {
    fprintf(stderr, "teslac: the object, the header and the weights file need three different paths\n");
    goto out;
  }
  const CmdFile role_in[] = {{o.spec, "spec"}, {o.weights, "--weights checkpoint"}};
  const CmdFile role_out[] = {{obj_path, "object"}, {hdr_path, "header"}, {o.ext_weights, "external weights file"}};
  if (cmd_check_roles(role_in, 2, role_out, 3, -1, -1) < 0) goto out;
  if (!(tm = cg_target_machine(&cx, o.target, o.cpu))) goto out;

  /* the weights, as predict loads them; pruned patterns frozen */
  plan_spec(&cx, &m.sp, o.batch ? o.batch : m.sp.train.batch, &m.pl);
  if (cx.nerrors || model_alloc(&cx, &m) < 0) goto out;
  if (model_load(&cx, &m, o.weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  int fr = freeze_sparse(&cx, &m, &fz, !o.train_step);
  if (fr < 0) goto out;
  Model *w = fr ? &fz : &m;
  ObjModel om = {.sp = &sp, .pl = {&w->pl}, .nplans = 1, .train_step = o.train_step};
  if (w->pl.batch > 1) {
    int64_t caps[w->sp.nlayers > 0 ? w->sp.nlayers : 1];
    for (int i = 0; i < w->sp.nlayers; i++) caps[i] = w->pl.layers[i].sp.on ? w->pl.layers[i].sp.cap : 0;
    PlanLike lk = {&w->pl, caps, !o.train_step};
    plan_spec_like(&cx, &w->sp, 1, &lk, &p1);
    if (cx.nerrors) goto out;
    if (same_saved_layout(&w->pl, &p1)) om.pl[1] = &p1, om.nplans = 2;
  }
  om.weights = o.ext_weights ? NULL : w->P;
  om.weights_hash = ts_fnv1a(w->P, (size_t)lo_weights_bytes(&om), TS_FNV1A_TESLA);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(tm);
  om.ptr_bits = (int)LLVMPointerSize(td) * 8;
  ObjLayout lo;
  obj_layout(&om, &lo);

  /* the module */
  double t0 = ts_now();
  cg_init(&g, sp.name);
  have_g = true;
  g.serial = true;
  char *triple = LLVMGetTargetMachineTriple(tm), *cpu = LLVMGetTargetMachineCPU(tm);
  LLVMSetTarget(g.mod, triple);
  LLVMSetModuleDataLayout(g.mod, td);
  LLVMDisposeTargetData(td);
  emit_object(&g, &om, &lo);
  for (LLVMValueRef f = LLVMGetFirstFunction(g.mod); f; f = LLVMGetNextFunction(f)) {
    size_t len;
    const char *nm = LLVMGetValueName2(f, &len);
    for (int k = 0; k < om.nplans; k++)
      if (!LLVMIsDeclaration(f) && !strncmp(nm, lo.iname[k], strlen(lo.iname[k]))) LLVMSetLinkage(f, LLVMInternalLinkage);
  }
  if (cg_optimize(&cx, &g, tm) < 0) {
    LLVMDisposeMessage(triple), LLVMDisposeMessage(cpu);
    goto out;
  }
  char *msg = NULL;
  if (LLVMTargetMachineEmitToMemoryBuffer(tm, g.mod, LLVMObjectFile, &msg, &obj)) {
    fprintf(stderr, "teslac: LLVM code generation failed: %s\n", msg);
    LLVMDisposeMessage(msg), LLVMDisposeMessage(triple), LLVMDisposeMessage(cpu);
    obj = NULL;
    goto out;
  }

  if (cmd_verbosity > 0)
    printf("compiled %s for %s (CPU %s) in %.3f s (emit, O3 and machine code)\n", sp.name, triple, cpu, ts_now() - t0);

  /* the header */
  FILE *hf = open_memstream(&hdr_text, &hdr_len);
  Hdr h = {hf, sp.name, ""};
  for (size_t i = 0; sp.name[i] && i + 1 < sizeof h.uc; i++) h.uc[i] = (char)toupper((unsigned char)sp.name[i]);
  write_header(&h, &sp, &om, &lo, o.spec, triple, cpu, o.ext_weights);
  fclose(hf);
  LLVMDisposeMessage(triple), LLVMDisposeMessage(cpu);

  /* all three complete before any is put in place */
  const char *paths[3] = {obj_path, hdr_path, o.ext_weights};
  const void *data[3] = {LLVMGetBufferStart(obj), hdr_text, w->P};
  size_t sizes[3] = {LLVMGetBufferSize(obj), hdr_len, (size_t)lo_weights_bytes(&om)};
  for (int i = 0; i < 3; i++) {
    if (!paths[i]) continue;
    if (ts_out_open(&outs[nouts], paths[i], &e) < 0) goto fail;
    nouts++;
    if (ts_out_write(&outs[nouts - 1], data[i], sizes[i], &e) < 0 || ts_out_finish(&outs[nouts - 1], &e) < 0) goto fail;
  }
  for (int i = 0; i < nouts; i++)
    if (ts_out_commit(&outs[i], &e) < 0) goto fail;
  if (cmd_verbosity >= 0)
    printf("wrote %s (%zu bytes: weights %lld, scratch %lld per inference call%s) and %s%s%s\n", obj_path,
           LLVMGetBufferSize(obj), (long long)lo_weights_bytes(&om), (long long)lo.infer_scratch,
           om.weights ? ", embedded" : "", hdr_path, o.ext_weights ? "; weights in " : "",
           o.ext_weights ? o.ext_weights : "");
  rc = 0;
  goto out;
fail:
  fprintf(stderr, "teslac: %s\n", e.msg);
out:
  for (int i = 0; i < nouts; i++) ts_out_abort(&outs[i]);
  if (obj) LLVMDisposeMemoryBuffer(obj);
  if (have_g) cg_dispose(&g);
  if (tm) LLVMDisposeTargetMachine(tm);
  free(hdr_text), free(obj_path), free(hdr_path);
  if (fz.P) model_free(&fz);
  model_free(&m);
  ctx_free(&cx);
  return rc;
}
