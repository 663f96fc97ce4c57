"""The Cortex-M7 convolution's dot products on a column pair, every output channel pair in one call.

A convolution computes two output positions a and b per pass (`m7_kernels`). Their columns
(int16 window values, `m7_gemm`) are stored interleaved word by word: a01 b01 a23 b23 a45 ...
(aXY is the 32-bit word of a's values X and Y). One `ldm` then brings a group of 4 values of both
columns, and one more the group's widened weights of two output channels (pack_wide_weights):

    ldm cols!, {a01, b01, a23, b23}
    ldm w!, {c0w01, c0w23, c1w01, c1w23}
    8 x smlad                                   10 instructions, 16 MACs

where the separate columns need two `ldrd` of columns and two of weights (12). The loop needs 14
registers (4 accumulators, 4 column and 4 weight words, 2 pointers), more than inline assembly in
a C function may take, so on the M7 it is a whole function in assembly (`naked`: no code of the
compiler's around it). It runs every channel pair of the layer: the pair's biases start its
accumulators, the 4 sums go to `acc` (a0, a1, b0, b1 per pair, as the 2x2 dot products of
`m7_gemm` leave them), and the caller requantizes them (C, the same for every target). Its group
loop is unrolled 8 times and entered in the middle for the remainder (n4 % 8 groups first), so
one function serves every column length.

Elsewhere (the host) the same function is portable C on the portable intrinsics: bit for bit the
same sums (smlad wraps like the C), which the kernel tests check on the host and on the emulated
M7 with the same source.
"""
from __future__ import annotations

# Bytes of one group's code in the assembly (2 ldm.w + 8 smlad, 4 bytes each): the entry for
# the remainder is computed from it, and the assembler checks it.
GROUP_BYTES = 40
UNROLL = 8


def _group_asm() -> str:
    lines = ["ldmia.w r0!, {r8, r9, r10, r11}",        # a01 b01 a23 b23
             "ldmia.w r1!, {r2, r3, r12, lr}",         # channel 0: w01 w23, channel 1: w01 w23
             "smlad r4, r2, r8, r4", "smlad r6, r2, r9, r6",
             "smlad r5, r12, r8, r5", "smlad r7, r12, r9, r7",
             "smlad r4, r3, r10, r4", "smlad r6, r3, r11, r6",
             "smlad r5, lr, r10, r5", "smlad r7, lr, r11, r7"]
    return "".join(f'        "{line}\\n"\n' for line in lines)


GEMM_PAIRS = f"""\
/* Every output channel pair of a convolution against the interleaved columns of two positions a
 * and b (m7_pairs): for pair p, with w at its block (int32 biases b0 b1, two float multipliers,
 * then n4 groups of widened weights, pack_wide_weights), acc[4p .. 4p + 3] =
 * b0 + w0 . a, b1 + w1 . a, b0 + w0 . b, b1 + w1 . b. pairs >= 1, n4 >= 1. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__thumb2__) && defined(__GNUC__)
/* r0 cols, r1 w, r2 acc, r3 n4, [sp] pairs (AAPCS; the parameters are unused as C names). Locals
 * at sp: first column word, end of the columns, the loop entry for the first pass, the next acc;
 * pairs (the 5th argument) at sp + 52 after the pushes. */
#define NNC_M7_IN_REGISTER __attribute__((unused))
__attribute__((naked, noinline)) static void nnc_m7_gemm_pairs(
    const int16_t* cols NNC_M7_IN_REGISTER, const uint32_t* w NNC_M7_IN_REGISTER,
    int32_t* acc NNC_M7_IN_REGISTER, int32_t n4 NNC_M7_IN_REGISTER, int32_t pairs NNC_M7_IN_REGISTER)
{{
    __asm__ volatile(
        ".syntax unified\\n"
        "push {{r4-r11, lr}}\\n"
        "sub sp, sp, #16\\n"
        "add r4, r0, r3, lsl #4\\n"          /* the end of the columns: 16 bytes a group */
        "strd r0, r4, [sp]\\n"
        "str r2, [sp, #12]\\n"
        "and r4, r3, #{UNROLL - 1}\\n"       /* groups the first pass skips: (8 - n4 % 8) % 8 */
        "rsb r4, r4, #{UNROLL}\\n"
        "and r4, r4, #{UNROLL - 1}\\n"
        "mov r5, #{GROUP_BYTES}\\n"
        "adr.w r6, 1f\\n"
        "mla r6, r4, r5, r6\\n"
        "orr r6, r6, #1\\n"                  /* Thumb */
        "str r6, [sp, #8]\\n"
        "2:\\n"                              /* a channel pair */
        "ldrd r4, r5, [r1], #16\\n"          /* its biases; the multipliers are the caller's */
        "mov r6, r4\\n"
        "mov r7, r5\\n"
        "ldr r0, [sp]\\n"
        "ldr r8, [sp, #8]\\n"
        "bx r8\\n"
        "1:\\n"
{_group_asm() * UNROLL}        "3:\\n"
        ".if (3b - 1b) - {GROUP_BYTES * UNROLL}\\n"
        ".error \\"nnc_m7_gemm_pairs: a group's code is not {GROUP_BYTES} bytes\\"\\n"
        ".endif\\n"
        "ldr r8, [sp, #4]\\n"
        "cmp r0, r8\\n"
        "bne 1b\\n"
        "ldr r8, [sp, #12]\\n"
        "stmia r8!, {{r4, r5, r6, r7}}\\n"
        "str r8, [sp, #12]\\n"
        "ldr r8, [sp, #52]\\n"
        "subs r8, r8, #1\\n"
        "str r8, [sp, #52]\\n"
        "bne 2b\\n"
        "add sp, sp, #16\\n"
        "pop {{r4-r11, pc}}\\n");
}}
#else
NNC_M7_NOINLINE static void nnc_m7_gemm_pairs(const int16_t* cols, const uint32_t* w, int32_t* acc,
                                              int32_t n4, int32_t pairs)
{{
    for (int32_t p = 0; p < pairs; ++p, acc += 4) {{
        int32_t a0 = (int32_t)w[0], a1 = (int32_t)w[1];
        int32_t b0 = a0, b1 = a1;
        const int16_t* c = cols;
        w += 4;
        for (int32_t g = 0; g < n4; ++g, c += 8, w += 4) {{
            const uint32_t a01 = nnc_m7_load32(c), b01 = nnc_m7_load32(c + 2);
            const uint32_t a23 = nnc_m7_load32(c + 4), b23 = nnc_m7_load32(c + 6);
            a0 = nnc_m7_smlad(w[0], a01, a0);
            b0 = nnc_m7_smlad(w[0], b01, b0);
            a1 = nnc_m7_smlad(w[2], a01, a1);
            b1 = nnc_m7_smlad(w[2], b01, b1);
            a0 = nnc_m7_smlad(w[1], a23, a0);
            b0 = nnc_m7_smlad(w[1], b23, b0);
            a1 = nnc_m7_smlad(w[3], a23, a1);
            b1 = nnc_m7_smlad(w[3], b23, b1);
        }}
        acc[0] = a0;
        acc[1] = a1;
        acc[2] = b0;
        acc[3] = b1;
    }}
}}
#endif
"""

DOT1_PAIRS = """\
/* One output channel (the last of an odd count; widened weights, pack_wide_weights) against
 * column `which` (0: a, 1: b) of interleaved columns: acc + w . column. */
NNC_M7_INLINE int32_t nnc_m7_dot1w_pairs(const int16_t* cols, int32_t which, const uint32_t* w, int32_t n4,
                                         int32_t acc)
{
    const int16_t* c = cols + 2 * which;
    for (int32_t g = 0; g < n4; ++g, c += 8) {
        uint32_t w01, w23;
        NNC_M7_LOAD2(w, w01, w23);
        acc = nnc_m7_smlad(w01, nnc_m7_load32(c), acc);
        acc = nnc_m7_smlad(w23, nnc_m7_load32(c + 4), acc);
    }
    return acc;
}
"""

INTERLEAVE = """\
/* Columns a and b (n4 groups of 4 int16 values each) -> interleaved word by word into `cols`. */
NNC_M7_INLINE void nnc_m7_interleave(const int16_t* a, const int16_t* b, int16_t* cols, int32_t n4)
{
    for (int32_t g = 0; g < n4; ++g) {
        uint32_t a01, a23, b01, b23;
        NNC_M7_LOAD2(a, a01, a23);
        NNC_M7_LOAD2(b, b01, b23);
        NNC_M7_STORE2_AT(cols, 0, a01, b01);
        NNC_M7_STORE2_AT(cols, 8, a23, b23);
        cols += 8;
    }
}
"""


def interleaved_slot(value: int, column: int) -> int:
    """The int16 index in the interleaved pair of value `value` of column `column` (0: a, 1: b)."""
    return 4 * (value // 2) + 2 * column + value % 2
