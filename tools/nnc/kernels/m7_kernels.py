"""Cortex-M7 kernels: conv2d (also grouped) and dense on the DSP dual 16-bit MAC (`smlad`).

Same arithmetic as the portable kernels (`nnc.arith`: int32 accumulator including the bias,
float32 requantization rounded half to even), so the same tests apply whichever kernel runs.

How a layer runs:
- For each output position the input window is copied once into an int16 column (sign-extended
  int8; the input zero point is folded into the bias at export, see `folded_bias`), laid out like
  the flattened OIHW weight row (ic, ky, kx) and padded with zeros to a multiple of 4. Padded
  image positions are written as the zero point there (interior positions are copied with
  constant bounds, border positions take a separate path, a small input is copied once with its
  padding), so the MAC loop has no bounds checks. 3-wide windows at stride 1 fill two columns
  at once from shared row loads, in their own tap order (`m7_rowpair`).
- The dot products and the weight layouts are in `m7_gemm`: a convolution's weights widened to
  int16 at export (two output channels x two positions per pass, no widening in the loop) unless
  they are large, then int8 (`sxtb16` in the loop); dense layers int8, four channels per pass.
  With widened weights (groups 1, not fused with a pool) the two positions' columns are stored
  interleaved and one assembly function computes every channel pair (`m7_pairs`); the kernel
  requantizes its sums.
- Requantization is `nearbyintf` as in the portable kernels; on the M7 one `vcvtr.s32.f32`
  (convert in the FPSCR rounding mode, round half to even: vrintr + vcvt in one instruction).
- Dense layers are the same with a single position whose column is the input vector.
- A grouped convolution runs the code of one group once per group, on the group's slices.
- A convolution followed by a non-overlapping max pool runs fused (`conv2d_maxpool2d`, see
  `nnc.passes.fuse_conv_maxpool`): per pooled position the columns of its window's positions
  are filled, each channel pair keeps the max of its accumulators, and only that is requantized
  and stored. The convolution's full output never exists: LeNet-5's arena shrinks from 5,880 B
  to the pooled tensors.

The intrinsics (`nnc_m7_sxtb16`, `nnc_m7_smlad`, `nnc_m7_pkhbt16`, ...) are inline assembly when
`__ARM_FEATURE_DSP` is defined and portable C otherwise, so the very same kernel source is
bit-exact-tested on the host. Scratch: the columns live in the arena (`Kernel.scratch_bytes`), in
bytes that are free while the kernel runs, so they cost no RAM beyond the plan's peak.

The qnnpack add, max pooling and average pooling without padding have Cortex-M7 kernels too
(`m7_pointwise`). Depthwise convolutions run `m7_depthwise`. Average pooling with padding, weight
zero points and shift requantization are left to the portable provider (listed after this one).
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider, m7_depthwise, m7_pairs, m7_pointwise, m7_rowpair
from .m7_gemm import (DOT, WIDE_WEIGHTS_MAX, channel_blocks, dot2x2, pack_weights, pack_wide_weights,
                      with_epilogue_constants)
from ..ir import Op, Tensor
from .c_kernels import REQUANT_FLOAT, _signature
from .m7_common import bias_folds as _bias_folds, folded_bias

INTRINSICS = """\
/* Cortex-M DSP intrinsics: inline assembly on an ARM core with the DSP extension, portable C
 * (the same results, bit for bit) everywhere else. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline uint32_t nnc_m7_sxtb16(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}
static inline uint32_t nnc_m7_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static inline int32_t nnc_m7_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlad %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
static inline int32_t nnc_m7_ssat8(int32_t x)
{
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
}
/* acc + a * b (32 bits). */
static inline int32_t nnc_m7_mla(int32_t a, int32_t b, int32_t acc)
{
    int32_t r;
    __asm__("mla %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
/* The low halfword (as int16) saturated to the int8 range; the high one likewise, not used. */
static inline uint32_t nnc_m7_ssat16_8(uint32_t x)
{
    uint32_t r;
    __asm__("ssat16 %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
}
/* r = x >> n (arithmetic, n a literal 1..31) saturated to the int8 range, one instruction. */
#define NNC_M7_SSAT8_ASR(r, x, n) __asm__("ssat %0, #8, %1, asr #" #n : "=r"(r) : "r"(x))
static inline uint32_t nnc_m7_pkhbt16(uint32_t lo, uint32_t hi)
{
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}
static inline uint32_t nnc_m7_pkhtb16(uint32_t hi, uint32_t lo)
{
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}
#else
/* Bytes 0 and 2, sign-extended to the two halfwords. */
static inline uint32_t nnc_m7_sxtb16(uint32_t x)
{
    const uint32_t lo = (uint32_t)(int32_t)(int8_t)(uint8_t)(x & 0xFFu) & 0xFFFFu;
    const uint32_t hi = (uint32_t)(int32_t)(int8_t)(uint8_t)((x >> 16) & 0xFFu) & 0xFFFFu;
    return lo | (hi << 16);
}
static inline uint32_t nnc_m7_sxtb16_ror8(uint32_t x)
{
    return nnc_m7_sxtb16((x >> 8) | (x << 24));
}
/* acc + lo(a)*lo(b) + hi(a)*hi(b), signed halfwords, wrapping like the instruction. */
static inline int32_t nnc_m7_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t p0 = (int32_t)(int16_t)(uint16_t)(a & 0xFFFFu) * (int32_t)(int16_t)(uint16_t)(b & 0xFFFFu);
    const int32_t p1 = (int32_t)(int16_t)(uint16_t)(a >> 16) * (int32_t)(int16_t)(uint16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)p0 + (uint32_t)p1);
}
/* Saturation to the int8 range. */
static inline int32_t nnc_m7_ssat8(int32_t x)
{
    return x < -128 ? -128 : (x > 127 ? 127 : x);
}
/* The low halfword saturated to the int8 range (the high one is not used). */
static inline uint32_t nnc_m7_ssat16_8(uint32_t x)
{
    const int32_t lo = (int16_t)(uint16_t)(x & 0xFFFFu);
    return (uint32_t)(lo < -128 ? -128 : (lo > 127 ? 127 : lo));
}
/* acc + a * b, wrapping like the instruction. */
static inline int32_t nnc_m7_mla(int32_t a, int32_t b, int32_t acc)
{
    return (int32_t)((uint32_t)acc + (uint32_t)a * (uint32_t)b);
}
#define NNC_M7_SSAT8_ASR(r, x, n) ((r) = nnc_m7_ssat8((x) >> (n)))
/* The low halfword of lo below the low halfword of hi. */
static inline uint32_t nnc_m7_pkhbt16(uint32_t lo, uint32_t hi)
{
    return (lo & 0xFFFFu) | (hi << 16);
}
/* The high halfword of hi above the high halfword of lo. */
static inline uint32_t nnc_m7_pkhtb16(uint32_t hi, uint32_t lo)
{
    return (hi & 0xFFFF0000u) | (lo >> 16);
}
#endif
/* f32(acc) * multiplier rounded to an integer in the current rounding mode (half to even), as
 * (int32_t)nearbyintf(...): on an FPU one vcvtr (vrintr + vcvt in one instruction). */
#if defined(__ARM_FP) && (__ARM_FP & 4) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline int32_t nnc_m7_round(int32_t acc, float multiplier)
{
    float r;
    int32_t i;
    __asm__("vcvtr.s32.f32 %0, %1" : "=t"(r) : "t"((float)acc * multiplier));
    __builtin_memcpy(&i, &r, 4);
    return i;
}
#else
static inline int32_t nnc_m7_round(int32_t acc, float multiplier)
{
    return (int32_t)nearbyintf((float)acc * multiplier);
}
#endif
/* 32-bit load of any alignment (one LDR on the Cortex-M7). */
/* Kernels stay separate functions (one per layer, for the debugger and the benchmark); the dot
 * products are always inlined into them, where their lengths are constants. */
#if defined(__GNUC__)
#define NNC_M7_NOINLINE __attribute__((noinline))
#define NNC_M7_INLINE static inline __attribute__((always_inline))
#else
#define NNC_M7_NOINLINE
#define NNC_M7_INLINE static inline
#endif
static inline uint32_t nnc_m7_load32(const void* p)
{
    const uint8_t* b = (const uint8_t*)p;
    uint32_t v;
    __builtin_memcpy(&v, b, 4);
    return v;
}
/* The float32 whose bits are `bits` (a multiplier stored among the weights). */
static inline float nnc_m7_float_bits(uint32_t bits)
{
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}
/* 32-bit store of any alignment (one STR on the Cortex-M7). */
static inline void nnc_m7_store32(void* p, uint32_t v)
{
    __builtin_memcpy(p, &v, 4);
}
"""

MAX3 = """\
NNC_M7_INLINE int32_t nnc_m7_max3(int32_t a, int32_t b, int32_t c)
{
    const int32_t m = a > b ? a : b;
    return m > c ? m : c;
}
"""

REQUANT_SSAT = """\
/* nnc_requant_float with the int8 saturation on `ssat`; `lo` above -128 is a fused ReLU (at -128,
 * a constant once inlined, the ssat alone clamps). */
NNC_M7_INLINE int8_t nnc_m7_requant(int32_t acc, float multiplier, int32_t zero_point, int32_t lo)
{
    const int32_t q = nnc_m7_ssat8(nnc_m7_round(acc, multiplier) + zero_point);
    if (lo == -128) {
        return (int8_t)q;
    }
    return (int8_t)(q < lo ? lo : q);
}
"""

REQUANT_MAGIC = """\
/* nnc_m7_requant for an even output zero point zp where every f32(acc) * multiplier of the layer
 * is below 2^15 - 256 in magnitude (checked at export over the range of its accumulators):
 * adding magic = 1.5 * 2^23 + zp rounds to an integer, half to even (an even addend keeps the
 * parity of the tie-break), and leaves round(f32(acc) * multiplier) + zp in the low halfword of
 * the float's bits; ssat16 saturates it. One instruction less than vcvtr + add + ssat. The
 * product and the sum are separate statements: two roundings, never a fused multiply-add. */
NNC_M7_INLINE int8_t nnc_m7_requant_magic(int32_t acc, float multiplier, float magic, int32_t lo)
{
    float y = (float)acc * multiplier;
    y = y + magic;
    uint32_t bits;
    __builtin_memcpy(&bits, &y, 4);
    const int32_t q = (int8_t)(uint8_t)(nnc_m7_ssat16_8(bits) & 0xFFu);
    if (lo == -128) {
        return (int8_t)q;
    }
    return (int8_t)(q < lo ? lo : q);
}
"""

# |f32(acc) * multiplier| below this for every accumulator of a layer: nnc_m7_requant_magic.
MAGIC_BOUND = 2 ** 15 - 256


def magic_requant_applies(op, folded_bias_: np.ndarray) -> bool:
    """An even output zero point and |acc * multiplier| below MAGIC_BOUND for every accumulator
    the layer can produce: bias + sum(w * x) over x in the int8 range (padding is the input
    zero point, inside it), with a margin for float32's rounding."""
    if op.output.qparams.zero_point % 2:
        return False
    w = op.params["weight"].reshape(op.params["weight"].shape[0], -1).astype(np.int64)
    reach = np.maximum(w * 127, w * -128).sum(axis=1), np.minimum(w * 127, w * -128).sum(axis=1)
    extreme = np.maximum(np.abs(folded_bias_ + reach[0]), np.abs(folded_bias_ + reach[1]))
    m = np.abs(op.params["multiplier"].astype(np.float64))
    return bool(np.all(extreme * m * 1.001 < MAGIC_BOUND))


# Window rows up to this long are copied with straight-line code.
UNROLLED_ROW = 8
# A padded input up to this many bytes is copied once into the scratch, padding at the zero point:
# every window is then inside the image, and no position takes the slower border path. Larger
# inputs (wide layers) keep the border path rather than spend that much RAM.
PADDED_COPY_MAX = 2048


class _Shape:
    """The numbers every m7 kernel of one op is generated from."""

    def __init__(self, op, kp: int, wide: bool, rowpair: bool = False, k: int = 0, groups: int = 1,
                 pairs: bool = False):
        w = op.params["weight"]
        self.kp, self.n4 = kp, kp // 4
        self.rowpair = rowpair         # the column fill of m7_rowpair (columns in its tap order)
        # every channel pair in one call of m7_pairs on interleaved columns (which the rowpair
        # fill writes directly, other fills through a copy), the sums requantized after it
        self.pairs = pairs
        # weight layout (m7_gemm): the dot products that read it, the pointer type and the
        # distance between two channels in its units
        self.wide = wide
        self.stride = kp // 2 if wide else kp // 4
        self.dot1 = "nnc_m7_dot1w" if wide else "nnc_m7_dot1"
        self.cout = int(w.shape[0])
        self.even = self.cout // 2 * 2
        self.npos = int(np.prod(op.output.shape[2:])) if op.kind != "dense" else 1
        if op.kind == "conv2d_maxpool2d":
            self.ncols = int(np.prod(op.attrs["pool"]["kernel"]))
            calls = self.npos * self.ncols // 2 * (self.even // 2)
        else:
            self.ncols = 1 if self.npos == 1 else 2
            calls = (self.npos + 1) // 2 * (self.even // 2)
        self.dot2x2, self.dot2x2_source = dot2x2(wide, self.n4, calls * groups)
        self.k = k or int(np.prod(w.shape[1:]))    # column length (before the padding to kp)
        self.izp = op.inputs[0].qparams.zero_point
        self.zp = op.output.qparams.zero_point
        self.lo, self.hi = op.attrs["clamp"]
        self.ssat = self.hi == 127     # saturate with ssat, then apply a ReLU's lower bound
        # the requantization's rounding by a float add (REQUANT_MAGIC), where it is exact
        self.magic = self.ssat and op.kind != "dense" and magic_requant_applies(op, folded_bias(op))
        self.padded_shape = None       # (c, h, w) of the padded input copy, if the kernel makes one
        if op.kind != "dense" and any(op.attrs["padding"]) and not rowpair:
            _, c, h, w = op.inputs[0].shape
            ph, pw = op.attrs["padding"]
            if c * (h + 2 * ph) * (w + 2 * pw) <= PADDED_COPY_MAX:
                self.padded_shape = (c, h + 2 * ph, w + 2 * pw)

    @property
    def interleaved_offset(self) -> int:
        """Bytes into the scratch of the interleaved columns (m7_pairs): the columns themselves
        where the rowpair fill writes them so, else after the separate columns."""
        return 0 if self.rowpair else 2 * self.ncols * self.kp

    @property
    def sums_offset(self) -> int:
        """Bytes into the scratch of the sums of nnc_m7_gemm_pairs (4 int32 per channel pair)."""
        return self.interleaved_offset + 4 * self.kp

    @property
    def padded_offset(self) -> int:
        """Bytes into the scratch of the padded input copy."""
        if self.pairs:
            return self.sums_offset + 8 * self.even
        return 2 * self.ncols * self.kp

    @property
    def scratch_bytes(self) -> int:
        padded = int(np.prod(self.padded_shape)) if self.padded_shape else 0
        return self.padded_offset + padded

    def dot2x2_call(self, a: str, w: str) -> str:
        """C: the 2x2 dot product of columns a and a + kp into `acc`."""
        return f"{self.dot2x2}({a}, {a} + {self.kp}, {w}, {self.n4}, acc)"

    def requant(self, acc: str, channel: str, multiplier: str = "") -> str:
        """C requantizing `acc` of output channel `channel` (or by the float `multiplier`)."""
        m = multiplier or f"multiplier[{channel}]"
        if self.magic:
            return f"nnc_m7_requant_magic({acc}, {m}, {1.5 * 2 ** 23 + self.zp:.1f}f, {self.lo})"
        if self.ssat:
            return f"nnc_m7_requant({acc}, {m}, {self.zp}, {self.lo})"
        return f"nnc_requant_float({acc}, {m}, {self.zp}, {self.lo}, {self.hi})"


class M7Kernels(KernelProvider):
    """Cortex-M7 DSP kernels: conv2d (groups 1, alone or fused with a max pool) and dense with
    float requantization, the qnnpack add, average pooling without padding."""
    name = "m7"

    def __init__(self):
        self._prelude = {"m7_0_intrinsics": INTRINSICS, "m7_1_dot": DOT, "m7_2_max3": MAX3}
        self._depthwise = m7_depthwise.M7Depthwise({"m7_0_intrinsics": INTRINSICS,
                                                    "m7_3_requant": REQUANT_SSAT})

    def supports(self, op) -> bool:
        if op.kind == "conv2d_maxpool2d":
            pool = op.attrs["pool"]
            (kh, kw), (oh, ow) = pool["kernel"], op.output.shape[2:]
            # Non-overlapping windows that tile the convolution's output (floor): each conv
            # position is computed once, and the window's positions go two by two.
            return (pool["stride"] == pool["kernel"] and pool["padding"] == (0, 0)
                    and pool["dilation"] == (1, 1) and (kh * kw) % 2 == 0
                    and (oh, ow) == tuple(d // k for d, k in zip(op.attrs["conv_shape"][2:], (kh, kw)))
                    and self._supports_conv(op))
        if m7_depthwise.is_depthwise(op):
            return self._depthwise.supports(op)
        if op.kind == "add":
            return m7_pointwise.add_is_exact(op)
        if op.kind == "avgpool2d":
            return m7_pointwise.avgpool_has_full_windows(op)
        if op.kind == "maxpool2d":
            return m7_pointwise.maxpool_supported(op)
        return op.kind in ("conv2d", "dense") and self._supports_conv(op)

    @staticmethod
    def _supports_conv(op) -> bool:
        if op.attrs.get("requant") != "float":
            return False
        wzp = op.params.get("weight_zp")
        if wzp is not None and np.any(wzp != 0):
            return False
        return op.inputs[0].qparams is not None and _bias_folds(op)

    def emit(self, op, function: str) -> Kernel:
        if op.kind in ("add", "avgpool2d", "maxpool2d"):
            return self._emit_pointwise(op, function)
        if m7_depthwise.is_depthwise(op):
            return self._depthwise.emit(op, function)
        groups = op.attrs["groups"] if op.kind == "conv2d" else 1
        # a grouped convolution: one convolution per group, the same code on slices (the
        # groups' weights, biases and multipliers one after the other)
        views = [_group_view(op, g, groups) for g in range(groups)] if groups > 1 else [op]
        layouts = [self._layout(v) for v in views]
        packed, kp, wide, rowpair, k, one_position = layouts[0]
        consts = {"weight": np.concatenate([lay[0] for lay in layouts]),
                  "bias": np.concatenate([folded_bias(v) for v in views]),
                  "multiplier": np.concatenate([v.params["multiplier"] for v in views]).astype(np.float32)}
        op = views[0]
        # the fused loop (groups 1) over widened weights runs m7_pairs
        pairs = (wide and groups == 1 and not one_position and op.kind == "conv2d"
                 and int(np.prod(op.output.shape[2:])) > 1)
        shape = _Shape(op, kp, wide, rowpair, k, groups, pairs)
        decls = ["const uint32_t* weight", "const int32_t* bias", "const float* multiplier",
                 "void* scratch"]
        if op.kind == "conv2d_maxpool2d":
            body, header = self._conv_pool(op, shape)
        elif one_position:
            body, header = self._one_position(op, shape)
        elif groups == 1:
            # each channel pair's bias and multipliers just before its weights
            consts = {"weight": with_epilogue_constants(packed, shape.stride, consts["bias"],
                                                        consts["multiplier"])}
            decls = ["const uint32_t* weight", "void* scratch"]
            body, header = self._position_pairs(op, shape, fused=True)
        else:
            body, header = self._position_pairs(op, shape)
        ncols = shape.ncols
        zero_tail = ""
        if kp > shape.k and shape.pairs and rowpair:   # the fill writes the interleaved columns
            slots = [m7_pairs.interleaved_slot(v, c) for c in range(2) for v in range(shape.k, kp)]
            zero_tail = "".join(f"    col[{i}] = 0;\n" for i in slots)
        elif kp > shape.k:   # the padding of each column to a multiple of 4 stays zero
            zero_tail = f"""\
    for (int32_t q = 0; q < {ncols}; ++q) {{
        for (int32_t i = {shape.k}; i < {kp}; ++i) {{
            col[q * {kp} + i] = 0;
        }}
    }}
"""
        scratch_note = f"{ncols} column(s) of {kp} int16 values"
        if shape.padded_shape:
            zero_tail += self._padded_copy(op, shape)
            scratch_note += ", then the padded input ({}x{}x{} int8)".format(*shape.padded_shape)
        signature = _signature(function, decls)
        body = zero_tail + body
        if groups > 1:
            header = f"{groups} groups, each a {header}"
            signature, body = _group_loop(signature, body, groups, op, packed.size)
        src = f"""\
/* {op.name}: {header}.
 * Cortex-M7 DSP kernel: smlad on {"int16 weights" if shape.wide else "sxtb16-widened weights"}, {"four output channels per pass" if one_position else "two output channels x two positions per pass"};
 * scratch: {scratch_note}. */
NNC_M7_NOINLINE {signature}
{{
    int16_t* const col = (int16_t*)scratch;
{body}}}
"""
        args = ["in0", "out0"] + [f"const:{c}" for c in consts] + ["scratch"]
        prelude = dict(self._prelude)
        if shape.pairs:
            prelude["m7_1_gemm_pairs"] = m7_pairs.GEMM_PAIRS
            if shape.cout % 2:
                prelude["m7_1_dot1w_pairs"] = m7_pairs.DOT1_PAIRS
            if not rowpair:
                prelude["m7_1_interleave"] = m7_pairs.INTERLEAVE
        elif not one_position:
            prelude[f"m7_1_{shape.dot2x2}"] = shape.dot2x2_source
        if rowpair:
            prelude["m7_4_row4"] = m7_rowpair.ROW4
            if shape.pairs:
                prelude["m7_5_rowpair_border_pairs"] = m7_rowpair.BORDER_PAIRS
            else:
                prelude["m7_5_rowpair_border"] = m7_rowpair.BORDER
        prelude["m7_3_requant" if shape.ssat else "requant_float"] = (
            REQUANT_SSAT if shape.ssat else REQUANT_FLOAT)
        if shape.magic:
            prelude["m7_3_requant_magic"] = REQUANT_MAGIC
        return Kernel(function, src, args, consts, self.name, prelude,
                      scratch_bytes=shape.scratch_bytes)

    @staticmethod
    def _layout(op) -> tuple:
        """(packed weights, kp, wide, rowpair, column length, one position) of a convolution
        (one group) or dense layer."""
        w = op.params["weight"]
        w2d = w.reshape(w.shape[0], -1)
        one_position = op.kind == "dense" or int(np.prod(op.output.shape[2:])) == 1
        # one position reads each weight once: int8, four channels per pass; a convolution reads
        # them once per position: widened at export unless that costs too much flash
        wide = not one_position and w.size <= WIDE_WEIGHTS_MAX
        # 3-wide windows at stride 1: two windows' columns from shared row loads, in their own
        # tap order (the weights follow it)
        rowpair = m7_rowpair.applies(op)
        if rowpair:
            w2d = m7_rowpair.reorder(w2d, m7_rowpair.tap_order(w2d.shape[1] // 3))
        if wide:
            packed, kp = pack_wide_weights(w2d)
        else:
            packed, kp = pack_weights(w2d, block=4 if one_position else 2)
        return packed, kp, wide, rowpair, w2d.shape[1], one_position

    def _emit_pointwise(self, op, function: str) -> Kernel:
        prelude = dict(self._prelude, m7_3_requant=REQUANT_SSAT)
        if op.kind == "add":
            return Kernel(function, m7_pointwise.emit_add(op, function), ["in0", "in1", "out0"], {},
                          self.name, dict(prelude, m7_6_add_round=m7_pointwise.ADD_SIGNED_ROUND))
        if op.kind == "maxpool2d":
            return Kernel(function, m7_pointwise.emit_maxpool(op, function), ["in0", "out0", "scratch"], {},
                          self.name, dict(prelude, m7_6_max4=m7_pointwise.MAX4),
                          scratch_bytes=m7_pointwise.maxpool_scratch(op))
        return Kernel(function, m7_pointwise.emit_avgpool(op, function), ["in0", "out0"], {},
                      self.name, prelude)

    @staticmethod
    def _padded_copy(op, sh) -> str:
        _, c, h, w = op.inputs[0].shape
        ph, pw = op.attrs["padding"]
        _, hp, wp = sh.padded_shape
        return f"""\
    /* the input with its padding at the zero point (real 0): every window lies inside it */
    int8_t* const padded = (int8_t*)scratch + {sh.padded_offset};
    for (int32_t i = 0; i < {c * hp * wp}; ++i) {{
        padded[i] = {sh.izp};
    }}
    for (int32_t row = 0; row < {c * h}; ++row) {{
        const int8_t* src = input + row * {w};
        int8_t* dst = padded + (row / {h} * {hp} + row % {h} + {ph}) * {wp} + {pw};
        for (int32_t x = 0; x < {w}; ++x) {{
            dst[x] = src[x];
        }}
    }}
"""

    def _one_position(self, op, sh):
        """Dense layers and convolutions with one output position: one column."""
        if op.kind == "dense":
            fill = f"""\
    for (int32_t i = 0; i < {sh.k}; ++i) {{
        col[i] = input[i];
    }}
"""
            header = f"dense {sh.k} -> {sh.cout}"
        else:
            fill, header = self._conv_fill(op, sh.izp, "    ", sh.padded_shape)
            fill = "    const int32_t oy = 0, ox = 0;\n" + fill
        blocks = channel_blocks(sh.cout, 4)
        fours = sum(n == 4 for _, n in blocks) * 4
        body = fill
        if fours:
            outs = "".join(f"        output[oc + {c}] = {sh.requant(f'acc[{c}]', f'oc + {c}')};\n" for c in range(4))
            body += f"""\
    for (int32_t oc = 0; oc < {fours}; oc += 4) {{
        int32_t acc[4] = {{ bias[oc], bias[oc + 1], bias[oc + 2], bias[oc + 3] }};
        nnc_m7_dot4(col, weight + oc * {sh.stride}, {sh.n4}, acc);
{outs}    }}
"""
        for oc, n in blocks:
            if n == 2:
                body += f"""\
    {{
        int32_t acc[2] = {{ bias[{oc}], bias[{oc + 1}] }};
        nnc_m7_dot2(col, weight + {oc * sh.stride}, {sh.n4}, acc);
        output[{oc}] = {sh.requant("acc[0]", str(oc))};
        output[{oc + 1}] = {sh.requant("acc[1]", str(oc + 1))};
    }}
"""
            elif n == 1:
                body += f"""\
    output[{oc}] = {sh.requant(f"nnc_m7_dot1(col, weight + {oc * sh.stride}, {sh.n4}, bias[{oc}])", str(oc))};
"""
        return body, header

    def _position_pairs(self, op, sh, fused: bool = False):
        """Convolutions: two output positions per pass (an odd last one is computed twice and
        stored once). `fused`: the weights carry each channel pair's biases and multipliers
        (with_epilogue_constants)."""
        fill, header = self._conv_fill(op, sh.izp, " " * 12, sh.padded_shape)
        ow, npos, kp = op.output.shape[3], sh.npos, sh.kp
        if sh.rowpair:   # npos is even: p + 1 is the next column of the same row
            fill = f"""\
        const int32_t pb = p + 1, oy = p / {ow}, ox = p % {ow};
{m7_rowpair.emit_fill(op, kp, interleaved=sh.pairs)}"""
        else:
            fill = f"""\
        const int32_t pb = p + 1 < {npos} ? p + 1 : p;
        for (int32_t q = 0; q < 2; ++q) {{
            int16_t* const cb = col + q * {kp};
            const int32_t pos = q ? pb : p, oy = pos / {ow}, ox = pos % {ow};
{fill.replace("col[", "cb[")}        }}
"""
            if sh.pairs:
                fill += f"""\
        nnc_m7_interleave(col, col + {kp}, cols, {sh.n4});
"""
        if sh.pairs:
            return self._pairs(sh, fill, npos), header
        if fused:
            return self._fused_pairs(sh, fill, npos, kp), header
        body = f"""\
    for (int32_t p = 0; p < {npos}; p += 2) {{
{fill}        for (int32_t oc = 0; oc < {sh.even}; oc += 2) {{
            int32_t acc[4] = {{ bias[oc], bias[oc + 1], bias[oc], bias[oc + 1] }};
            {sh.dot2x2_call("col", f"weight + oc * {sh.stride}")};
            output[oc * {npos} + p] = {sh.requant("acc[0]", "oc")};
            output[(oc + 1) * {npos} + p] = {sh.requant("acc[1]", "oc + 1")};
            output[oc * {npos} + pb] = {sh.requant("acc[2]", "oc")};
            output[(oc + 1) * {npos} + pb] = {sh.requant("acc[3]", "oc + 1")};
        }}
"""
        if sh.cout % 2:
            last = sh.cout - 1
            w = f"weight + {sh.even * sh.stride}"
            body += f"""\
        output[{last * npos} + p] = {sh.requant(f"{sh.dot1}(col, {w}, {sh.n4}, bias[{last}])", str(last))};
        output[{last * npos} + pb] = {sh.requant(f"{sh.dot1}(col + {kp}, {w}, {sh.n4}, bias[{last}])", str(last))};
"""
        return body + "    }\n", header

    @staticmethod
    def _fused_pairs(sh, fill: str, npos: int, kp: int) -> str:
        """The loops of _position_pairs over weights that carry each block's biases and
        multipliers before its weights: w walks them in order."""
        body = f"""\
    for (int32_t p = 0; p < {npos}; p += 2) {{
{fill}        const uint32_t* w = weight;
        for (int32_t oc = 0; oc < {sh.even}; oc += 2, w += {4 + 2 * sh.stride}) {{
            const int32_t b0 = (int32_t)w[0], b1 = (int32_t)w[1];
            const float m0 = nnc_m7_float_bits(w[2]), m1 = nnc_m7_float_bits(w[3]);
            int32_t acc[4] = {{ b0, b1, b0, b1 }};
            {sh.dot2x2_call("col", "w + 4")};
{_store_channel_pair(sh, npos, "acc")}        }}
"""
        if sh.cout % 2:
            last = sh.cout - 1
            acc = "(int32_t)w[0]"
            body += f"""\
        {{
            const float m = nnc_m7_float_bits(w[1]);
            output[{last * npos} + p] = {sh.requant(f"{sh.dot1}(col, w + 2, {sh.n4}, {acc})", "", "m")};
            output[{last * npos} + pb] = {sh.requant(f"{sh.dot1}(col + {kp}, w + 2, {sh.n4}, {acc})", "", "m")};
        }}
"""
        return body + "    }\n"

    @staticmethod
    def _pairs(sh, fill: str, npos: int) -> str:
        """The loops of _position_pairs on m7_pairs: the sums of every channel pair in one call,
        then each requantized by its multiplier (the weights carry each pair's biases and
        multipliers before its weights, with_epilogue_constants)."""
        block = 4 + 2 * sh.stride
        # offsets in elements of the pointer's type (both are multiples of 4 bytes): a cast from
        # a byte pointer would raise -Wcast-align, which RIOT's build turns on
        body = f"""\
    int16_t* const cols = (int16_t*)scratch + {sh.interleaved_offset // 2};
"""
        if sh.even:
            body += f"""\
    int32_t* const sums = (int32_t*)scratch + {sh.sums_offset // 4};
"""
        body += f"""\
    for (int32_t p = 0; p < {npos}; p += 2) {{
{fill}"""
        if sh.even:
            body += f"""\
        nnc_m7_gemm_pairs(cols, weight, sums, {sh.n4}, {sh.even // 2});
        const uint32_t* w = weight;
        const int32_t* s = sums;
        for (int32_t oc = 0; oc < {sh.even}; oc += 2, w += {block}, s += 4) {{
            const float m0 = nnc_m7_float_bits(w[2]), m1 = nnc_m7_float_bits(w[3]);
{_store_channel_pair(sh, npos, "s")}        }}
"""
        if sh.cout % 2:
            last = sh.cout - 1
            w = f"weight + {sh.even // 2 * block}"
            body += f"""\
        {{
            const uint32_t* const w1 = {w};
            const float m = nnc_m7_float_bits(w1[1]);
            output[{last * npos} + p] = {sh.requant(f"nnc_m7_dot1w_pairs(cols, 0, w1 + 2, {sh.n4}, (int32_t)w1[0])", "", "m")};
            output[{last * npos} + pb] = {sh.requant(f"nnc_m7_dot1w_pairs(cols, 1, w1 + 2, {sh.n4}, (int32_t)w1[0])", "", "m")};
        }}
"""
        return body + "    }\n"

    def _conv_pool(self, op, sh):
        """conv2d + max pool: per pooled position, the columns of the window's conv positions,
        then per channel pair the max of the accumulators, requantized once (requantization is
        monotonic, so this equals the max of the requantized values)."""
        (kh, kw) = op.attrs["pool"]["kernel"]
        win, kp = kh * kw, sh.kp
        _, _, ph, pw = op.output.shape
        npos = ph * pw
        fill, conv_header = self._conv_fill(op, sh.izp, " " * 12, sh.padded_shape)
        header = f"{conv_header}, then max pool {kh}x{kw} -> {sh.cout}x{ph}x{pw}"
        body = f"""\
    for (int32_t p = 0; p < {npos}; ++p) {{
        const int32_t py = p / {pw}, px = p % {pw};
        /* the columns of the {win} convolution positions under this pooling window */
        for (int32_t q = 0; q < {win}; ++q) {{
            int16_t* const cb = col + q * {kp};
            const int32_t oy = py * {kh} + q / {kw}, ox = px * {kw} + q % {kw};
{fill.replace("col[", "cb[")}        }}
        for (int32_t oc = 0; oc < {sh.even}; oc += 2) {{
            int32_t max0 = INT32_MIN, max1 = INT32_MIN;
            for (int32_t q = 0; q < {win}; q += 2) {{
                int32_t acc[4] = {{ bias[oc], bias[oc + 1], bias[oc], bias[oc + 1] }};
                {sh.dot2x2_call(f"col + q * {kp}", f"weight + oc * {sh.stride}")};
                max0 = nnc_m7_max3(max0, acc[0], acc[2]);
                max1 = nnc_m7_max3(max1, acc[1], acc[3]);
            }}
            output[oc * {npos} + p] = {sh.requant("max0", "oc")};
            output[(oc + 1) * {npos} + p] = {sh.requant("max1", "oc + 1")};
        }}
"""
        if sh.cout % 2:
            last = sh.cout - 1
            body += f"""\
        int32_t max = INT32_MIN;
        for (int32_t q = 0; q < {win}; ++q) {{
            const int32_t acc = {sh.dot1}(col + q * {kp}, weight + {sh.even * sh.stride}, {sh.n4}, bias[{last}]);
            max = acc > max ? acc : max;
        }}
        output[{last * npos} + p] = {sh.requant("max", str(last))};
"""
        return body + "    }\n", header

    def _conv_fill(self, op, izp, indent, padded_shape=None):
        """C that fills the column `col` for the output position (oy, ox); returns it and a
        one-line description of the convolution. With `padded_shape` the windows are read from
        the padded copy of the input (no border path)."""
        a = op.attrs
        _, cin, h, w = op.inputs[0].shape
        _, _, oh, ow = op.output.shape
        kh, kw = op.params["weight"].shape[2:]
        (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
        header = (f"conv2d {cin}x{h}x{w} -> {op.output.shape[1]}x{oh}x{ow}, kernel {kh}x{kw}, "
                  f"stride {sh}x{sw}, padding {ph}x{pw}, dilation {dh}x{dw}")
        source = "input"
        if padded_shape:
            _, h, w = padded_shape
            ph = pw = 0
            source = "padded"
        i = indent

        def rows(ky_from, ky_to, kx_from, kx_to, j):
            """Copy rows ky_from..ky_to of every channel's window (indent j)."""
            chan = "ic * " + str(h) + " + " if cin > 1 else ""
            slot = f"(ic * {kh} + ky) * {kw}" if cin > 1 else f"ky * {kw}"
            if kx_from == 0 and kx_to == kw and kw <= UNROLLED_ROW:
                # a whole row of the window: straight-line copies (half the instructions of a loop)
                copy = "".join(f"{j}        c[{kx}] = x[{kx * dw}];\n" for kx in range(kw))
            else:
                copy = (f"{j}        for (int32_t kx = {kx_from}; kx < {kx_to}; ++kx) {{\n"
                        f"{j}            c[kx] = x[{_times('kx', dw)}];\n{j}        }}\n")
            body = f"""\
{j}    for (int32_t ky = {ky_from}; ky < {ky_to}; ++ky) {{
{j}        const int8_t* x = &{source}[({chan}iy0 + {_times("ky", dh)}) * {w} + ix0];
{j}        int16_t* c = &col[{slot}];
{copy}{j}    }}
"""
            if cin == 1:
                return body
            inner = "".join("    " + line + "\n" for line in body.splitlines())
            return f"{j}    for (int32_t ic = 0; ic < {cin}; ++ic) {{\n{inner}{j}    }}\n"

        if ph == 0 and pw == 0:
            fill = f"{i}const int32_t iy0 = {_times('oy', sh)}, ix0 = {_times('ox', sw)};\n"
            return fill + rows(0, kh, 0, kw, i[:-4]), header
        fill = f"""\
{i}const int32_t iy0 = {_times("oy", sh)} - {ph}, ix0 = {_times("ox", sw)} - {pw};
{i}/* the window's rows and columns inside the image */
{i}const int32_t ky_lo = iy0 < 0 ? {_ceil_div("-iy0", dh)} : 0;
{i}const int32_t ky_hi = {_ceil_div(f"{h} - iy0", dh)} < {kh} ? {_ceil_div(f"{h} - iy0", dh)} : {kh};
{i}const int32_t kx_lo = ix0 < 0 ? {_ceil_div("-ix0", dw)} : 0;
{i}const int32_t kx_hi = {_ceil_div(f"{w} - ix0", dw)} < {kw} ? {_ceil_div(f"{w} - ix0", dw)} : {kw};
{i}if (ky_lo == 0 && ky_hi == {kh} && kx_lo == 0 && kx_hi == {kw}) {{
{rows(0, kh, 0, kw, i)}{i}}} else {{
{i}    /* border: the window at the zero point (real 0), then the part inside the image */
{i}    for (int32_t j = 0; j < {cin * kh * kw}; ++j) {{
{i}        col[j] = {izp};
{i}    }}
{rows("ky_lo", "ky_hi", "kx_lo", "kx_hi", i)}{i}}}
"""
        return fill, header


def _store_channel_pair(sh, npos: int, sums: str) -> str:
    """C (indent 12): the 4 sums of channels oc, oc + 1 at positions p, pb (a0, a1, b0, b1 at
    `sums`) requantized by the multipliers m0, m1 into the NCHW output."""
    return f"""\
            int8_t* const out = output + oc * {npos};
            out[p] = {sh.requant(f"{sums}[0]", "", "m0")};
            out[{npos} + p] = {sh.requant(f"{sums}[1]", "", "m1")};
            out[pb] = {sh.requant(f"{sums}[2]", "", "m0")};
            out[{npos} + pb] = {sh.requant(f"{sums}[3]", "", "m1")};
"""


def _group_view(op, g: int, groups: int) -> Op:
    """Group g of a grouped convolution as a convolution of its own (groups 1): its slice of the
    input channels, of the output channels and of the per-channel parameters."""
    _, cin, h, w = op.inputs[0].shape
    cout = op.output.shape[1]
    ci, co = cin // groups, cout // groups
    x = Tensor(op.inputs[0].name, (1, ci, h, w), qparams=op.inputs[0].qparams)
    y = Tensor(op.output.name, (1, co) + tuple(op.output.shape[2:]), qparams=op.output.qparams)
    params = {name: v[g * co:(g + 1) * co] if np.ndim(v) and len(v) == cout else v
              for name, v in op.params.items()}
    return Op(op.kind, op.name, [x], [y], dict(op.attrs, groups=1), params)


def _group_loop(signature: str, body: str, groups: int, view, weight_words: int) -> tuple:
    """The signature with the whole tensors renamed *_all, and `body` (written for group 0's
    view) run once per group on the group's slices."""
    _, ci, h, w = view.inputs[0].shape
    co, npos = view.output.shape[1], int(np.prod(view.output.shape[2:]))
    for name in ("input", "output", "weight", "bias", "multiplier"):
        signature = signature.replace(f"* {name}", f"* {name}_all")
    inner = "".join("    " + line + "\n" if line else "\n" for line in body.splitlines())
    return signature, f"""\
    for (int32_t grp = 0; grp < {groups}; ++grp) {{
        const int8_t* const input = input_all + grp * {ci * h * w};
        int8_t* const output = output_all + grp * {co * npos};
        const uint32_t* const weight = weight_all + grp * {weight_words};
        const int32_t* const bias = bias_all + grp * {co};
        const float* const multiplier = multiplier_all + grp * {co};
{inner}    }}
"""


def _times(var: str, n: int) -> str:
    return var if n == 1 else f"{var} * {n}"


def _ceil_div(num: str, d: int) -> str:
    return num if d == 1 else f"({num} + {d - 1}) / {d}"
