#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tvmgen_fake.h"

#ifndef TVMGEN_LAYER_HOOK
#define TVMGEN_LAYER_HOOK(index) ((void)(index))
#endif

static int8_t workspace[TVMGEN_FAKE_WORKSPACE_SIZE] __attribute__((aligned(16)));

static const int8_t fc_weight[10 * 49] = {
#include "weights.inc"
};
static const int32_t fc_bias[10] = {
#include "bias.inc"
};

static int8_t requant(int32_t acc, float multiplier, int32_t zero_point, int32_t lo)
{
    float q = rintf((float)acc * multiplier) + (float)zero_point;
    if (q < (float)lo) {
        q = (float)lo;
    }
    if (q > 127.0f) {
        q = 127.0f;
    }
    return (int8_t)q;
}

int32_t tvmgen_fake_run(struct tvmgen_fake_inputs *inputs, struct tvmgen_fake_outputs *outputs)
{
    const int8_t *in = (const int8_t *)inputs->input0;
    int8_t *out = (int8_t *)outputs->output0;
    int8_t *pooled = workspace; /* 49 bytes */

    for (int y = 0; y < 7; y++) {
        for (int x = 0; x < 7; x++) {
            int32_t acc = 0;
            for (int i = 0; i < 4; i++) {
                for (int j = 0; j < 4; j++) {
                    acc += (int32_t)in[(4 * y + i) * 28 + 4 * x + j] + 128;
                }
            }
            pooled[7 * y + x] = requant(acc, 0x1p-4f, -128, -128);
        }
    }
    TVMGEN_LAYER_HOOK(0);

    for (int o = 0; o < 10; o++) {
        int32_t acc = fc_bias[o];
        for (int k = 0; k < 49; k++) {
            acc += ((int32_t)pooled[k] + 128) * (int32_t)fc_weight[o * 49 + k];
        }
        out[o] = requant(acc, 0x1.8p-12f, TVMGEN_FAKE_OUTPUT0_ZERO_POINT, -128);
    }
    TVMGEN_LAYER_HOOK(1);
    return 0;
}
