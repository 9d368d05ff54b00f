/* eval.c: `teslac eval`: test-set loss and accuracy of a checkpoint over every test sample,
 * and how fast inference ran (compile and loading excluded); then the confusion matrix (rows:
 * true class, columns: predicted class) and each class's accuracy (its recall: correct over
 * its samples), with the spec's class names when it gives them. --json prints all of it as
 * one JSON document instead. */
#include "cmd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int digits(int64_t x) {
  int n = 1;
  while (x >= 10) x /= 10, n++;
  return n;
}

/* the confusion matrix and the per-class table, for a reader */
static void print_text(const Spec *sp, const int64_t *cm) {
  int64_t K = sp->classes, most = K - 1;
  int namew = 0;
  char buf[24];
  for (int64_t i = 0; i < K * K; i++) most = cm[i] > most ? cm[i] : most;
  for (int64_t k = 0; k < K && sp->class_names; k++) {
    int n = (int)strlen(spec_class_name(sp, k, buf));
    namew = n > namew ? n : namew;
  }
  int idw = digits(K - 1), w = digits(most) + 1, labw = idw + (namew ? namew + 1 : 0);
  printf("\nconfusion matrix (rows: true class, columns: predicted class)\n");
  printf("  %*s ", labw, "");
  for (int64_t j = 0; j < K; j++) printf("%*lld", w, (long long)j);
  putchar('\n');
  for (int64_t i = 0; i < K; i++) {
    printf("  %*lld", idw, (long long)i);
    if (namew) printf(" %-*s", namew, spec_class_name(sp, i, buf));
    putchar(' ');
    for (int64_t j = 0; j < K; j++) printf("%*lld", w, (long long)cm[i * K + j]);
    putchar('\n');
  }
  printf("\nper-class accuracy (correct / samples of the class)\n");
  for (int64_t i = 0; i < K; i++) {
    int64_t count = 0, right = cm[i * K + i];
    for (int64_t j = 0; j < K; j++) count += cm[i * K + j];
    printf("  %*lld", idw, (long long)i);
    if (namew) printf(" %-*s", namew, spec_class_name(sp, i, buf));
    if (count) printf("  %.4f", (double)right / (double)count);
    else printf("  %6s", "-");
    printf("  %*lld / %lld\n", digits(most), (long long)right, (long long)count);
  }
}

/* {"loss", "accuracy", "samples", "seconds", "classes", "confusion": [[...]...],
 *  "per_class": [{"class", "name", "count", "correct", "accuracy"}...]}; not finite: null */
static void print_json(const Spec *sp, const int64_t *cm, double loss, double acc, size_t n, double dt) {
  int64_t K = sp->classes;
  printf("{\"loss\": ");
  cmd_json_num(stdout, loss, 9);
  printf(", \"accuracy\": ");
  cmd_json_num(stdout, acc, 9);
  printf(", \"samples\": %zu, \"seconds\": ", n);
  cmd_json_num(stdout, dt, 6);
  printf(", \"classes\": %lld,\n \"confusion\": [", (long long)K);
  for (int64_t i = 0; i < K; i++) {
    printf("%s[", i ? ",\n               " : "");
    for (int64_t j = 0; j < K; j++) printf("%s%lld", j ? ", " : "", (long long)cm[i * K + j]);
    putchar(']');
  }
  printf("],\n \"per_class\": [");
  for (int64_t i = 0; i < K; i++) {
    int64_t count = 0, right = cm[i * K + i];
    for (int64_t j = 0; j < K; j++) count += cm[i * K + j];
    printf("%s{\"class\": %lld, \"name\": ", i ? ",\n               " : "", (long long)i);
    if (sp->class_names) cmd_json_str(stdout, sp->class_names[i]);
    else fputs("null", stdout);
    printf(", \"count\": %lld, \"correct\": %lld, \"accuracy\": ", (long long)count, (long long)right);
    cmd_json_num(stdout, count ? (double)right / (double)count : NAN, 9);
    putchar('}');
  }
  printf("]}\n");
}

static const CmdOpt eval_opts[] = {
    CMD_OPT_WEIGHTS("the weights (safetensors: a teslac checkpoint or PyTorch state_dict names)"),
    {"--json", NULL, ARG_FLAG, NULL, 0, 0, offsetof(TrainOpts, json), "one JSON document: loss, accuracy, samples, confusion, per_class"},
    CMD_OPT_BATCH("the batch the test set is run in (default: train.batch)"),
    CMD_OPT_THREADS,
    CMD_OPT_NO_CACHE,
    {NULL}};

const CmdDef cmd_eval = {
    .name = "eval", .args = "SPEC --weights CKPT [--json] [options]",
    .summary = "test-set loss, accuracy and confusion matrix of trained weights",
    .about = "Test-set loss and accuracy of the weights in CKPT, over every test sample; then the\n"
             "confusion matrix (rows: true class, columns: predicted class) and each class's accuracy\n"
             "(its correct / its samples), with the spec's class names when it gives them.",
    CMD_POS_SPEC(TrainOpts),
    .opts = eval_opts,
    .quiet = "the results only (no effect: they are the output)",
    .verbose = "also what the compile took, on standard error",
    .run = eval_main};

int eval_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts(&cmd_eval, argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  Ctx cx;
  Model m = {0};
  TsDataset te = {0};
  int64_t *cm = NULL;
  rc = 1;
  TsErr e;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  if (cmd_load_split(&cx, &m.sp, m.sp.data.test_images, m.sp.data.test_labels, "test", &te) < 0) goto out;
  if (te.count == 0) {
    fprintf(stderr, "teslac: test data: %s holds no samples; eval needs at least one\n", m.sp.data.test_images);
    goto out;
  }
  if (model_build(&cx, &m, o.batch ? o.batch : m.sp.train.batch, o.threads, cmd_verbosity > 0 ? stderr : NULL) < 0) goto out;
  if (model_load(&cx, &m, o.weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  const char *bad = model_nonfinite(&m);
  if (bad) {   /* every score would be NaN: say why instead */
    fprintf(stderr, "teslac: %s: '%s' holds non-finite values (NaN or infinity); the run that wrote it diverged\n",
            o.weights, bad);
    goto out;
  }
  cm = calloc((size_t)(m.sp.classes * m.sp.classes), sizeof *cm);
  if (!cm) {
    fprintf(stderr, "teslac: out of memory for the confusion matrix\n");
    goto out;
  }
  double loss, acc, t0 = ts_now();
  model_eval_confusion(&m, &te, &loss, &acc, cm);
  double dt = ts_now() - t0;   /* the generated <name>_infer over the set, batches copied in */
  if (o.json) {
    print_json(&m.sp, cm, loss, acc, te.count, dt);
  } else {
    printf("test loss %.4f  test accuracy %.4f  (%zu samples in %.3f s: %.0f samples/s)\n", loss, acc, te.count,
           dt, (double)te.count / dt);
    print_text(&m.sp, cm);
  }
  rc = 0;
out:
  free(cm);
  model_free(&m);
  ts_dataset_free(&te);
  ctx_free(&cx);
  return rc;
}
