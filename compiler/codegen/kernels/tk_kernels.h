// tk_kernels.h: prototypes of the kernel entry points defined in kernels.c, for C code that
// calls them (tests, bench) and as the reference for the IR emitter's declarations.
// Dims, strides and tile bounds are `long` (i64); pointers are plain float* (ptr in IR).
// Legend: B batch, IN input features, OUT output features; generic C (M, N) = A (M, K) @ B (K, N).
#ifndef TK_KERNELS_H
#define TK_KERNELS_H

// Y[b, o] = bias[o] + sum_i X[b, i] * Wt[i, o]   for o in [o0, o1), all b; bias may be NULL.
void tk_dense_fwd(long B, long IN, long OUT,
                  const float *X,     // (B, IN)
                  const float *Wt,    // (IN, OUT)
                  const float *bias,  // (OUT) or NULL
                  float *Y,           // (B, OUT)
                  long o0, long o1);

// dX[b, i] = sum_o dY[b, o] * Wt[i, o]   for i in [i0, i1), all b (overwrites).
void tk_dense_bwd_data(long B, long IN, long OUT,
                       const float *dY,  // (B, OUT)
                       const float *Wt,  // (IN, OUT)
                       float *dX,        // (B, IN)
                       long i0, long i1);

// dWt[i, o] += sum_b X[b, i] * dY[b, o]; dbias[o] += sum_b dY[b, o]
// for o in [o0, o1), all i (accumulates); dbias may be NULL.
void tk_dense_bwd_weight(long B, long IN, long OUT,
                         const float *X,   // (B, IN)
                         const float *dY,  // (B, OUT)
                         float *dWt,       // (IN, OUT)
                         float *dbias,     // (OUT) or NULL
                         long o0, long o1);

// Generic GEMMs on the tile C[m0:m1, n0:n1], row-major, leading dims lda/ldb/ldc:
// C = (accumulate ? C : 0) + op(A) @ op(B). M and N are only documentation (the tile
// bounds say what is computed); K is the summed dim.
// nn: A (M, K), Bm (K, N).     C[m, n] += sum_k A[m, k] * Bm[k, n]
void tk_gemm_nn(long M, long N, long K, const float *A, long lda, const float *Bm, long ldb,
                float *C, long ldc, int accumulate, long m0, long m1, long n0, long n1);
// tn: A (K, M), Bm (K, N).     C[m, n] += sum_k A[k, m] * Bm[k, n]
void tk_gemm_tn(long M, long N, long K, const float *A, long lda, const float *Bm, long ldb,
                float *C, long ldc, int accumulate, long m0, long m1, long n0, long n1);
// nt: A (M, K), Bt (N, K).     C[m, n] += sum_k A[m, k] * Bt[n, k]
void tk_gemm_nt(long M, long N, long K, const float *A, long lda, const float *Bt, long ldbt,
                float *C, long ldc, int accumulate, long m0, long m1, long n0, long n1);

// Convolution forward of one sample as a GEMM over its im2col: Y[k, p] = bias[k] +
// sum_q W[k, q] col[q, p] for k in [k0, k1), p in [p0, p1) (overwrites); bias may be NULL.
void tk_conv_fwd(long K, long P, long Q,
                 const float *W,     // (K, Q), Q = C kh kw
                 const float *col,   // (Q, P), P = Ho Wo
                 const float *bias,  // (K) or NULL
                 float *Y,           // (K, P)
                 long k0, long k1, long p0, long p1);

// s[m] += sum_n A[m * lda + n] for m in [m0, m1) (row sums; accumulates).
void tk_rowsum(long N, const float *A, long lda, float *s, long m0, long m1);

// ---- pruned dense layers (tk_sparse.h): the batch along the lanes, ldt its padded length ----
void tk_sp_in(long B, long IN, long ldt, const float *X, float *XT, long i0, long i1);
void tk_sp_out(long B, long OUT, long ldt, const float *YT, const float *bias, float *Y, long o0, long o1);
void tk_sp_dy(long B, long OUT, long ldt, const float *dY, float *dYT, float *dbias, long o0, long o1);
void tk_sp_dx_out(long B, long IN, long ldt, const float *dXT, float *dX, long i0, long i1);
void tk_csr_fwd(long ldt, const int *rowptr, const int *col, const float *val, const float *XT,
                float *YT, long o0, long o1);
void tk_csc_dx(long ldt, const int *colptr, const int *rowidx, const int *perm, const float *val,
               const float *dYT, float *dXT, long i0, long i1);
void tk_csr_dw(long ldt, const int *rowptr, const int *col, const float *XT, const float *dYT,
               float *dval, long o0, long o1);

// the same layer while every entry is kept (values = W (OUT, IN)): dense GEMMs
void tk_spd_fwd(long B, long IN, long OUT, const float *X, const float *W, const float *bias, float *Y,
                long o0, long o1);
void tk_spd_dx(long B, long IN, long OUT, const float *dY, const float *W, float *dX, long i0, long i1);
void tk_spd_dw(long B, long IN, long OUT, const float *X, const float *dY, float *dW, float *dbias,
               long o0, long o1);

#endif
