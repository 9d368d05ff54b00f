/* tt_svd.c: TT-SVD (Oseledets 2011, "Tensor-Train Decomposition", algorithm 1), the numeric core
 * of `teslac compress` (compress.c), which turns a trained dense weight into the tensor-train
 * cores the planner (tt.c) laid out. Plain C in double precision: no LAPACK, no BLAS.
 *
 * A tensor T with modes q[0..n-1] (row-major, q[0] most significant) is swept left to right.
 * At step k the carry C (r_k, q_k ... q_{n-1}) is read as the unfolding A (r_k q_k, rest); its
 * leading left singular vectors U (r_k q_k, r_{k+1}) become core k and U^T A the next carry.
 * r_{k+1} is the smallest rank whose dropped squared singular values sum to at most delta^2,
 * delta = eps / sqrt(n-1) * ||T||_F, or a fixed maximum, and never more than min(rows, cols).
 * The cores are orthonormal, so the squared errors of the steps add up:
 * ||T - TT(T)||_F <= eps ||T||_F.
 *
 * The SVD goes through the Gram matrix of the unfolding's shorter side, G = A A^T (m <= cols)
 * or A^T A, and a symmetric eigensolver: Householder reduction to tridiagonal form, the
 * eigenvalues by implicit QL (all of them: the rank needs the tail sums), and only the kept
 * eigenvectors by inverse iteration on the tridiagonal (re-orthogonalized within clusters, as
 * LAPACK's dstein), transformed back through the reflectors. That is about 4/3 m^3 flops where a
 * cyclic Jacobi solver takes ~50 m^3 (measured: 750 ms for one 256 x 256 Gram matrix, the
 * middle step of a 1024 x 1024 weight at rank 8; this path takes a few ms). On the tall side
 * U = A V / sigma is re-orthonormalized (Gram-Schmidt twice, completing it where sigma is 0),
 * and in both cases the carry is U^T A, so the approximation is an exact orthogonal projection
 * whatever the eigensolver's rounding. */
#include "teslac.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define TT_SVD_MAXN 16       /* cores */
#define GEMM_KB 128          /* k-block of the Gram products: 4 + 2 rows of 1 KB stay in L1 */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- vector kernels (SSE2 pairs through GCC's vector extension; no -march needed) -------- */

typedef double v2d __attribute__((vector_size(16)));
static inline v2d ld2(const double *p) { v2d v; memcpy(&v, p, sizeof v); return v; }
static inline void st2(double *p, v2d v) { memcpy(p, &v, sizeof v); }

static double dot(const double *a, const double *b, int64_t n) {
  v2d s0 = {0, 0}, s1 = {0, 0};
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += ld2(a + k) * ld2(b + k);
    s1 += ld2(a + k + 2) * ld2(b + k + 2);
  }
  s0 += s1;
  double s = s0[0] + s0[1];
  for (; k < n; k++) s += a[k] * b[k];
  return s;
}

/* y += a x */
static void axpy(double *y, double a, const double *x, int64_t n) {
  v2d va = {a, a};
  int64_t k = 0;
  for (; k + 2 <= n; k += 2) st2(y + k, ld2(y + k) + va * ld2(x + k));
  for (; k < n; k++) y[k] += a * x[k];
}

/* y += a x + b z */
static void axpy2(double *y, double a, const double *x, double b, const double *z, int64_t n) {
  v2d va = {a, a}, vb = {b, b};
  int64_t k = 0;
  for (; k + 2 <= n; k += 2) st2(y + k, ld2(y + k) + va * ld2(x + k) + vb * ld2(z + k));
  for (; k < n; k++) y[k] += a * x[k] + b * z[k];
}

/* out (4, 2) = x[0..3] . y0, y1 over n: 8 accumulator pairs + 6 loads fit the 16 xmm registers */
static void kern42(const double *const x[4], const double *y0, const double *y1, int64_t n,
                   double out[4][2]) {
  v2d c00 = {0, 0}, c01 = {0, 0}, c10 = {0, 0}, c11 = {0, 0};
  v2d c20 = {0, 0}, c21 = {0, 0}, c30 = {0, 0}, c31 = {0, 0};
  int64_t k = 0;
  for (; k + 2 <= n; k += 2) {
    v2d b0 = ld2(y0 + k), b1 = ld2(y1 + k), a;
    a = ld2(x[0] + k), c00 += a * b0, c01 += a * b1;
    a = ld2(x[1] + k), c10 += a * b0, c11 += a * b1;
    a = ld2(x[2] + k), c20 += a * b0, c21 += a * b1;
    a = ld2(x[3] + k), c30 += a * b0, c31 += a * b1;
  }
  out[0][0] = c00[0] + c00[1], out[0][1] = c01[0] + c01[1];
  out[1][0] = c10[0] + c10[1], out[1][1] = c11[0] + c11[1];
  out[2][0] = c20[0] + c20[1], out[2][1] = c21[0] + c21[1];
  out[3][0] = c30[0] + c30[1], out[3][1] = c31[0] + c31[1];
  for (; k < n; k++)
    for (int a = 0; a < 4; a++) out[a][0] += x[a][k] * y0[k], out[a][1] += x[a][k] * y1[k];
}

/* C (nx, ny) = X Y^T, X (nx, len) and Y (ny, len) row-major. sym (X == Y): only the blocks on
 * or below the diagonal, then mirrored. Blocked over len so that a block of Y's rows stays in
 * cache while X's rows pass over it; rows past the edge repeat the last one (results dropped). */
static void gemm_nt(double *C, const double *X, int64_t nx, const double *Y, int64_t ny, int64_t len,
                    bool sym) {
  memset(C, 0, sizeof(double) * (size_t)(nx * ny));
  for (int64_t k0 = 0; k0 < len; k0 += GEMM_KB) {
    int64_t kl = min64(GEMM_KB, len - k0);
    for (int64_t i = 0; i < nx; i += 4) {
      const double *x[4];
      for (int a = 0; a < 4; a++) x[a] = X + min64(i + a, nx - 1) * len + k0;
      int64_t jend = sym ? min64(i + 4, ny) : ny;
      for (int64_t j = 0; j < jend; j += 2) {
        double out[4][2];
        kern42(x, Y + j * len + k0, Y + min64(j + 1, ny - 1) * len + k0, kl, out);
        for (int a = 0; a < 4 && i + a < nx; a++)
          for (int b = 0; b < 2 && j + b < ny; b++)
            if (!sym || j + b <= i + a) C[(i + a) * ny + j + b] += out[a][b];
      }
    }
  }
  if (sym)
    for (int64_t i = 0; i < nx; i++)
      for (int64_t j = i + 1; j < nx; j++) C[i * nx + j] = C[j * nx + i];
}

/* C (r, n) = U (r, m) A (m, n), both row-major: 4 x 4 blocks of C in registers (a broadcast
 * of U times two pairs of an A row per step), over blocks of A that stay in L2 */
static void proj(double *C, const double *U, int64_t r, const double *A, int64_t m, int64_t n) {
  memset(C, 0, sizeof(double) * (size_t)(r * n));
  const int64_t IB = 128, CB = 256;
  for (int64_t i0 = 0; i0 < m; i0 += IB) {
    int64_t il = min64(IB, m - i0);
    for (int64_t c0 = 0; c0 < n; c0 += CB) {
      int64_t ce = min64(c0 + CB, n);
      for (int64_t t = 0; t < r; t += 4) {
        const double *u[4];
        for (int a = 0; a < 4; a++) u[a] = U + min64(t + a, r - 1) * m + i0;
        int nt = (int)min64(4, r - t);
        int64_t c = c0;
        for (; c + 4 <= ce; c += 4) {
          v2d c00 = {0, 0}, c01 = {0, 0}, c10 = {0, 0}, c11 = {0, 0};
          v2d c20 = {0, 0}, c21 = {0, 0}, c30 = {0, 0}, c31 = {0, 0};
          const double *ar = A + i0 * n + c;
          for (int64_t i = 0; i < il; i++, ar += n) {
            v2d a0 = ld2(ar), a1 = ld2(ar + 2), b;
            b = (v2d){u[0][i], u[0][i]}, c00 += b * a0, c01 += b * a1;
            b = (v2d){u[1][i], u[1][i]}, c10 += b * a0, c11 += b * a1;
            b = (v2d){u[2][i], u[2][i]}, c20 += b * a0, c21 += b * a1;
            b = (v2d){u[3][i], u[3][i]}, c30 += b * a0, c31 += b * a1;
          }
          v2d acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
          for (int a = 0; a < nt; a++) {
            double *cr = C + (t + a) * n + c;
            st2(cr, ld2(cr) + acc[a][0]), st2(cr + 2, ld2(cr + 2) + acc[a][1]);
          }
        }
        for (; c < ce; c++)
          for (int a = 0; a < nt; a++) {
            double s = 0;
            for (int64_t i = 0; i < il; i++) s += u[a][i] * A[(i0 + i) * n + c];
            C[(t + a) * n + c] += s;
          }
      }
    }
  }
}

/* At (n, m) = A (m, n)^T, in 32 x 32 tiles */
static void transpose(double *At, const double *A, int64_t m, int64_t n) {
  for (int64_t i0 = 0; i0 < m; i0 += 32)
    for (int64_t j0 = 0; j0 < n; j0 += 32)
      for (int64_t i = i0; i < min64(i0 + 32, m); i++)
        for (int64_t j = j0; j < min64(j0 + 32, n); j++) At[j * m + i] = A[i * n + j];
}

/* ---- the symmetric eigensolver ----------------------------------------------------------- */

/* Householder reduction of the symmetric a (m, m) to tridiagonal (d, e): a = Q T Q^T with
 * Q = H_0 H_1 .. H_{m-3}, H_k = I - tau_k v_k v_k^T acting on indices k+1..m-1. Only the lower
 * triangle is read and updated (m^3 4/3 flops); v_k is kept in row k right of the diagonal
 * (a[k][k+1..], v_k[0] = 1), which the lower triangle no longer needs. p: m doubles. */
static void tridiag(double *a, int64_t m, double *d, double *e, double *tau, double *p) {
  for (int64_t k = 0; k + 2 < m; k++) {
    int64_t n1 = m - k - 1;
    double *x = a + k * m + k + 1;
    for (int64_t i = 0; i < n1; i++) x[i] = a[(k + 1 + i) * m + k];   /* column k below the diagonal */
    d[k] = a[k * m + k];
    double xn = sqrt(dot(x + 1, x + 1, n1 - 1));
    tau[k] = 0, e[k] = x[0];
    if (xn == 0) continue;                /* already tridiagonal here: H_k = I */
    double beta = -copysign(hypot(x[0], xn), x[0]);
    tau[k] = (beta - x[0]) / beta;
    double sc = 1 / (x[0] - beta);
    for (int64_t i = 1; i < n1; i++) x[i] *= sc;
    x[0] = 1, e[k] = beta;
    /* A22 -= v w^T + w v^T with p = tau A22 v, w = p - (tau/2)(p . v) v; A22's row i holds
     * columns 0..i, the rest of p[i] comes from the rows below */
    double *A22 = a + (k + 1) * m + k + 1;
    memset(p, 0, sizeof(double) * (size_t)n1);
    for (int64_t i = 0; i < n1; i++) {
      const double *row = A22 + i * m;
      p[i] += dot(row, x, i) + row[i] * x[i];
      axpy(p, x[i], row, i);
    }
    for (int64_t i = 0; i < n1; i++) p[i] *= tau[k];
    double s = -0.5 * tau[k] * dot(p, x, n1);
    axpy(p, s, x, n1);
    for (int64_t i = 0; i < n1; i++) axpy2(A22 + i * m, -x[i], p, -p[i], x, i + 1);
  }
  if (m >= 2) d[m - 2] = a[(m - 2) * m + m - 2], e[m - 2] = a[(m - 1) * m + m - 2];
  d[m - 1] = a[(m - 1) * m + m - 1];
}

/* sqrt(a^2 + b^2) without overflow; cheaper than libm's hypot, which the QL loop calls m^2 times */
static double hyp(double a, double b) {
  a = fabs(a), b = fabs(b);
  if (a < b) {
    double t = a;
    a = b, b = t;
  }
  if (a == 0) return 0;
  b /= a;
  return a * sqrt(1 + b * b);
}

/* Eigenvalues of the tridiagonal (d, e[0..m-2]) into d, by implicit QL with Wilkinson shifts
 * (EISPACK's tql1). e: m entries, destroyed. -1 if an eigenvalue takes over 60 iterations. */
static int tql(double *d, double *e, int64_t m) {
  if (m == 0) return 0;
  e[m - 1] = 0;
  for (int64_t l = 0; l < m; l++) {
    int iter = 0;
    int64_t mm;
    do {
      for (mm = l; mm < m - 1; mm++) {
        double dd = fabs(d[mm]) + fabs(d[mm + 1]);
        if (fabs(e[mm]) <= DBL_EPSILON * dd) break;
      }
      if (mm != l) {
        if (iter++ == 60) return -1;
        double g = (d[l + 1] - d[l]) / (2 * e[l]);
        double r = hyp(g, 1);
        g = d[mm] - d[l] + e[l] / (g + copysign(r, g));
        double s = 1, c = 1, p = 0;
        int64_t i;
        for (i = mm - 1; i >= l; i--) {
          double f = s * e[i], b = c * e[i];
          e[i + 1] = (r = hyp(f, g));
          if (r == 0) {               /* underflow: split here and start over */
            d[i + 1] -= p, e[mm] = 0;
            break;
          }
          s = f / r, c = g / r;
          g = d[i + 1] - p;
          r = (d[i] - g) * s + 2 * c * b;
          d[i + 1] = g + (p = s * r);
          g = c * r - b;
        }
        if (r == 0 && i >= l) continue;
        d[l] -= p, e[l] = g, e[mm] = 0;
      }
    } while (mm != l);
  }
  return 0;
}

static int cmp_desc(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Eigenvectors z_j (rows of Z, m each) of the tridiagonal (d, e) for the eigenvalues
 * lam[0..r-1] (descending), by inverse iteration: T - lam_j I factored with partial pivoting
 * (tiny pivots raised to eps ||T||), three solves from a fixed pseudo-random start. Vectors
 * whose eigenvalues lie within 1e-3 ||T|| of each other form a cluster and are orthogonalized
 * against each other after every solve (LAPACK's dstein rule); equal eigenvalues are nudged
 * apart by 10 eps ||T||. w: 6 m doubles of scratch; piv: m bytes. */
static void tri_vectors(const double *d, const double *e, int64_t m, const double *lam, int64_t r,
                        double *Z, double *w, unsigned char *piv) {
  double tnorm = 0;
  for (int64_t i = 0; i < m; i++) {
    double s = fabs(d[i]) + (i ? fabs(e[i - 1]) : 0) + (i + 1 < m ? fabs(e[i]) : 0);
    if (s > tnorm) tnorm = s;
  }
  if (!(tnorm > 0)) tnorm = 1;
  double floor_ = DBL_EPSILON * tnorm, ortol = 1e-3 * tnorm, pertol = 10 * DBL_EPSILON * tnorm;
  double *u0 = w, *u1 = w + m, *u2 = w + 2 * m, *lm = w + 3 * m;
  int64_t gp = 0;
  double xprev = 0;
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int64_t j = 0; j < r; j++) {
    double x = lam[j];
    if (j > 0) {
      if (xprev - x > ortol) gp = j;
      else if (xprev - x < pertol) x = xprev - pertol;
    }
    xprev = x;
    /* (T - x I) = P L U: U with two superdiagonals (u0 diagonal, u1, u2), multipliers lm */
    for (int64_t i = 0; i < m; i++) u0[i] = d[i] - x, u1[i] = i + 1 < m ? e[i] : 0, u2[i] = 0;
    for (int64_t i = 0; i + 1 < m; i++) {
      double sub = e[i];                  /* (i+1, i) */
      if (fabs(u0[i]) >= fabs(sub)) {
        if (fabs(u0[i]) < floor_) u0[i] = u0[i] < 0 ? -floor_ : floor_;
        double f = sub / u0[i];
        lm[i] = f, piv[i] = 0;
        u0[i + 1] -= f * u1[i];
      } else {                            /* swap rows i and i+1 */
        double f = u0[i] / sub;
        u0[i] = sub, lm[i] = f, piv[i] = 1;
        double t = u1[i];
        u1[i] = u0[i + 1];
        u0[i + 1] = t - f * u0[i + 1];
        if (i + 2 < m) u2[i] = u1[i + 1], u1[i + 1] = -f * u1[i + 1];
      }
    }
    if (fabs(u0[m - 1]) < floor_) u0[m - 1] = u0[m - 1] < 0 ? -floor_ : floor_;
    double *z = Z + j * m;
    for (int64_t i = 0; i < m; i++) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      z[i] = (double)(seed >> 11) / 9007199254740992.0 * 2 - 1;
    }
    for (int it = 0; it < 3; it++) {
      double mx = 0;
      for (int64_t i = 0; i < m; i++) mx = fabs(z[i]) > mx ? fabs(z[i]) : mx;
      if (!(mx > 0)) z[j % m] = mx = 1;
      for (int64_t i = 0; i < m; i++) z[i] /= mx;
      for (int64_t i = 0; i + 1 < m; i++) {   /* L^-1 P */
        if (piv[i]) {
          double t = z[i];
          z[i] = z[i + 1], z[i + 1] = t - lm[i] * z[i];
        } else
          z[i + 1] -= lm[i] * z[i];
      }
      for (int64_t i = m - 1; i >= 0; i--) {  /* U^-1, rescaling everything before it overflows */
        double s = z[i];
        if (i + 1 < m) s -= u1[i] * z[i + 1];
        if (i + 2 < m) s -= u2[i] * z[i + 2];
        z[i] = s / u0[i];
        if (fabs(z[i]) > 1e100)
          for (int64_t k = 0; k < m; k++) z[k] *= 1e-100;
      }
      for (int64_t s = gp; s < j; s++) axpy(z, -dot(Z + s * m, z, m), Z + s * m, m);
    }
    double nz = sqrt(dot(z, z, m));
    if (!(nz > 0)) {                       /* cannot happen for r <= m; a unit vector then */
      memset(z, 0, sizeof(double) * (size_t)m), z[j % m] = nz = 1;
    }
    for (int64_t i = 0; i < m; i++) z[i] /= nz;
  }
}

/* Z (r, m): eigenvectors of T to eigenvectors of a = Q T Q^T: z <- H_0 (H_1 (.. H_{m-3} z)) */
static void back_transform(const double *a, int64_t m, const double *tau, double *Z, int64_t r) {
  for (int64_t k = m - 3; k >= 0; k--) {
    if (tau[k] == 0) continue;
    const double *v = a + k * m + k + 1;
    int64_t n1 = m - k - 1;
    for (int64_t j = 0; j < r; j++) {
      double *z = Z + j * m + k + 1;
      axpy(z, -tau[k] * dot(v, z, n1), v, n1);
    }
  }
}

/* Orthonormal rows of U (r, m), r <= m, by Gram-Schmidt twice; a row that is (nearly) in the
 * span of the ones before it is replaced by the unit vector that leaves the most after the
 * same treatment (a zero singular value's left vector can be any completion) */
static void orthonormalize(double *U, int64_t r, int64_t m) {
  for (int64_t t = 0; t < r; t++) {
    double *u = U + t * m;
    double n0 = sqrt(dot(u, u, m));
    for (int pass = 0; pass < 2; pass++)
      for (int64_t s = 0; s < t; s++) axpy(u, -dot(U + s * m, u, m), U + s * m, m);
    double n1 = sqrt(dot(u, u, m));
    if (!(n1 > 1e-6 * n0) || !(n0 > 0)) {
      int64_t best = 0;
      double bestn = -1;
      for (int64_t c = 0; c < m && bestn < 0.5; c++) {
        memset(u, 0, sizeof(double) * (size_t)m), u[c] = 1;
        for (int pass = 0; pass < 2; pass++)
          for (int64_t s = 0; s < t; s++) axpy(u, -dot(U + s * m, u, m), U + s * m, m);
        double nc = sqrt(dot(u, u, m));
        if (nc > bestn) bestn = nc, best = c;
      }
      memset(u, 0, sizeof(double) * (size_t)m), u[best] = 1;
      for (int pass = 0; pass < 2; pass++)
        for (int64_t s = 0; s < t; s++) axpy(u, -dot(U + s * m, u, m), U + s * m, m);
      n1 = sqrt(dot(u, u, m));
    }
    for (int64_t i = 0; i < m; i++) u[i] /= n1;
  }
}

/* ---- one step of the sweep -------------------------------------------------------------- */

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* The unfolding A (m, n): its rank r (the smallest whose dropped squared singular values sum to
 * at most delta2 when delta2 >= 0, at most maxr when maxr > 0, at most min(m, n)), the left
 * singular vectors as the rows of *Ut (r, m) and the next carry *carry = Ut A (r, n). */
static int svd_step(const double *A, int64_t m, int64_t n, double delta2, int64_t maxr, int64_t *rank,
                    double **Ut, double **carry, char *err, size_t errlen) {
  bool wide = m <= n;
  int64_t g = wide ? m : n;                 /* the Gram matrix's order = min(m, n) */
  double *G = malloc(sizeof(double) * (size_t)(g * g));
  double *d = malloc(sizeof(double) * (size_t)g * 4), *e = d + g, *tau = e + g, *lam = tau + g;
  double *w = malloc(sizeof(double) * (size_t)g * 6);
  unsigned char *piv = malloc((size_t)g);
  double *At = wide ? NULL : malloc(sizeof(double) * (size_t)(m * n));
  double *Z = NULL, *U = NULL, *C = NULL;
  int rc = 0;
  if (!G || !d || !w || !piv || (!wide && !At)) {
    rc = fail(err, errlen, "out of memory for a %lld x %lld unfolding", (long long)m, (long long)n);
    goto out;
  }
  if (wide) gemm_nt(G, A, m, A, m, n, true);   /* A A^T (m, m) */
  else {
    transpose(At, A, m, n);
    gemm_nt(G, At, n, At, n, m, true);      /* A^T A (n, n) */
  }
  tridiag(G, g, d, e, tau, w);
  memcpy(lam, d, sizeof(double) * (size_t)g);
  memcpy(w, e, sizeof(double) * (size_t)(g > 1 ? g - 1 : 0));
  if (tql(lam, w, g) < 0) {
    rc = fail(err, errlen, "the eigenvalues of a %lld x %lld Gram matrix did not converge", (long long)g, (long long)g);
    goto out;
  }
  qsort(lam, (size_t)g, sizeof(double), cmp_desc);
  for (int64_t i = 0; i < g; i++) lam[i] = lam[i] > 0 ? lam[i] : 0;
  int64_t r = g;
  if (delta2 >= 0) {
    double tail = 0;
    for (int64_t i = g - 1; i >= 1 && tail + lam[i] <= delta2; i--) tail += lam[i], r = i;
  }
  if (maxr > 0 && maxr < r) r = maxr;
  Z = malloc(sizeof(double) * (size_t)(r * g));
  U = wide ? Z : malloc(sizeof(double) * (size_t)(r * m));
  C = malloc(sizeof(double) * (size_t)(r * n));
  if (!Z || !U || !C) {
    rc = fail(err, errlen, "out of memory for a %lld x %lld unfolding", (long long)m, (long long)n);
    goto out;
  }
  tri_vectors(d, e, g, lam, r, Z, w, piv);
  back_transform(G, g, tau, Z, r);
  if (!wide) {
    /* U = A V / sigma: (m, r) as rows Ut (r, m) = Z A^T / sigma = (A Z^T)^T / sigma */
    double *AZ = At;                        /* (m, r) in At's room (m n >= m r) */
    gemm_nt(AZ, A, m, Z, r, n, false);
    for (int64_t t = 0; t < r; t++) {
      double s = sqrt(lam[t]);
      for (int64_t i = 0; i < m; i++) U[t * m + i] = s > 0 ? AZ[i * r + t] / s : 0;
    }
    orthonormalize(U, r, m);
  }
  proj(C, U, r, A, m, n);                   /* the carry U^T A */
  *rank = r, *Ut = U, *carry = C;
  U = C = NULL;
  if (wide) Z = NULL;
out:
  if (U == Z) U = NULL;
  free(G), free(d), free(w), free(piv), free(At), free(Z), free(U), free(C);
  return rc;
}

/* ---- the sweep ---------------------------------------------------------------------------- */

/* ||T - TT(cores)||_F, the cores rebuilt in double from their float values: F_k (P_k, r_{k+1})
 * = F_{k-1} (P_{k-1}, r_k) @ core_k (r_k, q_k r_{k+1}) */
static int rebuild_error(const double *T, int n, const int64_t *q, float *const *cores,
                         const int64_t *ranks, double *err2) {
  int64_t P = q[0];
  double *F = malloc(sizeof(double) * (size_t)(q[0] * ranks[1]));
  if (!F) return -1;
  for (int64_t i = 0; i < q[0] * ranks[1]; i++) F[i] = cores[0][i];
  for (int k = 1; k < n; k++) {
    int64_t rl = ranks[k], row = q[k] * ranks[k + 1];
    double *Ck = malloc(sizeof(double) * (size_t)(rl * row));
    double *Fn = calloc((size_t)(P * row), sizeof(double));
    if (!Ck || !Fn) {
      free(Ck), free(Fn), free(F);
      return -1;
    }
    for (int64_t i = 0; i < rl * row; i++) Ck[i] = cores[k][i];
    for (int64_t p = 0; p < P; p++)
      for (int64_t a = 0; a < rl; a++) axpy(Fn + p * row, F[p * rl + a], Ck + a * row, row);
    free(Ck), free(F);
    F = Fn, P *= q[k];
  }
  double s = 0;
  for (int64_t i = 0; i < P; i++) s += (T[i] - F[i]) * (T[i] - F[i]);
  free(F);
  *err2 = s;
  return 0;
}

int tt_svd(const double *T, int n, const int64_t *q, double eps, const int64_t *max_rank,
           float **cores, int64_t *ranks, double *rel_err, char *err, size_t errlen) {
  if (n < 1 || n > TT_SVD_MAXN) return fail(err, errlen, "TT-SVD takes 1 to %d modes, got %d", TT_SVD_MAXN, n);
  int64_t numel = 1;
  for (int k = 0; k < n; k++) {
    if (q[k] < 1) return fail(err, errlen, "mode %d has size %lld; modes must be at least 1", k, (long long)q[k]);
    if (!size_mul(numel, q[k], &numel)) return fail(err, errlen, "the modes multiply past %lld elements", (long long)TS_MAX_ELEMS);
  }
  for (int k = 0; max_rank && k < n - 1; k++)
    if (max_rank[k] < 1) return fail(err, errlen, "the maximum rank at cut %d is %lld; ranks are at least 1", k + 1, (long long)max_rank[k]);
  if (isnan(eps)) return fail(err, errlen, "eps is not a number");
  for (int k = 0; k < n; k++) cores[k] = NULL;
  double norm2 = dot(T, T, numel);
  double delta2 = eps >= 0 && n > 1 ? eps * eps * norm2 / (n - 1) : -1;
  const double *A = T;
  double *own = NULL;
  int64_t rp = 1, rest = numel;
  ranks[0] = 1;
  for (int k = 0; k < n - 1; k++) {
    int64_t m = rp * q[k], cols = rest / q[k], r = 0;
    double *Ut = NULL, *C = NULL;
    if (svd_step(A, m, cols, delta2, max_rank ? max_rank[k] : 0, &r, &Ut, &C, err, errlen) < 0) goto fail;
    cores[k] = malloc(sizeof(float) * (size_t)(m * r));
    if (!cores[k]) {
      free(Ut), free(C);
      fail(err, errlen, "out of memory for core %d", k);
      goto fail;
    }
    for (int64_t i = 0; i < m; i++)          /* core k (r_k, q_k, r_{k+1}) = U (m, r) */
      for (int64_t t = 0; t < r; t++) cores[k][i * r + t] = (float)Ut[t * m + i];
    free(Ut), free(own);
    A = own = C, rp = r, rest = cols, ranks[k + 1] = r;
  }
  cores[n - 1] = malloc(sizeof(float) * (size_t)(rp * q[n - 1]));
  if (!cores[n - 1]) {
    fail(err, errlen, "out of memory for core %d", n - 1);
    goto fail;
  }
  for (int64_t i = 0; i < rp * q[n - 1]; i++) cores[n - 1][i] = (float)A[i];
  free(own), own = NULL;
  ranks[n] = 1;
  if (rel_err) {
    double e2;
    if (rebuild_error(T, n, q, cores, ranks, &e2) < 0) {
      fail(err, errlen, "out of memory rebuilding the tensor train");
      goto fail;
    }
    *rel_err = norm2 > 0 ? sqrt(e2 / norm2) : sqrt(e2);
  }
  return 0;
fail:
  free(own);
  for (int k = 0; k < n; k++) free(cores[k]), cores[k] = NULL;
  return -1;
}
