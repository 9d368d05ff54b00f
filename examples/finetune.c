/* finetune.c: go on training a model compiled by `teslac build --train-step`, in the program.
 *
 *   finetune [-s STEPS] [-e EVERY] [-n NEW] [-l LR] [-o OUT.safetensors] [DATA_DIR]
 *
 * The scenario: the model was trained on the training set, then labelled images it has never
 * seen arrive, here the first NEW (default 5000) images of the test set. The program starts
 * from the weights in the object (model_train_init), takes STEPS optimizer steps (default 300)
 * of the spec's optimizer on shuffled batches of the new images (model_train_step), prints the
 * mean loss of every EVERY steps (default 50), and reports the accuracy before and after on the
 * held-out rest of the test set (model_infer_weights on model_train_weights(state)). -l LR
 * trains at LR instead of the spec's learning rate (model_train_step_lr). -o writes the
 * fine-tuned weights as a safetensors checkpoint that `teslac eval`, `teslac build` and PyTorch
 * read (model_save: needs the runtime, HAVE_TESLA_RT). The whole test set's accuracy is printed
 * too, since that is what `teslac eval` reports for the saved file (the new images included).
 *
 * Memory: a training state of MODEL_TRAIN_STATE_SIZE bytes (step count, weights, gradients,
 * optimizer state) and two scratch buffers, all MODEL_ALIGNMENT-aligned, allocated here once. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "idx.h"


static void *alloc_aligned(size_t n) {   /* aligned_alloc wants a multiple of the alignment */
  void *p = aligned_alloc(MODEL_ALIGNMENT, (n + MODEL_ALIGNMENT - 1) / MODEL_ALIGNMENT * MODEL_ALIGNMENT);
  if (!p) fprintf(stderr, "finetune: out of memory (%zu bytes)\n", n);
  return p;
}

/* images [from, from + count) through the weights image w: how many are right */
static size_t correct_of(const void *w, const unsigned char *img, const unsigned char *lab, size_t from, size_t count,
                         float *x, float *y, int chunk, void *scratch) {
  const float scale = (float)(DATA_SCALE);
  size_t right = 0;
  for (size_t at = from; at < from + count; at += (size_t)chunk) {
    int n = from + count - at < (size_t)chunk ? (int)(from + count - at) : chunk;
    for (size_t i = 0; i < (size_t)n * MODEL_INPUT_SIZE; i++) x[i] = (float)img[at * MODEL_INPUT_SIZE + i] / scale;
    model_infer_weights(w, x, y, n, scratch);
    for (int b = 0; b < n; b++) {
      const float *p = y + (size_t)b * MODEL_OUTPUT_SIZE;
      int best = 0;
      for (int k = 1; k < MODEL_CLASSES; k++)
        if (p[k] > p[best]) best = k;
      right += best == lab[at + b];
    }
  }
  return right;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;   /* xorshift64: the same shuffles every run */
static uint32_t below(uint32_t n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)((rng >> 32) % n);
}

static int usage(const char *argv0) {
  fprintf(stderr, "usage: %s [-s STEPS] [-e EVERY] [-n NEW] [-l LR] [-o OUT.safetensors] [DATA_DIR]\n", argv0);
  return 2;
}

int main(int argc, char **argv) {
  long steps = 300, every = 50, nnew = 5000;
  float lr = 0;
  const char *out = NULL, *dir = DATA_DIR;
  for (int c; (c = getopt(argc, argv, "s:e:n:l:o:h")) != -1;) {
    if (c == 's') steps = atol(optarg);
    else if (c == 'e') every = atol(optarg);
    else if (c == 'n') nnew = atol(optarg);
    else if (c == 'l') lr = (float)atof(optarg);
    else if (c == 'o') out = optarg;
    else return usage(argv[0]);
  }
  if (optind < argc) dir = argv[optind++];
  if (optind < argc || steps < 1 || every < 1 || nnew < MODEL_BATCH || lr < 0) return usage(argv[0]);
#ifndef HAVE_TESLA_RT
  if (out) {
    fprintf(stderr, "finetune: built without the runtime (tesla_rt), so -o cannot save; see examples/README.md\n");
    return 2;
  }
#endif

  char ip[4096], lp[4096];
  snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte.gz", dir);
  snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte.gz", dir);
  idx_file im, lb;
  if (idx_read(ip, &im) < 0 || idx_read(lp, &lb) < 0) return 1;
  if (im.item != MODEL_INPUT_SIZE || lb.count != im.count || lb.item != 1) {
    fprintf(stderr, "finetune: %s and %s do not fit the model (%d values per image)\n", ip, lp, MODEL_INPUT_SIZE);
    return 1;
  }
  for (size_t i = 0; i < lb.count; i++)
    if (lb.data[i] >= MODEL_CLASSES) {
      fprintf(stderr, "%s: label %d of image %zu is not below %d\n", lp, lb.data[i], i, MODEL_CLASSES);
      return 1;
    }
  if ((size_t)nnew >= im.count) {
    fprintf(stderr, "finetune: -n %ld leaves no held-out images of %zu\n", nnew, im.count);
    return 2;
  }
  size_t held = im.count - (size_t)nnew;

  const int chunk = 8 * MODEL_BATCH;
  void *state = alloc_aligned(MODEL_TRAIN_STATE_SIZE);
  void *train_scratch = alloc_aligned(MODEL_TRAIN_ACTIVATIONS_SIZE);
  void *infer_scratch = alloc_aligned(MODEL_ACTIVATIONS_SIZE);
  float *x = malloc(sizeof(float) * (size_t)chunk * MODEL_INPUT_SIZE);
  float *y = malloc(sizeof(float) * (size_t)chunk * MODEL_OUTPUT_SIZE);
  float *bx = malloc(sizeof(float) * MODEL_BATCH * MODEL_INPUT_SIZE);
  int32_t *by = malloc(sizeof(int32_t) * MODEL_BATCH);
  uint32_t *order = malloc(sizeof(uint32_t) * (size_t)nnew);
  if (!state || !train_scratch || !infer_scratch || !x || !y || !bx || !by || !order) return 1;
  printf("model %s: training state %d bytes, step scratch %d bytes, inference scratch %d bytes; batch %d\n",
         MODEL_NAME, MODEL_TRAIN_STATE_SIZE, MODEL_TRAIN_ACTIVATIONS_SIZE, MODEL_ACTIVATIONS_SIZE, MODEL_BATCH);

  model_train_init(state);   /* the object's weights, a fresh optimizer */
  size_t before = correct_of(model_train_weights(state), im.data, lb.data, (size_t)nnew, held, x, y, chunk, infer_scratch);
  size_t before_all = before + correct_of(model_train_weights(state), im.data, lb.data, 0, (size_t)nnew, x, y, chunk,
                                          infer_scratch);
  printf("before: held-out accuracy %.4f  (%zu/%zu; test images %ld..%zu)\n", (double)before / (double)held, before,
         held, nnew, im.count - 1);
  printf("fine-tuning on test images 0..%ld: %ld steps of %d, learning rate %g\n", nnew - 1, steps, MODEL_BATCH,
         (double)(lr > 0 ? lr : MODEL_LR));

  const float scale = (float)(DATA_SCALE);
  size_t pos = (size_t)nnew;   /* position in the shuffled order; reshuffled at the end */
  double sum = 0;
  for (long s = 1; s <= steps; s++) {
    for (int b = 0; b < MODEL_BATCH; b++) {
      if (pos == (size_t)nnew) {   /* a new pass over the new images: Fisher-Yates */
        for (uint32_t i = 0; i < (uint32_t)nnew; i++) order[i] = i;
        for (uint32_t i = (uint32_t)nnew - 1; i > 0; i--) {
          uint32_t j = below(i + 1), t = order[i];
          order[i] = order[j], order[j] = t;
        }
        pos = 0;
      }
      uint32_t k = order[pos++];
      for (int i = 0; i < MODEL_INPUT_SIZE; i++)
        bx[(size_t)b * MODEL_INPUT_SIZE + i] = (float)im.data[(size_t)k * MODEL_INPUT_SIZE + i] / scale;
      by[b] = lb.data[k];
    }
    float loss = lr > 0 ? model_train_step_lr(state, bx, by, lr, train_scratch)
                        : model_train_step(state, bx, by, train_scratch);
    sum += loss;
    if (s % every == 0 || s == steps) {
      long w = s % every ? s % every : every;
      printf("step %5ld  loss %.4f  (mean of the last %ld)\n", s, sum / (double)w, w);
      fflush(stdout);
      sum = 0;
    }
  }

  const void *w = model_train_weights(state);   /* a weights image, as the object embeds one */
  size_t after = correct_of(w, im.data, lb.data, (size_t)nnew, held, x, y, chunk, infer_scratch);
  size_t after_all = after + correct_of(w, im.data, lb.data, 0, (size_t)nnew, x, y, chunk, infer_scratch);
  printf("after:  held-out accuracy %.4f  (%zu/%zu), %+.2f points\n", (double)after / (double)held, after, held,
         100.0 * ((double)after - (double)before) / (double)held);
  printf("whole test set (what teslac eval reports): before %.4f, after %.4f\n", (double)before_all / (double)im.count,
         (double)after_all / (double)im.count);
#ifdef HAVE_TESLA_RT
  if (out) {
    TsErr e;
    if (model_save(w, out, &e) < 0) {
      fprintf(stderr, "finetune: %s\n", e.msg);
      return 1;
    }
    printf("wrote %s\n", out);
  }
#endif
  free(im.data), free(lb.data), free(x), free(y), free(bx), free(by), free(order);
  free(state), free(train_scratch), free(infer_scratch);
  return 0;
}
