/* classify.c: the test set through a model compiled by `teslac build` into an object file.
 *
 *   classify [DATA_DIR]     (default: the data_dir meson option)
 *
 * Reads DATA_DIR/t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz, scales the pixels as
 * the spec's data.scale says, runs model_infer (NAME_infer) over every image in chunks and
 * prints a few predictions, the accuracy per class and the test accuracy, which is what
 * `teslac eval SPEC --weights CKPT` prints for the same weights.
 *
 * Needs nothing but the object, libc, libm and zlib (to read the .gz files): the weights are in
 * the object, and the only working memory is one scratch buffer, here a static array. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "idx.h"


static const char *const fashion_names[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static const char *class_name(int k) {
  static char buf[16];
  if (MODEL_CLASSES == 10) return fashion_names[k];
  snprintf(buf, sizeof buf, "class %d", k);
  return buf;
}

/* images per model_infer call: any n >= 1 works; a few batches at a time keeps x and y small */
#define CHUNK (8 * MODEL_BATCH)

/* The one buffer the model works in: MODEL_ACTIVATIONS_SIZE bytes, MODEL_ALIGNMENT-aligned
 * (static, on the stack or aligned_alloc: the code allocates nothing itself). */
static _Alignas(MODEL_ALIGNMENT) unsigned char scratch[MODEL_ACTIVATIONS_SIZE];
static float x[CHUNK * MODEL_INPUT_SIZE], y[CHUNK * MODEL_OUTPUT_SIZE];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : DATA_DIR;
  if (argc > 2 || (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
    fprintf(stderr, "usage: %s [DATA_DIR]   (default %s)\n", argv[0], DATA_DIR);
    return 2;
  }
  char ip[4096], lp[4096];
  snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte.gz", dir);
  snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte.gz", dir);
  idx_file im, lb;
  if (idx_read(ip, &im) < 0 || idx_read(lp, &lb) < 0) return 1;
  if (im.item != MODEL_INPUT_SIZE) {
    fprintf(stderr, "%s: %zu values per image, the model takes %d\n", ip, im.item, MODEL_INPUT_SIZE);
    return 1;
  }
  if (lb.count != im.count || lb.item != 1) {
    fprintf(stderr, "%s: %zu labels for %zu images\n", lp, lb.count, im.count);
    return 1;
  }
  printf("model %s: %d inputs, %d classes; weights %d bytes in the object, scratch %d bytes\n", MODEL_NAME,
         MODEL_INPUT_SIZE, MODEL_CLASSES, MODEL_WEIGHTS_SIZE, MODEL_ACTIVATIONS_SIZE);

  const float scale = (float)(DATA_SCALE);
  size_t correct = 0, seen[MODEL_CLASSES] = {0}, right[MODEL_CLASSES] = {0};
  double t0 = now();
  for (size_t at = 0; at < im.count; at += CHUNK) {
    int n = im.count - at < CHUNK ? (int)(im.count - at) : CHUNK;
    const unsigned char *px = im.data + at * MODEL_INPUT_SIZE;
    for (size_t i = 0; i < (size_t)n * MODEL_INPUT_SIZE; i++) x[i] = (float)px[i] / scale;
    model_infer(x, y, n, scratch);   /* y: n rows of MODEL_OUTPUT_SIZE softmax probabilities */
    for (int b = 0; b < n; b++) {
      const float *p = y + (size_t)b * MODEL_OUTPUT_SIZE;
      int best = 0, label = lb.data[at + b];
      for (int k = 1; k < MODEL_CLASSES; k++)
        if (p[k] > p[best]) best = k;
      if (label >= MODEL_CLASSES) {
        fprintf(stderr, "%s: label %d of image %zu is not below %d\n", lp, label, at + b, MODEL_CLASSES);
        return 1;
      }
      seen[label]++;
      if (best == label) correct++, right[label]++;
      if (at + b < 8)
        printf("  image %zu: %-11s %5.1f%%   (label %s)%s\n", at + b, class_name(best), 100.0 * p[best],
               class_name(label), best == label ? "" : "  wrong");
    }
  }
  double dt = now() - t0;
  printf("per class:\n");
  for (int k = 0; k < MODEL_CLASSES; k++)
    printf("  %-11s %6.2f%%  (%zu/%zu)\n", class_name(k), seen[k] ? 100.0 * right[k] / seen[k] : 0.0, right[k],
           seen[k]);
  printf("test accuracy %.4f  (%zu/%zu correct; %.3f s, %.0f images/s, one thread)\n",
         (double)correct / (double)im.count, correct, im.count, dt, (double)im.count / dt);
  free(im.data);
  free(lb.data);
  return 0;
}
