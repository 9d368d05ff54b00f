/* test_front.c: unit tests of teslac's front end (yaml.c, spec.c, check.c, the ops, plan.c)
 * through tesla_front() on in-memory specs. Diagnostics go to a memstream so that a test can
 * count them and look at their text. The reference specs are read from specs/ (meson runs
 * this from the source root). Parameter counts are PyTorch's sum(p.numel() for p in
 * model.parameters()) for the same nn.Sequential. */
#include "teslac.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

/* One compilation of `src`: the context, its spec, and its diagnostics as text. */
typedef struct Run {
  Ctx cx;
  Spec sp;
  char *err;
  size_t errlen;
  FILE *errf;
  int rc;
} Run;

static void run_src(Run *r, const char *src) {
  memset(r, 0, sizeof *r);
  r->errf = open_memstream(&r->err, &r->errlen);
  ck_assert_ptr_nonnull(r->errf);
  ctx_init(&r->cx, "mem.yaml", r->errf);
  ctx_set_source(&r->cx, src, strlen(src));
  r->rc = tesla_front(&r->cx, &r->sp);
  fflush(r->errf);
}

static void run_file(Run *r, const char *path) {
  memset(r, 0, sizeof *r);
  r->errf = open_memstream(&r->err, &r->errlen);
  ctx_init(&r->cx, path, r->errf);
  ck_assert_int_eq(ctx_read_file(&r->cx), 0);
  r->rc = tesla_front(&r->cx, &r->sp);
  fflush(r->errf);
  ck_assert_msg(r->rc == 0, "%s: %s", path, r->err);
}

static void run_done(Run *r) {
  ctx_free(&r->cx);
  fclose(r->errf);
  free(r->err);
}

static void ck_ok(Run *r) { ck_assert_msg(r->rc == 0 && r->cx.nerrors == 0, "unexpected errors:\n%s", r->err); }

static void ck_shape(const Shape *s, int rank, int64_t a, int64_t b, int64_t c) {
  ck_assert_int_eq(s->rank, rank);
  ck_assert_int_eq(s->d[0], a);
  if (rank == 3) {
    ck_assert_int_eq(s->d[1], b);
    ck_assert_int_eq(s->d[2], c);
  }
}

/* ---- defaults ------------------------------------------------------------------------- */

START_TEST(train_defaults) {
  Run r;
  run_src(&r, "tesla: 1\ninput: [4]\nlayers:\n  - dense: {units: 3}\n");
  ck_ok(&r);
  const TrainCfg *t = &r.sp.train;
  ck_assert_int_eq(t->opt, OPT_ADAM);
  ck_assert_double_eq(t->lr, 0.001);
  ck_assert_double_eq(t->beta1, 0.9);
  ck_assert_double_eq(t->beta2, 0.999);
  ck_assert_double_eq(t->eps, 1e-8);
  ck_assert_double_eq(t->weight_decay, 0);
  ck_assert_int_eq(t->sched, SCHED_CONSTANT);
  ck_assert_int_eq(t->epochs, 10);
  ck_assert_int_eq(t->batch, 32);
  ck_assert(t->shuffle);
  ck_assert(t->metric_accuracy);
  ck_assert_int_eq(r.sp.classes, 3);            /* from the last layer */
  ck_assert_str_eq(r.sp.name, "mem");            /* from the file name */
  ck_assert_str_eq(r.sp.layers[0].name, "0");
  ck_assert(r.sp.layers[0].u.dense.bias);
  run_done(&r);
}
END_TEST

START_TEST(optimizer_defaults) {
  Run r;
  run_src(&r, "tesla: 1\ninput: [4]\nlayers:\n  - dense: {units: 3}\ntrain: {optimizer: adamw}\n");
  ck_ok(&r);
  ck_assert_int_eq(r.sp.train.opt, OPT_ADAMW);
  ck_assert_double_eq(r.sp.train.weight_decay, 0.01);   /* torch.optim.AdamW */
  ck_assert_double_eq(r.sp.train.lr, 0.001);
  run_done(&r);
  run_src(&r, "tesla: 1\ninput: [4]\nlayers:\n  - dense: {units: 3}\n"
              "train: {optimizer: {sgd: {momentum: 0.9}}, schedule: cosine, epochs: 7}\n");
  ck_ok(&r);
  ck_assert_int_eq(r.sp.train.opt, OPT_SGD);
  ck_assert_double_eq(r.sp.train.lr, 0.01);
  ck_assert_double_eq(r.sp.train.momentum, 0.9);
  ck_assert_int_eq(r.sp.train.sched, SCHED_COSINE);
  ck_assert_int_eq(r.sp.train.t_max, 7);                /* the epochs */
  run_done(&r);
}
END_TEST

START_TEST(layer_defaults) {
  Run r;
  run_src(&r, "tesla: 1\ninput: [3, 9, 9]\nlayers:\n"
              "  - conv: {filters: 4, kernel: 2, padding: same}\n"   /* 0 */
              "  - batchnorm: {}\n"                                  /* 1 */
              "  - leaky_relu: {}\n"                                 /* 2 */
              "  - maxpool: {size: 3}\n"                             /* 3 */
              "  - dropout\n"                                        /* 4 */
              "  - conv: {filters: 2, kernel: [3, 1], padding: same}\n"  /* 5 */
              "  - dense: {units: 5}\n");
  ck_ok(&r);
  const Layer *L = r.sp.layers;
  /* 'same' with an even kernel pads one more at the bottom/right, as PyTorch */
  ck_assert_int_eq(L[0].u.conv.pt, 0);
  ck_assert_int_eq(L[0].u.conv.pb, 1);
  ck_assert_int_eq(L[0].u.conv.pl, 0);
  ck_assert_int_eq(L[0].u.conv.pr, 1);
  ck_assert_int_eq(L[0].u.conv.sh, 1);
  ck_assert(L[0].u.conv.bias);
  ck_shape(&L[0].out, 3, 4, 9, 9);
  ck_assert_double_eq(L[1].u.bn.eps, 1e-5);
  ck_assert_double_eq(L[1].u.bn.momentum, 0.1);
  ck_assert_double_eq(L[2].u.act.slope, 0.01);
  ck_assert_int_eq(L[3].u.pool.sh, 3);          /* stride = size */
  ck_assert_int_eq(L[3].u.pool.sw, 3);
  ck_assert_int_eq(L[3].u.pool.ph, 0);
  ck_shape(&L[3].out, 3, 4, 3, 3);
  ck_assert_double_eq(L[4].u.drop.rate, 0.5);
  ck_assert_int_eq(L[5].u.conv.pt, 1);
  ck_assert_int_eq(L[5].u.conv.pb, 1);
  ck_assert_int_eq(L[5].u.conv.pl, 0);
  ck_assert_int_eq(L[5].u.conv.pr, 0);
  ck_shape(&L[5].out, 3, 2, 3, 3);
  ck_assert(L[6].implicit_flatten);
  ck_shape(&L[6].in, 3, 2, 3, 3);
  run_done(&r);
}
END_TEST

/* ---- the reference specs -------------------------------------------------------------- */

static int64_t nparams(Run *r, Plan *pl) {
  plan_spec(&r->cx, &r->sp, r->sp.train.batch, pl);
  ck_assert_int_eq(r->cx.nerrors, 0);
  return pl->params;
}

START_TEST(seed_spec) {
  Run r;
  run_file(&r, "specs/seed.yaml");
  const Layer *L = r.sp.layers;
  ck_assert_int_eq(r.sp.nlayers, 6);
  ck_shape(&r.sp.input, 3, 1, 28, 28);
  ck_shape(&L[0].out, 3, 10, 28, 28);
  ck_shape(&L[1].out, 3, 10, 14, 14);
  ck_shape(&L[2].out, 1, 10, 0, 0);
  ck_assert_int_eq(L[2].in.d[0] * L[2].in.d[1] * L[2].in.d[2], 1960);
  ck_shape(&L[3].out, 1, 10, 0, 0);
  ck_shape(&L[4].out, 1, 10, 0, 0);
  ck_shape(&L[5].out, 1, 10, 0, 0);
  Plan pl;
  ck_assert_int_eq(nparams(&r, &pl), 19820);
  ck_assert_int_eq(pl.buffers, 0);
  run_done(&r);
}
END_TEST

START_TEST(mlp_spec) {
  Run r;
  run_file(&r, "specs/mlp.yaml");
  const Layer *L = r.sp.layers;
  ck_assert_int_eq(r.sp.nlayers, 8);
  ck_shape(&r.sp.input, 1, 784, 0, 0);
  static const int64_t out[] = {1024, 1024, 1024, 1024, 1024, 1024, 10, 10};
  for (int i = 0; i < 8; i++) ck_shape(&L[i].out, 1, out[i], 0, 0);
  Plan pl;
  ck_assert_int_eq(nparams(&r, &pl), 1867786);
  ck_assert_int_eq(pl.buffers, 4096);           /* two batchnorms' running mean and var */
  run_done(&r);
}
END_TEST

START_TEST(fashion_cnn_spec) {
  Run r;
  run_file(&r, "specs/fashion_cnn.yaml");
  const Layer *L = r.sp.layers;
  ck_assert_int_eq(r.sp.nlayers, 12);
  ck_shape(&L[0].out, 3, 32, 28, 28);
  ck_shape(&L[1].out, 3, 32, 28, 28);
  ck_shape(&L[2].out, 3, 32, 28, 28);
  ck_shape(&L[3].out, 3, 32, 14, 14);
  ck_shape(&L[4].out, 3, 64, 14, 14);
  ck_shape(&L[5].out, 3, 64, 14, 14);
  ck_shape(&L[6].out, 3, 64, 14, 14);
  ck_shape(&L[7].out, 3, 64, 7, 7);
  ck_shape(&L[8].out, 1, 256, 0, 0);
  ck_assert(L[8].implicit_flatten);
  ck_shape(&L[9].out, 1, 256, 0, 0);
  ck_shape(&L[10].out, 1, 10, 0, 0);
  ck_shape(&L[11].out, 1, 10, 0, 0);
  ck_assert_str_eq(L[10].name, "head");
  Plan pl;
  ck_assert_int_eq(nparams(&r, &pl), 824650);
  /* tensor names: <layer>.<param>, the layer's name or its index */
  bool head_w = false, bn_var = false;
  for (int i = 0; i < pl.ntensors; i++) {
    if (!strcmp(pl.tensors[i].name, "head.weight")) {
      head_w = true;
      ck_assert_int_eq(pl.tensors[i].p.dims[0], 10);
      ck_assert_int_eq(pl.tensors[i].p.dims[1], 256);
    }
    if (!strcmp(pl.tensors[i].name, "1.running_var")) bn_var = !pl.tensors[i].p.trainable;
  }
  ck_assert(head_w);
  ck_assert(bn_var);
  ck_assert_str_eq(pl.tensors[0].name, "0.weight");
  ck_assert_str_eq(pl.tensors[1].name, "0.bias");
  run_done(&r);
}
END_TEST

/* ---- the plan ------------------------------------------------------------------------- */

START_TEST(plan_dense_flops) {
  Run r;
  run_src(&r, "tesla: 1\ninput: [784]\nlayers:\n  - dense: {units: 10}\ntrain: {batch: 32}\n");
  ck_ok(&r);
  Plan pl;
  plan_spec(&r.cx, &r.sp, 32, &pl);
  ck_assert_int_eq(r.cx.nerrors, 0);
  /* forward: 32 x 784 x 10 multiply-adds (2 FLOPs each) + 32 x 10 bias adds;
   * backward: the weight gradient (the same multiply-adds) + the bias gradient (sum over the
   * batch); no input gradient for the first layer */
  int64_t mac = 32 * 784 * 10, bias = 32 * 10;
  ck_assert_int_eq(pl.layers[0].flops.fwd, 2 * mac + bias);
  ck_assert_int_eq(pl.layers[0].flops.bwd, 2 * mac + bias);
  ck_assert_int_eq(pl.flops.fwd, 502080);
  ck_assert_int_eq(pl.params, 7850);
  ck_assert_int_eq(pl.layers[0].act_elems, 320);
  run_done(&r);
}
END_TEST

START_TEST(plan_json) {
  Run r;
  run_file(&r, "specs/seed.yaml");
  Plan pl;
  plan_spec(&r.cx, &r.sp, r.sp.train.batch, &pl);
  char *buf = NULL;
  size_t len = 0;
  FILE *o = open_memstream(&buf, &len);
  plan_print_json(&r.cx, &r.sp, &pl, o);
  fclose(o);
  /* balanced braces and brackets outside strings, no trailing garbage */
  int depth = 0, maxdepth = 0;
  bool in_str = false;
  for (size_t i = 0; i < len; i++) {
    char c = buf[i];
    if (in_str) {
      if (c == '\\') i++;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '{' || c == '[') depth++, maxdepth = depth > maxdepth ? depth : maxdepth;
    else if (c == '}' || c == ']') {
      depth--;
      ck_assert_int_ge(depth, 0);
      if (depth == 0) {
        for (size_t j = i + 1; j < len; j++) ck_assert(buf[j] == '\n' || buf[j] == ' ');
      }
    }
  }
  ck_assert(!in_str);
  ck_assert_int_eq(depth, 0);
  ck_assert_int_ge(maxdepth, 3);
  ck_assert_ptr_nonnull(strstr(buf, "\"totals\": {\"params\": 19820,"));
  ck_assert_ptr_nonnull(strstr(buf, "\"model\": \"seed\""));
  ck_assert_ptr_nonnull(strstr(buf, "\"name\": \"2.weight\", \"shape\": [10, 1960]"));
  free(buf);
  run_done(&r);
}
END_TEST

/* ---- errors --------------------------------------------------------------------------- */

START_TEST(many_errors_one_run) {
  Run r;
  run_src(&r, "tesla: 1\n"
              "input: [1, 28, 28]\n"
              "clases: 10\n"                                            /* 1 */
              "layers:\n"
              "  - conv: {filters: 32, kernel: 3, paddin: same}\n"      /* 2 */
              "  - batchnorm: {eps: 0}\n"                               /* 3 */
              "  - leaky_relu: {slope: big}\n"                          /* 4 */
              "  - dense: {units: ten}\n"                               /* 5 */
              "train:\n"
              "  optimizer: sgdd\n"                                     /* 6 */
              "  epochs: 0\n"                                           /* 7 */
              "  batch: 32.5\n");                                       /* 8 */
  ck_assert_int_eq(r.rc, -1);
  ck_assert_msg(r.cx.nerrors == 8, "got %d errors:\n%s", r.cx.nerrors, r.err);
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:3:1: error: unknown key 'clases' in the spec; did you mean 'classes'?\n"));
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:8:20: error: 'units' must be an integer, got 'ten'\n"
                                      "    8 |   - dense: {units: ten}\n"
                                      "      |                    ^~~\n"));
  run_done(&r);
}
END_TEST

START_TEST(shape_errors) {
  Run r;
  run_src(&r, "tesla: 1\ninput: [784]\nlayers:\n  - conv: {filters: 8, kernel: 3}\n");
  ck_assert_int_eq(r.cx.nerrors, 1);
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:4:5: error: conv needs an image input"));
  run_done(&r);
  run_src(&r, "tesla: 1\ninput: [784]\nclasses: 10\nlayers:\n  - dense: {units: 12}\n");
  ck_assert_int_eq(r.cx.nerrors, 1);
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:3:10: error: classes is 10, but the last layer gives 12 outputs"));
  run_done(&r);
}
END_TEST

START_TEST(yaml_errors) {
  static const char *const bad[] = {
      "",                                   /* empty */
      "# just a comment\n",
      "tesla: 1\n\tinput: [4]\n",           /* tab */
      "a: [1, 2\n",                         /* unclosed */
      "a: &x 1\nb: *x\n",                   /* alias */
      "a: 1\n---\nb: 2\n",                  /* two documents */
      "tesla: 1\0\n",                       /* NUL (cut by strlen: see below) */
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    Run r;
    run_src(&r, bad[i]);
    ck_assert_msg(r.rc == -1 && r.cx.nerrors >= 1, "case %zu: no error", i);
    run_done(&r);
  }
  /* a NUL byte in the middle: ctx_set_source takes a length */
  Run r;
  memset(&r, 0, sizeof r);
  r.errf = open_memstream(&r.err, &r.errlen);
  ctx_init(&r.cx, "mem.yaml", r.errf);
  ctx_set_source(&r.cx, "tesla: 1\n\0abc\n", 14);
  ck_assert_int_eq(tesla_front(&r.cx, &r.sp), -1);
  fflush(r.errf);
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:2:1: error: this is not a text file"));
  run_done(&r);
}
END_TEST

START_TEST(suggest) {
  static const char *const keys[] = {"filters", "kernel", "stride", "padding", "bias", NULL};
  ck_assert_str_eq(diag_suggest("filter", keys), "filters");
  ck_assert_str_eq(diag_suggest("kernal", keys), "kernel");
  ck_assert_str_eq(diag_suggest("strdie", keys), "stride");      /* a swap is one edit */
  ck_assert_str_eq(diag_suggest("pad", (const char *const[]){"padding", "bias", NULL}) ?: "-", "-");
  ck_assert_ptr_null(diag_suggest("xyzzy", keys));
  ck_assert_ptr_null(diag_suggest("", keys));
  static const char *const inits[] = {"kaiming_uniform", "kaiming_normal", "glorot", NULL};
  ck_assert_str_eq(diag_suggest("kaiming", inits), "kaiming_uniform");   /* a prefix */
  ck_assert_str_eq(diag_suggest("conv2", op_names()), "conv");
  ck_assert_str_eq(diag_suggest("maxpol", op_names()), "maxpool");
}
END_TEST

START_TEST(typo_read_as_suggestion) {
  /* 'filter' is reported once and read as 'filters': no second "needs 'filters'" error, and
   * its value is still checked */
  Run r;
  run_src(&r, "tesla: 1\ninput: [1, 8, 8]\nlayers:\n  - conv: {filter: 0, kernel: 3}\n  - dense: {units: 2}\n");
  ck_assert_msg(r.cx.nerrors == 2, "%s", r.err);
  ck_assert_ptr_nonnull(strstr(r.err, "did you mean 'filters'?"));
  ck_assert_ptr_nonnull(strstr(r.err, "'filters' must be positive, got 0"));
  run_done(&r);
}
END_TEST

START_TEST(foreign_names) {
  /* a Keras kind is read as teslac's, so its keys are still checked; pool_size is read as
   * size (its value checked, no "needs 'size'") */
  Run r;
  run_src(&r, "tesla: 1\ninput: [1, 8, 8]\nlayers:\n  - Conv2D: {filters: 4, kernel_size: 3, activation: relu}\n"
              "  - maxpool: {pool_size: 0}\n  - dense: {units: 2}\n");
  ck_assert_msg(r.cx.nerrors == 5, "%s", r.err);
  ck_assert_ptr_nonnull(strstr(r.err, "unknown layer 'Conv2D'; did you mean 'conv'?"));
  ck_assert_ptr_nonnull(strstr(r.err, "unknown key 'kernel_size' in layer 0 ('conv'); did you mean 'kernel'?"));
  ck_assert_ptr_nonnull(strstr(r.err, "write '- relu: {}' after this layer"));
  ck_assert_ptr_nonnull(strstr(r.err, "'size' must be positive, got 0"));
  ck_assert_ptr_null(strstr(r.err, "needs 'size'"));
  run_done(&r);
  /* case only: teslac's own names as Keras and PyTorch capitalize them */
  ck_assert_str_eq(diag_suggest("SGD", (const char *const[]){"sgd", "adam", "adamw", NULL}), "sgd");
  ck_assert_str_eq(diag_suggest("ReLU", op_names()), "relu");
}
END_TEST

START_TEST(input_layout) {
  /* [C, H, W] passes without a word; [H, W, C] (channels last) is a warning at 'input', not an
   * error, since a dense model reads it the same */
  Run r;
  run_src(&r, "tesla: 1\ninput: [3, 32, 32]\nlayers:\n  - conv: {filters: 4, kernel: 3}\n  - dense: {units: 2}\n");
  ck_ok(&r);
  ck_assert_msg(r.cx.nwarnings == 0, "%s", r.err);
  run_done(&r);
  run_src(&r, "tesla: 1\ninput: [1, 28, 1]\nlayers:\n  - dense: {units: 2}\n");   /* W = 1 but C = 1: CHW */
  ck_ok(&r);
  ck_assert_msg(r.cx.nwarnings == 0, "%s", r.err);
  run_done(&r);
  run_src(&r, "tesla: 1\ninput: [28, 28, 1]\nlayers:\n  - dense: {units: 2}\n");
  ck_ok(&r);
  ck_assert_msg(r.cx.nwarnings == 1 && strstr(r.err, "mem.yaml:2:8: warning: 'input' [28, 28, 1] looks like [H, W, C]") &&
                    strstr(r.err, "write [1, 28, 28]"), "%s", r.err);
  run_done(&r);
}
END_TEST

START_TEST(duplicates_and_cap) {
  Run r;
  run_src(&r, "tesla: 1\ninput: [4]\nx: 1\ntesla: 1\nlayers:\n  - dense: {units: 2, bias: true, bias: false}\n");
  ck_assert_msg(r.cx.nerrors == 3, "%s", r.err);
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:4:1: error: duplicate key 'tesla' in the spec (first given at line 1)"));
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml:6:35: error: duplicate key 'bias' in layer 0 ('dense') (first given at line 6)"));
  run_done(&r);
  /* 150 bad metrics: all counted, 100 shown */
  char src[4096] = "tesla: 1\ninput: [4]\nlayers: [relu, dense: {units: 2}]\ntrain: {metrics: [";
  for (int i = 0; i < 150; i++) strcat(src, i ? ", m" : "m");
  strcat(src, "]}\n");
  run_src(&r, src);
  ck_assert_int_eq(r.cx.nerrors, 150);
  int shown = 0;
  for (const char *p = r.err; (p = strstr(p, ": error: ")); p++) shown++;
  ck_assert_int_eq(shown, 100);
  ck_assert_ptr_nonnull(strstr(r.err, "mem.yaml: too many errors; the first 100 are shown above\n"));
  run_done(&r);
}
END_TEST

/* a one-line spec of 3 MB with 300,000 bad keys: each error shows a bounded window of the
 * line around its caret ("..." at the cuts), not the whole line */
START_TEST(long_line_window) {
  size_t cap = 4u << 20, n = 0;
  char *src = malloc(cap);
  n += (size_t)sprintf(src, "{tesla: 1, input: [4], classes: 2, layers: [{dense: {units: 2}}]");
  for (int i = 0; i < 300000; i++) n += (size_t)sprintf(src + n, ", k%d: 1", i);
  strcpy(src + n, "}\n");
  Run r;
  run_src(&r, src);
  ck_assert_int_eq(r.cx.nerrors, 300000);
  ck_assert_msg(r.errlen < 100000, "%zu bytes of diagnostics", r.errlen);
  /* the caret still points at its key: 'k99' under the caret of its error */
  const char *e = strstr(r.err, "error: unknown key 'k99'");
  ck_assert_ptr_nonnull(e);
  const char *line = strstr(e, "\n    1 | ") + 9, *car = strstr(line, "\n      | ") + 9;
  const char *hat = strchr(car, '^');
  ck_assert_int_eq(strncmp(line + (hat - car), "k99: 1", 6), 0);
  ck_assert_int_eq(strncmp(line, "...", 3), 0);
  run_done(&r);
  free(src);
}
END_TEST

static Suite *front_suite(void) {
  Suite *s = suite_create("front");
  TCase *tc = tcase_create("defaults");
  tcase_add_test(tc, train_defaults);
  tcase_add_test(tc, optimizer_defaults);
  tcase_add_test(tc, layer_defaults);
  suite_add_tcase(s, tc);
  tc = tcase_create("reference specs");
  tcase_add_test(tc, seed_spec);
  tcase_add_test(tc, mlp_spec);
  tcase_add_test(tc, fashion_cnn_spec);
  suite_add_tcase(s, tc);
  tc = tcase_create("plan");
  tcase_add_test(tc, plan_dense_flops);
  tcase_add_test(tc, plan_json);
  suite_add_tcase(s, tc);
  tc = tcase_create("errors");
  tcase_add_test(tc, many_errors_one_run);
  tcase_add_test(tc, shape_errors);
  tcase_add_test(tc, yaml_errors);
  tcase_add_test(tc, suggest);
  tcase_add_test(tc, typo_read_as_suggestion);
  tcase_add_test(tc, foreign_names);
  tcase_add_test(tc, input_layout);
  tcase_add_test(tc, duplicates_and_cap);
  suite_add_tcase(s, tc);
  tc = tcase_create("long lines");
  tcase_set_timeout(tc, 60);   /* 3 MB of spec under ASan */
  tcase_add_test(tc, long_line_window);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  SRunner *sr = srunner_create(front_suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
