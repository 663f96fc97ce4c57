"""Cortex-M7 kernels: conv2d and dense on the DSP dual 16-bit MAC (`smlad`).

Same arithmetic as the portable kernels (`nnc.arith`: int32 accumulator including the bias,
float32 requantization rounded half to even), so the same tests apply whichever kernel runs.

How a layer runs:
- For each output position the input window is copied once into an int16 column, `x - zp`
  (0..255 for an int8 input: fits in int16), laid out like the flattened OIHW weight row
  (ic, ky, kx) and padded with zeros to a multiple of 4. Padded image positions are written as
  0 there (interior positions are copied with constant bounds, border positions take a separate
  path), so the MAC loop has no bounds checks. One input channel (a first layer) needs nothing
  special: its column is kh*kw long and the MAC loop runs over it like any other.
- The weights are rearranged at export time: each group of 4 int8 weights is stored as
  w0 w2 w1 w3, so that `sxtb16(word)` gives the int16 pair (w0, w1) and `sxtb16(word ror 8)`
  gives (w2, w3), matching the column's pairs (x0, x1) and (x2, x3). Two output channels are
  interleaved word by word, so the inner loop computes two channels at once: per 4 column values
  two loads of activations, two loads of weights, four `sxtb16` and four `smlad` (8 MACs).
- Requantization is `nearbyintf` (vrintr.f32 at -O2 with -mfpu=fpv5-sp-d16) as in the portable
  kernels.
- Dense layers are the same with a single position whose column is the input vector.

The intrinsics (`nnc_m7_sxtb16`, `nnc_m7_sxtb16_ror8`, `nnc_m7_smlad`) are inline assembly when
`__ARM_FEATURE_DSP` is defined and portable C otherwise, so the very same kernel source is
bit-exact-tested on the host. Scratch: one static int16 column shared by all m7 kernels of a model
(sized for the largest), `nnc_m7_col`; its size in bytes is in the comment above it.

Depthwise/grouped convolutions, weight zero points and shift requantization are left to the
portable provider (listed after this one).
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider
from .c_kernels import REQUANT_FLOAT, _signature

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
#endif
/* 32-bit load of any alignment (one LDR on the Cortex-M7). */
#if defined(__GNUC__)
#define NNC_M7_NOINLINE __attribute__((noinline))
#else
#define NNC_M7_NOINLINE
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
/* One output channel (the last of an odd count). */
static inline int32_t nnc_m7_dot1(const int16_t* col, const int8_t* w, int32_t n4, int32_t acc)
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
"""


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
    """Cortex-M7 DSP kernels for conv2d (groups 1) and dense with float requantization."""
    name = "m7"

    def __init__(self):
        # One prelude dict shared by every kernel of this provider: the emitter collects the
        # preludes after all kernels are made, so the column is sized for the largest layer.
        self._prelude = {"m7_0_intrinsics": INTRINSICS, "m7_1_dot": DOT,
                         "requant_float": REQUANT_FLOAT}
        self.col_elements = 0

    def supports(self, op) -> bool:
        if op.kind not in ("conv2d", "dense") or op.attrs.get("requant") != "float":
            return False
        wzp = op.params.get("weight_zp")
        if wzp is not None and np.any(wzp != 0):
            return False
        if op.kind == "conv2d" and op.attrs["groups"] != 1:
            return False
        return op.inputs[0].qparams is not None

    def _use_column(self, kp: int) -> None:
        self.col_elements = max(self.col_elements, kp)
        n = self.col_elements
        self._prelude["m7_2_col"] = (
            f"/* Scratch of the m7 kernels: one int16 column of {n} values ({2 * n} bytes),\n"
            " * the current input window minus its zero point, zero-padded. */\n"
            f"static union {{ int32_t align; int16_t v[{n}]; }} nnc_m7_col;\n")

    def emit(self, op, function: str) -> Kernel:
        w = op.params["weight"]
        packed, kp = pack_weights(w.reshape(w.shape[0], -1))
        consts = {"weight": packed, "bias": op.params["bias"].astype(np.int32),
                  "multiplier": op.params["multiplier"].astype(np.float32)}
        decls = ["const int8_t* weight", "const int32_t* bias", "const float* multiplier"]
        lo, hi = op.attrs["clamp"]
        zp = op.output.qparams.zero_point
        izp = op.inputs[0].qparams.zero_point
        cout = w.shape[0]
        n4 = kp // 4
        k = int(np.prod(w.shape[1:]))
        if op.kind == "dense":
            fill = f"""\
    for (int32_t i = 0; i < {k}; ++i) {{
        col[i] = (int16_t)((int32_t)input[i] - {izp});
    }}
"""
            loops_open, loops_close, pos, npos, header = "", "", "0", 1, f"dense {k} -> {cout}"
            indent = "    "
        else:
            fill, header, npos = self._conv_fill(op, izp)
            loops_open = f"""\
    for (int32_t oy = 0; oy < {op.output.shape[2]}; ++oy) {{
        for (int32_t ox = 0; ox < {op.output.shape[3]}; ++ox) {{
"""
            loops_close = "        }\n    }\n"
            pos = f"oy * {op.output.shape[3]} + ox"
            indent = "            "
        zero_tail = ""
        if kp > k:
            zero_tail = f"    for (int32_t i = {k}; i < {kp}; ++i) {{\n        col[i] = 0;\n    }}\n"
        pairs = cout // 2
        odd = ""
        if cout % 2:
            odd = f"""\
{indent}{{
{indent}    const int32_t acc = nnc_m7_dot1(col, weight + {pairs * 2 * kp}, {n4}, bias[{cout - 1}]);
{indent}    output[{cout - 1} * {npos} + p] = nnc_requant_float(acc, multiplier[{cout - 1}], {zp}, {lo}, {hi});
{indent}}}
"""
        body = f"""\
{indent}const int32_t p = {pos};
{fill}{indent}for (int32_t oc = 0; oc < {2 * pairs}; oc += 2) {{
{indent}    int32_t acc0 = bias[oc], acc1 = bias[oc + 1];
{indent}    const int16_t* c = col;
{indent}    const int8_t* w = weight + oc * {kp};
{indent}    for (int32_t g = 0; g < {n4}; ++g) {{
{indent}        const uint32_t x01 = nnc_m7_load32(c), x23 = nnc_m7_load32(c + 2);
{indent}        const uint32_t w0 = nnc_m7_load32(w), w1 = nnc_m7_load32(w + 4);
{indent}        acc0 = nnc_m7_smlad(nnc_m7_sxtb16(w0), x01, acc0);
{indent}        acc1 = nnc_m7_smlad(nnc_m7_sxtb16(w1), x01, acc1);
{indent}        acc0 = nnc_m7_smlad(nnc_m7_sxtb16_ror8(w0), x23, acc0);
{indent}        acc1 = nnc_m7_smlad(nnc_m7_sxtb16_ror8(w1), x23, acc1);
{indent}        c += 4;
{indent}        w += 8;
{indent}    }}
{indent}    output[oc * {npos} + p] = nnc_requant_float(acc0, multiplier[oc], {zp}, {lo}, {hi});
{indent}    output[(oc + 1) * {npos} + p] = nnc_requant_float(acc1, multiplier[oc + 1], {zp}, {lo}, {hi});
{indent}}}
{odd}"""
        if op.kind == "conv2d" and npos >= 2:
            body, ncols = self._conv_pairs(op, fill, npos, kp, k, n4, cout, zp, lo, hi, body), 2
            loops_open = loops_close = ""
        else:
            ncols = 1
        self._use_column(ncols * kp)
        if kp > k and ncols == 2:
            zero_tail += f"    for (int32_t i = {kp + k}; i < {2 * kp}; ++i) {{\n        col[i] = 0;\n    }}\n"
        src = f"""\
/* {op.name}: {header}; Cortex-M7 DSP kernel (smlad on sxtb16-widened weight pairs),
 * 2 output channels x {ncols} output positions per pass, columns of {kp} int16 values. */
NNC_M7_NOINLINE {_signature(function, decls)}
{{
    int16_t* const col = nnc_m7_col.v;
{zero_tail}{loops_open}{body}{loops_close}}}
"""
        args = ["in0", "out0"] + [f"const:{c}" for c in consts]
        return Kernel(function, src, args, consts, self.name, self._prelude)

    def _conv_pairs(self, op, fill, npos, kp, k, n4, cout, zp, lo, hi, single_body):
        """Two output positions per pass: each weight word is loaded and widened once for both."""
        ow = op.output.shape[3]
        i = "        "
        fill_b = fill.replace("col[", "cb[")
        pairs = cout // 2
        odd = ""
        if cout % 2:
            odd = f"""\
{i}{{
{i}    const int8_t* w = weight + {pairs * 2 * kp};
{i}    const int32_t acc0 = nnc_m7_dot1(col, w, {n4}, bias[{cout - 1}]);
{i}    const int32_t acc1 = nnc_m7_dot1(col + {kp}, w, {n4}, bias[{cout - 1}]);
{i}    output[{cout - 1} * {npos} + p] = nnc_requant_float(acc0, multiplier[{cout - 1}], {zp}, {lo}, {hi});
{i}    output[{cout - 1} * {npos} + p + 1] = nnc_requant_float(acc1, multiplier[{cout - 1}], {zp}, {lo}, {hi});
{i}}}
"""
        tail = ""
        if npos % 2:
            tail = f"""\
    if (p < {npos}) {{
        const int32_t oy = p / {ow}, ox = p % {ow};
{single_body.split(chr(10), 1)[1]}    }}
"""
        return f"""\
    int32_t p = 0;
    for (; p + 1 < {npos}; p += 2) {{
        for (int32_t half = 0; half < 2; ++half) {{
            int16_t* const cb = col + half * {kp};
            const int32_t oy = (p + half) / {ow}, ox = (p + half) % {ow};
{fill_b}        }}
{i}for (int32_t oc = 0; oc < {2 * pairs}; oc += 2) {{
{i}    int32_t a00 = bias[oc], a01 = bias[oc + 1], a10 = a00, a11 = a01;
{i}    const int16_t* c = col;
{i}    const int8_t* w = weight + oc * {kp};
{i}    for (int32_t g = 0; g < {n4}; ++g) {{
{i}        const uint32_t xa01 = nnc_m7_load32(c), xa23 = nnc_m7_load32(c + 2);
{i}        const uint32_t xb01 = nnc_m7_load32(c + {kp}), xb23 = nnc_m7_load32(c + {kp + 2});
{i}        const uint32_t w0 = nnc_m7_load32(w), w1 = nnc_m7_load32(w + 4);
{i}        uint32_t s = nnc_m7_sxtb16(w0);
{i}        a00 = nnc_m7_smlad(s, xa01, a00);
{i}        a10 = nnc_m7_smlad(s, xb01, a10);
{i}        s = nnc_m7_sxtb16_ror8(w0);
{i}        a00 = nnc_m7_smlad(s, xa23, a00);
{i}        a10 = nnc_m7_smlad(s, xb23, a10);
{i}        s = nnc_m7_sxtb16(w1);
{i}        a01 = nnc_m7_smlad(s, xa01, a01);
{i}        a11 = nnc_m7_smlad(s, xb01, a11);
{i}        s = nnc_m7_sxtb16_ror8(w1);
{i}        a01 = nnc_m7_smlad(s, xa23, a01);
{i}        a11 = nnc_m7_smlad(s, xb23, a11);
{i}        c += 4;
{i}        w += 8;
{i}    }}
{i}    output[oc * {npos} + p] = nnc_requant_float(a00, multiplier[oc], {zp}, {lo}, {hi});
{i}    output[oc * {npos} + p + 1] = nnc_requant_float(a10, multiplier[oc], {zp}, {lo}, {hi});
{i}    output[(oc + 1) * {npos} + p] = nnc_requant_float(a01, multiplier[oc + 1], {zp}, {lo}, {hi});
{i}    output[(oc + 1) * {npos} + p + 1] = nnc_requant_float(a11, multiplier[oc + 1], {zp}, {lo}, {hi});
{i}}}
{odd}    }}
{tail}"""

    def _conv_fill(self, op, izp):
        a = op.attrs
        _, cin, h, w = op.inputs[0].shape
        _, _, oh, ow = op.output.shape
        kh, kw = op.params["weight"].shape[2:]
        (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
        header = (f"conv2d {cin}x{h}x{w} -> {op.output.shape[1]}x{oh}x{ow}, kernel {kh}x{kw}, "
                  f"stride {sh}x{sw}, padding {ph}x{pw}, dilation {dh}x{dw}")
        i = "            "
        interior = f"""\
{i}    for (int32_t ic = 0; ic < {cin}; ++ic) {{
{i}        for (int32_t ky = 0; ky < {kh}; ++ky) {{
{i}            const int8_t* x = &input[(ic * {h} + iy0 + ky * {dh}) * {w} + ix0];
{i}            int16_t* c = &col[(ic * {kh} + ky) * {kw}];
{i}            for (int32_t kx = 0; kx < {kw}; ++kx) {{
{i}                c[kx] = (int16_t)((int32_t)x[kx * {dw}] - {izp});
{i}            }}
{i}        }}
{i}    }}
"""
        if ph == 0 and pw == 0:
            fill = f"""\
{i}const int32_t iy0 = oy * {sh}, ix0 = ox * {sw};
{i}{{
{interior}{i}}}
"""
            return fill, header, oh * ow
        k = cin * kh * kw
        fill = f"""\
{i}const int32_t iy0 = oy * {sh} - {ph}, ix0 = ox * {sw} - {pw};
{i}const int32_t ky_lo = iy0 < 0 ? (-iy0 + {dh - 1}) / {dh} : 0;
{i}const int32_t ky_hi = ({h} - iy0 + {dh - 1}) / {dh} < {kh} ? ({h} - iy0 + {dh - 1}) / {dh} : {kh};
{i}const int32_t kx_lo = ix0 < 0 ? (-ix0 + {dw - 1}) / {dw} : 0;
{i}const int32_t kx_hi = ({w} - ix0 + {dw - 1}) / {dw} < {kw} ? ({w} - ix0 + {dw - 1}) / {dw} : {kw};
{i}if (ky_lo == 0 && ky_hi == {kh} && kx_lo == 0 && kx_hi == {kw}) {{
{interior}{i}}} else {{
{i}    /* border: zero the window, then copy the rows and columns inside the image */
{i}    for (int32_t j = 0; j < {k}; ++j) {{
{i}        col[j] = 0;
{i}    }}
{i}    for (int32_t ic = 0; ic < {cin}; ++ic) {{
{i}        for (int32_t ky = ky_lo; ky < ky_hi; ++ky) {{
{i}            const int32_t row = (ic * {h} + iy0 + ky * {dh}) * {w} + ix0;
{i}            int16_t* c = &col[(ic * {kh} + ky) * {kw}];
{i}            for (int32_t kx = kx_lo; kx < kx_hi; ++kx) {{
{i}                c[kx] = (int16_t)((int32_t)input[row + kx * {dw}] - {izp});
{i}            }}
{i}        }}
{i}    }}
{i}}}
"""
        return fill, header, oh * ow
