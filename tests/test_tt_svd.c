/* test_tt_svd.c: TT-SVD (compiler/plan/tt_svd.c) and `teslac compress` (compiler/driver/compress.c).
 *
 *   bound      ||W - TT(W)||_F <= eps ||W||_F on random and decaying-spectrum weights, for eps
 *              0.5, 0.1, 0.01 and mode splits d = 2..4 (some padded), the error rebuilt here
 *              from the cores by the spec's formula (weight[j, i] = core.0[:, i0, j0, :] @ ...)
 *   exact      a tensor made from known random cores comes back with those ranks, error < 1e-5
 *   ranks      a fixed maximum rank gives min(R, unfolding bound) at every cut, the left cores
 *              orthonormal even where the singular values are zero
 *   timing     a 1024 x 1024 weight at modes [4, 4, 8, 8] x [8, 8, 4, 4] (printed, not asserted)
 *   cli        `teslac compress` on a small conv + dense model trained for three steps: the output
 *              evaluates with the TT spec, is exact at full ranks (every class probability of
 *              every sample as the dense model's); every bad input exits 1 or 2 with its
 *              message and writes no file
 *
 * The built teslac comes from meson in $TESLAC. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "teslac.h"
#include "tesla_rt.h"

#include <check.h>

#include "cli.h"
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static uint64_t rng_state = 88172645463325252ull;
static void rng_seed(uint64_t s) { rng_state = s * 2654435761ull + 88172645463325252ull; }
static double urand(void) {   /* (-1, 1), xorshift64 */
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0 * 2 - 1;
}

/* ---- the weight <-> tensor mapping, written here independently of compress.c ------------ */

/* T (Np Mp) zero-padded and interleaved: T[(i0 j0)(i1 j1)..] = W[j, i] */
static double *interleave(const double *W, int64_t N, int64_t M, int d, const int64_t *m, const int64_t *n) {
  int64_t Mp = 1, Np = 1;
  for (int k = 0; k < d; k++) Mp *= m[k], Np *= n[k];
  double *T = calloc((size_t)(Mp * Np), sizeof(double));
  for (int64_t j = 0; j < N; j++)
    for (int64_t i = 0; i < M; i++) {
      int64_t at = 0, ri = i, rj = j, stride = 1;
      for (int k = d - 1; k >= 0; k--) {
        at += (ri % m[k] * n[k] + rj % n[k]) * stride;
        stride *= m[k] * n[k], ri /= m[k], rj /= n[k];
      }
      T[at] = W[j * M + i];
    }
  return T;
}

/* ||W - TT||_F over the real (N, M) region, the weight rebuilt element by element:
 * weight[j, i] = core.0[:, i0, j0, :] @ core.1[:, i1, j1, :] @ ... (cores (r, m, n, r')) */
static double rebuilt_error(const double *W, int64_t N, int64_t M, int d, const int64_t *m, const int64_t *n,
                            float *const *cores, const int64_t *r) {
  double e2 = 0, v[512], w[512];
  for (int64_t j = 0; j < N; j++)
    for (int64_t i = 0; i < M; i++) {
      int64_t ik[8], jk[8], ri = i, rj = j;
      for (int k = d - 1; k >= 0; k--) ik[k] = ri % m[k], jk[k] = rj % n[k], ri /= m[k], rj /= n[k];
      v[0] = 1;
      for (int k = 0; k < d; k++) {
        for (int64_t b = 0; b < r[k + 1]; b++) {
          double s = 0;
          for (int64_t a = 0; a < r[k]; a++)
            s += v[a] * cores[k][((a * m[k] + ik[k]) * n[k] + jk[k]) * r[k + 1] + b];
          w[b] = s;
        }
        memcpy(v, w, sizeof(double) * (size_t)r[k + 1]);
      }
      e2 += (W[j * M + i] - v[0]) * (W[j * M + i] - v[0]);
    }
  return sqrt(e2);
}

/* the left cores (r_k q_k, r_{k+1}) have orthonormal columns */
static double orth_error(float *const *cores, int n, const int64_t *q, const int64_t *r) {
  double worst = 0;
  for (int k = 0; k < n - 1; k++) {
    int64_t rows = r[k] * q[k], c = r[k + 1];
    for (int64_t a = 0; a < c; a++)
      for (int64_t b = 0; b < c; b++) {
        double s = 0;
        for (int64_t i = 0; i < rows; i++) s += (double)cores[k][i * c + a] * cores[k][i * c + b];
        double e = fabs(s - (a == b));
        if (e > worst) worst = e;
      }
  }
  return worst;
}

static int64_t unfolding_bound(int n, const int64_t *q, int cut) {
  int64_t l = 1, r = 1;
  for (int k = 0; k < cut; k++) l *= q[k];
  for (int k = cut; k < n; k++) r *= q[k];
  return l < r ? l : r;
}

static void free_cores(float **cores, int n) {
  for (int k = 0; k < n; k++) free(cores[k]), cores[k] = NULL;
}

/* ---- the bound ---------------------------------------------------------------------------- */

typedef struct Split { int64_t N, M; int d; int64_t m[4], n[4]; } Split;
static const Split splits[] = {
    {20, 30, 2, {6, 5}, {4, 5}},
    {24, 36, 3, {3, 4, 3}, {2, 3, 4}},
    {24, 36, 4, {2, 3, 2, 3}, {2, 2, 3, 2}},
    {30, 50, 3, {3, 3, 6}, {2, 4, 4}},         /* padded: 50 -> 54 inputs, 30 -> 32 outputs */
    {13, 21, 4, {2, 2, 2, 3}, {2, 2, 2, 2}},   /* padded: 21 -> 24, 13 -> 16 */
};

START_TEST(bound) {
  const double epss[] = {0.5, 0.1, 0.01};
  for (int s = 0; s < (int)(sizeof splits / sizeof *splits); s++)
    for (int kind = 0; kind < 2; kind++) {
      const Split *sp = &splits[s];
      int64_t N = sp->N, M = sp->M;
      double *W = malloc(sizeof(double) * (size_t)(N * M));
      rng_seed((uint64_t)(s * 2 + kind + 1));
      if (kind == 0)
        for (int64_t i = 0; i < N * M; i++) W[i] = urand();
      else {   /* singular values 2^(-k/2): the ranks move with eps */
        memset(W, 0, sizeof(double) * (size_t)(N * M));
        for (int k = 0; k < (N < M ? N : M); k++) {
          double u[64], v[64], sk = pow(2, -k / 2.0);
          for (int64_t j = 0; j < N; j++) u[j] = urand();
          for (int64_t i = 0; i < M; i++) v[i] = urand();
          for (int64_t j = 0; j < N; j++)
            for (int64_t i = 0; i < M; i++) W[j * M + i] += sk * u[j] * v[i];
        }
      }
      double *T = interleave(W, N, M, sp->d, sp->m, sp->n);
      int64_t q[4];
      for (int k = 0; k < sp->d; k++) q[k] = sp->m[k] * sp->n[k];
      double wn = 0;
      for (int64_t i = 0; i < N * M; i++) wn += W[i] * W[i];
      wn = sqrt(wn);
      for (int e = 0; e < 3; e++) {
        float *cores[4];
        int64_t r[5];
        double rel;
        char err[256] = "";
        ck_assert_msg(tt_svd(T, sp->d, q, epss[e], NULL, cores, r, &rel, err, sizeof err) == 0, "%s", err);
        double mine = rebuilt_error(W, N, M, sp->d, sp->m, sp->n, cores, r) / wn;
        bool padded = s >= 3;
        printf("  bound %dx%d d=%d %-8s eps %-4g ranks", (int)N, (int)M, sp->d, kind ? "decaying" : "random", epss[e]);
        for (int k = 1; k < sp->d; k++) printf(" %lld", (long long)r[k]);
        printf(": error %.4g (rebuilt here %.4g)\n", rel, mine);
        ck_assert_msg(rel <= epss[e], "error %g > eps %g", rel, epss[e]);
        ck_assert_msg(mine <= epss[e], "rebuilt error %g > eps %g", mine, epss[e]);
        /* padded: the padding's error counts in rel, not in mine */
        if (padded) ck_assert(mine <= rel * (1 + 1e-6) + 1e-9);
        else ck_assert_msg(fabs(mine - rel) <= 1e-6 + 1e-4 * rel, "%g vs %g", mine, rel);
        ck_assert_int_eq(r[0], 1);
        ck_assert_int_eq(r[sp->d], 1);
        for (int k = 1; k < sp->d; k++) ck_assert(r[k] >= 1 && r[k] <= unfolding_bound(sp->d, q, k));
        ck_assert_msg(orth_error(cores, sp->d, q, r) < 1e-5, "left cores not orthonormal");
        free_cores(cores, sp->d);
      }
      free(T), free(W);
    }
}
END_TEST

/* ---- exact recovery ----------------------------------------------------------------------- */

/* T from random cores (r_k, q_k, r_{k+1}) */
static double *from_cores(int n, const int64_t *q, const int64_t *r) {
  double *cores[8] = {0};
  for (int k = 0; k < n; k++) {
    cores[k] = malloc(sizeof(double) * (size_t)(r[k] * q[k] * r[k + 1]));
    for (int64_t i = 0; i < r[k] * q[k] * r[k + 1]; i++) cores[k][i] = urand();
  }
  int64_t P = q[0];
  double *F = malloc(sizeof(double) * (size_t)(q[0] * r[1]));
  memcpy(F, cores[0], sizeof(double) * (size_t)(q[0] * r[1]));
  for (int k = 1; k < n; k++) {
    int64_t row = q[k] * r[k + 1];
    double *G = calloc((size_t)(P * row), sizeof(double));
    for (int64_t p = 0; p < P; p++)
      for (int64_t a = 0; a < r[k]; a++)
        for (int64_t c = 0; c < row; c++) G[p * row + c] += F[p * r[k] + a] * cores[k][a * row + c];
    free(F);
    F = G, P *= q[k];
  }
  for (int k = 0; k < n; k++) free(cores[k]);
  return F;
}

typedef struct Known { int n; int64_t q[5], r[6]; } Known;
static const Known knowns[] = {
    {2, {5, 7}, {1, 3, 1}},
    {3, {9, 8, 6}, {1, 3, 4, 1}},            /* a conv's shape: the 3x3 spatial core, two more */
    {4, {4, 6, 5, 3}, {1, 2, 3, 2, 1}},
    {5, {3, 4, 2, 5, 3}, {1, 2, 4, 3, 2, 1}},
};

START_TEST(exact) {
  for (int c = 0; c < (int)(sizeof knowns / sizeof *knowns); c++) {
    const Known *kn = &knowns[c];
    rng_seed(100 + (uint64_t)c);
    double *T = from_cores(kn->n, kn->q, kn->r);
    for (int how = 0; how < 2; how++) {   /* by eps, by the known ranks as maxima */
      float *cores[5];
      int64_t r[6];
      double rel;
      char err[256] = "";
      ck_assert_msg(tt_svd(T, kn->n, kn->q, how ? -1 : 1e-6, how ? kn->r + 1 : NULL, cores, r, &rel, err,
                           sizeof err) == 0, "%s", err);
      printf("  exact n=%d %s: ranks", kn->n, how ? "max_rank" : "eps 1e-6");
      for (int k = 0; k <= kn->n; k++) printf(" %lld", (long long)r[k]);
      printf(", error %.3g\n", rel);
      for (int k = 0; k <= kn->n; k++) ck_assert_int_eq(r[k], kn->r[k]);
      ck_assert_msg(rel < 1e-5, "error %g", rel);
      free_cores(cores, kn->n);
    }
    free(T);
  }
}
END_TEST

/* ---- fixed ranks -------------------------------------------------------------------------- */

START_TEST(max_ranks) {
  int64_t q[4] = {4, 5, 6, 3};
  rng_seed(7);
  double *T = malloc(sizeof(double) * 360);
  for (int i = 0; i < 360; i++) T[i] = urand();
  const int64_t Rs[] = {1, 3, 100};
  for (int x = 0; x < 3; x++) {
    int64_t mr[3] = {Rs[x], Rs[x], Rs[x]}, r[5];
    float *cores[4];
    double rel;
    char err[256] = "";
    ck_assert_msg(tt_svd(T, 4, q, -1, mr, cores, r, &rel, err, sizeof err) == 0, "%s", err);
    printf("  rank %lld: ranks %lld %lld %lld, error %.4g\n", (long long)Rs[x], (long long)r[1], (long long)r[2],
           (long long)r[3], rel);
    for (int k = 1; k < 4; k++) {
      int64_t b = unfolding_bound(4, q, k);
      ck_assert_int_eq(r[k], Rs[x] < b ? Rs[x] : b);
    }
    if (Rs[x] == 100) ck_assert_msg(rel < 1e-5, "full ranks: error %g", rel);
    else ck_assert(rel > 0.01 && rel < 1);
    ck_assert(orth_error(cores, 4, q, r) < 1e-5);
    free_cores(cores, 4);
  }
  /* per cut, and with eps: the smaller of the two */
  int64_t mr[3] = {2, 7, 1}, r[5];
  float *cores[4];
  ck_assert(tt_svd(T, 4, q, -1, mr, cores, r, NULL, NULL, 0) == 0);
  ck_assert(r[1] == 2 && r[2] == 7 && r[3] == 1);
  free_cores(cores, 4);
  ck_assert(tt_svd(T, 4, q, 0.5, mr, cores, r, NULL, NULL, 0) == 0);
  ck_assert(r[1] <= 2 && r[2] <= 7 && r[3] <= 1);
  free_cores(cores, 4);
  free(T);

  /* ranks above the true ones: zero singular values, still orthonormal and exact */
  rng_seed(8);
  const Known *kn = &knowns[2];
  T = from_cores(kn->n, kn->q, kn->r);
  int64_t five[3] = {5, 5, 5};
  double rel;
  ck_assert(tt_svd(T, kn->n, kn->q, -1, five, cores, r, &rel, NULL, 0) == 0);
  printf("  rank 5 over true ranks 2 3 2: ranks %lld %lld %lld, error %.3g\n", (long long)r[1], (long long)r[2],
         (long long)r[3], rel);
  ck_assert(r[1] == 4 && r[2] == 5 && r[3] == 3);
  ck_assert_msg(rel < 1e-5, "error %g", rel);
  ck_assert_msg(orth_error(cores, kn->n, kn->q, r) < 1e-5, "not orthonormal: %g", orth_error(cores, kn->n, kn->q, r));
  free_cores(cores, kn->n);
  free(T);

  /* a zero tensor */
  double Z[12] = {0};
  int64_t qz[2] = {3, 4}, two = 2;
  ck_assert(tt_svd(Z, 2, qz, 0.1, NULL, cores, r, &rel, NULL, 0) == 0);
  ck_assert(r[1] == 1 && rel == 0);
  free_cores(cores, 2);
  ck_assert(tt_svd(Z, 2, qz, -1, &two, cores, r, &rel, NULL, 0) == 0);
  ck_assert(r[1] == 2 && rel == 0);
  free_cores(cores, 2);
  /* one mode: the tensor itself */
  ck_assert(tt_svd(Z, 1, qz, 0.1, NULL, cores, r, &rel, NULL, 0) == 0);
  ck_assert(r[0] == 1 && r[1] == 1);
  free_cores(cores, 1);
}
END_TEST

START_TEST(bad_args) {
  double T[12] = {1};
  float *cores[20];
  int64_t r[21], q[3] = {3, 0, 4}, zero = 0;
  char err[256];
  ck_assert(tt_svd(T, 0, q, 0.1, NULL, cores, r, NULL, err, sizeof err) < 0);
  ck_assert_msg(strstr(err, "modes"), "%s", err);
  ck_assert(tt_svd(T, 17, q, 0.1, NULL, cores, r, NULL, err, sizeof err) < 0);
  ck_assert(tt_svd(T, 3, q, 0.1, NULL, cores, r, NULL, err, sizeof err) < 0);
  ck_assert_msg(strstr(err, "mode 1"), "%s", err);
  q[1] = 1;
  ck_assert(tt_svd(T, 2, q, -1, &zero, cores, r, NULL, err, sizeof err) < 0);
  ck_assert_msg(strstr(err, "rank"), "%s", err);
  ck_assert(tt_svd(T, 2, q, NAN, NULL, cores, r, NULL, err, sizeof err) < 0);
}
END_TEST

/* ---- 1024 x 1024 -------------------------------------------------------------------------- */

START_TEST(timing_1024) {
  /* a trained layer's spectrum, roughly: 64 directions decaying as 1/(1 + k/4), plus noise */
  int64_t N = 1024, M = 1024, m[4] = {4, 4, 8, 8}, n[4] = {8, 8, 4, 4}, q[4] = {32, 32, 32, 32};
  double *W = calloc((size_t)(N * M), sizeof(double));
  rng_seed(1024);
  double *u = malloc(sizeof(double) * 1024), *v = malloc(sizeof(double) * 1024);
  for (int k = 0; k < 64; k++) {
    double sk = 1.0 / (1 + k / 4.0);
    for (int i = 0; i < 1024; i++) u[i] = urand() * sk, v[i] = urand();
    for (int64_t j = 0; j < N; j++)
      for (int64_t i = 0; i < M; i++) W[j * M + i] += u[j] * v[i];
  }
  for (int64_t i = 0; i < N * M; i++) W[i] += 0.05 * urand();
  double *T = interleave(W, N, M, 4, m, n);
  /* eps 0.5 keeps ~470 ranks at the middle cut: seconds unoptimized or under the sanitizers */
#if defined(__OPTIMIZE__) && !defined(__SANITIZE_ADDRESS__)
  int nruns = 3;
#else
  int nruns = 2;
  printf("  1024x1024 at eps 0.5: skipped in an unoptimized or sanitized build\n");
#endif
  struct { double eps; int64_t rank; } runs[] = {{-1, 8}, {-1, 16}, {0.5, 0}};
  for (int x = 0; x < nruns; x++) {
    int64_t mr[3] = {runs[x].rank, runs[x].rank, runs[x].rank}, r[5];
    const int64_t *maxr = runs[x].rank ? mr : NULL;
    float *cores[4];
    double rel = -1, t0 = ts_now();
    ck_assert(tt_svd(T, 4, q, runs[x].eps, maxr, cores, r, NULL, NULL, 0) == 0);
    double t1 = ts_now(), t2 = t1;
    free_cores(cores, 4);
    if (runs[x].rank) {   /* the error check (the whole train rebuilt) costs about as much again */
      ck_assert(tt_svd(T, 4, q, runs[x].eps, maxr, cores, r, &rel, NULL, 0) == 0);
      t2 = ts_now();
      free_cores(cores, 4);
    }
    printf("  1024x1024 modes [4,4,8,8] x [8,8,4,4], %s %g: ranks %lld %lld %lld: TT-SVD %.1f ms", runs[x].rank ? "rank" : "eps",
           runs[x].rank ? (double)runs[x].rank : runs[x].eps, (long long)r[1], (long long)r[2], (long long)r[3], (t1 - t0) * 1e3);
    if (rel >= 0) printf("; with the error check (%.4f) %.1f ms", rel, (t2 - t1) * 1e3);
    printf("\n");
  }
  free(T), free(W), free(u), free(v);
}
END_TEST

/* ---- teslac compress ---------------------------------------------------------------------- */



/* runs teslac in tmpdir (the specs' relative data paths resolve there) */
static Cli cli_v(const char *const *args) {
  char *scratch = xprintf("%s/..", tmpdir);
  Cli r = cli_run(teslac_bin, scratch, tmpdir, args);
  free(scratch);
  return r;
}
#define CLI(...) cli_v((const char *const[]){__VA_ARGS__, NULL})


static void cli_ok(const Cli *c, const char *what) {
  ck_assert_msg(c->status == 0, "%s: teslac exited %d\nstdout:\n%s\nstderr:\n%s", what, c->status, c->out, c->err);
}

static void put_file(const char *name, const char *text) {
  char *p = xprintf("%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  NEED(f != NULL);
  fputs(text, f);
  fclose(f);
  free(p);
}

static bool exists(const char *name) {
  char *p = xprintf("%s/%s", tmpdir, name);
  struct stat st;
  bool e = stat(p, &st) == 0;
  free(p);
  return e;
}

/* no file in tmpdir whose name contains `part` (the output or a temporary of it) */
static bool no_file_like(const char *part) {
  DIR *d = opendir(tmpdir);
  bool none = true;
  for (struct dirent *de; d && (de = readdir(d));)
    if (strstr(de->d_name, part)) none = false;
  if (d) closedir(d);
  return none;
}

static void write_idx(const char *name, const uint32_t *dims, int nd, const uint8_t *data, size_t n) {
  char *p = xprintf("%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  NEED(f != NULL);
  uint8_t h[4] = {0, 0, 8, (uint8_t)nd};
  fwrite(h, 1, 4, f);
  for (int k = 0; k < nd; k++) {
    uint8_t b[4] = {dims[k] >> 24, dims[k] >> 16, dims[k] >> 8, dims[k]};
    fwrite(b, 1, 4, f);
  }
  fwrite(data, 1, n, f);
  fclose(f);
  free(p);
}

/* The model: a conv (3 x 3, 1 -> 8), batchnorm, a second conv (8 -> 12), a dense 192 -> 23
 * (23 is prime: its modes are padded) and the head. `tt`: what the three weighted layers get. */
static char *model(const char *name, const char *tt1, const char *tt2, const char *tt3) {
  return xprintf("tesla: 1\nname: %s\ninput: [1, 8, 8]\nclasses: 4\nlayers:\n"
                 "  - conv: {filters: 8, kernel: 3, padding: same, name: c1%s}\n"
                 "  - batchnorm: {}\n"
                 "  - relu: {}\n"
                 "  - maxpool: {size: 2}\n"
                 "  - conv: {filters: 12, kernel: 3, padding: same, name: c2%s}\n"
                 "  - relu: {}\n"
                 "  - dense: {units: 23, name: fc%s}\n"
                 "  - relu: {}\n"
                 "  - dense: {units: 4, name: head}\n"
                 "  - softmax: {}\n"
                 "train: {optimizer: adam, lr: 0.01, epochs: 1, batch: 16, seed: 3}\n"
                 "data:\n  train: {images: img.idx, labels: lab.idx}\n  test: {images: img.idx, labels: lab.idx}\n"
                 "  scale: 255\n",
                 name, tt1, tt2, tt3);
}

static void setup_cli(void) {
  enum { NS = 64 };
  uint8_t img[NS * 64], lab[NS];
  rng_seed(5);
  for (int i = 0; i < NS * 64; i++) img[i] = (uint8_t)(128 + 127 * urand());
  for (int i = 0; i < NS; i++) lab[i] = (uint8_t)((int)(4 * (urand() + 1) / 2) & 3);
  uint32_t di[3] = {NS, 8, 8}, dl[1] = {NS};
  write_idx("img.idx", di, 3, img, sizeof img);
  write_idx("lab.idx", dl, 1, lab, sizeof lab);
  char *s;
  put_file("dense.yaml", s = model("small", "", "", "")), free(s);
  put_file("tt.yaml", s = model("small", ", tt: {rank: 2}", ", tt: {rank: 2}", ", tt: {rank: 2}")), free(s);
  /* full ranks (clamped to the unfolding bounds): c2 with two channel cores, fc padded */
  put_file("full.yaml", s = model("small", ", tt: {rank: 4096}", ", tt: {in_modes: [2, 4], out_modes: [3, 4], rank: 4096}",
                                  ", tt: {rank: 4096}")), free(s);
  put_file("broken.yaml", "tesla: 1\nlayers: [\n");
  put_file("garbage.st", "this is not a safetensors file\n");
}

/* The dense checkpoint, trained once for the cli tests */
static void dense_ckpt(void) {
  if (exists("dense.st")) return;
  Cli c = CLI("train", "dense.yaml", "--steps", "3", "-o", "dense.st");
  cli_ok(&c, "train dense");
  cli_free(&c);
}

/* "test loss X  test accuracy Y" of `teslac eval spec --weights w` */
static char *eval_line(const char *spec, const char *w) {
  Cli c = CLI("eval", spec, "--weights", w);
  cli_ok(&c, spec);
  char *s = strdup(c.out);
  cli_free(&c);
  return s;
}

START_TEST(cli_good) {
  dense_ckpt();
  /* the planned ranks: evaluates and fine-tunes from the file */
  Cli c = CLI("compress", "tt.yaml", "--weights", "dense.st", "-o", "out.st");
  cli_ok(&c, "compress");
  printf("%s", c.out);
  ck_assert_msg(strstr(c.out, "layer c1 (conv 3x3)") && strstr(c.out, "layer c2 (conv 3x3)") &&
                strstr(c.out, "layer fc (dense)") && strstr(c.out, "relative error") && strstr(c.out, " ms") &&
                strstr(c.out, "wrote out.st"), "%s", c.out);
  ck_assert_msg(strstr(c.out, "(padded: 23 -> 24 outputs)"), "fc's padding not shown:\n%s", c.out);
  ck_assert_msg(!strstr(c.out, "note:"), "%s", c.out);
  cli_free(&c);
  TsStFile f;
  TsErr e;
  char *p = xprintf("%s/out.st", tmpdir);
  ck_assert_msg(ts_st_read(p, &f, &e) == 0, "%s", e.msg);
  free(p);
  ck_assert_str_eq(ts_st_meta(&f, "format"), "tesla");
  ck_assert(ts_st_find(&f, "c1.core.0") && ts_st_find(&f, "c1.core.1") && ts_st_find(&f, "fc.core.1") &&
            ts_st_find(&f, "fc.bias") && ts_st_find(&f, "1.running_var") && ts_st_find(&f, "head.weight") &&
            ts_st_find(&f, "1.num_batches_tracked"));
  ck_assert(!ts_st_find(&f, "fc.weight") && !ts_st_find(&f, "c1.weight"));
  for (int i = 0; i < f.ntensors; i++) ck_assert_msg(strncmp(f.tensors[i].name, "__opt__", 7), "%s", f.tensors[i].name);
  ck_assert_int_eq(ts_st_find(&f, "c1.core.0")->shape[3], 2);
  ts_st_free(&f);
  /* eval reads weights as train --init does (every tensor of the plan, its shape checked) */
  free(eval_line("tt.yaml", "out.st"));

  /* full ranks: exact, so the TT model predicts as the dense one (the layout is right) */
  c = CLI("compress", "full.yaml", "--weights", "dense.st", "-o", "full.st");
  cli_ok(&c, "compress full");
  printf("%s", c.out);
  ck_assert_msg(strstr(c.out, "layer c2 (conv 3x3): in_modes [2, 4], out_modes [3, 4], ranks [9, 16]"), "%s", c.out);
  cli_free(&c);
  Cli pa = CLI("predict", "dense.yaml", "--weights", "dense.st", "--json");
  Cli pb = CLI("predict", "full.yaml", "--weights", "full.st", "--json");
  cli_ok(&pa, "predict dense"), cli_ok(&pb, "predict full");
  double worst = 0;
  int nscores = 0;
  for (const char *x = pa.out, *y = pb.out; (x = strstr(x, "\"scores\": [")) && (y = strstr(y, "\"scores\": ["));) {
    x += 11, y += 11;
    for (int k = 0; k < 4; k++, nscores++) {
      char *ex, *ey;
      double d = fabs(strtod(x, &ex) - strtod(y, &ey));
      worst = d > worst ? d : worst;
      x = ex + (*ex == ',' ? 1 : 0), y = ey + (*ey == ',' ? 1 : 0);
    }
  }
  printf("  full-rank tt against dense: %d class probabilities, largest difference %.2g\n", nscores, worst);
  ck_assert_int_eq(nscores, 64 * 4);
  ck_assert_msg(worst < 1e-4, "the full-rank tensor trains do not reproduce the dense model: %g", worst);
  cli_free(&pa), cli_free(&pb);

  /* --eps: the ranks come from the bound; a note says what spec --init needs */
  c = CLI("compress", "tt.yaml", "--weights", "dense.st", "-o", "eps.st", "--eps", "0.3");
  cli_ok(&c, "compress --eps");
  printf("%s", c.out);
  for (const char *s = c.out; (s = strstr(s, "relative error "));) {
    s += strlen("relative error ");
    ck_assert_msg(strtod(s, NULL) <= 0.3, "%s", c.out);
  }
  ck_assert_msg(strstr(c.out, "note:") && strstr(c.out, "tt: {in_modes: ["), "%s", c.out);
  cli_free(&c);
  /* --rank 1 */
  c = CLI("compress", "tt.yaml", "--weights", "dense.st", "-o", "r1.st", "--rank", "1");
  cli_ok(&c, "compress --rank");
  ck_assert_msg(strstr(c.out, "layer c1 (conv 3x3): in_modes [1], out_modes [8], ranks [1]"), "%s", c.out);
  cli_free(&c);

  /* another float dtype in: the same cores out */
  TsStFile in;
  p = xprintf("%s/dense.st", tmpdir);
  ck_assert(ts_st_read(p, &in, &e) == 0);
  free(p);
  TsStOut *t = calloc((size_t)in.ntensors, sizeof *t);
  double *w64 = NULL;
  for (int i = 0; i < in.ntensors; i++) {
    const TsTensor *s = &in.tensors[i];
    t[i] = (TsStOut){s->name, s->dtype, s->ndims, {0}, s->data};
    memcpy(t[i].shape, s->shape, sizeof s->shape);
    if (!strcmp(s->name, "fc.weight")) {
      size_t nel = s->nbytes / 4;
      float *f32 = malloc(s->nbytes);
      w64 = malloc(nel * sizeof(double));
      ts_tensor_to_f32(s, f32, nel, &e);
      for (size_t k = 0; k < nel; k++) w64[k] = f32[k];
      free(f32);
      t[i].dtype = TS_F64, t[i].data = w64;
    }
  }
  p = xprintf("%s/dense64.st", tmpdir);
  ck_assert(ts_st_write(p, t, in.ntensors, NULL, 0, &e) == 0);
  free(p), free(t), free(w64);
  ts_st_free(&in);
  c = CLI("compress", "tt.yaml", "--weights", "dense64.st", "-o", "out64.st");
  cli_ok(&c, "compress f64");
  cli_free(&c);
  TsStFile f1, f2;
  char *p1 = xprintf("%s/out.st", tmpdir), *p2 = xprintf("%s/out64.st", tmpdir);
  ck_assert(ts_st_read(p1, &f1, &e) == 0 && ts_st_read(p2, &f2, &e) == 0);
  const TsTensor *x1 = ts_st_find(&f1, "fc.core.0"), *x2 = ts_st_find(&f2, "fc.core.0");
  ck_assert(x1 && x2 && x1->nbytes == x2->nbytes && !memcmp(x1->data, x2->data, x1->nbytes));
  ts_st_free(&f1), ts_st_free(&f2);
  free(p1), free(p2);

  c = CLI("compress", "--help");
  cli_ok(&c, "--help");
  ck_assert_msg(strstr(c.out, "usage: teslac compress SPEC --weights DENSE -o OUT"), "%s", c.out);
  cli_free(&c);
  c = CLI("build", "tt.yaml");
  ck_assert_int_eq(c.status, 2);
  cli_free(&c);
}
END_TEST

/* dense.st with one tensor dropped, or one reshaped (its dims swapped) */
static void variant(const char *out, const char *drop, const char *reshape) {
  TsStFile in;
  TsErr e;
  char *p = xprintf("%s/dense.st", tmpdir);
  ck_assert(ts_st_read(p, &in, &e) == 0);
  free(p);
  TsStOut *t = calloc((size_t)in.ntensors, sizeof *t);
  int n = 0;
  for (int i = 0; i < in.ntensors; i++) {
    const TsTensor *s = &in.tensors[i];
    if (drop && !strcmp(s->name, drop)) continue;
    t[n] = (TsStOut){s->name, s->dtype, s->ndims, {0}, s->data};
    memcpy(t[n].shape, s->shape, sizeof s->shape);
    if (reshape && !strcmp(s->name, reshape)) t[n].shape[0] = s->shape[1], t[n].shape[1] = s->shape[0];
    n++;
  }
  p = xprintf("%s/%s", tmpdir, out);
  ck_assert(ts_st_write(p, t, n, NULL, 0, &e) == 0);
  free(p), free(t);
  ts_st_free(&in);
}

START_TEST(cli_bad) {
  dense_ckpt();
  variant("no-fc.st", "fc.weight", NULL);
  variant("no-bias.st", "c2.bias", NULL);
  variant("swapped.st", NULL, "fc.weight");
  struct { int want; const char *args[12]; const char *needle; } cases[] = {
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--frobnicate"}, "unknown option '--frobnicate'"},
      {2, {"compress", "tt.yaml", "-o", "bad.st"}, "--weights"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st"}, "-o OUT"},
      {2, {"compress", "--weights", "dense.st", "-o", "bad.st"}, "missing SPEC"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--eps", "0.1", "--rank", "3"}, "not both"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--eps", "0"}, "(0, 1)"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--eps", "1"}, "(0, 1)"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--eps", "-0.2"}, "(0, 1)"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--eps", "lots"}, "(0, 1)"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--rank", "0"}, "--rank"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--rank", "2.5"}, "--rank"},
      {2, {"compress", "tt.yaml", "--weights", "dense.st", "-o", "bad.st", "--rank"}, "needs a value"},
      {2, {"compress", "tt.yaml", "dense.yaml", "--weights", "dense.st", "-o", "bad.st"}, "one too many"},
      {1, {"compress", "dense.yaml", "--weights", "dense.st", "-o", "bad.st"}, "no layer as a tensor train"},
      {1, {"compress", "broken.yaml", "--weights", "dense.st", "-o", "bad.st"}, "broken.yaml"},
      {1, {"compress", "tt.yaml", "--weights", "missing.st", "-o", "bad.st"}, "missing.st"},
      {1, {"compress", "tt.yaml", "--weights", "garbage.st", "-o", "bad.st"}, "garbage.st"},
      {1, {"compress", "tt.yaml", "--weights", "no-fc.st", "-o", "bad.st"}, "no tensor 'fc.weight'"},
      {1, {"compress", "tt.yaml", "--weights", "no-bias.st", "-o", "bad.st"}, "no tensor 'c2.bias'"},
      {1, {"compress", "tt.yaml", "--weights", "swapped.st", "-o", "bad.st"}, "'fc.weight' is (192, 23)"},
      {1, {"compress", "tt.yaml", "--weights", "out.st", "-o", "bad.st"}, "cores already"},
  };
  /* out.st: an output of compress (its cores, no dense weight) */
  Cli c = CLI("compress", "tt.yaml", "--weights", "dense.st", "-o", "out.st");
  cli_ok(&c, "compress");
  cli_free(&c);
  for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) {
    c = cli_v(cases[i].args);
    char cmd[256] = "";
    for (int k = 0; cases[i].args[k]; k++) snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", cases[i].args[k]);
    ck_assert_msg(c.status == cases[i].want, "teslac%s: exit %d, expected %d\n%s", cmd, c.status, cases[i].want, c.err);
    ck_assert_msg(strstr(c.err, cases[i].needle), "teslac%s: the message lacks '%s':\n%s", cmd, cases[i].needle, c.err);
    if (cases[i].want == 2) ck_assert_msg(strstr(c.err, "see 'teslac compress --help'"), "%s", c.err);
    ck_assert_msg(no_file_like("bad.st"), "teslac%s left an output file", cmd);
    printf("  cli exit %d:%s\n    %s", c.status, cmd, c.err);
    cli_free(&c);
  }
}
END_TEST

static Suite *tt_svd_suite(void) {
  Suite *s = suite_create("tt_svd");
  TCase *tc = tcase_create("numeric");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, bound);
  tcase_add_test(tc, exact);
  tcase_add_test(tc, max_ranks);
  tcase_add_test(tc, bad_args);
  tcase_add_test(tc, timing_1024);
  suite_add_tcase(s, tc);
  tc = tcase_create("cli");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, cli_good);
  tcase_add_test(tc, cli_bad);
  suite_add_tcase(s, tc);
  return s;
}


int main(int argc, char **argv) { return suite_main(argc, argv, "test_tt_svd", setup_cli, tt_svd_suite); }
