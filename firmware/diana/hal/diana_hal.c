/* DIANA digital accelerator: bit-exact C functional model behind the DORY kernel entry points.
 * Layouts, arithmetic and the cost model are described in diana_hal.h. */
#include "diana_hal.h"

#include <string.h>

uint32_t diana_l1_act_words[DIANA_L1_ACT_BYTES / 4];
uint32_t diana_l1_weight_words[DIANA_L1_WEIGHT_BYTES / 4];
uint64_t diana_hal_cycles;
int32_t diana_hal_error;

static inline uint32_t ceil16(uint32_t n)
{
    return (n + 15u) / 16u;
}

static inline int8_t clip_shift(int32_t acc, uint32_t shift, int32_t lo)
{
    const int32_t q = acc >> shift;     /* arithmetic: GCC and the accelerator agree */
    return (int8_t)(q < lo ? lo : (q > 127 ? 127 : q));
}

/* An int32 bias in a word-reversed blob reads as big-endian bytes. */
static inline int32_t read_bias(const int8_t* blob, uint32_t offset)
{
    const uint8_t* p = (const uint8_t*)blob + offset;
    return (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
                     (uint32_t)p[3]);
}

static int valid_kernel(uint32_t f)
{
    return f == 1 || f == 3 || f == 5 || f == 7;
}

/* The checks the hardware makes before it starts a convolution tile. */
static int32_t check_conv(const Layer_parameters* l, uint32_t in_channels_stored)
{
    if (!valid_kernel(l->fx) || !valid_kernel(l->fy)) return DIANA_E_KERNEL_SIZE;
    if (l->stride != 1 && l->stride != 2) return DIANA_E_STRIDE;
    if (l->output_shift > 31) return DIANA_E_SHIFT;
    if (l->oy == 0 || l->ox == 0 || l->k == 0 || l->c == 0) return DIANA_E_SHAPE;
    /* the last window must end inside the padded tile */
    if ((uint32_t)(l->oy - 1) * l->stride + l->fy > (uint32_t)l->padding_top + l->cy + l->padding_bottom)
        return DIANA_E_SHAPE;
    if ((uint32_t)(l->ox - 1) * l->stride + l->fx > (uint32_t)l->padding_left + l->cx + l->padding_right)
        return DIANA_E_SHAPE;
    {
        const uint32_t in_bytes = ((uint32_t)l->c * l->cy * l->cx + 3u) & ~3u;
        const uint32_t out_bytes = ((uint32_t)l->k * l->oy * l->ox + 3u) & ~3u;
        const uint32_t w_bytes = ceil16(l->k) * 16u * (in_channels_stored * l->fy * l->fx + 4u);
        if (in_bytes + out_bytes > DIANA_L1_ACT_BYTES || w_bytes > DIANA_L1_WEIGHT_BYTES)
            return DIANA_E_L1;
    }
    return DIANA_OK;
}

/* One output channel of a convolution tile. `wk` points at this channel's lane in the packed
 * weights: tap (c, fy, fx) is at wk + ((c * fy_n + fy) * fx_n + fx) * 16, word-reversed. */
static void conv_channel(const int8_t* in, uint32_t in_base_channel, uint32_t n_channels,
                         const int8_t* w, uint32_t w_lane, uint32_t w_channels, int32_t bias,
                         int8_t* out, uint32_t out_base, const Layer_parameters* l)
{
    const int32_t cx = l->cx, cy = l->cy, fx_n = l->fx, fy_n = l->fy, s = l->stride;
    const int32_t lo = l->activation ? 0 : -128;
    for (int32_t y = 0; y < l->oy; ++y) {
        const int32_t iy0 = y * s - l->padding_top;
        const int32_t fy_lo = iy0 < 0 ? -iy0 : 0;
        const int32_t fy_hi = cy - iy0 < fy_n ? cy - iy0 : fy_n;
        for (int32_t x = 0; x < l->ox; ++x) {
            const int32_t ix0 = x * s - l->padding_left;
            const int32_t fx_lo = ix0 < 0 ? -ix0 : 0;
            const int32_t fx_hi = cx - ix0 < fx_n ? cx - ix0 : fx_n;
            int32_t acc = bias;
            for (uint32_t c = 0; c < n_channels; ++c) {
                const uint32_t in_plane = (in_base_channel + c) * (uint32_t)(cy * cx);
                const uint32_t w_plane = (c % w_channels) * (uint32_t)(fy_n * fx_n);
                for (int32_t fy = fy_lo; fy < fy_hi; ++fy) {
                    const uint32_t in_row = in_plane + (uint32_t)((iy0 + fy) * cx + ix0);
                    const uint32_t w_row = (w_plane + (uint32_t)(fy * fx_n)) * 16u + w_lane;
                    for (int32_t fx = fx_lo; fx < fx_hi; ++fx) {
                        acc += (int32_t)DIANA_AT(in, in_row + (uint32_t)fx) *
                               (int32_t)DIANA_AT(w, w_row + (uint32_t)fx * 16u);
                    }
                }
            }
            DIANA_AT(out, out_base + (uint32_t)(y * l->ox + x)) = clip_shift(acc, l->output_shift, lo);
        }
    }
}

int32_t digital_conv_2d(const void* input_L2, const void* input, const void* weights_L2,
                        const void* weights, void* output, Layer_parameters* layer)
{
    const int8_t* in = (const int8_t*)input;
    const int8_t* w = (const int8_t*)weights;
    int8_t* out = (int8_t*)output;
    const Layer_parameters* l = layer;
    const int32_t status = check_conv(l, l->c);
    (void)input_L2;
    (void)weights_L2;
    if (status != DIANA_OK) return status;
    {
        const uint32_t block = 16u * l->c * l->fy * l->fx;      /* bytes of 16 output channels */
        const uint32_t bias_at = ceil16(l->k) * block;
        for (uint32_t k = 0; k < l->k; ++k) {
            const int8_t* wk = w + (k / 16u) * block;
            conv_channel(in, 0, l->c, wk, k % 16u, l->c, read_bias(w, bias_at + 4u * k), out,
                         k * l->oy * l->ox, l);
        }
        diana_hal_cycles += (uint64_t)ceil16(l->k) * ceil16(l->c) * l->fy * l->fx * l->oy * l->ox;
    }
    return DIANA_OK;
}

int32_t digital_depthwise_conv_2d(const void* input_L2, const void* input, const void* weights_L2,
                                  const void* weights, void* output, Layer_parameters* layer)
{
    const int8_t* in = (const int8_t*)input;
    const int8_t* w = (const int8_t*)weights;
    int8_t* out = (int8_t*)output;
    const Layer_parameters* l = layer;
    const int32_t status = l->c != l->k ? DIANA_E_SHAPE : check_conv(l, 4u);
    (void)input_L2;
    (void)weights_L2;
    if (status != DIANA_OK) return status;
    {
        /* each channel stored as 4 input channels, the last 3 zero: only slot 0 is read */
        const uint32_t block = 16u * 4u * l->fy * l->fx;
        const uint32_t bias_at = ceil16(l->k) * block;
        for (uint32_t k = 0; k < l->k; ++k) {
            const int8_t* wk = w + (k / 16u) * block;
            conv_channel(in, k, 1, wk, k % 16u, 1, read_bias(w, bias_at + 4u * k), out,
                         k * l->oy * l->ox, l);
        }
        diana_hal_cycles += (uint64_t)ceil16(l->k) * l->fy * l->fx * l->oy * l->ox;
    }
    return DIANA_OK;
}

int32_t digital_fully_connected(const void* input_L2, const void* input, const void* weights_L2,
                                const void* weights, void* output, Layer_parameters* layer)
{
    const int8_t* in = (const int8_t*)input;
    const int8_t* w = (const int8_t*)weights;
    int8_t* out = (int8_t*)output;
    const Layer_parameters* l = layer;
    const uint32_t c_pad = ceil16(l->c) * 16u;
    const uint32_t block = 16u * c_pad;
    const uint32_t bias_at = ceil16(l->k) * block;
    const int32_t lo = l->activation ? 0 : -128;
    (void)input_L2;
    (void)weights_L2;
    if (l->output_shift > 31) return DIANA_E_SHIFT;
    if (l->c == 0 || l->k == 0) return DIANA_E_SHAPE;
    if (((l->c + 3u) & ~3u) + ((l->k + 3u) & ~3u) > DIANA_L1_ACT_BYTES ||
        bias_at + 4u * 16u * ceil16(l->k) > DIANA_L1_WEIGHT_BYTES)
        return DIANA_E_L1;
    for (uint32_t k = 0; k < l->k; ++k) {
        const uint32_t wk = (k / 16u) * block + k % 16u;
        int32_t acc = read_bias(w, bias_at + 4u * k);
        for (uint32_t c = 0; c < l->c; ++c) {
            acc += (int32_t)DIANA_AT(in, c) * (int32_t)DIANA_AT(w, wk + c * 16u);
        }
        DIANA_AT(out, k) = clip_shift(acc, l->output_shift, lo);
    }
    diana_hal_cycles += (uint64_t)ceil16(l->k) * ceil16(l->c);
    return DIANA_OK;
}

int32_t digital_element_wise_sum(const void* input_a_L2, const void* input_a,
                                 const void* input_b_L2, const void* input_b, void* output,
                                 Layer_parameters* layer)
{
    const int8_t* a = (const int8_t*)input_a;
    const int8_t* b = (const int8_t*)input_b;
    int8_t* out = (int8_t*)output;
    const Layer_parameters* l = layer;
    const uint32_t n = (uint32_t)l->c * l->cy * l->cx;
    const int32_t lo = l->activation ? 0 : -128;
    (void)input_a_L2;
    (void)input_b_L2;
    if (l->output_shift > 31) return DIANA_E_SHIFT;
    if (n % 4u != 0) return DIANA_E_SHAPE;
    if (3u * n > DIANA_L1_ACT_BYTES) return DIANA_E_L1;
    /* element-wise: the word layout does not matter, every byte pairs with its partner */
    for (uint32_t i = 0; i < n; ++i) {
        out[i] = clip_shift((int32_t)a[i] + (int32_t)b[i], l->output_shift, lo);
    }
    diana_hal_cycles += ceil16(n);
    return DIANA_OK;
}

void diana_dma_words(void* dst, const void* src, uint32_t bytes)
{
    memcpy(dst, src, bytes);
    diana_hal_cycles += (bytes + 3u) / 4u;
}

void diana_dma_3d(int8_t* dst, uint32_t d0, uint32_t d_plane, uint32_t d_row,
                  const int8_t* src, uint32_t s0, uint32_t s_plane, uint32_t s_row,
                  uint32_t planes, uint32_t rows, uint32_t cols)
{
    for (uint32_t p = 0; p < planes; ++p) {
        for (uint32_t r = 0; r < rows; ++r) {
            const uint32_t s = s0 + p * s_plane + r * s_row;
            const uint32_t d = d0 + p * d_plane + r * d_row;
            for (uint32_t c = 0; c < cols; ++c) {
                DIANA_AT(dst, d + c) = DIANA_AT(src, s + c);
            }
        }
    }
    diana_hal_cycles += (planes * rows * cols + 3u) / 4u;
}

void diana_check(int32_t status)
{
    if (status != DIANA_OK && diana_hal_error == DIANA_OK) diana_hal_error = status;
}
