/* train.c: `teslac train`, where compiled code meets data: it checks and plans the spec, builds
 * the model (model.c), initializes it as PyTorch does or from --init / --resume, and runs the
 * generated <name>_train_step over shuffled batches of the spec's IDX data, evaluating the
 * test set with <name>_infer after every epoch and writing a checkpoint per epoch.
 *
 * Batches: training drops a last partial batch (DataLoader(drop_last=True)), since batch
 * statistics are compiled for the batch size.
 *
 * Under mpirun (dist.c) each of K ranks compiles the model for B / K rows and takes rows
 * [r B/K, (r+1) B/K) of every global batch of the one permutation all ranks draw; rank 0 reads
 * the starting weights and broadcasts them, and alone prints, evaluates and checkpoints. */
#include "cmd.h"
#include "dist.h"

#include <errno.h>
#include <math.h>
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

int train_main(int argc, char **argv) {
  double t_launch = ts_now();   /* for "elapsed": time to accuracy counts the compile too */
  TrainOpts o;
  int rc = cmd_parse_opts("train", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  if (dist_init(NULL, NULL) < 0) return 1;
  int K = dist_size();
  bool lead = dist_rank() == 0;
  if (!lead && !freopen("/dev/null", "w", stdout)) return 1;   /* rank 0 speaks for the run */
  Ctx cx;
  Model m = {0};
  TsDataset tr = {0}, te = {0};
  FILE *log = NULL;
  rc = 1;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  TrainCfg *tc = &m.sp.train;
  if (o.epochs) tc->epochs = o.epochs;
  if (o.lr > 0) tc->lr = o.lr;
  if (o.have_seed) tc->seed = (uint64_t)o.seed;
  int64_t batch = o.batch ? o.batch : tc->batch;   /* the global batch */
  if (batch % K) {
    fprintf(stderr, "teslac: the batch of %lld does not split over %d ranks; give --batch a multiple of %d\n",
            (long long)batch, K, K);
    goto out;
  }
  if (cmd_load_split(&cx, &m.sp, m.sp.data.train_images, m.sp.data.train_labels, "train", &tr) < 0) goto out;
  if (m.sp.data.test_images && cmd_load_split(&cx, &m.sp, m.sp.data.test_images, m.sp.data.test_labels, "test", &te) < 0)
    goto out;
  if ((int64_t)tr.count < batch) {
    fprintf(stderr, "teslac: the training set has %zu samples, fewer than one batch of %lld\n", tr.count, (long long)batch);
    goto out;
  }
  int64_t lbatch = batch / K, threads = o.threads;   /* this rank's rows of every batch */
  if (K > 1 && !threads) {   /* the cores of this machine shared by its ranks */
    threads = sysconf(_SC_NPROCESSORS_ONLN) / dist_local_size();
    if (threads < 1) threads = 1;
  }
  m.dist = K, m.sync_bn = tc->sync_bn;
  if (model_build_ex(&cx, &m, lbatch, threads, true, o.profile) < 0) goto out;
  const char *out_path = o.out ? o.out : arena_printf(&cx, "%s.safetensors", m.sp.name);
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
    dist_bcast(m.P, sizeof(float) * (size_t)m.pl.param_block);
    dist_bcast(m.O, sizeof(float) * (size_t)m.pl.opt_block);
  } else if (loaded < 0) {
    goto out;
  }
  if (lead && o.log && !(log = fopen(o.log, "w"))) {
    fprintf(stderr, "teslac: cannot write the log '%s': %s\n", o.log, strerror(errno));
    goto out;
  }
  int64_t per_epoch = (int64_t)tr.count / batch;
  /* the pruning schedule runs over the whole training (epochs x steps); a resumed run keeps the
   * length it started with */
  if (m.prune_total <= 0) m.prune_total = tc->epochs * per_epoch;
  if (m.t == 0) sparse_prune(&m, m.prune_total);   /* oneshot at start 0 */
  uint32_t *order = ts_malloc(sizeof(uint32_t) * tr.count);
  if (K > 1)
    printf("training %s: %zu samples, %lld steps per epoch, %d ranks (%s) of %lld rows and %d threads each%s\n",
           m.sp.name, tr.count, (long long)per_epoch, K, dist_library(), (long long)lbatch, ts_pool_threads(m.pool),
           m.sp.train.sync_bn ? "" : ", batchnorm per rank");
  else
    printf("training %s: %zu samples, %lld steps per epoch, %d threads\n", m.sp.name, tr.count,
           (long long)per_epoch, ts_pool_threads(m.pool));
  double t_start = ts_now();
  /* a resumed run may be at its --steps already: it takes no step (and -o gets the checkpoint) */
  bool stop = o.steps && m.t >= o.steps;
  if (stop) {
    printf("the checkpoint is at step %lld, --steps is %lld: no step to take\n", (long long)m.t, (long long)o.steps);
    if (lead && model_save(&cx, &m, out_path, epoch0, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      ts_free(order);
      goto out;
    }
  }
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
      loss_sum += s.loss, correct += s.correct, seen += lbatch;
      ts_progress_update(&pr, (size_t)seen, loss_sum / (double)seen);
      if (o.steps && m.t >= o.steps) { stop = true; break; }
    }
    ts_progress_end(&pr);
    if (K > 1) {   /* the epoch's loss and accuracy over every rank's rows */
      double sums[3] = {loss_sum, (double)correct, (double)seen};
      dist_sum_f64(sums, 3);
      loss_sum = sums[0], correct = (int64_t)sums[1], seen = (int64_t)sums[2];
    }
    double dt = ts_now() - t0, tl = NAN, ta = NAN;
    if (te.count && lead) model_eval(&m, &te, &tl, &ta);
    double trl = seen ? loss_sum / (double)seen : NAN;
    printf("epoch %lld/%lld  train loss %.4f", (long long)ep + 1, (long long)tc->epochs, trl);
    if (tc->metric_accuracy) printf("  train acc %.4f", seen ? (double)correct / (double)seen : NAN);
    if (te.count) {
      printf("  test loss %.4f", tl);
      if (tc->metric_accuracy) printf("  test acc %.4f", ta);
    }
    printf("  %.1f s  %.0f samples/s  (%.0f s elapsed)\n", dt, (double)seen / dt, ts_now() - t_launch);
    fflush(stdout);
    if (log) {   /* JSON has no NaN: what was not measured (no test data) is null */
      char tls[32] = "null", tas[32] = "null";
      if (te.count) snprintf(tls, sizeof tls, "%.6f", tl), snprintf(tas, sizeof tas, "%.6f", ta);
      fprintf(log, "{\"epoch\": %lld, \"step\": %lld, \"train_loss\": %.6f, \"test_loss\": %s, "
                   "\"test_accuracy\": %s, \"seconds\": %.3f, \"samples_per_second\": %.1f, \"lr\": %g, "
                   "\"elapsed\": %.3f}\n",
              (long long)ep + 1, (long long)m.t, trl, tls, tas, dt, (double)seen / dt, lr, ts_now() - t_launch);
      fflush(log);
    }
    if (lead && model_save(&cx, &m, out_path, stop ? ep : ep + 1, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      ts_free(order);
      goto out;
    }
  }
  ts_free(order);
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
  printf("done in %.1f s; weights in %s; peak memory %.0f MB%s\n", ts_now() - t_start, out_path, peak_mb,
         K > 1 ? " (rank 0)" : "");
  rc = 0;
out:
  if (rc && K > 1) dist_abort(rc);   /* no rank may wait in a collective for this one */
  dist_finalize();
  if (log) fclose(log);
  model_free(&m);
  ts_dataset_free(&tr), ts_dataset_free(&te);
  ctx_free(&cx);
  return rc;
}
