/* dist.h: data-parallel training over MPI (dist.c). One process (not started by mpirun, or a
 * build without MPI): rank 0 of 1, and every call below does nothing. */
#ifndef TESLAC_DIST_H
#define TESLAC_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MPI_Init when started by mpirun with more than one rank; -1 after a message (launched by
 * mpirun, but built without MPI) */
int    dist_init(int *argc, char ***argv);
void   dist_finalize(void);
void   dist_abort(int code);          /* ends every rank (after an error on this one) */
int    dist_rank(void);
int    dist_size(void);
int    dist_local_size(void);         /* ranks on this machine */
double dist_comm_seconds(void);       /* time spent in gradient / statistics reductions */
void   dist_sum_f64(double *v, int n);           /* in place, over all ranks */
void   dist_bcast(void *p, size_t bytes);        /* from rank 0 */
bool   dist_same(uint64_t h);                    /* every rank holds the same h */
const char *dist_library(void);       /* "Open MPI", or NULL in a build without MPI */

/* called by generated code (emit.c, op_batchnorm.c), resolved by the JIT in this process */
void tesla_dist_bucket(float *grads, int64_t off, int64_t n);
void tesla_dist_wait(void);
void tesla_dist_sum(float *v, int64_t n);

#endif
