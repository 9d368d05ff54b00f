// tk_sparse.h: the CSR kernels of pruned dense layers (codegen/sp_emit.c calls them; the
// plan's SK_CSR). The batch runs along the vector lanes: activations are transposed to
// (features, ldt) with ldt the batch padded to a multiple of 16 (or the batch itself below
// 16), so every non-zero w[o, i] is one broadcast and ldt/16 FMAs of a contiguous row:
//   forward      Y^T[o, :]  = sum_{p in row o} val[p] X^T[col[p], :]
//   data grad    dX^T[i, :] = sum_{q in column i} val[perm[q]] dY^T[rowidx[q], :]   (CSC view)
//   weight grad  dval[p]   += dot(dY^T[o, :], X^T[col[p], :])   (on the pattern only)
// Up to 64 lanes of accumulators stay in registers (4 vectors); a longer batch takes more
// passes over the pattern. Tiles: rows [o0, o1) (forward, weight gradient) or columns
// [i0, i1) (data gradient), any split correct. Included by kernels.c (always_inline).
#ifndef TK_SPARSE_H
#define TK_SPARSE_H

#include "tk_gemm.h"

// as in tk_gemm.h: the v16f helpers are always inlined, no vector crosses a real call
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"

// AT[c, r] = A[r, c] (+ bias[c]) for c in [c0, c1), r < R; AT[c, r] = 0 for R <= r < ldt.
// Blocks of 16 columns so that both sides stream.
TK_AI void tk__sp_transpose(long R, long C, long ldt, const float *A, float *AT, long c0, long c1) {
  for (long cb = c0; cb < c1; cb += 16) {
    long ce = cb + 16 < c1 ? cb + 16 : c1;
    for (long r = 0; r < R; r++)
      for (long c = cb; c < ce; c++) AT[c * ldt + r] = A[r * C + c];
  }
  if (ldt > R)
    for (long c = c0; c < c1; c++)
      for (long r = R; r < ldt; r++) AT[c * ldt + r] = 0;
}

// the accumulators of one row: nv (1..4) vectors, lanes b0 .. b0 + 16 nv
#define TK_SP_ACC(nv, expr_x, w)                                                   \
  do {                                                                             \
    const float *x_ = (expr_x);                                                    \
    a0 += (w) * tk__load(x_);                                                      \
    if ((nv) > 1) a1 += (w) * tk__load(x_ + 16);                                   \
    if ((nv) > 2) a2 += (w) * tk__load(x_ + 32);                                   \
    if ((nv) > 3) a3 += (w) * tk__load(x_ + 48);                                   \
  } while (0)

TK_AI void tk__sp_store(float *y, long nv, tk_v16f a0, tk_v16f a1, tk_v16f a2, tk_v16f a3) {
  tk__store(y, a0);
  if (nv > 1) tk__store(y + 16, a1);
  if (nv > 2) tk__store(y + 32, a2);
  if (nv > 3) tk__store(y + 48, a3);
}

// A batch shorter than a vector (ldt < 16): y[0..ldt) = sum_p val[pos(p)] X[idx[p], 0..ldt), the
// accumulators in registers (a local array the constant ldt unrolls) and four non-zeros at a
// time in separate sums, so that the FMA latency does not chain them (ldt = 1 is a gathered dot
// product). pos = perm, or p itself when perm is NULL.
TK_AI void tk__sp_rows_short(long ldt, int p0, int p1, const int *idx, const int *perm, const float *val,
                             const float *X, float *y) {
  float a[4][16] = {{0}};
  int p = p0;
  for (; p + 4 <= p1; p += 4)
    for (int j = 0; j < 4; j++) {
      float w = val[perm ? perm[p + j] : p + j];
      const float *x = X + (long)idx[p + j] * ldt;
      for (long b = 0; b < ldt; b++) a[j][b] += w * x[b];
    }
  for (; p < p1; p++) {
    float w = val[perm ? perm[p] : p];
    const float *x = X + (long)idx[p] * ldt;
    for (long b = 0; b < ldt; b++) a[0][b] += w * x[b];
  }
  for (long b = 0; b < ldt; b++) y[b] = (a[0][b] + a[1][b]) + (a[2][b] + a[3][b]);
}

// Y[r, :] = sum_{p in [ptr[r], ptr[r+1])} val[pos(p)] X[idx[p], :] for rows r in [r0, r1), rows
// of length ldt; pos = perm, or p itself when perm is NULL (a constant that folds). The CSR
// forward is (rowptr, col, no perm) over X^T; the CSC data gradient (colptr, rowidx, perm)
// over dY^T.
TK_AI void tk__sp_gather(long ldt, const int *ptr, const int *idx, const int *perm, const float *val,
                         const float *X, float *Y, long r0, long r1) {
  if (ldt < 16) {
    for (long r = r0; r < r1; r++) tk__sp_rows_short(ldt, ptr[r], ptr[r + 1], idx, perm, val, X, Y + r * ldt);
    return;
  }
  for (long b0 = 0; b0 < ldt; b0 += 64) {
    long nv = (ldt - b0) / 16 < 4 ? (ldt - b0) / 16 : 4;
    for (long r = r0; r < r1; r++) {
      tk_v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
      for (int p = ptr[r]; p < ptr[r + 1]; p++) TK_SP_ACC(nv, X + (long)idx[p] * ldt + b0, val[perm ? perm[p] : p]);
      tk__sp_store(Y + r * ldt + b0, nv, a0, a1, a2, a3);
    }
  }
}

TK_AI float tk__sp_hsum(tk_v16f v) {
  tk_v8f h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
             __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  tk_v4f q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
  tk_v2f d = __builtin_shufflevector(q, q, 0, 1) + __builtin_shufflevector(q, q, 2, 3);
  return d[0] + d[1];
}

// dval[p] += dot(dY^T[o, :], X^T[col[p], :]) for the non-zeros of rows [o0, o1)
TK_AI void tk__csr_dw(long ldt, const int *rowptr, const int *col, const float *XT,
                      const float *dYT, float *dval, long o0, long o1) {
  if (ldt < 16) {
    for (long o = o0; o < o1; o++)
      for (int p = rowptr[o]; p < rowptr[o + 1]; p++) {
        const float *x = XT + (long)col[p] * ldt, *y = dYT + o * ldt;
        float s = 0;
        for (long b = 0; b < ldt; b++) s += x[b] * y[b];
        dval[p] += s;
      }
    return;
  }
  for (long o = o0; o < o1; o++) {
    const float *y = dYT + o * ldt;
    for (long b0 = 0; b0 < ldt; b0 += 64) {
      long nv = (ldt - b0) / 16 < 4 ? (ldt - b0) / 16 : 4;
      tk_v16f y0 = tk__load(y + b0), y1 = {0}, y2 = {0}, y3 = {0};
      if (nv > 1) y1 = tk__load(y + b0 + 16);
      if (nv > 2) y2 = tk__load(y + b0 + 32);
      if (nv > 3) y3 = tk__load(y + b0 + 48);
      int p = rowptr[o], pe = rowptr[o + 1];
      // 16 non-zeros at a time: 16 partial vectors, one transposing horizontal sum
      for (; p + 16 <= pe; p += 16) {
        tk_v16f s[16];
        for (int j = 0; j < 16; j++) {
          const float *x = XT + (long)col[p + j] * ldt + b0;
          s[j] = y0 * tk__load(x);
          if (nv > 1) s[j] += y1 * tk__load(x + 16);
          if (nv > 2) s[j] += y2 * tk__load(x + 32);
          if (nv > 3) s[j] += y3 * tk__load(x + 48);
        }
        tk__store(dval + p, tk__load(dval + p) + tk__hsum16(s));
      }
      for (; p < pe; p++) {
        const float *x = XT + (long)col[p] * ldt + b0;
        tk_v16f s = y0 * tk__load(x);
        if (nv > 1) s += y1 * tk__load(x + 16);
        if (nv > 2) s += y2 * tk__load(x + 32);
        if (nv > 3) s += y3 * tk__load(x + 48);
        dval[p] += tk__sp_hsum(s);
      }
    }
  }
}

#pragma clang diagnostic pop
#endif
