"""Portable C kernels: plain loops with every shape baked in as a constant.

These are the fallback for every op on every target and the readable reference a firmware
engineer steps through in a debugger. Layout is NCHW (the torch layout), batch 1.
Arithmetic follows `nnc.arith` exactly.
"""
from __future__ import annotations

import numpy as np

from .. import arith
from . import Kernel, KernelProvider, c_moves
from . import c_signature as _signature
from . import kernel_args as _args

REQUANT_FLOAT = """\
/* qnnpack requantization: rintf(f32(acc) * multiplier), round half to even
 * (nearbyintf in the default rounding mode), plus the zero point, clamped. */
static inline int8_t nnc_requant_float(int32_t acc, float multiplier, int32_t zero_point,
                                       int32_t lo, int32_t hi)
{
    int32_t q = (int32_t)nearbyintf((float)acc * multiplier) + zero_point;
    return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
}
"""

REQUANT_SHIFT = """\
/* Power-of-two requantization: arithmetic right shift without rounding, clamped. */
static inline int8_t nnc_requant_shift(int32_t acc, int32_t shift, int32_t lo, int32_t hi)
{
    int32_t q = acc >> shift;
    return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
}
"""

CLAMP = """\
static inline int8_t nnc_clamp_i8(int32_t q, int32_t lo, int32_t hi)
{
    return (int8_t)(q < lo ? lo : (q > hi ? hi : q));
}
"""


def _requant_call(op, acc: str, channel: str) -> tuple:
    """C expression requantizing `acc` for output channel `channel`, and the prelude it needs."""
    lo, hi = op.attrs["clamp"]
    if op.attrs["requant"] == "float":
        zp = op.output.qparams.zero_point
        return (f"nnc_requant_float({acc}, multiplier[{channel}], {zp}, {lo}, {hi})",
                {"requant_float": REQUANT_FLOAT})
    return (f"nnc_requant_shift({acc}, {op.attrs['shift']}, {lo}, {hi})",
            {"requant_shift": REQUANT_SHIFT})


def _weight_consts(op) -> tuple:
    """Constants and C argument declarations shared by conv2d and dense."""
    consts = {"weight": op.params["weight"].astype(np.int8), "bias": op.params["bias"].astype(np.int32)}
    decls = ["const int8_t* weight", "const int32_t* bias"]
    if op.attrs["requant"] == "float":
        consts["multiplier"] = op.params["multiplier"].astype(np.float32)
        decls.append("const float* multiplier")
    wzp = op.params.get("weight_zp")
    if wzp is not None and np.any(wzp != 0):
        consts["weight_zp"] = wzp.astype(np.int32)
        decls.append("const int32_t* weight_zp")
    return consts, decls


class PortableCKernels(KernelProvider):
    name = "c"

    def supports(self, op) -> bool:
        return op.kind in ("conv2d", "dense", "relu", "maxpool2d", "avgpool2d", "add", "cat", "reshape",
                           "transpose", "lut", "mul", "mean", "softmax", "slice", "pad", "upsample_nearest")

    def emit(self, op, function: str) -> Kernel:
        movers = {"transpose": c_moves.emit_transpose, "slice": c_moves.emit_slice,
                  "pad": c_moves.emit_pad, "upsample_nearest": c_moves.emit_upsample_nearest}
        if op.kind in movers:
            return movers[op.kind](op, function)
        return getattr(self, "_" + op.kind)(op, function)

    # -- conv2d --------------------------------------------------------------------------------
    def _conv2d(self, op, function):
        a = op.attrs
        _, cin, h, w = op.inputs[0].shape
        _, cout, oh, ow = op.output.shape
        kh, kw = op.params["weight"].shape[2:]
        (sh, sw), (ph, pw), (dh, dw), groups = a["stride"], a["padding"], a["dilation"], a["groups"]
        cin_g, cout_g = cin // groups, cout // groups
        consts, decls = _weight_consts(op)
        izp = op.inputs[0].qparams.zero_point if op.inputs[0].qparams else 0
        wterm = "(int32_t)w[kx]" + (" - weight_zp[oc]" if "weight_zp" in consts else "")
        requant, prelude = _requant_call(op, "acc", "oc")
        xterm = f"((int32_t)x[kx * {dw}] - {izp})" if izp else f"(int32_t)x[kx * {dw}]"
        if wterm != "(int32_t)w[kx]":
            wterm = f"({wterm})"
        group_line = f"        const int32_t g = oc / {cout_g};\n" if groups > 1 else ""
        in_channel = f"g * {cin_g} + ic" if groups > 1 else "ic"
        # The valid kernel rows/columns are computed per output position, so the inner loops
        # carry no bounds checks; padded positions contribute (zp - zp) = 0 and are skipped.
        src = f"""\
/* {op.name}: conv2d {cin}x{h}x{w} -> {cout}x{oh}x{ow}, kernel {kh}x{kw}, stride {sh}x{sw},
 * padding {ph}x{pw}, dilation {dh}x{dw}, groups {groups}; NCHW, weights OIHW. */
{_signature(function, decls)}
{{
    for (int32_t oc = 0; oc < {cout}; ++oc) {{
{group_line}        for (int32_t oy = 0; oy < {oh}; ++oy) {{
            const int32_t iy0 = oy * {sh} - {ph};
            const int32_t ky_lo = iy0 < 0 ? (-iy0 + {dh - 1}) / {dh} : 0;
            const int32_t ky_hi = ({h} - iy0 + {dh - 1}) / {dh} < {kh} ? ({h} - iy0 + {dh - 1}) / {dh} : {kh};
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                const int32_t ix0 = ox * {sw} - {pw};
                const int32_t kx_lo = ix0 < 0 ? (-ix0 + {dw - 1}) / {dw} : 0;
                const int32_t kx_hi = ({w} - ix0 + {dw - 1}) / {dw} < {kw} ? ({w} - ix0 + {dw - 1}) / {dw} : {kw};
                int32_t acc = bias[oc];
                for (int32_t ic = 0; ic < {cin_g}; ++ic) {{
                    for (int32_t ky = ky_lo; ky < ky_hi; ++ky) {{
                        const int8_t* x = &input[(({in_channel}) * {h} + iy0 + ky * {dh}) * {w} + ix0];
                        const int8_t* w = &weight[((oc * {cin_g} + ic) * {kh} + ky) * {kw}];
                        for (int32_t kx = kx_lo; kx < kx_hi; ++kx) {{
                            acc += {xterm} * {wterm};
                        }}
                    }}
                }}
                output[(oc * {oh} + oy) * {ow} + ox] = {requant};
            }}
        }}
    }}
}}
"""
        return Kernel(function, src, _args(consts), consts, self.name, prelude)

    # -- dense ---------------------------------------------------------------------------------
    def _dense(self, op, function):
        cout, k = op.params["weight"].shape
        consts, decls = _weight_consts(op)
        izp = op.inputs[0].qparams.zero_point if op.inputs[0].qparams else 0
        xterm = f"((int32_t)input[k] - {izp})" if izp else "(int32_t)input[k]"
        wterm = "(int32_t)w[k]" + (" - weight_zp[oc]" if "weight_zp" in consts else "")
        if "weight_zp" in consts:
            wterm = f"({wterm})"
        requant, prelude = _requant_call(op, "acc", "oc")
        src = f"""\
/* {op.name}: dense {k} -> {cout}; weights [out][in]. */
{_signature(function, decls)}
{{
    for (int32_t oc = 0; oc < {cout}; ++oc) {{
        const int8_t* w = &weight[oc * {k}];
        int32_t acc = bias[oc];
        for (int32_t k = 0; k < {k}; ++k) {{
            acc += {xterm} * {wterm};
        }}
        output[oc] = {requant};
    }}
}}
"""
        return Kernel(function, src, _args(consts), consts, self.name, prelude)

    # -- element-wise ----------------------------------------------------------------------------
    def _relu(self, op, function):
        lo, hi = op.attrs["clamp"]
        n = op.output.size
        src = f"""\
/* {op.name}: ReLU on {n} elements (clamp at the zero point {lo}). */
{_signature(function, [])}
{{
    for (int32_t i = 0; i < {n}; ++i) {{
        output[i] = nnc_clamp_i8(input[i], {lo}, {hi});
    }}
}}
"""
        return Kernel(function, src, _args({}), {}, self.name, {"clamp": CLAMP})

    def _add(self, op, function):
        n = op.output.size
        lo, hi = op.attrs["clamp"]
        if op.attrs["requant"] == "qnnpack_add":
            p = arith.qnnpack_add_params(op.inputs[0].qparams, op.inputs[1].qparams, op.output.qparams)
            mask = (1 << p["shift"]) - 1
            src = f"""\
/* {op.name}: add of {n} elements, qnnpack integer arithmetic: 22-bit multipliers
 * a={p['a_mult']} b={p['b_mult']}, rounding right shift by {p['shift']}. */
{_signature(function, [], 2)}
{{
    for (int32_t i = 0; i < {n}; ++i) {{
        const int32_t acc = {p['a_mult']} * ((int32_t)input0[i] - {p['a_zp']})
                          + {p['b_mult']} * ((int32_t)input1[i] - {p['b_zp']});
        const int32_t remainder = (acc & {mask}) - (int32_t)(acc < 0);
        const int32_t q = (acc >> {p['shift']}) + (int32_t)(remainder > {mask >> 1}) + {p['out_zp']};
        output[i] = nnc_clamp_i8(q, {lo}, {hi});
    }}
}}
"""
        else:
            src = f"""\
/* {op.name}: add of {n} elements, arithmetic right shift by {op.attrs['shift']}. */
{_signature(function, [], 2)}
{{
    for (int32_t i = 0; i < {n}; ++i) {{
        output[i] = nnc_clamp_i8(((int32_t)input0[i] + (int32_t)input1[i]) >> {op.attrs['shift']}, {lo}, {hi});
    }}
}}
"""
        return Kernel(function, src, _args({}, 2), {}, self.name, {"clamp": CLAMP})

    # -- pooling -------------------------------------------------------------------------------
    def _pool_frame(self, op):
        a = op.attrs
        _, c, h, w = op.inputs[0].shape
        _, _, oh, ow = op.output.shape
        (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
        return c, h, w, oh, ow, kh, kw, sh, sw, ph, pw

    def _maxpool2d(self, op, function):
        c, h, w, oh, ow, kh, kw, sh, sw, ph, pw = self._pool_frame(op)
        dh, dw = op.attrs["dilation"]
        src = f"""\
/* {op.name}: max pool {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}, dilation {dh}x{dw}:
 * {c}x{h}x{w} -> {c}x{oh}x{ow}. */
{_signature(function, [])}
{{
    for (int32_t ch = 0; ch < {c}; ++ch) {{
        for (int32_t oy = 0; oy < {oh}; ++oy) {{
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                int32_t best = -128;
                for (int32_t ky = 0; ky < {kh}; ++ky) {{
                    const int32_t iy = oy * {sh} - {ph} + ky * {dh};
                    if (iy < 0 || iy >= {h}) continue;
                    for (int32_t kx = 0; kx < {kw}; ++kx) {{
                        const int32_t ix = ox * {sw} - {pw} + kx * {dw};
                        if (ix < 0 || ix >= {w}) continue;
                        const int32_t v = input[(ch * {h} + iy) * {w} + ix];
                        best = v > best ? v : best;
                    }}
                }}
                output[(ch * {oh} + oy) * {ow} + ox] = (int8_t)best;
            }}
        }}
    }}
}}
"""
        return Kernel(function, src, _args({}), {}, self.name)

    def _avgpool2d(self, op, function):
        from ..reference import avgpool_divisors
        c, h, w, oh, ow, kh, kw, sh, sw, ph, pw = self._pool_frame(op)
        src_q, dst_q = op.inputs[0].qparams, op.output.qparams
        div = avgpool_divisors(op)
        mult = np.array([arith.avgpool_multiplier(src_q, dst_q, int(d)) for d in div.ravel()],
                        dtype=np.float32)
        uniform = bool(np.all(mult == mult[0]))
        consts = {} if uniform else {"multiplier": mult}
        m_expr = arith.hex_float(mult[0]) if uniform else f"multiplier[oy * {ow} + ox]"
        izp, ozp = src_q.zero_point, dst_q.zero_point
        src = f"""\
/* {op.name}: average pool {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}: {c}x{h}x{w} -> {c}x{oh}x{ow};
 * qnnpack arithmetic: sum of (x - zp) times one float32 scale s_in / (s_out * count). */
{_signature(function, [] if uniform else ["const float* multiplier"])}
{{
    for (int32_t ch = 0; ch < {c}; ++ch) {{
        for (int32_t oy = 0; oy < {oh}; ++oy) {{
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                int32_t acc = 0;
                for (int32_t ky = 0; ky < {kh}; ++ky) {{
                    const int32_t iy = oy * {sh} - {ph} + ky;
                    if (iy < 0 || iy >= {h}) continue;
                    for (int32_t kx = 0; kx < {kw}; ++kx) {{
                        const int32_t ix = ox * {sw} - {pw} + kx;
                        if (ix < 0 || ix >= {w}) continue;
                        acc += (int32_t)input[(ch * {h} + iy) * {w} + ix] - {izp};
                    }}
                }}
                output[(ch * {oh} + oy) * {ow} + ox] = nnc_requant_float(acc, {m_expr}, {ozp}, -128, 127);
            }}
        }}
    }}
}}
"""
        return Kernel(function, src, _args(consts), consts, self.name, {"requant_float": REQUANT_FLOAT})

    # -- data movement ---------------------------------------------------------------------------
    def _cat(self, op, function):
        axis = op.attrs["axis"]
        outer = int(np.prod(op.output.shape[:axis]))
        out_inner = int(np.prod(op.output.shape[axis:]))
        body, offset = [], 0
        dst = op.output.qparams
        for i, t in enumerate(op.inputs):
            inner = int(np.prod(t.shape[axis:]))
            if t.qparams == dst:
                body.append(f"""\
    for (int32_t o = 0; o < {outer}; ++o) {{
        for (int32_t i = 0; i < {inner}; ++i) {{
            output[o * {out_inner} + {offset} + i] = input{i}[o * {inner} + i];
        }}
    }}""")
            else:
                s = arith.hex_float(t.qparams.scale)
                inv = arith.hex_float(arith.inverse_scale(dst))
                body.append(f"""\
    /* input {i}: requantized as torch does: float32 dequantize, times 1/scale, round half to even */
    for (int32_t o = 0; o < {outer}; ++o) {{
        for (int32_t i = 0; i < {inner}; ++i) {{
            const float real = (float)((int32_t)input{i}[o * {inner} + i] - {t.qparams.zero_point}) * {s};
            output[o * {out_inner} + {offset} + i] =
                nnc_clamp_i8((int32_t)nearbyintf(real * {inv}) + {dst.zero_point}, -128, 127);
        }}
    }}""")
            offset += inner
        n = len(op.inputs)
        src = f"/* {op.name}: concatenation of {n} tensors along axis {axis}. */\n" \
              f"{_signature(function, [], n)}\n{{\n" + "\n".join(body) + "\n}\n"
        return Kernel(function, src, _args({}, n), {}, self.name, {"clamp": CLAMP})

    def _reshape(self, op, function):
        """Only emitted when the reshape's bytes must move (e.g. into a graph output)."""
        n = op.output.nbytes
        src = f"""\
/* {op.name}: reshape {op.inputs[0].shape} -> {op.output.shape}, a copy of {n} bytes. */
{_signature(function, [])}
{{
    for (int32_t i = 0; i < {n}; ++i) {{
        output[i] = input[i];
    }}
}}
"""
        return Kernel(function, src, _args({}), {}, self.name)

    # -- element-wise functions -----------------------------------------------------------------
    def _lut(self, op, function):
        n = op.output.size
        consts = {"table": op.params["table"].astype(np.int8)}
        src = f"""\
/* {op.name}: {op.attrs.get('function', 'table')} on {n} elements through a 256-entry table
 * (indexed by code + 128), computed at export from the reference function on every code. */
{_signature(function, ["const int8_t* table"])}
{{
    for (int32_t i = 0; i < {n}; ++i) {{
        output[i] = table[(int32_t)input[i] + 128];
    }}
}}
"""
        return Kernel(function, src, _args(consts), consts, self.name)

    def _mul(self, op, function):
        a, b = op.inputs
        out = op.output
        mult = arith.qnnpack_mul_multiplier(a.qparams, b.qparams, out.qparams)
        lo, hi = op.attrs["clamp"]
        rank = len(out.shape)
        shapes = [(1,) * (rank - len(t.shape)) + tuple(t.shape) for t in (a, b)]
        strides = []
        for shape in shapes:       # 0 along a broadcast axis
            dense = [int(np.prod(shape[i + 1:])) for i in range(rank)]
            strides.append([0 if shape[i] == 1 else dense[i] for i in range(rank)])
        loops, ind = [], "    "
        ia, ib = [], []
        for axis in range(rank):
            if out.shape[axis] == 1:
                continue
            loops.append(f"{ind}for (int32_t i{axis} = 0; i{axis} < {out.shape[axis]}; ++i{axis}) {{")
            ind += "    "
            for terms, st in ((ia, strides[0]), (ib, strides[1])):
                if st[axis]:
                    terms.append(f"i{axis}" if st[axis] == 1 else f"i{axis} * {st[axis]}")
        index = lambda terms: " + ".join(terms) or "0"
        body = f"""{ind}const int32_t prod = ((int32_t)input0[{index(ia)}] - {a.qparams.zero_point})
{ind}                   * ((int32_t)input1[{index(ib)}] - {b.qparams.zero_point});
{ind}output[o++] = nnc_requant_float(prod, {arith.hex_float(mult)}, {out.qparams.zero_point}, {lo}, {hi});"""
        closing = "\n".join("    " * d + "}" for d in range(len(loops), 0, -1))
        src = (f"/* {op.name}: multiply {tuple(a.shape)} by {tuple(b.shape)} (broadcast) -> {tuple(out.shape)};\n"
               f" * torch's quantized mul: rintf(f32((x0 - zp0) * (x1 - zp1)) * (s0 * s1 / s_out)) + zp. */\n"
               f"{_signature(function, [], 2)}\n{{\n    int32_t o = 0;\n" + "\n".join(loops) +
               f"\n{body}\n{closing}\n}}\n")
        return Kernel(function, src, _args({}, 2), {}, self.name, {"requant_float": REQUANT_FLOAT})

    def _mean(self, op, function):
        count = op.attrs["count"]
        rows = op.inputs[0].size // count
        src = f"""\
/* {op.name}: mean of {rows} rows of {count} values as torch computes it over innermost dims:
 * nearbyintf(f32(sum of the uint8 codes) / {count}) (float division, round half to even). */
{_signature(function, [])}
{{
    for (int32_t r = 0; r < {rows}; ++r) {{
        int32_t sum = 0;
        for (int32_t i = 0; i < {count}; ++i) {{
            sum += (int32_t)input[r * {count} + i] + 128;
        }}
        output[r] = (int8_t)((int32_t)nearbyintf((float)sum / {float(count)}f) - 128);
    }}
}}
"""
        return Kernel(function, src, _args({}), {}, self.name)

    def _softmax(self, op, function):
        shape, axis = op.inputs[0].shape, op.attrs["axis"]
        channels = shape[axis]
        outer, inner = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))
        consts = {"table": op.params["table"].astype(np.uint32)}
        at = f"c * {inner}" if inner > 1 else "c"
        src = f"""\
/* {op.name}: softmax over {channels} values (axis {axis}) as qnnpack computes it: exp of (x - max)
 * from a uint32 table, normalised by the row's sum with round-to-nearest integer division;
 * output scale 1/256, zero point -128. */
{_signature(function, ["const uint32_t* table"])}
{{
    for (int32_t row = 0; row < {outer * inner}; ++row) {{
        const int8_t* x = &input[(row / {inner}) * {channels * inner} + row % {inner}];
        int8_t* y = &output[(row / {inner}) * {channels * inner} + row % {inner}];
        int32_t max = -128;
        for (int32_t c = 0; c < {channels}; ++c) {{
            max = x[{at}] > max ? x[{at}] : max;
        }}
        const int32_t base = 255 - max;          /* table[base + x]: exp((x - max) * s_in) */
        uint32_t sum = 0;
        for (int32_t c = 0; c < {channels}; ++c) {{
            sum += table[base + x[{at}]];
        }}
        for (int32_t c = 0; c < {channels}; ++c) {{
            const uint32_t q = ((table[base + x[{at}]] << 8) + (sum >> 1)) / sum;
            y[{at}] = (int8_t)((int32_t)(q > 255u ? 255u : q) - 128);
        }}
    }}
}}
"""
        return Kernel(function, src, _args(consts), consts, self.name)
