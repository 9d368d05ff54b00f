/*
 * fw_main.c: the Cortex-M4 firmware's main. The inputs are compiled in (inputs.c, written by
 * gen_inputs.sh from a raw float32 file: fw_inputs, fw_inputs_count, fw_n); main runs
 * <name>_infer over them in chunks of at most <NAME>_BATCH samples with a static scratch
 * block aligned to <NAME>_ALIGNMENT (in the 16 MB PSRAM, section .psram) and prints, through
 * semihosting, one line per sample:
 *
 *   y 3dcccccd 3e4ccccd ...        <NAME>_OUTPUT_SIZE words: the uint32 bits of each float
 *
 * (hex bits: the host compares them exactly, with no float formatting in between), then
 * `done N`. Built like run_infer.c: -DMODEL_H='"seed.h"' -DMODEL=seed -DMODEL_UC=SEED. Scratch
 * and outputs are first filled with SCRATCH_FILL bytes (default 0xff, NaNs), as run_infer.c
 * does. Returns (QEMU's exit status) 0; 4 when inputs.c does not hold fw_n whole samples; 5
 * when the scratch block is not aligned.
 */
#include <stdint.h>
#include <string.h>

#include "../model_abi.h"

#include "semihost.h"

#define SCRATCH_BYTES ((M_ACTIVATIONS_SIZE) > 0 ? (M_ACTIVATIONS_SIZE) : 1)
#define SCRATCH_ALIGN ((M_ALIGNMENT) > 8 ? (M_ALIGNMENT) : 8)

extern const float fw_inputs[];
extern const int fw_inputs_count, fw_n;

static unsigned char scratch[SCRATCH_BYTES]
    __attribute__((aligned(SCRATCH_ALIGN), section(".psram")));
static float y[(M_BATCH) * (M_OUTPUT_SIZE)] __attribute__((aligned(16), section(".psram")));

static void put_u32(const char *prefix, uint32_t v) {
  char b[9];
  int i;
  for (i = 7; i >= 0; i--, v >>= 4) b[i] = "0123456789abcdef"[v & 15];
  b[8] = 0;
  sh_puts(prefix);
  sh_puts(b);
}

static void put_dec(unsigned long v) {
  char b[12];
  int i = 11;
  b[i] = 0;
  do b[--i] = (char)('0' + v % 10); while ((v /= 10) && i);
  sh_puts(b + i);
}

int main(void) {
  const int in_size = M_INPUT_SIZE, out_size = M_OUTPUT_SIZE, batch = M_BATCH;
  int i, r, k;

  sh_puts("# fw: ");
  sh_puts(MODEL_H);
  sh_puts(" n ");
  put_dec((unsigned long)fw_n);
  sh_puts(" batch ");
  put_dec((unsigned long)batch);
  sh_puts("\n");
  if (fw_n < 1 || fw_inputs_count != fw_n * in_size) {
    sh_puts("fw: inputs.c holds ");
    put_dec((unsigned long)fw_inputs_count);
    sh_puts(" floats, not fw_n samples of the model's input\n");
    return 4;
  }
  if ((uintptr_t)scratch % (uintptr_t)(M_ALIGNMENT)) {
    sh_puts("fw: scratch block not aligned\n");
    return 5;
  }
  memset(scratch, SCRATCH_FILL, sizeof scratch);
  for (i = 0; i < fw_n; i += batch) {
    int rows = fw_n - i < batch ? fw_n - i : batch;
    memset(y, SCRATCH_FILL, sizeof y);
    M_INFER(fw_inputs + (size_t)i * (size_t)in_size, y, rows, scratch);
    for (r = 0; r < rows; r++) {
      for (k = 0; k < out_size; k++) {
        uint32_t u;
        memcpy(&u, &y[r * out_size + k], 4);
        put_u32(k ? " " : "y ", u);
      }
      sh_puts("\n");
    }
  }
  sh_puts("done ");
  put_dec((unsigned long)fw_n);
  sh_puts("\n");
  return 0;
}
