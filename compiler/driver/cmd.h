/* cmd.h: the driver's commands of the JIT path (train.c, eval.c, predict.c, emit_llvm.c) and
 * what they share (cmd.c): their options and usage errors. */
#ifndef TESLAC_CMD_H
#define TESLAC_CMD_H

#include "model.h"

typedef struct TrainOpts {
  bool profile, json, optimized, train_step, quiet;
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
/* the options of `cmd` into *o: 0, 2 after a usage error, -1 after --help was printed */
int cmd_parse_opts(const char *cmd, int argc, char **argv, TrainOpts *o);
/* JSON output: a string with its escapes; a number, null when it is not finite (%.*g) */
void cmd_json_str(FILE *f, const char *s);
void cmd_json_num(FILE *f, double x, int digits);
/* a split of the spec's data (`what`: train or test); -1 after a message */
int cmd_load_split(Ctx *cx, const Spec *sp, const char *images, const char *labels, const char *what,
                   TsDataset *d);

#endif
