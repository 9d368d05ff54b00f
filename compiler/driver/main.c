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

/* ---- check and plan: the front of the pipeline ------------------------------------------ */

typedef struct Opts {
  const char *spec;
  bool json;
  int64_t batch;     /* 0 = the spec's */
} Opts;

static int cmd_check_main(int argc, char **argv);
static int cmd_plan_main(int argc, char **argv);

static const CmdOpt check_opts[] = {{NULL}};
static const CmdDef cmd_check = {
    .name = "check", .args = "SPEC", .summary = "validate the spec; print each layer's output and weight dims",
    .about = "Parse and check SPEC: every key, every shape, any 'dims:' against the inferred ones.\n"
             "Reports every problem as file:line:col with the source line, and exits 1 if there are any;\n"
             "otherwise prints the model table (layer, output dims (N, ...), weight dims, parameters).",
    CMD_POS_SPEC(Opts),
    .opts = check_opts,
    .quiet = "no table: the exit status (and any diagnostics) only",
    .verbose = "the usual output (nothing more to say)",
    .run = cmd_check_main};

static const CmdOpt plan_opts[] = {
    {"--json", NULL, ARG_FLAG, NULL, 0, 0, offsetof(Opts, json), "one JSON document instead of the table (fields: specs/README.md)"},
    {"--batch", NULL, ARG_INT, "N", 1, 1 << 20, offsetof(Opts, batch), "plan for batch N instead of the spec's train.batch"},
    {NULL}};
static const CmdDef cmd_plan = {
    .name = "plan", .args = "SPEC [--json] [--batch N]",
    .summary = "storage, parameters, bytes and FLOPs per layer; memory layout",
    .about = "Check SPEC, then plan it: per layer the storage chosen (dense, tensor train, sparse),\n"
             "parameters, bytes, forward and backward FLOPs at the batch size, and the memory blocks.",
    CMD_POS_SPEC(Opts),
    .opts = plan_opts,
    .quiet = "the plan only (no effect: it is the output)",
    .verbose = "the usual output (nothing more to say)",
    .run = cmd_plan_main};

static int cmd_check_main(int argc, char **argv) {
  Opts o = {0};
  int rc = cmd_parse(&cmd_check, argc, argv, &o);
  if (rc) return rc < 0 ? EXIT_OK : rc;
  Ctx cx;
  Spec sp;
  rc = tesla_front_file(&cx, o.spec, &sp) < 0 ? EXIT_SPEC : EXIT_OK;
  if (rc == EXIT_OK && cmd_verbosity >= 0) check_print_table(&cx, &sp, stdout);
  ctx_free(&cx);
  return rc;
}

static int cmd_plan_main(int argc, char **argv) {
  Opts o = {0};
  int rc = cmd_parse(&cmd_plan, argc, argv, &o);
  if (rc) return rc < 0 ? EXIT_OK : rc;
  Ctx cx;
  Spec sp;
  rc = tesla_front_file(&cx, o.spec, &sp) < 0 ? EXIT_SPEC : EXIT_OK;
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

/* ---- the commands ------------------------------------------------------------------------ */

extern const CmdDef cmd_train, cmd_eval, cmd_predict, cmd_emit_llvm, cmd_compress, cmd_build, cmd_export, cmd_plot;

/* one line per command here, in 'teslac --help' order */
const CmdDef *const cmd_registry[] = {&cmd_check, &cmd_plan, &cmd_train, &cmd_eval, &cmd_predict, &cmd_emit_llvm,
                                      &cmd_compress, &cmd_build, &cmd_export, &cmd_plot, NULL};

static void usage_top(FILE *f) {
  fputs("usage: teslac <command> SPEC [options]\n"
        "\n"
        "TESLA's model compiler: a YAML model spec in, specialized code out.\n"
        "\n"
        "commands:\n", f);
  for (int i = 0; cmd_registry[i]; i++) {   /* "  plot LOG [-o OUT]    summary", or two lines */
    const CmdDef *d = cmd_registry[i];
    int n = fprintf(f, "  %s %s", d->name, d->args);
    if (n <= 23) fprintf(f, "%*s%s\n", 24 - n, "", d->summary);
    else fprintf(f, "\n%24s%s\n", "", d->summary);
  }
  fputs("\n"
        "options:\n"
        "  -h, --help            this text; 'teslac CMD --help' or 'teslac help CMD' for a command's own\n"
        "  -V, --version         the compiler and spec-language versions, the JIT's CPU, MPI, image formats\n"
        "\n"
        "Every command takes --flag value and --flag=value, -- to end the options, -q/--quiet and\n"
        "-v/--verbose. The spec language: specs/README.md; the manual: man teslac.\n"
        "Exit status: 0 ok, 1 the spec or the data is wrong, 2 usage.\n", f);
}

static int unknown_command(const char *cmd) {
  const char *names[32];
  int k = 0;
  for (int i = 0; cmd_registry[i] && k < 31; i++) names[k++] = cmd_registry[i]->name;
  names[k] = NULL;
  const char *s = diag_suggest(cmd, names);
  if (s) fprintf(stderr, "teslac: unknown command '%s'; did you mean '%s'?\nsee 'teslac --help'\n", cmd, s);
  else fprintf(stderr, "teslac: unknown command '%s'\nsee 'teslac --help'\n", cmd);
  return EXIT_USAGE;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage_top(stderr);
    return EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || (!strcmp(cmd, "help") && argc == 2)) {
    usage_top(stdout);
    return EXIT_OK;
  }
  if (!strcmp(cmd, "help")) {   /* teslac help CMD */
    const CmdDef *d = cmd_find(argv[2]);
    if (!d) return unknown_command(argv[2]);
    if (argc > 3) return cmd_usage(d->name, "help takes one command; '%s' is one too many", argv[3]);
    cmd_help(d, stdout);
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
  const CmdDef *d = cmd_find(cmd);
  if (d) return d->run(argc - 2, argv + 2);
  if (cmd[0] == '-') {
    fprintf(stderr, "teslac: '%s' before a command: give the command first, e.g. 'teslac train SPEC %s'\n"
                    "see 'teslac --help'\n", cmd, cmd);
    return EXIT_USAGE;
  }
  return unknown_command(cmd);
}
