/* rt_progress.c: the live training progress bar drawn by `teslac train` while an epoch runs.
 * It draws only when stdout is a terminal (a log file or a pipe gets nothing from here; the
 * driver prints its own per-epoch lines), redraws at most 10 times a second so that calling
 * it every step costs one clock read, rewrites the same line with "\r" and a clear-line code,
 * fits the line to the terminal's width, and clears it at the end of the epoch. Rates and
 * ETA are measured here from ts_now (CLOCK_MONOTONIC, in rt_core.c). */
#define _GNU_SOURCE
#include "tesla_rt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define REDRAW_S 0.1
#define BAR_WIDTH 24

void ts_progress_begin(TsProgress *p, int epoch, int epochs, size_t total) {
  p->tty = isatty(STDOUT_FILENO) == 1;
  p->epoch = epoch;
  p->epochs = epochs;
  p->total = total;
  p->t0 = ts_now();
  p->last_draw = -1e300;   // draw the first update
}

static void fmt_duration(char *buf, size_t n, double s) {
  if (!(s >= 0) || s > 99 * 3600.0) {
    snprintf(buf, n, "--:--");
    return;
  }
  long t = lround(s);
  if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void ts_progress_update(TsProgress *p, size_t done, double loss) {
  if (!p->tty) return;
  double now = ts_now();
  if (now - p->last_draw < REDRAW_S && done < p->total) return;
  p->last_draw = now;

  if (done > p->total) done = p->total;
  double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
  int fill = p->total ? (int)((double)done / (double)p->total * BAR_WIDTH) : BAR_WIDTH;
  char bar[BAR_WIDTH + 1];
  for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
  bar[BAR_WIDTH] = 0;
  char eta[32];
  fmt_duration(eta, sizeof eta, rate > 0 ? (double)(p->total - done) / rate : -1);

  char line[256];
  int len = snprintf(line, sizeof line, "epoch %d/%d [%s] %zu/%zu  %.0f samples/s  loss %.4f  "
                     "ETA %s", p->epoch, p->epochs, bar, done, p->total, rate, loss, eta);
  if (len < 0) return;
  if ((size_t)len >= sizeof line) len = sizeof line - 1;
  struct winsize ws;
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 && len >= ws.ws_col)
    len = ws.ws_col - 1;   // never wrap: a wrapped line cannot be redrawn with \r
  printf("\r\033[K%.*s", len, line);
  fflush(stdout);
}

void ts_progress_end(TsProgress *p) {
  if (!p->tty) return;
  printf("\r\033[K");
  fflush(stdout);
}
