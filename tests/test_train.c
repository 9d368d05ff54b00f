/* test_train.c: the training workflow around the steps (compiler/driver/train.c), through the
 * built teslac on the synthetic data set of net.h: the validation set (a seeded holdout that is
 * deterministic and disjoint from what is trained on, or its own files), early stopping at the
 * epoch it must stop at (and going on counting after a resume), the best checkpoint, outputs
 * checked before anything is compiled, the no-op resume, SIGINT mid-epoch then --resume giving
 * the uninterrupted run's bytes, a second SIGINT exiting at once, --save-every surviving a
 * kill -9, checkpoint metadata checked like any input, a resume taking the run's seed, lr and
 * validation split from its checkpoint, files that are not regular (FIFO inputs fail at once,
 * device outputs are refused, symlinks written through), one file in one role, stale
 * temporaries of dead writers removed, and every new flag fed something wrong. */
#include "net.h"

#include <dirent.h>
#include <signal.h>
#include <time.h>

/* the synthetic spec for `epochs`, with `train_extra` lines under train: and `data_extra` under data: */
static char *spec_with(const char *file, int epochs, const char *train_extra, const char *data_extra) {
  char *src = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n"
                      "  - dense: {units: 32}\n  - relu: {}\n  - dense: {units: 4}\n  - softmax: {}\n"
                      "train:\n  optimizer: adam\n  lr: 0.01\n  epochs: %d\n  batch: 32\n  seed: 7\n%s"
                      "data:\n  train: {images: train-images.gz, labels: train-labels.gz}\n"
                      "  test: {images: test-images.gz, labels: test-labels.gz}\n%s",
                      epochs, train_extra, data_extra);
  char *path = tmp_path(file);
  write_bytes(path, src, strlen(src), false);
  free(src);
  return path;
}

static int count_of(const char *text, const char *needle) {
  int n = 0;
  for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

/* ---- 1. the holdout itself (runtime/rt_idx.c) ----------------------------------------------- */

/* n samples whose two bytes are their index, labels index % 4 */
static TsDataset indexed(size_t n) {
  TsDataset d = {.count = n, .item_size = 2, .item_ndims = 1, .item_dims = {2}};
  d.x = ts_malloc(2 * n), d.y = ts_malloc(sizeof(int32_t) * n);
  for (size_t i = 0; i < n; i++) d.x[2 * i] = (uint8_t)(i & 255), d.x[2 * i + 1] = (uint8_t)(i >> 8), d.y[i] = (int32_t)(i % 4);
  return d;
}

static size_t index_of(const TsDataset *d, size_t k) { return (size_t)d->x[2 * k] | (size_t)d->x[2 * k + 1] << 8; }

START_TEST(holdout_split) {
  size_t n = 1000;
  uint8_t seen[1000];
  TsErr e;
  size_t first[100];
  for (int seed = 7; seed <= 8; seed++) {
    TsDataset d = indexed(n), v;
    ck_assert_int_eq(ts_dataset_holdout(&d, 0.1, (uint64_t)seed, &v, &e), 0);
    ck_assert_uint_eq(v.count, 100);   /* Keras' count: train keeps floor(1000 * 0.9) */
    ck_assert_uint_eq(d.count, 900);
    memset(seen, 0, sizeof seen);
    for (int part = 0; part < 2; part++) {   /* disjoint, together every sample, order kept */
      const TsDataset *p = part ? &v : &d;
      for (size_t k = 0; k < p->count; k++) {
        size_t i = index_of(p, k);
        ck_assert_uint_lt(i, n);
        ck_assert_msg(!seen[i], "sample %zu is in both parts", i);
        seen[i] = 1;
        ck_assert_int_eq(p->y[k], (int32_t)(i % 4));
        if (k) ck_assert_uint_gt(i, index_of(p, k - 1));
      }
    }
    for (size_t i = 0; i < n; i++) ck_assert_msg(seen[i], "sample %zu is in neither part", i);
    if (seed == 7)
      for (size_t k = 0; k < 100; k++) first[k] = index_of(&v, k);
    else {   /* another seed, another split */
      size_t same = 0;
      for (size_t k = 0; k < 100; k++) same += first[k] == index_of(&v, k);
      ck_assert_uint_lt(same, 100);
    }
    ts_dataset_free(&d), ts_dataset_free(&v);
  }
  /* the same seed, the same split */
  TsDataset a = indexed(n), b = indexed(n), va, vb;
  ck_assert_int_eq(ts_dataset_holdout(&a, 0.25, 3, &va, &e), 0);
  ck_assert_int_eq(ts_dataset_holdout(&b, 0.25, 3, &vb, &e), 0);
  ck_assert_uint_eq(va.count, 250);
  ck_assert_int_eq(memcmp(va.x, vb.x, 2 * va.count), 0);
  ck_assert_int_eq(memcmp(a.x, b.x, 2 * a.count), 0);
  ts_dataset_free(&a), ts_dataset_free(&b), ts_dataset_free(&va), ts_dataset_free(&vb);
  /* a part that would be empty is an error, and d is left whole */
  TsDataset one = indexed(1), h;
  ck_assert_int_eq(ts_dataset_holdout(&one, 0.5, 1, &h, &e), -1);
  ck_assert_msg(strstr(e.msg, "none to"), "%s", e.msg);
  ck_assert_uint_eq(one.count, 1);
  ts_dataset_free(&one);
}
END_TEST

/* ---- 2. the validation set in training -------------------------------------------------------- */

START_TEST(cli_validation) {
  char *spec = spec_with("val.yaml", 3, "", "  validation_split: 0.25\n");
  char *ck = tmp_path("val.st"), *log = tmp_path("val.jsonl"), *log2 = tmp_path("val2.jsonl");
  Cli a = CLI("train", spec, "--threads", "2", "-o", ck, "--log", log);
  cli_ok(&a);
  ck_assert_msg(strstr(a.out, "training synth: 768 samples (+256 validation), 24 steps per epoch"), "%s", a.out);
  ck_assert_int_eq(count_of(a.out, "val loss "), 3);
  ck_assert_int_eq(count_of(a.out, "test loss "), 1);   /* the test set after the last epoch only */
  ck_assert_msg(strstr(strstr(a.out, "epoch 3/3"), "test acc "), "%s", a.out);
  char *jl = slurp(log, NULL);
  ck_assert_int_eq(count_of(jl, "\"val_loss\": null"), 0);
  ck_assert_int_eq(count_of(jl, "\"train_accuracy\": null"), 0);
  ck_assert_int_eq(count_of(jl, "\"test_loss\": null"), 2);
  ck_assert_int_eq(count_of(jl, "nan"), 0);
  /* the same seed, the same split and the same numbers; the log is the same but for timings */
  Cli b = CLI("train", spec, "--threads", "2", "-o", ck, "--log", log2);
  cli_ok(&b);
  ck_assert_double_eq(parse_last(a.out, "val loss "), parse_last(b.out, "val loss "));
  /* --test-every-epoch; --validation-split from the command line; data.val as its own files */
  Cli d = CLI("train", spec, "--threads", "2", "-o", ck, "--test-every-epoch", "--validation-split", "0.5");
  cli_ok(&d);
  ck_assert_msg(strstr(d.out, "512 samples (+512 validation)"), "%s", d.out);
  ck_assert_int_eq(count_of(d.out, "test loss "), 3);
  char *spec2 = spec_with("val_files.yaml", 3, "", "  val: {images: test-images.gz, labels: test-labels.gz}\n");
  Cli e = CLI("train", spec2, "--threads", "2", "-o", ck, "--epochs", "1");
  cli_ok(&e);
  ck_assert_msg(strstr(e.out, "1024 samples (+256 validation)"), "%s", e.out);
  /* the validation set is the test files here: the same numbers at the last epoch */
  ck_assert_double_eq_tol(parse_last(e.out, "val loss "), parse_last(e.out, "test loss "), 1e-9);
  cli_free(&a), cli_free(&b), cli_free(&d), cli_free(&e);
  free(jl), free(spec), free(spec2), free(ck), free(log), free(log2);
}
END_TEST

/* ---- 3. early stopping and the best checkpoint ---------------------------------------------- */

START_TEST(cli_early_stopping) {
  char buf[64];
  /* nothing improves by 1000: the first epoch is the best, patience 2 stops after epoch 3 */
  char *spec = spec_with("es.yaml", 10, "  early_stopping: {monitor: train_loss, patience: 2, min_delta: 1000}\n", "");
  char *ck = tmp_path("es.st"), *ck2 = tmp_path("es2.st");
  Cli a = CLI("train", spec, "--threads", "2", "-o", ck);
  cli_ok(&a);
  ck_assert_msg(strstr(a.out, "epoch 3/10") && !strstr(a.out, "epoch 4/10"), "%s", a.out);
  ck_assert_msg(strstr(a.out, "early stopping: train_loss has not improved on "), "%s", a.out);
  ck_assert_msg(strstr(a.out, "(epoch 1) for 2 epochs (patience 2"), "%s", a.out);
  ck_assert_msg(strstr(strstr(a.out, "epoch 3/10"), "test acc "), "the test set after the stop: %s", a.out);
  ck_assert_str_eq(ckpt_meta(ck, "epoch", buf, sizeof buf), "3");
  ck_assert_str_eq(ckpt_meta(ck, "monitor_wait", buf, sizeof buf), "2");
  /* a resume goes on counting: one more epoch without improvement stops it again */
  Cli b = CLI("train", spec, "--threads", "2", "--resume", ck, "-o", ck2);
  cli_ok(&b);
  ck_assert_msg(strstr(b.out, "epoch 4/10") && !strstr(b.out, "epoch 5/10"), "%s", b.out);
  ck_assert_msg(strstr(b.out, "(epoch 1) for 3 epochs"), "%s", b.out);
  /* patience 0: the first epoch that does not improve */
  char *spec0 = spec_with("es0.yaml", 10, "  early_stopping: {monitor: train_loss, patience: 0, min_delta: 1000}\n", "");
  Cli c = CLI("train", spec0, "--threads", "2", "-o", ck);
  cli_ok(&c);
  ck_assert_msg(strstr(c.out, "epoch 2/10") && !strstr(c.out, "epoch 3/10"), "%s", c.out);
  /* val_accuracy on a validation split, which cannot rise by 2: stops after 1 + patience */
  char *specv = spec_with("esv.yaml", 10, "  early_stopping: {monitor: val_accuracy, patience: 1, min_delta: 2}\n",
                          "  validation_split: 0.2\n");
  Cli d = CLI("train", specv, "--threads", "2", "-o", ck);
  cli_ok(&d);
  ck_assert_msg(strstr(d.out, "epoch 2/10") && !strstr(d.out, "epoch 3/10"), "%s", d.out);
  ck_assert_msg(strstr(d.out, "early stopping: val_accuracy"), "%s", d.out);
  /* a monitor that keeps improving never stops the run (the synthetic set is learnable) */
  char *specl = spec_with("esl.yaml", 3, "  early_stopping: {monitor: train_loss, patience: 1}\n", "");
  Cli f = CLI("train", specl, "--threads", "2", "-o", ck);
  cli_ok(&f);
  ck_assert_msg(strstr(f.out, "epoch 3/3") && !strstr(f.out, "early stopping"), "%s", f.out);
  cli_free(&a), cli_free(&b), cli_free(&c), cli_free(&d), cli_free(&f);
  free(spec), free(spec0), free(specv), free(specl), free(ck), free(ck2);
}
END_TEST

START_TEST(cli_save_best) {
  char buf[64];
  /* train_loss that cannot improve by 1000: the best is epoch 1, the last epoch 3 */
  char *spec = spec_with("best.yaml", 3, "  monitor: train_loss\n  early_stopping: {monitor: train_loss, patience: 5, min_delta: 1000}\n", "");
  char *ck = tmp_path("run.safetensors"), *best = tmp_path("run.best.safetensors");
  Cli a = CLI("train", spec, "--threads", "2", "-o", ck, "--save-best");
  ck_assert_msg(a.status == 1 && strstr(a.err, "'monitor' is given twice"), "two monitors: exit %d: %s", a.status, a.err);
  free(spec);
  spec = spec_with("best.yaml", 3, "  early_stopping: {monitor: train_loss, patience: 5, min_delta: 1000}\n", "");
  Cli b = CLI("train", spec, "--threads", "2", "-o", ck, "--save-best");
  cli_ok(&b);
  ck_assert_int_eq(count_of(b.out, "best train_loss "), 1);
  ck_assert_msg(strstr(b.out, "best in "), "%s", b.out);
  ck_assert_str_eq(ckpt_meta(best, "epoch", buf, sizeof buf), "1");
  ck_assert_str_eq(ckpt_meta(ck, "epoch", buf, sizeof buf), "3");
  /* the best file is a whole checkpoint: eval reads it */
  Cli c = CLI("eval", spec, "--weights", best, "--threads", "2");
  cli_ok(&c);
  /* train.save_best with the default monitor, val_loss, on a validation split; an improving
   * val_loss saves at least at epoch 1 */
  char *spec2 = spec_with("best2.yaml", 3, "  save_best: true\n", "  validation_split: 0.25\n");
  char *ck2 = tmp_path("run2.st"), *best2 = tmp_path("run2.st.best.safetensors");
  Cli d = CLI("train", spec2, "--threads", "2", "-o", ck2);
  cli_ok(&d);
  ck_assert_msg(strstr(d.out, "best val_loss "), "%s", d.out);
  ck_assert_str_ne(ckpt_meta(best2, "epoch", buf, sizeof buf), "");
  /* --save-best without a validation set watches val_loss: an error before compiling */
  char *spec3 = spec_with("best3.yaml", 3, "", "");
  Cli e = CLI("train", spec3, "--threads", "2", "-o", ck2, "--save-best");
  cli_fails(&e, 1, "--save-best without validation", (const char *const[]){"no validation set", "--validation-split", NULL});
  cli_free(&a), cli_free(&b), cli_free(&c), cli_free(&d), cli_free(&e);
  free(spec), free(spec2), free(spec3), free(ck), free(best), free(ck2), free(best2);
}
END_TEST

/* ---- 4. outputs checked first, the no-op resume ----------------------------------------------- */

START_TEST(cli_bad_outputs) {
  char *spec = spec_with("out.yaml", 3, "", "");
  char *ck = tmp_path("out.st");
  struct { const char *flag, *path, *needle; } cases[] = {
      {"-o", "/nonexistent/x.safetensors", "cannot write the checkpoint '/nonexistent/x.safetensors': its folder does not exist"},
      {"-o", tmpdir, "it exists and is not a regular file"},
      {"--log", "/nonexistent/l.jsonl", "cannot write the log"},
      {"-o", "", "path is empty"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double t0 = ts_now();
    Cli r = !strcmp(cases[i].flag, "-o") ? CLI("train", spec, "--threads", "2", "-o", cases[i].path)
                                         : CLI("train", spec, "--threads", "2", "-o", ck, cases[i].flag, cases[i].path);
    cli_fails(&r, 1, cases[i].path, (const char *const[]){cases[i].needle, NULL});
    ck_assert_msg(!strstr(r.out, "compiled") && !strstr(r.out, "epoch"), "%s: it went on: %s", cases[i].path, r.out);
    ck_assert_msg(ts_now() - t0 < 5, "the check came late");
    cli_free(&r);
  }
  /* the probe file is gone */
  DIR *dir = opendir(tmpdir);
  for (struct dirent *de; (de = readdir(dir));) ck_assert_msg(strncmp(de->d_name, ".teslac-probe", 13), "%s left", de->d_name);
  closedir(dir);
  free(spec), free(ck);
}
END_TEST

START_TEST(cli_noop_resume) {
  char buf[64];
  char *spec = spec_with("noop.yaml", 3, "", "");
  char *a = tmp_path("noop_a.st"), *b = tmp_path("noop_b.st"), *c = tmp_path("noop_c.st"), *d = tmp_path("noop_d.st");
  Cli r1 = CLI("train", spec, "--threads", "2", "--epochs", "2", "-o", a);
  cli_ok(&r1);
  Cli r2 = CLI("train", spec, "--threads", "2", "--epochs", "2", "--resume", a, "-o", b);
  cli_ok(&r2);
  ck_assert_msg(strstr(r2.out, "no epoch to train"), "%s", r2.out);
  ck_assert_int_eq(ckpt_diff(a, b, true), 0);   /* -o written, as it was */
  /* --steps ending exactly at an epoch's end is at the next epoch: the resume trains epoch 2, no empty epoch */
  Cli r3 = CLI("train", spec, "--threads", "2", "--steps", "32", "-o", c);
  cli_ok(&r3);
  ck_assert_str_eq(ckpt_meta(c, "epoch", buf, sizeof buf), "1");
  Cli r4 = CLI("train", spec, "--threads", "2", "--epochs", "2", "--resume", c, "-o", d);
  cli_ok(&r4);
  ck_assert_msg(!strstr(r4.out, "epoch 1/2") && strstr(r4.out, "epoch 2/2") && !strstr(r4.out, "nan"), "%s", r4.out);
  ck_assert_int_eq(ckpt_diff(a, d, true), 0);
  cli_free(&r1), cli_free(&r2), cli_free(&r3), cli_free(&r4);
  free(spec), free(a), free(b), free(c), free(d);
}
END_TEST

/* ---- 5. signals ----------------------------------------------------------------------------- */

/* teslac started in the background, stdout and stderr into files */
static pid_t spawn(const char *const *args, const char *outp) {
  const char *argv[32];
  int k = 0;
  argv[k++] = teslac_bin;
  for (; *args && k < 31; args++) argv[k++] = *args;
  argv[k] = NULL;
  fflush(stdout);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1), dup2(o, 2);
    execv(teslac_bin, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

/* waits up to 60 s for `path` to hold `needle`; false after that */
static bool wait_for(const char *path, const char *needle) {
  for (int i = 0; i < 3000; i++) {
    char *s = slurp(path, NULL);
    bool ok = strstr(s, needle) != NULL;
    free(s);
    if (ok) return true;
    usleep(20000);
  }
  return false;
}

static int reap(pid_t pid) {
  int st;
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

START_TEST(cli_sigint_resume) {
  char buf[64];
  char *spec = spec_with("sig.yaml", 100000, "", "");
  char *ck = tmp_path("sig.st"), *log = tmp_path("sig.jsonl"), *outp = tmp_path("sig.out");
  char *resumed = tmp_path("sig_resumed.st"), *straight = tmp_path("sig_straight.st");
  /* interrupted somewhere after the first epoch */
  pid_t pid = spawn((const char *const[]){"train", spec, "--threads", "2", "-o", ck, "--log", log, NULL}, outp);
  ck_assert_msg(wait_for(log, "\"epoch\": 1,"), "no first epoch");
  kill(pid, SIGINT);
  int rc = reap(pid);
  char *out = slurp(outp, NULL);
  ck_assert_msg(rc == 130, "exit %d: %s", rc, out);
  ck_assert_msg(strstr(out, "interrupted (SIGINT) at step "), "%s", out);
  ck_assert_msg(strstr(out, "resume with:\n  teslac train "), "%s", out);
  char *want = xprintf("--resume %s\n", ck);
  ck_assert_msg(strstr(out, want), "%s", out);
  free(want);
  long long at = atoll(ckpt_meta(ck, "step", buf, sizeof buf));
  printf("  SIGINT: checkpoint at step %lld (epoch %lld, step %lld of 32)\n", at, at / 32 + 1, at % 32);
  ck_assert_int_gt(at, 32);
  /* resumed to 40 steps past the interruption = the same steps straight */
  char *target = xprintf("%lld", at + 40);
  Cli a = CLI("train", spec, "--threads", "2", "--resume", ck, "--steps", target, "-o", resumed);
  cli_ok(&a);
  Cli b = CLI("train", spec, "--threads", "2", "--steps", target, "-o", straight);
  cli_ok(&b);
  ck_assert_int_eq(ckpt_diff(resumed, straight, true), 0);
  cli_free(&a), cli_free(&b);
  free(out), free(target), free(spec), free(ck), free(log), free(outp), free(resumed), free(straight);
}
END_TEST

/* SIGTERM does the same; a second SIGINT exits at once and the checkpoint stays loadable */
START_TEST(cli_signals_more) {
  char *spec = spec_with("sig2.yaml", 100000, "", "");
  char *ck = tmp_path("sig2.st"), *log = tmp_path("sig2.jsonl"), *outp = tmp_path("sig2.out");
  pid_t pid = spawn((const char *const[]){"train", spec, "--threads", "2", "-o", ck, "--log", log, NULL}, outp);
  ck_assert_msg(wait_for(log, "\"epoch\": 1,"), "no first epoch");
  kill(pid, SIGTERM);
  int rc = reap(pid);
  char *out = slurp(outp, NULL);
  ck_assert_msg(rc == 143 && strstr(out, "interrupted (SIGTERM)"), "exit %d: %s", rc, out);
  free(out);
  unlink(log);
  pid = spawn((const char *const[]){"train", spec, "--threads", "2", "-o", ck, "--log", log, NULL}, outp);
  ck_assert_msg(wait_for(log, "\"epoch\": 2,"), "no second epoch");
  kill(pid, SIGINT), kill(pid, SIGINT);
  rc = reap(pid);
  ck_assert_int_eq(rc, 130);
  Cli e = CLI("eval", spec, "--weights", ck, "--threads", "2");   /* whichever checkpoint was last, it is whole */
  cli_ok(&e);
  cli_free(&e);
  free(spec), free(ck), free(log), free(outp);
}
END_TEST

/* --save-every: a kill -9 leaves a checkpoint at a multiple of N (or an epoch's end) that
 * resumes to the uninterrupted run's bytes */
START_TEST(cli_save_every) {
  char buf[64];
  char *spec = spec_with("every.yaml", 100000, "", "");
  char *ck = tmp_path("every.st"), *outp = tmp_path("every.out"), *a = tmp_path("every_a.st"), *b = tmp_path("every_b.st");
  pid_t pid = spawn((const char *const[]){"train", spec, "--threads", "2", "-o", ck, "--save-every", "5", NULL}, outp);
  struct stat st;
  for (int i = 0; i < 3000 && stat(ck, &st) != 0; i++) usleep(20000);
  usleep(300000);
  kill(pid, SIGKILL);
  reap(pid);
  long long at = atoll(ckpt_meta(ck, "step", buf, sizeof buf));
  printf("  --save-every 5, kill -9: checkpoint at step %lld\n", at);
  ck_assert_msg(at > 0 && (at % 5 == 0 || at % 32 == 0), "step %lld", at);
  char *target = xprintf("%lld", at + 13);
  Cli r = CLI("train", spec, "--threads", "2", "--resume", ck, "--steps", target, "-o", a);
  cli_ok(&r);
  Cli s = CLI("train", spec, "--threads", "2", "--steps", target, "-o", b, "--save-every", "3");
  cli_ok(&s);
  ck_assert_int_eq(ckpt_diff(a, b, true), 0);
  cli_free(&r), cli_free(&s);
  free(target), free(spec), free(ck), free(outp), free(a), free(b);
}
END_TEST

/* ---- 6. what a checkpoint says is input too ------------------------------------------------------ */

/* a copy of checkpoint `src` at `dst` whose metadata value of `key` is `value` (the header
 * rewritten with its new length; the tensors' offsets are relative to its end) */
static void patch_meta(const char *src, const char *dst, const char *key, const char *value) {
  size_t len;
  char *b = slurp(src, &len);
  uint64_t n;
  memcpy(&n, b, 8);
  char *hdr = strndup(b + 8, (size_t)n), *pat = xprintf("\"%s\":\"", key), *at = strstr(hdr, pat);
  ck_assert_msg(at, "%s has no metadata %s", src, key);
  char *vend = strchr(at + strlen(pat), '"');
  char *nh = xprintf("%.*s%s%s", (int)(at + strlen(pat) - hdr), hdr, value, vend);
  uint64_t nn = strlen(nh);
  FILE *f = fopen(dst, "wb");
  NEED(f);
  NEED(fwrite(&nn, 8, 1, f) == 1 && fwrite(nh, 1, nn, f) == nn && fwrite(b + 8 + n, 1, len - 8 - n, f) == len - 8 - n);
  NEED(fclose(f) == 0);
  free(b), free(hdr), free(pat), free(nh);
}

START_TEST(cli_bad_metadata) {
  char *spec = spec_with("meta.yaml", 3, "", "");
  char *ck = tmp_path("meta.st"), *bad = tmp_path("meta_bad.st"), *o = tmp_path("meta_out.st");
  Cli r = CLI("train", spec, "--threads", "2", "--steps", "40", "-o", ck);
  cli_ok(&r);
  cli_free(&r);
  struct { const char *key, *value, *needle; } cases[] = {
      {"step", "-5", "checkpoint metadata 'step' is \"-5\"; it must be an integer from 0 to 2147483647"},
      {"step", "abc", "'step' is \"abc\""},
      {"step", " 5", "'step' is \" 5\""},
      {"step", "", "'step' is \"\""},
      {"epoch", "-1000000", "'epoch' is \"-1000000\""},
      {"epoch", "3", "says epoch 3 at step 40, but an epoch here is 32 steps"},
      {"epoch", "0", "says epoch 0 at step 40"},
      {"batch", "0", "'batch' is \"0\""},
      {"batch", "64", "was trained at batch 64"},
      {"seed", "x", "'seed' is \"x\""},
      {"lr", "nan", "'lr' is \"nan\""},
      {"lr", "-1", "'lr' is \"-1\""},
      {"validation_split", "1", "'validation_split' is \"1\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    patch_meta(ck, bad, cases[i].key, cases[i].value);
    Cli c = CLI("train", spec, "--threads", "2", "--resume", bad, "-o", o);
    cli_fails(&c, 1, cases[i].key, (const char *const[]){cases[i].needle, NULL});
    ck_assert_msg(!strstr(c.out, "epoch 1/"), "%s=%s trained: %s", cases[i].key, cases[i].value, c.out);
    if (!strcmp(cases[i].value, "64"))   /* another batch is refused before the compile */
      ck_assert_msg(!strstr(c.out, "compiled "), "batch=64 was refused only after compiling: %s", c.out);
    cli_free(&c);
  }
  free(spec), free(ck), free(bad), free(o);
}
END_TEST

/* a run trained with --seed and --lr resumes with them when the flags are not repeated */
START_TEST(cli_resume_settings) {
  char *spec = spec_with("settings.yaml", 3, "", "");
  char *full = tmp_path("set_full.st"), *part = tmp_path("set_part.st"), *res = tmp_path("set_res.st");
  Cli a = CLI("train", spec, "--threads", "2", "--seed", "5", "--lr", "0.02", "--validation-split", "0.25", "--steps", "40", "-o", full);
  cli_ok(&a);
  Cli b = CLI("train", spec, "--threads", "2", "--seed", "5", "--lr", "0.02", "--validation-split", "0.25", "--steps", "15", "-o", part);
  cli_ok(&b);
  Cli c = CLI("train", spec, "--threads", "2", "--resume", part, "--steps", "40", "-o", res);
  cli_ok(&c);
  ck_assert_msg(strstr(c.out, "resuming with the checkpoint's seed 5 (the spec says 7)"), "%s", c.out);
  ck_assert_msg(strstr(c.out, "resuming with the checkpoint's lr 0.02"), "%s", c.out);
  ck_assert_msg(strstr(c.out, "resuming with the checkpoint's validation split 0.25"), "%s", c.out);
  ck_assert_int_eq(ckpt_diff(full, res, true), 0);
  /* a flag that parts from the checkpoint is a warning */
  Cli d = CLI("train", spec, "--threads", "2", "--resume", part, "--steps", "40", "--seed", "6", "-o", res);
  cli_ok(&d);
  ck_assert_msg(strstr(d.err, "warning: ") && strstr(d.err, "was trained with seed 5; --seed 6"), "%s", d.err);
  cli_free(&a), cli_free(&b), cli_free(&c), cli_free(&d);
  free(spec), free(full), free(part), free(res);
}
END_TEST

/* a tensor of the wrong dtype is reported with its file's name */
START_TEST(cli_weights_dtype) {
  char *spec = spec_with("dtype.yaml", 3, "", "");
  char *w = tmp_path("dtype.st");
  /* every tensor the spec has (names and shapes match: that is checked first), one of them I32 */
  const char hdr[] = "{\"0.weight\":{\"dtype\":\"I32\",\"shape\":[32,64],\"data_offsets\":[0,8192]},"
                     "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[32],\"data_offsets\":[8192,8320]},"
                     "\"2.weight\":{\"dtype\":\"F32\",\"shape\":[4,32],\"data_offsets\":[8320,8832]},"
                     "\"2.bias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8832,8848]}}";
  uint64_t n = sizeof hdr - 1;
  FILE *f = fopen(w, "wb");
  NEED(f && fwrite(&n, 8, 1, f) == 1 && fwrite(hdr, 1, n, f) == n);
  for (int i = 0; i < 8848; i++) fputc(0, f);
  NEED(fclose(f) == 0);
  Cli r = CLI("eval", spec, "--weights", w);
  char *needle = xprintf("%s: tensor '0.weight': dtype I32 is not a float type", w);
  cli_fails(&r, 1, "I32 weight", (const char *const[]){needle, NULL});
  cli_free(&r);
  free(spec), free(w), free(needle);
}
END_TEST

/* ---- 7. files: kinds, roles, temporaries ---------------------------------------------------- */

START_TEST(cli_file_kinds) {
  char *spec = spec_with("kinds.yaml", 3, "", "");
  char *ck = tmp_path("kinds.st"), *fifo = tmp_path("kinds.fifo");
  Cli r = CLI("train", spec, "--threads", "2", "--steps", "3", "-o", ck);
  cli_ok(&r);
  cli_free(&r);
  ck_assert_int_eq(mkfifo(fifo, 0644), 0);
  char *hdr = tmp_path("k.h");
  /* a FIFO as any input fails at once, never blocks in open() */
  char *fspec = spec_with("kinds_fifo_data.yaml", 3, "", "");
  char *src = slurp(fspec, NULL), *at = strstr(src, "train-images.gz");
  char *patched = xprintf("%.*s%s%s", (int)(at - src), src, "kinds.fifo", at + strlen("train-images.gz"));
  write_bytes(fspec, patched, strlen(patched), false);
  struct { const char *what; Cli c; const char *needle; } cases[] = {
      {"spec", CLI("check", fifo), "cannot read the spec: it is a FIFO"},
      {"--init", CLI("train", spec, "--init", fifo, "-o", ck), "is a FIFO, not a safetensors file"},
      {"--resume", CLI("train", spec, "--resume", fifo, "-o", ck), "is a FIFO, not a safetensors file"},
      {"--weights", CLI("eval", spec, "--weights", fifo), "is a FIFO, not a safetensors file"},
      {"data", CLI("train", fspec, "-o", ck), "is a FIFO, not an IDX file"},
      {"--input", CLI("predict", spec, "--weights", ck, "--input", fifo), "is a FIFO, not an image or IDX file"},
      /* outputs: only regular files are replaced */
      {"-o /dev/null", CLI("train", spec, "-o", "/dev/null"), "it exists and is not a regular file"},
      {"build -o /dev/null", CLI("build", spec, "--weights", ck, "-o", "/dev/null", "--header", hdr),
       "exists and is not a regular file"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_msg(cases[i].c.status == 1 && strstr(cases[i].c.err, cases[i].needle), "%s: exit %d\n%s", cases[i].what,
                  cases[i].c.status, cases[i].c.err);
    cli_free(&cases[i].c);
  }
  struct stat st;
  ck_assert_int_eq(stat("/dev/null", &st), 0);
  ck_assert_msg(S_ISCHR(st.st_mode), "/dev/null was replaced");
  /* a symlink is written through to its target, and stays a link */
  char *target = tmp_path("kinds_target.st"), *link = tmp_path("kinds_link.st");
  Cli a = CLI("train", spec, "--threads", "2", "--steps", "3", "-o", target);
  cli_ok(&a);
  ck_assert_int_eq(symlink(target, link), 0);
  Cli b = CLI("train", spec, "--threads", "2", "--steps", "5", "-o", link);
  cli_ok(&b);
  ck_assert_int_eq(lstat(link, &st), 0);
  ck_assert_msg(S_ISLNK(st.st_mode), "the link was replaced by a file");
  char buf[32];
  ck_assert_str_eq(ckpt_meta(target, "step", buf, sizeof buf), "5");
  cli_free(&a), cli_free(&b);
  free(src), free(patched), free(fspec), free(spec), free(ck), free(fifo), free(target), free(link), free(hdr);
}
END_TEST

START_TEST(cli_file_roles) {
  char *spec = spec_with("roles.yaml", 3, "", "");
  char *ck = tmp_path("roles.st"), *link = tmp_path("roles_link.st"), *ck2 = tmp_path("roles2.st");
  Cli r = CLI("train", spec, "--threads", "2", "--steps", "3", "-o", ck);
  cli_ok(&r);
  cli_free(&r);
  ck_assert_int_eq(symlink(ck, link), 0);
  char *imgs = tmp_path("train-images.gz");
  size_t len0;
  free(slurp(ck, &len0));
  struct { const char *what; Cli c; const char *needle; } cases[] = {
      {"--log = --init", CLI("train", spec, "--init", ck, "--log", ck, "-o", ck2), "the log '"},
      {"--log = --resume (a link)", CLI("train", spec, "--resume", ck, "--log", link, "-o", ck2), "is the --resume checkpoint"},
      {"--log = spec", CLI("train", spec, "--log", spec, "-o", ck2), "is the spec"},
      {"-o = --init", CLI("train", spec, "--init", ck, "-o", link), "the checkpoint '"},
      {"-o = --log", CLI("train", spec, "-o", ck2, "--log", ck2), "the checkpoint and the log are the same file"},
      {"-o = data", CLI("train", spec, "-o", imgs), "is the training images"},
      {"build -o = --weights", CLI("build", spec, "--weights", ck, "-o", link), "is the --weights checkpoint"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_msg(cases[i].c.status == 1 && strstr(cases[i].c.err, cases[i].needle), "%s: exit %d\n%s", cases[i].what,
                  cases[i].c.status, cases[i].c.err);
    ck_assert_msg(!strstr(cases[i].c.out, "compiled"), "%s went on", cases[i].what);
    cli_free(&cases[i].c);
  }
  size_t len1;
  free(slurp(ck, &len1));
  ck_assert_uint_eq(len0, len1);   /* the input is whole */
  /* the one exception: -o over --resume continues a run in place */
  Cli ok = CLI("train", spec, "--threads", "2", "--resume", ck, "--steps", "6", "-o", ck);
  cli_ok(&ok);
  cli_free(&ok);
  free(spec), free(ck), free(link), free(ck2), free(imgs);
}
END_TEST

/* temporaries left by a writer that died are removed by the next write of that file; one whose
 * writer lives is not */
START_TEST(cli_stale_temporaries) {
  char *spec = spec_with("stale.yaml", 3, "", "");
  char *ck = tmp_path("stale.st");
  pid_t dead = 4194000;   /* above the usual pid_max of 32768 ... or checked below */
  while (kill(dead, 0) == 0 || errno != ESRCH) dead--;
  char *gone = xprintf("%s.tmp-%d-abcdef", ck, (int)dead), *live = xprintf("%s.tmp-%d-ghijkl", ck, (int)getpid());
  char *old = xprintf("%s.tmp-qwerty", ck);   /* an older teslac's: no pid, left alone */
  write_bytes(gone, "x", 1, false), write_bytes(live, "y", 1, false), write_bytes(old, "z", 1, false);
  Cli r = CLI("train", spec, "--threads", "2", "--steps", "3", "-o", ck);
  cli_ok(&r);
  cli_free(&r);
  ck_assert_msg(access(gone, F_OK) != 0, "%s is still there", gone);
  ck_assert_msg(access(live, F_OK) == 0, "%s (a live writer's) was removed", live);
  ck_assert_msg(access(old, F_OK) == 0, "%s was removed", old);
  unlink(live), unlink(old);
  free(spec), free(ck), free(gone), free(live), free(old);
}
END_TEST

/* a documented limit holds in every command: a 64-character name trains and builds, 65 is
 * refused by check and by build --name */
START_TEST(cli_name_limit) {
  char name[70];
  memset(name, 'a', 64), name[64] = 0;
  char *src = xprintf("tesla: 1\nname: %s\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n  - dense: {units: 4}\n"
                      "train: {batch: 32}\ndata:\n  train: {images: train-images.gz, labels: train-labels.gz}\n", name);
  char *spec = tmp_path("name64.yaml"), *ck = tmp_path("name64.st"), *obj = tmp_path("name64.o");
  write_bytes(spec, src, strlen(src), false);
  Cli a = CLI("train", spec, "--threads", "2", "--steps", "2", "-o", ck);
  cli_ok(&a);
  Cli b = CLI("build", spec, "--weights", ck, "-o", obj);
  cli_ok(&b);
  name[64] = 'a', name[65] = 0;
  Cli c = CLI("build", spec, "--weights", ck, "-o", obj, "--name", name);
  cli_fails(&c, 1, "--name of 65", (const char *const[]){"is 65 characters long; give --name PREFIX of 1 to 64", NULL});
  cli_free(&a), cli_free(&b), cli_free(&c);
  free(src), free(spec), free(ck), free(obj);
}
END_TEST

/* a write error on the log is an error: files capped at 4 KiB (SIGXFSZ ignored, so write()
 * says EFBIG), a checkpoint that fits and a log that outgrows the cap */
START_TEST(cli_log_write_error) {
  char *src = xprintf("tesla: 1\nname: tiny\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n  - dense: {units: 4}\n"
                      "train: {optimizer: sgd, epochs: 60, batch: 32}\ndata:\n  train: {images: train-images.gz, labels: train-labels.gz}\n");
  char *spec = tmp_path("logfull.yaml"), *ck = tmp_path("logfull.st"), *log = tmp_path("logfull.jsonl"), *err = tmp_path("logfull.err");
  write_bytes(spec, src, strlen(src), false);
  char *cmd = xprintf("trap '' XFSZ; ulimit -f 4; exec '%s' train '%s' --threads 2 -o '%s' --log '%s' >/dev/null 2>'%s'", teslac_bin,
                      spec, ck, log, err);
  int st = system(cmd);
  char *e = slurp(err, NULL);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1 && strstr(e, "writing the log") && strstr(e, "File too large"),
                "status %d: %s", st, e);
  free(src), free(spec), free(ck), free(log), free(err), free(cmd), free(e);
}
END_TEST

/* ---- 8. numbers ------------------------------------------------------------------------------ */

/* a diverging run stops with a message and exit 1, keeping the last good checkpoint;
 * --allow-nonfinite trains on; batchnorm with one value per channel is refused */
START_TEST(cli_divergence) {
  char *src = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n  - dense: {units: 32}\n"
                      "  - dense: {units: 4}\ntrain: {optimizer: sgd, lr: 1000000, epochs: 50, batch: 32, seed: 7}\n"
                      "data:\n  train: {images: train-images.gz, labels: train-labels.gz}\n");
  char *spec = tmp_path("diverge.yaml"), *ck = tmp_path("diverge.st"), *log = tmp_path("diverge.jsonl");
  write_bytes(spec, src, strlen(src), false);
  Cli a = CLI("train", spec, "--threads", "2", "-o", ck, "--log", log);
  ck_assert_msg(a.status == 1 && strstr(a.err, "training diverged; try a lower --lr"), "exit %d\n%.2000s\n%.2000s", a.status,
                a.out, a.err);
  char *jl = slurp(log, NULL);
  ck_assert_msg(!strstr(jl, "nan") && !strstr(jl, "inf"), "%s", jl);
  free(jl);
  Cli b = CLI("train", spec, "--threads", "2", "-o", ck, "--epochs", "2", "--allow-nonfinite");
  cli_ok(&b);
  ck_assert_msg(!strstr(b.out, "-nan"), "%s", b.out);
  /* its weights: eval says so (exit 1), predict warns and its JSON has null, never nan */
  char *tspec = xprintf("%s.test.yaml", spec), *tsrc = xprintf("%s  test: {images: test-images.gz, labels: test-labels.gz}\n", src);
  write_bytes(tspec, tsrc, strlen(tsrc), false);
  Cli ev = CLI("eval", tspec, "--weights", ck);
  cli_fails(&ev, 1, "eval of NaN weights", (const char *const[]){"holds non-finite values", NULL});
  Cli pr = CLI("predict", tspec, "--weights", ck, "--json");
  cli_ok(&pr);
  ck_assert_msg(strstr(pr.err, "warning: ") && strstr(pr.err, "holds non-finite values"), "%s", pr.err);
  ck_assert_msg(!strstr(pr.out, "nan") && strstr(pr.out, "null"), "%.500s", pr.out);
  cli_free(&ev), cli_free(&pr);
  free(tspec), free(tsrc);
  char *bn = xprintf("tesla: 1\nname: synth\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n  - dense: {units: 8}\n  - batchnorm: {}\n"
                     "  - dense: {units: 4}\ntrain: {batch: 1}\ndata:\n  train: {images: train-images.gz, labels: train-labels.gz}\n");
  char *bnspec = tmp_path("bn1.yaml");
  write_bytes(bnspec, bn, strlen(bn), false);
  Cli c = CLI("train", bnspec, "--threads", "2", "-o", ck);
  cli_fails(&c, 1, "batchnorm at batch 1", (const char *const[]){"1 value per channel in training at batch 1", NULL});
  Cli d = CLI("train", bnspec, "--threads", "2", "-o", ck, "--batch", "2", "--steps", "3");
  cli_ok(&d);
  cli_free(&a), cli_free(&b), cli_free(&c), cli_free(&d);
  free(src), free(spec), free(ck), free(log), free(bn), free(bnspec);
}
END_TEST

/* ---- 9. flags fed something wrong ------------------------------------------------------------ */

START_TEST(cli_bad_train_flags) {
  char *spec = spec_with("flags.yaml", 3, "", "");
  struct { const char *flag, *value, *needle; } cases[] = {
      {"--save-every", "0", "--save-every must be an integer"},
      {"--save-every", "2.5", "--save-every must be an integer"},
      {"--validation-split", "1", "--validation-split must be a number from 0 to 0.99"},
      {"--validation-split", "-0.1", "--validation-split must be a number"},
      {"--validation-split", "half", "--validation-split must be a number"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    Cli r = CLI("train", spec, cases[i].flag, cases[i].value);
    cli_fails(&r, 2, cases[i].flag, (const char *const[]){cases[i].needle, NULL});
    cli_free(&r);
  }
  Cli r = CLI("train", spec, "--save-every");
  cli_fails(&r, 2, "--save-every", (const char *const[]){"--save-every needs a value", NULL});
  cli_free(&r);
  /* a split that leaves less than a batch to train on */
  Cli t = CLI("train", spec, "--validation-split", "0.99");
  cli_fails(&t, 1, "big split", (const char *const[]){"10 samples after the validation split, fewer than one batch of 32", NULL});
  cli_free(&t);
  free(spec);
}
END_TEST

/* one reader for numeric options: decimal only, integer ranges printed as integers; an empty
 * SPEC argument; "no test data" pointing at the data: key */
START_TEST(cli_option_values) {
  char *spec = spec_with("values.yaml", 3, "", "");
  const char *bad_batch[] = {"1e3", "0x1p-3", " 5", "5 ", "+5", "", "1e9"};
  for (size_t i = 0; i < sizeof bad_batch / sizeof bad_batch[0]; i++) {
    Cli r = CLI("train", spec, "--batch", bad_batch[i]);
    cli_fails(&r, 2, bad_batch[i], (const char *const[]){"--batch must be an integer from 1 to 1048576, got '", NULL});
    cli_free(&r);
  }
  Cli p = CLI("plan", spec, "--batch", "1e9");
  cli_fails(&p, 2, "plan --batch 1e9", (const char *const[]){"--batch must be an integer from 1 to 1048576, got '1e9'", NULL});
  const char *bad_lr[] = {"0x1p-3", "inf", "nan", " 0.1", "1e-13", "0.1x"};
  for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) {
    Cli r = CLI("train", spec, "--lr", bad_lr[i]);
    cli_fails(&r, 2, bad_lr[i], (const char *const[]){"--lr must be a number from 1e-12 to 1e+06, got '", NULL});
    cli_free(&r);
  }
  char *ck = tmp_path("values.st");
  Cli ok = CLI("train", spec, "--threads", "2", "--lr", ".5e-2", "--batch", "16", "--steps", "2", "-o", ck);
  cli_ok(&ok);
  Cli w = CLI("train", spec, "--threads", "300", "--steps", "1", "-o", ck);
  cli_ok(&w);
  ck_assert_msg(strstr(w.err, "warning: --threads 300 is more than the "), "%s", w.err);
  cli_free(&w);
  Cli e = CLI("check", "");
  cli_fails(&e, 2, "check ''", (const char *const[]){"an empty argument where SPEC was expected", NULL});
  char *nt = spec_with("values_notest.yaml", 3, "", "");
  char *src = slurp(nt, NULL);
  *strstr(src, "  test:") = 0;   /* no data.test */
  write_bytes(nt, src, strlen(src), false);
  Cli n = CLI("eval", nt, "--weights", ck);
  ck_assert_msg(n.status == 1 && strstr(n.err, ":16:1: error: the spec has no test data"), "%s", n.err);
  cli_free(&p), cli_free(&ok), cli_free(&e), cli_free(&n);
  free(spec), free(ck), free(nt), free(src);
}
END_TEST

static Suite *train_suite(void) {
  Suite *s = suite_create("train");
  TCase *tc = tcase_create("holdout");
  tcase_add_test(tc, holdout_split);
  suite_add_tcase(s, tc);
  tc = tcase_create("cli");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, cli_validation);
  tcase_add_test(tc, cli_early_stopping);
  tcase_add_test(tc, cli_save_best);
  tcase_add_test(tc, cli_bad_outputs);
  tcase_add_test(tc, cli_noop_resume);
  tcase_add_test(tc, cli_sigint_resume);
  tcase_add_test(tc, cli_signals_more);
  tcase_add_test(tc, cli_save_every);
  tcase_add_test(tc, cli_bad_train_flags);
  tcase_add_test(tc, cli_bad_metadata);
  tcase_add_test(tc, cli_resume_settings);
  tcase_add_test(tc, cli_weights_dtype);
  tcase_add_test(tc, cli_file_kinds);
  tcase_add_test(tc, cli_file_roles);
  tcase_add_test(tc, cli_stale_temporaries);
  tcase_add_test(tc, cli_name_limit);
  tcase_add_test(tc, cli_divergence);
  tcase_add_test(tc, cli_log_write_error);
  tcase_add_test(tc, cli_option_values);
  suite_add_tcase(s, tc);
  return s;
}

int main(int argc, char **argv) { return suite_main(argc, argv, "test_train", synth_dataset, train_suite); }
