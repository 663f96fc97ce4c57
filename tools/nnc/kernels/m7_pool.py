"""Cortex-M7 kernel for average pooling with padding or with windows past the input (ceil mode),
the pools that `m7_pointwise`'s full-window kernel leaves to the portable one.

qnnpack's arithmetic (as `nnc.reference`): the sum of (x - zp_in) over the window's positions
inside the input, times one float32 scale s_in / (s_out * count) per output position, where
count is the window's size inside the padded input (count_include_pad) or inside the input alone.
Here, per channel, the plane is copied once into a frame whose border is the input zero point:
a border value adds x - zp_in = 0 to the sum, so every window is summed whole, with no bounds
check, four int8 values per load (`sxtb16`, `smlad` with (1, 1)), and kh * kw * zp_in comes off
once per window. Only the divisor depends on the border, and it is a constant per output
position (one multiplier for all when every window counts the same).
"""
from __future__ import annotations

import numpy as np

from .. import arith
from . import Kernel, KernelProvider
from .c_kernels import _signature
from .m7_kernels import INTRINSICS, REQUANT_SSAT

# The largest frame (padded plane) copied into the scratch; a larger pool stays portable.
FRAME_MAX = 8192


def _frame(op) -> tuple:
    """(rows, columns) of the padded plane: the input with its padding, and room for every
    window (ceil mode can take the last one past the padding)."""
    a = op.attrs
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    _, _, h, w = op.inputs[0].shape
    _, _, oh, ow = op.output.shape
    return max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw)


def applies(op) -> bool:
    if op.kind != "avgpool2d" or op.inputs[0].qparams is None:
        return False
    rows, cols = _frame(op)
    return rows * cols <= FRAME_MAX


def multipliers(op) -> np.ndarray:
    """float32 per output position (oh * ow): s_in / (s_out * count)."""
    from ..reference import avgpool_divisors
    src_q, dst_q = op.inputs[0].qparams, op.output.qparams
    return np.array([arith.avgpool_multiplier(src_q, dst_q, int(d)) for d in avgpool_divisors(op).ravel()],
                    dtype=np.float32)


class M7AvgPool(KernelProvider):
    """Average pools with padding or partial windows (float requantization, as qnnpack)."""
    name = "m7"

    def supports(self, op) -> bool:
        return applies(op)

    def emit(self, op, function: str) -> Kernel:
        a = op.attrs
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
        _, c, h, w = op.inputs[0].shape
        _, _, oh, ow = op.output.shape
        rows, cols = _frame(op)
        izp, ozp = op.inputs[0].qparams.zero_point, op.output.qparams.zero_point
        mult = multipliers(op)
        uniform = bool(np.all(mult == mult[0]))
        consts = {} if uniform else {"multiplier": mult}
        m_expr = arith.hex_float(mult[0]) if uniform else "multiplier[oy * %d + ox]" % ow
        words = f"""\
                    for (int32_t g = 0; g < {kw // 4}; ++g) {{
                        const uint32_t v = nnc_m7_load32(x + 4 * g);
                        sum = nnc_m7_smlad(nnc_m7_sxtb16(v), 0x00010001u, sum);
                        sum = nnc_m7_smlad(nnc_m7_sxtb16_ror8(v), 0x00010001u, sum);
                    }}
""" if kw >= 4 else ""
        rest = "".join(f"                    sum += x[{k}];\n" for k in range(kw // 4 * 4, kw))
        copy_words = f"""\
            for (int32_t i = 0; i < {w // 4 * 4}; i += 4) {{
                nnc_m7_store32(dst + i, nnc_m7_load32(src + i));
            }}
""" if w >= 4 else ""
        copy_rest = "".join(f"            dst[{x}] = src[{x}];\n" for x in range(w // 4 * 4, w))
        decls = ([] if uniform else ["const float* multiplier"]) + ["void* scratch"]
        src = f"""\
/* {op.name}: average pool {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}
 * (count_include_pad {a["count_include_pad"]}, ceil_mode {a.get("ceil_mode", False)}): {c}x{h}x{w} -> {c}x{oh}x{ow};
 * qnnpack arithmetic: the sum of (x - {izp}) times s_in / (s_out * count), {"one scale" if uniform else "a scale per output position (the count differs at the border)"}.
 * Cortex-M7 kernel: each plane copied into a {rows}x{cols} frame whose border is {izp} (adds 0 to
 * the sum), every window summed whole, four values per load (sxtb16, smlad with (1, 1)). */
NNC_M7_NOINLINE {_signature(function, decls)}
{{
    int8_t* const frame = (int8_t*)scratch;
    for (int32_t i = 0; i < {rows * cols}; ++i) {{   /* the border; the interior is each plane's */
        frame[i] = {izp};
    }}
    for (int32_t ch = 0; ch < {c}; ++ch) {{
        for (int32_t y = 0; y < {h}; ++y) {{
            const int8_t* const src = input + (ch * {h} + y) * {w};
            int8_t* const dst = frame + (y + {ph}) * {cols} + {pw};
{copy_words}{copy_rest}        }}
        int8_t* const out = output + ch * {oh * ow};
        for (int32_t oy = 0; oy < {oh}; ++oy) {{
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                const int8_t* x = frame + oy * {sh * cols} + ox * {sw};
                int32_t sum = 0;
                for (int32_t ky = 0; ky < {kh}; ++ky, x += {cols}) {{
{words}{rest}                }}
                out[oy * {ow} + ox] = nnc_m7_requant(sum - {kh * kw * izp}, {m_expr}, {ozp}, -128);
            }}
        }}
    }}
}}
"""
        args = ["in0", "out0"] + [f"const:{k}" for k in consts] + ["scratch"]
        prelude = {"m7_0_intrinsics": INTRINSICS, "m7_3_requant": REQUANT_SSAT}
        return Kernel(function, src, args, consts, self.name, prelude, scratch_bytes=rows * cols)
