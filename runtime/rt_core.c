/* rt_core.c: the runtime's foundation, used by every other rt_ file. It formats errors into
 * a TsErr (one line, never longer than the buffer), routes every heap allocation of the
 * runtime through one realloc-style hook so that tests can count allocations and make any
 * one of them fail, builds 64-byte aligned blocks on top of that hook (the hook itself need
 * not align anything: we over-allocate and keep the original pointer just below the block),
 * reads the monotonic clock, and opens input files without ever blocking on one that is not
 * a regular file (a FIFO would block open() until a writer came). */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
#include <time.h>
#include <unistd.h>

/* ---- errors --------------------------------------------------------------------------- */

int ts_fail(TsErr *e, const char *fmt, ...) {
  if (!e) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  // One line, whatever a file name or a strerror brought in.
  for (char *c = e->msg; *c; c++)
    if (*c == '\n' || *c == '\r') *c = ' ';
  return -1;
}

/* ---- input files ---------------------------------------------------------------------- */

static const char *file_kind(mode_t m) {
  return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : S_ISCHR(m) ? "a character device"
         : S_ISBLK(m) ? "a block device" : "not a regular file";
}

int ts_open_input(const char *path, const char *want, TsErr *e) {
  /* O_NONBLOCK: open() of a FIFO returns at once; the check below then refuses it */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return ts_fail(e, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return ts_fail(e, "%s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return ts_fail(e, "%s: is %s, not %s", path, file_kind(st.st_mode), want);
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
    int err = errno;
    close(fd);
    return ts_fail(e, "%s: cannot open: %s", path, strerror(err));
  }
  return fd;
}

/* ---- allocation hook ------------------------------------------------------------------ */

static void *default_alloc(void *ud, void *ptr, size_t size) {
  (void)ud;
  if (size == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, size);
}

// The pair is read on every allocation; tests set it before starting threads, so plain
// pointers guarded by nothing would do, but atomics keep TSan and the reader honest.
static _Atomic(TsAllocFn) g_alloc = default_alloc;
static _Atomic(void *) g_alloc_ud = NULL;

void ts_set_allocator(TsAllocFn fn, void *ud) {
  atomic_store(&g_alloc_ud, fn ? ud : NULL);
  atomic_store(&g_alloc, fn ? fn : default_alloc);
}

void *ts_realloc(void *p, size_t n) {
  if (n == 0) n = 1;   // size 0 means free to the hook; a zero-byte request still gets a block
  return atomic_load(&g_alloc)(atomic_load(&g_alloc_ud), p, n);
}

void *ts_malloc(size_t n) { return ts_realloc(NULL, n); }

void *ts_calloc(size_t n, size_t sz) {
  size_t total;
  if (__builtin_mul_overflow(n, sz, &total)) return NULL;
  void *p = ts_malloc(total);
  if (p) memset(p, 0, total);
  return p;
}

void ts_free(void *p) {
  if (p) atomic_load(&g_alloc)(atomic_load(&g_alloc_ud), p, 0);
}

// Layout: [hook block ... pad][original pointer][aligned user block]. A block of 4 MB or
// more (the model's parameter, gradient, optimizer and activation blocks; the data set) is
// aligned to 2 MB and offered to the kernel for transparent huge pages (Linux's default
// "madvise" mode): zeroing it then takes a fault per 2 MB instead of per 4 KB (25 ms less
// before mlp's first step), and the steps' streaming passes over it miss the TLB less.
#define TS_HUGE ((size_t)2 << 20)
void *ts_aligned_alloc(size_t n) {
  size_t align = n >= 2 * TS_HUGE ? TS_HUGE : 64, total;
  if (__builtin_add_overflow(n, align + sizeof(void *), &total)) return NULL;
  // the default allocator's calloc knows memory fresh from the kernel is zero, and does not
  // touch it: the pages are then faulted in (huge) by their first real use
  bool zeroed = atomic_load(&g_alloc) == default_alloc;
  void *raw = zeroed ? (total > 0 ? calloc(1, total) : NULL) : ts_malloc(total);
  if (!raw) return NULL;
  uintptr_t u = ((uintptr_t)raw + sizeof(void *) + align - 1) & ~(uintptr_t)(align - 1);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == TS_HUGE) (void)madvise((void *)u, n & ~(TS_HUGE - 1), MADV_HUGEPAGE);   // a hint: may fail
#endif
  memcpy((void *)(u - sizeof(void *)), &raw, sizeof raw);
  if (!zeroed) memset((void *)u, 0, n);
  return (void *)u;
}

void ts_aligned_free(void *p) {
  if (!p) return;
  void *raw;
  memcpy(&raw, (char *)p - sizeof raw, sizeof raw);
  ts_free(raw);
}

/* ---- clock ---------------------------------------------------------------------------- */

uint64_t ts_fnv1a(const void *p, size_t n, uint64_t h) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
  return h;
}

double ts_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- phase timing ------------------------------------------------------------------------ */

static double prof_acc[TS_PROF_SLOTS], prof_last;

void ts_prof_mark(int32_t id) {
  double t = ts_now();
  if (id >= 0 && id < TS_PROF_SLOTS) prof_acc[id] += t - prof_last;
  prof_last = t;
}

void ts_prof_reset(void) {
  memset(prof_acc, 0, sizeof prof_acc);
  prof_last = ts_now();
}

double ts_prof_seconds(int32_t id) { return id >= 0 && id < TS_PROF_SLOTS ? prof_acc[id] : 0; }
