/* test_infer.c: inference from the outside, through the built teslac ($TESLAC), on net.h's
 * synthetic 4-class 8x8 dataset and a model trained on it once before the suite runs.
 *
 *   eval      the confusion matrix and per-class accuracy: --json is valid JSON without
 *             non-finite numbers (python3's json module, stdlib only), its rows sum to the
 *             per-class counts and to the samples, its diagonal to accuracy x samples; the text
 *             names the classes; an empty test set is an error
 *   images    PNG (gray, RGB, gray + alpha, 16-bit) and PGM/PPM files written here give
 *             exactly the output of an IDX file holding the same pixels; RGB becomes gray as
 *             PIL's convert('L'); a 3-channel model takes RGB; a folder (by name, other files
 *             ignored); standard input (image or IDX)
 *   --top K   the K best classes in text and JSON, best first; bad values exit 2
 *   bad input corrupt, truncated, wrong-sized and non-image files, an empty folder, garbage
 *             on standard input: exit 1 with one line naming the file */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "net.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { NIMG = 5 };   /* test images written as files */

static const char names_layers[] = "  - dense: {units: 16}\n  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n";
static uint8_t test_px[NIMG][SIDE * SIDE];   /* the first test samples' pixels */

/* ---- writers: PNG (zlib + CRC by hand), PGM/PPM, IDX ------------------------------------- */

static void put32(uint8_t *p, uint32_t v) { p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v; }

static void png_chunk(FILE *f, const char *type, const uint8_t *data, uint32_t n) {
  uint8_t h[8], c[4];
  put32(h, n), memcpy(h + 4, type, 4);
  NEED(fwrite(h, 1, 8, f) == 8 && (n == 0 || fwrite(data, 1, n, f) == n));
  uLong crc = crc32(0, (const Bytef *)type, 4);
  if (n) crc = crc32(crc, data, n);   /* (crc32 of a NULL buffer is its initial value, 0) */
  put32(c, (uint32_t)crc);
  NEED(fwrite(c, 1, 4, f) == 4);
}

/* a PNG of w x h, colour type ct (0 gray, 2 RGB, 4 gray + alpha), bit depth bd; `rows`: h rows
 * of the raw sample bytes (big-endian for 16 bits) */
static void write_png(const char *name, int w, int h, int ct, int bd, const uint8_t *rows) {
  int nch = ct == 2 ? 3 : ct == 4 ? 2 : 1;
  size_t rb = (size_t)w * (size_t)nch * (size_t)(bd / 8), rawn = (rb + 1) * (size_t)h;
  uint8_t *raw = malloc(rawn), *z = malloc(compressBound(rawn));
  for (int y = 0; y < h; y++) raw[(size_t)y * (rb + 1)] = 0, memcpy(raw + (size_t)y * (rb + 1) + 1, rows + (size_t)y * rb, rb);
  uLongf zn = compressBound(rawn);
  NEED(compress(z, &zn, raw, rawn) == Z_OK);
  char *path = tmp_path(name);
  FILE *f = fopen(path, "wb");
  NEED(f);
  static const uint8_t magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  uint8_t ihdr[13];
  put32(ihdr, (uint32_t)w), put32(ihdr + 4, (uint32_t)h);
  ihdr[8] = (uint8_t)bd, ihdr[9] = (uint8_t)ct, ihdr[10] = ihdr[11] = ihdr[12] = 0;
  NEED(fwrite(magic, 1, 8, f) == 8);
  png_chunk(f, "IHDR", ihdr, 13);
  png_chunk(f, "IDAT", z, (uint32_t)zn);
  png_chunk(f, "IEND", NULL, 0);
  NEED(fclose(f) == 0);
  free(path), free(raw), free(z);
}

/* a binary PGM (P5, nch 1) or PPM (P6, nch 3), maxval 255 */
static void write_pnm(const char *name, int w, int h, int nch, const uint8_t *px) {
  char *hdr = xprintf("P%d\n# written by test_infer\n%d %d\n255\n", nch == 3 ? 6 : 5, w, h);
  size_t hn = strlen(hdr), n = (size_t)w * (size_t)h * (size_t)nch;
  uint8_t *buf = malloc(hn + n);
  memcpy(buf, hdr, hn), memcpy(buf + hn, px, n);
  char *path = tmp_path(name);
  write_bytes(path, buf, hn + n, false);
  free(path), free(buf), free(hdr);
}

/* PIL's convert('L') from RGB, as PIL computes it (ITU-R 601-2 in 16-bit fixed point) */
static uint8_t pil_l(uint8_t r, uint8_t g, uint8_t b) {
  return (uint8_t)((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

/* ---- running teslac ------------------------------------------------------------------------ */

/* teslac with `in` as its standard input */
static Cli cli_stdin(const char *in, const char *const *args) {
  static int serial;
  char *op = xprintf("%s/stdin-%d.out", tmpdir, serial), *ep = xprintf("%s/stdin-%d.err", tmpdir, serial++);
  const char *argv[32];
  int k = 0;
  argv[k++] = teslac_bin;
  for (; *args && k < 31; args++) argv[k++] = *args;
  argv[k] = NULL;
  fflush(stdout);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int i = open(in, O_RDONLY), o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0644),
        e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(i, 0), dup2(o, 1), dup2(e, 2);
    execv(teslac_bin, (char *const *)argv);
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0);
  Cli r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(op, NULL), slurp(ep, NULL)};
  unlink(op), unlink(ep);
  free(op), free(ep);
  return r;
}
#define CLI_STDIN(in, ...) cli_stdin(in, (const char *const[]){__VA_ARGS__, NULL})

/* the lines of a predict output without their first field (the index or the file) */
static char *strip_ids(const char *out) {
  char *s = malloc(strlen(out) + 1), *q = s;
  for (const char *p = out; *p;) {
    const char *sp = strchr(p, ' '), *nl = strchr(p, '\n');
    if (!nl) break;
    if (sp && sp < nl) memcpy(q, sp, (size_t)(nl - sp + 1)), q += nl - sp + 1;
    p = nl + 1;
  }
  *q = 0;
  return s;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* python3 (stdlib) says the file is one JSON document (or one per line) without NaN/Infinity */
static void json_valid(const char *path, bool lines) {
  char *cmd = xprintf("python3 -c 'import json, sys\n"
                      "def bad(c): sys.exit(\"non-finite number in JSON: \" + c)\n"
                      "t = open(sys.argv[1]).read()\n"
                      "docs = t.splitlines() if %s else [t]\n"
                      "[json.loads(d, parse_constant=bad) for d in docs]' %s",
                      lines ? "True" : "False", path);
  int rc = system(cmd);
  ck_assert_msg(rc == 0, "%s is not valid JSON (python3 exit %d)", path, rc);
  free(cmd);
}

static char *spec_path, *ckpt_path, *rgb_spec, *rgb_ckpt;

/* ---- eval -------------------------------------------------------------------------------- */

/* the integer after each occurrence of `key` in s, up to max of them; returns how many */
static int ints_after(const char *s, const char *key, int64_t *out, int max) {
  int n = 0;
  for (const char *p = s; n < max && (p = strstr(p, key)); p += strlen(key)) out[n++] = strtoll(p + strlen(key), NULL, 10);
  return n;
}

START_TEST(eval_confusion_json) {
  Cli r = CLI("eval", spec_path, "--weights", ckpt_path, "--json", "--threads", "2");
  cli_ok(&r);
  char *jp = tmp_path("eval.json");
  write_bytes(jp, r.out, strlen(r.out), false);
  json_valid(jp, false);
  /* the confusion rows */
  const char *c = strstr(r.out, "\"confusion\": [");
  ck_assert_ptr_nonnull(c);
  c += strlen("\"confusion\": [");
  int64_t cm[NCLASS][NCLASS];
  for (int i = 0; i < NCLASS; i++)
    for (int j = 0; j < NCLASS; j++) {
      while (*c && !(*c >= '0' && *c <= '9')) c++;
      char *end;
      cm[i][j] = strtoll(c, &end, 10);
      c = end;
    }
  int64_t count[NCLASS], correct[NCLASS], samples;
  ck_assert_int_eq(ints_after(r.out, "\"count\": ", count, NCLASS), NCLASS);
  ck_assert_int_eq(ints_after(r.out, "\"correct\": ", correct, NCLASS), NCLASS);
  ck_assert_int_eq(ints_after(r.out, "\"samples\": ", &samples, 1), 1);
  const char *ap = strstr(r.out, "\"accuracy\": ");   /* the first: the whole set's */
  ck_assert_ptr_nonnull(ap);
  double acc = atof(ap + 12);
  int64_t diag = 0, total = 0;
  for (int i = 0; i < NCLASS; i++) {
    int64_t row = 0;
    for (int j = 0; j < NCLASS; j++) row += cm[i][j];
    ck_assert_msg(row == count[i], "confusion row %d sums to %lld, per_class count %lld", i, (long long)row,
                  (long long)count[i]);
    ck_assert_int_eq(correct[i], cm[i][i]);
    diag += cm[i][i], total += row;
  }
  ck_assert_int_eq(total, samples);
  ck_assert_int_eq(samples, NTEST);
  ck_assert_msg(llround(acc * (double)samples) == diag, "accuracy %.6f x %lld samples, but the diagonal sums to %lld",
                acc, (long long)samples, (long long)diag);
  ck_assert_msg(strstr(r.out, "\"name\": \"diagonal\""), "%s", r.out);
  printf("  eval --json: %lld samples, diagonal %lld = accuracy %.4f x samples\n", (long long)samples,
         (long long)diag, acc);
  /* the text: the first line as before, then the matrix and the table with the names */
  Cli t = CLI("eval", spec_path, "--weights", ckpt_path, "--threads", "2");
  cli_ok(&t);
  ck_assert_msg(!strncmp(t.out, "test loss ", 10), "%s", t.out);
  ck_assert_msg(fabs(parse_last(t.out, "test accuracy ") - acc) < 1e-4, "%s", t.out);
  ck_assert_msg(strstr(t.out, "confusion matrix (rows: true class, columns: predicted class)"), "%s", t.out);
  ck_assert_msg(strstr(t.out, "per-class accuracy") && strstr(t.out, "3 border"), "%s", t.out);
  printf("%s", t.out);
  cli_free(&r), cli_free(&t);
  free(jp);
}
END_TEST

/* names from data.class_names; and a test set without samples */
START_TEST(eval_data_names_and_empty) {
  char *src = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nlayers:\n%s"
                      "train: {batch: 32, seed: 7}\n"
                      "data:\n  train: {images: train-images.gz, labels: train-labels.gz}\n"
                      "  test: {images: %s, labels: %s}\n  class_names: [hbar, vbar, diagonal, border]\n",
                      names_layers, "test-images.gz", "test-labels.gz");
  char *p = tmp_path("data_names.yaml");
  write_bytes(p, src, strlen(src), false);
  Cli r = CLI("eval", p, "--weights", ckpt_path);
  cli_ok(&r);
  ck_assert_msg(strstr(r.out, "1 vbar"), "%s", r.out);
  cli_free(&r), free(src);
  uint32_t di[3] = {0, SIDE, SIDE}, dl[1] = {0};
  uint8_t none[1] = {0};
  write_idx("empty-images", di, 3, none, 0, false);
  write_idx("empty-labels", dl, 1, none, 0, false);
  src = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n%s"
                "data:\n  train: {images: train-images.gz, labels: train-labels.gz}\n"
                "  test: {images: empty-images, labels: empty-labels}\n", names_layers);
  char *q = tmp_path("empty.yaml");
  write_bytes(q, src, strlen(src), false);
  r = CLI("eval", q, "--weights", ckpt_path);
  cli_fails(&r, 1, "eval of an empty test set", (const char *const[]){"empty-images", "no samples", NULL});
  cli_free(&r);
  free(src), free(p), free(q);
}
END_TEST

/* ---- predict on images ----------------------------------------------------------------------- */

START_TEST(predict_images_match_idx) {
  char *idx = tmp_path("five.idx");
  Cli a = CLI("predict", spec_path, "--weights", ckpt_path, "--input", idx);
  cli_ok(&a);
  ck_assert_int_eq(count_lines(a.out), NIMG);
  ck_assert_msg(strstr(a.out, "\""), "no class names: %s", a.out);
  char *want = strip_ids(a.out);
  static const char *const kinds[] = {"png", "pgm", "rgb.png", "ga.png", "16.png", "rgb_l.png", NULL};
  for (int k = 0; kinds[k]; k++) {
    char *got = calloc(1, 1);
    for (int i = 0; i < NIMG; i++) {
      char *f = xprintf("%s/s%d.%s", tmpdir, i, kinds[k]);
      if (!strcmp(kinds[k], "rgb_l.png")) {   /* coloured: against the gray PGM PIL would make */
        free(f);
        f = xprintf("%s/c%d.png", tmpdir, i);
      }
      Cli r = CLI("predict", spec_path, "--weights", ckpt_path, "--input", f);
      cli_ok(&r);
      ck_assert_msg(!strncmp(r.out, f, strlen(f)), "the line does not name its file %s: %s", f, r.out);
      char *s = strip_ids(r.out), *g = xprintf("%s%s", got, s);
      free(got), got = g;
      free(s), free(f);
      cli_free(&r);
    }
    const char *ref = want;
    char *cref = NULL;
    if (!strcmp(kinds[k], "rgb_l.png")) {   /* c%d.png against c%d.pgm (its L by PIL's formula) */
      cref = calloc(1, 1);
      for (int i = 0; i < NIMG; i++) {
        char *f = xprintf("%s/c%d.pgm", tmpdir, i);
        Cli r = CLI("predict", spec_path, "--weights", ckpt_path, "--input", f);
        cli_ok(&r);
        char *s = strip_ids(r.out), *g = xprintf("%s%s", cref, s);
        free(cref), cref = g;
        free(s), free(f);
        cli_free(&r);
      }
      ref = cref;
    }
    ck_assert_msg(!strcmp(got, ref), "%s images predict\n%s\nbut the same pixels as IDX/PGM give\n%s", kinds[k], got, ref);
    printf("  predict: %d %s images give the IDX file's (or PIL's gray) output\n", NIMG, kinds[k]);
    free(got), free(cref);
  }
  cli_free(&a);
  free(want), free(idx);
}
END_TEST

/* a 3-channel model: RGB PNG, PPM and a planar (3, 8, 8) IDX of the same pixels agree */
START_TEST(predict_rgb_model) {
  char *idx = tmp_path("rgb.idx"), *png = tmp_path("rgb_model.png"), *ppm = tmp_path("rgb_model.ppm"),
       *gray = tmp_path("s0.png");
  Cli a = CLI("predict", rgb_spec, "--weights", rgb_ckpt, "--input", idx, "--json");
  Cli b = CLI("predict", rgb_spec, "--weights", rgb_ckpt, "--input", png, "--json");
  Cli c = CLI("predict", rgb_spec, "--weights", rgb_ckpt, "--input", ppm, "--json");
  cli_ok(&a), cli_ok(&b), cli_ok(&c);
  const char *sa = strstr(a.out, "\"class\""), *sb = strstr(b.out, "\"class\""), *sc = strstr(c.out, "\"class\"");
  ck_assert_msg(sa && sb && sc && !strcmp(sa, sb) && !strcmp(sa, sc), "IDX %s\nPNG %s\nPPM %s", a.out, b.out, c.out);
  ck_assert_msg(strstr(b.out, "\"file\": \""), "%s", b.out);
  /* a gray image for an RGB model: replicated into the three planes, no error */
  Cli d = CLI("predict", rgb_spec, "--weights", rgb_ckpt, "--input", gray);
  cli_ok(&d);
  cli_free(&a), cli_free(&b), cli_free(&c), cli_free(&d);
  free(idx), free(png), free(ppm), free(gray);
}
END_TEST

START_TEST(predict_folder_and_stdin) {
  char *dir = tmp_path("folder"), *idx = tmp_path("five.idx");
  Cli r = CLI("predict", spec_path, "--weights", ckpt_path, "--input", dir);
  cli_ok(&r);
  /* b.png, c.pgm, d.PNG, sorted by name; notes.txt and the subfolder sub.png/ are not images */
  ck_assert_int_eq(count_lines(r.out), 3);
  char *l1 = xprintf("%s/b.png ", dir), *l2 = xprintf("\n%s/c.pgm ", dir), *l3 = xprintf("\n%s/d.PNG ", dir);
  ck_assert_msg(!strncmp(r.out, l1, strlen(l1)) && strstr(r.out, l2) && strstr(r.out, l3) &&
                    strstr(r.out, l2) < strstr(r.out, l3), "%s", r.out);
  Cli j = CLI("predict", spec_path, "--weights", ckpt_path, "--input", dir, "--json");
  cli_ok(&j);
  char *jp = tmp_path("folder.jsonl");
  write_bytes(jp, j.out, strlen(j.out), false);
  json_valid(jp, true);
  ck_assert_msg(strstr(j.out, "\"file\": \"") && strstr(j.out, "/c.pgm\""), "%s", j.out);
  /* standard input: a PNG, a PGM, an IDX file and a gzip'd one, as from their files */
  char *png = tmp_path("s2.png"), *pgm = tmp_path("s2.pgm"), *gz = tmp_path("five.idx.gz");
  Cli f = CLI("predict", spec_path, "--weights", ckpt_path, "--input", png);
  Cli s1 = CLI_STDIN(png, "predict", spec_path, "--weights", ckpt_path, "--input", "-");
  Cli s2 = CLI_STDIN(pgm, "predict", spec_path, "--weights", ckpt_path, "--input", "-");
  cli_ok(&f), cli_ok(&s1), cli_ok(&s2);
  char *a = strip_ids(f.out), *b = strip_ids(s1.out), *c = strip_ids(s2.out);
  ck_assert_msg(!strcmp(a, b) && !strcmp(a, c), "file %s, stdin png %s, stdin pgm %s", f.out, s1.out, s2.out);
  ck_assert_msg(!strncmp(s1.out, "- ", 2), "%s", s1.out);
  Cli fi = CLI("predict", spec_path, "--weights", ckpt_path, "--input", idx);
  Cli si = CLI_STDIN(idx, "predict", spec_path, "--weights", ckpt_path, "--input", "-");
  Cli sg = CLI_STDIN(gz, "predict", spec_path, "--weights", ckpt_path, "--input", "-");
  cli_ok(&fi), cli_ok(&si), cli_ok(&sg);
  ck_assert_str_eq(fi.out, si.out);
  ck_assert_str_eq(fi.out, sg.out);
  printf("  predict: a folder of 3 images by name; stdin PNG, PGM, IDX and IDX.gz as from files\n");
  cli_free(&r), cli_free(&j), cli_free(&f), cli_free(&s1), cli_free(&s2), cli_free(&fi), cli_free(&si), cli_free(&sg);
  free(a), free(b), free(c), free(l1), free(l2), free(l3);
  free(dir), free(idx), free(jp), free(png), free(pgm), free(gz);
}
END_TEST

START_TEST(predict_top_k) {
  char *idx = tmp_path("five.idx");
  Cli one = CLI("predict", spec_path, "--weights", ckpt_path, "--input", idx);
  Cli t3 = CLI("predict", spec_path, "--weights", ckpt_path, "--input", idx, "--top", "3");
  Cli j = CLI("predict", spec_path, "--weights", ckpt_path, "--input", idx, "--top", "4", "--json");
  cli_ok(&one), cli_ok(&t3), cli_ok(&j);
  /* text: three groups "class "name" p" per line, the first the default line's, scores falling */
  const char *p = t3.out, *q = one.out;
  for (int i = 0; i < NIMG; i++) {
    const char *nl = strchr(p, '\n'), *nq = strchr(q, '\n');
    ck_assert_ptr_nonnull(nl);
    ck_assert_msg(!strncmp(p, q, (size_t)(nq - q)) && p[nq - q] == ' ', "top 3 %.*s\ndefault %.*s", (int)(nl - p), p,
                  (int)(nq - q), q);
    int quotes = 0;
    for (const char *c = p; c < nl; c++) quotes += *c == '"';
    ck_assert_int_eq(quotes, 6);
    double prev = 2;
    int groups = 0;
    for (const char *c = p; (c = strchr(c, '"')) && c < nl; c++) {
      c = strchr(c + 1, '"');
      double v = strtod(c + 1, NULL);
      ck_assert_msg(v <= prev, "scores not best first: %.*s", (int)(nl - p), p);
      prev = v, groups++;
    }
    ck_assert_int_eq(groups, 3);
    p = nl + 1, q = nq + 1;
  }
  char *jp = tmp_path("top.jsonl");
  write_bytes(jp, j.out, strlen(j.out), false);
  json_valid(jp, true);
  int n = 0;
  for (const char *c = j.out; (c = strstr(c, "\"score\": ")); c++) n++;
  ck_assert_int_eq(n, 4 * NIMG);
  Cli bad[] = {CLI("predict", spec_path, "--weights", ckpt_path, "--top", "5"),
               CLI("predict", spec_path, "--weights", ckpt_path, "--top", "0"),
               CLI("predict", spec_path, "--weights", ckpt_path, "--top", "2.5"),
               CLI("predict", spec_path, "--weights", ckpt_path, "--top", "many"),
               CLI("predict", spec_path, "--weights", ckpt_path, "--top"),
               CLI("eval", spec_path, "--weights", ckpt_path, "--top", "2")};
  static const char *const what[] = {"--top 5 of 4 classes", "--top 0", "--top 2.5", "--top many",
                                     "--top without value", "eval --top"};
  for (int i = 0; i < 6; i++) {
    cli_fails(&bad[i], 2, what[i], (const char *const[]){"--top", NULL});
    cli_free(&bad[i]);
  }
  cli_free(&one), cli_free(&t3), cli_free(&j);
  free(idx), free(jp);
}
END_TEST

/* every bad image: exit 1, one line naming the file and what is wrong */
START_TEST(predict_bad_images) {
  static const struct { const char *file, *needle; } cases[] = {
      {"cut.png", "truncated"},
      {"crc.png", "CRC"},
      {"zlib.png", "not a readable PNG"},
      {"header_only.png", "truncated"},
      {"cut.pgm", "not a readable PGM/PPM"},
      {"junk.pgm", "not a readable PGM/PPM"},
      {"wide.png", "10x8 (width x height)"},
      {"wide.pgm", "takes 8x8 images"},
      {"text.png", "not a PNG or PGM/PPM image"},
      {"missing.png", "cannot open"},
      {"empty_folder", "no images"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *f = tmp_path(cases[i].file);
    Cli r = CLI("predict", spec_path, "--weights", ckpt_path, "--input", f);
    cli_fails(&r, 1, cases[i].file, (const char *const[]){f, cases[i].needle, NULL});
    cli_free(&r), free(f);
  }
  char *g = tmp_path("garbage.txt");
  Cli r = CLI_STDIN(g, "predict", spec_path, "--weights", ckpt_path, "--input", "-");
  cli_fails(&r, 1, "garbage on stdin", (const char *const[]){"-: standard input", NULL});
  cli_free(&r), free(g);
  r = CLI_STDIN("/dev/null", "predict", spec_path, "--weights", ckpt_path, "--input", "-");
  cli_fails(&r, 1, "empty stdin", (const char *const[]){"empty", NULL});
  cli_free(&r);
}
END_TEST

/* ---- weights whose names do not match ------------------------------------------------------ */

/* A copy of ckpt_path's weights with each name passed through rename ("" drops it) and
 * `njunk` unrelated tensors added. */
static char *renamed_copy(const char *file, const char *(*rename)(const char *, char *), int njunk) {
  TsStFile f;
  TsErr e;
  ck_assert_msg(ts_st_read(ckpt_path, &f, &e) == 0, "%s", e.msg);
  TsStOut *outs = calloc((size_t)(f.ntensors + njunk), sizeof *outs);
  char (*names)[128] = calloc((size_t)(f.ntensors + njunk), sizeof *names);
  static const float junk[3] = {1, 2, 3};
  int k = 0;
  for (int i = 0; i < f.ntensors; i++) {
    const char *n = strncmp(f.tensors[i].name, "__opt__", 7) ? rename(f.tensors[i].name, names[k]) : "";
    if (!*n) continue;
    outs[k] = (TsStOut){n, f.tensors[i].dtype, f.tensors[i].ndims, {0}, f.tensors[i].data};
    memcpy(outs[k].shape, f.tensors[i].shape, sizeof outs[k].shape);
    k++;
  }
  for (int j = 0; j < njunk; j++, k++) {
    snprintf(names[k], sizeof names[k], "aux.%d", j);
    outs[k] = (TsStOut){names[k], TS_F32, 1, {3}, junk};
  }
  char *path = tmp_path(file);
  ck_assert_msg(ts_st_write(path, outs, k, NULL, 0, &e) == 0, "%s", e.msg);
  ts_st_free(&f), free(outs), free(names);
  return path;
}

static const char *as_features(const char *n, char *buf) {   /* an nn.Sequential inside a module */
  snprintf(buf, 128, "features.%s", n);
  return buf;
}
static const char *without_last(const char *n, char *buf) { return n[0] == '2' ? "" : strcpy(buf, n); }
static const char *same_name(const char *n, char *buf) { return strcpy(buf, n); }

/* one error lists every missing tensor with the shape the spec needs and every extra one with
 * its own, for eval --weights and train --init alike; a long list is cut with a count */
START_TEST(weights_name_mismatch) {
  char *renamed = renamed_copy("renamed.st", as_features, 0);
  Cli r = CLI("eval", spec_path, "--weights", renamed);
  cli_fails(&r, 1, "eval of renamed weights",
            (const char *const[]){"missing: 0.weight (16, 64), 0.bias (16), 2.weight (4, 16), 2.bias (4);",
                                  "extra: features.0.weight (16, 64), features.0.bias (16), features.2.weight (4, 16), "
                                  "features.2.bias (4)", "<layer>.<param>", NULL});
  ck_assert_msg(count_lines(r.err) == 1, "one line:\n%s", r.err);
  cli_free(&r);
  char *never = tmp_path("never.st");
  r = CLI("train", spec_path, "--init", renamed, "--steps", "1", "-o", never);
  cli_fails(&r, 1, "train --init of renamed weights",
            (const char *const[]){"--init: ", "missing: 0.weight (16, 64)", "extra: features.0.weight (16, 64)", NULL});
  cli_free(&r);
  /* missing only: the file has nothing else to offer */
  char *partial = renamed_copy("partial.st", without_last, 0);
  r = CLI("eval", spec_path, "--weights", partial);
  cli_fails(&r, 1, "eval of partial weights",
            (const char *const[]){"missing: 2.weight (4, 16), 2.bias (4); the file has no other tensors", NULL});
  ck_assert_ptr_null(strstr(r.err, "0.weight"));
  cli_free(&r);
  /* 50 unrelated tensors: a few are shown, the rest counted */
  char *many = renamed_copy("many.st", without_last, 50);
  r = CLI("eval", spec_path, "--weights", many);
  cli_fails(&r, 1, "eval with 50 extra tensors", (const char *const[]){"extra: aux.0 (3), aux.1 (3)", " more", NULL});
  int64_t more = 0;
  ck_assert_int_eq(ints_after(r.err, "(3) and ", &more, 1), 1);
  ck_assert_msg(more > 30 && more < 50, "%s", r.err);
  ck_assert_int_eq(count_lines(r.err), 1);
  cli_free(&r);
  /* extra tensors alone are ignored */
  char *extra = renamed_copy("extra.st", same_name, 3);
  r = CLI("eval", spec_path, "--weights", extra);
  cli_ok(&r);
  cli_free(&r);
  free(renamed), free(partial), free(many), free(extra), free(never);
}
END_TEST

/* ---- set-up: data, images, two trained models ------------------------------------------------ */

/* teslac train outside the tests (no ck_assert there: check's assertions need a test) */
static void train_quietly(const char *spec, const char *steps, const char *out) {
  char *cmd = xprintf("'%s' train '%s' --steps %s --threads 2 -o '%s' > '%s/train.log' 2>&1", teslac_bin, spec,
                      steps, out, tmpdir);
  int rc = system(cmd);
  if (rc) fprintf(stderr, "test_infer: %s failed:\n%s", cmd, slurp(xprintf("%s/train.log", tmpdir), NULL));
  NEED(rc == 0);
  free(cmd);
}

static void make_files(void) {
  synth_dataset();
  uint8_t *img = malloc(NTEST * SIDE * SIDE), *lab = malloc(NTEST);
  synth(img, lab, NTEST, 2);   /* the test set's samples */
  memcpy(test_px, img, sizeof test_px);
  uint32_t di[3] = {NIMG, SIDE, SIDE};
  write_idx("five.idx", di, 3, img, sizeof test_px, false);
  write_idx("five.idx.gz", di, 3, img, sizeof test_px, true);
  for (int i = 0; i < NIMG; i++) {
    const uint8_t *px = test_px[i];
    uint8_t rgb[SIDE * SIDE * 3], ga[SIDE * SIDE * 2], w16[SIDE * SIDE * 2], col[SIDE * SIDE * 3], l[SIDE * SIDE];
    for (int k = 0; k < SIDE * SIDE; k++) {
      rgb[3 * k] = rgb[3 * k + 1] = rgb[3 * k + 2] = px[k];
      ga[2 * k] = px[k], ga[2 * k + 1] = (uint8_t)(k * 7);   /* alpha: dropped */
      w16[2 * k] = px[k], w16[2 * k + 1] = px[k];            /* v * 257: back to v in 8 bits */
      /* colours whose PIL gray is what the c%d.pgm holds */
      col[3 * k] = px[k], col[3 * k + 1] = (uint8_t)(255 - px[k]), col[3 * k + 2] = (uint8_t)(k * 5);
      l[k] = pil_l(col[3 * k], col[3 * k + 1], col[3 * k + 2]);
    }
    char *n;
    write_png(n = xprintf("s%d.png", i), SIDE, SIDE, 0, 8, px), free(n);
    write_pnm(n = xprintf("s%d.pgm", i), SIDE, SIDE, 1, px), free(n);
    write_png(n = xprintf("s%d.rgb.png", i), SIDE, SIDE, 2, 8, rgb), free(n);
    write_png(n = xprintf("s%d.ga.png", i), SIDE, SIDE, 4, 8, ga), free(n);
    write_png(n = xprintf("s%d.16.png", i), SIDE, SIDE, 0, 16, w16), free(n);
    write_png(n = xprintf("c%d.png", i), SIDE, SIDE, 2, 8, col), free(n);
    write_pnm(n = xprintf("c%d.pgm", i), SIDE, SIDE, 1, l), free(n);
  }
  /* a folder: three images, a text file and a subfolder whose name looks like an image */
  char *d = tmp_path("folder"), *sub = tmp_path("folder/sub.png"), *e = tmp_path("empty_folder");
  NEED(mkdir(d, 0755) == 0 && mkdir(sub, 0755) == 0 && mkdir(e, 0755) == 0);
  write_png("folder/d.PNG", SIDE, SIDE, 0, 8, test_px[2]);
  write_png("folder/b.png", SIDE, SIDE, 0, 8, test_px[0]);
  write_pnm("folder/c.pgm", SIDE, SIDE, 1, test_px[1]);
  char *t = tmp_path("folder/notes.txt");
  write_bytes(t, "not an image\n", 13, false);
  free(d), free(sub), free(e), free(t);
  /* bad images */
  char *p = tmp_path("s0.png");
  size_t n;
  char *good = slurp(p, &n);
  free(p);
  struct { const char *name; size_t len; int flip_at; } bad[] = {
      {"cut.png", n - 20, -1}, {"header_only.png", 33, -1}, {"crc.png", n, 30}, {"zlib.png", n, -2}};
  for (int k = 0; k < 4; k++) {
    char *b = malloc(n);
    memcpy(b, good, n);
    if (bad[k].flip_at >= 0) b[bad[k].flip_at] ^= 0x40;   /* IHDR's CRC no longer holds */
    if (bad[k].flip_at == -2) {                           /* IDAT's data garbled, its CRC redone */
      size_t at = 33 + 8;                                 /* IDAT data starts after IHDR */
      uint32_t len = (uint32_t)(uint8_t)b[33] << 24 | (uint32_t)(uint8_t)b[34] << 16 | (uint32_t)(uint8_t)b[35] << 8 | (uint8_t)b[36];
      for (size_t z = at + 2; z < at + len - 4; z++) b[z] ^= 0x5a;
      put32((uint8_t *)b + at + len, (uint32_t)crc32(0, (const Bytef *)b + 37, len + 4));
    }
    p = tmp_path(bad[k].name);
    write_bytes(p, b, bad[k].len, false);
    free(p), free(b);
  }
  free(good);
  p = tmp_path("s0.pgm");
  good = slurp(p, &n);
  free(p);
  p = tmp_path("cut.pgm");
  write_bytes(p, good, n - 10, false);
  free(p), free(good);
  p = tmp_path("junk.pgm");
  write_bytes(p, "P5\n8 eight\n255\n", 15, false);
  free(p);
  uint8_t wide[10 * 8] = {0};
  write_png("wide.png", 10, 8, 0, 8, wide);
  write_pnm("wide.pgm", 10, 8, 1, wide);
  p = tmp_path("text.png");
  write_bytes(p, "hello, world\n", 13, false);
  free(p);
  p = tmp_path("garbage.txt");
  write_bytes(p, "hello, world\n", 13, false);
  free(p);

  /* the model with class names, trained a little */
  char *src = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nclasses: [hbar, vbar, diagonal, border]\n"
                      "layers:\n%strain: {batch: 32, seed: 7, lr: 0.01}\n"
                      "data:\n  train: {images: train-images.gz, labels: train-labels.gz}\n"
                      "  test: {images: test-images.gz, labels: test-labels.gz}\n", names_layers);
  spec_path = tmp_path("names.yaml"), ckpt_path = tmp_path("names.st");
  write_bytes(spec_path, src, strlen(src), false);
  free(src);
  train_quietly(spec_path, "6", ckpt_path);   /* a few steps: some samples still wrong */
  /* an RGB model: (3, 8, 8) samples, planar; one image also as PNG and PPM */
  uint8_t *rgbd = malloc(NTRAIN * 3 * SIDE * SIDE), *rlab = malloc(NTRAIN);
  synth(img, lab, NTEST, 2);
  for (int k = 0; k < 64; k++)
    for (int c3 = 0; c3 < 3; c3++) rgbd[(size_t)c3 * 64 + (size_t)k] = (uint8_t)(img[k] * (c3 + 1) / 3 + c3 * 20);
  uint32_t ri[4] = {1, 3, SIDE, SIDE}, rl[1] = {1};
  write_idx("rgb.idx", ri, 4, rgbd, 3 * 64, false);
  uint8_t inter[3 * 64];
  for (int k = 0; k < 64; k++)
    for (int c3 = 0; c3 < 3; c3++) inter[3 * k + c3] = rgbd[(size_t)c3 * 64 + (size_t)k];
  write_png("rgb_model.png", SIDE, SIDE, 2, 8, inter);
  write_pnm("rgb_model.ppm", SIDE, SIDE, 3, inter);
  memset(rlab, 0, NTRAIN);
  write_idx("rgb-train-images", (uint32_t[]){64, 3, SIDE, SIDE}, 4, rgbd, 64 * 3 * 64, false);
  (void)rl;
  write_idx("rgb-train-labels", (uint32_t[]){64}, 1, rlab, 64, false);
  src = xprintf("tesla: 1\nname: rgb\ninput: [3, 8, 8]\nclasses: 4\nlayers:\n"
                "  - conv: {filters: 4, kernel: 3}\n  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n"
                "train: {batch: 8, seed: 1}\n"
                "data:\n  train: {images: rgb-train-images, labels: rgb-train-labels}\n");
  rgb_spec = tmp_path("rgb.yaml"), rgb_ckpt = tmp_path("rgb.st");
  write_bytes(rgb_spec, src, strlen(src), false);
  free(src);
  train_quietly(rgb_spec, "2", rgb_ckpt);
  free(rgbd), free(rlab), free(img), free(lab);
}

static Suite *infer_suite(void) {
  Suite *s = suite_create("infer");
  TCase *tc = tcase_create("eval");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, eval_confusion_json);
  tcase_add_test(tc, eval_data_names_and_empty);
  suite_add_tcase(s, tc);
  tc = tcase_create("predict");
  tcase_set_timeout(tc, 240);
  tcase_add_test(tc, predict_images_match_idx);
  tcase_add_test(tc, predict_rgb_model);
  tcase_add_test(tc, predict_folder_and_stdin);
  tcase_add_test(tc, predict_top_k);
  tcase_add_test(tc, predict_bad_images);
  tcase_add_test(tc, weights_name_mismatch);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return suite_main(argc, argv, "test_infer", make_files, infer_suite); }
