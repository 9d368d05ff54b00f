/* cli.h: what the test suites that run the built teslac share (test_jit.c, test_tt_svd.c):
 * a printf into a new string, a whole file read back, and one teslac run with its exit status
 * and captured output. Header-only: each suite is one executable. */
#ifndef TESLA_TESTS_CLI_H
#define TESLA_TESTS_CLI_H

#include <check.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static char *xprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) abort();
  va_end(ap);
  return s;
}

/* the file's bytes, NUL-terminated ("" when it cannot be read); *len its size when asked */
static __attribute__((unused)) char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return strdup("");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  size_t got = fread(s, 1, (size_t)n, f);
  s[got] = 0;
  fclose(f);
  if (len) *len = got;
  return s;
}

typedef struct Cli { int status; char *out, *err; } Cli;

/* `bin args...` with stdout and stderr captured in files under `scratch`, run in `cwd` (NULL:
 * here); a signal shows as 128 + its number */
static __attribute__((unused)) Cli cli_run(const char *bin, const char *scratch, const char *cwd,
                                           const char *const *args) {
  static int serial;
  char *op = xprintf("%s/cli-%d-%d.out", scratch, (int)getpid(), serial);
  char *ep = xprintf("%s/cli-%d-%d.err", scratch, (int)getpid(), serial++);
  const char *argv[32];
  int k = 0;
  argv[k++] = bin;
  for (; *args && k < 31; args++) argv[k++] = *args;
  argv[k] = NULL;
  fflush(stdout);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(o, 1), dup2(e, 2);
    if (cwd && chdir(cwd)) _exit(126);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0);
  Cli r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), slurp(op, NULL), slurp(ep, NULL)};
  unlink(op), unlink(ep);
  free(op), free(ep);
  return r;
}

static __attribute__((unused)) void cli_free(Cli *c) { free(c->out), free(c->err); }

static __attribute__((unused)) int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

#endif
