/* Force-included (-include) when compiling a generated tvmgen_<model>.c for the DIANA firmware:
 * run() calls TVMGEN_LAYER_HOOK(i) after layer i; the demo records minstret and the HAL's cycle
 * counter there. */
#ifndef DIANA_LAYER_HOOK_H
#define DIANA_LAYER_HOOK_H
void nnc_layer_hook(int index);
#define TVMGEN_LAYER_HOOK(index) nnc_layer_hook(index)
#endif
