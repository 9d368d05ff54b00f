/* cmd.c: what the commands of the JIT path (train, eval, predict, emit-llvm) share: their
 * option parser (one loop, each command saying which options it takes), usage errors (exit 2)
 * and loading a split of the spec's data. */
#include "cmd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cmd_usage(const char *cmd, const char *fmt, const char *arg) {
  fprintf(stderr, "teslac: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nsee 'teslac %s --help'\n", cmd);
  return 2;
}

static const char train_help[] =
    "usage: teslac train SPEC [options]\n"
    "\n"
    "Compile SPEC for this CPU and train it on the spec's data; after each epoch print the\n"
    "train loss, test loss and test accuracy, and write a checkpoint.\n"
    "\n"
    "  -o CKPT           checkpoint path (default: NAME.safetensors); written atomically at\n"
    "                    the end of each epoch and of the run\n"
    "  --epochs N        epochs (default: train.epochs)\n"
    "  --steps N         stop after N optimizer steps (short, reproducible runs)\n"
    "  --batch B         batch size (default: train.batch)\n"
    "  --lr X            learning rate (default: train.lr)\n"
    "  --seed S          seed for initialization and shuffling (default: train.seed)\n"
    "  --threads T       threads (default: all cores)\n"
    "  --init W          start from the weights in W (safetensors, PyTorch state_dict names)\n"
    "  --resume CKPT     continue a run from a teslac checkpoint (weights, optimizer, position)\n"
    "  --log FILE        also write one JSON line per epoch to FILE\n"
    "  --profile         time every layer's forward and backward, the loss and the optimizer\n"
    "  --no-cache        compile afresh, bypassing the compile cache (~/.cache/teslac)\n";

static const char eval_help[] =
    "usage: teslac eval SPEC --weights CKPT [--json] [--batch B] [--threads T] [--no-cache]\n"
    "\n"
    "Test-set loss and accuracy of the weights in CKPT, over every test sample; then the\n"
    "confusion matrix (rows: true class, columns: predicted class) and each class's accuracy\n"
    "(its correct / its samples), with the spec's class names when it gives them.\n"
    "\n"
    "  --json     one JSON document: loss, accuracy, samples, confusion, per_class\n";

static const char predict_help[] =
    "usage: teslac predict SPEC --weights CKPT [--input IN] [--top K] [--json] [--batch B]\n"
    "                      [--threads T] [--no-cache]\n\n"
    "Classify every sample of IN (default: the spec's test images) with the weights in CKPT.\n"
    "IN is an IDX file, a PNG or PGM/PPM image, a folder of them (every .png, .pgm, .ppm, .pnm,\n"
    ".pbm, .pam file, by name), or - for standard input (told apart by their first bytes). An\n"
    "image must have the input's height and width; it becomes gray (PIL's convert('L')) for a\n"
    "1-channel input and RGB for a 3-channel one, then is scaled as data.scale says.\n"
    "Prints one line per sample: its index (an image: its file), its class, the class's name\n"
    "in quotes when the spec names them, and its probability (its raw score when the spec does\n"
    "not end in softmax); with --top K the K best classes, best first.\n\n"
    "  --top K    the K best classes per sample (1 ... the classes)\n"
    "  --json     one JSON object per line: {\"index\": i, [\"file\": f,] \"class\": c, [\"name\": n,]\n"
    "             \"scores\": [p0, p1, ...][, \"top\": [{\"class\", \"name\", \"score\"}, ...]]}\n";

static const char emit_help[] =
    "usage: teslac emit-llvm SPEC [--optimized] [--batch B]\n\n"
    "Print the LLVM IR teslac generates for SPEC: <name>_train_step (forward, loss, backward,\n"
    "optimizer), <name>_grad (the same without the optimizer) and <name>_infer. Kernels are\n"
    "calls until --optimized links them and runs O3 for this CPU.\n";

static const char build_help[] =
    "usage: teslac build SPEC --weights CKPT [-o NAME.o] [options]\n\n"
    "Compile SPEC with the weights in CKPT into an object file and a C header that declares its\n"
    "functions and sizes (specs/README.md, 'Object files'). Single-threaded, no heap, no global\n"
    "state; needs only libc's memcpy/memset and libm.\n\n"
    "  -o NAME.o             the object (default: the model's name + .o)\n"
    "  --header PATH         the header (default: the object's path with .h)\n"
    "  --train-step          also NAME_train_step: one optimizer step of the spec's optimizer on\n"
    "                        the spec's batch, with the training state's sizes\n"
    "  --external-weights F  the weights go to file F instead of the object's read-only data\n"
    "  --target TRIPLE       e.g. x86_64-linux-gnu, aarch64-linux-gnu, thumbv7em-none-eabihf\n"
    "                        (default: this machine)\n"
    "  --cpu CPU             e.g. host, x86-64, znver4, cortex-a72, cortex-m4 (default: host for\n"
    "                        this machine's triple, cortex-m4 for thumbv7em, else generic)\n"
    "  --batch B             the batch NAME_infer computes at once and NAME_train_step takes\n"
    "                        (default: train.batch; 1 gives the smallest scratch)\n"
    "  --name PREFIX         the C prefix of the symbols and macros (default: the model's name)\n"
    "  -q, --quiet           no summary line\n";

static int num_opt(const char *cmd, int argc, char **argv, int *i, double lo, double hi, bool integer, double *out) {
  const char *name = argv[*i];
  if (*i + 1 >= argc) return cmd_usage(cmd, "%s needs a value", name);
  const char *v = argv[++*i];
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (end == v || *end || errno || !isfinite(d) || d < lo || d > hi || (integer && d != floor(d))) {
    fprintf(stderr, "teslac: %s must be %s from %.15g to %.15g, got '%s'\nsee 'teslac %s --help'\n", name,
            integer ? "an integer" : "a number", lo, hi, v, cmd);
    return 2;
  }
  *out = d;
  return 0;
}

int cmd_parse_opts(const char *cmd, int argc, char **argv, TrainOpts *o) {
  memset(o, 0, sizeof *o);
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    double d;
    int rc = 0;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(!strcmp(cmd, "train") ? train_help : !strcmp(cmd, "eval") ? eval_help
            : !strcmp(cmd, "predict") ? predict_help : !strcmp(cmd, "build") ? build_help : emit_help, stdout);
      return -1;
    }
#define STR_OPT(flag, field)                                             \
  if (!strcmp(a, flag)) {                                                \
    if (i + 1 >= argc) return cmd_usage(cmd, "%s needs a value", flag);      \
    o->field = argv[++i];                                                \
    continue;                                                            \
  }
#define NUM_OPT(flag, lo, hi, integer, stmt)                              \
  if (!strcmp(a, flag)) {                                                 \
    if ((rc = num_opt(cmd, argc, argv, &i, lo, hi, integer, &d))) return rc; \
    stmt;                                                                 \
    continue;                                                             \
  }
    bool train = !strcmp(cmd, "train");
    if (train && !strcmp(a, "--profile")) {
      o->profile = true;
      continue;
    }
    if (train) {
      STR_OPT("-o", out)
      STR_OPT("--init", init)
      STR_OPT("--resume", resume)
      STR_OPT("--log", log)
      NUM_OPT("--epochs", 1, 1e6, true, o->epochs = (int64_t)d)
      NUM_OPT("--steps", 1, 1e12, true, o->steps = (int64_t)d)
      NUM_OPT("--lr", 1e-12, 1e6, false, o->lr = d)
      NUM_OPT("--seed", 0, 9e15, true, (o->seed = (int64_t)d, o->have_seed = true))
    } else if (!strcmp(cmd, "build")) {
      STR_OPT("--weights", weights)
      STR_OPT("-o", out)
      STR_OPT("--header", header)
      STR_OPT("--external-weights", ext_weights)
      STR_OPT("--target", target)
      STR_OPT("--cpu", cpu)
      STR_OPT("--name", name)
      if (!strcmp(a, "--train-step")) {
        o->train_step = true;
        continue;
      }
      if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
        o->quiet = true;
        continue;
      }
    } else if (!strcmp(cmd, "emit-llvm")) {
      if (!strcmp(a, "--optimized") || !strcmp(a, "-O")) {
        o->optimized = true;
        continue;
      }
      if (!strcmp(a, "--backward")) continue;   /* train_step always holds the backward */
    } else {
      STR_OPT("--weights", weights)
      if (!strcmp(cmd, "predict")) {
        STR_OPT("--input", input)
        NUM_OPT("--top", 1, 1 << 24, true, o->top = (int64_t)d)
      }
      if (!strcmp(a, "--json")) {   /* eval and predict */
        o->json = true;
        continue;
      }
    }
    NUM_OPT("--batch", 1, 1 << 20, true, o->batch = (int64_t)d)
    if (strcmp(cmd, "emit-llvm") && strcmp(cmd, "build")) {
      NUM_OPT("--threads", 1, 1024, true, o->threads = (int64_t)d)
      if (!strcmp(a, "--no-cache")) {   /* process-wide: every compile of this command */
        jit_cache_enable(false);
        continue;
      }
    }
#undef STR_OPT
#undef NUM_OPT
    if (a[0] == '-' && a[1]) return cmd_usage(cmd, "unknown option '%s'", a);
    if (o->spec) return cmd_usage(cmd, "one spec at a time; '%s' is one too many", a);
    o->spec = a;
  }
  if (!o->spec) return cmd_usage(cmd, "%smissing SPEC (a model spec, e.g. specs/mlp.yaml)", "");
  if ((!strcmp(cmd, "eval") || !strcmp(cmd, "predict") || !strcmp(cmd, "build")) && !o->weights)
    return cmd_usage(cmd, "%s needs --weights CKPT", cmd);
  if (o->init && o->resume) return cmd_usage(cmd, "%sgive --init or --resume, not both", "");
  return 0;
}

void cmd_json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p == '\t') fputs("\\t", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

void cmd_json_num(FILE *f, double x, int digits) {
  if (isfinite(x)) fprintf(f, "%.*g", digits, x);
  else fputs("null", f);
}

int cmd_load_split(Ctx *cx, const Spec *sp, const char *images, const char *labels, const char *what,
                      TsDataset *d) {
  if (!images || !labels) {
    diag_at(cx, sp->data.present ? sp->data.loc : (SrcLoc){0},
            "the spec has no %s data (data: {%s: {images: ..., labels: ...}})", what, what);
    return -1;
  }
  TsErr e;
  if (ts_dataset_load(images, labels, (float)sp->data.scale, (int)sp->classes, (size_t)shape_elems(&sp->input),
                      d, &e) < 0) {
    fprintf(stderr, "teslac: %s data: %s\n", what, e.msg);
    return -1;
  }
  return 0;
}
