/* rt_pool.c: the runtime's thread pool. One pool per process is the target of ts_parallel_for
 * (ts_pool_set_global); generated kernels call ts_parallel_for many times per training step
 * with tiles of roughly 1 to 50 us, so the per-call cost must stay at a few microseconds.
 * Design: persistent workers; a call publishes (fn, ctx, ntiles) and bumps a generation
 * counter; workers spin briefly on that counter and only then sleep on a futex, so calls that
 * follow each other closely never pay for a wake-up syscall.
 *
 * Tiles are claimed, not assigned: thread i (the caller is thread 0) owns the lane of tiles
 * i, i + n, i + 2n, ... and claims them in order with one atomic add each; a thread whose
 * lane is empty steals from the next lanes. So on an idle machine every tile runs where the
 * static mapping puts it (a sample group's data stays with one core from phase to phase, see
 * op_conv.c), and on a busy one a descheduled worker's tiles are run by the others instead of
 * waited for. Results do not depend on which thread ran a tile: a tile function sees only its
 * tile index (no thread index, no thread-local state in generated code or kernels), and
 * reductions over tiles are written per tile and summed in tile order by the generated code.
 * The call is over when every tile is done (`done`, added once per thread) and no worker is
 * still inside it (`active`): a worker enters with active++, then checks that the job it saw
 * is still open (`closed`; seq_cst on both sides, so either the worker sees the close or the
 * caller sees the worker), and the caller closes the job before waiting for active == 0. A
 * worker that wakes up late therefore finds the job closed and never touches its tiles or a
 * later job's. Calls made from inside a tile, or while another thread is using the pool, run
 * serially on the calling thread. So do all calls for SOLO_S after the caller has spent a
 * large share of two windows of calls waiting for tiles in progress (a worker descheduled
 * inside a tile: another process on its core); then the pool is tried again.
 *
 * Measured overhead (Debian 12 VM, 2 cores, gcc -O2, a 2-thread pool, 20000 back-to-back
 * ts_pool_run calls with 2 empty tiles, median of 7 runs), static mapping before the claims:
 * 1.4 to 2 us per call when the workers are spinning, 3 to 3.5 us under nice -20 with a load
 * average of 7. bench/RESULTS.md has the claiming pool's figures and the busy-machine runs. */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#ifndef WORKER_SPIN_S
#define WORKER_SPIN_S 100e-6   /* idle workers spin this long after a call before sleeping */
#endif
#ifndef CALLER_SPIN_S
#define CALLER_SPIN_S 50e-6    /* the caller spins this long for stragglers before sleeping */
#endif
#ifndef STALL_SHARE
#define STALL_SHARE 0.3        /* the caller waiting for tiles in progress this share of the time... */
#endif
#define STALL_WINDOW_S 20e-3   /* ...over a window of calls at least this long... */
#define STALL_WINDOWS 2        /* ...in this many windows in a row... */
#define SOLO_S 1.0             /* ...runs the next calls alone for this long, then tries again */
#define MAX_THREADS 1024

typedef struct Worker {
  TsPool *pool;
  int id;
  pthread_t thread;
} Worker;

typedef struct Lane { _Alignas(64) _Atomic int64_t next; } Lane;   /* the next k of tiles id + k n */

struct TsPool {
  int n;                 // threads, caller included
  int nworkers;          // started workers (n - 1 when creation succeeded)
  Worker *workers;
  Lane *lanes;           // n, one cache line each
  // The job, written by the caller before the generation bump (release), read after it by
  // the workers that entered it (active) while it is open: stable until active is 0 again.
  TsTileFn fn;
  void *ctx;
  int64_t ntiles;
  _Alignas(64) _Atomic uint32_t gen;        // bumped once per call
  _Atomic uint32_t nsleep;                  // workers asleep (or about to be) on gen
  _Atomic int stop;
  _Alignas(64) _Atomic uint32_t done;       // tiles finished in this generation
  _Atomic uint32_t active;                  // workers inside this generation's job
  _Atomic uint32_t closed;                  // the last generation whose job is over
  _Atomic uint32_t caller_sleeping;         // the caller sleeps on done or on active
  _Alignas(64) _Atomic int busy;            // a caller is using the pool
  // The caller's own (under busy): its time in tiles and waiting in the current window, and
  // until when it runs calls alone (see ts_pool_run).
  double win_work, win_wait, solo_until;
  int stalls;            // windows in a row over STALL_SHARE
};

static _Thread_local int tls_in_pool;       // inside a tile (or a worker): run nested serially
static _Atomic(TsPool *) g_pool;

/* ---- waiting -------------------------------------------------------------------------- */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
#ifdef __linux__
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
#else
  (void)addr, (void)val;
  struct timespec ts = {0, 50000};   // no futex: poll every 50 us
  nanosleep(&ts, NULL);
#endif
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
#ifdef __linux__
  syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
#else
  (void)addr, (void)n;
#endif
}

/* Spin until *addr != val or `secs` have passed; true if it changed. The clock is read every
 * 256 spins only (a vDSO call, ~20 ns). */
static bool spin_while_equal(_Atomic uint32_t *addr, uint32_t val, double secs) {
  double until = 0;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(addr, memory_order_acquire) != val) return true;
    cpu_relax();
    if ((i & 255) == 0) {
      double now = ts_now();
      if (until == 0) until = now + secs;
      else if (now > until) return false;
    }
  }
}

/* The caller's wait until *addr == want: spin, then sleep on addr. A worker that changes
 * *addr reads caller_sleeping after its change (both seq_cst) and wakes the caller. */
static void wait_until(TsPool *p, _Atomic uint32_t *addr, uint32_t want) {
  double until = 0;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(addr, memory_order_acquire) == want) return;
    cpu_relax();
    if ((i & 255) == 0) {
      double now = ts_now();
      if (until == 0) until = now + CALLER_SPIN_S;
      else if (now > until) break;
    }
  }
  atomic_store(&p->caller_sleeping, 1);
  uint32_t v;
  while ((v = atomic_load(addr)) != want) futex_wait(addr, v);
  atomic_store(&p->caller_sleeping, 0);
}

static void notify_caller(TsPool *p, _Atomic uint32_t *addr) {
  if (atomic_load(&p->caller_sleeping)) futex_wake(addr, 1);
}

/* ---- claiming tiles ------------------------------------------------------------------- */

static void run_tiles(TsTileFn fn, void *ctx, int64_t ntiles) {   /* serially, in order */
  for (int64_t t = 0; t < ntiles; t++) fn(ctx, t);
}

/* Runs tiles of lane `self` first, then of the other lanes in turn, until none is left
 * unclaimed; returns how many this thread ran. */
static uint32_t claim_and_run(TsPool *p, int self) {
  int n = p->n;
  int64_t ntiles = p->ntiles;
  uint32_t ran = 0;
  for (int j = 0; j < n; j++) {
    int lane = self + j < n ? self + j : self + j - n;
    int64_t count = lane < ntiles ? (ntiles - 1 - lane) / n + 1 : 0;
    _Atomic int64_t *next = &p->lanes[lane].next;
    while (atomic_load_explicit(next, memory_order_relaxed) < count) {
      int64_t k = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
      if (k >= count) break;
      p->fn(p->ctx, lane + k * n);
      ran++;
    }
  }
  return ran;
}

/* ---- workers -------------------------------------------------------------------------- */

static void *worker_main(void *arg) {
  Worker *w = arg;
  TsPool *p = w->pool;
  tls_in_pool = 1;
  uint32_t seen = 0;
  for (;;) {
    if (!spin_while_equal(&p->gen, seen, WORKER_SPIN_S)) {
      // Announce the sleep before the last look: the caller bumps gen, then reads nsleep;
      // we bump nsleep, then read gen (both seq_cst), so one of us sees the other.
      atomic_fetch_add(&p->nsleep, 1);
      while (atomic_load(&p->gen) == seen) futex_wait(&p->gen, seen);
      atomic_fetch_sub(&p->nsleep, 1);
    }
    seen = atomic_load_explicit(&p->gen, memory_order_acquire);
    if (atomic_load(&p->stop)) break;
    // Enter, then check the job is still the open one (see the top of the file).
    atomic_fetch_add(&p->active, 1);
    if (atomic_load(&p->gen) == seen && atomic_load(&p->closed) != seen) {
      uint32_t ran = claim_and_run(p, w->id);
      if (ran && atomic_fetch_add(&p->done, ran) + ran == (uint32_t)p->ntiles) notify_caller(p, &p->done);
    }
    if (atomic_fetch_sub(&p->active, 1) == 1) notify_caller(p, &p->active);
  }
  return NULL;
}

/* ---- the pool ------------------------------------------------------------------------- */

static void pool_stop(TsPool *p) {
  atomic_store(&p->stop, 1);
  atomic_fetch_add(&p->gen, 1);
  futex_wake(&p->gen, INT_MAX);
  for (int i = 0; i < p->nworkers; i++) pthread_join(p->workers[i].thread, NULL);
  p->nworkers = 0;
}

TsPool *ts_pool_create(int nthreads, TsErr *e) {
  if (nthreads <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = c > 0 ? (int)(c < MAX_THREADS ? c : MAX_THREADS) : 1;
  }
  if (nthreads > MAX_THREADS) {
    ts_fail(e, "thread pool: %d threads requested, at most %d supported", nthreads,
            MAX_THREADS);
    return NULL;
  }
  TsPool *p = ts_aligned_alloc(sizeof *p);   // zeroed; 64-aligned for the _Alignas fields
  if (!p) {
    ts_fail(e, "thread pool: out of memory");
    return NULL;
  }
  p->n = nthreads;
  p->lanes = ts_aligned_alloc(sizeof(Lane) * (size_t)nthreads);
  if (nthreads > 1) p->workers = ts_calloc((size_t)nthreads - 1, sizeof *p->workers);
  if (!p->lanes || (nthreads > 1 && !p->workers)) {
    ts_free(p->workers);
    ts_aligned_free(p->lanes);
    ts_aligned_free(p);
    ts_fail(e, "thread pool: out of memory");
    return NULL;
  }
  for (int i = 0; i < nthreads - 1; i++) {
    Worker *w = &p->workers[i];
    w->pool = p;
    w->id = i + 1;
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
      pool_stop(p);
      ts_free(p->workers);
      ts_aligned_free(p->lanes);
      ts_aligned_free(p);
      ts_fail(e, "thread pool: cannot start thread %d of %d: %s", i + 1, nthreads,
              strerror(rc));
      return NULL;
    }
    p->nworkers++;
  }
  return p;
}

int ts_pool_threads(const TsPool *p) { return p ? p->n : 1; }

void ts_pool_run(TsPool *p, TsTileFn fn, void *ctx, int64_t ntiles) {
  if (ntiles <= 0) return;
  if (!p || p->n == 1 || ntiles == 1 || ntiles > (int64_t)UINT32_MAX || tls_in_pool ||
      atomic_exchange_explicit(&p->busy, 1, memory_order_acquire)) {
    int was = tls_in_pool;
    tls_in_pool = 1;
    run_tiles(fn, ctx, ntiles);
    tls_in_pool = was;
    return;
  }
  // A busy machine: a worker descheduled inside a tile holds the call up for the rest of the
  // scheduler's time slice, and short calls then spend most of their time waiting for it.
  // When the caller's waits for tiles in progress reach STALL_SHARE of STALL_WINDOWS windows
  // in a row, it runs the calls of the next SOLO_S alone: the idle workers go to sleep, which
  // frees their cores, and the scheduler moves the caller to a free one if its own is the busy
  // one. Results are the same either way (no tile depends on the thread that runs it).
  double t0 = ts_now();
  if (t0 < p->solo_until) {
    tls_in_pool = 1;
    run_tiles(fn, ctx, ntiles);
    tls_in_pool = 0;
    atomic_store_explicit(&p->busy, 0, memory_order_release);
    return;
  }
  // No worker is inside the previous job (its call waited for active == 0): set up this one.
  p->fn = fn;
  p->ctx = ctx;
  p->ntiles = ntiles;
  for (int i = 0; i < p->n; i++) atomic_store_explicit(&p->lanes[i].next, 0, memory_order_relaxed);
  atomic_store_explicit(&p->done, 0, memory_order_relaxed);
  uint32_t g = atomic_fetch_add(&p->gen, 1) + 1;   // seq_cst: publishes the job, then...
  if (atomic_load(&p->nsleep))                     // ...a worker that went to sleep before it needs a wake-up
    futex_wake(&p->gen, INT_MAX);

  tls_in_pool = 1;
  uint32_t ran = claim_and_run(p, 0);
  tls_in_pool = 0;
  if (ran) atomic_fetch_add(&p->done, ran);

  double t1 = ts_now();
  wait_until(p, &p->done, (uint32_t)ntiles);   // every tile ran (the tiles' writes: acquire)
  double t2 = ts_now();
  p->win_work += t1 - t0, p->win_wait += t2 - t1;
  if (p->win_work + p->win_wait >= STALL_WINDOW_S) {
    p->stalls = p->win_wait > STALL_SHARE * (p->win_work + p->win_wait) ? p->stalls + 1 : 0;
    if (p->stalls >= STALL_WINDOWS) p->solo_until = t2 + SOLO_S, p->stalls = 0;
    p->win_work = p->win_wait = 0;
  }
  atomic_store(&p->closed, g);                   // late workers now back out...
  wait_until(p, &p->active, 0);                  // ...and the ones inside leave
  atomic_store_explicit(&p->busy, 0, memory_order_release);
}

void ts_pool_destroy(TsPool *p) {
  if (!p) return;
  TsPool *expected = p;
  atomic_compare_exchange_strong(&g_pool, &expected, NULL);
  pool_stop(p);
  ts_free(p->workers);
  ts_aligned_free(p->lanes);
  ts_aligned_free(p);
}

void ts_pool_set_global(TsPool *p) { atomic_store(&g_pool, p); }

void ts_parallel_for(TsTileFn fn, void *ctx, int64_t ntiles) {
  ts_pool_run(atomic_load(&g_pool), fn, ctx, ntiles);
}
