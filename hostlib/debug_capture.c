#include "debug_capture.h"

static nnc_capture_fn capture_fn;

void nnc_set_capture(nnc_capture_fn fn)
{
    capture_fn = fn;
}

void nnc_debug_capture(int32_t layer, const void* data, int32_t bytes)
{
    if (capture_fn)
        capture_fn(layer, data, bytes);
}
