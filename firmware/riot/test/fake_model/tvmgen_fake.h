/* Hand-written stand-in for a generated model (same interface as tools/export.py output),
 * for developing and testing the firmware without the compiler: 28x28 int8 input,
 * layer 0 = 4x4 sum pooling + requantize + ReLU, layer 1 = dense 49 -> 10 + requantize. */
#ifndef TVMGEN_FAKE_H
#define TVMGEN_FAKE_H
#include <stdint.h>

#define TVMGEN_FAKE_WORKSPACE_SIZE 64
#define TVMGEN_FAKE_INPUT0_SIZE 784
#define TVMGEN_FAKE_OUTPUT0_SIZE 10
#define TVMGEN_FAKE_INPUT0_SCALE 0x1.010102p-8f
#define TVMGEN_FAKE_INPUT0_ZERO_POINT (-128)
#define TVMGEN_FAKE_OUTPUT0_SCALE 0x1p-3f
#define TVMGEN_FAKE_OUTPUT0_ZERO_POINT (3)
#define TVMGEN_FAKE_NUM_LAYERS 2

struct tvmgen_fake_inputs {
    void *input0;
};
struct tvmgen_fake_outputs {
    void *output0;
};

int32_t tvmgen_fake_run(struct tvmgen_fake_inputs *inputs, struct tvmgen_fake_outputs *outputs);

#endif
