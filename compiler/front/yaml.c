/* yaml.c: the first stage of the pipeline. It turns the spec's bytes into a small tree of
 * scalars, sequences and maps, each node carrying the line and column libyaml's start_mark
 * gave it (which count from 0: we add 1). It builds the tree from libyaml's event stream with
 * an explicit stack rather than libyaml's recursive document loader, so that a hostile file
 * (deep nesting, aliases that fan out) cannot blow the stack or the memory. A syntax error is
 * reported at libyaml's problem mark with its own words. */
#include "teslac.h"

#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 64

static SrcLoc mark_loc(yaml_mark_t m, yaml_mark_t end) {
  SrcLoc l = {(int)m.line + 1, (int)m.column + 1, 1};
  if (end.line == m.line && end.column > m.column) l.len = (int)(end.column - m.column);
  return l;
}

typedef struct Frame { YNode *node; YNode **items; int n, cap; } Frame;

static void push_kid(Ctx *cx, Frame *f, YNode *kid) {
  if (f->n == f->cap) {
    int cap = f->cap ? f->cap * 2 : 8;
    YNode **items = arena_alloc(cx, sizeof(YNode *) * (size_t)cap);
    if (f->n) memcpy(items, f->items, sizeof(YNode *) * (size_t)f->n);
    f->items = items, f->cap = cap;
  }
  f->items[f->n++] = kid;
}

/* A NUL byte or bytes that are not UTF-8 would get libyaml's terse message; say it plainly. */
static bool check_text(Ctx *cx) {
  if (cx->srclen == 0) return true;
  const char *nul = memchr(cx->src, '\0', cx->srclen);
  if (!nul) return true;
  const unsigned char *u = (const unsigned char *)cx->src;
  if (cx->srclen >= 4 && ((u[0] == 0xff && u[1] == 0xfe && !u[2] && !u[3]) || (!u[0] && !u[1] && u[2] == 0xfe && u[3] == 0xff))) {
    diag_at(cx, (SrcLoc){0}, "this file is UTF-32 text; save the spec as UTF-8");
    return false;
  }
  if (cx->srclen >= 2 && ((u[0] == 0xff && u[1] == 0xfe) || (u[0] == 0xfe && u[1] == 0xff))) {
    diag_at(cx, (SrcLoc){0}, "this file is UTF-16 text; save the spec as UTF-8");
    return false;
  }
  int line = 1, col = 1;
  for (const char *p = cx->src; p < nul; p++) {
    if (*p == '\n') line++, col = 1;
    else if (((unsigned char)*p & 0xc0) != 0x80) col++;
  }
  diag_at(cx, (SrcLoc){line, col, 1}, "this is not a text file (NUL byte at offset %zu); a spec is a YAML text file",
          (size_t)(nul - cx->src));
  return false;
}

/* The line and column of byte `off` of the source (columns count characters, as libyaml). */
static SrcLoc offset_loc(Ctx *cx, size_t off) {
  SrcLoc l = {1, 1, 1};
  for (size_t i = 0; i < off && i < cx->srclen; i++) {
    unsigned char c = (unsigned char)cx->src[i];
    if (c == '\n') l.line++, l.col = 1;
    else if ((c & 0xc0) != 0x80) l.col++;
  }
  return l;
}

/* libyaml's words for a syntax error, with a plainer version of the ones users meet most:
 * a tab in the indentation, an unclosed [ or {, a line indented wrongly. */
static void report_syntax(Ctx *cx, yaml_parser_t *p) {
  SrcLoc l = {(int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1, 1};
  SrcLoc ctx = {(int)p->context_mark.line + 1, (int)p->context_mark.column + 1, 1};
  const char *problem = p->problem ? p->problem : "malformed input";
  const char *context = p->context ? p->context : "";
  if (p->error == YAML_READER_ERROR) {
    /* the reader reports a byte offset, not a line; for a bad trailing byte, the offset past
     * the sequence's lead byte: point at the lead, where the bad character starts */
    size_t off = p->problem_offset;
    if (strstr(problem, "trailing"))
      while (off > 0 && off <= cx->srclen && ((unsigned char)cx->src[off - 1] & 0xc0) == 0x80) off--;
    if (strstr(problem, "trailing") && off > 0 && off <= cx->srclen &&
        ((unsigned char)cx->src[off - 1] & 0xc0) == 0xc0)
      off--;
    if (strstr(problem, "control characters")) {   /* valid UTF-8, but a byte YAML does not take */
      unsigned c = off < cx->srclen ? (unsigned char)cx->src[off] : 0;
      diag_at(cx, offset_loc(cx, off), "a control character (byte 0x%02x) at byte %zu; YAML takes no control "
              "characters but tab and line breaks", c, off);
      return;
    }
    diag_at(cx, offset_loc(cx, off), "not valid UTF-8 text (%s at byte %zu); a spec is a UTF-8 "
            "text file", problem, off);
    return;
  }
  if (p->problem_mark.index < cx->srclen && cx->src[p->problem_mark.index] == '\t' &&
      strstr(problem, "cannot start any token")) {
    diag_at(cx, l, "YAML syntax error: a tab character; YAML indents with spaces only");
    return;
  }
  bool flow_seq = strstr(context, "flow sequence") != NULL, flow_map = strstr(context, "flow mapping") != NULL;
  if ((flow_seq || flow_map) && strstr(problem, "did not find expected")) {
    diag_at(cx, ctx, "YAML syntax error: this '%c' is not closed: expected ',' or '%c' at line %d, "
            "column %d", flow_seq ? '[' : '{', flow_seq ? ']' : '}', l.line, l.col);
    return;
  }
  if (strstr(context, "block mapping") && strstr(problem, "did not find expected key")) {
    if (l.col != ctx.col)
      diag_at(cx, l, "YAML syntax error: bad indentation: this line starts at column %d, but the "
              "map it continues (from line %d) has its keys at column %d", l.col, ctx.line, ctx.col);
    else
      diag_at(cx, l, "YAML syntax error: expected a key ('key: value') here, as in the map from "
              "line %d; is the indentation off?", ctx.line);
    return;
  }
  if (strstr(context, "block collection") && strstr(problem, "expected '-' indicator")) {
    diag_at(cx, l, "YAML syntax error: expected a list item ('- ...') here, as in the list from "
            "line %d; is the indentation off?", ctx.line);
    return;
  }
  if (strstr(problem, "mapping values are not allowed")) {
    diag_at(cx, l, "YAML syntax error: a ':' that cannot start a value here; is this line indented "
            "too far, or does a value with ': ' need quotes?");
    return;
  }
  if (p->context)
    diag_at(cx, l, "YAML syntax error: %s (%s at line %d)", problem, context, ctx.line);
  else
    diag_at(cx, l, "YAML syntax error: %s", problem);
}

/* A YAML tag: !!str makes a scalar a string (as quotes would); the core schema's own types are
 * what the value is read as anyway; any other tag (!!python/object:..., !custom) is refused
 * rather than silently ignored. false after a diagnostic. */
static bool check_tag(Ctx *cx, const yaml_char_t *tag, SrcLoc loc, bool *as_string) {
  if (!tag) return true;
  static const char core[] = "tag:yaml.org,2002:";
  const char *t = (const char *)tag;
  if (!strncmp(t, core, sizeof core - 1)) {
    const char *k = t + sizeof core - 1;
    if (!strcmp(k, "str")) {
      if (as_string) *as_string = true;
      return true;
    }
    if (!strcmp(k, "int") || !strcmp(k, "float") || !strcmp(k, "bool") || !strcmp(k, "null") || !strcmp(k, "map") ||
        !strcmp(k, "seq"))
      return true;
    diag_at(cx, loc, "the YAML tag '!!%s' is not supported in a spec; remove it", k);
    return false;
  }
  diag_at(cx, loc, "the YAML tag '%s' is not supported in a spec; remove it", t);
  return false;
}

YNode *yaml_load(Ctx *cx) {
  if (!check_text(cx)) return NULL;
  yaml_parser_t p;
  if (!yaml_parser_initialize(&p)) {
    diag_at(cx, (SrcLoc){0}, "out of memory starting the YAML parser");
    return NULL;
  }
  yaml_parser_set_input_string(&p, (const unsigned char *)cx->src, cx->srclen);

  Frame stack[MAX_DEPTH + 1];
  int depth = 0;
  YNode *root = NULL;
  int ndocs = 0;
  bool ok = true, done = false;

  while (ok && !done) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&p, &ev)) {
      report_syntax(cx, &p);
      ok = false;
      break;
    }
    YNode *node = NULL;
    switch (ev.type) {
    case YAML_STREAM_END_EVENT:
      done = true;
      break;
    case YAML_DOCUMENT_START_EVENT:
      if (++ndocs > 1) {
        diag_at(cx, mark_loc(ev.start_mark, ev.end_mark),
                "a spec is one YAML document; this file has another one here");
        ok = false;
      }
      break;
    case YAML_ALIAS_EVENT:
      diag_at(cx, mark_loc(ev.start_mark, ev.end_mark),
              "YAML aliases (*%s) are not supported in a spec; write the value out",
              (const char *)ev.data.alias.anchor);
      ok = false;
      break;
    case YAML_SCALAR_EVENT:
      node = arena_alloc(cx, sizeof *node);
      node->kind = Y_SCALAR;
      node->loc = mark_loc(ev.start_mark, ev.end_mark);
      node->str = arena_strndup(cx, (const char *)ev.data.scalar.value, ev.data.scalar.length);
      node->len = ev.data.scalar.length;
      node->quoted = ev.data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                     ev.data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE ||
                     ev.data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
                     ev.data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
      if (!check_tag(cx, ev.data.scalar.tag, node->loc, &node->quoted)) ok = false;
      if (ev.data.scalar.length > 0 && memchr(node->str, '\0', node->len)) {
        diag_at(cx, node->loc, "a NUL character inside a string");
        ok = false;
      }
      break;
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
      if (depth == MAX_DEPTH) {
        diag_at(cx, mark_loc(ev.start_mark, ev.end_mark), "nested more than %d levels deep",
                MAX_DEPTH);
        ok = false;
        break;
      }
      YNode *n = arena_alloc(cx, sizeof *n);
      bool seq = ev.type == YAML_SEQUENCE_START_EVENT;
      n->kind = seq ? Y_SEQ : Y_MAP;
      n->loc = mark_loc(ev.start_mark, ev.end_mark);
      if (!check_tag(cx, seq ? ev.data.sequence_start.tag : ev.data.mapping_start.tag, n->loc, NULL)) ok = false;
      n->flow = seq ? ev.data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE
                    : ev.data.mapping_start.style == YAML_FLOW_MAPPING_STYLE;
      stack[depth++] = (Frame){n, NULL, 0, 0};
      break;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
      Frame f = stack[--depth];
      /* a flow collection on one line: underline it up to its closing bracket */
      if (f.node->flow && (int)ev.end_mark.line + 1 == f.node->loc.line &&
          (int)ev.end_mark.column + 1 > f.node->loc.col)
        f.node->loc.len = (int)ev.end_mark.column + 1 - f.node->loc.col;
      f.node->kids = f.items;
      f.node->nkids = f.n;
      node = f.node;
      break;
    }
    default:
      break;
    }
    yaml_event_delete(&ev);
    if (node) {
      if (depth > 0) push_kid(cx, &stack[depth - 1], node);
      else root = node;
    }
  }
  yaml_parser_delete(&p);
  if (!ok) return NULL;
  if (!root) {
    diag_at(cx, (SrcLoc){0}, "the spec is empty; it should be a map with at least 'tesla', "
                             "'input' and 'layers'");
    return NULL;
  }
  return root;
}
