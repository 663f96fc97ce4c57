/* Debug builds of a generated model call nnc_debug_capture() after every layer with the
 * layer's output bytes (compile the model with
 * -D'TVMGEN_LAYER_OUTPUT_HOOK(i,d,n)=nnc_debug_capture(i,d,n)' -include debug_capture.h). */
#ifndef NNC_DEBUG_CAPTURE_H_
#define NNC_DEBUG_CAPTURE_H_
#include <stdint.h>

typedef void (*nnc_capture_fn)(int32_t layer, const void* data, int32_t bytes);

/* Registers the function that receives every layer's output (NULL: none). */
void nnc_set_capture(nnc_capture_fn fn);
void nnc_debug_capture(int32_t layer, const void* data, int32_t bytes);

#endif
