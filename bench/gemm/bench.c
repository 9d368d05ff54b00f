// bench.c: correctness and speed of compiler/codegen/kernels (tk_dense_*) on the real layer shapes.
// Each shape gets its own noinline wrapper that calls the kernels with compile-time-constant
// dims and tile bounds, as the JIT does after inlining, so what is timed is the specialized
// loop nest. Results are checked against a naive double-precision reference (max error
// relative to the largest |reference| value, must be < 1e-3). Single-threaded.
// Build and run: ./run.sh (see RESULTS.md).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef TK_BITCODE
// Built the JIT's way (run.sh): the kernels come from kernels.bc, linked in as bitcode.
#include "../../compiler/codegen/kernels/tk_kernels.h"
#else
#include "../../compiler/codegen/kernels/kernels.c"
#endif

typedef void (*FwdFn)(const float *, const float *, const float *, float *);
typedef void (*BwdDFn)(const float *, const float *, float *);
typedef void (*BwdWFn)(const float *, const float *, float *, float *);

typedef struct {
  long B, IN, OUT;
  int split;  // 1: the wrapper calls the kernel on two tiles [0, s) and [s, N)
  FwdFn fwd;
  BwdDFn bwd_data;
  BwdWFn bwd_weight;
} Shape;

// One wrapper per shape, every dim a literal. SPLIT tiles at a deliberately odd column (17)
// to test tile bounds, otherwise one tile covers everything.
#define SHAPE(B, IN, OUT, SPLIT)                                                           \
  __attribute__((noinline)) static void fwd_##B##_##IN##_##OUT(                           \
      const float *X, const float *W, const float *bias, float *Y) {                      \
    if (SPLIT) {                                                                           \
      tk_dense_fwd(B, IN, OUT, X, W, bias, Y, 0, 17);                                      \
      tk_dense_fwd(B, IN, OUT, X, W, bias, Y, 17, OUT);                                    \
    } else                                                                                 \
      tk_dense_fwd(B, IN, OUT, X, W, bias, Y, 0, OUT);                                     \
  }                                                                                        \
  __attribute__((noinline)) static void bwdd_##B##_##IN##_##OUT(const float *dY,          \
                                                                const float *W, float *dX) \
  {                                                                                        \
    if (SPLIT) {                                                                           \
      tk_dense_bwd_data(B, IN, OUT, dY, W, dX, 0, 17);                                     \
      tk_dense_bwd_data(B, IN, OUT, dY, W, dX, 17, IN);                                    \
    } else                                                                                 \
      tk_dense_bwd_data(B, IN, OUT, dY, W, dX, 0, IN);                                     \
  }                                                                                        \
  __attribute__((noinline)) static void bwdw_##B##_##IN##_##OUT(                         \
      const float *X, const float *dY, float *dW, float *db) {                             \
    if (SPLIT) {                                                                           \
      tk_dense_bwd_weight(B, IN, OUT, X, dY, dW, db, 0, 17);                               \
      tk_dense_bwd_weight(B, IN, OUT, X, dY, dW, db, 17, OUT);                             \
    } else                                                                                 \
      tk_dense_bwd_weight(B, IN, OUT, X, dY, dW, db, 0, OUT);                              \
  }
#define ENTRY(B, IN, OUT, SPLIT) \
  {B, IN, OUT, SPLIT, fwd_##B##_##IN##_##OUT, bwdd_##B##_##IN##_##OUT, bwdw_##B##_##IN##_##OUT},

#define LAYERS(X, B)       \
  X(B, 784, 1024, 0)       \
  X(B, 1024, 1024, 0)      \
  X(B, 1024, 10, 0)        \
  X(B, 3136, 256, 0)       \
  X(B, 256, 10, 0)         \
  X(B, 1960, 10, 0)
#ifdef BENCH_QUICK   // -DBENCH_QUICK: the batch-32 layer shapes only, a quick build for A/B runs
#define ALL(X) LAYERS(X, 32)
#else
#define ALL(X)    \
  LAYERS(X, 32)   \
  LAYERS(X, 64)   \
  LAYERS(X, 128)  \
  LAYERS(X, 256)  \
  X(5, 7, 10, 0)  \
  X(3, 7, 10, 0)  \
  X(13, 37, 53, 1) \
  X(11, 100, 97, 1) \
  X(1, 1, 1, 0)
#endif

ALL(SHAPE)
static const Shape shapes[] = {ALL(ENTRY)};

// CPU time of this thread: the 2-core machine is shared with concurrent work, and time
// slices given to other processes must not count against the kernel.
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *randv(long n, unsigned *seed) {
  float *p = aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
  for (long i = 0; i < n; i++) {
    *seed = *seed * 1664525u + 1013904223u;
    p[i] = (float)((*seed >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
  }
  return p;
}

// max |got - ref| / max |ref|
static double relerr(const float *got, const double *ref, long n) {
  double e = 0, m = 1e-30;
  for (long i = 0; i < n; i++) {
    e = fmax(e, fabs(got[i] - ref[i]));
    m = fmax(m, fabs(ref[i]));
  }
  return e / m;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

// Best of 9 samples of the (thread CPU) time per call, each sample >= ~20 ms of calls.
#define TIME(call, out)                                                 \
  do {                                                                  \
    call;                                                               \
    double t0 = now();                                                  \
    long reps = 0;                                                      \
    while (now() - t0 < 0.02) { call; reps++; }                         \
    double s[9];                                                        \
    for (int q = 0; q < 9; q++) {                                       \
      double t = now();                                                 \
      for (long r = 0; r < reps; r++) call;                             \
      s[q] = (now() - t) / reps;                                        \
    }                                                                   \
    qsort(s, 9, sizeof s[0], cmp);                                      \
    out = s[0];                                                         \
  } while (0)

// The generic entry points on a sub-tile, with padded leading dims and both accumulate
// modes, against the reference; cells outside the tile must stay untouched. Returns the
// number of failures.
static int check_generic(void) {
  static const long dims[][7] = {  // M, N, K, m0, m1, n0, n1
      {37, 53, 29, 3, 34, 5, 50}, {20, 100, 200, 0, 20, 0, 100}, {9, 7, 70, 1, 8, 2, 7},
      {64, 96, 10, 8, 64, 48, 96}};
  unsigned seed = 777;
  int bad = 0;
  for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++)
    for (int kind = 0; kind < 3; kind++)  // nn, tn, nt
      for (int accumulate = 0; accumulate < 2; accumulate++) {
        long M = dims[d][0], N = dims[d][1], K = dims[d][2];
        long m0 = dims[d][3], m1 = dims[d][4], n0 = dims[d][5], n1 = dims[d][6];
        long ar = kind == 1 ? K : M, ac = kind == 1 ? M : K;  // A stored (ar, ac)
        long br = kind == 2 ? N : K, bc = kind == 2 ? K : N;  // B stored (br, bc)
        long lda = ac + 3, ldb = bc + 5, ldc = N + 7;
        float *A = randv(ar * lda, &seed), *Bm = randv(br * ldb, &seed);
        float *C = randv(M * ldc, &seed), *C0 = malloc(M * ldc * sizeof(float));
        memcpy(C0, C, M * ldc * sizeof(float));
        if (kind == 0) tk_gemm_nn(M, N, K, A, lda, Bm, ldb, C, ldc, accumulate, m0, m1, n0, n1);
        if (kind == 1) tk_gemm_tn(M, N, K, A, lda, Bm, ldb, C, ldc, accumulate, m0, m1, n0, n1);
        if (kind == 2) tk_gemm_nt(M, N, K, A, lda, Bm, ldb, C, ldc, accumulate, m0, m1, n0, n1);
        double e = 0, mx = 1e-30;
        for (long m = 0; m < M; m++)
          for (long n = 0; n < N; n++) {
            double r = C0[m * ldc + n];
            if (m >= m0 && m < m1 && n >= n0 && n < n1) {
              if (!accumulate) r = 0;
              for (long k = 0; k < K; k++) {
                double a = kind == 1 ? A[k * lda + m] : A[m * lda + k];
                double b = kind == 2 ? Bm[n * ldb + k] : Bm[k * ldb + n];
                r += a * b;
              }
            }
            e = fmax(e, fabs(C[m * ldc + n] - r));
            mx = fmax(mx, fabs(r));
          }
        int ok = e / mx < 1e-3;
        bad += !ok;
        if (!ok)
          printf("tk_gemm_%s M=%ld N=%ld K=%ld acc=%d: err %.1e FAIL\n",
                 kind == 0 ? "nn" : kind == 1 ? "tn" : "nt", M, N, K, accumulate, e / mx);
        free(A); free(Bm); free(C); free(C0);
      }
  printf("generic tk_gemm_nn/tn/nt on sub-tiles, padded leading dims, accumulate 0/1: %s\n",
         bad ? "FAIL" : "ok");
  return bad;
}

int main(int argc, char **argv) {
  int timing = !(argc > 1 && strcmp(argv[1], "--check") == 0);
  unsigned seed = 12345;
  int bad = 0;
  printf("%-18s %9s %9s %9s   %9s %9s %9s\n", "B x IN x OUT", "fwd", "bwd_data", "bwd_wt",
         "err_fwd", "err_bwdd", "err_bwdw");
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const Shape *sh = &shapes[s];
    long B = sh->B, IN = sh->IN, OUT = sh->OUT;
    if (getenv("BENCH_B") && B != atol(getenv("BENCH_B"))) continue;   // one batch size only
    float *X = randv(B * IN, &seed), *W = randv(IN * OUT, &seed), *bias = randv(OUT, &seed);
    float *dY = randv(B * OUT, &seed), *Y = randv(B * OUT, &seed), *dX = randv(B * IN, &seed);
    float *dW0 = randv(IN * OUT, &seed), *db0 = randv(OUT, &seed);
    float *dW = malloc(IN * OUT * sizeof(float)), *db = malloc(OUT * sizeof(float));
    memcpy(dW, dW0, IN * OUT * sizeof(float));
    memcpy(db, db0, OUT * sizeof(float));
    double *ry = malloc(B * OUT * sizeof(double)), *rx = malloc(B * IN * sizeof(double));
    double *rw = malloc((IN * OUT + OUT) * sizeof(double));
    // Naive references in double.
    for (long b = 0; b < B; b++)
      for (long o = 0; o < OUT; o++) {
        double a = bias[o];
        for (long i = 0; i < IN; i++) a += (double)X[b * IN + i] * W[i * OUT + o];
        ry[b * OUT + o] = a;
      }
    for (long b = 0; b < B; b++)
      for (long i = 0; i < IN; i++) {
        double a = 0;
        for (long o = 0; o < OUT; o++) a += (double)dY[b * OUT + o] * W[i * OUT + o];
        rx[b * IN + i] = a;
      }
    for (long i = 0; i < IN; i++)
      for (long o = 0; o < OUT; o++) {
        double a = dW0[i * OUT + o];
        for (long b = 0; b < B; b++) a += (double)X[b * IN + i] * dY[b * OUT + o];
        rw[i * OUT + o] = a;
      }
    for (long o = 0; o < OUT; o++) {
      double a = db0[o];
      for (long b = 0; b < B; b++) a += dY[b * OUT + o];
      rw[IN * OUT + o] = a;
    }
    sh->fwd(X, W, bias, Y);
    sh->bwd_data(dY, W, dX);
    sh->bwd_weight(X, dY, dW, db);
    double ef = relerr(Y, ry, B * OUT), ed = relerr(dX, rx, B * IN);
    double ew = fmax(relerr(dW, rw, IN * OUT), relerr(db, rw + IN * OUT, OUT));
    // bias == NULL path of fwd: compare against ref - bias.
    for (long b = 0; b < B; b++)
      for (long o = 0; o < OUT; o++) ry[b * OUT + o] -= bias[o];
    tk_dense_fwd(B, IN, OUT, X, W, NULL, Y, 0, OUT);
    ef = fmax(ef, relerr(Y, ry, B * OUT));
    int ok = ef < 1e-3 && ed < 1e-3 && ew < 1e-3 && ef == ef && ed == ed && ew == ew;
    bad += !ok;
    double tf = 0, td = 0, tw = 0;
    if (timing && B * IN * OUT > 10000) {
      TIME(sh->fwd(X, W, bias, Y), tf);
      TIME(sh->bwd_data(dY, W, dX), td);
      TIME(sh->bwd_weight(X, dY, dW, db), tw);
    }
    double fl = 2.0 * B * IN * OUT * 1e-9;
    char name[64];
    snprintf(name, sizeof name, "%ldx%ldx%ld%s", B, IN, OUT, sh->split ? " (2 tiles)" : "");
    if (tf > 0)
      printf("%-18s %9.1f %9.1f %9.1f   %9.1e %9.1e %9.1e %s\n", name, fl / tf, fl / td,
             fl / tw, ef, ed, ew, ok ? "ok" : "FAIL");
    else
      printf("%-18s %9s %9s %9s   %9.1e %9.1e %9.1e %s\n", name, "-", "-", "-", ef, ed, ew,
             ok ? "ok" : "FAIL");
    fflush(stdout);
    free(X); free(W); free(bias); free(dY); free(Y); free(dX); free(dW0); free(db0);
    free(dW); free(db); free(ry); free(rx); free(rw);
  }
#ifndef BENCH_QUICK
  bad += check_generic();
#endif
  printf("GFLOP/s = 2*B*IN*OUT / best time per call; %s\n", bad ? "SOME FAILED" : "all ok");
  return bad != 0;
}
