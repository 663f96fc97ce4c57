/* Force-included (-include) when compiling the generated tvmgen_<model>.c: the generated
 * run() calls TVMGEN_LAYER_HOOK(i) after layer i, the application records the time. */
#ifndef NNC_LAYER_HOOK_H
#define NNC_LAYER_HOOK_H
void nnc_layer_hook(int index);
#define TVMGEN_LAYER_HOOK(index) nnc_layer_hook(index)
#endif
