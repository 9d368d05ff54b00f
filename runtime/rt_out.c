/* rt_out.c: files written atomically. A temporary next to the target (so that the rename is
 * atomic), written in full, fsync'd and closed (ts_out_finish), then renamed over the target and
 * the folder fsync'd (ts_out_commit); anything short of that removes the temporary
 * (ts_out_abort), leaving the target untouched. Separate finish and commit let a caller write
 * several files (teslac build: object, header, weights) and put them in place only when all are
 * complete. Checkpoints (rt_safetensors.c) are written this way.
 *
 * Only regular files are replaced: a target that exists as anything else (a device, a FIFO, a
 * folder) is refused, and a symlink is written through to its target, as cp does (the link
 * stays a link). A temporary's name holds its writer's pid (`CKPT.tmp-<pid>-XXXXXX`), so that a
 * later write of the same target removes the ones whose writer is gone (a run killed in the
 * middle of a write), never one a live process is still writing. */
#define _GNU_SOURCE   /* mkostemp */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <dirent.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "<prefix><pid>-XXXXXX" in dir whose pid is no process any more: removed */
static void remove_stale(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d) return;
  size_t plen = strlen(prefix);
  for (struct dirent *de; (de = readdir(d));) {
    const char *n = de->d_name;
    if (strncmp(n, prefix, plen)) continue;
    char *end;
    long pid = strtol(n + plen, &end, 10);
    if (end == n + plen || *end != '-' || strlen(end + 1) != 6 || pid <= 0 || pid == (long)getpid()) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;   /* alive, or not ours to judge */
    char *p = malloc(strlen(dir) + strlen(n) + 2);
    if (!p) break;
    sprintf(p, "%s/%s", dir, n);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISREG(st.st_mode)) unlink(p);
    free(p);
  }
  closedir(d);
}

#include "tesla_rt.h"

int ts_out_open(TsOut *o, const char *path, TsErr *e) {
  memset(o, 0, sizeof *o);
  o->fd = -1;
  o->path = path;
  struct stat lst;
  if (lstat(path, &lst) == 0) {
    if (S_ISLNK(lst.st_mode)) {   /* written through to the link's target */
      struct stat tst;
      o->real = realpath(path, NULL);
      if (!o->real)
        return ts_fail(e, "%s: a symlink whose target %s", path, errno == ENOENT ? "does not exist" : strerror(errno));
      if (stat(o->real, &tst) != 0 || !S_ISREG(tst.st_mode)) {
        ts_fail(e, "%s: a symlink to %s, which is not a regular file; teslac replaces only regular files", path, o->real);
        ts_out_abort(o);
        return -1;
      }
      path = o->path = o->real;
    } else if (!S_ISREG(lst.st_mode)) {
      return ts_fail(e, "%s: exists and is not a regular file; teslac replaces only regular files", path);
    }
  }
  const char *slash = strrchr(path, '/');
  size_t dlen = slash ? (size_t)(slash - path) : 0;
  o->dir = ts_malloc(dlen + 2);
  o->tmp = ts_malloc(strlen(path) + 32);
  if (!o->dir || !o->tmp) {
    ts_out_abort(o);
    return ts_fail(e, "%s: out of memory", path);
  }
  if (!slash) strcpy(o->dir, ".");
  else if (dlen == 0) strcpy(o->dir, "/");
  else memcpy(o->dir, path, dlen), o->dir[dlen] = 0;
  const char *base = slash ? slash + 1 : path;
  char prefix[256];
  if (strlen(base) <= 200) snprintf(prefix, sizeof prefix, "%s.tmp-", base);
  else snprintf(prefix, sizeof prefix, ".tesla-tmp-");
  remove_stale(o->dir, prefix);
  if (strlen(base) <= 200) sprintf(o->tmp, "%s.tmp-%ld-XXXXXX", path, (long)getpid());
  else sprintf(o->tmp, "%s/.tesla-tmp-%ld-XXXXXX", o->dir, (long)getpid());
  o->fd = mkostemp(o->tmp, O_CLOEXEC);
  if (o->fd < 0) {
    ts_fail(e, "%s: cannot create a temporary file in %s: %s", path, o->dir, strerror(errno));
    ts_out_abort(o);
    return -1;
  }
  o->created = true;
  /* mkstemp makes 0600; give the file the target's mode, or an ordinary 0644 */
  struct stat st;
  mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
  if (fchmod(o->fd, mode)) return ts_out_fail(o, "chmod", e);
  return 0;
}

int ts_out_fail(TsOut *o, const char *step, TsErr *e) {
  ts_fail(e, "%s: %s of the temporary file %s failed: %s", o->path, step, o->tmp, strerror(errno));
  ts_out_abort(o);
  return -1;
}

int ts_out_write(TsOut *o, const void *p, size_t n, TsErr *e) {
  const char *c = p;
  while (n) {
    ssize_t w = write(o->fd, c, n > (1u << 30) ? (1u << 30) : n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return ts_out_fail(o, "write", e);
    c += w, n -= (size_t)w;
  }
  return 0;
}

int ts_out_finish(TsOut *o, TsErr *e) {
  if (fsync(o->fd)) return ts_out_fail(o, "fsync", e);
  int fd = o->fd;
  o->fd = -1;
  if (close(fd)) return ts_out_fail(o, "close", e);
  return 0;
}

int ts_out_commit(TsOut *o, TsErr *e) {
  if (rename(o->tmp, o->path)) return ts_out_fail(o, "rename", e);
  o->created = false;   /* renamed: nothing to clean up any more */
  int rc = 0;
  /* make the rename itself durable; EINVAL: the filesystem cannot sync folders */
  int dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    int r = fsync(dfd), err = errno;
    close(dfd);
    if (r && err != EINVAL)
      rc = ts_fail(e, "%s: written, but syncing the folder %s failed: %s", o->path, o->dir, strerror(err));
  }
  ts_out_abort(o);
  return rc;
}

void ts_out_abort(TsOut *o) {
  if (o->fd >= 0) close(o->fd);
  o->fd = -1;
  if (o->created) unlink(o->tmp);   /* a temporary that was never renamed */
  o->created = false;
  ts_free(o->tmp), ts_free(o->dir);
  free(o->real);
  o->tmp = o->dir = o->real = NULL;
}
