"""Cortex-M7 kernels for the ops around the convolutions: the qnnpack add, max and average pooling.

In a residual network these cost as much as a convolution when written as portable loops (the
add's rounding shift, the pool's per-element bounds checks). Same arithmetic as `nnc.arith`:

- add: acc = a*(x0 - zp0) + b*(x1 - zp1) with qnnpack's 22-bit multipliers, then a right shift
  rounding half away from zero. Here the input zero points are folded into one constant and the
  rounding is `(acc + half + zp_out * 2^shift - (acc < 0)) >> shift` (the output zero point
  added before the shift), three instructions instead of qnnpack's mask/compare and the add;
  where no input pair lands on a negative tie the clamp would not hide (an add + ReLU with the
  output zero point at -128: every negative sum clamps), the `- (acc < 0)` goes and all the
  constants are one, added by the second `mla`. The shift and the int8 clamp are one `ssat`
  (`ssat #8, asr #shift`); four elements per pair of word loads. Whether a form is exact (no
  int32 overflow on the way, the ties) depends on the multipliers, so it is not argued but
  checked at export time over all 65,536 input pairs against `arith.qnnpack_add`; an add that
  fails the check stays with the portable kernel.
- average pool without padding (every window inside the input, so one divisor): four int8 values
  per load, widened by `sxtb16` and summed by `smlad` with (1, 1); the zero point is subtracted
  once per window.
- max pool: per output row the vertical max of the window's rows, four bytes per `ssub8` + `sel`,
  into a row buffer (scratch) whose padding is -128, neutral for the max as in the portable
  kernel; then the horizontal max over the buffer, four outputs per step at stride 1. Bounds are
  per output row (which input rows the window covers), never per element.
"""
from __future__ import annotations

import numpy as np

from .. import arith
from .c_kernels import _signature


def _add_constants(op) -> dict:
    p = arith.qnnpack_add_params(op.inputs[0].qparams, op.inputs[1].qparams, op.output.qparams)
    half = 1 << (p["shift"] - 1)
    # the output zero point goes in before the shift: (s + zp * 2^shift) >> shift = (s >> shift) + zp
    k = -p["a_mult"] * p["a_zp"] - p["b_mult"] * p["b_zp"]
    rnd = half + p["out_zp"] * (1 << p["shift"])
    return {"a": p["a_mult"], "b": p["b_mult"], "shift": p["shift"], "half": half, "k": k,
            "out_zp": p["out_zp"], "round": rnd, "k_round": k + rnd, "params": p}


def add_form(op):
    """Which folded form of the add below equals qnnpack's for every pair of int8 inputs, with
    every intermediate of its C expression inside int32: "unsigned" (the zero points, the half
    and the output zero point in one constant; the rounding is then half up, so it is taken only
    where no pair lands on a negative tie that the clamp would not hide, e.g. an add + ReLU whose
    output zero point is -128, where any negative sum clamps), "signed" (half away from zero by
    the `acc >> 31` term) or None (the portable kernel)."""
    if op.kind != "add" or op.attrs.get("requant") != "qnnpack_add" or op.attrs["clamp"][1] != 127:
        return None
    c = _add_constants(op)
    x0, x1 = np.meshgrid(np.arange(-128, 128, dtype=np.int64), np.arange(-128, 128, dtype=np.int64))
    lo, hi = op.attrs["clamp"]
    want = arith.qnnpack_add(x0.astype(np.int8), x1.astype(np.int8), c["params"], (lo, hi))
    # the evaluation order of the C expressions: mla(b, x1, mla(a, x0, constant))
    unsigned = c["a"] * x0 + c["k_round"] + c["b"] * x1
    first = c["a"] * x0 + c["k"]
    acc = first + c["b"] * x1
    with_round = acc + c["round"]
    signed = with_round + np.where(acc < 0, -1, 0)
    for form, steps, result in (("unsigned", (c["a"] * x0 + c["k_round"], unsigned), unsigned),
                                ("signed", (first, acc, with_round, signed), signed)):
        if not _inside_int32(c["a"] * x0, c["b"] * x1, *steps):
            continue
        if np.array_equal(np.clip(result >> c["shift"], lo, hi), want):
            return form
    return None


def _inside_int32(*values) -> bool:
    return all(v.min() >= -(1 << 31) and v.max() < (1 << 31) for v in values)


def add_is_exact(op) -> bool:
    """True if one of the folded forms of `add_form` equals qnnpack's add for all int8 pairs."""
    return add_form(op) is not None


def emit_add(op, function: str) -> str:
    c = _add_constants(op)
    form = add_form(op)
    n = op.output.size
    lo = op.attrs["clamp"][0]
    if form == "unsigned":
        how = (f"input zero points, the half and the output zero point (times 2^{c['shift']}) folded into "
               f"{c['k_round']}: no pair rounds a negative tie differently (checked)")

        def value(x0, x1):
            return f"nnc_m7_mla({c['b']}, {x1}, nnc_m7_mla({c['a']}, {x0}, {c['k_round']}))"
    else:
        how = (f"input zero points folded into {c['k']}, the half and the output zero point (times "
               f"2^{c['shift']}) into {c['round']}")

        def value(x0, x1):
            return (f"nnc_m7_add_signed_round(nnc_m7_mla({c['b']}, {x1}, nnc_m7_mla({c['a']}, {x0}, {c['k']})), "
                    f"{c['round']})")

    def one(x0: str, x1: str, dst: str, j: str) -> str:
        clamp = "" if lo == -128 else f"{j}    q = q < {lo} ? {lo} : q;\n"
        return (f"{j}{{\n{j}    int32_t q;\n{j}    NNC_M7_SSAT8_ASR(q, {value(x0, x1)}, {c['shift']});\n"
                f"{clamp}{j}    {dst} = (int8_t)q;\n{j}}}\n")
    words = "".join(one(f"(int32_t)(int8_t)(x0 >> {8 * j})", f"(int32_t)(int8_t)(x1 >> {8 * j})",
                        f"output[i + {j}]", " " * 8) for j in range(4))
    tail = ""
    if n % 4:
        tail = f"""\
    for (int32_t i = {n // 4 * 4}; i < {n}; ++i) {{
{one("(int32_t)input0[i]", "(int32_t)input1[i]", "output[i]", " " * 8)}    }}
"""
    return f"""\
/* {op.name}: add of {n} elements, qnnpack integer arithmetic: {c['a']} * (x0 - {c['params']['a_zp']})
 * + {c['b']} * (x1 - {c['params']['b_zp']}), shifted right by {c['shift']} rounding half away from zero,
 * plus {c['out_zp']}. Cortex-M7 kernel: {how};
 * the shift and the clamp in one ssat; four elements per pair of word loads; checked equal to
 * qnnpack for all int8 pairs at export. */
NNC_M7_NOINLINE {_signature(function, [], 2)}
{{
    for (int32_t i = 0; i < {n // 4 * 4}; i += 4) {{
        const uint32_t x0 = nnc_m7_load32(input0 + i), x1 = nnc_m7_load32(input1 + i);
{words}    }}
{tail}}}
"""


ADD_SIGNED_ROUND = """\
/* acc + round, minus 1 below zero: qnnpack's rounding half away from zero before the shift. */
NNC_M7_INLINE int32_t nnc_m7_add_signed_round(int32_t acc, int32_t round)
{
    return acc + round + (acc >> 31);
}
"""


def avgpool_has_full_windows(op) -> bool:
    """No padding and every window inside the input: one divisor (kh * kw) for all outputs."""
    if op.kind != "avgpool2d" or op.inputs[0].qparams is None:
        return False
    a = op.attrs
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    _, _, h, w = op.inputs[0].shape
    _, _, oh, ow = op.output.shape
    return tuple(a["padding"]) == (0, 0) and (oh - 1) * sh + kh <= h and (ow - 1) * sw + kw <= w


def emit_avgpool(op, function: str) -> str:
    a = op.attrs
    (kh, kw), (sh, sw) = a["kernel"], a["stride"]
    _, c, h, w = op.inputs[0].shape
    _, _, oh, ow = op.output.shape
    n = kh * kw
    src_q, dst_q = op.inputs[0].qparams, op.output.qparams
    mult = arith.avgpool_multiplier(src_q, dst_q, n)
    words = ""
    if kw // 4:
        words = f"""\
            for (int32_t g = 0; g < {kw // 4}; ++g) {{
                const uint32_t v = nnc_m7_load32(x + 4 * g);
                sum = nnc_m7_smlad(nnc_m7_sxtb16(v), 0x00010001u, sum);
                sum = nnc_m7_smlad(nnc_m7_sxtb16_ror8(v), 0x00010001u, sum);
            }}
"""
    rest = ""
    if kw % 4:
        rest = f"""\
            for (int32_t kx = {kw // 4 * 4}; kx < {kw}; ++kx) {{
                sum += x[kx];
            }}
"""
    return f"""\
/* {op.name}: average pool {kh}x{kw}, stride {sh}x{sw}, no padding: {c}x{h}x{w} -> {c}x{oh}x{ow};
 * qnnpack arithmetic: the sum of (x - {src_q.zero_point}) times one float32 scale
 * s_in / (s_out * {n}) = {float(mult):.9g}. Cortex-M7 kernel: four values per load, summed in
 * pairs by smlad with (1, 1); the zero point comes off once per window. */
NNC_M7_NOINLINE {_signature(function, [])}
{{
    for (int32_t p = 0; p < {c * oh * ow}; ++p) {{
        const int32_t ch = p / {oh * ow}, oy = p / {ow} % {oh}, ox = p % {ow};
        const int8_t* x = input + (ch * {h} + oy * {sh}) * {w} + ox * {sw};
        int32_t sum = 0;
        for (int32_t ky = 0; ky < {kh}; ++ky, x += {w}) {{
{words}{rest}        }}
        output[p] = nnc_m7_requant(sum - {n * src_q.zero_point}, {arith.hex_float(mult)}, {dst_q.zero_point}, -128);
    }}
}}
"""


MAX4 = """\
/* Four signed bytes at once: the bytewise max of a and b (ssub8 sets a flag per byte where
 * a >= b, sel picks by it; one asm block so that nothing runs between them). */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
static inline uint32_t nnc_m7_max4(uint32_t a, uint32_t b)
{
    uint32_t d, r;
    __asm__("ssub8 %0, %2, %3\\n\\tsel %1, %2, %3" : "=&r"(d), "=r"(r) : "r"(a), "r"(b) : "cc");
    (void)d;
    return r;
}
#else
static inline uint32_t nnc_m7_max4(uint32_t a, uint32_t b)
{
    uint32_t r = 0;
    for (int32_t i = 0; i < 32; i += 8) {
        const int32_t x = (int8_t)(uint8_t)(a >> i), y = (int8_t)(uint8_t)(b >> i);
        r |= (uint32_t)(uint8_t)(x > y ? x : y) << i;
    }
    return r;
}
#endif
"""


def maxpool_supported(op) -> bool:
    return op.kind == "maxpool2d" and tuple(op.attrs["dilation"]) == (1, 1)


def _maxpool_row(op) -> dict:
    """The row buffer of the max pool: the vertical max of a window's rows, at offset pw, with
    -128 (neutral for max, as the portable kernel's start value) in the padding on both sides and
    room for the last 4-byte reads."""
    a = op.attrs
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    _, c, h, w = op.inputs[0].shape
    _, _, oh, ow = op.output.shape
    reach = (ow - 1) * sw + kw if sw > 1 else (ow + 3) // 4 * 4 + kw - 1
    return dict(c=c, h=h, w=w, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                length=(max(w + 2 * pw, reach) + 3) // 4 * 4 + 4)


def maxpool_scratch(op) -> int:
    return _maxpool_row(op)["length"]


def emit_maxpool(op, function: str) -> str:
    g = _maxpool_row(op)
    w, pw, kw, ow = g["w"], g["pw"], g["kw"], g["ow"]
    words, tail = divmod(w, 4)
    # vertical: the first row of the window copied, the others max'ed in, 4 bytes per step (and
    # the bytes after the last whole word one by one)
    copy_tail = max_tail = ""
    if tail:
        copy_tail = f"""\
            for (int32_t i = {words * 4}; i < {w}; ++i) {{
                dst[i] = src[i];
            }}
"""
        max_tail = f"""\
                for (int32_t i = {words * 4}; i < {w}; ++i) {{
                    dst[i] = src[i] > dst[i] ? src[i] : dst[i];
                }}
"""
    vertical = f"""\
            const int8_t* src = input + (ch * {g['h']} + iy_lo) * {w};
            int8_t* const dst = row + {pw};
            for (int32_t i = 0; i < {words * 4}; i += 4) {{
                nnc_m7_store32(dst + i, nnc_m7_load32(src + i));
            }}
{copy_tail}            for (int32_t iy = iy_lo + 1; iy < iy_hi; ++iy) {{
                src += {w};
                for (int32_t i = 0; i < {words * 4}; i += 4) {{
                    nnc_m7_store32(dst + i, nnc_m7_max4(nnc_m7_load32(dst + i), nnc_m7_load32(src + i)));
                }}
{max_tail}            }}
"""
    if g["sw"] == 1:   # 4 outputs per step from unaligned words of the row
        taps = "".join(f"                m = nnc_m7_max4(m, nnc_m7_load32(row + ox + {kx}));\n"
                       for kx in range(1, kw))
        horizontal = f"""\
            for (int32_t ox = 0; ox < {ow}; ox += 4) {{
                uint32_t m = nnc_m7_load32(row + ox);
{taps}                if (ox + 4 <= {ow}) {{
                    nnc_m7_store32(out + ox, m);
                }} else {{
                    for (int32_t i = 0; ox + i < {ow}; ++i, m >>= 8) {{
                        out[ox + i] = (int8_t)(uint8_t)m;
                    }}
                }}
            }}
"""
    else:
        taps = "".join(f"                v = x[{kx}];\n                m = v > m ? v : m;\n" for kx in range(1, kw))
        horizontal = f"""\
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                const int8_t* const x = row + ox * {g['sw']};
                int32_t m = x[0], v;
{taps}                out[ox] = (int8_t)m;
            }}
"""
    return f"""\
/* {op.name}: max pool {g['kh']}x{kw}, stride {g['sh']}x{g['sw']}, padding {g['ph']}x{pw}: {g['c']}x{g['h']}x{w} -> {g['c']}x{g['oh']}x{ow}.
 * Cortex-M7 kernel: per output row the vertical max of the window's rows (4 bytes per ssub8/sel),
 * into a row buffer whose padding is -128, then the horizontal max{" of 4 outputs per step" if g['sw'] == 1 else ""};
 * no bounds checks per element. Scratch: the row buffer ({g['length']} bytes). */
NNC_M7_NOINLINE {_signature(function, ["void* scratch"])}
{{
    int8_t* const row = (int8_t*)scratch;
    for (int32_t i = 0; i < {g['length']}; ++i) {{
        row[i] = -128;
    }}
    for (int32_t ch = 0; ch < {g['c']}; ++ch) {{
        for (int32_t oy = 0; oy < {g['oh']}; ++oy) {{
            const int32_t top = oy * {g['sh']} - {g['ph']};
            const int32_t iy_lo = top < 0 ? 0 : top;
            const int32_t iy_hi = top + {g['kh']} < {g['h']} ? top + {g['kh']} : {g['h']};
            int8_t* const out = output + (ch * {g['oh']} + oy) * {ow};
{vertical}{horizontal}        }}
    }}
}}
"""

