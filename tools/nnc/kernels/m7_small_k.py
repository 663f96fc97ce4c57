"""Cortex-M7 kernels for first layers (1-3 input channels: MobileNet's 3x3 stride-2 stem, DS-CNN's
10x4 stride-2 layer, ResNet-8's stem) and pointwise 1x1 layers at stride 1 with K <= 256 (every
pointwise layer of MobileNet and DS-CNN).

There the general GEMM (`m7_kernels`) spends most of its time outside the MACs: widening the same
few int8 weights with `sxtb16` for every pair of positions, and filling its int16 columns one
value at a time from the NCHW planes. Here both operands are int16 pairs:
- the weights are widened at export and stored as 32-bit words of two int16 taps, in the order of
  the column words, so the dot product is `ldrd` (two column words) + `ldrd` (two weight words) +
  `smlad` per two MACs: two positions x two output channels per pass, 12 instructions for 16 MACs;
- the column of a position is filled from whole words of the int8 input, widened by `sxtb16`:
  * a first layer reads each kernel row in groups of four bytes b0 b1 b2 b3 (a 3-wide row uses
    three of them, the weight of the fourth is 0) and stores (b0, b2), (b1, b3); the weights of the
    group are stored as (w0, w2), (w1, w3). The rows come from a padded copy of the input (the
    padding at the input zero point, folded into the bias as in the conv kernels): the whole image
    when it is small, else a band of the kernel's rows, refilled for every output row;
  * a pointwise layer reads four neighbouring positions of two input channels i, j (one word of
    each plane), and `sxtb16` + `pkhbt`/`pkhtb` give the four column words (x_i, x_j), one per
    position: 10 instructions for 8 values. The weights are stored as (w_i, w_j).
Requantization is the float32 one of the other m7 kernels (`nnc_m7_requant`).
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider
from .c_kernels import REQUANT_FLOAT, _signature
from .m7_common import NO_PRESCHEDULE, bias_folds, folded_bias
from .m7_gemm import DOT as GEMM_DOT
from .m7_kernels import INTRINSICS, REQUANT_SSAT

# The largest input channel count of a first layer, and K of a pointwise layer, taken here. The
# int16 weights take twice the flash of the general kernel's int8 ones (MobileNet: 508 KB of
# code and weights instead of 264 KB); in exchange the pointwise layers run at 0.9-1.2
# instructions per MAC instead of 1.3-1.8 (K = 32 .. 256), 1.0 instead of 1.54 for DS-CNN's K = 64.
FIRST_LAYER_MAX_CIN = 3
POINTWISE_MAX_K = 256
# A padded input up to this many bytes is copied once; a larger one through a band of rows.
WHOLE_COPY_MAX = 4096

PACK = """\
/* The halfword packs of the pointwise column fill (pkhbt, pkhtb; portable C elsewhere). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline uint32_t nnc_m7_pkh_lo(uint32_t a, uint32_t b)   /* (lo(a), lo(b)) */
{
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
static inline uint32_t nnc_m7_pkh_hi(uint32_t a, uint32_t b)   /* (hi(a), hi(b)) */
{
    uint32_t r;
    __asm__("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
#else
static inline uint32_t nnc_m7_pkh_lo(uint32_t a, uint32_t b)
{
    return (a & 0xFFFFu) | (b << 16);
}
static inline uint32_t nnc_m7_pkh_hi(uint32_t a, uint32_t b)
{
    return (a >> 16) | (b & 0xFFFF0000u);
}
#endif
"""

DOT16 = """\
/* Two positions x two output channels, all int16 pairs in 32-bit words, n2 steps of four words:
 * col holds per step the two words of position a, then the two of position b; w the two words of
 * channel 0, then the two of channel 1. acc = { w0 . a, w1 . a, w0 . b, w1 . b } plus what acc
 * held. Unrolled (constant offsets); the column pointer goes through an empty volatile asm so that
 * gcc does not hoist all the column loads out of the loop over the channels (and spill them). */
NNC_M7_INLINE void nnc_m7_dot16_2x2(const uint32_t* col, const uint32_t* w, int32_t n2, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
#if defined(__GNUC__)
    __asm__ volatile("" : "+r"(col));
#endif
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 16
#endif
    for (int32_t g = 0; g < 4 * n2; g += 4) {
        const uint32_t x0 = col[g], x1 = col[g + 1], k0 = w[g], k1 = w[g + 1];
        a0 = nnc_m7_smlad(k0, x0, nnc_m7_smlad(k1, x1, a0));
        const uint32_t y0 = col[g + 2], y1 = col[g + 3];
        b0 = nnc_m7_smlad(k0, y0, nnc_m7_smlad(k1, y1, b0));
        const uint32_t l0 = w[g + 2], l1 = w[g + 3];
        a1 = nnc_m7_smlad(l0, x0, nnc_m7_smlad(l1, x1, a1));
        b1 = nnc_m7_smlad(l0, y0, nnc_m7_smlad(l1, y1, b1));
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
}
"""

POINTWISE_SHARED = """\\
/* The header of a stride-1 pointwise layer's records (nnc_m7_pointwise_*): its shape. */
enum {
    NNC_M7_PW_NPOS,        /* positions (h * w), at least 4 */
    NNC_M7_PW_PAIRS,       /* input channel pairs (cin / 2) */
    NNC_M7_PW_NW,          /* column words per position: pairs rounded up to even */
    NNC_M7_PW_RECORDS,     /* output channel pairs (an odd last channel is a pair of its own) */
    NNC_M7_PW_ZERO_POINT,  /* of the output */
    NNC_M7_PW_LO,          /* the clamp */
    NNC_M7_PW_HI,
    NNC_M7_PW_HEADER       /* words */
};
/* One copy for every layer: no inlining, and no clones specialised to one layer's constants. */
#if defined(__GNUC__) && !defined(__clang__)
#define NNC_M7_SHARED __attribute__((noinline, noclone))
#else
#define NNC_M7_SHARED NNC_M7_NOINLINE
#endif

/* Steps of nnc_m7_dot16_2x2 (2 positions x 2 channels x one word pair each), both pointers
 * advancing: NNC_M7_DOT16_STEPS(n, text, ...) runs n steps; `text` is NNC_M7_DOT16_ASM n times.
 * On the M7 the n steps are one asm block, whose operands keep their registers from step to step
 * and from pass to pass (as separate intrinsics, gcc moves the pointers between registers). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__GNUC__)
#define NNC_M7_DOT16_ASM \\
    "ldrd %[rx0], %[rx1], [%[pc]], #8\\n\\t" \\
    "ldrd %[ry0], %[ry1], [%[pc]], #8\\n\\t" \\
    "ldrd %[rk0], %[rk1], [%[pw]], #8\\n\\t" \\
    "smlad %[ra0], %[rk1], %[rx1], %[ra0]\\n\\t" \\
    "smlad %[ra0], %[rk0], %[rx0], %[ra0]\\n\\t" \\
    "smlad %[rb0], %[rk1], %[ry1], %[rb0]\\n\\t" \\
    "smlad %[rb0], %[rk0], %[ry0], %[rb0]\\n\\t" \\
    "ldrd %[rk0], %[rk1], [%[pw]], #8\\n\\t" \\
    "smlad %[ra1], %[rk1], %[rx1], %[ra1]\\n\\t" \\
    "smlad %[ra1], %[rk0], %[rx0], %[ra1]\\n\\t" \\
    "smlad %[rb1], %[rk1], %[ry1], %[rb1]\\n\\t" \\
    "smlad %[rb1], %[rk0], %[ry0], %[rb1]\\n\\t"
#define NNC_M7_DOT16_STEPS(n, text, col, w, a0, a1, b0, b1) \\
    do { \\
        uint32_t x0_, x1_, y0_, y1_, k0_, k1_; \\
        __asm__(text \\
                : [pc] "+r"(col), [pw] "+r"(w), [ra0] "+r"(a0), [ra1] "+r"(a1), [rb0] "+r"(b0), [rb1] "+r"(b1), \\
                  [rx0] "=&r"(x0_), [rx1] "=&r"(x1_), [ry0] "=&r"(y0_), [ry1] "=&r"(y1_), \\
                  [rk0] "=&r"(k0_), [rk1] "=&r"(k1_) \\
                : : "memory"); \\
    } while (0)
/* Passes of n steps until col reaches end (the loop inside the asm block too: no register moves
 * between passes, 2 instructions per pass). */
#define NNC_M7_DOT16_LOOP(n, text, col, end, w, a0, a1, b0, b1) \\
    do { \\
        uint32_t x0_, x1_, y0_, y1_, k0_, k1_; \\
        __asm__("1:\\n\\t" text "cmp %[pc], %[pe]\\n\\tbne 1b" \\
                : [pc] "+r"(col), [pw] "+r"(w), [ra0] "+r"(a0), [ra1] "+r"(a1), [rb0] "+r"(b0), [rb1] "+r"(b1), \\
                  [rx0] "=&r"(x0_), [rx1] "=&r"(x1_), [ry0] "=&r"(y0_), [ry1] "=&r"(y1_), \\
                  [rk0] "=&r"(k0_), [rk1] "=&r"(k1_) \\
                : [pe] "r"(end) : "memory", "cc"); \\
    } while (0)
#else
#define NNC_M7_DOT16_LOOP(n, text, col, end, w, a0, a1, b0, b1) \\
    do { \\
        NNC_M7_DOT16_STEPS(n, text, col, w, a0, a1, b0, b1); \\
    } while ((col) != (end))
#define NNC_M7_DOT16_ASM ""
#define NNC_M7_DOT16_STEPS(n, text, col, w, a0, a1, b0, b1) \\
    do { \\
        for (int32_t i_ = 0; i_ < (n); ++i_) { \\
            uint32_t x0_, x1_, y0_, y1_, k0_, k1_; \\
            NNC_M7_LOAD2(col, x0_, x1_); \\
            NNC_M7_LOAD2(col, y0_, y1_); \\
            NNC_M7_LOAD2(w, k0_, k1_); \\
            (a0) = nnc_m7_smlad(k0_, x0_, nnc_m7_smlad(k1_, x1_, (a0))); \\
            (b0) = nnc_m7_smlad(k0_, y0_, nnc_m7_smlad(k1_, y1_, (b0))); \\
            NNC_M7_LOAD2(w, k0_, k1_); \\
            (a1) = nnc_m7_smlad(k0_, x0_, nnc_m7_smlad(k1_, x1_, (a1))); \\
            (b1) = nnc_m7_smlad(k0_, y0_, nnc_m7_smlad(k1_, y1_, (b1))); \\
        } \\
    } while (0)
#endif

/* The column words of input channels i, j (planes a, b; 4 neighbouring positions from one word
 * of each): (x_i, x_j) of positions 0, 1 to c0[0], c0[2], of positions 2, 3 to c2[0], c2[2]. */
#define NNC_M7_PW_PAIR(a, b, c0, c2) \\
    do { \\
        const uint32_t va_ = nnc_m7_load32(a), vb_ = nnc_m7_load32(b); \\
        const uint32_t si_ = nnc_m7_sxtb16(va_), ri_ = nnc_m7_sxtb16_ror8(va_); \\
        const uint32_t sj_ = nnc_m7_sxtb16(vb_), rj_ = nnc_m7_sxtb16_ror8(vb_); \\
        (c0)[0] = nnc_m7_pkh_lo(si_, sj_); \\
        (c0)[2] = nnc_m7_pkh_lo(ri_, rj_); \\
        (c2)[0] = nnc_m7_pkh_hi(si_, sj_); \\
        (c2)[2] = nnc_m7_pkh_hi(ri_, rj_); \\
    } while (0)

/* The columns of positions p .. p + 3 (two column pairs of nw words at col): two input channel
 * pairs per step, in the word order of nnc_m7_dot16_2x2. Once per four positions: a call of
 * its own (one copy for every variant). */
static NNC_M7_SHARED void nnc_m7_pw_fill(const int8_t* in, uint32_t* col, int32_t npos, int32_t pairs, int32_t nw)
{
    uint32_t* c = col;
    int32_t j = pairs;
    for (; j >= 2; j -= 2) {
        NNC_M7_PW_PAIR(in, in + npos, c, c + 2 * nw);
        NNC_M7_PW_PAIR(in + 2 * npos, in + 3 * npos, c + 1, c + 2 * nw + 1);
        in += 4 * npos;
        c += 4;
    }
    if (j) {
        NNC_M7_PW_PAIR(in, in + npos, c, c + 2 * nw);
    }
}

/* A float stored as the bits of a 32-bit word of a record (gcc: one vldr; memcpy loads it into a
 * core register first). */
#if defined(__GNUC__)
typedef float __attribute__((may_alias)) nnc_m7_f32_word;
#define nnc_m7_word_f32(p) (*(const nnc_m7_f32_word*)(p))
#else
NNC_M7_INLINE float nnc_m7_word_f32(const uint32_t* p)
{
    float f;
    __builtin_memcpy(&f, p, 4);
    return f;
}
#endif
"""

# The requantization of each variant of the shared pointwise function, by the layer's clamp.
POINTWISE_REQUANT = {
    "ssat": "nnc_m7_requant((acc), (m), zp, -128)",     # no ReLU: ssat alone
    "relu": "nnc_m7_requant((acc), (m), zp, lo)",       # ssat, then the fused ReLU's lower bound
    "clamp": "nnc_m7_clamp_round((acc), (m), zp, lo, hi)",
}
# The dot product's steps (word pairs) per loop pass: the largest power of two up to this that
# divides the layer's step count (one variant of the shared function per unroll in use).
POINTWISE_MAX_UNROLL = 8


def pointwise_variant(lo: int, hi: int) -> str:
    if hi == 127:
        return "ssat" if lo == -128 else "relu"
    return "clamp"


def pointwise_name(variant: str, unroll: int, exact: bool) -> str:
    return f"nnc_m7_pointwise_{variant}_{'n' if exact else 'u'}{unroll}"


def pointwise_unroll(nw: int) -> int:
    n2, u = nw // 2, 1
    while u < POINTWISE_MAX_UNROLL and n2 % (2 * u) == 0:
        u *= 2
    return u


def pack_pointwise_layer(weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray, npos: int,
                         zero_point: int, clamp: tuple) -> np.ndarray:
    """What the shared pointwise function reads: the header (NNC_M7_PW_*: positions, input
    channel pairs, column words, records, output zero point, clamp), then the records."""
    cout, cin = weight.shape[:2]
    nw = pack_pointwise(weight[:1]).shape[1]
    header = np.array([npos, cin // 2, nw, (cout + 1) // 2, zero_point, *clamp], dtype=np.int64)
    return np.concatenate([header.astype(np.int32).view(np.uint32),
                           pack_pointwise_records(weight, bias, multiplier, npos)])


def pack_pointwise_records(weight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray, npos: int) -> np.ndarray:
    """The stream the shared pointwise function reads, one record per pair of output channels
    (an odd last channel paired with itself): bias a, bias b twice (the accumulators of both
    positions start from them: two ldrd), the pair's weight words in the
    order of nnc_m7_dot16_2x2, multiplier a, multiplier b (float bits), the offset of channel
    b's plane from channel a's (npos; 0 for the odd last channel: its duplicate writes the
    same values again)."""
    words = interleave_channel_pairs(pack_pointwise(weight))
    cout = weight.shape[0]
    records = (cout + 1) // 2
    per_pair = words.reshape(records, -1)
    pick = np.minimum(np.arange(2 * records), cout - 1).reshape(records, 2)
    offsets = np.full((records, 1), npos, dtype=np.uint32)
    if cout % 2:
        offsets[-1] = 0
    biases = bias.astype(np.int32).view(np.uint32)[pick]
    return np.concatenate([biases, biases, per_pair,
                           multiplier.astype(np.float32).view(np.uint32)[pick], offsets], axis=1).ravel()


def pointwise_function(variant: str, unroll: int, exact: bool) -> str:
    """C of the shared stride-1 pointwise function of one requantization variant and unroll:
    blocks of four positions (the last block overlaps the one before when the position count is
    not a multiple of 4; its outputs are written twice, equal), each filling two column pairs,
    then every record (pair of output channels) against them. The loop bounds are run-time
    values, so one copy serves all the layers of a network that share the variant. `exact`: the
    dot product is `unroll` steps long, straight-line code (no loop test, no pointer moves)."""
    clamp = """\\
NNC_M7_INLINE int8_t nnc_m7_clamp_round(int32_t acc, float m, int32_t zp, int32_t lo, int32_t hi)
{
    const int32_t q = nnc_m7_round(acc, m) + zp;
    return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
}
""" if variant == "clamp" else ""
    text = " ".join(["NNC_M7_DOT16_ASM"] * unroll)
    if exact:
        loop = (f"                NNC_M7_DOT16_STEPS({unroll}, {text}, c, s, a0, a1, b0, b1);\n"
                "                (void)cols_end;\n")
    else:
        loop = f"                NNC_M7_DOT16_LOOP({unroll}, {text}, c, cols_end, s, a0, a1, b0, b1);   /* {unroll} steps per pass */\n"
    rq = POINTWISE_REQUANT[variant]
    return clamp + f"""\\
#define NNC_M7_PW_RQ(acc, m) {rq}
static NNC_M7_SHARED NNC_M7_NO_PRESCHEDULE void {pointwise_name(variant, unroll, exact)}(
    const int8_t* input, int8_t* output, const uint32_t* layer, uint32_t* col)
{{
    const int32_t npos = (int32_t)layer[NNC_M7_PW_NPOS], pairs = (int32_t)layer[NNC_M7_PW_PAIRS];
    const int32_t nw = (int32_t)layer[NNC_M7_PW_NW], zp = (int32_t)layer[NNC_M7_PW_ZERO_POINT];
    const int32_t lo = (int32_t)layer[NNC_M7_PW_LO], hi = (int32_t)layer[NNC_M7_PW_HI];
    const uint32_t* const records = layer + NNC_M7_PW_HEADER;
    const uint32_t* const end = records + layer[NNC_M7_PW_RECORDS] * (uint32_t)(2 * nw + 7);
    (void)lo;
    (void)hi;
    if (nw > pairs) {{   /* the padding word of an odd pair count, never written by the fill */
        col[nw * 2 - 3] = col[nw * 2 - 1] = 0;
        col[nw * 4 - 3] = col[nw * 4 - 1] = 0;
    }}
    for (int32_t b = 0; b < npos; b += 4) {{
        const int32_t p = b < npos - 4 ? b : npos - 4;
        nnc_m7_pw_fill(input + p, col, npos, pairs, nw);
        for (int32_t q = 0; q < 4; q += 2) {{
            const uint32_t* const cols = col + q * nw;
            const uint32_t* const cols_end = cols + 2 * nw;
            const uint32_t* s = records;
            int8_t* o = output + p + q;
            do {{
                int32_t a0 = (int32_t)s[0], a1 = (int32_t)s[1], b0 = (int32_t)s[2], b1 = (int32_t)s[3];
                const uint32_t* c = cols;
                s += 4;
{loop}                const float m0 = nnc_m7_word_f32(s), m1 = nnc_m7_word_f32(s + 1);
                const int32_t off = (int32_t)s[2];
                s += 3;
                o[0] = NNC_M7_PW_RQ(a0, m0);
                o[off] = NNC_M7_PW_RQ(a1, m1);
                o[1] = NNC_M7_PW_RQ(b0, m0);
                o[off + 1] = NNC_M7_PW_RQ(b1, m1);
                o += 2 * off;
            }} while (s != end);
        }}
    }}
}}
#undef NNC_M7_PW_RQ
"""


def _conv_ok(op) -> bool:
    if op.kind != "conv2d" or op.attrs.get("requant") != "float" or op.attrs["groups"] != 1:
        return False
    wzp = op.params.get("weight_zp")
    if (wzp is not None and np.any(wzp != 0)) or op.inputs[0].qparams is None:
        return False
    return tuple(op.attrs["dilation"]) == (1, 1) and bias_folds(op)


def is_first_layer(op) -> bool:
    """Layers that the general kernel's row-pair fill (m7_rowpair) takes stay with it."""
    from .m7_rowpair import applies as rowpair_applies
    return (_conv_ok(op) and op.inputs[0].shape[1] <= FIRST_LAYER_MAX_CIN and op.output.shape[3] >= 2
            and not rowpair_applies(op))


def is_small_pointwise(op) -> bool:
    if not _conv_ok(op):
        return False
    _, cin, h, w = op.inputs[0].shape
    return (tuple(op.params["weight"].shape[2:]) == (1, 1) and tuple(op.attrs["stride"]) == (1, 1)
            and tuple(op.attrs["padding"]) == (0, 0) and cin % 2 == 0 and cin <= POINTWISE_MAX_K
            and h * w >= 4)


def _words(pairs: np.ndarray) -> np.ndarray:
    """int [..., 2] (lo, hi) int16 values -> uint32 words."""
    p = pairs.astype(np.int64) & 0xFFFF
    return (p[..., 0] | (p[..., 1] << 16)).astype(np.uint32)


def first_layer_words(cin: int, kh: int, kw: int) -> list:
    """The column words of a first layer, in order. Kernel rows are read in groups of four bytes,
    group (ic, ky, g) = input bytes 4g .. 4g + 3 of the window's row; v = its 32-bit load.
    A word is ("s", group): sxtb16(v) = (b0, b2) against (w0, w2); ("r", group): sxtb16(v ror 8)
    = (b1, b3) against (w1, w3); or, for groups whose b3 is past the kernel (rows of 3, 7, ...
    taps), ("r2", group_a, group_b): (b1 of a, b1 of b) against (w1 of a, w1 of b), packed by
    pkhbt: two such groups share one word instead of each wasting half of one
    (("r2", group_a, None): (b1, 0) for an odd last one)."""
    gw = (kw + 3) // 4
    three = kw % 4 == 3
    words, halves = [], []
    for ic in range(cin):
        for ky in range(kh):
            for g in range(gw):
                group = (ic, ky, g)
                words.append(("s", group))
                if three and g == gw - 1:
                    halves.append(group)
                else:
                    words.append(("r", group))
    for i in range(0, len(halves), 2):
        words.append(("r2", halves[i], halves[i + 1] if i + 1 < len(halves) else None))
    return words


def pack_first_layer(weight: np.ndarray) -> np.ndarray:
    """[cout, cin, kh, kw] int8 -> uint32 [cout, nw (even)]: the weights of `first_layer_words`,
    taps past kw 0, a zero word at the end if the count is odd."""
    cout, cin, kh, kw = weight.shape
    gw = (kw + 3) // 4
    taps = np.zeros((cout, cin, kh, 4 * gw), dtype=np.int64)
    taps[..., :kw] = weight

    def tap(group, t):
        if group is None:
            return np.zeros(cout, dtype=np.int64)
        ic, ky, g = group
        return taps[:, ic, ky, 4 * g + t]
    columns = []
    for kind, a, *b in first_layer_words(cin, kh, kw):
        if kind == "s":
            lo, hi = tap(a, 0), tap(a, 2)
        elif kind == "r":
            lo, hi = tap(a, 1), tap(a, 3)
        else:
            lo, hi = tap(a, 1), tap(b[0], 1)
        columns.append(_words(np.stack([lo, hi], axis=-1)))
    if len(columns) % 2:
        columns.append(np.zeros(cout, dtype=np.uint32))
    return np.stack(columns, axis=1)


def pack_pointwise(weight: np.ndarray) -> np.ndarray:
    """[cout, cin, 1, 1] int8 -> uint32 [cout, cin / 2 (rounded up to even)]: words (w_2j, w_2j+1)."""
    cout, cin = weight.shape[:2]
    words = _words(weight.reshape(cout, cin // 2, 2))
    if words.shape[1] % 2:
        words = np.concatenate([words, np.zeros((cout, 1), dtype=np.uint32)], axis=1)
    return words


def interleave_channel_pairs(words: np.ndarray) -> np.ndarray:
    """uint32 [cout, nw] -> flat, in the order nnc_m7_dot16_2x2 reads: per pair of channels, per
    step the two words of the first channel, then the two of the second. An odd last channel is
    paired with itself (so that pair p starts at word 2 * p * nw)."""
    if words.shape[0] % 2:
        words = np.concatenate([words, words[-1:]])
    cout, nw = words.shape
    return words.reshape(cout // 2, 2, nw // 2, 2).transpose(0, 2, 1, 3).ravel()


def column_word(k: int, q: int) -> int:
    """Index of word k of position q (0 or 1) in a column pair (nnc_m7_dot16_2x2's col)."""
    return k // 2 * 4 + q * 2 + k % 2


class M7SmallK(KernelProvider):
    """First layers (<= 3 input channels) and pointwise layers (K <= 256), float requantization."""
    name = "m7"

    def supports(self, op) -> bool:
        return is_first_layer(op) or is_small_pointwise(op)

    def emit(self, op, function: str) -> Kernel:
        prelude = {"m7_0_intrinsics": INTRINSICS, "m7_4_no_preschedule": NO_PRESCHEDULE, "m7_small_k_pack": PACK}
        if is_small_pointwise(op):
            body, consts, scratch, header, shared = self._pointwise(op)
            prelude.update(shared, m7_1_dot=GEMM_DOT, m7_3_requant=REQUANT_SSAT)
            decls = ["const uint32_t* layer", "void* scratch"]
            attributes = ""
        else:
            weight = pack_first_layer(op.params["weight"].astype(np.int8))
            body, scratch, header = self._first_layer(op, weight.shape[1])
            consts = {"weight": interleave_channel_pairs(weight), "bias": folded_bias(op),
                      "multiplier": op.params["multiplier"].astype(np.float32)}
            decls = ["const uint32_t* weight", "const int32_t* bias", "const float* multiplier", "void* scratch"]
            attributes = "NNC_M7_NOINLINE NNC_M7_NO_PRESCHEDULE "
            prelude["m7_small_k_dot16"] = DOT16
            if op.attrs["clamp"][1] == 127:
                prelude["m7_3_requant"] = REQUANT_SSAT
            else:
                prelude["requant_float"] = REQUANT_FLOAT
        src = f"""\
/* {op.name}: {header}.
 * Cortex-M7 kernel: int16 pairs on both sides (weights widened at export, columns by sxtb16),
 * ldrd + smlad, two positions x two output channels per pass. */
{attributes}{_signature(function, decls)}
{{
{body}}}
"""
        args = ["in0", "out0"] + [f"const:{k}" for k in consts] + ["scratch"]
        return Kernel(function, src, args, consts, self.name, prelude, scratch_bytes=scratch)

    @staticmethod
    def _requant(op, acc: str, channel: str) -> str:
        lo, hi = op.attrs["clamp"]
        zp = op.output.qparams.zero_point
        if hi == 127:
            return f"nnc_m7_requant({acc}, multiplier[{channel}], {zp}, {lo})"
        return f"nnc_requant_float({acc}, multiplier[{channel}], {zp}, {lo}, {hi})"

    def _channels(self, op, nw: int, p0: str, p1: str, indent: str) -> str:
        """C of the output-channel loop for the positions p0, p1 (the column pair at `cols`):
        pairs of channels; an odd last channel is its own pair, stored once."""
        cout = op.output.shape[1]
        npos = op.output.shape[2] * op.output.shape[3]
        i = indent
        rq = lambda acc, ch: self._requant(op, acc, ch)   # noqa: E731
        text = f"""\
{i}for (int32_t oc = 0; oc < {cout // 2 * 2}; oc += 2) {{
{i}    int32_t acc[4] = {{ bias[oc], bias[oc + 1], bias[oc], bias[oc + 1] }};
{i}    nnc_m7_dot16_2x2(cols, weight + oc * {nw}, {nw // 2}, acc);
{i}    output[oc * {npos} + {p0}] = {rq("acc[0]", "oc")};
{i}    output[(oc + 1) * {npos} + {p0}] = {rq("acc[1]", "oc + 1")};
{i}    output[oc * {npos} + {p1}] = {rq("acc[2]", "oc")};
{i}    output[(oc + 1) * {npos} + {p1}] = {rq("acc[3]", "oc + 1")};
{i}}}
"""
        if cout % 2:
            last = cout - 1
            text += f"""\
{i}{{   /* the last (odd) output channel */
{i}    int32_t acc[4] = {{ bias[{last}], bias[{last}], bias[{last}], bias[{last}] }};
{i}    nnc_m7_dot16_2x2(cols, weight + {last * nw}, {nw // 2}, acc);
{i}    output[{last * npos} + {p0}] = {rq("acc[0]", str(last))};
{i}    output[{last * npos} + {p1}] = {rq("acc[2]", str(last))};
{i}}}
"""
        return text

    def _pointwise(self, op):
        """1x1, stride 1: a call of the shared function of its requantization variant and
        unroll, with the layer's constants (pack_pointwise_layer)."""
        _, cin, h, w = op.inputs[0].shape
        cout = op.output.shape[1]
        lo, hi = op.attrs["clamp"]
        nw = pack_pointwise(op.params["weight"][:1].astype(np.int8)).shape[1]
        variant, unroll = pointwise_variant(lo, hi), pointwise_unroll(nw)
        function = pointwise_name(variant, unroll, unroll == nw // 2)
        layer = pack_pointwise_layer(op.params["weight"].astype(np.int8), folded_bias(op), op.params["multiplier"],
                                     h * w, op.output.qparams.zero_point, (lo, hi))
        body = f"    {function}(input, output, layer, (uint32_t*)scratch);\n"
        header = f"pointwise conv2d {cin}x{h}x{w} -> {cout}x{h}x{w}, through {function}"
        prelude = {"m7_small_k_pw_0": POINTWISE_SHARED,
                   f"m7_small_k_pw_1_{function}": pointwise_function(variant, unroll, unroll == nw // 2)}
        return body, {"layer": layer}, 4 * 4 * nw, header, prelude

    def _first_layer(self, op, nw: int):
        _, cin, h, w = op.inputs[0].shape
        _, cout, oh, ow = op.output.shape
        kh, kw = (int(d) for d in op.params["weight"].shape[2:])
        (sh, sw), (ph, pw) = op.attrs["stride"], op.attrs["padding"]
        zp = op.inputs[0].qparams.zero_point
        gw = (kw + 3) // 4
        # padded rows: the image with its padding, and room for the last group's 4 bytes
        wb = max(w + 2 * pw, (ow - 1) * sw + 4 * gw)
        whole = cin * (h + 2 * ph) * wb <= WHOLE_COPY_MAX
        rows = h + 2 * ph if whole else kh          # rows per input channel in the copy
        copy_bytes = cin * rows * wb
        header = (f"conv2d {cin}x{h}x{w} -> {cout}x{oh}x{ow}, kernel {kh}x{kw}, stride {sh}x{sw}, "
                  f"padding {ph}x{pw}; padded input copy: {'the whole image' if whole else f'a band of {kh} rows'}"
                  f" ({cin}x{rows}x{wb}, at the zero point {zp})")
        col_words = 2 * nw
        words = first_layer_words(cin, kh, kw)
        zero_tail = "".join(f"    col[{column_word(k, q)}] = 0;\n" for q in range(2) for k in range(len(words), nw))

        def fill(q: int, x: str, i: str) -> str:
            """C that fills column q from the rows at x: one load and sxtb16 per group of four
            input bytes, pkhbt for two groups' b1."""
            def name(group):
                return "v{}_{}_{}".format(*group)
            loads = "".join(f"{i}    const uint32_t {name((ic, ky, g))} = nnc_m7_load32({x} + {(ic * rows + ky) * wb + 4 * g});\n"
                            for ic in range(cin) for ky in range(kh) for g in range(gw))
            lines = []
            for k, (kind, a, *b) in enumerate(words):
                if kind == "s":
                    value = f"nnc_m7_sxtb16({name(a)})"
                elif kind == "r":
                    value = f"nnc_m7_sxtb16_ror8({name(a)})"
                elif b[0] is not None:
                    value = f"nnc_m7_pkh_lo(nnc_m7_sxtb16_ror8({name(a)}), nnc_m7_sxtb16_ror8({name(b[0])}))"
                else:
                    value = f"nnc_m7_pkh_lo(nnc_m7_sxtb16_ror8({name(a)}), 0)"
                lines.append(f"{i}    col[{column_word(k, q)}] = {value};\n")
            return f"{i}{{\n{loads}{''.join(lines)}{i}}}\n"

        copy_row = f"""\
                for (int32_t i = 0; i < {w // 4 * 4}; i += 4) {{
                    nnc_m7_store32(dst + i, nnc_m7_load32(src + i));
                }}
""" if w >= 4 else ""
        copy_row += "".join(f"                dst[{x}] = src[{x}];\n" for x in range(w // 4 * 4, w))
        init = f"""\
    uint32_t* const col = (uint32_t*)scratch;          /* a column pair, {nw} words each */
    int8_t* const rows = (int8_t*)scratch + {4 * col_words};
    for (int32_t i = 0; i < {copy_bytes}; ++i) {{       /* the padding: the zero point */
        rows[i] = {zp};
    }}
{zero_tail}"""
        if whole:
            body = init + f"""\
    for (int32_t r = 0; r < {cin * h}; ++r) {{
        const int8_t* src = input + r * {w};
        int8_t* dst = rows + (r / {h} * {rows} + r % {h} + {ph}) * {wb} + {pw};
{copy_row.replace(" " * 16, " " * 8)}    }}
    for (int32_t p = 0; p < {oh * ow}; p += 2) {{
        const int32_t p1 = p + 1 < {oh * ow} ? p + 1 : p;   /* an odd last position: computed twice */
        const int8_t* const x0 = rows + p / {ow} * {sh * wb} + p % {ow} * {sw};
        const int8_t* const x1 = rows + p1 / {ow} * {sh * wb} + p1 % {ow} * {sw};
{fill(0, "x0", " " * 8)}{fill(1, "x1", " " * 8)}        const uint32_t* const cols = col;
{self._channels(op, nw, "p", "p1", " " * 8)}    }}
"""
        else:
            body = init + f"""\
    for (int32_t oy = 0; oy < {oh}; ++oy) {{
        /* the band: input rows oy * {sh} - {ph} .. + {kh - 1} of every channel, padding outside the image */
        for (int32_t ic = 0; ic < {cin}; ++ic) {{
            for (int32_t ky = 0; ky < {kh}; ++ky) {{
                const int32_t iy = oy * {sh} - {ph} + ky;
                int8_t* dst = rows + (ic * {rows} + ky) * {wb} + {pw};
                if (iy < 0 || iy >= {h}) {{
                    for (int32_t i = 0; i < {w}; ++i) {{
                        dst[i] = {zp};
                    }}
                    continue;
                }}
                const int8_t* src = input + (ic * {h} + iy) * {w};
{copy_row}            }}
        }}
        for (int32_t ox = 0; ox < {ow}; ox += 2) {{
            const int32_t ox1 = ox + 1 < {ow} ? ox + 1 : ox - 1;   /* an odd last position: with the one before */
            const int8_t* const x0 = rows + ox * {sw};
            const int8_t* const x1 = rows + ox1 * {sw};
{fill(0, "x0", " " * 12)}{fill(1, "x1", " " * 12)}            const uint32_t* const cols = col;
{self._channels(op, nw, f"oy * {ow} + ox", f"oy * {ow} + ox1", " " * 12)}        }}
    }}
"""
        return body, 4 * col_words + copy_bytes, header
