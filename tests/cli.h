/* cli.h: what the test suites that run the built teslac share (test_jit.c, test_sparse.c,
 * test_tt_svd.c): the built teslac ($TESLAC) and the suite's scratch folder, a printf into a
 * new string, a whole file read back, one teslac run with its exit status and captured output,
 * a check for set-up code that runs outside the tests, and the suite's main(). Header-only:
 * each suite is one executable. (net.h builds on this for the suites that compile models in
 * process.) */
#ifndef TESLA_TESTS_CLI_H
#define TESLA_TESTS_CLI_H

#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static __attribute__((unused)) const char *teslac_bin;   /* the built teslac ($TESLAC) */
static __attribute__((unused)) char tmpdir[64];          /* scratch folder: data, specs, checkpoints */

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static char *xprintf(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = NULL;
  if (vasprintf(&s, fmt, ap) < 0) abort();
  va_end(ap);
  return s;
}

/* `name` in the scratch folder */
static __attribute__((unused)) char *tmp_path(const char *name) { return xprintf("%s/%s", tmpdir, name); }

/* Set-up code runs outside the tests too (main makes the data and specs): plain checks there,
 * named after the test program. */
#define NEED(cond)                                                                                     \
  do {                                                                                                 \
    if (!(cond)) {                                                                                     \
      fprintf(stderr, "%s: %s:%d: %s failed: %m\n", program_invocation_short_name, __FILE__, __LINE__, \
              #cond);                                                                                  \
      abort();                                                                                         \
    }                                                                                                  \
  } while (0)

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

/* A suite's main(): teslac from $TESLAC (or the first argument), a new scratch folder
 * /tmp/<name>.XXXXXX, setup() when given, the suite, and the folder removed afterwards unless
 * $<NAME>_KEEP is set (TEST_JIT_KEEP for test_jit). */
static __attribute__((unused)) int suite_main(int argc, char **argv, const char *name, void (*setup)(void),
                                              Suite *(*suite)(void)) {
  teslac_bin = getenv("TESLAC");
  if (!teslac_bin && argc > 1) teslac_bin = argv[1];
  if (!teslac_bin) {
    fprintf(stderr, "%s: set TESLAC to the built teslac binary\n", name);
    return 1;
  }
  snprintf(tmpdir, sizeof tmpdir, "/tmp/%s.XXXXXX", name);
  if (!mkdtemp(tmpdir)) {
    perror("mkdtemp");
    return 1;
  }
  if (setup) setup();
  SRunner *sr = srunner_create(suite());
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  char keep[64];
  snprintf(keep, sizeof keep, "%s_KEEP", name);
  for (char *c = keep; *c; c++) *c = (char)toupper((unsigned char)*c);
  if (!getenv(keep)) nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  else fprintf(stderr, "%s: kept %s\n", name, tmpdir);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
