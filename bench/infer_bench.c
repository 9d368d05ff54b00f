/* bench/infer_bench.c: time the inference entry point of an object file emitted by
 * `teslac build` (bench/README.md, "Inference peers").
 *
 * Generic over the model's name: the emitted header NAME.h defines NAME_BATCH,
 * NAME_INPUT_SIZE (floats per sample), NAME_OUTPUT_SIZE (floats per sample of y, the class
 * probabilities), NAME_ACTIVATIONS_SIZE (bytes of scratch), NAME_ALIGNMENT (the scratch's
 * alignment) and void NAME_infer(const float *x, float *y, int n, void *scratch) (any n >= 1,
 * single-threaded, reentrant). The preprocessor cannot upper-case a name, so both spellings
 * are given:
 *
 *   cc -O2 -pthread -DMODEL=seed -DMODEL_UC=SEED -DMODEL_H='"seed.h"' -I DIR \
 *      bench/infer_bench.c seed.o -lm -o infer_bench_seed
 *   ./infer_bench_seed [--batch N] [--iters K] [--warmup W] [--threads T]
 *                      [--input X.f32] [--dump-output Y.f32]
 *
 * Input: N samples of uniform [0, 1) floats from a fixed xorshift32 stream (the same stream
 * bench/ort_bench.mjs uses), or --input: raw little-endian float32, a whole number of samples
 * (N is then the file's sample count unless --batch says so). W untimed calls, then K timed
 * calls, each timed alone (CLOCK_MONOTONIC); one JSON line with the median:
 *   {"engine":"teslac","model":...,"batch":N,"threads":T,"median_ms":...,"samples_per_s":...}
 * --threads T splits the N samples into T contiguous parts, one per thread, each with its own
 * scratch; the threads are started once and meet at a spinning barrier before and after every
 * call (the calling thread takes part 0), so a timed call is one batch through all of them. The
 * barrier spins (yielding now and then) because a sleeping futex wake-up on this VM costs up to
 * a millisecond, more than a batch-256 call of a small model; ONNX Runtime's pool spins too.
 * --dump-output writes y (N x NAME_OUTPUT_SIZE floats) of the last call as raw float32.
 * row_sum_err in the JSON is max |sum(y row) - 1|: y should be probabilities. */
#define _GNU_SOURCE /* sched_yield, posix_memalign, clock_gettime */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if !defined(MODEL) || !defined(MODEL_UC) || !defined(MODEL_H)
#error "compile with -DMODEL=name -DMODEL_UC=NAME -DMODEL_H='\"name.h\"'"
#endif

#include MODEL_H

#define IB_CAT_(a, b) a##b
#define IB_CAT(a, b) IB_CAT_(a, b)
#define IB_STR_(a) #a
#define IB_STR(a) IB_STR_(a)

#define M_INFER IB_CAT(MODEL, _infer)
#define M_BATCH IB_CAT(MODEL_UC, _BATCH)
#define M_IN IB_CAT(MODEL_UC, _INPUT_SIZE)
#define M_OUT IB_CAT(MODEL_UC, _OUTPUT_SIZE)
#define M_SCRATCH IB_CAT(MODEL_UC, _ACTIVATIONS_SIZE)
#define M_ALIGN IB_CAT(MODEL_UC, _ALIGNMENT)

static void die(const char *msg, const char *arg) {
  fprintf(stderr, "infer_bench: error: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
  exit(1);
}

static void usage(int code) {
  fprintf(code ? stderr : stdout,
          "usage: infer_bench [--batch N] [--iters K] [--warmup W] [--threads T] "
          "[--input X.f32] [--dump-output Y.f32]\n"
          "model %s: input %ld floats, output %ld floats, compiled batch %ld, scratch %ld bytes\n",
          IB_STR(MODEL), (long)(M_IN), (long)(M_OUT), (long)(M_BATCH), (long)(M_SCRATCH));
  exit(code);
}

static long parse_int(const char *opt, const char *v, long lo) {
  char *end;
  errno = 0;
  long n = v ? strtol(v, &end, 10) : 0;
  if (!v || errno || *end || end == v || n < lo) {
    fprintf(stderr, "infer_bench: error: %s wants an integer >= %ld, got %s\n", opt, lo,
            v ? v : "nothing");
    exit(2);
  }
  return n;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void *scratch_alloc(void) {
  size_t align = (size_t)(M_ALIGN);
  if (align < sizeof(void *)) align = sizeof(void *);
  size_t size = (size_t)(M_SCRATCH);
  size = (size + align - 1) / align * align;
  if (size == 0) size = align;
  void *p = NULL;
  if (posix_memalign(&p, align, size)) die("out of memory for the scratch", NULL);
  memset(p, 0, size); /* touch every page before timing */
  return p;
}

/* ------------------------------------------------------------------------------ threads */

typedef struct {
  const float *x;
  float *y;
  int n;
  void *scratch;
} part_t;

static atomic_int g_arrived;
static atomic_uint g_gen;
static atomic_int g_quit;
static int g_nthreads;

/* all g_nthreads threads wait here until the last arrives (generation counter) */
static void barrier(void) {
  unsigned gen = atomic_load_explicit(&g_gen, memory_order_acquire);
  if (atomic_fetch_add_explicit(&g_arrived, 1, memory_order_acq_rel) == g_nthreads - 1) {
    atomic_store_explicit(&g_arrived, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&g_gen, 1, memory_order_release);
    return;
  }
  for (unsigned spins = 1; atomic_load_explicit(&g_gen, memory_order_acquire) == gen; spins++)
    if (!(spins & 1023)) sched_yield();
}

static void run_part(const part_t *p) {
  if (p->n > 0) M_INFER(p->x, p->y, p->n, p->scratch);
}

static void *worker(void *arg) {
  const part_t *p = arg;
  for (;;) {
    barrier();
    if (atomic_load(&g_quit)) break;
    run_part(p);
    barrier();
  }
  return NULL;
}

int main(int argc, char **argv) {
  long batch = -1, iters = 200, warmup = 20, threads = 1;
  const char *input = NULL, *dump = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--batch")) batch = parse_int(a, v, 1), i++;
    else if (!strcmp(a, "--iters")) iters = parse_int(a, v, 1), i++;
    else if (!strcmp(a, "--warmup")) warmup = parse_int(a, v, 0), i++;
    else if (!strcmp(a, "--threads")) threads = parse_int(a, v, 1), i++;
    else if (!strcmp(a, "--input")) { if (!v) usage(2); input = v; i++; }
    else if (!strcmp(a, "--dump-output")) { if (!v) usage(2); dump = v; i++; }
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage(0);
    else { fprintf(stderr, "infer_bench: error: unexpected argument %s\n", a); usage(2); }
  }
  const size_t in = (size_t)(M_IN), out = (size_t)(M_OUT);

  float *x = NULL;
  if (input) {
    FILE *f = fopen(input, "rb");
    if (!f) die("cannot open", input);
    if (fseek(f, 0, SEEK_END)) die("cannot seek", input);
    long bytes = ftell(f);
    rewind(f);
    if (bytes <= 0 || bytes % (long)(4 * in)) die("not a whole number of samples of float32:", input);
    long have = bytes / (long)(4 * in);
    if (batch < 0) batch = have;
    if (batch != have) die("--batch differs from the sample count of", input);
    x = malloc((size_t)bytes);
    if (!x || fread(x, 1, (size_t)bytes, f) != (size_t)bytes) die("cannot read", input);
    fclose(f);
  } else {
    if (batch < 0) batch = 1;
    x = malloc((size_t)batch * in * sizeof(float));
    if (!x) die("out of memory", NULL);
    uint32_t s = 12345; /* xorshift32, as bench/ort_bench.mjs */
    for (size_t i = 0; i < (size_t)batch * in; i++) {
      s ^= s << 13;
      s ^= s >> 17;
      s ^= s << 5;
      x[i] = (float)(s >> 8) / 16777216.0f;
    }
  }
  if (batch > 0x7fffffffL) die("--batch too large", NULL);
  if (threads > batch) threads = batch; /* no empty parts */
  float *y = calloc((size_t)batch * out, sizeof(float));
  double *ms = malloc((size_t)iters * sizeof(double));
  part_t *parts = calloc((size_t)threads, sizeof(part_t));
  pthread_t *tid = calloc((size_t)threads, sizeof(pthread_t));
  if (!y || !ms || !parts || !tid) die("out of memory", NULL);
  for (long t = 0, done = 0; t < threads; t++) {
    long cnt = batch / threads + (t < batch % threads);
    parts[t] = (part_t){x + (size_t)done * in, y + (size_t)done * out, (int)cnt, scratch_alloc()};
    done += cnt;
  }
  if (threads > 1) {
    g_nthreads = (int)threads;
    for (long t = 1; t < threads; t++)
      if (pthread_create(&tid[t], NULL, worker, &parts[t])) die("pthread_create failed", NULL);
  }

  for (long k = -warmup; k < iters; k++) {
    double t0 = now_s();
    if (threads > 1) {
      barrier();
      run_part(&parts[0]);
      barrier();
    } else {
      run_part(&parts[0]);
    }
    double dt = now_s() - t0;
    if (k >= 0) ms[k] = 1e3 * dt;
  }
  if (threads > 1) {
    atomic_store(&g_quit, 1);
    barrier();
    for (long t = 1; t < threads; t++) pthread_join(tid[t], NULL);
  }

  double row_err = 0;
  for (long i = 0; i < batch; i++) {
    double sum = 0;
    for (size_t j = 0; j < out; j++) sum += y[(size_t)i * out + j];
    if (fabs(sum - 1) > row_err || isnan(sum)) row_err = isnan(sum) ? INFINITY : fabs(sum - 1);
  }
  if (dump) {
    FILE *f = fopen(dump, "wb");
    if (!f || fwrite(y, sizeof(float), (size_t)batch * out, f) != (size_t)batch * out || fclose(f))
      die("cannot write", dump);
  }
  qsort(ms, (size_t)iters, sizeof(double), cmp_double);
  double med = iters % 2 ? ms[iters / 2] : 0.5 * (ms[iters / 2 - 1] + ms[iters / 2]);
  printf("{\"engine\":\"teslac\",\"model\":\"%s\",\"batch\":%ld,\"threads\":%ld,"
         "\"median_ms\":%.5f,\"samples_per_s\":%.1f,\"min_ms\":%.5f,\"iters\":%ld,\"warmup\":%ld,"
         "\"compiled_batch\":%ld,\"scratch_bytes\":%ld,\"row_sum_err\":%.3g%s%s%s}\n",
         IB_STR(MODEL), batch, threads, med, (double)batch / (med / 1e3), ms[0], iters, warmup,
         (long)(M_BATCH), (long)(M_SCRATCH), row_err, dump ? ",\"dumped\":\"" : "",
         dump ? dump : "", dump ? "\"" : "");
  for (long t = 0; t < threads; t++) free(parts[t].scratch);
  free(parts), free(tid), free(ms), free(y), free(x);
  return 0;
}
