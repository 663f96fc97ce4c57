/* DIANA digital accelerator HAL: DORY-style kernel entry points, implemented as a bit-exact C
 * functional model of the SoMa digital core (16x16 int8 PE array). No DIANA silicon or simulator
 * is available, so the same C runs in the host shared library (x86-64, tests) and in the RV32IMC
 * firmware (QEMU). Generated layer code (nnc.targets.diana.kernels) streams tiles from L2 to L1
 * with the DMA model below and calls one kernel per tile.
 *
 * Data layout (what the accelerator reads and writes):
 *   - activations: int8 NCHW (dense: one vector), stored in 32-bit words whose 4 bytes are
 *     reversed: element i of a buffer lives at byte i ^ 3. Every buffer size is a multiple of 4.
 *   - conv weights: [K/16][C][FY][FX][16] int8 (K padded to 16 with zeros), then K_pad int32
 *     biases; the whole blob word-reversed too (so each bias reads as a big-endian int32).
 *     Depthwise: C = 4, where slot 0 holds the channel's kernel and slots 1..3 are zero.
 *     Fully connected: [K/16][C_pad][16] (C padded to 16), then the biases.
 *   - arithmetic: int32 accumulator = bias + sum(x * w); out = clip(acc >> output_shift) to
 *     [-128, 127], or [0, 127] with activation (ReLU); >> is arithmetic, without rounding.
 *     Element-wise sum: clip((a + b) >> output_shift) in int32.
 *
 * Cost model (estimated accelerator cycles, DIANA at 100 MHz, 256 int8 MAC/cycle peak):
 *   conv2d        ceil(k/16) * ceil(c/16) * fy * fx * oy * ox   (16 in x 16 out channels/cycle)
 *   depthwise     ceil(k/16) * fy * fx * oy * ox                (one input channel per column)
 *   fully conn.   ceil(k/16) * ceil(c/16)
 *   element sum   ceil(n/16)                                     (16 bytes/cycle)
 *   DMA L2<->L1   ceil(bytes/4)                                  (one 32-bit word/cycle, not
 *                                                                 overlapped with compute)
 * The model accumulates these in diana_hal_cycles; nnc's placement report computes the same
 * numbers statically.
 */
#ifndef DIANA_HAL_H
#define DIANA_HAL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DIANA_L1_ACT_BYTES 256000u      /* L1 activation memory */
#define DIANA_L1_WEIGHT_BYTES 64000u    /* L1 weight memory of the digital core */
#define DIANA_L2_BYTES 512000u
#define DIANA_CLOCK_HZ 100000000u
#define DIANA_PEAK_MACS_PER_CYCLE 256u

/* Errors a kernel returns (0 = done). */
#define DIANA_OK 0
#define DIANA_E_KERNEL_SIZE 1     /* fx, fy not in {1, 3, 5, 7} */
#define DIANA_E_STRIDE 2          /* stride not 1 or 2 */
#define DIANA_E_SHAPE 3           /* tile shape inconsistent with padding/stride/output */
#define DIANA_E_SHIFT 4           /* output_shift > 31 */
#define DIANA_E_L1 5              /* tile larger than L1 */

typedef struct {
    uint16_t c;            /* input channels of the tile (dense: input features) */
    uint16_t k;            /* output channels of the tile (dense: output features) */
    uint16_t cx, cy;       /* input tile width, height */
    uint16_t fx, fy;       /* kernel width, height */
    uint16_t ox, oy;       /* output tile width, height */
    uint8_t activation;    /* 1: ReLU (clip to [0, 127]) */
    uint8_t output_shift;  /* arithmetic right shift, 0..31 */
    uint8_t padding_top, padding_bottom, padding_left, padding_right;
    uint8_t stride;        /* same in both directions: 1 or 2 */
} Layer_parameters;

/* L1 memories (the model's scratchpads), word aligned. */
extern uint32_t diana_l1_act_words[DIANA_L1_ACT_BYTES / 4];
extern uint32_t diana_l1_weight_words[DIANA_L1_WEIGHT_BYTES / 4];
#define DIANA_L1_ACT ((int8_t*)diana_l1_act_words)
#define DIANA_L1_WEIGHTS ((int8_t*)diana_l1_weight_words)

/* Estimated accelerator cycles since reset (cost model above), and the first kernel error. */
extern uint64_t diana_hal_cycles;
extern int32_t diana_hal_error;

/* Element i of a word-reversed buffer. */
#define DIANA_AT(buffer, i) ((buffer)[(uint32_t)(i) ^ 3u])

/* DORY kernel entry points. The *_L2 pointers are the tensors in L2 (unused by the model, kept
 * for the dory-hal API shape); input, weights and output are the tiles in L1. */
int32_t digital_conv_2d(const void* input_L2, const void* input, const void* weights_L2,
                        const void* weights, void* output, Layer_parameters* layer);
int32_t digital_depthwise_conv_2d(const void* input_L2, const void* input, const void* weights_L2,
                                  const void* weights, void* output, Layer_parameters* layer);
int32_t digital_fully_connected(const void* input_L2, const void* input, const void* weights_L2,
                                const void* weights, void* output, Layer_parameters* layer);
/* n = c * cy * cx elements. */
int32_t digital_element_wise_sum(const void* input_a_L2, const void* input_a,
                                 const void* input_b_L2, const void* input_b, void* output,
                                 Layer_parameters* layer);

/* DMA model: L2 <-> L1 transfers are plain copies.
 * diana_dma_words: `bytes` bytes (a multiple of 4) from src to dst; the word layout is kept.
 * diana_dma_3d: planes x rows x cols elements between two word-reversed buffers; element
 * (p, r, c) is src[s0 + p*s_plane + r*s_row + c] and dst[d0 + p*d_plane + r*d_row + c]. */
void diana_dma_words(void* dst, const void* src, uint32_t bytes);
void diana_dma_3d(int8_t* dst, uint32_t d0, uint32_t d_plane, uint32_t d_row,
                  const int8_t* src, uint32_t s0, uint32_t s_plane, uint32_t s_row,
                  uint32_t planes, uint32_t rows, uint32_t cols);

/* Records the first error of a layer (generated code calls it with each kernel's result). */
void diana_check(int32_t status);

#ifdef __cplusplus
}
#endif

#endif /* DIANA_HAL_H */
