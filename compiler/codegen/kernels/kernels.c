// kernels.c: the externally visible kernel entry points that generated code calls by name.
// Compiled once to LLVM bitcode (see tk_gemm.h for the scheme and the flags) and linked
// into every emitted module. Each entry point is a non-static definition (so the emitter
// finds it by name) carrying always_inline (so LLVM's AlwaysInliner folds it into the
// caller, where the constant dims specialize it); the emitter internalizes the leftovers.
#include "tk_gemm.h"
#include "tk_sparse.h"
#include "tk_kernels.h"  // the prototypes: checks that they match

#define TK_ENTRY __attribute__((always_inline)) void

// v16f values between the always-inlined helpers below never cross a real call (tk_gemm.h)
#pragma clang diagnostic ignored "-Wpsabi"

// Y[b, o] = bias[o] + sum_i X[b, i] * Wt[i, o] for o in [o0, o1), all b. bias may be NULL.
TK_ENTRY tk_dense_fwd(long B, long IN, long OUT,
                      const float *X,     // (B, IN)
                      const float *Wt,    // (IN, OUT)
                      const float *bias,  // (OUT) or NULL
                      float *Y,           // (B, OUT)
                      long o0, long o1) {
  tk__gemm(0, B, o0, o1, IN, X, IN, 1, Wt, OUT, Y, OUT, bias ? TK_INIT_BIAS : TK_INIT_ZERO,
           bias);
}

// dX[b, i] = sum_o dY[b, o] * Wt[i, o] for i in [i0, i1), all b (overwrites dX).
TK_ENTRY tk_dense_bwd_data(long B, long IN, long OUT,
                           const float *dY,  // (B, OUT)
                           const float *Wt,  // (IN, OUT)
                           float *dX,        // (B, IN)
                           long i0, long i1) {
  tk__gemm_nt(0, B, i0, i1, OUT, dY, OUT, Wt, OUT, dX, IN, TK_INIT_ZERO);
}

// dWt[i, o] += sum_b X[b, i] * dY[b, o]; dbias[o] += sum_b dY[b, o] for o in [o0, o1),
// all i (accumulates). dbias may be NULL.
TK_ENTRY tk_dense_bwd_weight(long B, long IN, long OUT,
                             const float *X,   // (B, IN)
                             const float *dY,  // (B, OUT)
                             float *dWt,       // (IN, OUT)
                             float *dbias,     // (OUT) or NULL
                             long o0, long o1) {
  // dWt (IN, OUT) += X^T (IN, B) @ dY (B, OUT): A = X^T read with strides (1, IN).
  tk__gemm(0, IN, o0, o1, B, X, 1, IN, dY, OUT, dWt, OUT, TK_INIT_ACC, 0);
  if (dbias) tk__colsum(B, dY, OUT, dbias, o0, o1);  // (OUT)
}

// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A[m, k] * Bm[k, n]
// for m in [m0, m1), n in [n0, n1). Row-major with leading dims lda, ldb, ldc.
TK_ENTRY tk_gemm_nn(long M, long N, long K,
                    const float *A, long lda,   // (M, K)
                    const float *Bm, long ldb,  // (K, N)
                    float *C, long ldc,         // (M, N)
                    int accumulate, long m0, long m1, long n0, long n1) {
  (void)M; (void)N;
  tk__gemm(m0, m1, n0, n1, K, A, lda, 1, Bm, ldb, C, ldc,
           accumulate ? TK_INIT_ACC : TK_INIT_ZERO, 0);
}

// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A[k, m] * Bm[k, n]   (C = A^T @ B)
TK_ENTRY tk_gemm_tn(long M, long N, long K,
                    const float *A, long lda,   // (K, M)
                    const float *Bm, long ldb,  // (K, N)
                    float *C, long ldc,         // (M, N)
                    int accumulate, long m0, long m1, long n0, long n1) {
  (void)M; (void)N;
  tk__gemm(m0, m1, n0, n1, K, A, 1, lda, Bm, ldb, C, ldc,
           accumulate ? TK_INIT_ACC : TK_INIT_ZERO, 0);
}

// C[m, n] = (accumulate ? C[m, n] : 0) + sum_k A[m, k] * Bt[n, k]   (C = A @ Bt^T)
TK_ENTRY tk_gemm_nt(long M, long N, long K,
                    const float *A, long lda,    // (M, K)
                    const float *Bt, long ldbt,  // (N, K)
                    float *C, long ldc,          // (M, N)
                    int accumulate, long m0, long m1, long n0, long n1) {
  (void)M; (void)N;
  tk__gemm_nt(m0, m1, n0, n1, K, A, lda, Bt, ldbt, C, ldc,
              accumulate ? TK_INIT_ACC : TK_INIT_ZERO);
}

// Convolution forward, one sample: Y[k, p] = bias[k] + sum_q W[k, q] * col[q, p] for k in
// [k0, k1), p in [p0, p1): W (K, Q) is the weight as PyTorch stores it (Q = C kh kw), col the
// sample's im2col (Q, P), P = Ho Wo. The bias rides in the accumulators' init. bias may be NULL.
TK_ENTRY tk_conv_fwd(long K, long P, long Q,
                     const float *W,     // (K, Q)
                     const float *col,   // (Q, P)
                     const float *bias,  // (K) or NULL
                     float *Y,           // (K, P)
                     long k0, long k1, long p0, long p1) {
  (void)K;
  tk__gemm(k0, k1, p0, p1, Q, W, Q, 1, col, P, Y, P, bias ? TK_INIT_RBIAS : TK_INIT_ZERO, bias);
}

// s[m] += sum_n A[m * lda + n] for m in [m0, m1): row sums (the conv bias gradient).
TK_ENTRY tk_rowsum(long N, const float *A, long lda, float *s, long m0, long m1) {
  for (long m = m0; m < m1; m++) {
    const float *a = A + m * lda;
    tk_v16f v0 = {0}, v1 = {0};
    long n = 0;
    for (; n + 32 <= N; n += 32) v0 += tk__load(a + n), v1 += tk__load(a + n + 16);
    if (n + 16 <= N) v0 += tk__load(a + n), n += 16;
    if (n < N) v1 += tk__loadp(a + n, N - n);
    v0 += v1;
    float t = 0;
    for (int j = 0; j < 16; j++) t += v0[j];
    s[m] += t;
  }
}

// ---- batchnorm over (B, C, S), S = H W: per-channel passes over contiguous S -------------
// Two vector accumulators per sum; each channel's sum runs over b in order (deterministic).

TK_AI float tk__hadd(tk_v16f v) {
  float t = 0;
  for (int j = 0; j < 16; j++) t += v[j];
  return t;
}

// sum_s a[s]
TK_AI float tk__sum(const float *a, long n) {
  tk_v16f v0 = {0}, v1 = {0};
  long s = 0;
  for (; s + 32 <= n; s += 32) v0 += tk__load(a + s), v1 += tk__load(a + s + 16);
  if (s + 16 <= n) v0 += tk__load(a + s), s += 16;
  if (s < n) v1 += tk__loadp(a + s, n - s);
  return tk__hadd(v0 + v1);
}

// sum_s (a[s] - m)^2
TK_AI float tk__sqdev(const float *a, long n, float m) {
  tk_v16f v0 = {0}, v1 = {0};
  long s = 0;
  for (; s + 32 <= n; s += 32) {
    tk_v16f d0 = tk__load(a + s) - m, d1 = tk__load(a + s + 16) - m;
    v0 += d0 * d0, v1 += d1 * d1;
  }
  if (s + 16 <= n) {
    tk_v16f d = tk__load(a + s) - m;
    v0 += d * d, s += 16;
  }
  if (s < n) {
    tk_v16f d = tk__loadp(a + s, n - s) - m;   // padded lanes: (0 - m)^2, masked below
    tk_v16f z = tk__loadp((const float[16]){1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, n - s);
    v1 += d * d * z;
  }
  return tk__hadd(v0 + v1);
}

// mean[c] = sum_{b,s} x / n; var[c] = sum_{b,s} (x - mean)^2 / n (biased), n = B S
TK_ENTRY tk_bn2d_stats(long B, long C, long S, const float *x, float *mean, float *var, long c0, long c1) {
  float inv_n = 1.0f / (float)(B * S);
  for (long c = c0; c < c1; c++) {
    float s = 0;
    for (long b = 0; b < B; b++) s += tk__sum(x + (b * C + c) * S, S);
    float m = s * inv_n, v = 0;
    for (long b = 0; b < B; b++) v += tk__sqdev(x + (b * C + c) * S, S, m);
    mean[c] = m, var[c] = v * inv_n;
  }
}

// y > 0 ? y : slope y, lane by lane (act: a fused relu / leaky_relu; else y)
TK_AI tk_v16f tk__act(tk_v16f y, int act, float slope) {
  if (!act) return y;
  typedef int v16i __attribute__((vector_size(64)));
  v16i m = y > 0, a = (v16i)y, b = (v16i)(y * slope);   // a select through the lane mask
  return (tk_v16f)((a & m) | (b & ~m));
}

// y[b, c, s] = act(x[b, c, s] scale[c] + shift[c])
TK_ENTRY tk_bn2d_apply(long B, long C, long S, const float *x, const float *scale, const float *shift,
                       float *y, int act, float slope, long c0, long c1) {
  for (long b = 0; b < B; b++)
    for (long c = c0; c < c1; c++) {
      const float *xr = x + (b * C + c) * S;
      float *yr = y + (b * C + c) * S;
      float k = scale[c], t = shift[c];
      long s = 0;
      for (; s + 16 <= S; s += 16) tk__store(yr + s, tk__act(tk__load(xr + s) * k + t, act, slope));
      if (s < S) tk__storep(yr + s, tk__act(tk__loadp(xr + s, S - s) * k + t, act, slope), S - s);
    }
}

// sdy[c] = sum dy; sdyx[c] = sum dy (x - mean[c])   over (b, s)
TK_ENTRY tk_bn2d_dsums(long B, long C, long S, const float *x, const float *dy, const float *mean,
                       float *sdy, float *sdyx, long c0, long c1) {
  for (long c = c0; c < c1; c++) {
    float m = mean[c];
    tk_v16f a = {0}, d = {0};
    for (long b = 0; b < B; b++) {
      const float *xr = x + (b * C + c) * S, *gr = dy + (b * C + c) * S;
      tk_v16f a1 = {0}, d1 = {0};
      long s = 0;
      for (; s + 16 <= S; s += 16) {
        tk_v16f g = tk__load(gr + s);
        a1 += g, d1 += g * (tk__load(xr + s) - m);
      }
      if (s < S) {
        tk_v16f g = tk__loadp(gr + s, S - s);   // padded lanes of g are 0: both sums stay exact
        a1 += g, d1 += g * (tk__loadp(xr + s, S - s) - m);
      }
      a += a1, d += d1;
    }
    sdy[c] = tk__hadd(a), sdyx[c] = tk__hadd(d);
  }
}

// dx = k[c] (n dy - sdy[c] - (x - mean[c]) invstd[c] dgamma[c]) with k = gamma invstd / n,
// dgamma = sdyx invstd: as dx = a dy + b x + c0 per channel
// n: the rows the statistics were taken over (B S, or all ranks' for a synchronized batchnorm)
TK_ENTRY tk_bn2d_dx(long B, long C, long S, long nrows, const float *x, const float *dy, const float *mean,
                    const float *invstd, const float *gamma, const float *sdy, const float *sdyx,
                    float *dx, long c0, long c1) {
  float n = (float)nrows;
  for (long b = 0; b < B; b++)
    for (long c = c0; c < c1; c++) {
      float is = invstd[c], k = gamma[c] * is / n, dg = sdyx[c] * is;
      float ca = k * n, cb = -k * is * dg, cc = -k * sdy[c] + k * is * dg * mean[c];
      const float *xr = x + (b * C + c) * S, *gr = dy + (b * C + c) * S;
      float *o = dx + (b * C + c) * S;
      long s = 0;
      for (; s + 16 <= S; s += 16) tk__store(o + s, tk__load(gr + s) * ca + tk__load(xr + s) * cb + cc);
      if (s < S) tk__storep(o + s, tk__loadp(gr + s, S - s) * ca + tk__loadp(xr + s, S - s) * cb + cc, S - s);
    }
}

// ---- pruned dense layers (tk_sparse.h): CSR across the batch ----

// XT[i, b] = X[b, i] for i in [i0, i1); rows b >= B of XT are zero up to ldt
TK_ENTRY tk_sp_in(long B, long IN, long ldt, const float *X, float *XT, long i0, long i1) {
  tk__sp_transpose(B, IN, ldt, X, XT, i0, i1);
}

// Y[b, o] = YT[o, b] + bias[o] for o in [o0, o1); bias may be NULL
TK_ENTRY tk_sp_out(long B, long OUT, long ldt, const float *YT, const float *bias, float *Y,
                   long o0, long o1) {
  for (long b = 0; b < B; b++)
    for (long o = o0; o < o1; o++) Y[b * OUT + o] = YT[o * ldt + b] + (bias ? bias[o] : 0.0f);
}

// dYT[o, b] = dY[b, o] (zero past B); dbias[o] += sum_b dY[b, o] (dbias may be NULL)
TK_ENTRY tk_sp_dy(long B, long OUT, long ldt, const float *dY, float *dYT, float *dbias,
                  long o0, long o1) {
  tk__sp_transpose(B, OUT, ldt, dY, dYT, o0, o1);
  if (dbias) tk__colsum(B, dY, OUT, dbias, o0, o1);
}

// dX[b, i] = dXT[i, b] for i in [i0, i1)
TK_ENTRY tk_sp_dx_out(long B, long IN, long ldt, const float *dXT, float *dX, long i0, long i1) {
  for (long b = 0; b < B; b++)
    for (long i = i0; i < i1; i++) dX[b * IN + i] = dXT[i * ldt + b];
}

TK_ENTRY tk_csr_fwd(long ldt, const int *rowptr, const int *col, const float *val, const float *XT,
                    float *YT, long o0, long o1) {
  tk__sp_gather(ldt, rowptr, col, 0, val, XT, YT, o0, o1);
}

TK_ENTRY tk_csc_dx(long ldt, const int *colptr, const int *rowidx, const int *perm, const float *val,
                   const float *dYT, float *dXT, long i0, long i1) {
  tk__sp_gather(ldt, colptr, rowidx, perm, val, dYT, dXT, i0, i1);
}

TK_ENTRY tk_csr_dw(long ldt, const int *rowptr, const int *col, const float *XT, const float *dYT,
                   float *dval, long o0, long o1) {
  tk__csr_dw(ldt, rowptr, col, XT, dYT, dval, o0, o1);
}

// ---- a pruned dense layer while every entry is still kept: its values are W (OUT, IN) ----

// Y[b, o] = bias[o] + sum_i X[b, i] W[o, i] for o in [o0, o1)
TK_ENTRY tk_spd_fwd(long B, long IN, long OUT, const float *X, const float *W, const float *bias,
                    float *Y, long o0, long o1) {
  tk__gemm_nt(0, B, o0, o1, IN, X, IN, W, IN, Y, OUT, TK_INIT_ZERO);
  if (bias)
    for (long b = 0; b < B; b++)
      for (long o = o0; o < o1; o++) Y[b * OUT + o] += bias[o];
}

// dX[b, i] = sum_o dY[b, o] W[o, i] for i in [i0, i1)
TK_ENTRY tk_spd_dx(long B, long IN, long OUT, const float *dY, const float *W, float *dX, long i0, long i1) {
  tk__gemm(0, B, i0, i1, OUT, dY, OUT, 1, W, IN, dX, IN, TK_INIT_ZERO, 0);
}

// dW[o, i] += sum_b dY[b, o] X[b, i]; dbias[o] += sum_b dY[b, o] for o in [o0, o1)
TK_ENTRY tk_spd_dw(long B, long IN, long OUT, const float *X, const float *dY, float *dW, float *dbias,
                   long o0, long o1) {
  tk__gemm(o0, o1, 0, IN, B, dY, 1, OUT, X, IN, dW, IN, TK_INIT_ACC, 0);
  if (dbias) tk__colsum(B, dY, OUT, dbias, o0, o1);
}
