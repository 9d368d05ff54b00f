// tk_gemm.h: the GEMM kernels that generated code calls for dense layers (and later for
// im2col convolution and tensor-train contractions), in the Glow "libjit" style.
//
// Where it stands: kernels.c includes this header and defines the externally visible
// entry points (tk_dense_fwd, ...). The build compiles kernels.c to LLVM bitcode once
// (clang-16 -O2 -emit-llvm -c -ffp-contract=fast -fno-math-errno, no -march); the emitter
// links that bitcode into the model's module and calls the entry points with CONSTANT dims,
// strides and tile bounds. Every function here is always_inline, so after inlining and O3
// each call site becomes a loop nest specialized to its exact shape: the row/column
// remainder dispatch below folds away and only the micro-kernels that shape needs remain.
// The code is portable C with GCC/clang vector extensions (v16f = 16 floats = one AVX-512
// register); the target's features (znver4) are applied at JIT time.
//
// Scheme. Everything is row-major. One register-blocked micro-kernel (tk__kern) computes
// an (mr <= 8) x (up to 3 vectors of 16 columns) tile of C = A @ B over a K range, keeping
// the tile in registers: per k it loads the B row's 1-3 vectors and broadcasts mr scalars
// of A (mr*nv FMAs per mr+nv loads; 8x3 = 24 accumulators). A is addressed through two
// strides (sam, sak) so the same kernel serves A and A^T: X @ Wt (forward) and X^T @ dY
// (weight gradient). A column remainder of 1..15 is a zero-padded vector loaded and stored
// in pieces of 8/4/2/1 lanes (no masked-load builtin is portable); rows left after blocks of 8 go
// through blocks of 4, 2, 1. K is split in even blocks of at most TK_KC = 1024, so that a
// 48-column panel of B (<= 192 KB) stays in L2 while every row block of A sweeps it
// (measured: smaller blocks, 128-512, only cost the extra passes over C).
//
// Packing. Where B's rows are a page (4 KB) or more apart and at least 4 row blocks use each
// panel (a dense layer's forward X @ Wt at batch >= 24-32, OUT >= 1024), the K rows of one
// panel land in one L1 set and on as many pages, and each row block re-read the panel from
// L2 or memory: each (<= TK_PK, 48) block of the panel is copied into a stack buffer first
// (tk__gemm_packed). The weight gradient X^T @ dY, whose A^T is read with a stride of IN,
// also copies blocks of TK_MC rows of A^T (tk__gemm_packed_at). Copies only move floats:
// every sum is the same sequence of adds, so results are bit-identical either way. Measured
// on Zen 3 (AVX2, bench/gemm, batch 32, one thread): forward 784x1024 and 1024x1024 from
// 34-39 to 49-57 GFLOP/s, their weight gradients from 17-27 to 42-49.
//
// The data gradient dX = dY @ Wt^T reads both dY and Wt along OUT, so for OUT >= 64 it is
// a block of 4 (b) x 4 (i) dot products over contiguous OUT, 16 vector accumulators, ended
// by one transposing horizontal sum (tk__dot); for short OUT (= 10), where the reduction
// would dominate, a (TK_PKC, 48) panel of Wt^T is transposed into a stack buffer (12 KB)
// and the broadcast micro-kernel runs on it.
//
// Dimension legend: B batch, IN input features, OUT output features; M, N, K the generic
// GEMM dims (C (M, N) = A (M, K) @ B (K, N)). Dims and strides are `long` (i64 in IR).
// Tiles: callers split the columns [o0, o1) of OUT (forward, weight gradient) or the
// columns [i0, i1) of IN (data gradient) across threads; any split is correct; the fastest
// split on multiples of 48 (forward, weight gradient) or of 4 (data gradient).
#ifndef TK_GEMM_H
#define TK_GEMM_H

#include <stddef.h>

// The v16f helpers below are always inlined, so the vector-ABI-without-avx512f warning
// (the bitcode is built with no -march) does not apply to anything that survives.
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"

#define TK_AI static inline __attribute__((always_inline))
// Tuning constants (overridable with -D for experiments, see bench/gemm/run.sh).
#ifndef TK_KC
#define TK_KC 1024    // max K block of the broadcast GEMMs (forward, generic)
#endif
#ifndef TK_DOT_K
#define TK_DOT_K 64   // A @ Bt^T with K >= this uses dot products, shorter K packs Bt^T
#endif
#define TK_PKC 64     // K block of the packed Bt^T panel
#ifndef TK_PK         // K block of a packed B panel (tk__gemm_packed): 16 KB / 24 KB panels;
#ifdef TK_NARROW      // 0: never pack
#define TK_PK 256
#else
#define TK_PK 128
#endif
#endif
#define TK_PACK_LDB 1024  // pack B when its rows are at least a page (4 KB) apart...
#define TK_PACK_MB 4      // ... and at least this many row blocks of TK_MR reuse the panel
// Register blocking, two builds of this file (compiler/meson.build): the wide one for 32
// vector registers of 16 floats (AVX-512: an 8 x 48 tile = 24 accumulators; dot blocks of 4 x
// 4 = 16), and with TK_NARROW for 16 registers of 8 floats (AVX2), where one tk_v16f takes two
// registers: a 6 x 16 tile (12 registers of accumulators, 2 for B, 1 broadcast) and 2 x 2 dot
// blocks. The JIT links the one that fits the target (jit.c, cg_link_kernels).
#ifdef TK_NARROW
#define TK_MR 6       // rows per micro-kernel block
#define TK_NV 1       // vectors per column panel
#define TK_DOT_MR 2
#define TK_DOT_NC 2
#else
#define TK_MR 8
#define TK_NV 3
#define TK_DOT_MR 4
#define TK_DOT_NC 4
#endif
#define TK_NP (16 * TK_NV)   // column panel

typedef float tk_v16f __attribute__((vector_size(64)));

TK_AI tk_v16f tk__load(const float *p) {
  tk_v16f v;
  __builtin_memcpy(&v, p, sizeof v);  // unaligned load, no aliasing assumptions
  return v;
}
TK_AI void tk__store(float *p, tk_v16f v) { __builtin_memcpy(p, &v, sizeof v); }
// Partial vector: the n in [0, 16) leading lanes, the rest zero. Built from pieces of 8, 4,
// 2, 1 lanes (the bits of n) rather than a loop: the bitcode is optimized before n is known,
// and a loop would reach the JIT already reshaped; these branches fold to 1-4 plain loads.
typedef float tk_v8f __attribute__((vector_size(32)));
typedef float tk_v4f __attribute__((vector_size(16)));
typedef float tk_v2f __attribute__((vector_size(8)));
TK_AI tk_v16f tk__loadp(const float *p, long n) {
  tk_v16f v = {0};
  long o = 0;
  if (n & 8) {
    tk_v8f a, z = {0};
    __builtin_memcpy(&a, p, sizeof a);
    v = __builtin_shufflevector(a, z, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    o = 8;
  }
  if (n & 4) {
    tk_v4f a;
    __builtin_memcpy(&a, p + o, sizeof a);
    for (int j = 0; j < 4; j++) v[o + j] = a[j];
    o += 4;
  }
  if (n & 2) {
    tk_v2f a;
    __builtin_memcpy(&a, p + o, sizeof a);
    for (int j = 0; j < 2; j++) v[o + j] = a[j];
    o += 2;
  }
  if (n & 1) v[o] = p[o];
  return v;
}
TK_AI void tk__storep(float *p, tk_v16f v, long n) {
  long o = 0;
  if (n & 8) {
    tk_v8f a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
    __builtin_memcpy(p, &a, sizeof a);
    o = 8;
  }
  if (n & 4) {
    tk_v4f a;
    for (int j = 0; j < 4; j++) a[j] = v[o + j];
    __builtin_memcpy(p + o, &a, sizeof a);
    o += 4;
  }
  if (n & 2) {
    tk_v2f a;
    for (int j = 0; j < 2; j++) a[j] = v[o + j];
    __builtin_memcpy(p + o, &a, sizeof a);
    o += 2;
  }
  if (n & 1) p[o] = v[o];
}
// Vector j of a column group: full vectors first, then the padded one.
TK_AI tk_v16f tk__ldv(const float *p, int j, int nv, long tail) {
  return j < nv ? tk__load(p + 16 * j) : tk__loadp(p + 16 * j, tail);
}
TK_AI void tk__stv(float *p, int j, int nv, long tail, tk_v16f v) {
  if (j < nv) tk__store(p + 16 * j, v);
  else tk__storep(p + 16 * j, v, tail);
}

// BIAS: bias[c] per column (dense); RBIAS: bias[r] per row (conv: one per output channel)
enum { TK_INIT_ZERO, TK_INIT_ACC, TK_INIT_BIAS, TK_INIT_RBIAS };

// Micro-kernel: C[0:mr, 0:16*nv+tail] (init) + sum_k A[r*sam + k*sak] * B[k*ldb + c].
// mr in 1..8, nv full vectors + a padded one when tail > 0, nv + (tail > 0) in 1..3.
// init: ZERO, ACC (read C), BIAS (bias[c] on every row) or RBIAS (bias[r] on row r).
TK_AI void tk__kern(int mr, int nv, long tail, long K,
                    const float *restrict A, long sam, long sak,   // (mr, K) via strides
                    const float *restrict Bm, long ldb,            // (K, cols)
                    float *restrict C, long ldc,                   // (mr, cols)
                    int init, const float *restrict bias) {        // (cols)
  int nt = nv + (tail > 0);
  tk_v16f acc[8][3];
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nt; j++) {
      if (init == TK_INIT_ACC) acc[r][j] = tk__ldv(C + r * ldc, j, nv, tail);
      else if (init == TK_INIT_BIAS) acc[r][j] = tk__ldv(bias, j, nv, tail);
      else if (init == TK_INIT_RBIAS) acc[r][j] = (tk_v16f){0} + bias[r];
      else acc[r][j] = (tk_v16f){0};
    }
  for (long k = 0; k < K; k++) {
    tk_v16f b[3];
    for (int j = 0; j < nt; j++) b[j] = tk__ldv(Bm + k * ldb, j, nv, tail);
    for (int r = 0; r < mr; r++) {
      float a = A[r * sam + k * sak];
      for (int j = 0; j < nt; j++) acc[r][j] += a * b[j];
    }
  }
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nt; j++) tk__stv(C + r * ldc, j, nv, tail, acc[r][j]);
}

// Rows [m0, m1) of one column group (width 16*nv + tail): blocks of TK_MR, then 4, 2, 1.
// Written out per mr so that mr is a literal in every micro-kernel instance.
// The counts come from m1 - m0 by arithmetic, not from the loop's exit value: with constant
// bounds (or bounds a constant apart) the first constant-folding passes then remove the
// remainder blocks a shape does not need, before O3's expensive passes see them.
TK_AI void tk__rows(long m0, long m1, int nv, long tail, long K,
                    const float *A, long sam, long sak, const float *Bm, long ldb,
                    float *C, long ldc, int init, const float *bias) {
  long nb = (m1 - m0) / TK_MR, m = m0 + nb * TK_MR, rem = m1 - m0 - nb * TK_MR;   // rem < 8
  for (long q = 0; q < nb; q++) {
    long mq = m0 + q * TK_MR;
    tk__kern(TK_MR, nv, tail, K, A + mq * sam, sam, sak, Bm, ldb, C + mq * ldc, ldc, init, init == TK_INIT_RBIAS ? bias + mq : bias);
  }
  if (rem & 4) {
    tk__kern(4, nv, tail, K, A + m * sam, sam, sak, Bm, ldb, C + m * ldc, ldc, init, init == TK_INIT_RBIAS ? bias + m : bias);
    m += 4;
  }
  if (rem & 2) {
    tk__kern(2, nv, tail, K, A + m * sam, sam, sak, Bm, ldb, C + m * ldc, ldc, init, init == TK_INIT_RBIAS ? bias + m : bias);
    m += 2;
  }
  if (rem & 1)
    tk__kern(1, nv, tail, K, A + m * sam, sam, sak, Bm, ldb, C + m * ldc, ldc, init, init == TK_INIT_RBIAS ? bias + m : bias);
}

// Rows [m0, m1) of one column group of width w <= TK_NP: full vectors and a padded one, nv
// and tail literals per branch (folded when w is constant).
TK_AI void tk__rows_w(long m0, long m1, long w, long K, const float *A, long sam, long sak,
                      const float *Bm, long ldb, float *C, long ldc, int init, const float *bias) {
  long t = w % 16;
  if (w == TK_NP) tk__rows(m0, m1, TK_NV, 0, K, A, sam, sak, Bm, ldb, C, ldc, init, bias);
  else if (w >= 32) tk__rows(m0, m1, 2, t, K, A, sam, sak, Bm, ldb, C, ldc, init, bias);
  else if (w >= 16) tk__rows(m0, m1, 1, t, K, A, sam, sak, Bm, ldb, C, ldc, init, bias);
  else tk__rows(m0, m1, 0, t, K, A, sam, sak, Bm, ldb, C, ldc, init, bias);
}

// Columns [n0, n1): panels of 48, then one group of the remaining < 48 columns.
// nv and tail are literals per branch (folded when n1 - n0 is constant).
TK_AI void tk__panels(long m0, long m1, long n0, long n1, long K,
                      const float *A, long sam, long sak, const float *Bm, long ldb,
                      float *C, long ldc, int init, const float *bias) {
  long np = (n1 - n0) / TK_NP, n = n0 + np * TK_NP, r = n1 - n0 - np * TK_NP;   // (tk__rows)
  for (long q = 0; q < np; q++) {
    long nq = n0 + q * TK_NP;
    tk__rows(m0, m1, TK_NV, 0, K, A, sam, sak, Bm + nq, ldb, C + nq, ldc, init, bias && init == TK_INIT_BIAS ? bias + nq : bias);
  }
  if (r > 0)
    tk__rows_w(m0, m1, r, K, A, sam, sak, Bm + n, ldb, C + n, ldc, init,
               bias && init == TK_INIT_BIAS ? bias + n : bias);
}

// One (kc, w <= 48) block of B copied into the contiguous panel P (row stride TK_NP), then
// every row block of [m0, m1) runs on P. The partial vector of a narrow panel is stored
// whole (zero-padded): P has room for it and tk__kern reads only the w columns.
TK_AI void tk__packed_rows(long m0, long m1, long w, long kc, const float *A, long sam,
                           long sak, const float *Bm, long ldb, float *restrict P,
                           float *C, long ldc, int init, const float *bias) {
  long nv = w / 16, t = w % 16;
  for (long kk = 0; kk < kc; kk++)
    for (int j = 0; j < TK_NV; j++)
      if (j < nv + (t > 0)) tk__store(P + kk * TK_NP + 16 * j, tk__ldv(Bm + kk * ldb, j, nv, t));
  tk__rows_w(m0, m1, w, kc, A, sam, sak, P, TK_NP, C, ldc, init, bias);
}

// One column panel of width w (a literal at each call site) through all of K: even blocks
// of at most TK_PK rows, the first applying init, the others accumulating (two call sites,
// each with a literal init, so that no instance carries all four init cases).
TK_AI void tk__packed_panel(long m0, long m1, long w, long K, const float *A, long sam,
                            long sak, const float *Bm, long ldb, float *restrict P,
                            float *C, long ldc, int init, const float *bias) {
  long pk = TK_PK > 0 ? TK_PK : 1, nkb = (K + pk - 1) / pk, kb = (K + nkb - 1) / nkb;  // <= TK_PK
  long kc0 = K < kb ? K : kb;
  tk__packed_rows(m0, m1, w, kc0, A, sam, sak, Bm, ldb, P, C, ldc, init, bias);
  for (long k0 = kb; k0 < K; k0 += kb) {
    long kc = K - k0 < kb ? K - k0 : kb;
    tk__packed_rows(m0, m1, w, kc, A + k0 * sak, sam, sak, Bm + k0 * ldb, ldb, P, C, ldc, TK_INIT_ACC, 0);
  }
}

// tk__gemm with B packed: each column panel, one K block at a time, is copied into a stack
// panel (TK_PK x 48 floats) and reused by all the row blocks. The panel's rows of B are ldb
// apart, and a layer's ldb is often 4 KB or a multiple: unpacked, every k of a sweep lands
// in the same L1 set and a new page, and each row block re-reads the panel from L2 or
// memory. Packed, the panel stays in L1 while C's tile takes the K blocks in turn.
TK_AI void tk__gemm_packed(long m0, long m1, long n0, long n1, long K,
                           const float *A, long sam, long sak, const float *Bm, long ldb,
                           float *C, long ldc, int init, const float *bias) {
  float P[TK_PK * TK_NP] __attribute__((aligned(64)));
  long np = (n1 - n0) / TK_NP, n = n0 + np * TK_NP, r = n1 - n0 - np * TK_NP;   // (tk__rows)
  for (long q = 0; q < np; q++) {
    long nq = n0 + q * TK_NP;
    tk__packed_panel(m0, m1, TK_NP, K, A, sam, sak, Bm + nq, ldb, P, C + nq, ldc, init,
                     bias && init == TK_INIT_BIAS ? bias + nq : bias);
  }
  if (r > 0)
    tk__packed_panel(m0, m1, r, K, A, sam, sak, Bm + n, ldb, P, C + n, ldc, init,
                     bias && init == TK_INIT_BIAS ? bias + n : bias);
}

// A^T read with strides (1, sak), sak a page or more (the weight gradient X^T @ dY): every k
// of a row block's broadcasts is a line in the same L1 set. Blocks of TK_MC rows of A are
// copied (K <= TK_PKA) into a stack block with rows TK_MC apart, then go through
// tk__gemm_packed. One block of mc rows (a literal at each call site).
#define TK_MC (16 * TK_MR)   // rows of a packed A^T block
#define TK_PKA 64            // the longest K packed so (a 24 KB / 32 KB block)
TK_AI void tk__packed_at_block(long mc0, long mc, long n0, long n1, long K, const float *A,
                               long sak, const float *Bm, long ldb, float *restrict Q,
                               float *C, long ldc, int init, const float *bias) {
  long nv = mc / 16, t = mc % 16;
  for (long k = 0; k < K; k++)
    for (int j = 0; j < TK_MC / 16; j++)
      if (j < nv + (t > 0)) tk__store(Q + k * TK_MC + 16 * j, tk__ldv(A + k * sak + mc0, j, nv, t));
  tk__gemm_packed(0, mc, n0, n1, K, Q, 1, TK_MC, Bm, ldb, C + mc0 * ldc, ldc, init,
                  bias && init == TK_INIT_RBIAS ? bias + mc0 : bias);
}
TK_AI void tk__gemm_packed_at(long m0, long m1, long n0, long n1, long K, const float *A,
                              long sak, const float *Bm, long ldb, float *C, long ldc,
                              int init, const float *bias) {
  float Q[TK_PKA * TK_MC] __attribute__((aligned(64)));
  long nb = (m1 - m0) / TK_MC, r = m1 - m0 - nb * TK_MC;   // (tk__rows)
  for (long q = 0; q < nb; q++)
    tk__packed_at_block(m0 + q * TK_MC, TK_MC, n0, n1, K, A, sak, Bm, ldb, Q, C, ldc, init, bias);
  if (r > 0) tk__packed_at_block(m0 + nb * TK_MC, r, n0, n1, K, A, sak, Bm, ldb, Q, C, ldc, init, bias);
}

// C[m0:m1, n0:n1] = init + A[m0:m1, :] @ B[:, n0:n1], K cache-blocked (TK_KC): the first
// block applies init, the later ones accumulate into C. B is packed (tk__gemm_packed) when
// its rows are far apart and enough row blocks reuse each panel; both fold at JIT time.
TK_AI void tk__gemm(long m0, long m1, long n0, long n1, long K,
                    const float *A, long sam, long sak, const float *Bm, long ldb,
                    float *C, long ldc, int init, const float *bias) {
  if (m1 - m0 <= 0 || n1 - n0 <= 0) return;   // differences: folded when the bounds are a constant apart
  if (K <= 0) {  // nothing to sum: only the init
    if (init == TK_INIT_ACC) return;
    for (long m = m0; m < m1; m++)
      for (long n = n0; n < n1; n++)
        C[m * ldc + n] = init == TK_INIT_BIAS ? bias[n] : init == TK_INIT_RBIAS ? bias[m] : 0.0f;
    return;
  }
  if (TK_PK > 0 && ldb >= TK_PACK_LDB && m1 - m0 >= TK_PACK_MB * TK_MR && sam == 1 &&
      sak >= TK_PACK_LDB && K <= TK_PKA) {
    tk__gemm_packed_at(m0, m1, n0, n1, K, A, sak, Bm, ldb, C, ldc, init, bias);
    return;
  }
  if (TK_PK > 0 && ldb >= TK_PACK_LDB && m1 - m0 >= TK_PACK_MB * TK_MR) {
    tk__gemm_packed(m0, m1, n0, n1, K, A, sam, sak, Bm, ldb, C, ldc, init, bias);
    return;
  }
  long nkb = (K + TK_KC - 1) / TK_KC, kb = (K + nkb - 1) / nkb;  // even K blocks <= TK_KC
  for (long k0 = 0; k0 < K; k0 += kb) {
    long kc = K - k0 < kb ? K - k0 : kb;
    tk__panels(m0, m1, n0, n1, kc, A + k0 * sak, sam, sak, Bm + k0 * ldb, ldb, C, ldc,
               k0 == 0 ? init : TK_INIT_ACC, bias);
  }
}

// s[j] = the sum of the lanes of v[j], j < 16: a transposing reduction, 15 shuffle pairs.
TK_AI tk_v16f tk__hsum16(const tk_v16f *v) {
  tk_v16f x[8], y[4], z[2];
  for (int k = 0; k < 8; k++)
    x[k] = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18,
                                   19, 20, 21, 22, 23) +
           __builtin_shufflevector(v[2 * k], v[2 * k + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24,
                                   25, 26, 27, 28, 29, 30, 31);
  for (int k = 0; k < 4; k++)
    y[k] = __builtin_shufflevector(x[2 * k], x[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17,
                                   18, 19, 24, 25, 26, 27) +
           __builtin_shufflevector(x[2 * k], x[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21,
                                   22, 23, 28, 29, 30, 31);
  for (int k = 0; k < 2; k++)
    z[k] = __builtin_shufflevector(y[2 * k], y[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17,
                                   20, 21, 24, 25, 28, 29) +
           __builtin_shufflevector(y[2 * k], y[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19,
                                   22, 23, 26, 27, 30, 31);
  return __builtin_shufflevector(z[0], z[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                 26, 28, 30) +
         __builtin_shufflevector(z[0], z[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,
                                 27, 29, 31);
}

// Dot micro-kernel for C = A @ Bt^T: an (mr <= 4) x (nc <= 4) block of dot products over
// the contiguous K of both A rows and Bt rows, 16 vector accumulators (8 loads per 16 FMAs),
// then one tk__hsum16. Unused accumulators stay zero.
TK_AI void tk__dot(int mr, int nc, long K, const float *restrict A, long lda,
                   const float *restrict Bt, long ldbt, float *restrict C, long ldc,
                   int init) {
  tk_v16f acc[16];
  for (int q = 0; q < 16; q++) acc[q] = (tk_v16f){0};
  long k = 0;
  for (; k + 16 <= K; k += 16) {
    tk_v16f a[4], b[4];
    for (int r = 0; r < mr; r++) a[r] = tk__load(A + r * lda + k);
    for (int c = 0; c < nc; c++) b[c] = tk__load(Bt + c * ldbt + k);
    for (int r = 0; r < mr; r++)
      for (int c = 0; c < nc; c++) acc[r * 4 + c] += a[r] * b[c];
  }
  if (k < K) {
    tk_v16f a[4], b[4];
    for (int r = 0; r < mr; r++) a[r] = tk__loadp(A + r * lda + k, K - k);
    for (int c = 0; c < nc; c++) b[c] = tk__loadp(Bt + c * ldbt + k, K - k);
    for (int r = 0; r < mr; r++)
      for (int c = 0; c < nc; c++) acc[r * 4 + c] += a[r] * b[c];
  }
  tk_v16f s = tk__hsum16(acc);  // lane r*4 + c: C[r, c]
  for (int r = 0; r < mr; r++)
    for (int c = 0; c < nc; c++) {
      float *p = C + r * ldc + c;
      *p = (init == TK_INIT_ACC ? *p : 0.0f) + s[r * 4 + c];
    }
}

// Rows [m0, m1) of nc (literal, 1..4) columns: blocks of 4 rows, then 3, 2 or 1.
TK_AI void tk__dot_rows(int nc, long m0, long m1, long K, const float *A, long lda,
                        const float *Bt, long ldbt, float *C, long ldc, int init) {
  long nb = (m1 - m0) / TK_DOT_MR, m = m0 + nb * TK_DOT_MR, r = m1 - m0 - nb * TK_DOT_MR;   // (tk__rows)
  for (long q = 0; q < nb; q++)
    tk__dot(TK_DOT_MR, nc, K, A + (m0 + q * TK_DOT_MR) * lda, lda, Bt, ldbt, C + (m0 + q * TK_DOT_MR) * ldc, ldc, init);
  if (r == 3) tk__dot(3, nc, K, A + m * lda, lda, Bt, ldbt, C + m * ldc, ldc, init);
  else if (r == 2) tk__dot(2, nc, K, A + m * lda, lda, Bt, ldbt, C + m * ldc, ldc, init);
  else if (r == 1) tk__dot(1, nc, K, A + m * lda, lda, Bt, ldbt, C + m * ldc, ldc, init);
}

// Columns [n0, n1) in blocks of 4, then one block of the 1-3 left.
TK_AI void tk__gemm_nt_dot(long m0, long m1, long n0, long n1, long K, const float *A,
                           long lda, const float *Bt, long ldbt, float *C, long ldc,
                           int init) {
  long nb = (n1 - n0) / TK_DOT_NC, n = n0 + nb * TK_DOT_NC, r = n1 - n0 - nb * TK_DOT_NC;   // (tk__rows)
  for (long q = 0; q < nb; q++)
    tk__dot_rows(TK_DOT_NC, m0, m1, K, A, lda, Bt + (n0 + q * TK_DOT_NC) * ldbt, ldbt, C + n0 + q * TK_DOT_NC, ldc, init);
  if (r == 3) tk__dot_rows(3, m0, m1, K, A, lda, Bt + n * ldbt, ldbt, C + n, ldc, init);
  else if (r == 2) tk__dot_rows(2, m0, m1, K, A, lda, Bt + n * ldbt, ldbt, C + n, ldc, init);
  else if (r == 1) tk__dot_rows(1, m0, m1, K, A, lda, Bt + n * ldbt, ldbt, C + n, ldc, init);
}

// C[m0:m1, n0:n1] = init + A[m0:m1, :] @ Bt[n0:n1, :]^T with Bt (N, K) row-major.
// K >= TK_DOT_K: dot products over contiguous K (tk__gemm_nt_dot); measured 1.1-1.6x faster
// than packing at B <= 64 and equal at B = 256 (bench/gemm/RESULTS.md). Short K (OUT = 10):
// a (TK_PKC, 48) panel of Bt^T is packed on the stack (12 KB) and reused by every row block
// of the broadcast micro-kernel, with no horizontal reductions.
TK_AI void tk__gemm_nt(long m0, long m1, long n0, long n1, long K,
                       const float *A, long lda,     // (M, K)
                       const float *Bt, long ldbt,   // (N, K)
                       float *C, long ldc,           // (M, N)
                       int init) {
  if (m1 - m0 <= 0 || n1 - n0 <= 0) return;   // differences: folded when the bounds are a constant apart
  if (K <= 0) {
    tk__gemm(m0, m1, n0, n1, 0, A, lda, 1, Bt, 0, C, ldc, init, 0);
    return;
  }
  if (K >= TK_DOT_K) {
    tk__gemm_nt_dot(m0, m1, n0, n1, K, A, lda, Bt, ldbt, C, ldc, init);
    return;
  }
  float P[TK_PKC * TK_NP] __attribute__((aligned(64)));  // (kc, 48): Bt^T panel
  for (long n = n0; n < n1; n += TK_NP) {
    long w = n1 - n < TK_NP ? n1 - n : TK_NP;
    for (long k0 = 0; k0 < K; k0 += TK_PKC) {
      long kc = K - k0 < TK_PKC ? K - k0 : TK_PKC;
      // Scalar copy on purpose: vectorized, this transpose becomes gathers and scatters,
      // which cost ~3x more on znver4.
      for (long c = 0; c < w; c++) {
#pragma clang loop vectorize(disable)
        for (long kk = 0; kk < kc; kk++) P[kk * TK_NP + c] = Bt[(n + c) * ldbt + k0 + kk];
      }
      int in = k0 == 0 ? init : TK_INIT_ACC;
      const float *a = A + k0;
      tk__rows_w(m0, m1, w, kc, a, lda, 1, P, TK_NP, C + n, ldc, in, 0);
    }
  }
}

// s[n] += sum_m A[m * lda + n] for n in [n0, n1): column sums (the bias gradient).
TK_AI void tk__colsum(long M, const float *A, long lda, float *s, long n0, long n1) {
  long n = n0;
  for (; n + 16 <= n1; n += 16) {
    tk_v16f v = tk__load(s + n);
    for (long m = 0; m < M; m++) v += tk__load(A + m * lda + n);
    tk__store(s + n, v);
  }
  if (n < n1) {
    tk_v16f v = tk__loadp(s + n, n1 - n);
    for (long m = 0; m < M; m++) v += tk__loadp(A + m * lda + n, n1 - n);
    tk__storep(s + n, v, n1 - n);
  }
}

#pragma clang diagnostic pop
#endif
