/* eval.c: `teslac eval`: test-set loss and accuracy of a checkpoint over every test sample,
 * and how fast inference ran (compile and loading excluded). */
#include "cmd.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


int eval_main(int argc, char **argv) {
  TrainOpts o;
  int rc = cmd_parse_opts("eval", argc, argv, &o);
  if (rc) return rc < 0 ? 0 : rc;
  Ctx cx;
  Model m = {0};
  TsDataset te = {0};
  rc = 1;
  TsErr e;
  if (tesla_front_file(&cx, o.spec, &m.sp) < 0) goto out;
  if (cmd_load_split(&cx, &m.sp, m.sp.data.test_images, m.sp.data.test_labels, "test", &te) < 0) goto out;
  if (model_build(&cx, &m, o.batch ? o.batch : m.sp.train.batch, o.threads, false) < 0) goto out;
  if (model_load(&cx, &m, o.weights, false, NULL, &e) < 0) {
    fprintf(stderr, "teslac: %s\n", e.msg);
    goto out;
  }
  double loss, acc, t0 = ts_now();
  model_eval(&m, &te, &loss, &acc);
  double dt = ts_now() - t0;   /* the generated <name>_infer over the set, batches copied in */
  printf("test loss %.4f  test accuracy %.4f  (%zu samples in %.3f s: %.0f samples/s)\n", loss, acc, te.count,
         dt, (double)te.count / dt);
  rc = 0;
out:
  model_free(&m);
  ts_dataset_free(&te);
  ctx_free(&cx);
  return rc;
}
