/* prune.c: the host side of pruned weights (the plan's ST_SPARSE; plan/sparse.c). It keeps
 * each pruned weight's pattern where the generated code reads it (the CSR table of SK_CSR,
 * the float mask of SK_MASK), prunes by magnitude at the schedule's events (Zhu & Gupta: the
 * smallest |w| of the weights still kept go, so a pruned weight never comes back), and moves
 * patterns in and out of files as CSR (crow_indices, col_indices, values: PyTorch's
 * torch.sparse_csr_tensor conventions).
 *
 * Pruning zeroes a weight and its optimizer state together; with SK_CSR it compacts the
 * values, the optimizer state and the columns in place (the order of the survivors is kept,
 * so a resumed run sees the very same arrays). Ties in |w| at the threshold keep the lower
 * index: the result is a function of the weights alone. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* the pruned weight's tensor of layer i, or NULL */
const PlanTensor *sparse_tensor(const Model *m, int i) {
  if (!m->pl.layers[i].sp.on) return NULL;
  for (int t = 0; t < m->pl.ntensors; t++)
    if (m->pl.tensors[t].layer == i && m->pl.tensors[t].p.sparse) return &m->pl.tensors[t];
  return NULL;
}

static int nslots(const Model *m) {
  return m->pl.opt_block ? (m->pl.opt_block == m->pl.grad_block ? 1 : 2) : 0;
}

/* where entry (r, c) of the matrix view lives in a masked weight's memory */
static int64_t mask_idx(const PlanTensor *pt, const SparsePlan *s, int64_t r, int64_t c) {
  return pt->p.stored_t ? c * s->R + r : r * s->C + c;
}

static int32_t *table(const Model *m, const SparsePlan *s) { return (int32_t *)(void *)(m->P + s->tab); }

int64_t sparse_nnz(const Model *m, int i) {
  const SparsePlan *s = &m->pl.layers[i].sp;
  const PlanTensor *pt = sparse_tensor(m, i);
  if (!pt) return 0;
  if (s->kernel == SK_CSR) return table(m, s)[0];
  int64_t n = 0;
  for (int64_t k = 0; k < s->R * s->C; k++) n += m->P[s->mask + k] != 0;
  return n;
}

/* the CSC view of a CSR table: column pointers, row indices, positions of the values */
static void build_csc(int32_t *tab, const SparsePlan *s) {
  if (s->no_csc) return;   /* an inference-only object's table */
  int32_t *rowptr = tab + sp_tab_rowptr(s), *col = tab + sp_tab_col(s);
  int32_t *colptr = tab + sp_tab_colptr(s), *rowidx = tab + sp_tab_rowidx(s), *perm = tab + sp_tab_perm(s);
  memset(colptr, 0, sizeof(int32_t) * (size_t)(s->C + 1));
  for (int32_t p = 0; p < tab[0]; p++) colptr[col[p] + 1]++;
  for (int64_t c = 0; c < s->C; c++) colptr[c + 1] += colptr[c];
  int32_t *next = malloc(sizeof(int32_t) * (size_t)(s->C + 1));
  memcpy(next, colptr, sizeof(int32_t) * (size_t)(s->C + 1));
  for (int64_t r = 0; r < s->R; r++)
    for (int32_t p = rowptr[r]; p < rowptr[r + 1]; p++) {
      int32_t q = next[col[p]]++;
      rowidx[q] = (int32_t)r, perm[q] = p;
    }
  free(next);
}

/* Layer i's pattern from CSR (crow R + 1, col nnz, validated by the caller); vals[0] the
 * weight's values, vals[1 + s] optimizer slot s (NULL: zero), in CSR order. */
void sparse_set(Model *m, int i, const int64_t *crow, const int64_t *col, int64_t nnz, const float *const *vals) {
  const SparsePlan *s = &m->pl.layers[i].sp;
  const PlanTensor *pt = sparse_tensor(m, i);
  int ns = nslots(m);
  float *w = m->P + pt->offset, *slot[2] = {NULL, NULL};
  for (int k = 0; k < ns; k++) slot[k] = m->O + (int64_t)k * m->pl.grad_block + pt->grad_offset;
  memset(m->G + pt->grad_offset, 0, sizeof(float) * (size_t)pt->elems);
  if (s->kernel == SK_CSR) {
    int32_t *tab = table(m, s), *rowptr = tab + sp_tab_rowptr(s), *cl = tab + sp_tab_col(s);
    tab[0] = (int32_t)nnz;
    for (int64_t r = 0; r <= s->R; r++) rowptr[r] = (int32_t)crow[r];
    for (int64_t p = 0; p < nnz; p++) cl[p] = (int32_t)col[p];
    memset(w, 0, sizeof(float) * (size_t)pt->elems);
    memcpy(w, vals[0], sizeof(float) * (size_t)nnz);
    for (int k = 0; k < ns; k++) {
      memset(slot[k], 0, sizeof(float) * (size_t)pt->elems);
      if (vals[1 + k]) memcpy(slot[k], vals[1 + k], sizeof(float) * (size_t)nnz);
    }
    build_csc(tab, s);
    return;
  }
  float *mask = m->P + s->mask;
  memset(mask, 0, sizeof(float) * (size_t)(s->R * s->C));
  memset(w, 0, sizeof(float) * (size_t)pt->elems);
  for (int k = 0; k < ns; k++) memset(slot[k], 0, sizeof(float) * (size_t)pt->elems);
  for (int64_t r = 0; r < s->R; r++)
    for (int64_t p = crow[r]; p < crow[r + 1]; p++) {
      int64_t x = mask_idx(pt, s, r, col[p]);
      mask[x] = 1, w[x] = vals[0][p];
      for (int k = 0; k < ns; k++) slot[k][x] = vals[1 + k] ? vals[1 + k][p] : 0;
    }
}

/* every pruned weight fully kept, at its current values (a fresh model) */
void sparse_reset(Model *m) {
  for (int i = 0; i < m->sp.nlayers; i++) {
    const SparsePlan *s = &m->pl.layers[i].sp;
    const PlanTensor *pt = sparse_tensor(m, i);
    if (!pt) continue;
    if (s->kernel == SK_MASK) {
      for (int64_t k = 0; k < s->R * s->C; k++) m->P[s->mask + k] = 1;
      continue;
    }
    int32_t *tab = table(m, s), *rowptr = tab + sp_tab_rowptr(s), *col = tab + sp_tab_col(s);
    tab[0] = (int32_t)(s->R * s->C);
    for (int64_t r = 0; r <= s->R; r++) rowptr[r] = (int32_t)(r * s->C);
    for (int64_t p = 0; p < s->R * s->C; p++) col[p] = (int32_t)(p % s->C);
    build_csc(tab, s);
  }
}

/* Layer i as CSR: crow (R + 1), col and values (nnz each) of the weight (slot -1) or of
 * optimizer slot `slot`; any output may be NULL. */
void sparse_export(const Model *m, int i, int32_t *crow, int32_t *col, float *vals, int slot) {
  const SparsePlan *s = &m->pl.layers[i].sp;
  const PlanTensor *pt = sparse_tensor(m, i);
  const float *src = slot < 0 ? m->P + pt->offset : m->O + (int64_t)slot * m->pl.grad_block + pt->grad_offset;
  if (s->kernel == SK_CSR) {
    const int32_t *tab = table(m, s);
    if (crow) memcpy(crow, tab + sp_tab_rowptr(s), sizeof(int32_t) * (size_t)(s->R + 1));
    if (col) memcpy(col, tab + sp_tab_col(s), sizeof(int32_t) * (size_t)tab[0]);
    if (vals) memcpy(vals, src, sizeof(float) * (size_t)tab[0]);
    return;
  }
  const float *mask = m->P + s->mask;
  int64_t n = 0;
  for (int64_t r = 0; r < s->R; r++) {
    if (crow) crow[r] = (int32_t)n;
    for (int64_t c = 0; c < s->C; c++) {
      int64_t x = mask_idx(pt, s, r, c);
      if (mask[x] == 0) continue;
      if (col) col[n] = (int32_t)c;
      if (vals) vals[n] = src[x];
      n++;
    }
  }
  if (crow) crow[s->R] = (int32_t)n;
}

/* ---- magnitude pruning -------------------------------------------------------------------- */

/* the k-th largest of a[0..n) (1 <= k <= n), reordering a: quickselect, median-of-three */
static float kth_largest(float *a, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1, want = k - 1;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    float x = a[lo], y = a[mid], z = a[hi];
    float piv = x > y ? (y > z ? y : x > z ? z : x) : (x > z ? x : y > z ? z : y);
    int64_t i = lo, j = hi;
    while (i <= j) {   /* descending: > piv left, < piv right */
      while (a[i] > piv) i++;
      while (a[j] < piv) j--;
      if (i <= j) {
        float t = a[i];
        a[i] = a[j], a[j] = t;
        i++, j--;
      }
    }
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else return a[want];
  }
  return a[want];
}

static float mag(float w) { return isnan(w) ? INFINITY : fabsf(w); }

/* keep[x] for the k largest |w| among the `n` candidates w[x] (x in list order): those above
 * the threshold, then those at it in list order */
static void select_keep(const float *w, int64_t n, int64_t k, bool *keep) {
  float *a = malloc(sizeof(float) * (size_t)(n ? n : 1));
  for (int64_t x = 0; x < n; x++) a[x] = mag(w[x]);
  float tau = kth_largest(a, n, k);
  free(a);
  int64_t above = 0;
  for (int64_t x = 0; x < n; x++) above += mag(w[x]) > tau;
  int64_t at = k - above;
  for (int64_t x = 0; x < n; x++) {
    float v = mag(w[x]);
    keep[x] = v > tau || (v == tau && at-- > 0);
  }
}

/* prune layer i to k kept weights (k < its nnz) */
static void prune_layer(Model *m, int i, int64_t k) {
  const SparsePlan *s = &m->pl.layers[i].sp;
  const PlanTensor *pt = sparse_tensor(m, i);
  int ns = nslots(m);
  float *w = m->P + pt->offset, *slot[2] = {NULL, NULL};
  for (int q = 0; q < ns; q++) slot[q] = m->O + (int64_t)q * m->pl.grad_block + pt->grad_offset;
  if (s->kernel == SK_CSR) {
    int32_t *tab = table(m, s), *rowptr = tab + sp_tab_rowptr(s), *col = tab + sp_tab_col(s);
    int64_t n = tab[0];
    bool *keep = malloc((size_t)n);
    select_keep(w, n, k, keep);
    int64_t d = 0;
    for (int64_t r = 0; r < s->R; r++) {
      int64_t p0 = rowptr[r], p1 = rowptr[r + 1];
      rowptr[r] = (int32_t)d;
      for (int64_t p = p0; p < p1; p++) {
        if (!keep[p]) continue;
        w[d] = w[p], col[d] = col[p];
        for (int q = 0; q < ns; q++) slot[q][d] = slot[q][p];
        d++;
      }
    }
    rowptr[s->R] = (int32_t)d, tab[0] = (int32_t)d;
    for (int64_t p = d; p < n; p++) {   /* past the end: zero, as a fresh table has it */
      w[p] = 0;
      for (int q = 0; q < ns; q++) slot[q][p] = 0;
    }
    free(keep);
    build_csc(tab, s);
    return;
  }
  float *mask = m->P + s->mask;
  int64_t full = s->R * s->C, n = 0;
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)full);
  float *cand = malloc(sizeof(float) * (size_t)full);
  for (int64_t r = 0; r < s->R; r++)   /* candidates in CSR order, as SK_CSR breaks ties */
    for (int64_t c = 0; c < s->C; c++) {
      int64_t x = mask_idx(pt, s, r, c);
      if (mask[x] != 0) idx[n] = x, cand[n++] = w[x];
    }
  bool *keep = malloc((size_t)(n ? n : 1));
  select_keep(cand, n, k, keep);
  for (int64_t p = 0; p < n; p++)
    if (!keep[p]) {
      int64_t x = idx[p];
      mask[x] = 0, w[x] = 0;
      for (int q = 0; q < ns; q++) slot[q][x] = 0;
    }
  free(keep), free(cand), free(idx);
}

/* After optimizer step m->t of `total`: every layer whose schedule has an event now is pruned
 * to the sparsity due. Returns how many layers changed. */
int sparse_prune(Model *m, int64_t total) {
  int changed = 0;
  for (int i = 0; i < m->sp.nlayers; i++) {
    const Layer *l = &m->sp.layers[i];
    const SparsePlan *s = &m->pl.layers[i].sp;
    if (!sparse_tensor(m, i) || !sp_is_event(&l->sparse, m->t, total)) continue;
    double due = sp_sparsity_at(&l->sparse, s->target, m->t, total);
    int64_t k = due >= s->target ? s->nnz : sp_kept(due, s->R * s->C);
    if (k < s->nnz) k = s->nnz;
    if (k < sparse_nnz(m, i)) prune_layer(m, i, k), changed++;
  }
  return changed;
}

/* "layer 0: 90.0% zeros (80282 of 802816 weights)" per pruned layer */
void sparse_report(const Model *m, FILE *out) {
  for (int i = 0; i < m->sp.nlayers; i++) {
    const SparsePlan *s = &m->pl.layers[i].sp;
    if (!sparse_tensor(m, i)) continue;
    int64_t n = sparse_nnz(m, i), full = s->R * s->C;
    fprintf(out, "sparsity of layer %d (%s): %.2f%% zeros, %lld of %lld weights kept (target %.2f%%)\n", i,
            m->sp.layers[i].name, 100.0 * (double)(full - n) / (double)full, (long long)n, (long long)full,
            100 * s->target);
  }
}
