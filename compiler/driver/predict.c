/* predict.c: `teslac predict`: per sample the class and the softmax probabilities of a
 * checkpoint, in eval mode, over the spec's test images or --input: an IDX file, a PNG or
 * PGM/PPM image (image.c), a folder of images (by name), or standard input (`-`, told apart by
 * its first bytes). Every sample becomes the model's input bytes first, then floats through
 * data.scale as IDX samples do, so that the same pixels give the same answer whatever file
 * holds them. With --top K it prints the K best classes; class names when the spec has them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cmd.h"
#include "image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_INPUT_BYTES ((size_t)4 << 30)   /* standard input and image files, as IDX's limit */

/* The samples to classify: count x item bytes as the model's input takes them; files[i] is
 * sample i's file for images (NULL for an IDX file, whose samples go by index). */
typedef struct Samples { size_t count, item; uint8_t *data; char **files; TsIdx idx; } Samples;

static void samples_free(Samples *s) {
  for (size_t i = 0; s->files && i < s->count; i++) free(s->files[i]);
  free(s->files);
  if (s->idx.data) ts_idx_free(&s->idx);   /* an IDX file's data is the runtime's */
  else free(s->data);
  memset(s, 0, sizeof *s);
}

/* all of f into *buf (malloc'd; *n bytes) */
static int read_stream(FILE *f, const char *name, uint8_t **buf, size_t *n, TsErr *e) {
  size_t cap = 1 << 16, have = 0;
  uint8_t *b = malloc(cap);
  while (b) {
    have += fread(b + have, 1, cap - have, f);
    if (have < cap) break;
    if (cap >= MAX_INPUT_BYTES) {
      free(b);
      return ts_fail(e, "%s: larger than the 4 GiB limit", name);
    }
    uint8_t *nb = realloc(b, cap * 2);
    if (!nb) free(b);
    b = nb, cap *= 2;
  }
  if (!b) return ts_fail(e, "%s: out of memory reading it", name);
  if (ferror(f)) {
    free(b);
    return ts_fail(e, "%s: read error: %s", name, strerror(errno));
  }
  *buf = b, *n = have;
  return 0;
}

/* a regular file opened for reading (a FIFO or device fails at once: ts_open_input) */
static FILE *open_input(const char *path, TsErr *e) {
  int fd = ts_open_input(path, "an image or IDX file", e);
  if (fd < 0) return NULL;
  FILE *f = fdopen(fd, "rb");
  if (!f) close(fd), ts_fail(e, "%s: cannot open: %s", path, strerror(errno));
  return f;
}

static int read_file(const char *path, uint8_t **buf, size_t *n, TsErr *e) {
  FILE *f = open_input(path, e);
  if (!f) return -1;
  int rc = read_stream(f, path, buf, n, e);
  fclose(f);
  return rc;
}

/* one image more at the end of s, decoded from buf */
static int add_image(Samples *s, const char *name, const uint8_t *buf, size_t n, const ImgTarget *t, TsErr *e) {
  uint8_t *d = realloc(s->data, (s->count + 1) * s->item);
  if (d) s->data = d;
  char **f = realloc(s->files, (s->count + 1) * sizeof *f);
  if (f) s->files = f;
  if (!d || !f) return ts_fail(e, "%s: out of memory", name);
  if (img_decode(name, buf, n, t, s->data + s->count * s->item, e) < 0) return -1;
  if (!(s->files[s->count] = strdup(name))) return ts_fail(e, "%s: out of memory", name);
  s->count++;
  return 0;
}

static int add_image_file(Samples *s, const char *path, const ImgTarget *t, TsErr *e) {
  uint8_t *buf;
  size_t n;
  if (read_file(path, &buf, &n, e) < 0) return -1;
  int rc = add_image(s, path, buf, n, t, e);
  free(buf);
  return rc;
}

/* an IDX file's samples, checked against the model's input */
static int take_idx(Samples *s, TsIdx *idx, const char *name, const Spec *sp, Ctx *cx, TsErr *e) {
  if ((int64_t)idx->item_size != shape_elems(&sp->input))
    return ts_fail(e, "%s: samples of %zu values, but the model's input %s has %lld", name, idx->item_size,
                   shape_str(cx, &sp->input, true), (long long)shape_elems(&sp->input));
  s->idx = *idx, memset(idx, 0, sizeof *idx);
  s->count = s->idx.count, s->item = s->idx.item_size, s->data = s->idx.data;
  return 0;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* every image of a folder (by its extension), sorted by name */
static int load_folder(Samples *s, const char *dir, const ImgTarget *t, TsErr *e) {
  DIR *d = opendir(dir);
  if (!d) return ts_fail(e, "%s: cannot open the folder: %s", dir, strerror(errno));
  char **paths = NULL;
  size_t n = 0;
  int rc = 0;
  size_t dl = strlen(dir);
  const char *sep = dl && dir[dl - 1] == '/' ? "" : "/";
  for (struct dirent *de; (de = readdir(d));) {
    if (de->d_name[0] == '.' || !img_has_ext(de->d_name)) continue;
    char *p;
    struct stat st;
    if (asprintf(&p, "%s%s%s", dir, sep, de->d_name) < 0) { rc = ts_fail(e, "%s: out of memory", dir); break; }
    if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) { free(p); continue; }
    char **np = realloc(paths, (n + 1) * sizeof *np);
    if (!np) { free(p); rc = ts_fail(e, "%s: out of memory", dir); break; }
    paths = np, paths[n++] = p;
  }
  closedir(d);
  if (rc == 0 && n == 0)
    rc = ts_fail(e, "%s: no images in this folder (.png, .pgm, .ppm, .pnm, .pbm or .pam files)", dir);
  if (rc == 0) qsort(paths, n, sizeof *paths, by_name);
  for (size_t i = 0; rc == 0 && i < n; i++) rc = add_image_file(s, paths[i], t, e);
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths);
  return rc;
}

/* standard input: an image, or an IDX file (plain or gzip) through a memory file */
static int load_stdin(Samples *s, const Spec *sp, Ctx *cx, const ImgTarget *t, TsErr *e) {
  uint8_t *buf;
  size_t n;
  if (read_stream(stdin, "-", &buf, &n, e) < 0) return -1;
  int rc;
  if (n == 0) rc = ts_fail(e, "-: standard input is empty (expected a PNG or PGM/PPM image or an IDX file)");
  else if (img_sniff(buf, n) != IMG_UNKNOWN) rc = add_image(s, "-", buf, n, t, e);
  else if (n >= 2 && ((buf[0] == 0 && buf[1] == 0) || (buf[0] == 0x1f && buf[1] == 0x8b))) {
    int fd = memfd_create("teslac-stdin", MFD_CLOEXEC);
    rc = fd < 0 ? ts_fail(e, "-: cannot hold standard input: %s", strerror(errno)) : 0;
    for (size_t at = 0; rc == 0 && at < n;) {
      ssize_t w = write(fd, buf + at, n - at);
      if (w <= 0) rc = ts_fail(e, "-: cannot hold standard input: %s", strerror(errno));
      else at += (size_t)w;
    }
    if (rc == 0 && lseek(fd, 0, SEEK_SET) < 0) rc = ts_fail(e, "-: cannot hold standard input: %s", strerror(errno));
    if (rc == 0) {
      TsIdx idx;
      rc = ts_idx_load_fd(fd, "-", &idx, e);   /* closes fd */
      if (rc == 0) rc = take_idx(s, &idx, "-", sp, cx, e);
      ts_idx_free(&idx);
    } else if (fd >= 0)
      close(fd);
  } else
    rc = ts_fail(e, "-: standard input is not a PNG, PGM/PPM or IDX file (it starts with 0x%02x%02x)", buf[0],
                 n > 1 ? buf[1] : 0);
  free(buf);
  return rc;
}

/* --input (or the spec's test images) into s */
static int load_input(Samples *s, const char *input, const Spec *sp, Ctx *cx, TsErr *e) {
  const Shape *in = &sp->input;
  ImgTarget t = {in->rank == 3 ? in->d[0] : 1, in->rank == 3 ? in->d[1] : 0, in->rank == 3 ? in->d[2] : in->d[0],
                 shape_str(cx, in, true)};
  s->item = (size_t)shape_elems(in);
  if (!strcmp(input, "-")) return load_stdin(s, sp, cx, &t, e);
  struct stat st;
  if (stat(input, &st) == 0 && S_ISDIR(st.st_mode)) return load_folder(s, input, &t, e);
  /* an image by its first bytes or its name; anything else is read as IDX (gzip or plain) */
  uint8_t head[8];
  size_t got = 0;
  FILE *f = open_input(input, e);
  if (!f) return -1;
  got = fread(head, 1, sizeof head, f), fclose(f);
  if (f && (img_sniff(head, got) != IMG_UNKNOWN || img_has_ext(input))) return add_image_file(s, input, &t, e);
  TsIdx idx;
  if (ts_idx_load(input, &idx, e) < 0) return -1;
  int rc = take_idx(s, &idx, input, sp, cx, e);
  ts_idx_free(&idx);
  return rc;
}

/* is class a's score better than b's: higher, not NaN, and the lower index on a tie */
static bool better(const float *p, int64_t a, int64_t b) {
  if (isnan(p[b])) return !isnan(p[a]) || a < b;
  return p[a] > p[b] || (p[a] == p[b] && a < b);
}

/* the k best classes of p (K scores), best first, into top */
static void top_k(const float *p, int64_t K, int64_t k, int64_t *top) {
  int64_t n = 0;
  for (int64_t c = 0; c < K; c++) {
    if (n == k && !better(p, c, top[k - 1])) continue;
    int64_t at = n < k ? n++ : k - 1;   /* full: the last one drops out */
    while (at > 0 && better(p, c, top[at - 1])) top[at] = top[at - 1], at--;
    top[at] = c;
  }
}

static void print_sample(const Spec *sp, const Samples *s, size_t i, const float *p, int64_t ntop, int64_t *top,
                         bool json) {
  int64_t K = sp->classes, best = 0;
  char buf[24];
  for (int64_t k = 1; k < K; k++)
    if (p[k] > p[best]) best = k;
  if (ntop) top_k(p, K, ntop, top);
  if (json) {
    printf("{\"index\": %zu", i);
    if (s->files) printf(", \"file\": "), cmd_json_str(stdout, s->files[i]);
    printf(", \"class\": %lld", (long long)best);
    if (sp->class_names) printf(", \"name\": "), cmd_json_str(stdout, sp->class_names[best]);
    printf(", \"scores\": [");
    for (int64_t k = 0; k < K; k++) {
      if (k) printf(", ");
      cmd_json_num(stdout, p[k], 6);
    }
    putchar(']');
    if (ntop) {
      printf(", \"top\": [");
      for (int64_t j = 0; j < ntop; j++) {
        printf("%s{\"class\": %lld", j ? ", " : "", (long long)top[j]);
        if (sp->class_names) printf(", \"name\": "), cmd_json_str(stdout, sp->class_names[top[j]]);
        printf(", \"score\": ");
        cmd_json_num(stdout, p[top[j]], 6);
        putchar('}');
      }
      putchar(']');
    }
    printf("}\n");
    return;
  }
  if (s->files) fputs(s->files[i], stdout);
  else printf("%zu", i);
  for (int64_t j = 0; j < (ntop ? ntop : 1); j++) {
    int64_t c = ntop ? top[j] : best;
    printf("%s%lld", j ? "  " : " ", (long long)c);
    if (sp->class_names) printf(" \"%s\"", spec_class_name(sp, c, buf));
    printf(" %.4f", p[c]);
  }
  putchar('\n');
}

/* teslac predict SPEC --weights CKPT [--input IN] [--top K] [--json] [--batch B] [--threads T]:
 * per sample its class and the softmax probabilities, in eval mode */
static const CmdOpt predict_opts[] = {
    CMD_OPT_WEIGHTS("the weights (safetensors: a teslac checkpoint or PyTorch state_dict names)"),
    {"--input", NULL, ARG_STR, "IN", 0, 0, offsetof(TrainOpts, input), "an IDX file, an image, a folder of images or - (default: the\nspec's test images)"},
    {"--top", NULL, ARG_INT, "K", 1, 1 << 24, offsetof(TrainOpts, top), "the K best classes per sample (1 ... the classes)"},
    {"--json", NULL, ARG_FLAG, NULL, 0, 0, offsetof(TrainOpts, json), "one JSON object per line: {\"index\": i, [\"file\": f,] \"class\": c, [\"name\": n,]\n\"scores\": [p0, p1, ...][, \"top\": [{\"class\", \"name\", \"score\"}, ...]]}"},
    CMD_OPT_BATCH("the batch the samples are run in (default: train.batch)"),
    CMD_OPT_THREADS,
    CMD_OPT_NO_CACHE,
    {NULL}};

const CmdDef cmd_predict = {
    .name = "predict", .args = "SPEC --weights CKPT [--input IN] [--top K] [--json] [options]",
    .summary = "class and scores per sample of an IDX file, images or a folder",
    .about = "Classify every sample of IN (default: the spec's test images) with the weights in CKPT.\n"
             "IN is an IDX file, a PNG or PGM/PPM image, a folder of them (every .png, .pgm, .ppm, .pnm,\n"
             ".pbm, .pam file, by name), or - for standard input (told apart by their first bytes). An\n"
             "image must have the input's height and width; it becomes gray (PIL's convert('L')) for a\n"
             "1-channel input and RGB for a 3-channel one, then is scaled as data.scale says.\n"
             "Prints one line per sample: its index (an image: its file), its class, the class's name\n"
             "in quotes when the spec names them, and its probability (its raw score when the spec does\n"
             "not end in softmax); with --top K the K best classes, best first.",
    CMD_POS_SPEC(TrainOpts),
    .opts = predict_opts,
    .quiet = "the predictions only (no effect: they are the output)",
    .verbose = "also what the compile took, on standard error",
    .run = predict_main};

int predict_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts(&cmd_predict, argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  const char *weights = o.weights, *input = o.input;
  Ctx cx;
  Model m = {0};
  Samples smp = {0};
  int64_t *top = NULL;
  TsErr e;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  if (o.top > m.sp.classes) {
    char msg[96];
    snprintf(msg, sizeof msg, "--top %lld is more than the model's %lld classes", (long long)o.top,
             (long long)m.sp.classes);
    rc = cmd_usage("predict", "%s", msg);
    goto out;
  }
  if (!input) input = m.sp.data.test_images;
  if (!input) {
    fprintf(stderr, "teslac: predict needs --input IDX, IMAGE or FOLDER (the spec has no test images)\n");
    goto out;
  }
  if (load_input(&smp, input, &m.sp, &cx, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  if (model_build(&cx, &m, o.batch ? o.batch : m.sp.train.batch, o.threads, cmd_verbosity > 0 ? stderr : NULL) < 0) goto out;
  if (model_load(&cx, &m, weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  const char *bad = model_nonfinite(&m);
  if (bad)   /* the scores say null (JSON) or nan; say why once */
    fprintf(stderr, "teslac: warning: %s: '%s' holds non-finite values (NaN or infinity); the run that wrote it "
                    "diverged\n", weights, bad);
  int64_t B = m.pl.batch, K = m.sp.classes, out_off = emit_output_offset(&m.sp, &m.pl);
  top = calloc((size_t)(o.top ? o.top : 1), sizeof *top);
  if (!top) {
    fprintf(stderr, "teslac: out of memory\n");
    goto out;
  }
  float scale = (float)m.sp.data.scale;
  for (size_t at = 0; at < smp.count; at += (size_t)B) {
    int64_t n = (int64_t)(smp.count - at) < B ? (int64_t)(smp.count - at) : B;
    for (int64_t i = 0; i < B * m.in_elems; i++)
      m.X[i] = i < n * m.in_elems ? (float)smp.data[at * smp.item + (size_t)i] / scale : 0.0f;
    TeslaStep s;
    model_step_init(&m, &s);
    s.y = NULL, s.nvalid = (int32_t)n;
    m.infer(&s);
    const float *p = m.A + out_off;   /* probabilities when the spec ends in softmax, else logits */
    for (int64_t b = 0; b < n; b++) print_sample(&m.sp, &smp, at + (size_t)b, p + b * K, o.top, top, o.json);
  }
  rc = 0;
out:
  free(top);
  samples_free(&smp);
  model_free(&m);
  ctx_free(&cx);
  return rc;
}
