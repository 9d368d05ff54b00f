/* cmd.c: what the commands of the JIT path (train, eval, predict, emit-llvm) share: their
 * option parser (one loop, each command saying which options it takes), usage errors (exit 2)
 * and loading a split of the spec's data. */
#include "cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
    "train loss and accuracy (and the validation set's, when the spec has one), and write a\n"
    "checkpoint; the test set is evaluated after the last epoch. Ctrl-C (SIGINT) or SIGTERM\n"
    "finishes the current step, writes a checkpoint there and prints how to resume.\n"
    "\n"
    "  -o CKPT           checkpoint path (default: NAME.safetensors); written atomically at\n"
    "                    the end of each epoch and of the run\n"
    "  --save-best       also NAME.best.safetensors (next to CKPT) at each best value of\n"
    "                    train.monitor (default val_loss) or of early_stopping's monitor\n"
    "  --save-every N    also checkpoint CKPT every N steps\n"
    "  --validation-split F  hold out the fraction F of the training set, chosen by the seed,\n"
    "                    as the validation set (default: data.validation_split / data.val)\n"
    "  --test-every-epoch  evaluate the test set after every epoch, not only the last\n"
    "  --allow-nonfinite  train on when the loss or the weights become NaN or infinite (by\n"
    "                    default that stops the run, exit 1, the last checkpoint kept)\n"
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

/* ---- export (export.c) ---- */
static const char export_help[] =
    "usage: teslac export SPEC --weights CKPT [-o OUT.onnx] [--batch N] [-q]\n\n"
    "Write SPEC with the weights in CKPT as an ONNX model of inference (opset 13; specs/README.md,\n"
    "'teslac export'): input \"input\" float32 (N, C, H, W) or (N, D), the values after data.scale, as\n"
    "teslac predict feeds them; output \"output\" (N, classes), probabilities when the spec ends in\n"
    "softmax. Tensor trains stay trains (their cores contracted in the graph); pruned weights dense.\n\n"
    "  -o OUT.onnx   the model (default: the model's name + .onnx)\n"
    "  --batch N     a fixed batch dim N (default: the symbolic dim \"N\", any batch)\n"
    "  -q, --quiet   no summary line\n";
/* ---- end export ---- */

bool cmd_decimal(const char *v, bool integer) {
  const char *p = v;
  if (!integer && (*p == '+' || *p == '-')) p++;
  size_t n = strspn(p, "0123456789");
  if (integer) return n > 0 && !p[n];
  p += n;
  size_t frac = 0;
  if (*p == '.') frac = strspn(++p, "0123456789"), p += frac;
  if (n + frac == 0) return false;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    size_t ex = strspn(p, "0123456789");
    if (!ex) return false;
    p += ex;
  }
  return !*p;
}

int cmd_value(const char *cmd, const char *flag, const char *v, double lo, double hi, bool integer, double *out) {
  errno = 0;
  double d = cmd_decimal(v, integer) ? strtod(v, NULL) : NAN;
  if (!isfinite(d) || errno == ERANGE || d < lo || d > hi) {
    if (integer)
      fprintf(stderr, "teslac: %s must be an integer from %lld to %lld, got '%s'\nsee 'teslac %s --help'\n", flag,
              (long long)lo, (long long)hi, v, cmd);
    else
      fprintf(stderr, "teslac: %s must be a number from %g to %g, got '%s'\nsee 'teslac %s --help'\n", flag, lo, hi, v, cmd);
    return 2;
  }
  *out = d;
  return 0;
}

static int num_opt(const char *cmd, int argc, char **argv, int *i, double lo, double hi, bool integer, double *out) {
  const char *name = argv[*i];
  if (*i + 1 >= argc) return cmd_usage(cmd, "%s needs a value", name);
  return cmd_value(cmd, name, argv[++*i], lo, hi, integer, out);
}

int cmd_parse_opts(const char *cmd, int argc, char **argv, TrainOpts *o) {
  memset(o, 0, sizeof *o);
  o->val_split = -1;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    double d;
    int rc = 0;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(!strcmp(cmd, "train") ? train_help : !strcmp(cmd, "eval") ? eval_help
            : !strcmp(cmd, "predict") ? predict_help : !strcmp(cmd, "build") ? build_help
            : !strcmp(cmd, "export") ? export_help : emit_help, stdout);
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
      NUM_OPT("--save-every", 1, 1e12, true, o->save_every = (int64_t)d)
      NUM_OPT("--validation-split", 0, 0.99, false, o->val_split = d)
      if (!strcmp(a, "--save-best")) {
        o->save_best = true;
        continue;
      }
      if (!strcmp(a, "--allow-nonfinite")) {
        o->allow_nonfinite = true;
        continue;
      }
      if (!strcmp(a, "--test-every-epoch")) {
        o->test_every_epoch = true;
        continue;
      }
      NUM_OPT("--epochs", 1, 1e6, true, o->epochs = (int64_t)d)
      NUM_OPT("--steps", 1, 2147483647, true, o->steps = (int64_t)d)
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
    } else if (!strcmp(cmd, "export")) {   /* export (export.c): --weights, -o, -q; --batch below */
      STR_OPT("--weights", weights)
      STR_OPT("-o", out)
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
    if (strcmp(cmd, "emit-llvm") && strcmp(cmd, "build") && strcmp(cmd, "export")) {
      NUM_OPT("--threads", 1, 1024, true, o->threads = (int64_t)d)
      if (!strcmp(a, "--no-cache")) {   /* process-wide: every compile of this command */
        jit_cache_enable(false);
        continue;
      }
    }
#undef STR_OPT
#undef NUM_OPT
    if (a[0] == '-' && a[1]) return cmd_usage(cmd, "unknown option '%s'", a);
    if (!*a) return cmd_usage(cmd, "%san empty argument where SPEC was expected", "");
    if (o->spec) return cmd_usage(cmd, "one spec at a time; '%s' is one too many", a);
    o->spec = a;
  }
  if (!o->spec) return cmd_usage(cmd, "%smissing SPEC (a model spec, e.g. specs/mlp.yaml)", "");
  if ((!strcmp(cmd, "eval") || !strcmp(cmd, "predict") || !strcmp(cmd, "build") || !strcmp(cmd, "export")) && !o->weights)
    return cmd_usage(cmd, "%s needs --weights CKPT", cmd);
  if (o->init && o->resume) return cmd_usage(cmd, "%sgive --init or --resume, not both", "");
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (o->threads > cores && cores > 0)
    fprintf(stderr, "teslac: warning: --threads %lld is more than the %ld cores here; the extra threads only wait for "
                    "each other (the tiles are shared out statically)\n", (long long)o->threads, cores);
  return 0;
}

int cmd_check_output(const char *path, const char *what) {
  struct stat st;
  if (!*path) {
    fprintf(stderr, "teslac: the %s path is empty\n", what);
    return -1;
  }
  if (stat(path, &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      fprintf(stderr, "teslac: cannot write the %s '%s': it exists and is not a regular file\n", what, path);
      return -1;
    }
  } else if (errno != ENOENT) {
    fprintf(stderr, "teslac: cannot write the %s '%s': %s\n", what, path, strerror(errno));
    return -1;
  }
  /* the folder must take a new file: outputs are written next to their path, then renamed */
  const char *slash = strrchr(path, '/');
  int dirlen = slash ? (slash == path ? 1 : (int)(slash - path)) : 1;
  char probe[4200];
  if (snprintf(probe, sizeof probe, "%.*s/.teslac-probe-%ld", dirlen, slash ? path : ".", (long)getpid()) >=
      (int)sizeof probe) {
    fprintf(stderr, "teslac: cannot write the %s '%s': the path is too long\n", what, path);
    return -1;
  }
  int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0600);
  int err = errno;
  if (fd >= 0) close(fd), unlink(probe);
  if (fd < 0) {
    fprintf(stderr, "teslac: cannot write the %s '%s': %s\n", what, path,
            err == ENOENT ? "its folder does not exist" : strerror(err));
    return -1;
  }
  return 0;
}

/* the same file: the same device and inode when both exist; the same name otherwise */
static bool same_file(const char *a, const char *b) {
  struct stat sa, sb;
  bool ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
  if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
  return !ea && !eb && !strcmp(a, b);
}

int cmd_check_roles(const CmdFile *in, int nin, const CmdFile *out, int nout, int allow_in, int allow_out) {
  for (int j = 0; j < nout; j++) {
    if (!out[j].path) continue;
    for (int i = 0; i < nin; i++)
      if (in[i].path && !(i == allow_in && j == allow_out) && same_file(in[i].path, out[j].path)) {
        fprintf(stderr, "teslac: the %s '%s' is the %s '%s': writing it would destroy an input of this run; give the "
                        "%s another path\n", out[j].role, out[j].path, in[i].role, in[i].path, out[j].role);
        return -1;
      }
    for (int k = 0; k < j; k++)
      if (out[k].path && same_file(out[k].path, out[j].path)) {
        fprintf(stderr, "teslac: the %s and the %s are the same file '%s'; give them different paths\n", out[k].role,
                out[j].role, out[j].path);
        return -1;
      }
  }
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
    diag_at(cx, sp->data.present ? sp->data.key_loc : (SrcLoc){0},
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
