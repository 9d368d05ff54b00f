/* tt.c: tensor-train planning, part of the plan stage (plan.c calls tt_plan first). For every
 * layer with `tt:` it chooses the modes, the ranks and the contraction order, and prices them:
 *
 *   modes  ordered factorizations of the layer's dims into d = 2..5 factors >= 2 (conv: of its
 *          channels C and filters K, d = 1..4, after the kh x kw spatial core), the most balanced
 *          ones first (T3F #222: unbalanced splits are why TT layers run no faster than dense);
 *          a dim that factors badly (a prime, 2 x a prime) is padded to the next one that does
 *   ranks  the spec's, or the largest uniform rank that meets `compress` across every
 *          `tt: auto` layer (rank 8 when there is no budget), clamped by the unfolding bounds
 *   order  left-to-right, right-to-left or forming W first: the one with the fewest forward +
 *          backward FLOPs at the compiled batch size (tt_emit.c runs it), against dense
 *
 * Cost model (a multiply-add is 2 FLOPs). A chain step k is one GEMM per prefix of finished
 * output modes: (n_k r_k) x (r_{k-1} m_k) times (r_{k-1} m_k) x (m_{k+1}..m_d B), so
 * MACs(k) = n_1..n_{k-1} * n_k r_k * r_{k-1} m_k * m_{k+1}..m_d * B; the backward is twice
 * that (the core's gradient and the state's), less the first step's state gradient when no
 * one needs dx. Forming W: F_k = F_{k-1} (P, r_{k-1}) @ core_k (r_{k-1}, m_k n_k r_k) with
 * P = prod_{j<k} m_j n_j, then the dense (or conv) layer, and the same chain backward. */
#include "teslac.h"

#include <math.h>
#include <string.h>

#define TT_MAX_CANDS 48        /* orderings kept per dim and d */
#define TT_DEFAULT_RANK 8      /* tt: auto without a compress budget */

static int64_t sat_add(int64_t a, int64_t b) { return a > INT64_MAX - b ? INT64_MAX : a + b; }
static int64_t sat_mul(int64_t a, int64_t b) {
  if (a == 0 || b == 0) return 0;
  return a > INT64_MAX / b ? INT64_MAX : a * b;
}

/* ---- costs ------------------------------------------------------------------------------- */

/* dense: sum_k r[k] m[k] n[k] r[k+1]; conv adds the spatial core kh kw r[0] */
int64_t tt_core_params(const TTPlan *t, int64_t kh_kw) {
  int64_t p = kh_kw ? sat_mul(kh_kw, t->r[0]) : 0;
  for (int k = 0; k < t->d; k++) {
    int64_t rl = kh_kw ? t->r[k] : (k ? t->r[k] : 1), rr = kh_kw ? t->r[k + 1] : t->r[k + 1];
    p = sat_add(p, sat_mul(sat_mul(rl, t->m[k]), sat_mul(t->n[k], rr)));
  }
  return p;
}

/* ranks of a dense chain as a vector r[0..d]: r[0] = r[d] = 1 */
static void chain_ranks(const TTPlan *t, int64_t *r) {
  r[0] = 1;
  for (int k = 1; k < t->d; k++) r[k] = t->r[k];
  r[t->d] = 1;
}

/* MACs of the forward chain, left to right over (m, n, r), per step into steps[] */
static int64_t chain_macs(int d, const int64_t *m, const int64_t *n, const int64_t *r, int64_t B,
                          int64_t *steps) {
  int64_t total = 0;
  for (int k = 0; k < d; k++) {
    int64_t x = B;
    for (int j = 0; j < k; j++) x = sat_mul(x, n[j]);
    for (int j = k + 1; j < d; j++) x = sat_mul(x, m[j]);
    x = sat_mul(x, sat_mul(sat_mul(n[k], r[k + 1]), sat_mul(r[k], m[k])));
    if (steps) steps[k] = x;
    total = sat_add(total, x);
  }
  return total;
}

/* forward and backward FLOPs of a chain: 2 fwd; 2 (dcore) + 2 (dstate, but step 0's only
 * when dx is needed) */
static Flops chain_flops(int d, const int64_t *m, const int64_t *n, const int64_t *r, int64_t B,
                         bool need_dx) {
  int64_t s[TT_MAXD];
  int64_t f = chain_macs(d, m, n, r, B, s);
  int64_t bwd = sat_mul(4, f);
  if (!need_dx && bwd != INT64_MAX) bwd -= 2 * s[0];
  return (Flops){sat_mul(2, f), bwd};
}

/* MACs to form the full weight from cores with mode sizes q (= m n) */
static int64_t form_macs(int d, const int64_t *q, const int64_t *r) {
  int64_t total = 0, P = 1;
  for (int k = 0; k < d; k++) {
    total = sat_add(total, sat_mul(sat_mul(P, r[k]), sat_mul(q[k], r[k + 1])));
    P = sat_mul(P, q[k]);
  }
  return total;
}

int64_t tt_cost(Flops f) { return sat_add(f.fwd, f.bwd); }

/* Prices every order of t for layer l at batch B (t->flops, t->dense_flops) and picks the
 * cheapest. Bias and fused activations cost the same in every order and are left out. */
static void tt_price(const Layer *l, TTPlan *t, int64_t B, bool need_dx) {
  t->dense_flops = op_registry[l->op]->flops(l, B, need_dx);
  int d = t->d;
  if (l->op == OP_dense) {
    int64_t r[TT_MAXD + 1], mr[TT_MAXD], nr[TT_MAXD], rr[TT_MAXD + 1], q[TT_MAXD];
    chain_ranks(t, r);
    t->flops[TT_LTR] = chain_flops(d, t->m, t->n, r, B, need_dx);
    for (int k = 0; k < d; k++) mr[k] = t->m[d - 1 - k], nr[k] = t->n[d - 1 - k];
    for (int k = 0; k <= d; k++) rr[k] = r[d - k];
    t->flops[TT_RTL] = chain_flops(d, mr, nr, rr, B, need_dx);
    for (int k = 0; k < d; k++) q[k] = t->m[k] * t->n[k];
    int64_t fm = form_macs(d, q, r), bmn = sat_mul(sat_mul(B, t->Mp), t->Np);
    /* forming (2 fm), the dense layer on the padded dims, the core gradients (4 fm) */
    t->flops[TT_FORM] = (Flops){sat_add(sat_mul(2, fm), sat_mul(2, bmn)),
                                sat_add(sat_mul(4, fm), sat_mul(need_dx ? 4 : 2, bmn))};
  } else {   /* conv: the spatial core leads the chain */
    int64_t q[TT_MAXD + 1], r[TT_MAXD + 2];
    q[0] = l->u.conv.kh * l->u.conv.kw, r[0] = 1;
    for (int k = 0; k < d; k++) q[k + 1] = t->m[k] * t->n[k];
    for (int k = 0; k <= d; k++) r[k + 1] = t->r[k];
    r[d + 1] = 1;
    int64_t fm = form_macs(d + 1, q, r);
    /* the direct path (TT_LTR): the spatial core as a conv of every input channel to r[0]
     * outputs, then the chain over the channel modes with (B, H' W') trailing */
    int64_t P = shape_elems(&l->out) / l->out.d[0], rr[TT_MAXD + 1];
    for (int k = 0; k < d; k++) rr[k] = t->r[k];
    rr[d] = 1;
    Flops ch = chain_flops(d, t->m, t->n, rr, sat_mul(B, P), true);
    int64_t sp = sat_mul(sat_mul(sat_mul(B, t->M), sat_mul(t->r[0], P)), q[0]);
    t->flops[TT_LTR] = (Flops){sat_add(ch.fwd, sat_mul(2, sp)), sat_add(ch.bwd, sat_mul(need_dx ? 4 : 2, sp))};
    t->flops[TT_RTL] = (Flops){INT64_MAX, 0};
    t->flops[TT_FORM] = (Flops){sat_add(t->dense_flops.fwd, sat_mul(2, fm)),
                                sat_add(t->dense_flops.bwd, sat_mul(4, fm))};
  }
  t->order = TT_LTR;
  for (int o = 1; o < TT_NORDERS; o++)
    if (tt_cost(t->flops[o]) < tt_cost(t->flops[t->order])) t->order = (TTOrder)o;
  /* conv's direct path moves states of r[0] C B H' W' floats through memory; measured on
   * fashion_cnn_ttconv it ran at about half the FLOP rate of the rebuilt kernel (5.8 ms for
   * 511 MFLOP against 3.0 ms for 696), so it is taken only at under half the FLOPs */
  if (l->op == OP_conv && t->order == TT_LTR && tt_cost(t->flops[TT_LTR]) > tt_cost(t->flops[TT_FORM]) / 2)
    t->order = TT_FORM;
  /* the spec's order, where this layer has it (conv: left_to_right, the direct path, or form_w) */
  if (l->tt.order && t->flops[l->tt.order - 1].fwd != INT64_MAX) t->order = (TTOrder)(l->tt.order - 1);
}

/* ---- modes ------------------------------------------------------------------------------- */

typedef struct Facts { int n; int64_t f[TT_MAX_CANDS][TT_MAXD]; } Facts;

/* every ordered factorization of x into d factors in [2, fmax], appended to a scratch list;
 * the factors are taken from dv, the divisors of the dim being factored (ascending) */
typedef struct FactList { int n, cap; int64_t (*f)[TT_MAXD]; } FactList;

static void enum_facts(Ctx *cx, int64_t x, int d, int at, int64_t *cur, const int64_t *dv, int ndv,
                       int64_t fmax, FactList *out) {
  if (at == d - 1) {
    if (x < 2 || x > fmax) return;
    cur[at] = x;
    if (out->n == out->cap) {
      int cap = out->cap ? 2 * out->cap : 256;
      int64_t (*nf)[TT_MAXD] = arena_alloc(cx, sizeof *nf * (size_t)cap);
      if (out->n) memcpy(nf, out->f, sizeof *nf * (size_t)out->n);
      out->f = nf, out->cap = cap;
    }
    memcpy(out->f[out->n++], cur, sizeof(int64_t) * TT_MAXD);
    return;
  }
  for (int i = 0; i < ndv && dv[i] <= fmax && dv[i] <= x / 2; i++) {
    if (x % dv[i]) continue;
    cur[at] = dv[i];
    enum_facts(cx, x / dv[i], d, at + 1, cur, dv, ndv, fmax, out);
    if (out->n > 20000) return;   /* enough to find the balanced ones */
  }
}

/* the divisors >= 2 of x, ascending (at most cap; trial division to sqrt x) */
static int divisors(int64_t x, int64_t *dv, int cap) {
  int lo = 0, nhi = 0;
  int64_t hi[4096];
  for (int64_t f = 2; f <= x / f && lo < cap / 2; f++)
    if (x % f == 0) {
      dv[lo++] = f;
      if (f != x / f && nhi < 4096) hi[nhi++] = x / f;
    }
  for (int i = nhi - 1; i >= 0 && lo < cap; i--) dv[lo++] = hi[i];
  if (lo < cap && x >= 2) dv[lo++] = x;
  return lo;
}

/* imbalance: sum of squared log deviations from the geometric mean */
static double imbalance(const int64_t *f, int d) {
  double mean = 0, s = 0;
  for (int k = 0; k < d; k++) mean += log((double)f[k]);
  mean /= d;
  for (int k = 0; k < d; k++) s += (log((double)f[k]) - mean) * (log((double)f[k]) - mean);
  return s;
}

/* The most balanced factorizations of x into d factors (all orderings of the best multisets);
 * 0 when x has none with every factor at most twice the d-th root. */
static void best_facts(Ctx *cx, int64_t x, int d, Facts *out) {
  out->n = 0;
  FactList all = {0};
  int64_t cur[TT_MAXD] = {0}, dv[8192];
  double root = pow((double)x, 1.0 / d);
  int ndv = divisors(x, dv, 8192);
  enum_facts(cx, x, d, 0, cur, dv, ndv, (int64_t)(2 * root + 1), &all);
  if (!all.n) return;
  double best = 1e300;
  for (int i = 0; i < all.n; i++) {
    double b = imbalance(all.f[i], d);
    if (b < best) best = b;
  }
  for (int i = 0; i < all.n && out->n < TT_MAX_CANDS; i++) {
    if (imbalance(all.f[i], d) > best + 1e-9) continue;
    bool ok = true;
    for (int k = 0; k < d; k++) ok &= (double)all.f[i][k] <= 2 * root + 1;
    if (!ok) continue;
    memcpy(out->f[out->n++], all.f[i], sizeof(int64_t) * TT_MAXD);
  }
}

/* x itself when it factors well into d modes, else the next dim up (among the next 256, then
 * the smallest product of d factors near the d-th root) that does */
static int64_t padded_dim(Ctx *cx, int64_t x, int d, Facts *f) {
  for (int64_t y = x; y <= x + 256; y++) {
    best_facts(cx, y, d, f);
    if (f->n) return y;
  }
  int64_t base = (int64_t)floor(pow((double)x, 1.0 / d)), best = INT64_MAX;
  for (int64_t b = base > 2 ? base - 1 : 2; b <= base + 1; b++)
    for (int a = 0; a <= d; a++) {   /* a factors of b + 1, d - a of b */
      int64_t y = 1;
      for (int k = 0; k < d; k++) y = sat_mul(y, k < a ? b + 1 : b);
      if (y >= x && y < best) best = y;
    }
  if (best == INT64_MAX || best > TS_MAX_DIM) {
    f->n = 0;
    return 0;
  }
  best_facts(cx, best, d, f);
  return f->n ? best : 0;
}

/* ---- ranks ------------------------------------------------------------------------------- */

/* Uniform rank `rank` clamped by the unfolding bounds: dense r[k] <= min(prod_{j<k} m n,
 * prod_{j>=k} m n); conv the same with the spatial core's kh kw in front. */
static void set_ranks(TTPlan *t, int64_t rank, int64_t kh_kw, const int64_t *fixed) {
  int d = t->d, nc = kh_kw ? d + 1 : d;
  int64_t q[TT_MAXD + 1];
  int c = 0;
  if (kh_kw) q[c++] = kh_kw;
  for (int k = 0; k < d; k++) q[c++] = t->m[k] * t->n[k];
  /* cut j (between core j-1 and j of the nc cores), j = 1..nc-1 */
  for (int j = 1; j < nc; j++) {
    int64_t left = 1, right = 1;
    for (int i = 0; i < j; i++) left = sat_mul(left, q[i]);
    for (int i = j; i < nc; i++) right = sat_mul(right, q[i]);
    int64_t want = fixed ? fixed[j - 1] : rank, b = left < right ? left : right;
    int64_t v = want < b ? want : b;
    if (kh_kw) t->r[j - 1] = v;   /* conv: r[0] after the spatial core */
    else t->r[j] = v;
  }
  if (kh_kw) t->r[d] = 1;
  else t->r[0] = t->r[d] = 1;
}

/* ---- one layer --------------------------------------------------------------------------- */

/* the bias a TT layer keeps dense */
static int64_t tt_bias(const Layer *l) {
  return l->op == OP_dense ? (l->u.dense.bias ? l->u.dense.units : 0) : (l->u.conv.bias ? l->u.conv.filters : 0);
}

static int64_t layer_kh_kw(const Layer *l) { return l->op == OP_conv ? l->u.conv.kh * l->u.conv.kw : 0; }

/* The layer's (M, N): dense (in, out); conv (C, K). */
static void layer_dims(const Layer *l, int64_t *M, int64_t *N) {
  if (l->op == OP_dense) *M = shape_elems(&l->in), *N = l->u.dense.units;
  else *M = l->in.d[0], *N = l->u.conv.filters;
}

/* The cheapest TT for l at uniform rank `rank` over the candidate modes (or the spec's modes);
 * `by_params`: the one with the fewest parameters instead. false: no modes fit. */
static bool best_at_rank(Ctx *cx, const Layer *l, int64_t rank, int64_t B, bool need_dx,
                         bool by_params, TTPlan *best) {
  int64_t M, N, khkw = layer_kh_kw(l);
  layer_dims(l, &M, &N);
  bool have = false;
  int dlo = l->op == OP_conv ? 1 : 2, dhi = l->op == OP_conv ? 4 : 5;
  if (l->tt.d) dlo = dhi = l->tt.d;
  for (int d = dlo; d <= dhi; d++) {
    Facts *fm = arena_alloc(cx, sizeof *fm), *fn = arena_alloc(cx, sizeof *fn);
    int64_t Mp = M, Np = N;
    if (l->tt.d) {
      fm->n = fn->n = 1;
      memcpy(fm->f[0], l->tt.in_modes, sizeof fm->f[0]), memcpy(fn->f[0], l->tt.out_modes, sizeof fn->f[0]);
    } else if (d == 1) {
      fm->n = fn->n = 1, fm->f[0][0] = M, fn->f[0][0] = N;
    } else {
      Mp = padded_dim(cx, M, d, fm), Np = padded_dim(cx, N, d, fn);
      if (!Mp || !Np) continue;
    }
    for (int a = 0; a < fm->n; a++)
      for (int b = 0; b < fn->n; b++) {
        TTPlan t = {0};
        t.d = d, t.M = M, t.N = N, t.Mp = Mp, t.Np = Np;
        memcpy(t.m, fm->f[a], sizeof t.m), memcpy(t.n, fn->f[b], sizeof t.n);
        set_ranks(&t, rank, khkw, l->tt.d && !l->tt.rank && !l->tt.autoplan ? l->tt.ranks : NULL);
        t.params = tt_core_params(&t, khkw);
        tt_price(l, &t, B, need_dx);
        bool better;
        if (!have) better = true;
        else if (by_params) better = t.params < best->params ||
                                     (t.params == best->params && tt_cost(t.flops[t.order]) < tt_cost(best->flops[best->order]));
        else {   /* within 2% of each other, FLOPs are a tie: the smaller train wins */
          double c = (double)tt_cost(t.flops[t.order]), bc = (double)tt_cost(best->flops[best->order]);
          better = c < 0.98 * bc || (c <= 1.02 * bc && t.params < best->params);
        }
        if (better) *best = t, have = true;
      }
  }
  return have;
}

/* ---- the plan ---------------------------------------------------------------------------- */

/* Chooses every TT layer's modes, ranks and order (into pl->layers[i].tt); meets compress over
 * the tt: auto layers. `fixed_params`: the parameters of everything that is not tt: auto. */
void tt_plan(Ctx *cx, const Spec *sp, int64_t batch, Plan *pl, int64_t fixed_params,
             int64_t dense_total) {
  bool need_dx = false;
  bool need[sp->nlayers > 0 ? sp->nlayers : 1];
  int nauto = 0;
  for (int i = 0; i < sp->nlayers; i++) {
    need[i] = need_dx;
    if (op_registry[sp->layers[i].op]->weighted) need_dx = true;
  }
  /* forced layers: the spec's rank, or its modes and ranks */
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    if (!l->tt.on || (l->op != OP_dense && l->op != OP_conv)) continue;
    if (l->tt.autoplan) {
      nauto++;
      continue;
    }
    TTPlan *t = &pl->layers[i].tt;
    int64_t rank = l->tt.rank ? l->tt.rank : l->tt.ranks[0];
    if (!best_at_rank(cx, l, rank, batch, need[i], false, t)) {
      diag_at(cx, l->tt.loc, "no tensor-train modes fit this layer's dims; give 'in_modes' and "
                             "'out_modes'");
      continue;
    }
    t->forced = true;
    if (l->tt.order && (int)t->order != l->tt.order - 1) {
      if (l->op == OP_conv && l->tt.order - 1 == TT_RTL)
        diag_at(cx, l->tt.loc, "a tensor-train conv runs left_to_right (the direct path: a spatial conv, "
                               "then the chain over the channel modes) or form_w (its kernel rebuilt)");
      else
        diag_at(cx, l->tt.loc, "this tensor train is too large to run %s: its FLOPs at batch %lld overflow "
                               "a 64-bit count", tt_order_name((TTOrder)(l->tt.order - 1)), (long long)batch);
    }
  }
  if (!nauto) return;

  /* tt: auto layers: one uniform rank, the largest that meets the budget */
  int64_t budget = INT64_MAX;
  if (sp->compress.max_params) budget = sp->compress.max_params;
  else if (sp->compress.ratio > 1) budget = (int64_t)floor((double)dense_total / sp->compress.ratio);
  bool has_budget = budget != INT64_MAX;
  for (int i = 0; i < sp->nlayers; i++)   /* the forced TT layers count at their planned size */
    if (sp->layers[i].tt.on && !sp->layers[i].tt.autoplan) fixed_params = sat_add(fixed_params, pl->layers[i].tt.params + tt_bias(&sp->layers[i]));
  int64_t lo_rank = 1, hi_rank = has_budget ? 4096 : TT_DEFAULT_RANK;
  int64_t found = 0;
  bool by_params_found = false;
  /* the total at rank r is monotone in r: binary search for the largest that fits */
  for (int pass = 0; pass < 2 && !found; pass++) {
    bool by_params = pass == 1;
    int64_t lo = lo_rank, hi = hi_rank;
    while (lo <= hi) {
      int64_t r = (lo + hi) / 2, total = fixed_params;
      for (int i = 0; i < sp->nlayers; i++) {
        const Layer *l = &sp->layers[i];
        if (!l->tt.on || !l->tt.autoplan) continue;
        TTPlan t;
        if (!best_at_rank(cx, l, r, batch, need[i], by_params, &t)) total = INT64_MAX;
        else total = sat_add(total, t.params + tt_bias(l));
      }
      if (total <= budget) found = r, by_params_found = by_params, lo = r + 1;
      else hi = r - 1;
    }
  }
  if (!found) {
    /* the smallest reachable: rank 1, fewest parameters */
    int64_t total = fixed_params;
    for (int i = 0; i < sp->nlayers; i++) {
      const Layer *l = &sp->layers[i];
      if (!l->tt.on || !l->tt.autoplan) continue;
      TTPlan t;
      if (best_at_rank(cx, l, 1, batch, need[i], true, &t))
        total = sat_add(total, t.params + tt_bias(l));
    }
    diag_at(cx, sp->compress.loc, "compress cannot be met: %s allows %lld parameters, but the smallest "
                                  "this model reaches with its tt: auto layers at rank 1 is %lld "
                                  "(the other layers keep %lld)",
            sp->compress.max_params ? "max_params" : "ratio", (long long)budget, (long long)total,
            (long long)fixed_params);
    return;
  }
  for (int i = 0; i < sp->nlayers; i++) {
    const Layer *l = &sp->layers[i];
    if (!l->tt.on || !l->tt.autoplan) continue;
    best_at_rank(cx, l, found, batch, need[i], by_params_found, &pl->layers[i].tt);
  }
}

/* Where the layer's chain states and scratch go in its aux area (floats), for batch B; false
 * when one of them would pass TS_MAX_ELEMS. */
bool tt_plan_scratch(const Layer *l, TTPlan *t, int64_t B) {
  int64_t at = 0, mx = 0;
#define AL(x) (((x) + 15) / 16 * 16)
  if (t->order == TT_FORM) {
    /* partial products F_1..F_d (dense) or F_0..F_d (conv), each (P_k, r_k) */
    int nc = l->op == OP_conv ? t->d + 1 : t->d;
    int64_t P = 1;
    for (int k = 0; k < nc; k++) {
      int64_t q, rr;
      if (l->op == OP_conv) q = k ? t->m[k - 1] * t->n[k - 1] : l->u.conv.kh * l->u.conv.kw, rr = k < t->d ? t->r[k] : 1;
      else q = t->m[k] * t->n[k], rr = t->r[k + 1];
      P = sat_mul(P, q);
      int64_t e = sat_mul(P, rr);
      if (e > TS_MAX_ELEMS) return false;
      t->state[k] = at, at += AL(e);
      if (e > mx) mx = e;
    }
  } else {
    /* S_k (prod_{j<k} n_j, r_{k-1}, m_k..m_d, B), k = 0..d in the chain's own mode order;
     * conv's direct path: r_0 after the spatial core, B H' W' trailing */
    int d = t->d;
    int64_t m[TT_MAXD], n[TT_MAXD], r[TT_MAXD + 1];
    for (int k = 0; k < d; k++) {
      int s = t->order == TT_RTL ? d - 1 - k : k;
      m[k] = t->m[s], n[k] = t->n[s];
    }
    for (int k = 0; k <= d; k++) r[k] = t->order == TT_RTL ? t->r[d - k] : t->r[k];
    r[0] = r[d] = 1;
    if (l->op == OP_conv) r[0] = t->r[0], B = sat_mul(B, shape_elems(&l->out) / l->out.d[0]);
    for (int k = 0; k <= d; k++) {
      int64_t e = sat_mul(B, r[k]);
      for (int j = 0; j < k; j++) e = sat_mul(e, n[j]);
      for (int j = k; j < d; j++) e = sat_mul(e, m[j]);
      if (e > TS_MAX_ELEMS) return false;
      t->state[k] = at, at += AL(e);
      if (e > mx) mx = e;
    }
  }
  t->scratch[0] = at, at += AL(mx);
  t->scratch[1] = at, at += AL(mx);
  t->act_floats = at;
  return at <= 4 * TS_MAX_ELEMS;
#undef AL
}

/* Per-core standard deviation so that W's entries have variance `var` (the dense layer's
 * init): W sums prod(inner ranks) products of ncores entries, so
 * sigma = (var / prod r)^(1 / (2 ncores)) (T3F's rule). */
double tt_core_std(const TTPlan *t, bool conv, double var) {
  int nc = conv ? t->d + 1 : t->d;
  double lr = 0;
  if (conv)
    for (int k = 0; k < t->d; k++) lr += log((double)t->r[k]);
  else
    for (int k = 1; k < t->d; k++) lr += log((double)t->r[k]);
  return exp((log(var) - lr) / (2.0 * nc));
}

const char *tt_order_name(TTOrder o) {
  return o == TT_LTR ? "left-to-right" : o == TT_RTL ? "right-to-left" : "form-W";
}

/* core.k as the weight file holds it: dense (r[k], m[k], n[k], r[k+1]); conv core.0 is the
 * spatial core (1, kh, kw, r[0]), core.k (r[k-1], c[k-1], s[k-1], r[k]) after it */
int tt_params(const Layer *l, const TTPlan *t, Param *out) {
  static const char *const names[] = {"core.0", "core.1", "core.2", "core.3", "core.4",
                                      "core.5", "core.6", "core.7", "core.8"};
  int n = 0;
  bool swap = t->order == TT_RTL;
  if (l->op == OP_conv) {
    out[n++] = (Param){names[0], 4, {1, l->u.conv.kh, l->u.conv.kw, t->r[0]}, true, .core = 1};
    for (int k = 0; k < t->d; k++)
      out[n++] = (Param){names[k + 1], 4, {t->r[k], t->m[k], t->n[k], k + 1 < t->d ? t->r[k + 1] : 1}, true,
                         .core = k + 2};
    if (l->u.conv.bias) out[n++] = (Param){"bias", 1, {l->u.conv.filters}, true};
    return n;
  }
  for (int k = 0; k < t->d; k++)
    out[n++] = (Param){names[k], 4, {t->r[k], t->m[k], t->n[k], t->r[k + 1]}, true, .rank_swap = swap,
                       .core = k + 1};
  if (l->u.dense.bias) out[n++] = (Param){"bias", 1, {l->u.dense.units}, true};
  return n;
}
