"""The dot products of the Cortex-M7 convolution and dense kernels, and the weight layouts they read.

A column (`col`) is the input window of one output position as int16 values, padded with zeros to
a multiple of 4 (see `m7_kernels`). Each `smlad` does two MACs: a 32-bit word of two int16 column
values times a word of two int16 weights. Two weight layouts:

- int8 (`pack_weights`): each group of 4 weights of a channel is stored as w0 w2 w1 w3, so that
  `sxtb16(word)` is the int16 pair (w0, w1) and `sxtb16(word ror 8)` is (w2, w3); the channels of
  a block are interleaved word by word. One load brings four weights, two `sxtb16` widen them.
- wide (`pack_wide_weights`): the weights already widened at export, two int16 per 32-bit word,
  two output channels interleaved per group of 4. No widening in the loop: for two channels x
  two columns a group of 4 is 2 `ldrd` of columns, 2 `ldrd` of weights and 8 `smlad` (16 MACs),
  where the int8 layout needs 3 `ldrd`, 4 `sxtb16` and 8 `smlad`. It costs twice the flash, so
  a convolution uses it only when its weights are at most WIDE_WEIGHTS_MAX bytes (a weight is
  read once per output position there; a dense layer reads each weight once per inference and
  keeps the int8 layout, four channels per pass sharing each column load).

The loops are unrolled: the count is a constant once inlined, and the loop's own instructions
(a decrement and a branch; the pointers advance in the `ldrd`s) are paid once per pass. dot4
(dense layers) repeats its step twice (`NNC_M7_UNROLL2`); the 2x2 dot product of the
convolutions that keep int8 weights or run fused with a max pool is generated per layer
(`dot2x2`) with up to 7 steps per pass where that pays for its code (`unroll_factor`). The other
convolutions (widened weights) run `m7_pairs`: both columns interleaved, all channel pairs in one
assembly function.
"""
from __future__ import annotations

import numpy as np

# A convolution whose int8 weights take at most this many bytes stores them widened to int16
# (twice the flash, about a fifth fewer instructions per MAC). Larger layers keep int8 so that
# the biggest networks that fit a 1 MB part today still fit.
WIDE_WEIGHTS_MAX = 64 * 1024

DOT = """\
/* The dot products of the kernels. `col`, `a`, `b` hold int16 values (the input, sign-extended),
 * `w` the weights as pack_weights() / pack_wide_weights() lay them out, n4 = column length / 4.
 * Inlined into each kernel, where n4 is a constant. */
#if defined(__GNUC__) && !defined(__clang__)
#define NNC_M7_UNROLL2 _Pragma("GCC unroll 2")
#define NNC_M7_PRAGMA(text) _Pragma(#text)
#define NNC_M7_UNROLL(n) NNC_M7_PRAGMA(GCC unroll n)
#else
#define NNC_M7_UNROLL2
#define NNC_M7_UNROLL(n)
#endif
/* lo, hi = the two 32-bit words at p (4-byte aligned); p advances by 8 bytes. One `ldrd` with
 * post-increment on the M7 (gcc splits or reorders plain loads, and spends an add per pointer). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__GNUC__)
#define NNC_M7_LOAD2(p, lo, hi) __asm__("ldrd %0, %1, [%2], #8" : "=r"(lo), "=r"(hi), "+r"(p) : : "memory")
/* lo, hi stored as the two 32-bit words `off` bytes (a literal, a multiple of 4 up to 1020) past p
 * (4-byte aligned): one `strd` (volatile: it has no output; gcc keeps two stores apart). */
#define NNC_M7_STORE2_AT(p, off, lo, hi) \\
    __asm__ volatile("strd %1, %2, [%0, #" #off "]" : : "r"(p), "r"(lo), "r"(hi) : "memory")
#else
#define NNC_M7_STORE2_AT(p, off, lo, hi) \\
    do { \\
        nnc_m7_store32((uint8_t*)(p) + (off), lo); \\
        nnc_m7_store32((uint8_t*)(p) + (off) + 4, hi); \\
    } while (0)
#define NNC_M7_LOAD2(p, lo, hi) \\
    do { \\
        (lo) = nnc_m7_load32(p); \\
        (hi) = nnc_m7_load32((const uint8_t*)(p) + 4); \\
        (p) += 8 / sizeof(*(p)); \\
    } while (0)
#endif

/* Two output channels (their weight words alternate at w, which advances) against one column's
 * words x01, x23: acc0 += w0 . col, acc1 += w1 . col. */
#define NNC_M7_MAC2CH(w, x01, x23, acc0, acc1) \\
    do { \\
        uint32_t w0_, w1_; \\
        NNC_M7_LOAD2(w, w0_, w1_); \\
        NNC_M7_MAC4(w0_, (x01), (x23), (acc0)); \\
        NNC_M7_MAC4(w1_, (x01), (x23), (acc1)); \\
    } while (0)

/* The four accumulators a kernel keeps in registers through its loop, back into acc[]. */
#define NNC_M7_STORE4(acc, x0, x1, x2, x3) \\
    do { (acc)[0] = (x0); (acc)[1] = (x1); (acc)[2] = (x2); (acc)[3] = (x3); } while (0)

/* int8 weights (pack_weights): the pair (w0, w1) and (w2, w3) of a word, widened. */
#define NNC_M7_MAC4(word, x01, x23, acc) \\
    do { \\
        (acc) = nnc_m7_smlad(nnc_m7_sxtb16(word), (x01), (acc)); \\
        (acc) = nnc_m7_smlad(nnc_m7_sxtb16_ror8(word), (x23), (acc)); \\
    } while (0)

/* One output channel (the last of an odd count). */
NNC_M7_INLINE int32_t nnc_m7_dot1(const int16_t* col, const uint32_t* w, int32_t n4, int32_t acc)
{
    for (int32_t g = 0; g < n4; ++g) {
        uint32_t x01, x23;
        NNC_M7_LOAD2(col, x01, x23);
        NNC_M7_MAC4(w[g], x01, x23, acc);
    }
    return acc;
}

/* Two output channels (their weights alternate word by word), one column:
 * acc[0] += w0 . col, acc[1] += w1 . col. */
NNC_M7_INLINE void nnc_m7_dot2(const int16_t* col, const uint32_t* w, int32_t n4, int32_t acc[2])
{
    int32_t a0 = acc[0], a1 = acc[1];
    for (int32_t g = 0; g < n4; ++g) {
        uint32_t x01, x23;
        NNC_M7_LOAD2(col, x01, x23);
        NNC_M7_MAC2CH(w, x01, x23, a0, a1);
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* Four output channels (weights interleaved word by word), one column: each column word is
 * loaded once for the four. acc[c] += wc . col. */
NNC_M7_INLINE void nnc_m7_dot4(const int16_t* col, const uint32_t* w, int32_t n4, int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    NNC_M7_UNROLL2
    for (int32_t g = 0; g < n4; ++g) {
        uint32_t x01, x23;
        NNC_M7_LOAD2(col, x01, x23);
        NNC_M7_MAC2CH(w, x01, x23, a0, a1);
        NNC_M7_MAC2CH(w, x01, x23, a2, a3);
    }
    NNC_M7_STORE4(acc, a0, a1, a2, a3);
}

/* Two output channels, two columns a and b, one group of 4 values (their words a01, a23 and b01,
 * b23 loaded; w advances): each weight word is loaded and widened once for both.
 * a0, a1 += w0 . a, w1 . a; b0, b1 += w0 . b, w1 . b.
 * The loops around it are generated per kernel (`dot2x2`), unrolled to fit their length. */
#define NNC_M7_MAC2X2(w, a01, a23, b01, b23, a0, a1, b0, b1) \\
    do { \\
        uint32_t w0_, w1_, s_; \\
        NNC_M7_LOAD2(w, w0_, w1_); \\
        s_ = nnc_m7_sxtb16(w0_); \\
        (a0) = nnc_m7_smlad(s_, (a01), (a0)); \\
        (b0) = nnc_m7_smlad(s_, (b01), (b0)); \\
        s_ = nnc_m7_sxtb16_ror8(w0_); \\
        (a0) = nnc_m7_smlad(s_, (a23), (a0)); \\
        (b0) = nnc_m7_smlad(s_, (b23), (b0)); \\
        s_ = nnc_m7_sxtb16(w1_); \\
        (a1) = nnc_m7_smlad(s_, (a01), (a1)); \\
        (b1) = nnc_m7_smlad(s_, (b01), (b1)); \\
        s_ = nnc_m7_sxtb16_ror8(w1_); \\
        (a1) = nnc_m7_smlad(s_, (a23), (a1)); \\
        (b1) = nnc_m7_smlad(s_, (b23), (b1)); \\
    } while (0)

/* The same with wide weights (pack_wide_weights): every loaded word is used twice. */
#define NNC_M7_MAC2X2W(w, a01, a23, b01, b23, a0, a1, b0, b1) \\
    do { \\
        uint32_t w01_, w23_; \\
        NNC_M7_LOAD2(w, w01_, w23_); \\
        (a0) = nnc_m7_smlad(w01_, (a01), (a0)); \\
        (b0) = nnc_m7_smlad(w01_, (b01), (b0)); \\
        (a0) = nnc_m7_smlad(w23_, (a23), (a0)); \\
        (b0) = nnc_m7_smlad(w23_, (b23), (b0)); \\
        NNC_M7_LOAD2(w, w01_, w23_); \\
        (a1) = nnc_m7_smlad(w01_, (a01), (a1)); \\
        (b1) = nnc_m7_smlad(w01_, (b01), (b1)); \\
        (a1) = nnc_m7_smlad(w23_, (a23), (a1)); \\
        (b1) = nnc_m7_smlad(w23_, (b23), (b1)); \\
    } while (0)

/* Wide weights (pack_wide_weights): one output channel, one column. */
NNC_M7_INLINE int32_t nnc_m7_dot1w(const int16_t* col, const uint32_t* w, int32_t n4, int32_t acc)
{
    for (int32_t g = 0; g < n4; ++g) {
        uint32_t x01, x23, w01, w23;
        NNC_M7_LOAD2(col, x01, x23);
        NNC_M7_LOAD2(w, w01, w23);
        acc = nnc_m7_smlad(w01, x01, acc);
        acc = nnc_m7_smlad(w23, x23, acc);
    }
    return acc;
}
"""


# The 2x2 dot product's loop body repeats its step (a group of 4 values: 16 MACs) up to this
# many times. Each pass of the loop costs a decrement and a branch, each extra step 48 (wide
# weights) or 60 bytes of code, and a network has 8 KB of model code: a layer unrolls beyond 2
# only where that saves at least MIN_SAVED_PER_BYTE instructions per inference per byte.
MAX_UNROLL = 7
MIN_SAVED_PER_BYTE = 100


def unroll_factor(n4: int, calls: int, wide: bool) -> int:
    """How often the loop body repeats the step for columns of n4 groups of 4, in a layer that
    calls the dot product `calls` times per inference: the largest divisor of n4 up to
    MAX_UNROLL (no remainder code; a short column has no loop left) that pays for its code, else
    2 (with a remainder step where n4 is odd)."""
    def passes(u):
        return 0 if u == n4 else -(-n4 // u)
    step_bytes = 48 if wide else 60
    for u in sorted((d for d in range(3, MAX_UNROLL + 1) if n4 % d == 0), reverse=True):
        if 2 * calls * (passes(2) - passes(u)) >= MIN_SAVED_PER_BYTE * (u - 2) * step_bytes:
            return u
    return 2


def dot2x2(wide: bool, n4: int, calls: int) -> tuple:
    """(name, C source) of the dot product of two output channels x two columns a and b for
    columns of n4 groups of 4, in the weight layout `wide` or int8, unrolled by unroll_factor:
    acc = { w0 . a, w1 . a, w0 . b, w1 . b } (plus what acc held)."""
    u = unroll_factor(n4, calls, wide)
    name = f"nnc_m7_dot2x2{'w' if wide else ''}_u{u}"
    return name, f"""\
NNC_M7_INLINE void {name}(const int16_t* a, const int16_t* b, const uint32_t* w, int32_t n4, int32_t acc[4])
{{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    NNC_M7_UNROLL({u})
    for (int32_t g = 0; g < n4; ++g) {{
        uint32_t a01, a23, b01, b23;
        NNC_M7_LOAD2(a, a01, a23);
        NNC_M7_LOAD2(b, b01, b23);
        {"NNC_M7_MAC2X2W" if wide else "NNC_M7_MAC2X2"}(w, a01, a23, b01, b23, a0, a1, b0, b1);
    }}
    NNC_M7_STORE4(acc, a0, a1, b0, b1);
}}
"""


def _padded(weight: np.ndarray) -> tuple:
    """[cout, ...] -> ([cout, kp] int8 with zeros after K, kp = K rounded up to a multiple of 4)."""
    w = np.asarray(weight, dtype=np.int8).reshape(weight.shape[0], -1)
    cout, k = w.shape
    kp = (k + 3) // 4 * 4
    padded = np.zeros((cout, kp), dtype=np.int8)
    padded[:, :k] = w
    return padded, kp


def channel_blocks(cout: int, block: int) -> list:
    """(first channel, size) of the blocks a kernel computes together: blocks of `block`, then
    what is left in a block of 2 and/or of 1."""
    blocks, oc = [], 0
    for size in (block, 2, 1):
        while cout - oc >= size and size <= block:
            blocks.append((oc, size))
            oc += size
    return blocks


def pack_weights(weight: np.ndarray, block: int = 2) -> tuple:
    """[cout, K] int8 -> (uint32 words of 4 int8 weights, first byte lowest; K padded to a
    multiple of 4). 32-bit words so that the array is aligned for `ldrd`.

    Each group of 4 becomes w0 w2 w1 w3; the channels of a block (channel_blocks) alternate word
    by word. Channel oc's block starts at word oc * kp / 4."""
    padded, kp = _padded(weight)
    groups = padded.reshape(padded.shape[0], kp // 4, 4)[:, :, [0, 2, 1, 3]]
    parts = [groups[oc:oc + n].transpose(1, 0, 2).ravel() for oc, n in channel_blocks(len(groups), block)]
    return np.concatenate(parts).astype(np.int8).view("<u4").astype(np.uint32), kp


def pack_wide_weights(weight: np.ndarray) -> tuple:
    """[cout, K] int8 -> (uint32 words: int16 pairs (w[k], w[k+1]), low half first; K padded to a
    multiple of 4). Channels 2p and 2p+1 alternate two words (one group of 4) at a time; an odd
    last channel follows alone. Channel oc's block starts at word oc * kp / 2."""
    padded, kp = _padded(weight)
    halves = padded.astype(np.int16).view(np.uint16).astype(np.uint32)
    words = halves[:, 0::2] | (halves[:, 1::2] << 16)             # [cout, kp / 2]
    groups = words.reshape(len(words), kp // 4, 2)
    parts = [groups[oc:oc + n].transpose(1, 0, 2).ravel() for oc, n in channel_blocks(len(groups), 2)]
    return np.concatenate(parts).astype(np.uint32), kp


def with_epilogue_constants(packed: np.ndarray, stride: int, bias: np.ndarray, multiplier: np.ndarray) -> np.ndarray:
    """The weight words of a block layout (channel_blocks of 2; a channel's weights are `stride`
    words) with, before each block, its channels' int32 biases and then their float32
    multipliers (as their bits): one pointer walks a layer's constants in the order its kernel
    reads them, so that none of its loop's registers holds a bias or multiplier pointer."""
    bias = np.asarray(bias, dtype=np.int32).view(np.uint32)
    multiplier = np.asarray(multiplier, dtype=np.float32).view(np.uint32)
    parts = []
    for oc, n in channel_blocks(len(bias), 2):
        parts += [bias[oc:oc + n], multiplier[oc:oc + n], packed[oc * stride:(oc + n) * stride]]
    return np.concatenate(parts).astype(np.uint32)
