/*
 * Maps the generic MODEL_* names used by main.c onto the generated tvmgen_<model>_* API.
 * The build defines NNC_MODEL (lower case name, e.g. lenet5) and NNC_MODEL_UC (upper case,
 * e.g. LENET5); the generated header tvmgen_<model>.h must be on the include path.
 */
#ifndef NNC_MODEL_BINDING_H
#define NNC_MODEL_BINDING_H

#if !defined(NNC_MODEL) || !defined(NNC_MODEL_UC)
#error "define NNC_MODEL=<name> and NNC_MODEL_UC=<NAME> (the build does this)"
#endif

#define NNC_CAT_(a, b) a##b
#define NNC_CAT(a, b) NNC_CAT_(a, b)
#define NNC_STR_(x) #x
#define NNC_XSTR(x) NNC_STR_(x)

#include NNC_XSTR(NNC_CAT(tvmgen_, NNC_MODEL).h)

#define MODEL_NAME NNC_XSTR(NNC_MODEL)
#define MODEL_RUN NNC_CAT(NNC_CAT(tvmgen_, NNC_MODEL), _run)
#define MODEL_INPUTS_T struct NNC_CAT(NNC_CAT(tvmgen_, NNC_MODEL), _inputs)
#define MODEL_OUTPUTS_T struct NNC_CAT(NNC_CAT(tvmgen_, NNC_MODEL), _outputs)
#define MODEL_MACRO_(suffix) NNC_CAT(NNC_CAT(TVMGEN_, NNC_MODEL_UC), suffix)
#define MODEL_INPUT_SIZE MODEL_MACRO_(_INPUT0_SIZE)
#define MODEL_OUTPUT_SIZE MODEL_MACRO_(_OUTPUT0_SIZE)
#define MODEL_INPUT_SCALE MODEL_MACRO_(_INPUT0_SCALE)
#define MODEL_INPUT_ZERO_POINT MODEL_MACRO_(_INPUT0_ZERO_POINT)
#define MODEL_OUTPUT_SCALE MODEL_MACRO_(_OUTPUT0_SCALE)
#define MODEL_OUTPUT_ZERO_POINT MODEL_MACRO_(_OUTPUT0_ZERO_POINT)
#define MODEL_WORKSPACE_SIZE MODEL_MACRO_(_WORKSPACE_SIZE)
#define MODEL_NUM_LAYERS MODEL_MACRO_(_NUM_LAYERS)

#endif
