/* tesla_rt.h: the TESLA runtime, the small C library that teslac's generated code and the
 * teslac driver link against. It sits after code generation in the pipeline: it loads data
 * (IDX files, gzip or plain, through zlib), batches and shuffles it, runs the generated code's
 * tiles on a thread pool, reads and writes safetensors checkpoints (atomically), gives
 * deterministic random numbers and draws progress. Everything here returns a status; nothing
 * calls exit(). All heap memory goes through one allocation hook (ts_set_allocator) so that
 * tests can count allocations and inject failures.
 *
 * Prefix: ts_ (functions), Ts (types). Errors: a TsErr filled with a one-line message that
 * names the file and what is wrong ("train-images.gz: truncated: expected 47040000 bytes of
 * pixels, got 1024"), returned with a non-zero status. */
#ifndef TESLA_RT_H
#define TESLA_RT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors and allocation ------------------------------------------------------------ */

typedef struct TsErr { char msg[512]; } TsErr;

/* printf into e->msg (e may be NULL); always returns -1 so callers can `return ts_fail(...)`. */
int ts_fail(TsErr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One hook for all runtime heap memory: realloc semantics (ptr NULL = malloc, size 0 = free).
 * NULL restores the default. The hook needs no particular alignment (malloc's is enough):
 * ts_aligned_alloc over-allocates through it and aligns the block itself. */
typedef void *(*TsAllocFn)(void *ud, void *ptr, size_t size);
void  ts_set_allocator(TsAllocFn fn, void *ud);
void *ts_malloc(size_t n);             /* NULL on failure */
/* `path` opened for reading if it is a regular file: its fd, or -1 with "PATH: cannot open:
 * ..." or "PATH: is a FIFO, not <want>" (never blocks: a FIFO or device is refused at once) */
int   ts_open_input(const char *path, const char *want, TsErr *e);
void *ts_realloc(void *p, size_t n);   /* resize a ts_malloc block (p NULL = ts_malloc); NULL
                                          on failure, p then still valid. Added for growing
                                          buffers (IDX reads, safetensors header tables). */
void *ts_calloc(size_t n, size_t sz);  /* zeroed, NULL on failure or overflow */
void *ts_aligned_alloc(size_t n);      /* 64-byte aligned, zeroed; free with ts_aligned_free */
void  ts_aligned_free(void *p);
void  ts_free(void *p);

/* ---- IDX data (the MNIST family) ------------------------------------------------------ */

/* One IDX file, fully validated: magic 0x0000 + type byte + ndims, big-endian dims, then
 * exactly prod(dims) elements. Only type 0x08 (unsigned byte) is accepted (what MNIST-family
 * files use); others get a clear message. .gz files are inflated through zlib; a plain file
 * reads too. Truncated data, trailing bytes, a corrupt gzip stream, dims whose product
 * overflows: each an error naming the file. */
typedef struct TsIdx {
  int      ndims;
  uint32_t dims[4];
  size_t   count;          /* dims[0] */
  size_t   item_size;      /* prod(dims[1..]) */
  uint8_t *data;           /* count * item_size bytes (ts_malloc'd) */
} TsIdx;

int  ts_idx_load(const char *path, TsIdx *out, TsErr *e);
/* the same from an open file (fd is closed here); `path` names it in messages (predict's
 * standard input) */
int  ts_idx_load_fd(int fd, const char *path, TsIdx *out, TsErr *e);
void ts_idx_free(TsIdx *x);

/* A labelled dataset: images as f32 (pixel / scale), labels as int32 in [0, classes).
 * Checks: image and label counts agree, labels are 1-D, every label < classes,
 * item_size == expect_item (0 = don't check; the message gives both shapes). */
typedef struct TsDataset {
  size_t   count;
  size_t   item_size;      /* floats per sample */
  uint32_t item_dims[3];   /* e.g. 28, 28 for MNIST images; item_ndims of them */
  int      item_ndims;
  uint8_t *x;              /* count * item_size bytes, as the IDX file holds them */
  float    value[256];     /* the float of a byte: byte / scale */
  int32_t *y;              /* count */
} TsDataset;

int  ts_dataset_load(const char *images, const char *labels, float scale, int classes,
                     size_t expect_item, TsDataset *out, TsErr *e);
void ts_dataset_free(TsDataset *d);
/* The images stay bytes (a quarter of the memory of floats: 47 MB, not 188, for the
 * Fashion-MNIST training set) and become floats in the batch gather, through d->value:
 * samples [first, first + n) into dst (n * item_size floats). */
void ts_dataset_gather(const TsDataset *d, size_t first, size_t n, float *dst);
/* Moves the samples with take[i] != 0 into *held (new buffers), keeping the order of both
 * parts; d keeps the rest, compacted in place (no second copy of the data). */
int  ts_dataset_split(TsDataset *d, const uint8_t *take, TsDataset *held, TsErr *e);
/* validation_split: the fraction f of d's samples, chosen by `seed` (a shuffle of stream 2000),
 * split off into *held (Keras' count: d keeps floor(n (1 - f))); an error when either part
 * would be empty */
int  ts_dataset_holdout(TsDataset *d, double f, uint64_t seed, TsDataset *held, TsErr *e);

/* ---- random numbers ------------------------------------------------------------------- */

/* Deterministic across machines: a PCG32 stream (O'Neill), seeded by (seed, stream). */
typedef struct TsRng { uint64_t state, inc; } TsRng;

void     ts_rng_seed(TsRng *r, uint64_t seed, uint64_t stream);
uint32_t ts_rng_u32(TsRng *r);
uint32_t ts_rng_below(TsRng *r, uint32_t n);     /* unbiased, in [0, n) */
float    ts_rng_uniform(TsRng *r);               /* [0, 1) with 24 random bits */
float    ts_rng_normal(TsRng *r);                /* N(0, 1), Box-Muller */
void     ts_rng_uniform_fill(TsRng *r, float *dst, int64_t n, double scale);   /* U(-scale, scale) */
void     ts_shuffle_u32(TsRng *r, uint32_t *a, size_t n);   /* Fisher-Yates */

/* ---- thread pool ---------------------------------------------------------------------- */

/* The pool runs `fn(ctx, tile)` for tile in [0, ntiles) spread over its threads, the caller
 * taking part, and returns when all are done. Tiles are handed out in a fixed, static
 * partition (tile t goes to thread t % nthreads) so that results that depend on which thread
 * ran a tile are still deterministic for a fixed thread count. Nested calls run serially.
 * Generated code calls ts_parallel_for with the process-wide pool set by ts_pool_set_global. */
typedef struct TsPool TsPool;
typedef void (*TsTileFn)(void *ctx, int64_t tile);

TsPool *ts_pool_create(int nthreads, TsErr *e);   /* nthreads <= 0: all online cores */
int     ts_pool_threads(const TsPool *p);
void    ts_pool_run(TsPool *p, TsTileFn fn, void *ctx, int64_t ntiles);
void    ts_pool_destroy(TsPool *p);
void    ts_pool_set_global(TsPool *p);            /* NULL: ts_parallel_for runs serially */
void    ts_parallel_for(TsTileFn fn, void *ctx, int64_t ntiles);

/* ---- safetensors ---------------------------------------------------------------------- */

/* Format: u64 little-endian header length N, N bytes of JSON header
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the data buffer. */
typedef enum TsDtype {
  TS_F32, TS_F64, TS_F16, TS_BF16, TS_I64, TS_I32, TS_I16, TS_I8, TS_U8, TS_BOOL, TS_DTYPE_COUNT
} TsDtype;

typedef struct TsTensor {
  char       *name;
  TsDtype     dtype;
  int         ndims;
  int64_t     shape[8];
  const void *data;        /* raw little-endian bytes inside the file's buffer */
  size_t      nbytes;
} TsTensor;

typedef struct TsStFile {
  int       ntensors;
  TsTensor *tensors;       /* in data-offset order */
  int       nmeta;
  char    **meta_keys, **meta_values;
  void     *buf;           /* the whole file (owned) */
  size_t    size;
} TsStFile;

/* Read and validate a whole file: header length within the file, JSON well formed, known
 * dtypes, shape products matching data_offsets, offsets in bounds and not overlapping.
 * Any defect: an error naming the file and the tensor. */
int             ts_st_read(const char *path, TsStFile *out, TsErr *e);
const TsTensor *ts_st_find(const TsStFile *f, const char *name);
const char     *ts_st_meta(const TsStFile *f, const char *key);   /* NULL if absent */
/* Convert a tensor of any float dtype (F32, F64, F16, BF16) to f32; -1 with a message for
 * other dtypes or a count mismatch. */
int             ts_tensor_to_f32(const TsTensor *t, float *dst, size_t count, TsErr *e);
/* The same for integer dtypes (I64, I32, I16, I8, U8) to int64 (sparse indices). */
int             ts_tensor_to_i64(const TsTensor *t, int64_t *dst, size_t count, TsErr *e);
void            ts_st_free(TsStFile *f);

/* ---- atomic outputs (rt_out.c) ----------------------------------------------------------- */

/* A temporary next to `path`; ts_out_write appends; ts_out_finish fsyncs and closes it;
 * ts_out_commit renames it over `path` and fsyncs the folder. Every failure removes the
 * temporary (the target is untouched) and returns -1 with e->msg; ts_out_abort removes it. */
typedef struct TsOut { const char *path; char *tmp, *dir, *real; int fd; bool created; } TsOut;
int  ts_out_open(TsOut *o, const char *path, TsErr *e);
int  ts_out_write(TsOut *o, const void *p, size_t n, TsErr *e);
int  ts_out_finish(TsOut *o, TsErr *e);
int  ts_out_commit(TsOut *o, TsErr *e);
void ts_out_abort(TsOut *o);
int  ts_out_fail(TsOut *o, const char *step, TsErr *e);   /* "<step> of the temporary failed" */

/* Write atomically: a temporary file in the same folder, fsync, rename over `path`, fsync the
 * folder. On any failure the temporary is removed and `path` is untouched. Tensors are written
 * in the order given (F32 or I64 data as given). */
typedef struct TsStOut {
  const char *name;
  TsDtype     dtype;
  int         ndims;
  int64_t     shape[8];
  const void *data;
} TsStOut;

int ts_st_write(const char *path, const TsStOut *tensors, int n,
                const char *const *meta_kv, int nmeta, TsErr *e);   /* meta_kv: k0,v0,k1,v1.. */
/* The same, but a tensor whose data is NULL has its bytes made as they are written:
 * fill(arg, i, dst) puts tensor i's into dst, one buffer of the largest such tensor's size,
 * reused. Converted copies (a checkpoint's transposed weights) then cost one tensor's memory,
 * not all of them. */
typedef void (*TsStFill)(void *arg, int i, void *dst);
int ts_st_write_fill(const char *path, const TsStOut *tensors, int n,
                     const char *const *meta_kv, int nmeta, TsStFill fill, void *arg, TsErr *e);

/* ---- progress ------------------------------------------------------------------------- */

/* A live bar on a terminal (stdout isatty), nothing otherwise:
 * "epoch 3/10 [=========>      ] 31200/60000  12345 samples/s  loss 0.4123  ETA 0:04". */
typedef struct TsProgress {
  bool   tty;
  int    epoch, epochs;
  size_t total;
  double t0, last_draw;
} TsProgress;

double ts_now(void);   /* monotonic seconds */
/* FNV-1a over n bytes, continuing from h (TS_FNV1A_INIT to start): checkpoints' spec hash,
 * objects' weights hash, the compile cache's checksum */
#define TS_FNV1A_INIT 0xcbf29ce484222325ull
/* the start checkpoints' spec_hash and objects' weights hash have always used: FNV's offset
 * basis with its last digit lost (14695981039346656037 -> 1469598103934665603); kept so that
 * existing checkpoints and objects keep their hashes */
#define TS_FNV1A_TESLA 1469598103934665603ull
uint64_t ts_fnv1a(const void *p, size_t n, uint64_t h);

/* Phase timing for `teslac train --profile`: generated code compiled with profiling calls
 * ts_prof_mark(id) at the end of each phase (id >= 0: the time since the previous mark goes to
 * slot id; -1: restart the clock). Slots are summed until ts_prof_reset. */
#define TS_PROF_SLOTS 512
void   ts_prof_mark(int32_t id);
void   ts_prof_reset(void);
double ts_prof_seconds(int32_t id);
void   ts_progress_begin(TsProgress *p, int epoch, int epochs, size_t total);
void   ts_progress_update(TsProgress *p, size_t done, double loss);
void   ts_progress_end(TsProgress *p);   /* clears the bar line */

#ifdef __cplusplus
}
#endif
#endif
