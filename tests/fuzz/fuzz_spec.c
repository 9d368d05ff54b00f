/* fuzz_spec.c: the libFuzzer target for teslac's front end. Each input is a spec's bytes; it
 * runs load -> parse -> check (tesla_front) and, when that succeeds, the planner at the spec's
 * batch, the way `teslac plan` does. Diagnostics go to /dev/null. Any crash, sanitizer report,
 * leak or hang is a bug: the front end must answer every input with a diagnostic.
 * Build and run: tests/fuzz/run.sh [SECONDS]. */
#include "teslac.h"

#include <stdint.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (!devnull) devnull = fopen("/dev/null", "w");
  Ctx cx;
  Spec sp;
  ctx_init(&cx, "fuzz/spec.yaml", devnull);
  ctx_set_source(&cx, (const char *)data, size);
  if (tesla_front(&cx, &sp) == 0) {
    Plan pl;
    plan_spec(&cx, &sp, sp.train.batch, &pl);
    if (!cx.nerrors) {
      plan_print_json(&cx, &sp, &pl, devnull);
      plan_print_table(&cx, &sp, &pl, devnull);
      check_print_table(&cx, &sp, devnull);
    }
  }
  ctx_free(&cx);
  return 0;
}
