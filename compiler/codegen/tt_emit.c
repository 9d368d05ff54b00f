/* tt_emit.c: code generation for tensor-train layers, called by op_dense.c and op_conv.c when
 * the plan stored their weight as a TT (tt.c chose the modes, ranks and order). The weight is
 * never formed on the chain paths; every dim, rank and offset is a constant.
 *
 * The chain (dense, TT_LTR and TT_RTL). In the chain's mode order (RTL = the file's modes
 * reversed, its cores kept rank-swapped by the plan, so both orders are one code path), the
 * state before step k is
 *     S_k (Q_k, r_k m_k, N_k)   Q_k = n_0..n_{k-1},  N_k = m_{k+1}..m_{d-1} B   (batch last)
 * and step k is one GEMM per q in Q_k with the core as a (r_k m_k, n_k r_{k+1}) matrix A:
 *     S_{k+1}[q] (n_k r_{k+1}, N_k) = A^T @ S_k[q]         (tk_gemm_tn)
 * which is already S_{k+1}'s layout (Q_{k+1}, r_{k+1} m_{k+1}, N_{k+1}): no transposes between
 * steps. S_0 is x^T (its modes permuted for RTL, zero rows where the input is padded); S_d is
 * y^T, written out with the bias and any fused activation. The batch is the GEMMs' vector
 * dim, so every step vectorizes however small the trailing modes are. Backward, per step:
 *     dA += sum_q S_k[q] @ dS_{k+1}[q]^T     (tk_gemm_nt)      the forward keeps every S_k
 *     dS_k[q] = A @ dS_{k+1}[q]              (tk_gemm_nn)      in two scratch buffers in turn
 *
 * Forming (TT_FORM, dense and conv): F_k (P_k q_k, r_{k+1}) = F_{k-1} (P_k, r_k) @ core_k
 * (r_k, q_k r_{k+1}) with q_k = m_k n_k (conv: kh kw, then c_k s_k), the partial products kept;
 * the last one, in interleaved index order (i_0 j_0)(i_1 j_1).., is gathered into the layer's
 * own weight layout, and the dense or conv emitters run on it. Backward: dF = the weight's
 * gradient scattered back, then dcore_k += F_{k-1}^T dF_k and dF_{k-1} = dF_k core_k^T. */
#include "cg.h"

#include <string.h>

/* ---- the chain in its own order -------------------------------------------------------- */

typedef struct Chain {
  int d;
  int64_t m[TT_MAXD], n[TT_MAXD], r[TT_MAXD + 1];
  int64_t core[TT_MAXD], dcore[TT_MAXD];
  int64_t B;
} Chain;

static Chain chain_of(const EmitLayer *e) {
  const TTPlan *t = &e->pl->tt;
  Chain c = {.d = t->d, .B = e->B};
  if (e->l->op == OP_conv) {   /* the direct path: channel cores after the spatial one, whose
                                  r[0] outputs per channel lead S_0; trailing (B, H' W') */
    for (int k = 0; k < t->d; k++)
      c.m[k] = t->m[k], c.n[k] = t->n[k], c.core[k] = e->core[k + 1], c.dcore[k] = e->dcore[k + 1];
    for (int k = 0; k < t->d; k++) c.r[k] = t->r[k];
    c.r[t->d] = 1;
    c.B = e->B * shape_elems(&e->l->out) / e->l->out.d[0];
    return c;
  }
  bool rev = t->order == TT_RTL;
  for (int k = 0; k < t->d; k++) {
    int s = rev ? t->d - 1 - k : k;
    c.m[k] = t->m[s], c.n[k] = t->n[s], c.core[k] = e->core[s], c.dcore[k] = e->dcore[s];
  }
  for (int k = 0; k <= t->d; k++) c.r[k] = rev ? t->r[t->d - k] : t->r[k];
  c.r[0] = c.r[t->d] = 1;
  return c;
}

static int64_t chain_Q(const Chain *c, int k) {
  int64_t q = 1;
  for (int j = 0; j < k; j++) q *= c->n[j];
  return q;
}

static int64_t chain_N(const Chain *c, int k) {
  int64_t n = c->B;
  for (int j = k + 1; j < c->d; j++) n *= c->m[j];
  return n;
}

/* The chain position of file index i (radices `mode` in file order, the first the most
 * significant): i itself left to right; its digits reversed right to left. */
static LLVMValueRef chain_pos(Cg *g, LLVMValueRef i, const int64_t *mode, int d, bool rev) {
  if (!rev) return i;
  LLVMValueRef pos = cg_i64(g, 0), rest = i;
  for (int k = d - 1; k >= 0; k--) {
    LLVMValueRef digit = LLVMBuildURem(g->b, rest, cg_i64(g, mode[k]), "");
    rest = LLVMBuildUDiv(g->b, rest, cg_i64(g, mode[k]), "");
    /* reversed, the file's last digit is the most significant: file digit k has the chain
     * stride of the file modes before it */
    int64_t s = 1;
    for (int j = 0; j < k; j++) s *= mode[j];
    pos = cg_add(g, pos, cg_mul(g, digit, cg_i64(g, s)));
  }
  return pos;
}

static void zero(Cg *g, int64_t at, int64_t n) {
  LLVMBuildMemSet(g->b, cg_at(g, TS_A, at, NULL), LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0),
                  cg_i64(g, 4 * n), 4);
}

/* ---- between the layer's layout (B, dim) and the chain's (dim in chain order, B) --------- */

typedef enum PermKind { PERM_IN, PERM_OUT, PERM_DY, PERM_DX } PermKind;
typedef struct PermArg { const EmitLayer *e; PermKind kind; int64_t n, w; } PermArg;

static int64_t dstate(const TTPlan *tp, int k);

/* rows [lo, hi) of the layer's dim (i or j), every b: one shuffle of a (B, n) block */
static void perm_tile(Cg *g, LLVMValueRef t, void *arg) {
  const PermArg *a = arg;
  const EmitLayer *e = a->e;
  const TTPlan *tp = &e->pl->tt;
  bool rev = tp->order == TT_RTL;
  int64_t B = e->B, M = tp->M, N = tp->N;
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, a->w, a->n, &lo, &hi);
  CgLoop Li, Lb;
  LLVMValueRef i = cg_for(g, &Li, "tt_perm", lo, hi);
  bool in = a->kind == PERM_IN || a->kind == PERM_DX;
  LLVMValueRef pos = chain_pos(g, i, in ? tp->m : tp->n, tp->d, rev);
  LLVMValueRef bias = a->kind == PERM_OUT && e->w[1] >= 0 ? cg_load(g, cg_at(g, TS_P, e->w[1], i)) : NULL;
  LLVMValueRef sum = a->kind == PERM_DY ? cg_var(g, "tt_db", cg_f32(g, 0)) : NULL;
  LLVMValueRef b = cg_for(g, &Lb, "tt_perm_b", cg_i64(g, 0), cg_i64(g, B));
  LLVMValueRef chain = cg_add(g, cg_mul(g, pos, cg_i64(g, B)), b);
  switch (a->kind) {
  case PERM_IN:   /* S_0[pos, b] = x[b, i] */
    cg_store(g, cg_load(g, cg_at(g, e->in_block, e->in, cg_mad(g, b, M, i))),
             cg_at(g, TS_A, tp->aux + tp->state[0], chain));
    break;
  case PERM_OUT: {   /* y[b, j] = act(S_d[pos, b] + bias[j]) */
    LLVMValueRef y = cg_load(g, cg_at(g, TS_A, tp->aux + tp->state[tp->d], chain));
    if (bias) y = cg_fadd(g, y, bias);
    if (e->act) y = cg_act(g, y, e->act_slope);
    cg_store(g, y, cg_at(g, TS_A, e->out, cg_mad(g, b, N, i)));
    break;
  }
  case PERM_DY: {   /* dS_d[pos, b] = dy[b, j]; db[j] += sum_b dy[b, j] */
    LLVMValueRef dy = cg_load(g, cg_at(g, TS_A, e->dout, cg_mad(g, b, N, i)));
    cg_store(g, dy, cg_at(g, TS_A, dstate(tp, tp->d), chain));
    cg_store(g, cg_fadd(g, cg_load(g, sum), dy), sum);
    break;
  }
  case PERM_DX:   /* dx[b, i] = dS_0[pos, b] */
    cg_store(g, cg_load(g, cg_at(g, TS_A, dstate(tp, 0), chain)), cg_at(g, TS_A, e->din, cg_mad(g, b, M, i)));
    break;
  }
  cg_for_end(g, &Lb);
  if (sum && e->dw[1] >= 0) {
    LLVMValueRef p = cg_at(g, TS_G, e->dw[1], i);
    cg_store(g, cg_fadd(g, cg_load(g, p), cg_load(g, sum)), p);
  }
  cg_for_end(g, &Li);
}

/* memory-bound: in 8 tiles over the pool when the block is big, else in this thread */
static void perm(Cg *g, const EmitLayer *e, PermKind kind, int64_t n) {
  static const char *const what[] = {"tt_in", "tt_out", "tt_dy", "tt_dx"};
  PermArg a = {e, kind, n, cg_ceil_div(n, 8)};
  char name[256];
  cg_tile_name(name, sizeof name, e, what[kind]);
  if (n * e->B < 32768) cg_serial(g, name, cg_ceil_div(n, a.w), perm_tile, &a);
  else cg_parallel(g, name, cg_ceil_div(n, a.w), perm_tile, &a);
}

/* ---- forward ---------------------------------------------------------------------------- */

/* A step's tiles: chunks of qt prefixes when there are many (Q >= 8), else each prefix's
 * columns N in nct tiles of w (a multiple of 16, the last one shorter), so that every step
 * has work for every thread and a tile function of its own (shared by the entry points). */
typedef struct StepArg { const EmitLayer *e; Chain c; int k; int64_t qt, nct, w; } StepArg;

static StepArg step_arg(const EmitLayer *e, Chain c, int k) {
  StepArg a = {e, c, k, 0, 1, 0};
  int64_t Q = chain_Q(&c, k), N = chain_N(&c, k);
  a.w = N;
  if (Q >= 8) a.qt = cg_ceil_div(Q, 8);
  else {
    a.qt = 1;
    int64_t want = cg_ceil_div(8, Q);
    a.w = (cg_ceil_div(N, want) + 15) / 16 * 16;
    if (a.w > N) a.w = N;
    a.nct = cg_ceil_div(N, a.w);
  }
  return a;
}

static int64_t step_tiles(const StepArg *a) { return cg_ceil_div(chain_Q(&a->c, a->k), a->qt) * a->nct; }

/* Waking the pool costs tens of microseconds; a step of fewer multiply-adds than this runs in
 * the calling thread (batch 1: every step). */
#define TT_PAR_MACS 262144

static int64_t step_macs(const Chain *c, int k) {
  return chain_Q(c, k) * c->r[k] * c->m[k] * c->n[k] * c->r[k + 1] * chain_N(c, k);
}

static void tiles(Cg *g, const char *name, int64_t ntiles, int64_t macs, CgTileBody body, void *arg) {
  if (macs < TT_PAR_MACS) cg_serial(g, name, ntiles, body, arg);
  else cg_parallel(g, name, ntiles, body, arg);
}

typedef void (*StepGemm)(Cg *g, const StepArg *a, LLVMValueRef q, LLVMValueRef n0, int64_t w);

/* tile t: its prefixes, or its prefix and column range (constant widths: the tail apart) */
static void step_tile(Cg *g, const StepArg *a, LLVMValueRef t, StepGemm f) {
  int64_t Q = chain_Q(&a->c, a->k), N = chain_N(&a->c, a->k);
  if (a->nct == 1) {
    LLVMValueRef lo, hi;
    cg_tile_range(g, t, a->qt, Q, &lo, &hi);
    CgLoop L;
    LLVMValueRef q = cg_for(g, &L, "tt_q", lo, hi);
    f(g, a, q, cg_i64(g, 0), N);
    cg_for_end(g, &L);
    return;
  }
  LLVMValueRef q = LLVMBuildUDiv(g->b, t, cg_i64(g, a->nct), "");
  LLVMValueRef c = LLVMBuildURem(g->b, t, cg_i64(g, a->nct), "");
  int64_t full = N / a->w, tail = N % a->w;
  if (!tail) {
    f(g, a, q, cg_mul(g, c, cg_i64(g, a->w)), a->w);
    return;
  }
  CgIf c1, c2;
  cg_if(g, &c1, LLVMBuildICmp(g->b, LLVMIntSLT, c, cg_i64(g, full), ""));
  f(g, a, q, cg_mul(g, c, cg_i64(g, a->w)), a->w);
  cg_if_end(g, &c1);
  cg_if(g, &c2, LLVMBuildICmp(g->b, LLVMIntEQ, c, cg_i64(g, full), ""));
  f(g, a, q, cg_i64(g, full * a->w), tail);
  cg_if_end(g, &c2);
}

/* S_{k+1}[q][:, n0 : n0 + w] = A_k^T S_k[q][:, n0 : n0 + w] */
static void fwd_gemm(Cg *g, const StepArg *a, LLVMValueRef q, LLVMValueRef n0, int64_t w) {
  const Chain *c = &a->c;
  const TTPlan *tp = &a->e->pl->tt;
  int k = a->k;
  int64_t K = c->r[k] * c->m[k], M = c->n[k] * c->r[k + 1], N = chain_N(c, k);
  LLVMValueRef args[] = {cg_i64(g, M), cg_i64(g, N), cg_i64(g, K),
                         cg_at(g, TS_P, c->core[k], NULL), cg_i64(g, M),
                         cg_at(g, TS_A, tp->aux + tp->state[k], cg_add(g, cg_mul(g, q, cg_i64(g, K * N)), n0)), cg_i64(g, N),
                         cg_at(g, TS_A, tp->aux + tp->state[k + 1], cg_add(g, cg_mul(g, q, cg_i64(g, M * N)), n0)), cg_i64(g, N),
                         cg_i32(g, 0), cg_i64(g, 0), cg_i64(g, M), cg_i64(g, 0), cg_i64(g, w)};
  cg_kernel(g, "tk_gemm_tn", args, 14);
}

static void fwd_step_tile(Cg *g, LLVMValueRef t, void *arg) { step_tile(g, arg, t, fwd_gemm); }

void tt_emit_chain_fwd(Cg *g, const EmitLayer *e) {
  const TTPlan *tp = &e->pl->tt;
  int64_t B = e->B, M = tp->M, N = tp->N;
  /* S_0 (Mp, B) = x^T in chain order; padded rows zero */
  if (tp->Mp != M) zero(g, tp->aux + tp->state[0], tp->Mp * B);
  perm(g, e, PERM_IN, M);
  tt_emit_chain_steps_fwd(g, e);
  perm(g, e, PERM_OUT, N);   /* y[b, j] = act(S_d[pos(j), b] + bias[j]) */
}

void tt_emit_chain_steps_fwd(Cg *g, const EmitLayer *e) {
  Chain c = chain_of(e);
  for (int k = 0; k < c.d; k++) {
    StepArg a = step_arg(e, c, k);
    char name[256], what[32];
    snprintf(what, sizeof what, "tt_fwd%d", k);
    cg_tile_name(name, sizeof name, e, what);
    tiles(g, name, step_tiles(&a), step_macs(&c, k), fwd_step_tile, &a);
  }
}

/* ---- backward --------------------------------------------------------------------------- */

static int64_t dstate(const TTPlan *tp, int k) { return tp->aux + tp->scratch[k & 1]; }

/* dA_k[rows] += sum_q S_k[q] (K, N) @ dS_{k+1}[q] (M, N)^T, rows of dA split over tiles */
typedef struct DcArg { const EmitLayer *e; Chain c; int k; int64_t rt; } DcArg;

/* rows [lo, lo + w) of dA_k, summed over every q */
static void dcore_rows(Cg *g, const DcArg *a, LLVMValueRef lo, int64_t w) {
  const Chain *c = &a->c;
  const TTPlan *tp = &a->e->pl->tt;
  int k = a->k;
  int64_t Q = chain_Q(c, k), K = c->r[k] * c->m[k], M = c->n[k] * c->r[k + 1], N = chain_N(c, k);
  CgLoop L;
  LLVMValueRef q = cg_for(g, &L, "tt_dq", cg_i64(g, 0), cg_i64(g, Q));
  LLVMValueRef args[] = {cg_i64(g, K), cg_i64(g, M), cg_i64(g, N),
                         cg_at(g, TS_A, tp->aux + tp->state[k], cg_add(g, cg_mul(g, q, cg_i64(g, K * N)), cg_mul(g, lo, cg_i64(g, N)))),
                         cg_i64(g, N),
                         cg_at(g, TS_A, dstate(tp, k + 1), cg_mul(g, q, cg_i64(g, M * N))), cg_i64(g, N),
                         cg_at(g, TS_G, c->dcore[k], cg_mul(g, lo, cg_i64(g, M))), cg_i64(g, M),
                         cg_i32(g, 1), cg_i64(g, 0), cg_i64(g, w), cg_i64(g, 0), cg_i64(g, M)};
  cg_kernel(g, "tk_gemm_nt", args, 14);
  cg_for_end(g, &L);
}

static void dcore_tile(Cg *g, LLVMValueRef t, void *arg) {
  const DcArg *a = arg;
  int64_t K = a->c.r[a->k] * a->c.m[a->k], rt = a->rt, full = K / rt, tail = K % rt;
  if (full == 0 || !tail) {
    dcore_rows(g, a, full ? cg_mul(g, t, cg_i64(g, rt)) : cg_i64(g, 0), full ? rt : K);
    return;
  }
  CgIf c1, c2;   /* constant widths: the full tiles, then the tail */
  cg_if(g, &c1, LLVMBuildICmp(g->b, LLVMIntSLT, t, cg_i64(g, full), ""));
  dcore_rows(g, a, cg_mul(g, t, cg_i64(g, rt)), rt);
  cg_if_end(g, &c1);
  cg_if(g, &c2, LLVMBuildICmp(g->b, LLVMIntEQ, t, cg_i64(g, full), ""));
  dcore_rows(g, a, cg_i64(g, full * rt), tail);
  cg_if_end(g, &c2);
}

/* dS_k[q][:, n0 : n0 + w] = A_k (K, M) @ dS_{k+1}[q][:, n0 : n0 + w] (M, N) */
static void dstate_gemm(Cg *g, const StepArg *a, LLVMValueRef q, LLVMValueRef n0, int64_t w) {
  const Chain *c = &a->c;
  const TTPlan *tp = &a->e->pl->tt;
  int k = a->k;
  int64_t K = c->r[k] * c->m[k], M = c->n[k] * c->r[k + 1], N = chain_N(c, k);
  LLVMValueRef args[] = {cg_i64(g, K), cg_i64(g, N), cg_i64(g, M),
                         cg_at(g, TS_P, c->core[k], NULL), cg_i64(g, M),
                         cg_at(g, TS_A, dstate(tp, k + 1), cg_add(g, cg_mul(g, q, cg_i64(g, M * N)), n0)), cg_i64(g, N),
                         cg_at(g, TS_A, dstate(tp, k), cg_add(g, cg_mul(g, q, cg_i64(g, K * N)), n0)), cg_i64(g, N),
                         cg_i32(g, 0), cg_i64(g, 0), cg_i64(g, K), cg_i64(g, 0), cg_i64(g, w)};
  cg_kernel(g, "tk_gemm_nn", args, 14);
}

static void dstate_tile(Cg *g, LLVMValueRef t, void *arg) { step_tile(g, arg, t, dstate_gemm); }

void tt_emit_chain_bwd(Cg *g, const EmitLayer *e) {
  const TTPlan *tp = &e->pl->tt;
  int64_t B = e->B, M = tp->M, N = tp->N;
  /* dS_d[pos(j), b] = dy[b, j] (padded rows zero), db[j] += sum_b dy[b, j] */
  if (tp->Np != N) zero(g, dstate(tp, tp->d), tp->Np * B);
  perm(g, e, PERM_DY, N);
  tt_emit_chain_steps_bwd(g, e, e->din >= 0);
  if (e->din < 0) return;
  perm(g, e, PERM_DX, M);   /* dx[b, i] = dS_0[pos(i), b] */
}

int64_t tt_dstate(const EmitLayer *e, int k) { return dstate(&e->pl->tt, k); }

void tt_emit_chain_steps_bwd(Cg *g, const EmitLayer *e, bool need_ds0) {
  Chain c = chain_of(e);
  for (int k = c.d - 1; k >= 0; k--) {
    int64_t K = c.r[k] * c.m[k];
    DcArg da = {e, c, k, K >= 64 ? cg_ceil_div(K, 4) : K >= 8 ? cg_ceil_div(K, 2) : K};
    char name[256], what[32];
    snprintf(what, sizeof what, "tt_dcore%d", k);
    cg_tile_name(name, sizeof name, e, what);
    tiles(g, name, cg_ceil_div(K, da.rt), step_macs(&c, k), dcore_tile, &da);
    if (k == 0 && !need_ds0) break;
    StepArg a = step_arg(e, c, k);
    snprintf(what, sizeof what, "tt_dstate%d", k);
    cg_tile_name(name, sizeof name, e, what);
    tiles(g, name, step_tiles(&a), step_macs(&c, k), dstate_tile, &a);
  }
}

/* ---- forming the weight ----------------------------------------------------------------- */

typedef struct Form {
  int nc;                                   /* cores in the chain (conv: the spatial one first) */
  int64_t q[TT_MAXD + 1], r[TT_MAXD + 2];   /* mode sizes and ranks r[0] = r[nc] = 1 */
  int64_t core[TT_MAXD + 1], dcore[TT_MAXD + 1];
} Form;

static Form form_of(const EmitLayer *e) {
  const TTPlan *t = &e->pl->tt;
  Form f = {0};
  bool conv = e->l->op == OP_conv;
  f.nc = conv ? t->d + 1 : t->d;
  f.r[0] = 1;
  for (int k = 0; k < f.nc; k++) {
    f.core[k] = e->core[k], f.dcore[k] = e->dcore[k];
    if (conv) {
      f.q[k] = k ? t->m[k - 1] * t->n[k - 1] : e->l->u.conv.kh * e->l->u.conv.kw;
      f.r[k + 1] = k < t->d ? t->r[k] : 1;
    } else {
      f.q[k] = t->m[k] * t->n[k];
      f.r[k + 1] = t->r[k + 1];
    }
  }
  f.r[f.nc] = 1;
  return f;
}

/* F_k's offset in the activation block; F_0 is core 0 itself */
static LLVMValueRef form_F(Cg *g, const EmitLayer *e, const Form *f, int k, LLVMValueRef idx) {
  if (k == 0) return cg_at(g, TS_P, f->core[0], idx);
  return cg_at(g, TS_A, e->pl->tt.aux + e->pl->tt.state[k], idx);
}

/* The interleaved index of weight element `w` (the layer's own layout): dense Wt (IN, OUT)
 * [i, j] -> (i_0 j_0)(i_1 j_1)..; conv W (K, C, kh, kw) [s, c, x, y] -> (x y)(c_0 s_0).. */
static LLVMValueRef form_src(Cg *g, const EmitLayer *e, const Form *f, LLVMValueRef o, LLVMValueRef i,
                             LLVMValueRef sp) {
  const TTPlan *t = &e->pl->tt;
  LLVMValueRef src = cg_i64(g, 0), ri = i, ro = o;
  int64_t stride = 1;
  for (int k = t->d - 1; k >= 0; k--) {   /* the last channel/in-out core is least significant */
    LLVMValueRef di = LLVMBuildURem(g->b, ri, cg_i64(g, t->m[k]), "");
    LLVMValueRef dj = LLVMBuildURem(g->b, ro, cg_i64(g, t->n[k]), "");
    ri = LLVMBuildUDiv(g->b, ri, cg_i64(g, t->m[k]), "");
    ro = LLVMBuildUDiv(g->b, ro, cg_i64(g, t->n[k]), "");
    src = cg_add(g, src, cg_mul(g, cg_mad(g, di, t->n[k], dj), cg_i64(g, stride)));
    stride *= t->m[k] * t->n[k];
  }
  if (sp) src = cg_add(g, src, cg_mul(g, sp, cg_i64(g, stride)));
  return src;
}

/* Between the last product F (interleaved order) and the layer's weight layout: forward,
 * W = gather(F); backward, dF = scatter(dW) with dW zeroed behind. Tiles over the weight's
 * first dim (dense: its inputs; conv: its filters), over the pool when it is big. */
typedef struct FormMove { const EmitLayer *e; bool back; int64_t w; } FormMove;

static void form_move_tile(Cg *g, LLVMValueRef t, void *arg) {
  const FormMove *a = arg;
  const EmitLayer *e = a->e;
  const TTPlan *tp = &e->pl->tt;
  Form f = form_of(e);
  bool conv = e->l->op == OP_conv;
  int64_t S = conv ? f.q[0] : 1, outer = conv ? tp->N : tp->M, inner = conv ? tp->M : tp->N;
  int64_t dF = tp->aux + tp->scratch[(f.nc - 1) & 1];
  LLVMValueRef lo, hi;
  cg_tile_range(g, t, a->w, outer, &lo, &hi);
  CgLoop L1, L2, L3;
  LLVMValueRef x = cg_for(g, &L1, "form_a", lo, hi);
  LLVMValueRef y = cg_for(g, &L2, "form_b", cg_i64(g, 0), cg_i64(g, inner));
  LLVMValueRef sp = conv ? cg_for(g, &L3, "form_xy", cg_i64(g, 0), cg_i64(g, S)) : NULL;
  /* dense: (i, o) = (x, y), W (IN, OUT); conv: (o, i) = (x, y), W (K, C, S) */
  LLVMValueRef src = conv ? form_src(g, e, &f, x, y, sp) : form_src(g, e, &f, y, x, NULL);
  LLVMValueRef w = conv ? cg_mad(g, cg_mad(g, x, inner, y), S, sp) : cg_mad(g, x, inner, y);
  if (!a->back)
    cg_store(g, cg_load(g, form_F(g, e, &f, f.nc - 1, src)), cg_at(g, TS_P, e->w[0], w));
  else {
    LLVMValueRef p = cg_at(g, TS_G, e->dw[0], w);
    cg_store(g, cg_load(g, p), cg_at(g, TS_A, dF, src));
    cg_store(g, cg_f32(g, 0), p);
  }
  if (conv) cg_for_end(g, &L3);
  cg_for_end(g, &L2);
  cg_for_end(g, &L1);
}

static void form_move(Cg *g, const EmitLayer *e, bool back) {
  const TTPlan *tp = &e->pl->tt;
  bool conv = e->l->op == OP_conv;
  int64_t outer = conv ? tp->N : tp->M, total = tp->M * tp->N * (conv ? e->l->u.conv.kh * e->l->u.conv.kw : 1);
  FormMove a = {e, back, cg_ceil_div(outer, 8)};
  char name[256];
  cg_tile_name(name, sizeof name, e, back ? "tt_unform" : "tt_form");
  if (total < 65536) cg_serial(g, name, cg_ceil_div(outer, a.w), form_move_tile, &a);
  else cg_parallel(g, name, cg_ceil_div(outer, a.w), form_move_tile, &a);
}

void tt_emit_form(Cg *g, const EmitLayer *e) {
  Form f = form_of(e);
  int64_t P = f.q[0];
  for (int k = 1; k < f.nc; k++) {   /* F_k (P, q_k r_{k+1}) = F_{k-1} (P, r_k) @ core_k */
    int64_t N = f.q[k] * f.r[k + 1];
    LLVMValueRef args[] = {cg_i64(g, P), cg_i64(g, N), cg_i64(g, f.r[k]), form_F(g, e, &f, k - 1, NULL),
                           cg_i64(g, f.r[k]), cg_at(g, TS_P, f.core[k], NULL), cg_i64(g, N),
                           form_F(g, e, &f, k, NULL), cg_i64(g, N), cg_i32(g, 0),
                           cg_i64(g, 0), cg_i64(g, P), cg_i64(g, 0), cg_i64(g, N)};
    cg_kernel(g, "tk_gemm_nn", args, 14);
    P *= f.q[k];
  }
  form_move(g, e, false);   /* gather into the layer's layout */
}

void tt_emit_form_bwd(Cg *g, const EmitLayer *e) {
  const TTPlan *t = &e->pl->tt;
  Form f = form_of(e);
  int64_t total = 1;
  for (int k = 0; k < f.nc; k++) total *= f.q[k];
  int64_t dF = t->aux + t->scratch[(f.nc - 1) & 1];
  bool padded = t->Mp != t->M || t->Np != t->N;
  if (padded)
    LLVMBuildMemSet(g->b, cg_at(g, TS_A, dF, NULL), LLVMConstInt(LLVMInt8TypeInContext(g->ctx), 0, 0),
                    cg_i64(g, 4 * total), 4);
  form_move(g, e, true);   /* the weight's gradient into interleaved order, zeroed behind */
  /* back through the products: dF_k lives in scratch[k & 1] */
  int64_t P = total / f.q[f.nc - 1];
  for (int k = f.nc - 1; k >= 1; k--) {
    int64_t N = f.q[k] * f.r[k + 1];
    int64_t dk = t->aux + t->scratch[k & 1], dk1 = t->aux + t->scratch[(k - 1) & 1];
    /* dcore_k (r_k, N) += F_{k-1}^T (r_k, P) @ dF_k (P, N) */
    LLVMValueRef a1[] = {cg_i64(g, f.r[k]), cg_i64(g, N), cg_i64(g, P), form_F(g, e, &f, k - 1, NULL),
                         cg_i64(g, f.r[k]), cg_at(g, TS_A, dk, NULL), cg_i64(g, N),
                         cg_at(g, TS_G, f.dcore[k], NULL), cg_i64(g, N), cg_i32(g, 1),
                         cg_i64(g, 0), cg_i64(g, f.r[k]), cg_i64(g, 0), cg_i64(g, N)};
    cg_kernel(g, "tk_gemm_tn", a1, 14);
    /* dF_{k-1} (P, r_k) = dF_k (P, N) @ core_k^T (N, r_k) */
    LLVMValueRef a2[] = {cg_i64(g, P), cg_i64(g, f.r[k]), cg_i64(g, N), cg_at(g, TS_A, dk, NULL),
                         cg_i64(g, N), cg_at(g, TS_P, f.core[k], NULL), cg_i64(g, N),
                         cg_at(g, TS_A, dk1, NULL), cg_i64(g, f.r[k]), cg_i32(g, 0),
                         cg_i64(g, 0), cg_i64(g, P), cg_i64(g, 0), cg_i64(g, f.r[k])};
    cg_kernel(g, "tk_gemm_nt", a2, 14);
    P /= f.q[k - 1];
  }
  /* dcore_0 += dF_0 */
  CgLoop L;
  int64_t d0 = t->aux + t->scratch[0];
  LLVMValueRef x = cg_for(g, &L, "unform_0", cg_i64(g, 0), cg_i64(g, f.q[0] * f.r[1]));
  LLVMValueRef p = cg_at(g, TS_G, f.dcore[0], x);
  cg_store(g, cg_fadd(g, cg_load(g, p), cg_load(g, cg_at(g, TS_A, d0, x))), p);
  cg_for_end(g, &L);
}
