/* main.c: the teslac driver. It reads the command line and runs the pipeline that the command
 * asks for: load -> parse -> check (front.c), then plan; later stages (emit, JIT, object files)
 * hang off the same path. It is the error boundary: passes report and return, and only here do
 * problems become exit codes: 0 ok, 1 the spec or the data is wrong, 2 the command line is. */
#include "teslac.h"
#include "cg.h"
#include "dist.h"
#include "cmd.h"
#include "image.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_SPEC = 1, EXIT_USAGE = 2 };

static const char usage_top[] =
    "usage: teslac <command> SPEC [options]\n"
    "\n"
    "TESLA's model compiler: a YAML model spec in, specialized code out.\n"
    "\n"
    "commands:\n"
    "  check SPEC            validate the spec; print each layer's output and weight dims\n"
    "  plan SPEC [--json]    storage, parameters, bytes and FLOPs per layer; memory layout\n"
    "  train SPEC [opts]     compile for this CPU and train on the spec's data\n"
    "  eval SPEC --weights W test-set loss, accuracy, confusion matrix [--json]\n"
    "  predict SPEC --weights W [--input IN] [--top K] [--json]\n"
    "                        class and scores per sample of an IDX file, images or a folder\n"
    "  emit-llvm SPEC [-O]   the specialized LLVM IR (train step and inference)\n"
    "  compress SPEC --weights W -o OUT [--eps E | --rank R]\n"
    "                        dense weights to the tensor trains SPEC plans (TT-SVD)\n"
    "  build SPEC --weights W [-o NAME.o] [--train-step] [--target T] [--cpu C]\n"
    "                        an object file and a C header that embed the model\n"
    "  export SPEC --weights W [-o OUT.onnx] [--batch N]\n"
    "                        an ONNX model (opset 13) of inference with the weights\n"
    "  plot LOG [-o OUT]     loss and accuracy curves per epoch of a 'train --log' LOG (.svg, .png)\n"
    "\n"
    "options:\n"
    "  -h, --help            this text; 'teslac CMD --help' for a command's own\n"
    "  --version             the compiler and spec-language versions\n"
    "\n"
    "The spec language: specs/README.md. Exit status: 0 ok, 1 the spec or the data is wrong, 2 usage.\n";

static const char usage_check[] =
    "usage: teslac check SPEC\n"
    "\n"
    "Parse and check SPEC: every key, every shape, any 'dims:' against the inferred ones.\n"
    "Reports every problem as file:line:col with the source line, and exits 1 if there are any;\n"
    "otherwise prints the model table (layer, output dims (N, ...), weight dims, parameters).\n";

static const char usage_plan[] =
    "usage: teslac plan SPEC [--json] [--batch N]\n"
    "\n"
    "Check SPEC, then plan it: per layer the storage chosen (dense, tensor train, sparse),\n"
    "parameters, bytes, forward and backward FLOPs at the batch size, and the memory blocks.\n"
    "\n"
    "  --json       one JSON document instead of the table (fields: specs/README.md)\n"
    "  --batch N    plan for batch N instead of the spec's train.batch\n";

static int usage_error(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "teslac: ");
  fprintf(stderr, fmt, arg);
  if (cmd) fprintf(stderr, "\nsee 'teslac %s --help'\n", cmd);
  else fprintf(stderr, "\nsee 'teslac --help'\n");
  return EXIT_USAGE;
}

typedef struct Opts {
  const char *spec;
  bool json;
  int64_t batch;     /* 0 = the spec's */
} Opts;

/* The options a command takes; anything else is a usage error naming it. */
static int parse_opts(const char *cmd, int argc, char **argv, const char *help, bool plan_opts,
                      Opts *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(help, stdout);
      return -1;
    }
    if (plan_opts && !strcmp(a, "--json")) {
      o->json = true;
    } else if (plan_opts && (!strcmp(a, "--batch") || !strncmp(a, "--batch=", 8))) {
      const char *v = a[7] == '=' ? a + 8 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v) return usage_error(cmd, "--batch needs a value%s", "");
      double b;
      int rc = cmd_value(cmd, "--batch", v, 1, 1 << 20, true, &b);
      if (rc) return rc;
      o->batch = (int64_t)b;
    } else if (a[0] == '-' && a[1]) {
      return usage_error(cmd, "unknown option '%s'", a);
    } else if (!*a) {
      return usage_error(cmd, "%san empty argument where SPEC was expected", "");
    } else if (o->spec) {
      return usage_error(cmd, "one spec at a time; '%s' is one too many", a);
    } else {
      o->spec = a;
    }
  }
  if (!o->spec) return usage_error(cmd, "%smissing SPEC (a model spec, e.g. specs/mlp.yaml)", "");
  return 0;
}

/* check and plan share the front of the pipeline: load -> parse -> check */
static int run_front(Ctx *cx, const Opts *o, Spec *sp) {
  return tesla_front_file(cx, o->spec, sp) < 0 ? EXIT_SPEC : EXIT_OK;
}

static int cmd_check(int argc, char **argv) {
  Opts o;
  int rc = parse_opts("check", argc, argv, usage_check, false, &o);
  if (rc) return rc < 0 ? EXIT_OK : rc;
  Ctx cx;
  Spec sp;
  rc = run_front(&cx, &o, &sp);
  if (rc == EXIT_OK) check_print_table(&cx, &sp, stdout);
  ctx_free(&cx);
  return rc;
}

static int cmd_plan(int argc, char **argv) {
  Opts o;
  int rc = parse_opts("plan", argc, argv, usage_plan, true, &o);
  if (rc) return rc < 0 ? EXIT_OK : rc;
  Ctx cx;
  Spec sp;
  rc = run_front(&cx, &o, &sp);
  if (rc == EXIT_OK) {
    Plan pl;
    plan_spec(&cx, &sp, o.batch ? o.batch : sp.train.batch, &pl);
    if (cx.nerrors) rc = EXIT_SPEC;
    else if (o.json) plan_print_json(&cx, &sp, &pl, stdout);
    else plan_print_table(&cx, &sp, &pl, stdout);
  }
  ctx_free(&cx);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_top, stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    fputs(usage_top, stdout);
    return EXIT_OK;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    char cpu[256];
    cg_host_cpu_describe(cpu, sizeof cpu);
    printf("teslac %s (spec language %d, LLVM 16)\nJIT CPU: %s\n", TESLAC_VERSION, TESLA_LANG_VERSION, cpu);
    printf("MPI: %s\n", dist_library() ? dist_library() : "none (this build trains in one process)");
    printf("images: %s\n", img_formats());
    if (export_library()) printf("ONNX export: opset 13 (protobuf-c %s)\n", export_library());
    else printf("ONNX export: none (this build lacks protobuf-c)\n");
    return EXIT_OK;
  }
  if (!strcmp(cmd, "check")) return cmd_check(argc - 2, argv + 2);
  if (!strcmp(cmd, "plan")) return cmd_plan(argc - 2, argv + 2);
  if (!strcmp(cmd, "train")) return train_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "eval")) return eval_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "emit-llvm")) return emit_llvm_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "predict")) return predict_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "compress")) return compress_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "build")) return build_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "plot")) return plot_main(argc - 2, argv + 2);
  if (!strcmp(cmd, "export")) return export_main(argc - 2, argv + 2);
  static const char *const cmds[] = {"check", "plan", "train", "eval", "predict", "emit-llvm", "compress", "build", "plot", "export", NULL};
  const char *s = diag_suggest(cmd, cmds);
  if (s) {
    fprintf(stderr, "teslac: unknown command '%s'; did you mean '%s'?\nsee 'teslac --help'\n", cmd, s);
    return EXIT_USAGE;
  }
  return usage_error(NULL, "unknown command '%s'", cmd);
}
