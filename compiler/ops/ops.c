/* ops.c: the op registry that ops.def expands into, and the small shape helpers every op
 * uses. Looking an op up by its spec name goes through here, so spec.c never lists ops. */
#include "teslac.h"

#include <string.h>

const OpDef *const op_registry[OP_COUNT] = {
#define OP(id, name, def) [OP_##id] = &def,
#include "ops.def"
#undef OP
};

static const char *const names[OP_COUNT + 1] = {
#define OP(id, name, def) name,
#include "ops.def"
#undef OP
    NULL};

_Static_assert(sizeof names / sizeof *names == OP_COUNT + 1, "ops.def and the registry disagree");

const OpDef *op_find(const char *name) {
  for (int i = 0; i < OP_COUNT; i++)
    if (!strcmp(op_registry[i]->name, name)) return op_registry[i];
  return NULL;
}

const char *const *op_names(void) { return names; }

int64_t shape_elems(const Shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->d[i];   /* checked when the shape was made */
  return n;
}

char *shape_str(Ctx *cx, const Shape *s, bool with_batch) {
  char buf[128];
  int n = snprintf(buf, sizeof buf, "(%s", with_batch ? "N" : "");
  for (int i = 0; i < s->rank; i++)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%lld", (i || with_batch) ? ", " : "",
                  (long long)s->d[i]);
  snprintf(buf + n, sizeof buf - (size_t)n, ")");
  return arena_strndup(cx, buf, strlen(buf));
}
