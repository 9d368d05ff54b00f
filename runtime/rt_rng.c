/* rt_rng.c: deterministic random numbers for initialization, dropout and shuffling. A PCG32
 * generator (O'Neill's pcg32_random_r: 64-bit LCG state, XSH-RR output) seeded by a (seed,
 * stream) pair, so that each consumer (weights, shuffling, ...) gets its own independent,
 * reproducible stream. Everything is integer arithmetic defined to the bit, so the integer
 * streams are identical on every machine; floats are built from those bits (uniform: top 24
 * bits; normal: Box-Muller in double, which can differ in the last ulp between libms). */
#include "tesla_rt.h"

#include <math.h>

#define PCG_MULT 6364136223846793005ULL

void ts_rng_seed(TsRng *r, uint64_t seed, uint64_t stream) {
  // pcg32_srandom_r
  r->state = 0;
  r->inc = (stream << 1) | 1u;
  ts_rng_u32(r);
  r->state += seed;
  ts_rng_u32(r);
}

uint32_t ts_rng_u32(TsRng *r) {
  uint64_t old = r->state;
  r->state = old * PCG_MULT + r->inc;
  uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
  uint32_t rot = (uint32_t)(old >> 59);
  return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

/* pcg32_boundedrand_r: reject the few values below 2^32 mod n, so every residue is equally
 * likely. n == 0 has no valid answer; we return 0 rather than divide by zero. */
uint32_t ts_rng_below(TsRng *r, uint32_t n) {
  if (n == 0) return 0;
  uint32_t threshold = -n % n;
  for (;;) {
    uint32_t v = ts_rng_u32(r);
    if (v >= threshold) return v % n;
  }
}

float ts_rng_uniform(TsRng *r) {
  return (float)(ts_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

/* dst[i] = (2 u - 1) * scale for n uniform u: the same values, bit for bit, as n calls of
 * (float)((2 * ts_rng_uniform(r) - 1) * scale) (2u - 1 is a float, the product a double).
 * The LCG jumps ahead: eight lanes hold the states of eight consecutive draws and each steps
 * eight draws at a time (state * A^8 + C_8), so the chain of dependent multiplies that made
 * initializing mlp's 1.9 M weights take 14 ms through the calls is eight chains. */
static inline float pcg_uniform(uint64_t old) {
  uint32_t x = (uint32_t)(((old >> 18) ^ old) >> 27), rot = (uint32_t)(old >> 59);
  return (float)(((x >> rot) | (x << ((-rot) & 31))) >> 8) * (1.0f / 16777216.0f);
}

void ts_rng_uniform_fill(TsRng *r, float *dst, int64_t n, double scale) {
  uint64_t st[8], a8 = 1, c8 = 0;
  st[0] = r->state;
  for (int j = 1; j < 8; j++) st[j] = st[j - 1] * PCG_MULT + r->inc;
  for (int j = 0; j < 8; j++) a8 *= PCG_MULT, c8 = c8 * PCG_MULT + r->inc;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) {
      dst[i + j] = (float)((double)(2 * pcg_uniform(st[j]) - 1) * scale);
      st[j] = st[j] * a8 + c8;
    }
  r->state = st[0];   /* the state of draw i */
  for (; i < n; i++) {
    dst[i] = (float)((double)(2 * pcg_uniform(r->state) - 1) * scale);
    r->state = r->state * PCG_MULT + r->inc;
  }
}

/* Box-Muller, one value per call (no cached second value: the state stays two words, and a
 * copy of the generator replays exactly). u1 is in (0, 1] so the log is finite. */
float ts_rng_normal(TsRng *r) {
  double u1 = ((double)(ts_rng_u32(r) >> 8) + 1.0) * (1.0 / 16777216.0);
  double u2 = (double)(ts_rng_u32(r) >> 8) * (1.0 / 16777216.0);
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Unbiased draw in [0, n) for n beyond 32 bits (arrays of more than 2^32 entries). */
static uint64_t below64(TsRng *r, uint64_t n) {
  if (n <= UINT32_MAX) return ts_rng_below(r, (uint32_t)n);
  uint64_t threshold = -n % n;
  for (;;) {
    uint64_t v = (uint64_t)ts_rng_u32(r) << 32 | ts_rng_u32(r);
    if (v >= threshold) return v % n;
  }
}

void ts_shuffle_u32(TsRng *r, uint32_t *a, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)below64(r, i);
    uint32_t t = a[i - 1];
    a[i - 1] = a[j];
    a[j] = t;
  }
}
