/* cmd.h: the driver's commands of the JIT path (train.c, eval.c, predict.c, emit_llvm.c) and
 * what they share (cmd.c): their options and usage errors. */
#ifndef TESLAC_CMD_H
#define TESLAC_CMD_H

#include "model.h"

typedef struct TrainOpts {
  bool profile, json, optimized, train_step, quiet;
  bool save_best, test_every_epoch, allow_nonfinite;         /* train */
  int64_t save_every;                                        /* train: steps, 0 = never */
  double val_split;                                          /* train: -1 = the spec's */
  const char *header, *ext_weights, *target, *cpu, *name;   /* build */
  const char *spec, *out, *init, *resume, *log, *weights, *input;
  int64_t epochs, steps, batch, threads;
  int64_t top;                                              /* predict --top K (0: one) */
  double lr;
  int64_t seed;
  bool have_seed;
} TrainOpts;

/* "teslac: <fmt>" and "see 'teslac CMD --help'" on stderr; returns 2 */
int cmd_usage(const char *cmd, const char *fmt, const char *arg);
/* One reader for every numeric option value: an integer is decimal digits only; a number is
 * decimal ([+-]digits[.digits][e[+-]digits]: no hex, inf, nan or spaces); both in [lo, hi].
 * 0, or a usage error (2) naming the flag, the range and the value. */
bool cmd_decimal(const char *v, bool integer);   /* the syntax alone */
int cmd_value(const char *cmd, const char *flag, const char *v, double lo, double hi, bool integer, double *out);
/* the options of `cmd` into *o: 0, 2 after a usage error, -1 after --help was printed */
int cmd_parse_opts(const char *cmd, int argc, char **argv, TrainOpts *o);
/* Fails (with a message naming `what`, -1) unless `path` can be written: an existing regular
 * file, or a new name in a folder that exists and takes new files; nothing is left behind. */
int cmd_check_output(const char *path, const char *what);
/* One file, one role: fails (a message, -1) when an output names the same file as an input
 * (by device and inode, so links and other spellings count) or as another output (by inode, or
 * by name while it does not exist yet). NULL entries are skipped; `allow_in`/`allow_out` (both
 * indices, -1 for none) name the one input an output may be (train's -o over --resume). */
typedef struct CmdFile { const char *path, *role; } CmdFile;
int cmd_check_roles(const CmdFile *in, int nin, const CmdFile *out, int nout, int allow_in, int allow_out);
/* JSON output: a string with its escapes; a number, null when it is not finite (%.*g) */
void cmd_json_str(FILE *f, const char *s);
void cmd_json_num(FILE *f, double x, int digits);
/* a split of the spec's data (`what`: train or test); -1 after a message */
int cmd_load_split(Ctx *cx, const Spec *sp, const char *images, const char *labels, const char *what,
                   TsDataset *d);

#endif
