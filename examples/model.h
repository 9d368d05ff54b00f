/* model.h: the one model-specific piece of the examples. A header from `teslac build` names
 * everything after the model (seed_infer, SEED_BATCH, ...); meson passes the name in
 *   -DMODEL=seed -DMODEL_UC=SEED -DMODEL_H="seed.h"
 * and this file maps it to fixed names (model_infer, MODEL_BATCH, ...), so that the same
 * classify.c and finetune.c build against any spec. A program written for one model would
 * include "seed.h" and call seed_infer directly.
 *
 * HAVE_TESLA_RT (set by meson when it found the runtime): tesla_rt.h first, which turns on the
 * header's NAME_save (safetensors through the runtime's ts_st_write). */
#ifndef EXAMPLES_MODEL_H
#define EXAMPLES_MODEL_H

#if !defined(MODEL) || !defined(MODEL_UC) || !defined(MODEL_H)
#error "compile with -DMODEL=name -DMODEL_UC=NAME -DMODEL_H=\"name.h\" (examples/meson.build does)"
#endif

#ifdef HAVE_TESLA_RT
#include "tesla_rt.h"
#endif
#include MODEL_H

#define EX_CAT_(a, b) a##b
#define EX_CAT(a, b) EX_CAT_(a, b)
#define EX_STR_(a) #a
#define EX_STR(a) EX_STR_(a)
#define MODEL_FN(s) EX_CAT(MODEL, s)      /* MODEL_FN(_infer): seed_infer */
#define MODEL_K(s) EX_CAT(MODEL_UC, s)    /* MODEL_K(_BATCH): SEED_BATCH */

#define MODEL_NAME EX_STR(MODEL)

/* the model */
#define MODEL_INPUT_SIZE MODEL_K(_INPUT_SIZE)     /* floats per sample of x */
#define MODEL_OUTPUT_SIZE MODEL_K(_OUTPUT_SIZE)   /* floats per sample of y */
#define MODEL_CLASSES MODEL_K(_CLASSES)
#define MODEL_BATCH MODEL_K(_BATCH)

/* memory, in bytes */
#define MODEL_ALIGNMENT MODEL_K(_ALIGNMENT)
#define MODEL_ACTIVATIONS_SIZE MODEL_K(_ACTIVATIONS_SIZE)    /* scratch of one infer call */
#define MODEL_WEIGHTS_SIZE MODEL_K(_WEIGHTS_SIZE)
/* only in headers built with --train-step */
#define MODEL_TRAIN_STATE_SIZE MODEL_K(_TRAIN_STATE_SIZE)
#define MODEL_TRAIN_ACTIVATIONS_SIZE MODEL_K(_TRAIN_ACTIVATIONS_SIZE)
#define MODEL_LR MODEL_K(_LR)

/* inference */
#define model_infer MODEL_FN(_infer)
#define model_infer_weights MODEL_FN(_infer_weights)
/* training (--train-step) */
#define model_train_init MODEL_FN(_train_init)
#define model_train_step MODEL_FN(_train_step)
#define model_train_step_lr MODEL_FN(_train_step_lr)
#define model_train_weights MODEL_FN(_train_weights)
/* the runtime (HAVE_TESLA_RT) */
#define model_save MODEL_FN(_save)

#endif
