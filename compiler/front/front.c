/* front.c: the front end as one call, load -> parse -> check, shared by the driver, the tests
 * and the fuzz target. Checking runs even after parse errors: layers with errors of their own
 * are skipped, so the user gets every shape problem of the layers that did parse. */
#include "teslac.h"

int tesla_front(Ctx *cx, Spec *sp) {
  YNode *root = yaml_load(cx);
  if (!root) return -1;
  spec_parse(cx, root, sp);
  check_spec(cx, sp);
  return cx->nerrors ? -1 : 0;
}

int tesla_front_file(Ctx *cx, const char *path, Spec *sp) {
  ctx_init(cx, path, stderr);
  if (ctx_read_file(cx) < 0) return -1;
  return tesla_front(cx, sp);
}
