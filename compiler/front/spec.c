/* spec.c: the second stage. It walks the YAML tree and fills a Spec: the model (name, input,
 * classes, layers), compression targets, training and data settings. Each reader carries the
 * schema fragment it accepts in a comment. Every unknown key, wrong type and out-of-range
 * value is reported at its own line and column (with a "did you mean" for near misses, and
 * teslac's name for Keras' and PyTorch's: one table, foreign[]) and the walk goes on, so one run
 * tells the user everything that is wrong. Each layer's own keys are
 * read by its op (op_*.c) through the spec_* readers below; shapes come later, in check.c. */
#include "teslac.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- key readers ---------------------------------------------------------------------- */

YNode *spec_get(YNode *map, const char *key) {
  if (!map || map->kind != Y_MAP) return NULL;
  for (int i = 0; i + 1 < map->nkids; i += 2)
    if (map->kids[i]->kind == Y_SCALAR && strcmp(map->kids[i]->str, key) == 0)
      return map->kids[i + 1];
  return NULL;
}

static bool is_null(const YNode *v) {
  return v->kind == Y_SCALAR && !v->quoted &&
         (v->len == 0 || !strcmp(v->str, "~") || !strcmp(v->str, "null") || !strcmp(v->str, "Null") ||
          !strcmp(v->str, "NULL"));
}

const char *spec_scalar_desc(Ctx *cx, YNode *v) {
  if (v->kind == Y_SEQ) return "a list";
  if (v->kind == Y_MAP) return "a map";
  if (is_null(v)) return "nothing";
  if (v->quoted) return arena_printf(cx, "the string \"%.40s\"", v->str);
  return arena_printf(cx, "'%.40s'", v->str);
}

/* A quoted number is a string in YAML; say how to fix it. */
static const char *unquote_hint(YNode *v) {
  if (v->kind != Y_SCALAR || !v->quoted || !v->len) return "";
  char *end;
  strtod(v->str, &end);
  return *end ? "" : " (without the quotes it is a number)";
}

bool spec_int(Ctx *cx, YNode *v, const char *key, int64_t lo, int64_t hi, int64_t *out) {
  if (v->kind != Y_SCALAR || v->quoted || is_null(v)) {
    diag_at(cx, v->loc, "'%s' must be an integer, got %s%s", key, spec_scalar_desc(cx, v),
            unquote_hint(v));
    return false;
  }
  errno = 0;
  char *end;
  long long x = strtoll(v->str, &end, 10);
  if (end == v->str || *end) {
    char *fend;
    double d = strtod(v->str, &fend);
    if (fend != v->str && !*fend && isfinite(d) && d == floor(d))
      diag_at(cx, v->loc, "'%s' must be written as an integer (digits only), got %s", key, v->str);
    else if (fend != v->str && !*fend && isfinite(d))
      diag_at(cx, v->loc, "'%s' must be a whole number, got %s", key, v->str);
    else
      diag_at(cx, v->loc, "'%s' must be an integer, got %s", key, spec_scalar_desc(cx, v));
    return false;
  }
  if (errno == ERANGE && x < 0) {
    diag_at(cx, v->loc, "'%s' must be at least %lld, got %s", key, (long long)lo, v->str);
    return false;
  }
  if (errno == ERANGE || x > hi) {
    diag_at(cx, v->loc, "'%s' is too large: %s (at most %lld)", key, v->str, (long long)hi);
    return false;
  }
  if (x < lo) {
    if (lo == 1)
      diag_at(cx, v->loc, "'%s' must be positive, got %lld", key, x);
    else
      diag_at(cx, v->loc, "'%s' must be at least %lld, got %lld", key, (long long)lo, x);
    return false;
  }
  *out = x;
  return true;
}

bool spec_num(Ctx *cx, YNode *v, const char *key, double lo, double hi, bool lo_open,
              bool hi_open, double *out) {
  if (v->kind != Y_SCALAR || v->quoted || is_null(v)) {
    diag_at(cx, v->loc, "'%s' must be a number, got %s%s", key, spec_scalar_desc(cx, v),
            unquote_hint(v));
    return false;
  }
  /* YAML writes infinity and NaN as .inf, -.inf, .nan; strtod's own "inf" and "nan" too */
  const char *t = v->str + (v->str[0] == '-' || v->str[0] == '+');
  if (!strcasecmp(t, ".inf") || !strcasecmp(t, ".nan")) {
    diag_at(cx, v->loc, "'%s' must be a finite number, got %s", key, v->str);
    return false;
  }
  char *end;
  errno = 0;
  double d = strtod(v->str, &end);
  if (end == v->str || *end) {
    diag_at(cx, v->loc, "'%s' must be a number, got %s", key, spec_scalar_desc(cx, v));
    return false;
  }
  if (!isfinite(d)) {
    diag_at(cx, v->loc, "'%s' must be a finite number, got %s", key, v->str);
    return false;
  }
  bool below = lo_open ? d <= lo : d < lo, above = hi_open ? d >= hi : d > hi;
  /* bounds of 1e6 and more only guard against nonsense: say "positive", not "(0, 1e+30]" */
  if (below && lo == 0 && hi >= 1e6) {
    diag_at(cx, v->loc, "'%s' must be %s, got %s", key, lo_open ? "positive" : "at least 0", v->str);
    return false;
  }
  if (above && hi >= 1e6) {
    diag_at(cx, v->loc, "'%s' is too large: %s (at most %g)", key, v->str, hi);
    return false;
  }
  if (below || above) {
    diag_at(cx, v->loc, "'%s' must be in %c%g, %g%c, got %s", key, lo_open ? '(' : '[', lo, hi,
            hi_open ? ')' : ']', v->str);
    return false;
  }
  *out = d;
  return true;
}

bool spec_bool(Ctx *cx, YNode *v, const char *key, bool *out) {
  if (v->kind == Y_SCALAR && !v->quoted) {
    if (!strcmp(v->str, "true") || !strcmp(v->str, "True") || !strcmp(v->str, "TRUE"))
      return *out = true, true;
    if (!strcmp(v->str, "false") || !strcmp(v->str, "False") || !strcmp(v->str, "FALSE"))
      return *out = false, true;
  }
  diag_at(cx, v->loc, "'%s' must be true or false, got %s", key, spec_scalar_desc(cx, v));
  return false;
}

/* int | [a, b] */
bool spec_pair(Ctx *cx, YNode *v, const char *key, int64_t lo, int64_t *a, int64_t *b) {
  if (v->kind == Y_SEQ) {
    if (v->nkids != 2) {
      diag_at(cx, v->loc, "'%s' must be an integer or a pair [h, w], got a list of %d", key,
              v->nkids);
      return false;
    }
    int64_t x = *a, y = *b;
    bool ok = spec_int(cx, v->kids[0], key, lo, TS_MAX_DIM, &x);
    ok &= spec_int(cx, v->kids[1], key, lo, TS_MAX_DIM, &y);
    if (ok) *a = x, *b = y;
    return ok;
  }
  int64_t x;
  if (!spec_int(cx, v, key, lo, TS_MAX_DIM, &x)) return false;
  *a = *b = x;
  return true;
}

static bool is_name(const char *s, bool lower_only) {
  if (!*s) return false;
  for (const char *p = s; *p; p++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || c == '_' || (!lower_only && c >= 'A' && c <= 'Z') ||
              (p > s && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

static bool is_str(Ctx *cx, YNode *v, const char *key) {
  if (v->kind == Y_SCALAR && !is_null(v)) return true;
  diag_at(cx, v->loc, "'%s' must be a name, got %s", key, spec_scalar_desc(cx, v));
  return false;
}

static bool is_path(Ctx *cx, YNode *v, const char *key) {
  if (v->kind == Y_SCALAR && !is_null(v)) return true;
  diag_at(cx, v->loc, "'%s' must be a file path, got %s", key, spec_scalar_desc(cx, v));
  return false;
}

/* ---- other frameworks' names ------------------------------------------------------------ */

/* Keras' and PyTorch's names for teslac's, in one table, so that a spec written from either gets
 * teslac's name at the very line. `where` lists the contexts a row applies to, separated by
 * spaces: an op's name (that layer's keys), "*" (any layer's keys), "layer" (a layer's kind),
 * "spec" (the top-level keys), "train", "sgd" / "adam" / "adamw" (an optimizer's keys), and the
 * values of "loss", "optimizer" and "init". `theirs` is a name, or "key=value" for one value of
 * a key. `ours` is teslac's name (read as meant, as a did-you-mean is), or NULL when teslac has
 * none; `note` says what differs or what to write instead. Names match case-insensitively. */
typedef struct { const char *where, *theirs, *ours, *note; } Foreign;

#define ACT_LAYER(a, extra) {"*", "activation=" a, NULL, "teslac has no activation key; write '- " a ": {}' after this layer" extra}
#define NO_ACT(a) {"*", "activation=" a, NULL, "teslac has no activation key, and no " a " (its activations are the layers relu, leaky_relu and softmax)"}
#define NO_ACT_LAYER(a) {"layer", a, NULL, "teslac has no " a " (its activations: relu, leaky_relu, softmax)"}
#define TRAIN_KEY(k) {"spec", k, NULL, "it is a key of 'train:'"}
#define INFERRED(w, k) {w, k, NULL, "teslac infers it from the previous layer; drop it"}

static const Foreign foreign[] = {
    /* layer kinds (Keras, PyTorch; ReLU, Dense, Dropout, ... are teslac's names in other case) */
    {"layer", "conv2d", "conv", NULL}, {"layer", "convolution2d", "conv", NULL}, {"layer", "convolution", "conv", NULL},
    {"layer", "maxpooling2d", "maxpool", NULL}, {"layer", "maxpool2d", "maxpool", NULL}, {"layer", "max_pool", "maxpool", NULL},
    {"layer", "max_pool2d", "maxpool", NULL},
    {"layer", "averagepooling2d", "avgpool", NULL}, {"layer", "avgpool2d", "avgpool", NULL}, {"layer", "avg_pool", "avgpool", NULL},
    {"layer", "avg_pool2d", "avgpool", NULL},
    {"layer", "globalaveragepooling2d", "avgpool", "with 'size' the [H, W] of its input, then flatten"},
    {"layer", "adaptiveavgpool2d", "avgpool", "with 'size' the [H, W] of its input for an output size of 1"},
    {"layer", "linear", "dense", NULL}, {"layer", "fc", "dense", NULL}, {"layer", "fully_connected", "dense", NULL},
    {"layer", "batchnormalization", "batchnorm", "Keras' momentum=0.99 is teslac's momentum: 0.01"},
    {"layer", "batchnorm2d", "batchnorm", NULL}, {"layer", "batchnorm1d", "batchnorm", NULL},
    {"layer", "batch_norm", "batchnorm", NULL}, {"layer", "bn", "batchnorm", NULL},
    {"layer", "leakyrelu", "leaky_relu", NULL}, {"layer", "lrelu", "leaky_relu", NULL},
    {"layer", "log_softmax", "softmax", NULL}, {"layer", "logsoftmax", "softmax", NULL},
    NO_ACT_LAYER("sigmoid"), NO_ACT_LAYER("tanh"), NO_ACT_LAYER("gelu"), NO_ACT_LAYER("elu"), NO_ACT_LAYER("selu"),
    NO_ACT_LAYER("silu"), NO_ACT_LAYER("swish"),
    {"layer", "activation", NULL, "write the activation itself as the layer, e.g. '- relu: {}'"},
    {"layer", "inputlayer", NULL, "the input is the spec's top-level 'input: [C, H, W]', not a layer"},

    /* a layer's keys */
    {"conv", "out_channels", "filters", NULL}, {"conv", "kernel_size", "kernel", NULL},
    {"conv maxpool avgpool", "strides", "stride", NULL}, {"conv dense", "use_bias", "bias", NULL},
    {"conv dense", "kernel_initializer", "init", NULL},
    INFERRED("conv", "in_channels"), INFERRED("dense", "in_features"), INFERRED("batchnorm", "num_features"),
    {"dense", "out_features", "units", NULL},
    {"maxpool avgpool", "pool_size", "size", NULL}, {"maxpool avgpool", "kernel_size", "size", NULL},
    {"maxpool avgpool", "padding=valid", NULL, "pools take their padding as a number; 'valid' is 0, the default"},
    {"maxpool avgpool", "padding=same", NULL, "pools have no 'same'; give the padding as a number (0 gives the "
                                              "same size as Keras' 'same' when the window equals the stride and divides the input)"},
    {"leaky_relu", "negative_slope", "slope", NULL}, {"leaky_relu", "alpha", "slope", NULL},
    {"dropout", "p", "rate", NULL},
    {"batchnorm", "epsilon", "eps", NULL},
    /* not a foreign name, but a foreign meaning: spec.c warns on a Keras-like value */
    {"batchnorm", "momentum", "momentum", "teslac's momentum is PyTorch's (running = (1 - momentum) running + "
                                          "momentum batch): Keras' momentum=0.99 is 0.01 here"},
    ACT_LAYER("relu", ""), ACT_LAYER("leaky_relu", ""), ACT_LAYER("softmax", " (the last layer only)"),
    NO_ACT("sigmoid"), NO_ACT("tanh"), NO_ACT("gelu"), NO_ACT("elu"), NO_ACT("selu"), NO_ACT("silu"), NO_ACT("swish"),
    {"*", "activation=linear", NULL, "teslac has no activation key, and a layer has none unless one follows it; drop it"},
    {"*", "activation", NULL, "teslac has no activation key; write the activation as the next layer (relu, leaky_relu, softmax)"},
    {"*", "input_shape", NULL, "the input is the spec's top-level 'input: [C, H, W]', channels first"},

    /* the spec, train and the optimizers */
    {"spec", "input_shape", "input", "[C, H, W], channels first: Keras' (28, 28, 1) is [1, 28, 28]"},
    TRAIN_KEY("optimizer"), TRAIN_KEY("loss"), TRAIN_KEY("epochs"), TRAIN_KEY("batch"), TRAIN_KEY("lr"),
    {"spec", "batch_size", NULL, "it is 'batch' in 'train:'"}, {"spec", "learning_rate", NULL, "it is 'lr' in 'train:'"},
    {"train", "learning_rate", "lr", NULL}, {"train", "batch_size", "batch", NULL}, {"train", "num_epochs", "epochs", NULL},
    {"train", "momentum", NULL, "it is a key of the optimizer: 'optimizer: {sgd: {momentum: 0.9}}'"},
    {"train", "weight_decay", NULL, "it is a key of the optimizer: 'optimizer: {adamw: {weight_decay: 0.01}}'"},
    {"train", "validation_split", NULL, "it is a key of 'data:'"},
    {"sgd adam adamw", "learning_rate", "lr", NULL}, {"adam adamw", "epsilon", "eps", NULL},
    {"adam adamw", "beta_1", NULL, "write 'betas: [beta_1, beta_2]'"}, {"adam adamw", "beta_2", NULL, "write 'betas: [beta_1, beta_2]'"},
    {"adam adamw", "momentum", NULL, "adam's momentum is its first beta, 'betas: [0.9, 0.999]'; 'momentum' is sgd's"},

    /* values */
    {"loss", "sparse_categorical_crossentropy", "cross_entropy", "it takes class indices, as teslac's labels are"},
    {"loss", "crossentropyloss", "cross_entropy", NULL},
    {"loss", "nllloss", "cross_entropy", "cross_entropy takes the logits; no log_softmax layer is needed"},
    {"loss", "nll_loss", "cross_entropy", "cross_entropy takes the logits; no log_softmax layer is needed"},
    {"optimizer", "rmsprop", NULL, "teslac has sgd, adam and adamw"}, {"optimizer", "adagrad", NULL, "teslac has sgd, adam and adamw"},
    {"optimizer", "nadam", NULL, "teslac has sgd, adam and adamw"},
    {"init", "he_uniform", "kaiming_uniform", NULL}, {"init", "he_normal", "kaiming_normal", NULL},
    {"init", "zero", "zeros", NULL}, {"init", "xavier", "glorot", NULL},
};

static bool where_has(const char *list, const char *where) {
  bool layer = op_find(where) != NULL;
  size_t n = strlen(where);
  for (const char *p = list; *p;) {
    size_t k = strcspn(p, " ");
    if ((k == n && !strncmp(p, where, n)) || (k == 1 && *p == '*' && layer)) return true;
    p += k + (p[k] == ' ');
  }
  return false;
}

/* The row for `name` (with `value` when that key's value is a scalar) in context `where`: a
 * "key=value" row first, then the key's own row; NULL if none. With values_only, only the
 * former (a known key with a foreign value). */
static const Foreign *foreign_find(const char *where, const char *name, const char *value, bool values_only) {
  if (!where || !name) return NULL;
  size_t n = strlen(name);
  for (int pass = value ? 0 : 1; pass < (values_only ? 1 : 2); pass++)
    for (size_t i = 0; i < sizeof foreign / sizeof *foreign; i++) {
      const Foreign *f = &foreign[i];
      const char *eq = strchr(f->theirs, '=');
      bool hit = pass == 0 ? eq && (size_t)(eq - f->theirs) == n && !strncasecmp(f->theirs, name, n) &&
                                 !strcasecmp(eq + 1, value)
                           : !eq && !strcasecmp(f->theirs, name);
      if (hit && where_has(f->where, where)) return f;
    }
  return NULL;
}

/* "; did you mean 'ours'? (note)" or ": note", after "unknown key 'x' in ..." and the like */
static const char *foreign_hint(Ctx *cx, const Foreign *f) {
  if (!f->ours) return arena_printf(cx, ": %s", f->note);
  if (f->note) return arena_printf(cx, "; did you mean '%s'? (%s)", f->ours, f->note);
  return arena_printf(cx, "; did you mean '%s'?", f->ours);
}

/* Removes the key at kids[i] and its value from a map (a foreign value already reported, so
 * that the layer's own reader does not report it again). */
static void drop_pair(YNode *map, int i) {
  memmove(&map->kids[i], &map->kids[i + 2], sizeof *map->kids * (size_t)(map->nkids - i - 2));
  map->nkids -= 2;
}

/* Checks that `map` is a map, and reports each key not in `keys` (or `more`), each duplicate,
 * and each key that is not a plain scalar. `what` names the map in messages; `where` is its
 * context in the table of other frameworks' names (NULL: none). */
static bool check_keys(Ctx *cx, YNode *map, const char *what, const char *where, const char *const *keys,
                       const char *const *more) {
  if (map->kind != Y_MAP) {
    diag_at(cx, map->loc, "%s must be a map of keys, got %s", what, spec_scalar_desc(cx, map));
    return false;
  }
  const char *all[64];
  int first[64];            /* where each known key was first given (index into kids), or -1 */
  int n = 0;
  for (int i = 0; keys && keys[i] && n < 63; i++) all[n++] = keys[i];
  for (int i = 0; more && more[i] && n < 63; i++) all[n++] = more[i];
  all[n] = NULL;
  for (int j = 0; j < n; j++) first[j] = -1;
  for (int i = 0; i + 1 < map->nkids; i += 2) {
    YNode *k = map->kids[i], *val = map->kids[i + 1];
    if (k->kind != Y_SCALAR) {
      diag_at(cx, k->loc, "a key in %s must be a plain name, got %s", what, spec_scalar_desc(cx, k));
      continue;
    }
    int known = -1;
    for (int j = 0; all[j] && known < 0; j++)
      if (!strcmp(all[j], k->str)) known = j;
    const char *value = val->kind == Y_SCALAR ? val->str : NULL;
    const Foreign *f = foreign_find(where, k->str, value, known >= 0);
    if (f && known >= 0) {   /* a known key with another framework's value: reported here, not read */
      diag_at(cx, val->loc, "'%s: %s' in %s%s", k->str, value, what, foreign_hint(cx, f));
      drop_pair(map, i);
      i -= 2;
      continue;
    }
    if (known < 0) {
      const char *s = f ? f->ours : diag_suggest(k->str, all);
      int sj = -1;
      for (int j = 0; s && all[j]; j++)
        if (!strcmp(all[j], s)) sj = j;
      if (f)
        diag_at(cx, k->loc, "unknown key '%s' in %s%s", k->str, what, foreign_hint(cx, f));
      else if (s)
        diag_at(cx, k->loc, "unknown key '%s' in %s; did you mean '%s'?", k->str, what, s);
      else {
        char list[512] = "";
        for (int j = 0; all[j]; j++)
          snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "", all[j]);
        diag_at(cx, k->loc, "unknown key '%s' in %s (known: %s)", k->str, what, list);
      }
      /* read it as the key it was meant to be, so that its value is still checked and no
       * "missing key" error repeats this one (unless that key is given too) */
      if (sj >= 0 && !spec_get(map, all[sj])) {
        k->str = (char *)all[sj], k->len = strlen(all[sj]);
        if (first[sj] < 0) first[sj] = i;
      }
      continue;
    }
    if (first[known] >= 0)
      diag_at(cx, k->loc, "duplicate key '%s' in %s (first given at line %d)", k->str, what,
              map->kids[first[known]]->loc.line);
    else
      first[known] = i;
  }
  return true;
}

/* ---- layers --------------------------------------------------------------------------- */

/* More layers than any model this compiler is for; it also bounds the quadratic checks (layer
 * names) and the size of the emitted code. */
#define MAX_LAYERS 500

static const char *const weighted_keys[] = {"dims", "tt", "sparsity", "name", "init", NULL};
static const char *const plain_keys[] = {"name", NULL};

/* dims: [d0, d1, ...]  (the weight's dims as the user expects them; checked in check.c) */
static void parse_dims(Ctx *cx, Layer *l, YNode *v) {
  l->dims_loc = v->loc;
  if (v->kind != Y_SEQ || v->nkids == 0 || v->nkids > 8) {
    diag_at(cx, v->loc, "'dims' must be a list of 1 to 8 sizes, got %s",
            v->kind == Y_SEQ ? arena_printf(cx, "a list of %d", v->nkids) : spec_scalar_desc(cx, v));
    return;
  }
  bool ok = true;
  for (int i = 0; i < v->nkids; i++) ok &= spec_int(cx, v->kids[i], "dims", 1, TS_MAX_DIM, &l->dims[i]);
  if (ok) l->ndims = v->nkids;
}

static bool int_list(Ctx *cx, YNode *v, const char *key, int64_t *out, int min, int max) {
  if (v->kind != Y_SEQ || v->nkids < min || v->nkids > max) {
    diag_at(cx, v->loc, "'%s' must be a list of %d to %d integers, got %s", key, min, max,
            v->kind == Y_SEQ ? arena_printf(cx, "a list of %d", v->nkids) : spec_scalar_desc(cx, v));
    return false;
  }
  bool ok = true;
  for (int i = 0; i < v->nkids; i++) ok &= spec_int(cx, v->kids[i], key, 1, TS_MAX_DIM, &out[i]);
  return ok;
}

/* tt: auto | {rank: r} | {in_modes: [m1..md], out_modes: [n1..nd], ranks: [r1..r(d-1)]} */
static void parse_tt(Ctx *cx, Layer *l, YNode *v) {
  static const char *const keys[] = {"rank", "in_modes", "out_modes", "ranks", "order", NULL};
  TTSpec *t = &l->tt;
  t->loc = v->loc;
  if (v->kind == Y_SCALAR && !v->quoted && !strcmp(v->str, "auto")) {
    t->on = t->autoplan = true;
    return;
  }
  if (v->kind != Y_MAP) {
    diag_at(cx, v->loc, "'tt' must be auto or a map {rank: r} or {in_modes, out_modes, ranks}, got %s",
            spec_scalar_desc(cx, v));
    return;
  }
  check_keys(cx, v, "'tt'", NULL, keys, NULL);
  t->on = true;
  YNode *r = spec_get(v, "rank"), *im = spec_get(v, "in_modes"), *om = spec_get(v, "out_modes"),
        *rs = spec_get(v, "ranks"), *ord = spec_get(v, "order");
  /* order: auto | left_to_right | right_to_left | form_w (the contraction; tt.c) */
  if (ord) {
    static const char *const orders[] = {"auto", "left_to_right", "right_to_left", "form_w", NULL};
    int found = -1;
    for (int i = 0; ord->kind == Y_SCALAR && orders[i]; i++)
      if (!strcmp(ord->str, orders[i])) found = i;
    if (found < 0) {
      const char *sug = ord->kind == Y_SCALAR ? diag_suggest(ord->str, orders) : NULL;
      diag_at(cx, ord->loc, "'order' must be auto, left_to_right, right_to_left or form_w, got %s%s%s%s",
              spec_scalar_desc(cx, ord), sug ? "; did you mean '" : "", sug ? sug : "", sug ? "'?" : "");
    } else
      t->order = found;
    if (!r && !im && !om && !rs) {
      diag_at(cx, v->loc, "'tt' needs 'rank', or 'in_modes', 'out_modes' and 'ranks' (use 'tt: auto' "
                          "to let the planner choose them)");
      return;
    }
  }
  if (r) {
    int64_t x;
    if (spec_int(cx, r, "rank", 1, 4096, &x)) t->rank = (int)x;
  }
  if (!im && !om && !rs) {
    if (!r) diag_at(cx, v->loc, "'tt' needs 'rank', or 'in_modes', 'out_modes' and 'ranks'");
    return;
  }
  if (!im || !om) {
    diag_at(cx, v->loc, "'tt' needs both 'in_modes' and 'out_modes' (and 'ranks' or 'rank')");
    return;
  }
  int64_t in[8], out[8], ranks[8];
  /* dense: d >= 2 cores; conv: d >= 1 channel cores after its spatial core */
  bool conv = l->op == OP_conv;
  int dmin = conv ? 1 : 2;
  bool ok = int_list(cx, im, "in_modes", in, dmin, 8) & int_list(cx, om, "out_modes", out, dmin, 8);
  if (!ok) return;
  if (im->nkids != om->nkids) {
    diag_at(cx, om->loc, "'out_modes' has %d modes but 'in_modes' has %d; they must match",
            om->nkids, im->nkids);
    return;
  }
  int d = im->nkids;
  if (rs) {
    if (r) diag_at(cx, rs->loc, "give either 'rank' or 'ranks' in 'tt', not both");
    int nr = conv ? d : d - 1;
    if (!int_list(cx, rs, "ranks", ranks, 1, 8)) return;
    if (rs->nkids != nr) {
      if (conv)
        diag_at(cx, rs->loc, "'ranks' must have %d entries (after the spatial core, then between each "
                             "pair of the %d channel cores; the last rank is 1), got %d", nr, d, rs->nkids);
      else
        diag_at(cx, rs->loc, "'ranks' must have %d entries (one between each pair of the %d cores; the "
                             "boundary ranks are 1), got %d", nr, d, rs->nkids);
      return;
    }
    for (int i = 0; i < nr; i++)
      if (ranks[i] > 4096) {
        diag_at(cx, rs->kids[i]->loc, "a tt rank must be at most 4096, got %lld", (long long)ranks[i]);
        return;
      }
  } else {
    if (!r) {
      diag_at(cx, v->loc, "'tt' with modes needs 'ranks' (or one 'rank' for all)");
      return;
    }
    for (int i = 0; i < (conv ? d : d - 1); i++) ranks[i] = t->rank;
  }
  t->d = d;
  memcpy(t->in_modes, in, sizeof in), memcpy(t->out_modes, out, sizeof out);
  memcpy(t->ranks, ranks, sizeof ranks);
}

/* sparsity: s | auto | {target: s | auto, schedule: gradual | oneshot, start: f, end: f,
 * every: n} */
static void parse_sparsity(Ctx *cx, Layer *l, YNode *v) {
  static const char *const keys[] = {"target", "schedule", "start", "end", "every", NULL};
  SparseSpec *s = &l->sparse;
  s->loc = v->loc;
  s->gradual = true, s->start = 0.15, s->end = 0.75, s->every = 100;
  if (v->kind == Y_SCALAR && !strcmp(v->str, "auto")) {
    s->on = s->autoplan = true;
    return;
  }
  if (v->kind == Y_SCALAR) {
    if (spec_num(cx, v, "sparsity", 0, 1, true, true, &s->target)) s->on = true;
    return;
  }
  if (!check_keys(cx, v, "'sparsity'", NULL, keys, NULL)) return;
  YNode *x;
  bool ok = true;
  if (!(x = spec_get(v, "target"))) {
    diag_at(cx, v->loc, "'sparsity' needs a 'target' (the fraction of zero weights, e.g. 0.9)");
    ok = false;
  } else if (x->kind == Y_SCALAR && !strcmp(x->str, "auto"))
    s->autoplan = true;
  else
    ok &= spec_num(cx, x, "target", 0, 1, true, true, &s->target);
  if ((x = spec_get(v, "schedule"))) {
    if (x->kind == Y_SCALAR && !strcmp(x->str, "gradual")) s->gradual = true;
    else if (x->kind == Y_SCALAR && !strcmp(x->str, "oneshot")) s->gradual = false;
    else {
      diag_at(cx, x->loc, "'schedule' must be gradual or oneshot, got %s", spec_scalar_desc(cx, x));
      ok = false;
    }
  }
  if ((x = spec_get(v, "start"))) ok &= spec_num(cx, x, "start", 0, 1, false, false, &s->start);
  if ((x = spec_get(v, "end"))) ok &= spec_num(cx, x, "end", 0, 1, false, false, &s->end);
  if ((x = spec_get(v, "every"))) {
    int64_t e;
    if (spec_int(cx, x, "every", 1, 1 << 30, &e)) s->every = (int)e;
    else ok = false;
  }
  if (ok && s->gradual && s->start >= s->end)
    diag_at(cx, spec_get(v, "end") ? spec_get(v, "end")->loc : v->loc,
            "sparsity 'end' (%g) must come after 'start' (%g)", s->end, s->start);
  s->on = ok;
}

/* init: kaiming_uniform | kaiming_normal | glorot (glorot_uniform, xavier_uniform) |
 *       glorot_normal (xavier_normal) | zeros */
static void parse_init(Ctx *cx, Layer *l, YNode *v) {
  static const struct { const char *name; InitKind k; } inits[] = {
      {"kaiming_uniform", INIT_KAIMING_UNIFORM}, {"kaiming_normal", INIT_KAIMING_NORMAL},
      {"glorot", INIT_GLOROT}, {"glorot_uniform", INIT_GLOROT}, {"xavier_uniform", INIT_GLOROT},
      {"glorot_normal", INIT_GLOROT_NORMAL}, {"xavier_normal", INIT_GLOROT_NORMAL},
      {"zeros", INIT_ZEROS}};
  static const char *const names[] = {"kaiming_uniform", "kaiming_normal", "glorot", "glorot_uniform",
                                      "xavier_uniform", "glorot_normal", "xavier_normal", "zeros", NULL};
  l->init_loc = v->loc;
  if (v->kind == Y_SCALAR)
    for (size_t i = 0; i < sizeof inits / sizeof *inits; i++)
      if (!strcmp(v->str, inits[i].name)) {
        l->init = inits[i].k;
        return;
      }
  const Foreign *f = v->kind == Y_SCALAR ? foreign_find("init", v->str, NULL, false) : NULL;   /* Keras' names */
  const char *s = f ? f->ours : v->kind == Y_SCALAR ? diag_suggest(v->str, names) : NULL;
  if (s)
    diag_at(cx, v->loc, "unknown init %s; did you mean '%s'?", spec_scalar_desc(cx, v), s);
  else
    diag_at(cx, v->loc, "unknown init %s (known: kaiming_uniform, kaiming_normal, glorot, "
                        "glorot_normal, zeros)", spec_scalar_desc(cx, v));
}

/*   - <kind>: {<its keys>}     or   - <kind>     (a layer without keys) */
static void parse_layer(Ctx *cx, Spec *sp, int idx, YNode *item) {
  Layer *l = &sp->layers[idx];
  l->index = idx;
  l->name = arena_printf(cx, "%d", idx);
  YNode *kind, *val = NULL;
  if (item->kind == Y_SCALAR) {
    kind = item;
  } else if (item->kind == Y_MAP && item->nkids == 2) {
    kind = item->kids[0], val = item->kids[1];
  } else if (item->kind == Y_MAP) {
    if (item->nkids == 0)
      diag_at(cx, item->loc, "an empty layer; write its kind, e.g. '- relu: {}'");
    else if (item->kids[0]->kind == Y_SCALAR && item->kids[2]->kind == Y_SCALAR)
      diag_at(cx, item->kids[2]->loc,
              "a layer is a map with one key, its kind ('%s' here); '%s' belongs inside it: "
              "'- %s: {%s: ...}' (is the indentation off?)",
              item->kids[0]->str, item->kids[2]->str, item->kids[0]->str, item->kids[2]->str);
    else
      diag_at(cx, item->kids[2]->loc, "a layer is a map with one key, its kind: '- kind: {keys}'");
    l->op = OP_COUNT;
    return;
  } else {
    diag_at(cx, item->loc, "a layer must be '- kind: {keys}', got a list");
    l->op = OP_COUNT;
    return;
  }
  l->loc = kind->loc;
  const OpDef *op = kind->kind == Y_SCALAR ? op_find(kind->str) : NULL;
  if (!op) {
    l->op = OP_COUNT;
    if (kind->kind != Y_SCALAR) {
      diag_at(cx, kind->loc, "a layer's kind must be a name, got %s", spec_scalar_desc(cx, kind));
      return;
    }
    const Foreign *f = foreign_find("layer", kind->str, NULL, false);
    const char *s = f ? f->ours : diag_suggest(kind->str, op_names());
    if (f)
      diag_at(cx, kind->loc, "unknown layer '%s'%s", kind->str, foreign_hint(cx, f));
    else if (s)
      diag_at(cx, kind->loc, "unknown layer '%s'; did you mean '%s'?", kind->str, s);
    else
      diag_at(cx, kind->loc, "unknown layer '%s' (layers: dense, conv, maxpool, avgpool, "
                             "batchnorm, relu, leaky_relu, dropout, flatten, softmax)", kind->str);
    /* read it as the layer it was meant to be, so that its keys are still checked (the layer
     * counts as wrong: its shape is not inferred) */
    if (!s || !(op = op_find(s))) return;
  }
  for (int i = 0; i < OP_COUNT; i++)
    if (op_registry[i] == op) l->op = (OpKind)i;
  if (val && is_null(val)) val = NULL;
  l->node = val;
  const char *what = arena_printf(cx, "layer %d ('%s')", idx, op->name);
  if (val && !check_keys(cx, val, what, op->name, op->keys, op->weighted ? weighted_keys : plain_keys)) {
    l->node = NULL;
    l->op = OP_COUNT;
    return;
  }
  op->parse(cx, l);
  YNode *v;
  /* a valid value, but most likely Keras' (0.99): teslac's is PyTorch's convention */
  if (l->op == OP_batchnorm && (v = spec_get(val, "momentum")) && l->u.bn.momentum > 0.5)
    warn_at(cx, v->loc, "batchnorm momentum %g: %s", l->u.bn.momentum,
            foreign_find("batchnorm", "momentum", NULL, false)->note);
  if ((v = spec_get(val, "name")) && is_str(cx, v, "name")) {
    if (!is_name(v->str, false))
      diag_at(cx, v->loc, "a layer name must start with a letter or '_' and hold only letters, "
                          "digits and '_', got %s", spec_scalar_desc(cx, v));
    else {
      l->name = v->str;
      for (int j = 0; j < idx; j++)
        if (sp->layers[j].name && !strcmp(sp->layers[j].name, v->str))
          diag_at(cx, v->loc, "layer name '%s' is already used by layer %d", v->str, j);
    }
  }
  if (!op->weighted) return;
  if ((v = spec_get(val, "dims"))) parse_dims(cx, l, v);
  if ((v = spec_get(val, "tt"))) parse_tt(cx, l, v);
  if ((v = spec_get(val, "sparsity"))) parse_sparsity(cx, l, v);
  if ((v = spec_get(val, "init"))) parse_init(cx, l, v);
  /* both auto: the planner chooses one of them (sparse.c) */
  if (l->tt.on && l->sparse.on && !(l->tt.autoplan && l->sparse.autoplan))
    diag_at(cx, l->sparse.loc, "a weight is stored either as a tensor train or sparse, not both "
                               "(with 'tt: auto' and 'sparsity: auto' the planner chooses one)");
}

/* ---- train ---------------------------------------------------------------------------- */

static void train_defaults(TrainCfg *t) {
  memset(t, 0, sizeof *t);
  t->opt = OPT_ADAM, t->lr = -1;
  t->beta1 = 0.9, t->beta2 = 0.999, t->eps = 1e-8, t->weight_decay = -1;
  t->sched = SCHED_CONSTANT, t->gamma = 0.1;
  t->epochs = 10, t->batch = 32, t->seed = 0, t->shuffle = true, t->sync_bn = true;
  t->metric_accuracy = true;
  t->monitor = MON_VAL_LOSS, t->patience = 3, t->min_delta = 0;
}

/* optimizer: sgd | adam | adamw
 *          | {sgd: {lr, momentum, dampening, weight_decay, nesterov}}
 *          | {adam: {lr, betas: [b1, b2], eps, weight_decay}} | {adamw: {...same}} */
static void parse_optimizer(Ctx *cx, TrainCfg *t, YNode *v, YNode **lr_node) {
  static const char *const names[] = {"sgd", "adam", "adamw", NULL};
  static const char *const sgd_keys[] = {"lr", "momentum", "dampening", "weight_decay", "nesterov", NULL};
  static const char *const adam_keys[] = {"lr", "betas", "eps", "weight_decay", NULL};
  YNode *name = v, *args = NULL;
  if (v->kind == Y_MAP) {
    if (v->nkids != 2) {
      diag_at(cx, v->loc, "'optimizer' as a map has one key, its name: {adam: {lr: 0.001}}");
      return;
    }
    name = v->kids[0], args = v->kids[1];
    if (is_null(args)) args = NULL;
  }
  if (name->kind != Y_SCALAR) {
    diag_at(cx, name->loc, "'optimizer' must be sgd, adam or adamw, got %s", spec_scalar_desc(cx, name));
    return;
  }
  const char *oname = name->str;
  if (!strcmp(name->str, "sgd")) t->opt = OPT_SGD;
  else if (!strcmp(name->str, "adam")) t->opt = OPT_ADAM;
  else if (!strcmp(name->str, "adamw")) t->opt = OPT_ADAMW;
  else {
    const Foreign *f = foreign_find("optimizer", name->str, NULL, false);
    const char *s = diag_suggest(name->str, names);
    if (f) diag_at(cx, name->loc, "unknown optimizer '%s'%s", name->str, foreign_hint(cx, f));
    else if (s) diag_at(cx, name->loc, "unknown optimizer '%s'; did you mean '%s'?", name->str, s);
    else diag_at(cx, name->loc, "unknown optimizer '%s' (known: sgd, adam, adamw)", name->str);
    if (f || !s) return;
    /* read as the one it was meant to be (Adam, SGD), so that its keys are still checked */
    t->opt = !strcmp(s, "sgd") ? OPT_SGD : !strcmp(s, "adam") ? OPT_ADAM : OPT_ADAMW;
    oname = s;
  }
  if (!args) return;
  const char *what = arena_printf(cx, "optimizer '%s'", oname);
  if (!check_keys(cx, args, what, oname, t->opt == OPT_SGD ? sgd_keys : adam_keys, NULL)) return;
  YNode *x;
  if ((x = spec_get(args, "lr"))) *lr_node = x;
  if ((x = spec_get(args, "weight_decay")))
    spec_num(cx, x, "weight_decay", 0, 1e6, false, false, &t->weight_decay);
  if (t->opt == OPT_SGD) {
    if ((x = spec_get(args, "momentum"))) spec_num(cx, x, "momentum", 0, 1, false, true, &t->momentum);
    if ((x = spec_get(args, "dampening")))
      spec_num(cx, x, "dampening", 0, 1, false, false, &t->dampening);
    if ((x = spec_get(args, "nesterov")) && spec_bool(cx, x, "nesterov", &t->nesterov) &&
        t->nesterov && (t->momentum <= 0 || t->dampening != 0))
      diag_at(cx, x->loc, "nesterov momentum needs momentum > 0 and dampening 0 (as torch.optim.SGD)");
    return;
  }
  if ((x = spec_get(args, "betas"))) {
    if (x->kind != Y_SEQ || x->nkids != 2)
      diag_at(cx, x->loc, "'betas' must be a pair [beta1, beta2], got %s",
              x->kind == Y_SEQ ? arena_printf(cx, "a list of %d", x->nkids) : spec_scalar_desc(cx, x));
    else {
      spec_num(cx, x->kids[0], "betas", 0, 1, false, true, &t->beta1);
      spec_num(cx, x->kids[1], "betas", 0, 1, false, true, &t->beta2);
    }
  }
  if ((x = spec_get(args, "eps"))) spec_num(cx, x, "eps", 0, 1, true, false, &t->eps);
}

/* schedule: constant | cosine | {step: {step_size: n, gamma: g}} | {cosine: {t_max: n, eta_min: x}} */
static void parse_schedule(Ctx *cx, TrainCfg *t, YNode *v) {
  static const char *const names[] = {"constant", "step", "cosine", NULL};
  static const char *const step_keys[] = {"step_size", "gamma", NULL};
  static const char *const cos_keys[] = {"t_max", "eta_min", NULL};
  YNode *name = v, *args = NULL;
  if (v->kind == Y_MAP) {
    if (v->nkids != 2) {
      diag_at(cx, v->loc, "'schedule' as a map has one key, its name: {step: {step_size: 5}}");
      return;
    }
    name = v->kids[0], args = is_null(v->kids[1]) ? NULL : v->kids[1];
  }
  if (name->kind != Y_SCALAR) {
    diag_at(cx, name->loc, "'schedule' must be constant, step or cosine, got %s", spec_scalar_desc(cx, name));
    return;
  }
  if (!strcmp(name->str, "constant")) t->sched = SCHED_CONSTANT;
  else if (!strcmp(name->str, "step")) t->sched = SCHED_STEP;
  else if (!strcmp(name->str, "cosine")) t->sched = SCHED_COSINE;
  else {
    const char *s = diag_suggest(name->str, names);
    if (s) diag_at(cx, name->loc, "unknown schedule '%s'; did you mean '%s'?", name->str, s);
    else diag_at(cx, name->loc, "unknown schedule '%s' (known: constant, step, cosine)", name->str);
    return;
  }
  if (t->sched == SCHED_CONSTANT) {
    if (args) diag_at(cx, args->loc, "schedule 'constant' takes no keys");
    return;
  }
  YNode *x;
  if (t->sched == SCHED_STEP) {
    if (!args || args->kind != Y_MAP || !spec_get(args, "step_size")) {
      diag_at(cx, (args ? args : name)->loc,
              "schedule 'step' needs its 'step_size' in epochs: {step: {step_size: 5, gamma: 0.1}}");
      if (!args || args->kind != Y_MAP) return;
    }
    if (!check_keys(cx, args, "schedule 'step'", NULL, step_keys, NULL)) return;
    if ((x = spec_get(args, "step_size"))) spec_int(cx, x, "step_size", 1, 1 << 30, &t->step_size);
    if ((x = spec_get(args, "gamma"))) spec_num(cx, x, "gamma", 0, 1e6, true, false, &t->gamma);
    return;
  }
  if (!args) return;
  if (!check_keys(cx, args, "schedule 'cosine'", NULL, cos_keys, NULL)) return;
  if ((x = spec_get(args, "t_max"))) spec_int(cx, x, "t_max", 1, 1 << 30, &t->t_max);
  if ((x = spec_get(args, "eta_min"))) spec_num(cx, x, "eta_min", 0, 1e6, false, false, &t->eta_min);
}

const char *const monitor_names[] = {"val_loss", "val_accuracy", "train_loss", "train_accuracy", NULL};

/* a monitored quantity: val_loss, val_accuracy, train_loss, train_accuracy (Keras' val_acc,
 * loss, accuracy and acc name the same) */
static bool parse_monitor(Ctx *cx, YNode *x, const char *key, Monitor *out) {
  static const struct { const char *name; Monitor m; } alias[] = {
      {"val_loss", MON_VAL_LOSS}, {"val_accuracy", MON_VAL_ACC}, {"val_acc", MON_VAL_ACC},
      {"train_loss", MON_TRAIN_LOSS}, {"loss", MON_TRAIN_LOSS}, {"train_accuracy", MON_TRAIN_ACC},
      {"train_acc", MON_TRAIN_ACC}, {"accuracy", MON_TRAIN_ACC}, {"acc", MON_TRAIN_ACC}};
  if (x->kind == Y_SCALAR)
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
      if (!strcmp(x->str, alias[i].name)) { *out = alias[i].m; return true; }
  const char *s = x->kind == Y_SCALAR ? diag_suggest(x->str, monitor_names) : NULL;
  if (s) diag_at(cx, x->loc, "unknown '%s' %s; did you mean '%s'?", key, spec_scalar_desc(cx, x), s);
  else diag_at(cx, x->loc, "'%s' must be val_loss, val_accuracy, train_loss or train_accuracy, got %s", key,
               spec_scalar_desc(cx, x));
  return false;
}

/* early_stopping: {monitor: val_loss, patience: 3, min_delta: 0} | true (those defaults) */
static void parse_early_stopping(Ctx *cx, TrainCfg *t, YNode *v) {
  static const char *const keys[] = {"monitor", "patience", "min_delta", NULL};
  if (v->kind == Y_SCALAR) {
    bool on;
    if (spec_bool(cx, v, "early_stopping", &on)) t->early_stop = on;
    t->monitor_loc = v->loc;
    return;
  }
  if (!check_keys(cx, v, "'early_stopping'", NULL, keys, NULL)) return;
  t->early_stop = true;
  t->monitor_loc = v->loc;
  YNode *x;
  if ((x = spec_get(v, "monitor"))) {
    t->monitor_loc = x->loc;
    if (!parse_monitor(cx, x, "monitor", &t->monitor)) t->early_stop = false;   /* no second error */
  }
  if ((x = spec_get(v, "patience"))) spec_int(cx, x, "patience", 0, 1000000, &t->patience);
  if ((x = spec_get(v, "min_delta"))) spec_num(cx, x, "min_delta", 0, 1e30, false, false, &t->min_delta);
}

/* train: {loss, optimizer, lr, schedule, epochs, batch, seed, shuffle, metrics, sync_batchnorm,
 *         early_stopping, monitor, save_best, test_every_epoch} */
static void parse_train(Ctx *cx, Spec *sp, YNode *v) {
  static const char *const keys[] = {"loss", "optimizer", "lr", "schedule", "epochs", "batch",
                                     "seed", "shuffle", "metrics", "sync_batchnorm", "early_stopping",
                                     "monitor", "save_best", "test_every_epoch", NULL};
  TrainCfg *t = &sp->train;
  t->loc = v->loc;
  if (!check_keys(cx, v, "'train'", "train", keys, NULL)) return;
  YNode *x, *opt_lr = NULL;
  bool bad_monitor = false;
  if ((x = spec_get(v, "loss"))) {
    if (x->kind != Y_SCALAR ||
        (strcmp(x->str, "cross_entropy") && strcmp(x->str, "categorical_crossentropy"))) {
      static const char *const losses[] = {"cross_entropy", "categorical_crossentropy", NULL};
      const Foreign *f = x->kind == Y_SCALAR ? foreign_find("loss", x->str, NULL, false) : NULL;
      const char *s = x->kind == Y_SCALAR ? diag_suggest(x->str, losses) : NULL;
      if (f) diag_at(cx, x->loc, "unknown loss %s%s", spec_scalar_desc(cx, x), foreign_hint(cx, f));
      else if (s) diag_at(cx, x->loc, "unknown loss %s; did you mean '%s'?", spec_scalar_desc(cx, x), s);
      else diag_at(cx, x->loc, "unknown loss %s (version 1 has cross_entropy)", spec_scalar_desc(cx, x));
    }
  }
  if ((x = spec_get(v, "optimizer"))) parse_optimizer(cx, t, x, &opt_lr);
  YNode *lr = spec_get(v, "lr");
  if (lr && opt_lr)
    diag_at(cx, opt_lr->loc, "'lr' is given twice: here and at line %d; keep one", lr->loc.line);
  if (!lr) lr = opt_lr;
  if (lr) spec_num(cx, lr, "lr", 1e-12, 1e6, false, false, &t->lr);   /* as --lr: a float lr below is 0 or denormal */
  if (t->lr < 0) t->lr = t->opt == OPT_SGD ? 0.01 : 0.001;
  if (t->weight_decay < 0) t->weight_decay = t->opt == OPT_ADAMW ? 0.01 : 0;
  if ((x = spec_get(v, "schedule"))) parse_schedule(cx, t, x);
  if ((x = spec_get(v, "epochs"))) spec_int(cx, x, "epochs", 1, 1000000, &t->epochs);
  if (t->sched == SCHED_COSINE && t->t_max == 0) t->t_max = t->epochs;
  if ((x = spec_get(v, "batch"))) {
    t->batch_loc = x->loc;
    spec_int(cx, x, "batch", 1, 1 << 20, &t->batch);
  }
  if ((x = spec_get(v, "seed"))) {
    int64_t s;
    if (spec_int(cx, x, "seed", 0, INT64_MAX, &s)) t->seed = (uint64_t)s;
  }
  if ((x = spec_get(v, "shuffle"))) spec_bool(cx, x, "shuffle", &t->shuffle);
  if ((x = spec_get(v, "sync_batchnorm"))) spec_bool(cx, x, "sync_batchnorm", &t->sync_bn);
  if ((x = spec_get(v, "early_stopping"))) parse_early_stopping(cx, t, x);
  if ((x = spec_get(v, "monitor"))) {   /* for save_best alone; early_stopping's wins */
    YNode *es = spec_get(v, "early_stopping");
    if (es && es->kind == Y_MAP && spec_get(es, "monitor"))
      diag_at(cx, x->loc, "'monitor' is given twice: here and in 'early_stopping' at line %d; keep one",
              spec_get(es, "monitor")->loc.line);
    else if (parse_monitor(cx, x, "monitor", &t->monitor))
      t->monitor_loc = x->loc;
    else
      bad_monitor = true;
  }
  if ((x = spec_get(v, "save_best"))) {
    spec_bool(cx, x, "save_best", &t->save_best);
    if (!t->monitor_loc.line) t->monitor_loc = x->loc;
    if (bad_monitor) t->save_best = false;   /* reported once, at the monitor */
  }
  if ((x = spec_get(v, "test_every_epoch"))) spec_bool(cx, x, "test_every_epoch", &t->test_every_epoch);
  if ((x = spec_get(v, "metrics"))) {
    if (x->kind != Y_SEQ) {
      diag_at(cx, x->loc, "'metrics' must be a list, e.g. [accuracy], got %s", spec_scalar_desc(cx, x));
      return;
    }
    t->metric_accuracy = false;
    for (int i = 0; i < x->nkids; i++) {
      YNode *m = x->kids[i];
      if (m->kind == Y_SCALAR && (!strcmp(m->str, "accuracy") || !strcmp(m->str, "acc")))
        t->metric_accuracy = true;
      else if (m->kind == Y_SCALAR && !strcmp(m->str, "loss"))
        ;
      else
        diag_at(cx, m->loc, "unknown metric %s (known: accuracy, loss)", spec_scalar_desc(cx, m));
    }
  }
}

/* ---- class names: classes: [names] and data: {class_names: [names]} ------------------------ */

const char *spec_class_name(const Spec *sp, int64_t k, char buf[24]) {
  if (sp->class_names && k >= 0 && k < sp->nclass_names) return sp->class_names[k];
  snprintf(buf, 24, "%lld", (long long)k);
  return buf;
}

/* A plain scalar YAML reads as a number or a boolean rather than a string. */
static bool plain_non_string(const YNode *v) {
  if (v->kind != Y_SCALAR || v->quoted) return false;
  static const char *const words[] = {"true", "True", "TRUE", "false", "False", "FALSE", NULL};
  for (int i = 0; words[i]; i++)
    if (!strcmp(v->str, words[i])) return true;
  const char *t = v->str + (v->str[0] == '-' || v->str[0] == '+');
  if (!strcasecmp(t, ".inf") || !strcasecmp(t, ".nan")) return true;
  char *end;
  strtod(v->str, &end);
  return end != v->str && !*end;
}

/* [name0, name1, ...]: 2 to 2^24 distinct, non-empty strings. `key` names the list in
 * messages. Returns how many, or 0 after reporting what is wrong. */
static int class_name_list(Ctx *cx, YNode *v, const char *key, const char ***out) {
  if (v->kind != Y_SEQ) {
    diag_at(cx, v->loc, "'%s' must be a list of class names, e.g. [cat, dog], got %s", key,
            spec_scalar_desc(cx, v));
    return 0;
  }
  if (v->nkids < 2 || v->nkids > (1 << 24)) {
    diag_at(cx, v->loc, "'%s' must name 2 to 16777216 classes, got %s", key,
            v->nkids == 0 ? "an empty list" : v->nkids == 1 ? "one name" : "too many");
    return 0;
  }
  const char **names = arena_alloc(cx, sizeof(char *) * (size_t)v->nkids);
  bool ok = true;
  for (int i = 0; i < v->nkids; i++) {
    YNode *n = v->kids[i];
    if (n->kind != Y_SCALAR || is_null(n)) {
      diag_at(cx, n->loc, "a class name in '%s' must be a string, got %s", key, spec_scalar_desc(cx, n));
      ok = false;
    } else if (plain_non_string(n)) {
      diag_at(cx, n->loc, "a class name in '%s' must be a string, got %s (write it in quotes: \"%s\")", key,
              n->str, n->str);
      ok = false;
    } else if (n->len == 0) {
      diag_at(cx, n->loc, "a class name in '%s' cannot be empty", key);
      ok = false;
    } else {
      for (int j = 0; j < i; j++)
        if (names[j] && !strcmp(names[j], n->str)) {
          diag_at(cx, n->loc, "duplicate class name '%s' in '%s' (class %d has it already)", n->str, key, j);
          ok = false;
          break;
        }
      names[i] = n->str;
    }
  }
  if (!ok) return 0;
  *out = names;
  return v->nkids;
}

/* classes: K | [name0, name1, ...] */
static void parse_classes(Ctx *cx, Spec *sp, YNode *v) {
  sp->classes_loc = v->loc;
  if (v->kind == Y_MAP) {
    diag_at(cx, v->loc, "'classes' must be an integer or a list of class names, got a map");
    return;
  }
  if (v->kind != Y_SEQ) {
    spec_int(cx, v, "classes", 2, 1 << 24, &sp->classes);
    return;
  }
  const char **names;
  int n = class_name_list(cx, v, "classes", &names);
  if (n) sp->classes = n, sp->class_names = names, sp->nclass_names = n, sp->names_key = "classes";
}

/* data: {class_names: [name0, name1, ...]}; with `classes:` too, both must agree (its count,
 * and its names when it is a list) */
static void parse_data_class_names(Ctx *cx, Spec *sp, YNode *v) {
  const char **names;
  int n = class_name_list(cx, v, "data.class_names", &names);
  if (!n) return;
  if (sp->class_names) {
    if (n != sp->nclass_names) {
      diag_at(cx, v->loc, "'data.class_names' has %d names, but 'classes' at line %d has %d; give the names once",
              n, sp->classes_loc.line, sp->nclass_names);
      return;
    }
    for (int i = 0; i < n; i++)
      if (strcmp(names[i], sp->class_names[i])) {
        diag_at(cx, v->kids[i]->loc, "class %d is '%s' here, but '%s' in 'classes' at line %d; give the names once",
                i, names[i], sp->class_names[i], sp->classes_loc.line);
        return;
      }
    return;
  }
  if (sp->classes && sp->classes != n) {
    diag_at(cx, v->loc, "'data.class_names' has %d names, but 'classes' at line %d is %lld", n,
            sp->classes_loc.line, (long long)sp->classes);
    return;
  }
  if (!sp->classes && !sp->classes_loc.line)   /* the names give the count */
    sp->classes_loc = v->loc, sp->names_key = "data.class_names";
  sp->classes = n, sp->class_names = names, sp->nclass_names = n;
}

/* ---- data ----------------------------------------------------------------------------- */

/* Relative paths are relative to the spec file's folder. */
static const char *resolve_path(Ctx *cx, const char *p) {
  if (p[0] == '/') return p;
  const char *slash = strrchr(cx->path, '/');
  if (!slash) return p;
  return arena_printf(cx, "%.*s/%s", (int)(slash - cx->path), cx->path, p);
}

/* {images: PATH, labels: PATH} */
static void parse_split(Ctx *cx, YNode *v, const char *what, const char **images, const char **labels) {
  static const char *const keys[] = {"images", "labels", NULL};
  if (!check_keys(cx, v, what, NULL, keys, NULL)) return;
  YNode *x;
  if (!(x = spec_get(v, "images"))) diag_at(cx, v->loc, "%s needs 'images' (an IDX file)", what);
  else if (is_path(cx, x, "images")) *images = resolve_path(cx, x->str);
  if (!(x = spec_get(v, "labels"))) diag_at(cx, v->loc, "%s needs 'labels' (an IDX file)", what);
  else if (is_path(cx, x, "labels")) *labels = resolve_path(cx, x->str);
}

/* data: {format: idx, train: {images, labels}, test: {images, labels}, scale: 255,
 *        val: {images, labels} | validation_split: 0.1} */
static void parse_data(Ctx *cx, Spec *sp, YNode *v) {
  static const char *const keys[] = {"format", "train", "test", "scale", "val", "validation_split", "class_names",
                                     NULL};
  DataCfg *d = &sp->data;
  d->loc = v->loc;
  d->scale = 255;
  if (!check_keys(cx, v, "'data'", NULL, keys, NULL)) return;
  d->present = true;
  YNode *x;
  if ((x = spec_get(v, "format")) && (x->kind != Y_SCALAR || strcmp(x->str, "idx")))
    diag_at(cx, x->loc, "unknown data format %s (version 1 reads idx)", spec_scalar_desc(cx, x));
  if (!(x = spec_get(v, "train"))) diag_at(cx, v->loc, "'data' needs 'train: {images, labels}'");
  else parse_split(cx, x, "'data.train'", &d->train_images, &d->train_labels);
  if ((x = spec_get(v, "test"))) parse_split(cx, x, "'data.test'", &d->test_images, &d->test_labels);
  YNode *val = spec_get(v, "val"), *split = spec_get(v, "validation_split");
  if (val && split)
    diag_at(cx, split->loc, "give either 'val' (its own files) or 'validation_split' (a part of train), not both");
  else if (val) {
    d->val_loc = val->loc;
    parse_split(cx, val, "'data.val'", &d->val_images, &d->val_labels);
  } else if (split) {
    d->val_loc = split->loc;
    spec_num(cx, split, "validation_split", 0, 1, true, true, &d->val_split);
  }
  if ((x = spec_get(v, "scale"))) spec_num(cx, x, "scale", 0, 1e30, true, false, &d->scale);
  if ((x = spec_get(v, "class_names"))) parse_data_class_names(cx, sp, x);
}

/* ---- input -------------------------------------------------------------------------- */

/* Whether the first item of `layers:` is a conv or a pool (under its own name or another
 * framework's), i.e. whether the input must be an image. */
static bool first_layer_spatial(YNode *layers) {
  if (!layers || layers->kind != Y_SEQ || !layers->nkids) return false;
  YNode *it = layers->kids[0], *kind = it->kind == Y_MAP && it->nkids ? it->kids[0] : it;
  if (kind->kind != Y_SCALAR) return false;
  const Foreign *f = foreign_find("layer", kind->str, NULL, false);
  const OpDef *op = op_find(f && f->ours ? f->ours : kind->str);
  return op && op->spatial_only;
}

/* [H, W]: an image without its channels. The hint after "'input' must be [C, H, W] ...". */
static const char *input_hw_hint(Ctx *cx, YNode *x, YNode *layers) {
  if (x->kind != Y_SEQ || x->nkids != 2) return "";
  long long d[2];
  for (int i = 0; i < 2; i++) {
    char *end;
    YNode *k = x->kids[i];
    if (k->kind != Y_SCALAR || k->quoted || !k->len) return "";
    d[i] = strtoll(k->str, &end, 10);
    if (*end || d[i] < 1 || d[i] > TS_MAX_DIM) return "";
  }
  if (first_layer_spatial(layers))
    return arena_printf(cx, "; the first layer needs an image with its channels first: [1, %lld, %lld] for one "
                            "channel (grayscale), [3, %lld, %lld] for RGB", d[0], d[1], d[0], d[1]);
  return arena_printf(cx, "; write [1, %lld, %lld] for a one-channel image, or [%lld] for a vector", d[0], d[1],
                      d[0] * d[1]);
}

/* [H, W, C], channels last as Keras writes input_shape=(28, 28, 1): its last dim is 1 or 3 and
 * the others are larger than 4. A warning, not an error: [C, H, W] with W = 1 or 3 is a valid
 * (if rare) spec, and a model of dense layers reads [28, 28, 1] as [1, 28, 28] anyway. */
static void input_hwc_warning(Ctx *cx, YNode *x, const Shape *in) {
  const int64_t *d = in->d;
  if (!((d[2] == 1 || d[2] == 3) && d[0] > 4 && d[1] > 4)) return;
  warn_at(cx, x->loc, "'input' [%lld, %lld, %lld] looks like [H, W, C] (channels last, as Keras' input_shape); "
                      "teslac's images are [C, H, W]: write [%lld, %lld, %lld]",
          (long long)d[0], (long long)d[1], (long long)d[2], (long long)d[2], (long long)d[0], (long long)d[1]);
}

/* ---- the whole spec -------------------------------------------------------------------- */

/* compress: {max_params: n} | {ratio: x} */
static void parse_compress(Ctx *cx, Spec *sp, YNode *v) {
  static const char *const keys[] = {"max_params", "ratio", NULL};
  sp->compress.loc = v->loc;
  if (!check_keys(cx, v, "'compress'", NULL, keys, NULL)) return;
  YNode *mp = spec_get(v, "max_params"), *r = spec_get(v, "ratio");
  if (mp && r) diag_at(cx, r->loc, "give either 'max_params' or 'ratio' in 'compress', not both");
  if (mp) spec_int(cx, mp, "max_params", 1, TS_MAX_ELEMS, &sp->compress.max_params);
  if (r) spec_num(cx, r, "ratio", 1, 1e12, false, false, &sp->compress.ratio);
}

/* The default model name: the spec file's base name, made into an identifier. */
static const char *default_name(Ctx *cx) {
  const char *b = strrchr(cx->path, '/');
  b = b ? b + 1 : cx->path;
  size_t n = strcspn(b, ".");
  char *s = arena_strndup(cx, b, n ? n : 1);
  for (char *p = s; *p; p++) {
    if (*p >= 'A' && *p <= 'Z') *p += 32;
    if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9'))) *p = '_';
  }
  if (!n || (s[0] >= '0' && s[0] <= '9')) s = arena_printf(cx, "m_%s", s);
  return s;
}

/* tesla: 1, name, input: [D] | [C, H, W], classes, layers: [...], compress, train, data */
void spec_parse(Ctx *cx, YNode *root, Spec *sp) {
  static const char *const keys[] = {"tesla", "name", "input", "classes", "layers", "compress",
                                     "train", "data", NULL};
  memset(sp, 0, sizeof *sp);
  train_defaults(&sp->train);
  sp->data.scale = 255;
  sp->name = default_name(cx);
  if (root->kind != Y_MAP) {
    diag_at(cx, root->loc, "a spec is a map with 'tesla', 'input' and 'layers'; this file holds %s",
            spec_scalar_desc(cx, root));
    return;
  }
  check_keys(cx, root, "the spec", "spec", keys, NULL);
  YNode *x;
  SrcLoc top = root->loc;   /* the first key: missing keys belong to the top-level map */

  if (!(x = spec_get(root, "tesla")))
    diag_at(cx, top, "missing 'tesla: 1' (the language version) at the top of the spec");
  else {
    int64_t ver;
    if (spec_int(cx, x, "tesla", 0, INT32_MAX, &ver)) {
      if (ver != TESLA_LANG_VERSION)
        diag_at(cx, x->loc, "this teslac reads spec language version %d, not %lld",
                TESLA_LANG_VERSION, (long long)ver);
      sp->version = (int)ver;
    }
  }
  if ((x = spec_get(root, "name")) && is_str(cx, x, "name")) {
    if (!is_name(x->str, true))
      diag_at(cx, x->loc, "'name' must match [a-z_][a-z0-9_]* (it prefixes the symbols of emitted "
                          "objects), got %s", spec_scalar_desc(cx, x));
    else if (strlen(x->str) > MAX_NAME)
      diag_at(cx, x->loc, "'name' is %zu characters long; at most %d (it prefixes the symbols of emitted objects)",
              strlen(x->str), MAX_NAME);
    else
      sp->name = x->str;
  }

  if (!(x = spec_get(root, "input")))
    diag_at(cx, top, "missing 'input': one sample's dims, [C, H, W] for images or [D] for vectors");
  else {
    sp->input_loc = x->loc;
    if (x->kind != Y_SEQ || (x->nkids != 1 && x->nkids != 3))
      diag_at(cx, x->loc, "'input' must be [C, H, W] for images or [D] for vectors, got %s%s",
              x->kind == Y_SEQ ? arena_printf(cx, "a list of %d", x->nkids) : spec_scalar_desc(cx, x),
              input_hw_hint(cx, x, spec_get(root, "layers")));
    else {
      bool ok = true;
      for (int i = 0; i < x->nkids; i++)
        ok &= spec_int(cx, x->kids[i], "input", 1, TS_MAX_DIM, &sp->input.d[i]);
      if (ok) sp->input.rank = x->nkids;
      int64_t e = 1;
      for (int i = 0; ok && i < x->nkids; i++)
        if (!size_mul(e, sp->input.d[i], &e)) {
          diag_at(cx, x->loc, "'input' is too large: its dims multiply past 2^40 elements");
          sp->input.rank = 0;
          break;
        }
      if (sp->input.rank == 3) input_hwc_warning(cx, x, &sp->input);
    }
  }
  if ((x = spec_get(root, "classes"))) parse_classes(cx, sp, x);

  if (!(x = spec_get(root, "layers")))
    diag_at(cx, top, "missing 'layers': the list of layers, e.g. '- dense: {units: 10}'");
  else if (x->kind != Y_SEQ || x->nkids == 0)
    diag_at(cx, x->loc, "'layers' must be a non-empty list of layers, got %s",
            x->kind == Y_SEQ ? "an empty list" : spec_scalar_desc(cx, x));
  else if (x->nkids > MAX_LAYERS)
    diag_at(cx, x->loc, "'layers' has %d layers; teslac takes at most %d", x->nkids, MAX_LAYERS);
  else {
    sp->layers_loc = x->loc;
    sp->nlayers = x->nkids;
    sp->layers = arena_alloc(cx, sizeof(Layer) * (size_t)x->nkids);
    for (int i = 0; i < x->nkids; i++) {
      int before = cx->nerrors;
      parse_layer(cx, sp, i, x->kids[i]);
      sp->layers[i].bad = cx->nerrors > before;
    }
  }
  if ((x = spec_get(root, "compress"))) parse_compress(cx, sp, x);
  if ((x = spec_get(root, "train"))) parse_train(cx, sp, x);
  else { sp->train.lr = 0.001; sp->train.weight_decay = 0; }
  if ((x = spec_get(root, "data"))) {
    parse_data(cx, sp, x);
    for (int i = 0; i + 1 < root->nkids; i += 2)   /* "no test data" points at the key, not its first entry */
      if (root->kids[i + 1] == x) sp->data.key_loc = root->kids[i]->loc;
  }
  TrainCfg *t = &sp->train;
  if ((t->early_stop || t->save_best) && MONITOR_IS_VAL(t->monitor) && sp->data.present && !sp->data.val_images &&
      !(sp->data.val_split > 0))
    diag_at(cx, t->monitor_loc, "%s watches %s, but 'data' has no validation set: add 'validation_split: 0.1' "
            "or 'val: {images, labels}' to 'data', or monitor train_loss", t->early_stop ? "early_stopping" : "save_best",
            monitor_names[t->monitor]);
}
