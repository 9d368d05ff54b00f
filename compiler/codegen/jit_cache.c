/* jit_cache.c: the compile cache. Compiling a model is most of a short teslac run (LLVM's O3
 * and instruction scheduling over the unrolled kernels: 2-9 s for the reference specs), and
 * eval, predict, resume and every test compile the same module again. So jit_compile first
 * looks the emitted module up here: the key is a 128-bit hash of its bitcode (before the
 * kernels are linked), of the kernel bitcode, and of everything else that decides the machine
 * code: teslac's and LLVM's versions, the CPU name and features, the part count. An entry holds
 * the parts' object files, which the JIT links as if they had just been compiled.
 *
 * Entries live in $XDG_CACHE_HOME/teslac (else ~/.cache/teslac), one file per key, written
 * atomically (rt_out.c). An entry is loaded only if its magic, its description (the key's
 * inputs in clear, which also guards against a hash collision), its sizes and a checksum of its
 * objects all agree; anything else is a warning and a recompile that replaces it. A cache that
 * cannot be written is a warning, never an error. The folder is kept under 1 GiB by dropping
 * the least recently used entries (a hit touches its file). `--no-cache` (jit_cache_enable)
 * bypasses it: no lookup, no store. */
#include "cg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <llvm-c/BitWriter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tesla_rt.h"

extern const unsigned char tk_bitcode[], tk_bitcode_narrow[];
extern const size_t tk_bitcode_size, tk_bitcode_narrow_size;

#define CACHE_MAGIC "TESLAJC1"
#define CACHE_MAX_BYTES ((int64_t)1 << 30)

static bool cache_on = true;

void jit_cache_enable(bool on) { cache_on = on; }

/* ---- hashing: two independent 64-bit lanes ---------------------------------------------- */

typedef struct Hash { uint64_t a, b; } Hash;

static void hash_init(Hash *h) { h->a = TS_FNV1A_INIT, h->b = 0x9e3779b97f4a7c15ull; }

/* 8 bytes per step and lane (the 1 MB of kernel bitcode took 6 ms byte by byte, the better part
 * of a cached compile); then the 0-7 bytes left, then the length */
static void hash_bytes(Hash *h, const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t a = h->a, b = h->b, w;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, s + i, 8);
    a = (a ^ w) * 0x9fb21c651e98df25ull, a ^= a >> 28;   /* two multiply-xorshift lanes */
    b = (b + w + 1) * 0xff51afd7ed558ccdull, b ^= b >> 31;
  }
  for (; i < n; i++) a = (a ^ s[i]) * 0x100000001b3ull, b = (b + s[i] + 1) * 0xff51afd7ed558ccdull, b ^= b >> 31;
  h->a = (a ^ n) * 0x9fb21c651e98df25ull, h->b = b;
}

static void hash_str(Hash *h, const char *s) { hash_bytes(h, s, strlen(s) + 1); }

/* ---- where entries live ------------------------------------------------------------------ */

/* the folder, created (0700, with its parents) when `create`; NULL without a home */
static char *cache_dir(bool create) {
  const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  char buf[4096];
  if (xdg && *xdg == '/') snprintf(buf, sizeof buf, "%s/teslac", xdg);
  else if (home && *home) snprintf(buf, sizeof buf, "%s/.cache/teslac", home);
  else return NULL;
  if (create)
    for (char *s = buf + 1;; s++)
      if (*s == '/' || !*s) {
        char c = *s;
        *s = 0;
        if (mkdir(buf, 0700) < 0 && errno != EEXIST) return NULL;
        *s = c;
        if (!c) break;
      }
  return strdup(buf);
}

/* ---- the key ----------------------------------------------------------------------------- */

int jit_cache_key(Cg *g, const char *cpu, const char *features, int nparts, JitCacheKey *k) {
  memset(k, 0, sizeof *k);
  if (!cache_on) return -1;
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(g->mod);
  if (!bc) return -1;
  static Hash kernels;   /* the kernel bitcode is constant for the process: hashed once */
  static bool kernels_done;
  if (!kernels_done) {
    hash_init(&kernels);
    hash_bytes(&kernels, tk_bitcode, tk_bitcode_size), hash_bytes(&kernels, tk_bitcode_narrow, tk_bitcode_narrow_size);
    kernels_done = true;
  }
  unsigned maj, min, pat;
  LLVMGetVersion(&maj, &min, &pat);
  snprintf(k->desc, sizeof k->desc, "teslac %s; LLVM %u.%u.%u; kernels %016llx%016llx %s; codegen %s; cpu %s; "
           "parts %d; features %s", TESLAC_VERSION, maj, min, pat, (unsigned long long)kernels.a,
           (unsigned long long)kernels.b, cg_wide_kernels(features) ? "wide" : "narrow", jit_codegen_opts, cpu,
           nparts, features);
  Hash h;
  hash_init(&h);
  hash_bytes(&h, LLVMGetBufferStart(bc), LLVMGetBufferSize(bc));
  hash_str(&h, k->desc);
  LLVMDisposeMemoryBuffer(bc);
  snprintf(k->hex, sizeof k->hex, "%016llx%016llx", (unsigned long long)h.a, (unsigned long long)h.b);
  k->valid = true;
  return 0;
}

static char *entry_path(const char *dir, const JitCacheKey *k) {
  size_t n = strlen(dir) + sizeof k->hex + 16;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s.tjc", dir, k->hex);
  return p;
}

/* ---- entries: "TESLAJC1", u32 desc length, desc, u32 parts, u64 size per part, u64 checksum
 * (FNV-1a of the objects), the objects ----------------------------------------------------- */

static uint64_t rd64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static uint32_t rd32(const unsigned char *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void wr64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> 8 * i);
}

static void wr32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> 8 * i);
}

/* a whole regular file (at most CACHE_MAX_BYTES): 0, or -1 with errno (ENOENT: no entry) */
static int read_all(const char *path, unsigned char **data, size_t *size) {
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CACHE_MAX_BYTES) {
    close(fd);
    errno = EINVAL;
    return -1;
  }
  unsigned char *d = malloc(st.st_size ? (size_t)st.st_size : 1);
  size_t got = 0;
  while (d && got < (size_t)st.st_size) {
    ssize_t r = read(fd, d + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (!d) return errno = ENOMEM, -1;
  *data = d, *size = got;   /* a short read shows as a truncated entry */
  return 0;
}

/* the entry's objects into objs (1), or 0 with `why` set when it does not hold them */
static int parse_entry(const unsigned char *d, size_t n, const JitCacheKey *k, int nparts,
                       LLVMMemoryBufferRef *objs, const char **why) {
  size_t dl = strlen(k->desc), at = 8 + 4 + dl + 4 + 8 * (size_t)nparts + 8;
  if (n < 16 || memcmp(d, CACHE_MAGIC, 8)) return *why = "not a teslac cache entry", 0;
  if (rd32(d + 8) != dl || n < at || memcmp(d + 12, k->desc, dl)) return *why = "its key does not match", 0;
  if (rd32(d + 12 + dl) != (uint32_t)nparts) return *why = "its part count does not match", 0;
  const unsigned char *sz = d + 16 + dl;
  uint64_t total = 0;
  for (int i = 0; i < nparts; i++) {
    uint64_t s = rd64(sz + 8 * i);
    if (s == 0 || s > ((uint64_t)1 << 40)) return *why = "a part has an impossible size", 0;
    if (s > n - at) return *why = "it is truncated (a part is larger than what the entry holds)", 0;
    total += s;
  }
  if (total != n - at) return *why = "it is truncated or has trailing bytes", 0;
  if (ts_fnv1a(d + at, (size_t)total, TS_FNV1A_INIT) != rd64(sz + 8 * (size_t)nparts)) return *why = "its checksum does not match", 0;
  size_t off = at;
  for (int i = 0; i < nparts; i++) {
    size_t s = (size_t)rd64(sz + 8 * i);
    objs[i] = LLVMCreateMemoryBufferWithMemoryRangeCopy((const char *)d + off, s, "teslac-cache");
    off += s;
  }
  return 1;
}

int jit_cache_lookup(const JitCacheKey *k, int nparts, LLVMMemoryBufferRef *objs) {
  if (!cache_on || !k->valid) return 0;
  char *dir = cache_dir(false), *path = dir ? entry_path(dir, k) : NULL;
  free(dir);
  if (!path) return 0;
  unsigned char *d;
  size_t n;
  int hit = 0;
  if (read_all(path, &d, &n) == 0) {
    const char *why = NULL;
    hit = parse_entry(d, n, k, nparts, objs, &why);
    if (hit) utimensat(AT_FDCWD, path, NULL, 0);   /* recently used */
    else fprintf(stderr, "teslac: warning: compile cache entry %s is unusable (%s); compiling again\n", path, why);
    free(d);
  } else if (errno != ENOENT) {
    fprintf(stderr, "teslac: warning: compile cache entry %s: %s; compiling again\n", path, strerror(errno));
  }
  free(path);
  return hit;
}

/* least recently used entries go until the folder is under CACHE_MAX_BYTES */
static void trim(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  typedef struct { char name[64]; int64_t size; time_t at; } Ent;
  Ent *v = NULL;
  size_t n = 0, cap = 0;
  int64_t total = 0;
  for (struct dirent *de; (de = readdir(d));) {
    size_t l = strlen(de->d_name);
    if (l != 36 || strcmp(de->d_name + 32, ".tjc")) continue;
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
    if (stat(p, &st) < 0 || !S_ISREG(st.st_mode)) continue;
    if (n == cap) {
      Ent *w = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof *v);
      if (!w) break;
      v = w;
    }
    snprintf(v[n].name, sizeof v[n].name, "%s", de->d_name);
    v[n].size = st.st_size, v[n].at = st.st_mtime, total += st.st_size, n++;
  }
  closedir(d);
  while (total > CACHE_MAX_BYTES && n > 1) {
    size_t old = 0;
    for (size_t i = 1; i < n; i++)
      if (v[i].at < v[old].at) old = i;
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, v[old].name);
    unlink(p);
    total -= v[old].size, v[old] = v[--n];
  }
  free(v);
}

void jit_cache_store(const JitCacheKey *k, int nparts, LLVMMemoryBufferRef *objs) {
  if (!cache_on || !k->valid) return;
  char *dir = cache_dir(true), *path = dir ? entry_path(dir, k) : NULL;
  if (!path) {
    fprintf(stderr, "teslac: warning: no compile cache folder (set XDG_CACHE_HOME or HOME, or pass --no-cache)\n");
    free(dir);
    return;
  }
  size_t dl = strlen(k->desc), hl = 8 + 4 + dl + 4 + 8 * (size_t)nparts + 8;
  unsigned char *head = malloc(hl);
  TsOut o;
  TsErr e;
  int rc = head ? 0 : -1;
  if (head) {
    memcpy(head, CACHE_MAGIC, 8);
    wr32(head + 8, (uint32_t)dl);
    memcpy(head + 12, k->desc, dl);
    wr32(head + 12 + dl, (uint32_t)nparts);
    uint64_t sum = TS_FNV1A_INIT;   /* of the objects, in order */
    for (int i = 0; i < nparts; i++) {
      wr64(head + 16 + dl + 8 * i, LLVMGetBufferSize(objs[i]));
      sum = ts_fnv1a(LLVMGetBufferStart(objs[i]), LLVMGetBufferSize(objs[i]), sum);
    }
    wr64(head + 16 + dl + 8 * (size_t)nparts, sum);
    rc = ts_out_open(&o, path, &e);
    if (rc == 0) rc = ts_out_write(&o, head, hl, &e);
    for (int i = 0; i < nparts && rc == 0; i++)
      rc = ts_out_write(&o, LLVMGetBufferStart(objs[i]), LLVMGetBufferSize(objs[i]), &e);
    if (rc == 0) rc = ts_out_finish(&o, &e);
    if (rc == 0) rc = ts_out_commit(&o, &e);
    if (rc < 0) fprintf(stderr, "teslac: warning: compile cache not written: %s\n", e.msg);
  }
  free(head);
  if (rc == 0) trim(dir);
  free(path), free(dir);
}
