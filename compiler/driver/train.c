/* train.c: `teslac train`, where compiled code meets data: it checks and plans the spec, builds
 * the model (model.c), initializes it as PyTorch does or from --init / --resume, and runs the
 * generated <name>_train_step over shuffled batches of the spec's IDX data. After every epoch
 * it evaluates the validation set with <name>_infer (data.val, or data.validation_split: a
 * held-out part of train chosen by the seed), watches the monitor for early stopping and
 * --save-best, and writes a checkpoint; the test set is evaluated after the last epoch (every
 * epoch with --test-every-epoch). Every output path is checked before anything is compiled.
 * SIGINT/SIGTERM finish the step, checkpoint there, print the command that resumes, and exit
 * 128 + the signal; a second signal exits at once (the last checkpoint is whole: writes are
 * atomic).
 *
 * Batches: training drops a last partial batch (DataLoader(drop_last=True)), since batch
 * statistics are compiled for the batch size.
 *
 * Under mpirun (dist.c) each of K ranks compiles the model for B / K rows and takes rows
 * [r B/K, (r+1) B/K) of every global batch of the one permutation all ranks draw; rank 0 reads
 * the starting weights and broadcasts them, and alone prints, evaluates and checkpoints. */
#include "cmd.h"
#include "dist.h"
#include "cg.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static double lr_at_epoch(const TrainCfg *t, double lr0, int64_t epoch) {
  switch (t->sched) {
  case SCHED_STEP: return lr0 * pow(t->gamma, (double)(epoch / t->step_size));
  case SCHED_COSINE:   /* CosineAnnealingLR's closed form: past t_max it rises again, as there */
    return t->eta_min + (lr0 - t->eta_min) * (1 + cos(M_PI * (double)epoch / (double)t->t_max)) / 2;
  default: return lr0;
  }
}

/* --profile: where the train steps' time went, per layer and phase */
static void print_profile(const Model *m) {
  int n = m->sp.nlayers;
  double total = 0;
  for (int i = 0; i < 2 * n + 2; i++) total += ts_prof_seconds(i);
  if (total <= 0 || m->t <= 0) return;
  printf("\nprofile over %lld steps: %.3f ms per step\n%3s  %-10s %-11s %10s %10s\n", (long long)m->t,
         1e3 * total / (double)m->t, "#", "name", "layer", "fwd ms", "bwd ms");
  for (int i = 0; i < n; i++)
    printf("%3d  %-10s %-11s %10.3f %10.3f\n", i, m->sp.layers[i].name, op_registry[m->sp.layers[i].op]->name,
           1e3 * ts_prof_seconds(2 * i) / (double)m->t, 1e3 * ts_prof_seconds(2 * i + 1) / (double)m->t);
  printf("     %-22s %10.3f\n     %-22s %10.3f\n", "loss", 1e3 * ts_prof_seconds(2 * n) / (double)m->t,
         "optimizer", 1e3 * ts_prof_seconds(2 * n + 1) / (double)m->t);
}

/* ---- signals: the first asks to stop after the step, the second stops now ------------------- */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
  if (stop_signal) {
    signal(sig, SIG_DFL);   /* the second: as if there were no handler (the exit status says so) */
    raise(sig);
    _exit(128 + sig);
  }
  stop_signal = sig;
}

static void catch_signals(bool on) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on ? on_signal : SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* one argument as the shell reads it back */
static void print_shell_word(const char *a) {
  if (*a && strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == strlen(a)) {
    fputs(a, stdout);
    return;
  }
  putchar('\'');
  for (; *a; a++) *a == '\'' ? fputs("'\\''", stdout) : putchar(*a);
  putchar('\'');
}

/* the command that continues this run from `ckpt`: this one's arguments, --init and --resume
 * dropped, --resume ckpt added */
static void print_resume_command(int argc, char **argv, const char *ckpt) {
  fputs("  teslac train", stdout);
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--resume") || !strcmp(argv[i], "--init")) { i++; continue; }
    if (!strncmp(argv[i], "--resume=", 9) || !strncmp(argv[i], "--init=", 7)) continue;
    putchar(' ');
    print_shell_word(argv[i]);
  }
  fputs(" --resume ", stdout);
  print_shell_word(ckpt);
  putchar('\n');
}

/* ---- data: train, validation (its files or a held-out part of train), test ----------------- */

/* the training set's size after a validation split of f; -1 after a message if that is less
 * than one batch */
static int train_count(const TsDataset *tr, double f, int64_t batch) {
  size_t n = f > 0 ? (size_t)floor((double)tr->count * (1 - f)) : tr->count;
  if ((int64_t)n >= batch) return 0;
  fprintf(stderr, "teslac: the training set has %zu samples%s, fewer than one batch of %lld\n", n,
          f > 0 ? " after the validation split" : "", (long long)batch);
  return -1;
}

/* --resume: the run goes on with the seed, lr and validation split it was trained with (they
 * shape the shuffles, the dropout masks, the split and the steps), unless the command line
 * gives them, which is then said to part from the uninterrupted run */
static void resume_settings(const TrainOpts *o, Model *m) {
  TrainCfg *tc = &m->sp.train;
  DataCfg *dc = &m->sp.data;
  if (m->saved.seed != tc->seed) {
    if (o->have_seed)
      fprintf(stderr, "teslac: warning: %s was trained with seed %llu; --seed %llu makes this run differ from the "
                      "uninterrupted one\n", o->resume, (unsigned long long)m->saved.seed, (unsigned long long)tc->seed);
    else {
      printf("resuming with the checkpoint's seed %llu (the spec says %llu)\n", (unsigned long long)m->saved.seed,
             (unsigned long long)tc->seed);
      tc->seed = m->saved.seed;
    }
  }
  if (m->saved.lr != tc->lr) {
    if (o->lr > 0)
      fprintf(stderr, "teslac: warning: %s was trained with lr %g; --lr %g makes this run differ from the uninterrupted "
                      "one\n", o->resume, m->saved.lr, tc->lr);
    else {
      printf("resuming with the checkpoint's lr %g (the spec says %g)\n", m->saved.lr, tc->lr);
      tc->lr = m->saved.lr;
    }
  }
  if (m->saved.val_split != dc->val_split && !dc->val_images) {
    if (o->val_split >= 0)
      fprintf(stderr, "teslac: warning: %s was trained with a validation split of %g; --validation-split %g makes this "
                      "run differ from the uninterrupted one\n", o->resume, m->saved.val_split, dc->val_split);
    else {
      printf("resuming with the checkpoint's validation split %g (the spec says %g)\n", m->saved.val_split, dc->val_split);
      dc->val_split = m->saved.val_split;
    }
  }
}

/* PyTorch's rule: batchnorm in training needs more than one value per channel (batch x the
 * spatial positions), else its variance is 0 / 0 ("Expected more than 1 value per channel when
 * training"); `rows`: the rows one batchnorm sees (the global batch when synchronized) */
static int bn_values_check(const Spec *sp, int64_t rows) {
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    if (l->op != OP_batchnorm) continue;
    int64_t per = rows * (l->in.rank == 3 ? l->in.d[1] * l->in.d[2] : 1);
    if (per > 1) continue;
    fprintf(stderr, "teslac: layer %d (%s, batchnorm) would see 1 value per channel in training at batch %lld (its "
                    "variance is undefined; PyTorch: 'Expected more than 1 value per channel when training'); train "
                    "with --batch 2 or more\n", i, l->name, (long long)rows);
    return -1;
  }
  return 0;
}

/* ---- the monitor: early stopping and the best checkpoint ------------------------------------ */

static bool improves(const TrainCfg *t, const Model *m, double v) {
  if (!isfinite(v)) return false;
  if (m->watch.best_epoch == 0) return true;
  return MONITOR_IS_ACC(t->monitor) ? v > m->watch.best + t->min_delta : v < m->watch.best - t->min_delta;
}

/* "x.safetensors" -> "x.best.safetensors" */
static const char *best_path(Ctx *cx, const char *out) {
  size_t n = strlen(out), k = strlen(".safetensors");
  if (n > k && !strcmp(out + n - k, ".safetensors")) return arena_printf(cx, "%.*s.best.safetensors", (int)(n - k), out);
  return arena_printf(cx, "%s.best.safetensors", out);
}

/* a NaN prints as "nan" whatever its sign bit ("-nan" is the same thing) */
static double nan_plain(double v) { return isnan(v) ? NAN : v; }

/* JSON has no NaN: what was not measured is null */
static const char *json_num(char *buf, size_t n, double v) {
  if (!isfinite(v)) return "null";
  snprintf(buf, n, "%.6f", v);
  return buf;
}

/* A checkpoint's position counts batches, so --resume needs the batch it was trained at:
 * checked here, before the compile, from its metadata (model_load checks it again, with
 * every other key). Only a readable `batch` that differs fails; the rest is model_load's. */
static int resume_batch_check(const char *path, int64_t batch) {
  TsStFile f;
  TsErr e;
  if (ts_st_read(path, &f, &e) < 0) return 0;   /* reported, with its reason, by model_load */
  const char *v = ts_st_meta(&f, "batch");
  char *end = NULL;
  long long bt = v && cmd_decimal(v, true) ? strtoll(v, &end, 10) : 0;
  int rc = 0;
  if (bt > 0 && bt != batch) {
    fprintf(stderr, "teslac: --resume: %s was trained at batch %lld; resume it at that batch (--batch %lld), not %lld\n",
            path, bt, bt, (long long)batch);
    rc = -1;
  }
  ts_st_free(&f);
  return rc;
}

/* ---- the command ---------------------------------------------------------------------- */

#define F(field) offsetof(TrainOpts, field)
static const CmdOpt train_opts[] = {
    {"-o", NULL, ARG_STR, "CKPT", 0, 0, F(out), "checkpoint path (default: NAME.safetensors); written atomically at\nthe end of each epoch and of the run"},
    {"--save-best", NULL, ARG_FLAG, NULL, 0, 0, F(save_best), "also NAME.best.safetensors (next to CKPT) at each best value of\ntrain.monitor (default val_loss) or of early_stopping's monitor"},
    {"--save-every", NULL, ARG_INT, "N", 1, 1e12, F(save_every), "also checkpoint CKPT every N steps"},
    {"--validation-split", NULL, ARG_NUM, "F", 0, 0.99, F(val_split), "hold out the fraction F of the training set, chosen by the seed,\nas the validation set (default: data.validation_split / data.val)"},
    {"--test-every-epoch", NULL, ARG_FLAG, NULL, 0, 0, F(test_every_epoch), "evaluate the test set after every epoch, not only the last"},
    {"--allow-nonfinite", NULL, ARG_FLAG, NULL, 0, 0, F(allow_nonfinite), "train on when the loss or the weights become NaN or infinite (by\ndefault that stops the run, exit 1, the last checkpoint kept)"},
    {"--epochs", NULL, ARG_INT, "N", 1, 1e6, F(epochs), "epochs (default: train.epochs)"},
    {"--steps", NULL, ARG_INT, "N", 1, 2147483647, F(steps), "stop after N optimizer steps (short, reproducible runs)"},
    CMD_OPT_BATCH("batch size (default: train.batch)"),
    {"--lr", NULL, ARG_NUM, "X", 1e-12, 1e6, F(lr), "learning rate (default: train.lr)"},
    {"--seed", NULL, ARG_INT, "S", 0, 9e15, F(seed), "seed for initialization and shuffling (default: train.seed)"},
    CMD_OPT_THREADS,
    {"--init", NULL, ARG_STR, "W", 0, 0, F(init), "start from the weights in W (safetensors, PyTorch state_dict names)"},
    {"--resume", NULL, ARG_STR, "CKPT", 0, 0, F(resume), "continue a run from a teslac checkpoint (weights, optimizer, position)"},
    {"--log", NULL, ARG_STR, "FILE", 0, 0, F(log), "also write one JSON line per epoch to FILE"},
    {"--profile", NULL, ARG_FLAG, NULL, 0, 0, F(profile), "time every layer's forward and backward, the loss and the optimizer"},
    CMD_OPT_NO_CACHE,
    {NULL}};
#undef F

const CmdDef cmd_train = {
    .name = "train", .args = "SPEC [options]", .summary = "compile for this CPU and train on the spec's data",
    .about = "Compile SPEC for this CPU and train it on the spec's data; after each epoch print the\n"
             "train loss and accuracy (and the validation set's, when the spec has one), and write a\n"
             "checkpoint; the test set is evaluated after the last epoch. Ctrl-C (SIGINT) or SIGTERM\n"
             "finishes the current step, writes a checkpoint there and prints how to resume.",
    CMD_POS_SPEC(TrainOpts),
    .opts = train_opts,
    .quiet = "nothing on standard output (no table, epoch lines or progress bar);\nwarnings and errors still on standard error",
    .verbose = "also the CPU the JIT compiled for and the data loading time",
    .run = train_main};

int train_main(int argc, char **argv) {
  double t_launch = ts_now();   /* for "elapsed": time to accuracy counts the compile too */
  TrainOpts o;
  int rc = cmd_parse_opts(&cmd_train, argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  if (dist_init(NULL, NULL) < 0) return 1;
  int K = dist_size();
  bool lead = dist_rank() == 0;
  /* rank 0 speaks for the run; -q: nobody */
  if ((!lead || cmd_verbosity < 0) && !freopen("/dev/null", "w", stdout)) return 1;
  Ctx cx;
  Model m = {0};
  TsDataset tr = {0}, va = {0}, te = {0};
  FILE *log = NULL;
  uint32_t *order = NULL;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  TrainCfg *tc = &m.sp.train;
  DataCfg *dc = &m.sp.data;
  if (o.epochs) tc->epochs = o.epochs;
  if (o.lr > 0) tc->lr = o.lr;
  if (o.have_seed) tc->seed = (uint64_t)o.seed;
  if (o.save_best) tc->save_best = true;
  if (o.test_every_epoch) tc->test_every_epoch = true;
  if (o.val_split >= 0) dc->val_split = o.val_split, dc->val_images = dc->val_labels = NULL;
  bool have_val = dc->val_images || dc->val_split > 0;
  if ((tc->save_best || tc->early_stop) && MONITOR_IS_VAL(tc->monitor) && !have_val) {
    fprintf(stderr, "teslac: %s watches %s, but there is no validation set: give --validation-split F or "
                    "data.val, or set train.monitor: train_loss\n",
            tc->early_stop ? "early stopping" : "--save-best", monitor_names[tc->monitor]);
    goto out;
  }
  int64_t batch = o.batch ? o.batch : tc->batch;   /* the global batch */
  if (batch % K) {
    fprintf(stderr, "teslac: the batch of %lld does not split over %d ranks; give --batch a multiple of %d\n",
            (long long)batch, K, K);
    goto out;
  }
  /* every output can be written, before the data is read and the model compiled */
  const char *out_path = o.out ? o.out : arena_printf(&cx, "%s.safetensors", m.sp.name);
  const char *best = tc->save_best ? best_path(&cx, out_path) : NULL;
  const CmdFile ins[] = {{o.spec, "spec"}, {o.init, "--init file"}, {o.resume, "--resume checkpoint"},
                         {dc->train_images, "training images"}, {dc->train_labels, "training labels"},
                         {dc->val_images, "validation images"}, {dc->val_labels, "validation labels"},
                         {dc->test_images, "test images"}, {dc->test_labels, "test labels"}};
  const CmdFile outs[] = {{out_path, "checkpoint"}, {best, "best checkpoint"}, {o.log, "log"}};
  /* -o over --resume is the one exception: a run continued in place */
  if (cmd_check_roles(ins, 9, outs, 3, 2, 0) < 0) goto out;
  if (lead && (cmd_check_output(out_path, "checkpoint") < 0 || (best && cmd_check_output(best, "best checkpoint") < 0) ||
               (o.log && cmd_check_output(o.log, "log") < 0)))
    goto out;
  double t_data = ts_now();
  if (cmd_load_split(&cx, &m.sp, dc->train_images, dc->train_labels, "train", &tr) < 0) goto out;
  if (dc->val_images && cmd_load_split(&cx, &m.sp, dc->val_images, dc->val_labels, "validation", &va) < 0) goto out;
  if (dc->test_images && cmd_load_split(&cx, &m.sp, dc->test_images, dc->test_labels, "test", &te) < 0) goto out;
  if (train_count(&tr, dc->val_split, batch) < 0) goto out;   /* before compiling; the split comes after --resume */
  if (bn_values_check(&m.sp, tc->sync_bn ? batch : batch / K) < 0) goto out;
  if (lead && o.resume && resume_batch_check(o.resume, batch) < 0) goto out;   /* before the compile, too */
  int64_t lbatch = batch / K, threads = o.threads;   /* this rank's rows of every batch */
  if (K > 1 && !threads) {   /* the cores of this machine shared by its ranks */
    threads = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size();
    if (threads < 1) threads = 1;
  }
  m.dist = K, m.sync_bn = tc->sync_bn;
  if (cmd_verbosity > 0) {
    char cpu[256];
    cg_host_cpu_describe(cpu, sizeof cpu);
    printf("data read in %.3f s\nJIT CPU: %s\n", ts_now() - t_data, cpu);
  }
  if (model_build_ex(&cx, &m, lbatch, threads, stdout, o.profile) < 0) goto out;
  int64_t epoch0 = 0;
  TsErr e;
  model_init(&m, tc->seed);
  int loaded = 0;   /* rank 0 reads --init / --resume; every rank gets its blocks */
  if (lead && o.init && model_load(&cx, &m, o.init, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: --init: %s\n", e.msg);
    loaded = -1;
  }
  if (lead && !loaded && o.resume && model_load(&cx, &m, o.resume, true, &epoch0, &e) < 0) {
    fprintf(stderr, "teslac: --resume: %s\n", e.msg);
    loaded = -1;
  }
  if (K > 1) {
    dist_bcast(&loaded, sizeof loaded);
    if (loaded < 0) goto out;
    int64_t pos[3] = {m.t, epoch0, m.prune_total};
    dist_bcast(pos, sizeof pos);
    m.t = pos[0], epoch0 = pos[1], m.prune_total = pos[2];
    dist_bcast(&m.watch, sizeof m.watch);
    dist_bcast(&m.saved, sizeof m.saved);
    dist_bcast(m.P, sizeof(float) * (size_t)m.pl.param_block);
    dist_bcast(m.O, sizeof(float) * (size_t)m.pl.opt_block);
  } else if (loaded < 0) {
    goto out;
  }
  if (m.saved.present) resume_settings(&o, &m);
  if (dc->val_split > 0) {   /* held out by the seed: after --resume, which may bring its own */
    TsErr se;
    if (train_count(&tr, dc->val_split, batch) < 0) goto out;
    if (ts_dataset_holdout(&tr, dc->val_split, tc->seed, &va, &se) < 0) {
      fprintf(stderr, "teslac: validation_split: %s\n", se.msg);
      goto out;
    }
  }
  int64_t per_epoch = (int64_t)tr.count / batch;
  /* the position is the step: a checkpoint at an epoch's last step is at the next epoch's start
   * (older checkpoints written by --steps there said the epoch they ended) */
  if (epoch0 > m.t / per_epoch || epoch0 < m.t / per_epoch - 1 || (epoch0 == m.t / per_epoch - 1 && m.t % per_epoch)) {
    fprintf(stderr, "teslac: --resume: %s says epoch %lld at step %lld, but an epoch here is %lld steps (another data "
                    "set or split?)\n", o.resume, (long long)epoch0, (long long)m.t, (long long)per_epoch);
    goto out;
  }
  epoch0 = m.t / per_epoch;
  if (lead && o.log && !(log = fopen(o.log, "w"))) {
    fprintf(stderr, "teslac: cannot write the log '%s': %s\n", o.log, strerror(errno));
    goto out;
  }
  /* the pruning schedule runs over the whole training (epochs x steps); a resumed run keeps the
   * length it started with */
  if (m.prune_total <= 0) m.prune_total = tc->epochs * per_epoch;
  if (m.t == 0) sparse_prune(&m, m.prune_total);   /* oneshot at start 0 */
  order = ts_malloc(sizeof(uint32_t) * tr.count);
  char valdesc[64] = "";
  if (va.count) snprintf(valdesc, sizeof valdesc, " (+%zu validation)", va.count);
  if (K > 1)
    printf("training %s: %zu samples%s, %lld steps per epoch, %d ranks (%s) of %lld rows and %d thread%s each%s\n",
           m.sp.name, tr.count, valdesc, (long long)per_epoch, K, dist_library(), (long long)lbatch,
           ts_pool_threads(m.pool), ts_pool_threads(m.pool) == 1 ? "" : "s",
           m.sp.train.sync_bn ? "" : ", batchnorm per rank");
  else
    printf("training %s: %zu samples%s, %lld steps per epoch, %d thread%s\n", m.sp.name, tr.count, valdesc,
           (long long)per_epoch, ts_pool_threads(m.pool), ts_pool_threads(m.pool) == 1 ? "" : "s");
  fflush(stdout);   /* a pipe or a log sees that training started (bench/startup.py times it) */
  double t_start = ts_now();
  /* a resumed run may be done already: it takes no step, and -o gets the checkpoint as it is */
  bool stop = (o.steps && m.t >= o.steps) || epoch0 >= tc->epochs;
  if (stop) {
    if (o.steps && m.t >= o.steps)
      printf("the checkpoint is at step %lld, --steps is %lld: no step to take\n", (long long)m.t, (long long)o.steps);
    else
      printf("the checkpoint is at epoch %lld of %lld: no epoch to train (give --epochs more than %lld to go on)\n",
             (long long)epoch0, (long long)tc->epochs, (long long)epoch0);
    if (lead && model_save(&cx, &m, out_path, epoch0, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      goto out;
    }
  }
  if (K == 1) catch_signals(true);   /* under mpirun, mpirun owns the signals */
  const char *why = NULL;   /* why training stopped early */
  const char *last_ck = o.resume;   /* the newest checkpoint of this run */
  /* a resumed run continues inside its epoch: the shuffles are a function of (seed, epoch) */
  for (int64_t ep = epoch0; ep < tc->epochs && !stop; ep++) {
    for (size_t i = 0; i < tr.count; i++) order[i] = (uint32_t)i;
    if (tc->shuffle) {
      TsRng r;
      ts_rng_seed(&r, tc->seed, 1000 + (uint64_t)ep);
      ts_shuffle_u32(&r, order, tr.count);
    }
    double lr = lr_at_epoch(tc, tc->lr, ep), t0 = ts_now(), loss_sum = 0;
    int64_t correct = 0, seen = 0;
    TsProgress pr;
    ts_progress_begin(&pr, (int)ep + 1, (int)tc->epochs, (size_t)(per_epoch * lbatch));
    int64_t first = dist_rank() * lbatch;   /* this rank's rows of each global batch */
    for (int64_t st = m.t - ep * per_epoch; st < per_epoch; st++) {
      if (st < 0) st = 0;
      for (int64_t b = 0; b < lbatch; b++) {
        uint32_t k = order[st * batch + first + b];
        ts_dataset_gather(&tr, k, 1, m.X + b * m.in_elems);
        m.Y[b] = tr.y[k];
      }
      TeslaStep s;
      model_step_init(&m, &s);
      m.t++;
      s.t = (int32_t)m.t, s.lr = (float)lr, s.nvalid = (int32_t)lbatch;
      s.bc1 = (float)(1 - pow(tc->beta1, (double)m.t)), s.bc2 = (float)(1 - pow(tc->beta2, (double)m.t));
      s.seed = tc->seed * 0x9E3779B97F4A7C15ull + (uint64_t)m.t;
      if (K > 1) s.seed ^= (uint64_t)dist_rank() * 0xD1B54A32D192ED03ull;   /* each rank's own dropout masks */
      m.train_step(&s);
      sparse_prune(&m, m.prune_total);
      if (!isfinite(s.loss) && !o.allow_nonfinite) {   /* diverged: stop with the last good checkpoint */
        ts_progress_end(&pr);
        fprintf(stderr, "teslac: the loss became %s at step %lld (epoch %lld): training diverged; try a lower --lr "
                        "(now %g)%s%s; --allow-nonfinite trains on\n", isnan(s.loss) ? "NaN" : "infinite",
                (long long)m.t, (long long)ep + 1, lr, last_ck ? "; the last checkpoint, before it, is " : "",
                last_ck ? last_ck : "");
        goto out;
      }
      loss_sum += s.loss, correct += s.correct, seen += lbatch;
      ts_progress_update(&pr, (size_t)seen, loss_sum / (double)seen);
      if (stop_signal) break;
      if (o.save_every && m.t % o.save_every == 0 && st + 1 < per_epoch && lead &&
          model_save(&cx, &m, out_path, m.t / per_epoch, &e) < 0) {
        ts_progress_end(&pr);
        fprintf(stderr, "teslac: %s\n", e.msg);
        goto out;
      }
      if (o.save_every && m.t % o.save_every == 0 && st + 1 < per_epoch) last_ck = out_path;
      if (o.steps && m.t >= o.steps) { stop = true; why = "--steps"; break; }
    }
    ts_progress_end(&pr);
    if (stop_signal) {   /* the step is done: checkpoint it, say how to go on */
      const char *sig = stop_signal == SIGINT ? "SIGINT" : "SIGTERM";
      if (model_save(&cx, &m, out_path, m.t / per_epoch, &e) < 0) {
        fprintf(stderr, "teslac: interrupted (%s) at step %lld, and the checkpoint failed: %s\n", sig, (long long)m.t, e.msg);
      } else {
        printf("interrupted (%s) at step %lld (epoch %lld, step %lld of %lld); checkpoint in %s\nresume with:\n", sig,
               (long long)m.t, (long long)(m.t / per_epoch) + 1, (long long)(m.t % per_epoch), (long long)per_epoch, out_path);
        print_resume_command(argc, argv, out_path);
      }
      fflush(stdout);
      rc = 128 + stop_signal;
      goto out;
    }
    if (K > 1) {   /* the epoch's loss and accuracy over every rank's rows */
      double sums[3] = {loss_sum, (double)correct, (double)seen};
      dist_sum_f64(sums, 3);
      loss_sum = sums[0], correct = (int64_t)sums[1], seen = (int64_t)sums[2];
    }
    const char *bad = o.allow_nonfinite ? NULL : model_nonfinite(&m);
    if (bad) {   /* a finite loss over non-finite weights: as diverged */
      fprintf(stderr, "teslac: '%s' holds non-finite values after epoch %lld: training diverged; try a lower --lr (now %g)"
                      " (--allow-nonfinite trains on)\n", bad, (long long)ep + 1, lr);
      goto out;
    }
    double dt = ts_now() - t0, vl = NAN, vacc = NAN, tl = NAN, ta = NAN;
    double trl = seen ? loss_sum / (double)seen : NAN, tra = seen ? (double)correct / (double)seen : NAN;
    if (va.count && lead) model_eval(&m, &va, &vl, &vacc);
    /* the monitor, on rank 0, whose decision every rank takes */
    bool is_best = false;
    if (lead && (tc->early_stop || tc->save_best)) {
      double v = tc->monitor == MON_VAL_LOSS ? vl : tc->monitor == MON_VAL_ACC ? vacc : tc->monitor == MON_TRAIN_LOSS ? trl : tra;
      if (improves(tc, &m, v)) m.watch.best = v, m.watch.best_epoch = ep + 1, m.watch.wait = 0, is_best = true;
      else m.watch.wait++;
      if (tc->early_stop && !is_best && m.watch.wait >= tc->patience && !stop) stop = true, why = "early stopping";
    }
    if (K > 1) {
      int flags[2] = {stop, why && !strcmp(why, "early stopping")};
      dist_bcast(flags, sizeof flags);
      stop = flags[0];
      if (flags[1]) why = "early stopping";
    }
    bool last = stop || ep + 1 == tc->epochs;
    bool tested = te.count && (last || tc->test_every_epoch);
    if (tested && lead) model_eval(&m, &te, &tl, &ta);
    printf("epoch %lld/%lld  train loss %.4f", (long long)ep + 1, (long long)tc->epochs, nan_plain(trl));
    if (tc->metric_accuracy) printf("  train acc %.4f", nan_plain(tra));
    if (va.count) {
      printf("  val loss %.4f", nan_plain(vl));
      if (tc->metric_accuracy) printf("  val acc %.4f", nan_plain(vacc));
    }
    if (tested) {
      printf("  test loss %.4f", nan_plain(tl));
      if (tc->metric_accuracy) printf("  test acc %.4f", nan_plain(ta));
    }
    printf("  %.1f s  %.0f samples/s  (%.0f s elapsed)\n", dt, (double)seen / dt, ts_now() - t_launch);
    fflush(stdout);
    if (log) {
      char b[6][32];
      fprintf(log, "{\"epoch\": %lld, \"step\": %lld, \"train_loss\": %s, \"train_accuracy\": %s, \"val_loss\": %s, "
                   "\"val_accuracy\": %s, \"test_loss\": %s, \"test_accuracy\": %s, \"seconds\": %.3f, "
                   "\"samples_per_second\": %.1f, \"lr\": %g, \"elapsed\": %.3f}\n",
              (long long)ep + 1, (long long)m.t, json_num(b[0], 32, trl), json_num(b[1], 32, tra), json_num(b[2], 32, vl),
              json_num(b[3], 32, vacc), json_num(b[4], 32, tl), json_num(b[5], 32, ta), dt, (double)seen / dt, lr,
              ts_now() - t_launch);
      if (fflush(log) != 0 || ferror(log)) {
        fprintf(stderr, "teslac: writing the log '%s' failed: %s\n", o.log, strerror(errno));
        goto out;
      }
    }
    if (lead && model_save(&cx, &m, out_path, m.t / per_epoch, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      goto out;
    }
    last_ck = out_path;
    if (lead && is_best && tc->save_best) {
      if (model_save(&cx, &m, best, m.t / per_epoch, &e) < 0) {
        fprintf(stderr, "teslac: %s\n", e.msg);
        goto out;
      }
      printf("  best %s %.4f: %s\n", monitor_names[tc->monitor], m.watch.best, best);
    }
    if (why && !strcmp(why, "early stopping"))
      printf("early stopping: %s has not improved on %.4f (epoch %lld) for %lld epoch%s (patience %lld, min_delta %g)\n",
             monitor_names[tc->monitor], m.watch.best, (long long)m.watch.best_epoch, (long long)m.watch.wait,
             m.watch.wait == 1 ? "" : "s", (long long)tc->patience, tc->min_delta);
  }
  catch_signals(false);
  if (o.profile) print_profile(&m);
  sparse_report(&m, stdout);
  if (K > 1) {   /* the ranks took the same steps: their trained tensors must be the same bits
                    (a per-rank batchnorm's running statistics are rank 0's in the checkpoint) */
    uint64_t h = TS_FNV1A_INIT;
    for (int t = 0; t < m.pl.ntensors; t++)
      if (m.pl.tensors[t].grad_offset >= 0)
        h = ts_fnv1a(m.P + m.pl.tensors[t].offset, sizeof(float) * (size_t)m.pl.tensors[t].elems, h);
    if (!dist_same(h)) {
      fprintf(stderr, "teslac: internal error: the ranks' weights differ after training\n");
      goto out;
    }
    printf("gradient reduction: %.3f s of %.1f s (%.1f%%) on rank 0\n", dist_comm_seconds(), ts_now() - t_start,
           100 * dist_comm_seconds() / (ts_now() - t_start));
  }
  struct rusage ru;   /* the high-water mark of this process's resident memory */
  double peak_mb = getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0;
  printf("done in %.1f s; weights in %s%s%s; peak memory %.0f MB%s\n", ts_now() - t_start, out_path,
         best && m.watch.best_epoch ? "; best in " : "", best && m.watch.best_epoch ? best : "", peak_mb,
         K > 1 ? " (rank 0)" : "");
  rc = 0;
out:
  catch_signals(false);
  if (rc && K > 1) dist_abort(rc);   /* no rank may wait in a collective for this one */
  dist_finalize();
  if (log && fclose(log) != 0 && rc == 0) {
    fprintf(stderr, "teslac: writing the log '%s' failed: %s\n", o.log, strerror(errno));
    rc = 1;
  }
  ts_free(order);
  model_free(&m);
  ts_dataset_free(&tr), ts_dataset_free(&va), ts_dataset_free(&te);
  ctx_free(&cx);
  return rc;
}
