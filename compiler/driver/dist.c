/* dist.c: data-parallel training over MPI (`mpirun -np K teslac train ...`). Every rank
 * compiles the model for its share of the global batch (B / K rows), takes its rows of every
 * global batch from the same permutation, and runs the same generated train step. The step
 * hands each layer's gradient range to tesla_dist_bucket as soon as that layer's backward is
 * done, and calls tesla_dist_wait before the optimizer; the buckets are summed over the ranks
 * (MPI_Allreduce) in between (see "Two ways to reduce" below). The loss gradient is
 * taken over the global batch (emit.c), so the sum is the global mean gradient and every rank
 * applies the same update to the same weights. Synchronized batchnorm statistics go through
 * tesla_dist_sum (op_batchnorm.c).
 *
 * Rank 0 alone prints, evaluates and writes checkpoints and logs; it reads --init / --resume
 * and broadcasts the blocks, so the other ranks need only the data. Any error after MPI is up
 * ends the whole job (MPI_Abort): a rank never waits in a collective for one that has gone.
 * A rank that dies makes Open MPI's mpirun stop every rank (its default).
 *
 * Built only with MPI found (meson option `mpi`, TESLA_MPI); without it, a teslac started by
 * mpirun with more than one rank says so and exits. */
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tesla_rt.h"

static int rank, size = 1;
static double comm_s;   /* seconds spent waiting on gradient and statistics reductions */

/* the rank count mpirun (Open MPI, or a PMI launcher) gave this process; 1 when not launched */
static int launched_size(void) {
  const char *v = getenv("OMPI_COMM_WORLD_SIZE");
  if (!v) v = getenv("PMI_SIZE");
  return v ? atoi(v) : 1;
}

int dist_local_size(void) {
  const char *v = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  return v && atoi(v) > 0 ? atoi(v) : 1;
}

int dist_rank(void) { return rank; }
int dist_size(void) { return size; }
double dist_comm_seconds(void) { return comm_s; }

#ifdef TESLA_MPI
#include <mpi.h>

static bool blocking = true;   /* one allreduce over the buckets' union; see below */

#define MAX_BUCKETS 1024
static MPI_Request reqs[MAX_BUCKETS];
static int nreqs;

int dist_init(int *argc, char ***argv) {
  if (launched_size() <= 1) return 0;
  int provided;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    fprintf(stderr, "teslac: MPI did not start\n");
    return -1;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  blocking = getenv("TESLA_DIST_OVERLAP") == NULL;
  return 0;
}

void dist_finalize(void) {
  if (size > 1) MPI_Finalize();
}

void dist_abort(int code) {
  fflush(stdout), fflush(stderr);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

/* Two ways to reduce, both summing the same ranges in the same order on every rank. By
 * default the buckets' union (the gradient block's trained part, contiguous) goes to one
 * blocking MPI_Allreduce before the optimizer: Open MPI's tuned allreduce measured faster than
 * its non-blocking one here (mlp on 2 ranks: 17.6% of the step against 28.9%), and with one
 * core per rank nothing runs beside the backward to overlap it with. TESLA_DIST_OVERLAP=1
 * starts each layer's bucket as an MPI_Iallreduce when its backward ends. */
static float *blk_base;
static int64_t blk_lo = -1, blk_hi = -1;

/* called by generated code after a layer's backward: its gradients are final */
void tesla_dist_bucket(float *grads, int64_t off, int64_t n) {
  if (blocking) {
    blk_base = grads;
    if (blk_lo < 0 || off < blk_lo) blk_lo = off;
    if (off + n > blk_hi) blk_hi = off + n;
    return;
  }
  double t0 = ts_now();
  if (nreqs == MAX_BUCKETS) tesla_dist_wait();
  while (n > 0) {   /* counts are int */
    int c = n > (1 << 30) ? 1 << 30 : (int)n;
    MPI_Iallreduce(MPI_IN_PLACE, grads + off, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &reqs[nreqs++]);
    off += c, n -= c;
  }
  int done;   /* progress for the buckets already under way */
  MPI_Testall(nreqs, reqs, &done, MPI_STATUSES_IGNORE);
  comm_s += ts_now() - t0;
}

/* called by generated code before the optimizer */
void tesla_dist_wait(void) {
  double t0 = ts_now();
  if (blocking && blk_lo >= 0) {
    MPI_Allreduce(MPI_IN_PLACE, blk_base + blk_lo, (int)(blk_hi - blk_lo), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    blk_lo = blk_hi = -1;
  }
  MPI_Waitall(nreqs, reqs, MPI_STATUSES_IGNORE);
  nreqs = 0;
  comm_s += ts_now() - t0;
}

/* called by generated code: a synchronized batchnorm's per-channel sums */
void tesla_dist_sum(float *v, int64_t n) {
  double t0 = ts_now();
  MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  comm_s += ts_now() - t0;
}

void dist_sum_f64(double *v, int n) {
  if (size > 1) MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

void dist_bcast(void *p, size_t bytes) {
  char *c = p;
  while (size > 1 && bytes > 0) {
    int k = bytes > (1u << 30) ? 1 << 30 : (int)bytes;
    MPI_Bcast(c, k, MPI_BYTE, 0, MPI_COMM_WORLD);
    c += k, bytes -= (size_t)k;
  }
}

bool dist_same(uint64_t h) {
  if (size <= 1) return true;
  uint64_t lo = h, hi = h;
  MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  return lo == hi;
}

const char *dist_library(void) { return "Open MPI"; }

#else /* no MPI in this build */

int dist_init(int *argc, char ***argv) {
  (void)argc, (void)argv;
  if (launched_size() <= 1) return 0;
  fprintf(stderr, "teslac: started by mpirun with %d ranks, but this teslac was built without MPI; install "
                  "libopenmpi-dev and rebuild (meson setup --reconfigure -Dmpi=enabled), or run one process\n",
          launched_size());
  return -1;
}

void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }
void tesla_dist_bucket(float *grads, int64_t off, int64_t n) { (void)grads, (void)off, (void)n; }
void tesla_dist_wait(void) {}
void tesla_dist_sum(float *v, int64_t n) { (void)v, (void)n; }
void dist_sum_f64(double *v, int n) { (void)v, (void)n; }
void dist_bcast(void *p, size_t bytes) { (void)p, (void)bytes; }
bool dist_same(uint64_t h) { (void)h; return true; }
const char *dist_library(void) { return NULL; }

#endif
