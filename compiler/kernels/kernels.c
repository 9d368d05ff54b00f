// kernels.c: the externally visible kernel entry points that generated code calls by name.
// Compiled once to LLVM bitcode (see tk_gemm.h for the scheme and the flags) and linked
// into every emitted module. Each entry point is a non-static definition (so the emitter
// finds it by name) carrying always_inline (so LLVM's AlwaysInliner folds it into the
// caller, where the constant dims specialize it); the emitter internalizes the leftovers.
#include "tk_gemm.h"
#include "tk_kernels.h"  // the prototypes: checks that they match

#define TK_ENTRY __attribute__((always_inline)) void

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
