"""Cortex-M7 kernels: conv2d and dense on the DSP dual 16-bit MAC (`smlad`).

Same arithmetic as the portable kernels (`nnc.arith`: int32 accumulator including the bias,
float32 requantization rounded half to even), so the same tests apply whichever kernel runs.

How a layer runs:
- For each output position the input window is copied once into an int16 column (sign-extended
  int8; the input zero point is folded into the bias at export, see `folded_bias`), laid out like
  the flattened OIHW weight row (ic, ky, kx) and padded with zeros to a multiple of 4. Padded
  image positions are written as the zero point there (interior positions are copied with
  constant bounds, border positions take a separate path), so the MAC loop has no bounds checks. One input channel (a first layer) needs nothing
  special: its column is kh*kw long and the MAC loop runs over it like any other.
- The weights are rearranged at export time: each group of 4 int8 weights is stored as
  w0 w2 w1 w3, so that `sxtb16(word)` gives the int16 pair (w0, w1) and `sxtb16(word ror 8)`
  gives (w2, w3), matching the column's pairs (x0, x1) and (x2, x3). Two output channels are
  interleaved word by word, so the inner loop computes two channels at once: per 4 column values
  two loads of activations, two loads of weights, four `sxtb16` and four `smlad` (8 MACs).
- Requantization is `nearbyintf` as in the portable kernels; on the M7 one `vcvtr.s32.f32`
  (convert in the FPSCR rounding mode, round half to even: vrintr + vcvt in one instruction).
- Dense layers are the same with a single position whose column is the input vector.
- A convolution followed by a non-overlapping max pool runs fused (`conv2d_maxpool2d`, see
  `nnc.passes.fuse_conv_maxpool`): per pooled position the columns of its window's positions
  are filled, each channel pair keeps the max of its accumulators, and only that is requantized
  and stored. The convolution's full output never exists: LeNet-5's arena shrinks from 5,880 B
  to the pooled tensors.

The intrinsics (`nnc_m7_sxtb16`, `nnc_m7_sxtb16_ror8`, `nnc_m7_smlad`) are inline assembly when
`__ARM_FEATURE_DSP` is defined and portable C otherwise, so the very same kernel source is
bit-exact-tested on the host. Scratch: the columns live in the arena (`Kernel.scratch_bytes`), in
bytes that are free while the kernel runs, so they cost no RAM beyond the plan's peak.

The qnnpack add and average pooling without padding have Cortex-M7 kernels too (`m7_pointwise`).
Depthwise convolutions run `m7_depthwise`. Grouped convolutions, other pools, weight zero points
and shift requantization are left to the portable provider (listed after this one).
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider, m7_depthwise, m7_pointwise
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
"""

DOT = """\
/* The dot products of the kernels. `col` holds int16 values (the input, sign-extended), `w` the
 * weights as pack_weights() lays them out, n4 = column length / 4. Inlined into each kernel, where
 * n4 is a constant. */

/* One output channel (the last of an odd count). */
NNC_M7_INLINE int32_t nnc_m7_dot1(const int16_t* col, const int8_t* w, int32_t n4, int32_t acc)
{
    for (int32_t g = 0; g < n4; ++g) {
        const uint32_t w0 = nnc_m7_load32(w);
        acc = nnc_m7_smlad(nnc_m7_sxtb16(w0), nnc_m7_load32(col), acc);
        acc = nnc_m7_smlad(nnc_m7_sxtb16_ror8(w0), nnc_m7_load32(col + 2), acc);
        col += 4;
        w += 4;
    }
    return acc;
}

/* Two output channels (their weights alternate word by word), one column:
 * acc[0] += w0 . col, acc[1] += w1 . col. */
NNC_M7_INLINE void nnc_m7_dot2(const int16_t* col, const int8_t* w, int32_t n4, int32_t acc[2])
{
    int32_t a0 = acc[0], a1 = acc[1];
    for (int32_t g = 0; g < n4; ++g) {
        const uint32_t x01 = nnc_m7_load32(col), x23 = nnc_m7_load32(col + 2);
        const uint32_t w0 = nnc_m7_load32(w), w1 = nnc_m7_load32(w + 4);
        a0 = nnc_m7_smlad(nnc_m7_sxtb16(w0), x01, a0);
        a1 = nnc_m7_smlad(nnc_m7_sxtb16(w1), x01, a1);
        a0 = nnc_m7_smlad(nnc_m7_sxtb16_ror8(w0), x23, a0);
        a1 = nnc_m7_smlad(nnc_m7_sxtb16_ror8(w1), x23, a1);
        col += 4;
        w += 8;
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* Two output channels, two columns a and b: each weight word is loaded and widened once for
 * both. acc = { w0 . a, w1 . a, w0 . b, w1 . b } (plus what acc held). */
NNC_M7_INLINE void nnc_m7_dot2x2(const int16_t* a, const int16_t* b, const int8_t* w, int32_t n4,
                                 int32_t acc[4])
{
    int32_t a0 = acc[0], a1 = acc[1], b0 = acc[2], b1 = acc[3];
    for (int32_t g = 0; g < n4; ++g) {
        const uint32_t a01 = nnc_m7_load32(a), a23 = nnc_m7_load32(a + 2);
        const uint32_t b01 = nnc_m7_load32(b), b23 = nnc_m7_load32(b + 2);
        const uint32_t w0 = nnc_m7_load32(w), w1 = nnc_m7_load32(w + 4);
        uint32_t s = nnc_m7_sxtb16(w0);
        a0 = nnc_m7_smlad(s, a01, a0);
        b0 = nnc_m7_smlad(s, b01, b0);
        s = nnc_m7_sxtb16_ror8(w0);
        a0 = nnc_m7_smlad(s, a23, a0);
        b0 = nnc_m7_smlad(s, b23, b0);
        s = nnc_m7_sxtb16(w1);
        a1 = nnc_m7_smlad(s, a01, a1);
        b1 = nnc_m7_smlad(s, b01, b1);
        s = nnc_m7_sxtb16_ror8(w1);
        a1 = nnc_m7_smlad(s, a23, a1);
        b1 = nnc_m7_smlad(s, b23, b1);
        a += 4;
        b += 4;
        w += 8;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = b0;
    acc[3] = b1;
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


# Window rows up to this long are copied with straight-line code.
UNROLLED_ROW = 8
# A padded input up to this many bytes is copied once into the scratch, padding at the zero point:
# every window is then inside the image, and no position takes the slower border path. Larger
# inputs (wide layers) keep the border path rather than spend that much RAM.
PADDED_COPY_MAX = 2048


class _Shape:
    """The numbers every m7 kernel of one op is generated from."""

    def __init__(self, op, kp: int):
        w = op.params["weight"]
        self.kp, self.n4 = kp, kp // 4
        self.k = int(np.prod(w.shape[1:]))
        self.cout = int(w.shape[0])
        self.even = self.cout // 2 * 2
        self.npos = int(np.prod(op.output.shape[2:])) if op.kind != "dense" else 1
        self.izp = op.inputs[0].qparams.zero_point
        self.zp = op.output.qparams.zero_point
        self.lo, self.hi = op.attrs["clamp"]
        self.ssat = self.hi == 127     # saturate with ssat, then apply a ReLU's lower bound
        if op.kind == "conv2d_maxpool2d":
            self.ncols = int(np.prod(op.attrs["pool"]["kernel"]))
        else:
            self.ncols = 1 if self.npos == 1 else 2
        self.padded_shape = None       # (c, h, w) of the padded input copy, if the kernel makes one
        if op.kind != "dense" and any(op.attrs["padding"]):
            _, c, h, w = op.inputs[0].shape
            ph, pw = op.attrs["padding"]
            if c * (h + 2 * ph) * (w + 2 * pw) <= PADDED_COPY_MAX:
                self.padded_shape = (c, h + 2 * ph, w + 2 * pw)

    @property
    def scratch_bytes(self) -> int:
        padded = int(np.prod(self.padded_shape)) if self.padded_shape else 0
        return 2 * self.ncols * self.kp + padded

    def requant(self, acc: str, channel: str) -> str:
        if self.ssat:
            return f"nnc_m7_requant({acc}, multiplier[{channel}], {self.zp}, {self.lo})"
        return f"nnc_requant_float({acc}, multiplier[{channel}], {self.zp}, {self.lo}, {self.hi})"


def pack_weights(weight: np.ndarray) -> tuple:
    """[cout, K] int8 -> (flat int8 array in the kernel's layout, K padded to a multiple of 4).

    Each group of 4 becomes w0 w2 w1 w3; channels 2p and 2p+1 alternate word by word; an odd
    last channel follows alone."""
    w = np.asarray(weight, dtype=np.int8).reshape(weight.shape[0], -1)
    cout, k = w.shape
    kp = (k + 3) // 4 * 4
    padded = np.zeros((cout, kp), dtype=np.int8)
    padded[:, :k] = w
    groups = padded.reshape(cout, kp // 4, 4)[:, :, [0, 2, 1, 3]]
    parts = []
    pairs = cout // 2
    if pairs:
        parts.append(groups[:2 * pairs].reshape(pairs, 2, kp // 4, 4).transpose(0, 2, 1, 3).ravel())
    if cout % 2:
        parts.append(groups[-1].ravel())
    return np.concatenate(parts).astype(np.int8), kp


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
        return op.kind in ("conv2d", "dense") and self._supports_conv(op)

    @staticmethod
    def _supports_conv(op) -> bool:
        if op.attrs.get("requant") != "float":
            return False
        wzp = op.params.get("weight_zp")
        if wzp is not None and np.any(wzp != 0):
            return False
        if op.kind != "dense" and op.attrs["groups"] != 1:
            return False
        return op.inputs[0].qparams is not None and _bias_folds(op)

    def emit(self, op, function: str) -> Kernel:
        if op.kind in ("add", "avgpool2d"):
            return self._emit_pointwise(op, function)
        if m7_depthwise.is_depthwise(op):
            return self._depthwise.emit(op, function)
        w = op.params["weight"]
        packed, kp = pack_weights(w.reshape(w.shape[0], -1))
        consts = {"weight": packed, "bias": folded_bias(op),
                  "multiplier": op.params["multiplier"].astype(np.float32)}
        decls = ["const int8_t* weight", "const int32_t* bias", "const float* multiplier",
                 "void* scratch"]
        shape = _Shape(op, kp)
        if op.kind == "conv2d_maxpool2d":
            body, header = self._conv_pool(op, shape)
        elif op.kind == "dense" or shape.npos == 1:
            body, header = self._one_position(op, shape)
        else:
            body, header = self._position_pairs(op, shape)
        ncols = shape.ncols
        zero_tail = ""
        if kp > shape.k:   # the padding of each column to a multiple of 4 stays zero
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
        src = f"""\
/* {op.name}: {header}.
 * Cortex-M7 DSP kernel: smlad on sxtb16-widened weights, two output channels per pass;
 * scratch: {scratch_note}. */
NNC_M7_NOINLINE {_signature(function, decls)}
{{
    int16_t* const col = (int16_t*)scratch;
{zero_tail}{body}}}
"""
        args = ["in0", "out0"] + [f"const:{c}" for c in consts] + ["scratch"]
        prelude = dict(self._prelude)
        prelude["m7_3_requant" if shape.ssat else "requant_float"] = (
            REQUANT_SSAT if shape.ssat else REQUANT_FLOAT)
        return Kernel(function, src, args, consts, self.name, prelude,
                      scratch_bytes=shape.scratch_bytes)

    def _emit_pointwise(self, op, function: str) -> Kernel:
        prelude = dict(self._prelude, m7_3_requant=REQUANT_SSAT)
        if op.kind == "add":
            return Kernel(function, m7_pointwise.emit_add(op, function), ["in0", "in1", "out0"], {},
                          self.name, prelude)
        return Kernel(function, m7_pointwise.emit_avgpool(op, function), ["in0", "out0"], {},
                      self.name, prelude)

    @staticmethod
    def _padded_copy(op, sh) -> str:
        _, c, h, w = op.inputs[0].shape
        ph, pw = op.attrs["padding"]
        _, hp, wp = sh.padded_shape
        return f"""\
    /* the input with its padding at the zero point (real 0): every window lies inside it */
    int8_t* const padded = (int8_t*)scratch + {2 * sh.ncols * sh.kp};
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
        body = f"""\
{fill}    for (int32_t oc = 0; oc < {sh.even}; oc += 2) {{
        int32_t acc[2] = {{ bias[oc], bias[oc + 1] }};
        nnc_m7_dot2(col, weight + oc * {sh.kp}, {sh.n4}, acc);
        output[oc] = {sh.requant("acc[0]", "oc")};
        output[oc + 1] = {sh.requant("acc[1]", "oc + 1")};
    }}
"""
        if sh.cout % 2:
            last = sh.cout - 1
            body += f"""\
    output[{last}] = {sh.requant(f"nnc_m7_dot1(col, weight + {sh.even * sh.kp}, {sh.n4}, bias[{last}])", str(last))};
"""
        return body, header

    def _position_pairs(self, op, sh):
        """Convolutions: two output positions per pass (an odd last one is computed twice and
        stored once)."""
        fill, header = self._conv_fill(op, sh.izp, " " * 12, sh.padded_shape)
        ow, npos, kp = op.output.shape[3], sh.npos, sh.kp
        body = f"""\
    for (int32_t p = 0; p < {npos}; p += 2) {{
        const int32_t pb = p + 1 < {npos} ? p + 1 : p;
        for (int32_t q = 0; q < 2; ++q) {{
            int16_t* const cb = col + q * {kp};
            const int32_t pos = q ? pb : p, oy = pos / {ow}, ox = pos % {ow};
{fill.replace("col[", "cb[")}        }}
        for (int32_t oc = 0; oc < {sh.even}; oc += 2) {{
            int32_t acc[4] = {{ bias[oc], bias[oc + 1], bias[oc], bias[oc + 1] }};
            nnc_m7_dot2x2(col, col + {kp}, weight + oc * {kp}, {sh.n4}, acc);
            output[oc * {npos} + p] = {sh.requant("acc[0]", "oc")};
            output[(oc + 1) * {npos} + p] = {sh.requant("acc[1]", "oc + 1")};
            output[oc * {npos} + pb] = {sh.requant("acc[2]", "oc")};
            output[(oc + 1) * {npos} + pb] = {sh.requant("acc[3]", "oc + 1")};
        }}
"""
        if sh.cout % 2:
            last = sh.cout - 1
            w = f"weight + {sh.even * kp}"
            body += f"""\
        output[{last * npos} + p] = {sh.requant(f"nnc_m7_dot1(col, {w}, {sh.n4}, bias[{last}])", str(last))};
        output[{last * npos} + pb] = {sh.requant(f"nnc_m7_dot1(col + {kp}, {w}, {sh.n4}, bias[{last}])", str(last))};
"""
        return body + "    }\n", header

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
                nnc_m7_dot2x2(col + q * {kp}, col + (q + 1) * {kp}, weight + oc * {kp}, {sh.n4}, acc);
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
            const int32_t acc = nnc_m7_dot1(col + q * {kp}, weight + {sh.even * kp}, {sh.n4}, bias[{last}]);
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


def _times(var: str, n: int) -> str:
    return var if n == 1 else f"{var} * {n}"


def _ceil_div(num: str, d: int) -> str:
    return num if d == 1 else f"({num} + {d - 1}) / {d}"
