/* model_abi.h: the model's names for the cross harness (run_infer.c, m4/fw_main.c). A header
 * from `teslac build` names everything after the model (seed_infer, SEED_BATCH); the scripts
 * pass -DMODEL=seed -DMODEL_UC=SEED -DMODEL_H='"seed.h"' and this maps them to M_* names. */
#ifndef CROSS_MODEL_ABI_H
#define CROSS_MODEL_ABI_H

#if !defined(MODEL_H) || !defined(MODEL) || !defined(MODEL_UC)
#error "define MODEL_H (a string literal), MODEL and MODEL_UC, e.g. -DMODEL_H='\"seed.h\"' -DMODEL=seed -DMODEL_UC=SEED"
#endif
#include MODEL_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define M_INFER CAT(MODEL, _infer)
#define M_BATCH CAT(MODEL_UC, _BATCH)
#define M_INPUT_SIZE CAT(MODEL_UC, _INPUT_SIZE)
#define M_OUTPUT_SIZE CAT(MODEL_UC, _OUTPUT_SIZE)
#define M_ACTIVATIONS_SIZE CAT(MODEL_UC, _ACTIVATIONS_SIZE)
#define M_ALIGNMENT CAT(MODEL_UC, _ALIGNMENT)

#ifndef SCRATCH_FILL
#define SCRATCH_FILL 0xff
#endif

#endif
