/* emit_llvm.c: `teslac emit-llvm`: the specialized LLVM IR of a spec (train step, gradient,
 * inference), as emitted or after O3 for this CPU. */
#include "cmd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* teslac emit-llvm SPEC [--optimized] [--batch B]: the specialized module as LLVM IR text */
int emit_llvm_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts("emit-llvm", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  const char *spec = o.spec;
  bool optimized = o.optimized;
  int64_t batch = o.batch;
  Ctx cx;
  Spec sp;
  Plan pl;
  rc = 1;
  if (tesla_front_file(&cx, spec, &sp) < 0 || !emit_supported(&cx, &sp)) goto out;
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
    LLVMDisposeTargetMachine(tm);
  }
  char *ir = LLVMPrintModuleToString(g.mod);
  fputs(ir, stdout);
  LLVMDisposeMessage(ir);
  cg_dispose(&g);
  rc = 0;
out:
  ctx_free(&cx);
  return rc;
}
