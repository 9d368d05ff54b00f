/* cmd.h: the driver's commands of the JIT path (train.c, eval.c, predict.c, emit_llvm.c) and
 * what they share (cmd.c): their options and usage errors. */
#ifndef TESLAC_CMD_H
#define TESLAC_CMD_H

#include "model.h"

#include <stddef.h>

typedef struct TrainOpts {
  bool profile, json, optimized, train_step, no_cache, backward;
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

/* ---- the option parser, one for every command --------------------------------------------
 * A command is a CmdDef: its name, its usage line, a paragraph, and a table of CmdOpt, each
 * naming the field (offsetof) of the command's own options struct it fills. cmd_parse reads
 * GNU style: `--flag value` and `--flag=value`, `-o value` and `-ovalue`, `--` ends the
 * options, `-` is an argument (standard input). Every command also takes -h/--help (its help,
 * made from the same table, so the help, the man page and the completions cannot disagree),
 * -q/--quiet and -v/--verbose (cmd_verbosity). An unknown option gets a did-you-mean. */
typedef enum { ARG_FLAG, ARG_STR, ARG_INT, ARG_NUM } ArgKind;
typedef struct CmdOpt {
  const char *name;    /* "--epochs", or a short "-o" */
  const char *alias;   /* the other spelling ("-O" for "--optimized"), or NULL */
  ArgKind kind;        /* bool, const char *, int64_t, double field */
  const char *meta;    /* the value's name in the help: "N", "CKPT" */
  double lo, hi;       /* ARG_INT, ARG_NUM: the range, inclusive */
  size_t off;          /* offsetof(the command's struct, field) */
  const char *help;    /* '\n' continues on an indented line */
  bool required;       /* a usage error without it: "eval needs --weights CKPT" */
} CmdOpt;
typedef struct CmdDef {
  const char *name;     /* "train" */
  const char *args;     /* after the name in the usage line: "SPEC [options]" */
  const char *summary;  /* one line for 'teslac --help' */
  const char *about;    /* the help's paragraph */
  const char *pos;      /* the positional argument ("SPEC", "LOG"); NULL: none */
  size_t pos_off;       /* its const char * field */
  const char *pos_hint; /* after "missing SPEC": " (a model spec, e.g. specs/mlp.yaml)" */
  const CmdOpt *opts;   /* ends with {NULL} */
  const char *quiet, *verbose;   /* what -q and -v do here; NULL: the usual text */
  int (*run)(int argc, char **argv);
} CmdDef;

/* the usual positional SPEC of a command whose options struct `type` has `spec` */
#define CMD_POS_SPEC(type) .pos = "SPEC", .pos_off = offsetof(type, spec), \
                           .pos_hint = "SPEC (a model spec, e.g. specs/mlp.yaml)"

/* -1 --quiet, 0, 1 --verbose: the last command line's */
extern int cmd_verbosity;
/* argv (after the command's name) into the struct at `dst`, which holds its defaults:
 * 0, 2 after a usage error, -1 after --help was printed */
int cmd_parse(const CmdDef *d, int argc, char **argv, void *dst);
void cmd_help(const CmdDef *d, FILE *f);
/* the commands, in 'teslac --help' order (main.c), ending with NULL */
extern const CmdDef *const cmd_registry[];
const CmdDef *cmd_find(const char *name);

/* "teslac: <fmt>" and "see 'teslac CMD --help'" on stderr; returns 2 */
int cmd_usage(const char *cmd, const char *fmt, const char *arg);
/* One reader for every numeric option value: an integer is decimal digits only; a number is
 * decimal ([+-]digits[.digits][e[+-]digits]: no hex, inf, nan or spaces); both in [lo, hi].
 * 0, or a usage error (2) naming the flag, the range and the value. */
bool cmd_decimal(const char *v, bool integer);   /* the syntax alone */
int cmd_value(const char *cmd, const char *flag, const char *v, double lo, double hi, bool integer, double *out);
/* The JIT commands' options (train, eval, predict, build, emit-llvm: TrainOpts) into *o: its
 * defaults, cmd_parse, then the checks they share. 0, 2 after a usage error, -1 after --help. */
int cmd_parse_opts(const CmdDef *d, int argc, char **argv, TrainOpts *o);
/* the TrainOpts options more than one JIT command takes, for their tables */
#define CMD_OPT_BATCH(what) {"--batch", NULL, ARG_INT, "B", 1, 1 << 20, offsetof(TrainOpts, batch), what}
#define CMD_OPT_THREADS {"--threads", NULL, ARG_INT, "T", 1, 1024, offsetof(TrainOpts, threads), "threads (default: all cores)"}
#define CMD_OPT_NO_CACHE {"--no-cache", NULL, ARG_FLAG, NULL, 0, 0, offsetof(TrainOpts, no_cache), \
                          "compile afresh, bypassing the compile cache (~/.cache/teslac)"}
#define CMD_OPT_WEIGHTS(what) {"--weights", NULL, ARG_STR, "CKPT", 0, 0, offsetof(TrainOpts, weights), what, true}
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
