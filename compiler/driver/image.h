/* image.h: images as model inputs for `teslac predict` (image.c): PNG through libpng, PGM/PPM
 * (and PBM, PAM) through netpbm's library, told apart by their first bytes. */
#ifndef TESLAC_IMAGE_H
#define TESLAC_IMAGE_H

#include "tesla_rt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum ImgKind { IMG_UNKNOWN, IMG_PNG, IMG_PNM } ImgKind;

/* What the model takes: c planes (1: gray, 3: RGB) of h x w bytes; h = 0: a vector of w
 * values, which a gray image of h x w = w pixels fills row by row. `input` describes the
 * model's input in messages, e.g. "(N, 1, 28, 28)". */
typedef struct ImgTarget { int64_t c, h, w; const char *input; } ImgTarget;

/* from the first bytes of a file (n of them, at least 8 when the file has them) */
ImgKind img_sniff(const uint8_t *b, size_t n);
/* a file name a folder's listing takes as an image: .png .pgm .ppm .pnm .pbm .pam, any case */
bool img_has_ext(const char *name);
/* Decodes the image in buf (n bytes; `name` in messages) into out (c h w bytes, planar):
 * gray as PIL's convert('L') computes it from RGB, alpha dropped, 16-bit samples scaled to 8.
 * -1 with a message naming the file for a corrupt or truncated image, or one whose size or
 * channels do not fit the target. */
int  img_decode(const char *name, const uint8_t *buf, size_t n, const ImgTarget *t, uint8_t *out, TsErr *e);
/* the formats this build reads, e.g. "PNG (libpng 1.6.39), PGM/PPM (netpbm)" */
const char *img_formats(void);

#endif
