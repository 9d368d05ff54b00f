/* image.c: images as model inputs (image.h), for `teslac predict`. A PNG is read through
 * libpng, a PGM/PPM (or PBM, PAM) through netpbm's libnetpbm, each from memory, so that a file,
 * a folder's files and standard input go the same way. Both libraries report errors by
 * longjmp: each decoder sets its jump point before the first call into the library, keeps what
 * it allocates in volatile pointers and frees it there, and turns the library's words into a
 * message naming the file. The image's size is checked against the model's input as soon as
 * the header is read (before any pixel buffer exists). Pixels become the model's layout:
 * planar, 8 bits; a 1-channel input gets gray as PIL's convert('L') computes it (ITU-R 601-2
 * luma, L = R 299/1000 + G 587/1000 + B 114/1000 in PIL's fixed point), a 3-channel input RGB
 * (gray replicated); alpha is dropped; 16-bit samples are scaled to 8 bits (rounded). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "image.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifdef TESLA_NETPBM
#include <pam.h>
#endif

ImgKind img_sniff(const uint8_t *b, size_t n) {
  static const uint8_t png_magic[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && !memcmp(b, png_magic, 8)) return IMG_PNG;
  if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7') return IMG_PNM;
  return IMG_UNKNOWN;
}

bool img_has_ext(const char *name) {
  static const char *const exts[] = {".png", ".pgm", ".ppm", ".pnm", ".pbm", ".pam", NULL};
  const char *dot = strrchr(name, '.');
  for (int i = 0; dot && exts[i]; i++)
    if (!strcasecmp(dot, exts[i])) return true;
  return false;
}

const char *img_formats(void) {
#ifdef TESLA_NETPBM
  return "PNG (libpng " PNG_LIBPNG_VER_STRING "), PGM/PPM/PBM/PAM (netpbm)";
#else
  return "PNG (libpng " PNG_LIBPNG_VER_STRING "); PGM/PPM need netpbm (this build has none)";
#endif
}

/* the image's width and height against the target's; -1 with a message when they differ */
static int check_size(const char *name, uint64_t w, uint64_t h, const ImgTarget *t, TsErr *e) {
  if (t->h == 0) {
    if (w * h == (uint64_t)t->w) return 0;
    return ts_fail(e, "%s: the image is %llux%llu (width x height) = %llu pixels, but the model's input %s takes "
                      "%lld values", name, (unsigned long long)w, (unsigned long long)h,
                   (unsigned long long)(w * h), t->input, (long long)t->w);
  }
  if (w == (uint64_t)t->w && h == (uint64_t)t->h) return 0;
  return ts_fail(e, "%s: the image is %llux%llu (width x height), but the model's input %s takes %lldx%lld images",
                 name, (unsigned long long)w, (unsigned long long)h, t->input, (long long)t->w, (long long)t->h);
}

/* Pixel i (of the image's w h, row-major) with `nch` interleaved 8-bit channels (1 gray, 3
 * RGB) into the target's planes. PIL's convert('L'): (R 19595 + G 38470 + B 7471 + 2^15) >> 16. */
static void put_pixel(const ImgTarget *t, uint8_t *out, size_t i, size_t plane, const uint8_t *px, int nch) {
  if (t->c == 1)
    out[i] = nch == 1 ? px[0]
                      : (uint8_t)((px[0] * 19595u + px[1] * 38470u + px[2] * 7471u + 0x8000u) >> 16);
  else
    for (int c = 0; c < 3; c++) out[(size_t)c * plane + i] = px[nch == 1 ? 0 : c];
}

/* ---- PNG (libpng) ---------------------------------------------------------------------- */

typedef struct PngSrc { const uint8_t *p; size_t n, at; } PngSrc;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t len) {
  PngSrc *s = png_get_io_ptr(png);
  if (len > s->n - s->at) png_error(png, "truncated: the file ends early");
  memcpy(dst, s->p + s->at, len);
  s->at += len;
}

/* libpng's error: its words into the buffer the decoder gave, then back to its setjmp */
static void png_on_error(png_structp png, png_const_charp msg) {
  snprintf(png_get_error_ptr(png), 256, "%s", msg);
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static int decode_png(const char *name, const uint8_t *buf, size_t n, const ImgTarget *t, uint8_t *out, TsErr *e) {
  char msg[256] = "";
  PngSrc src = {buf, n, 0};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, msg, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
    return ts_fail(e, "%s: out of memory starting libpng", name);
  }
  uint8_t *volatile pixels = NULL;
  png_bytep *volatile rows = NULL;
  volatile int size_rc = 0;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, NULL);
    free(pixels), free(rows);
    return size_rc ? -1 : ts_fail(e, "%s: not a readable PNG image: %s", name, msg);
  }
  png_set_read_fn(png, &src, png_read_mem);
  png_read_info(png, info);
  png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  if (check_size(name, w, h, t, e) < 0) {
    size_rc = -1;
    png_longjmp(png, 1);
  }
  int ct = png_get_color_type(png, info), bd = png_get_bit_depth(png, info);
  if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (ct == PNG_COLOR_TYPE_GRAY && bd < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bd == 16) png_set_scale_16(png);
  if (ct & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  int nch = png_get_channels(png, info);   /* 1 (gray) or 3 (RGB) now */
  size_t rowbytes = png_get_rowbytes(png, info);
  if (nch != 1 && nch != 3) png_error(png, "unexpected channel count after conversion");
  pixels = malloc(rowbytes * h);
  rows = malloc(sizeof(png_bytep) * h);
  if (!pixels || !rows) png_error(png, "out of memory");
  for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + (size_t)y * rowbytes;
  png_read_image(png, rows);
  png_read_end(png, NULL);   /* the chunks after the pixels, up to IEND: a cut file fails here */
  size_t plane = (size_t)w * h;
  for (png_uint_32 y = 0; y < h; y++)
    for (png_uint_32 x = 0; x < w; x++)
      put_pixel(t, out, (size_t)y * w + x, plane, rows[y] + (size_t)x * (size_t)nch, nch);
  png_destroy_read_struct(&png, &info, NULL);
  free(pixels), free(rows);
  return 0;
}

/* ---- PGM, PPM, PBM, PAM (netpbm) -------------------------------------------------------------- */

#ifdef TESLA_NETPBM
static char pnm_msg[256];

static void pnm_on_error(const char *msg) { snprintf(pnm_msg, sizeof pnm_msg, "%s", msg); }
static void pnm_on_message(const char *msg) { (void)msg; }

static int decode_pnm(const char *name, const uint8_t *buf, size_t n, const ImgTarget *t, uint8_t *out, TsErr *e) {
  static bool inited;
  if (!inited) {   /* libnetpbm's globals; its messages come to us instead of stderr */
    pm_init("teslac", 0);
    pm_setusererrormsgfn(pnm_on_error);
    pm_setusermessagefn(pnm_on_message);
    inited = true;
  }
  FILE *f = fmemopen((void *)buf, n, "rb");
  if (!f) return ts_fail(e, "%s: cannot read: %s", name, strerror(errno));
  tuple *volatile row = NULL;
  uint8_t *volatile px = NULL;
  jmp_buf jb, *old;
  struct pam pam;
  pnm_msg[0] = 0;
  pm_setjmpbufsave(&jb, &old);
  if (setjmp(jb)) {   /* pm_error() in libnetpbm */
    pm_setjmpbuf(old);
    if (row) pnm_freepamrow(row);
    free(px);
    fclose(f);
    return ts_fail(e, "%s: not a readable PGM/PPM image: %s", name, pnm_msg[0] ? pnm_msg : "unknown error");
  }
  pnm_readpaminit(f, &pam, PAM_STRUCT_SIZE(tuple_type));
  int rc = check_size(name, (uint64_t)pam.width, (uint64_t)pam.height, t, e);
  if (rc == 0) {
    int nch = pam.depth >= 3 ? 3 : 1;   /* PAM: gray or RGB, then perhaps alpha (dropped) */
    unsigned long maxval = pam.maxval;
    size_t plane = (size_t)pam.width * (size_t)pam.height;
    row = pnm_allocpamrow(&pam);
    px = malloc((size_t)pam.width * 3);
    if (!px) pm_error("out of memory");
    for (int y = 0; y < pam.height; y++) {
      pnm_readpamrow(&pam, row);
      for (int x = 0; x < pam.width; x++) {
        for (int c = 0; c < nch; c++) {
          unsigned long v = row[x][c];
          px[(size_t)x * 3 + (size_t)c] = (uint8_t)(maxval == 255 ? v : (v * 255 + maxval / 2) / maxval);
        }
        put_pixel(t, out, (size_t)y * (size_t)pam.width + (size_t)x, plane, px + (size_t)x * 3, nch);
      }
    }
    pnm_freepamrow(row);
    row = NULL;
  }
  pm_setjmpbuf(old);
  free(px);
  fclose(f);
  return rc;
}
#endif

int img_decode(const char *name, const uint8_t *buf, size_t n, const ImgTarget *t, uint8_t *out, TsErr *e) {
  if (t->c != 1 && t->c != 3)
    return ts_fail(e, "%s: an image gives 1 (gray) or 3 (RGB) channels, but the model's input %s has %lld", name,
                   t->input, (long long)t->c);
  switch (img_sniff(buf, n)) {
  case IMG_PNG: return decode_png(name, buf, n, t, out, e);
  case IMG_PNM:
#ifdef TESLA_NETPBM
    return decode_pnm(name, buf, n, t, out, e);
#else
    return ts_fail(e, "%s: a PGM/PPM image, but this teslac was built without netpbm (install libnetpbm-dev "
                      "and rebuild to read it)", name);
#endif
  default: break;
  }
  char first[40] = "";
  for (size_t i = 0; i < n && i < 4; i++) snprintf(first + strlen(first), sizeof first - strlen(first), "%02x", buf[i]);
  return ts_fail(e, "%s: not a PNG or PGM/PPM image (%s%s)", name, n ? "it starts with 0x" : "it is empty", first);
}
