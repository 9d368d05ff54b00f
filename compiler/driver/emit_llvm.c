/* emit_llvm.c: `teslac emit-llvm`: the specialized LLVM IR of a spec (train step, gradient,
 * inference), as emitted or after O3 for this CPU, on standard output or into -o FILE. */
#include "cmd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const CmdOpt emit_opts[] = {
    {"--optimized", "-O", ARG_FLAG, NULL, 0, 0, offsetof(TrainOpts, optimized), "link the kernels and run O3 for this CPU"},
    {"-o", NULL, ARG_STR, "FILE", 0, 0, offsetof(TrainOpts, out), "write the IR to FILE (atomically) instead of standard output"},
    CMD_OPT_BATCH("the batch the functions compute (default: train.batch)"),
    {"--backward", NULL, ARG_FLAG, NULL, 0, 0, offsetof(TrainOpts, backward), "accepted for old scripts: train_step always holds the backward"},
    {NULL}};

const CmdDef cmd_emit_llvm = {
    .name = "emit-llvm", .args = "SPEC [-O] [-o FILE] [--batch B]",
    .summary = "the specialized LLVM IR (train step, gradient and inference)",
    .about = "Print the LLVM IR teslac generates for SPEC: <name>_train_step (forward, loss, backward,\n"
             "optimizer), <name>_grad (the same without the optimizer) and <name>_infer. Kernels are\n"
             "calls until --optimized links them and runs O3 for this CPU.",
    CMD_POS_SPEC(TrainOpts),
    .opts = emit_opts,
    .quiet = "the IR only (no effect: it is the output)",
    .verbose = "also the CPU of -O's O3, on standard error",
    .run = emit_llvm_main};

/* teslac emit-llvm SPEC [-O] [-o FILE] [--batch B]: the specialized module as LLVM IR text */
int emit_llvm_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts(&cmd_emit_llvm, argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  const char *spec = o.spec;
  bool optimized = o.optimized;
  int64_t batch = o.batch;
  Ctx cx;
  Spec sp;
  Plan pl;
  rc = 1;
  if (tesla_front_file(&cx, spec, &sp) < 0 || !emit_supported(&cx, &sp)) goto out;
  const CmdFile role_in[] = {{o.spec, "spec"}};
  const CmdFile role_out[] = {{o.out, "IR file"}};
  if (o.out && (cmd_check_roles(role_in, 1, role_out, 1, -1, -1) < 0 || cmd_check_output(o.out, "IR file") < 0)) goto out;
  plan_spec(&cx, &sp, batch ? batch : sp.train.batch, &pl);
  if (cx.nerrors) goto out;
  Cg g;
  cg_init(&g, sp.name);
  emit_module(&g, &sp, &pl);
  if (optimized) {
    LLVMTargetMachineRef tm = cg_host_machine(&cx);
    if (!tm || cg_optimize(&cx, &g, tm) < 0) {
      if (tm) LLVMDisposeTargetMachine(tm);
      cg_dispose(&g);
      goto out;
    }
    if (cmd_verbosity > 0) {
      char *cpu = LLVMGetTargetMachineCPU(tm);
      fprintf(stderr, "O3 for CPU %s\n", cpu);
      LLVMDisposeMessage(cpu);
    }
    LLVMDisposeTargetMachine(tm);
  }
  char *ir = LLVMPrintModuleToString(g.mod);
  rc = 0;
  if (o.out) {
    TsOut f;
    TsErr e;
    if (ts_out_open(&f, o.out, &e) < 0 || ts_out_write(&f, ir, strlen(ir), &e) < 0 || ts_out_finish(&f, &e) < 0 ||
        ts_out_commit(&f, &e) < 0) {
      fprintf(stderr, "teslac: %s\n", e.msg);
      rc = 1;
    }
  } else if (fputs(ir, stdout) < 0 || fflush(stdout) != 0) {
    fprintf(stderr, "teslac: writing the IR failed: %s\n", strerror(errno));
    rc = 1;
  }
  LLVMDisposeMessage(ir);
  cg_dispose(&g);
out:
  ctx_free(&cx);
  return rc;
}
