"""Cortex-M7 kernel for depthwise convolution (groups == input channels == output channels).

The graph is NCHW, so a depthwise layer is one small single-channel convolution per channel.
Per channel:
- the channel's plane is copied once into int16 scratch as x - zp_in, with its padding (0 = the
  real zero) around it and a few zero columns on the right: the MAC loop reads whole words
  without any bounds check, and no padding test is left inside it;
- the kernel taps of one row are paired, (w0, w1), (w2, w3), ...: one `smlad` on a 32-bit load of
  two neighbouring int16 inputs does two MACs;
- stride 1 computes two neighbouring outputs per pass from the *same* input words: output ox
  uses the pairs (w0, w1), (w2, 0) on the words at ox, ox + 2; output ox + 1 uses (0, w0),
  (w1, w2) on the same words. For 3x3 that is 6 loads and 12 `smlad` for 18 MACs;
- other strides compute one output per pass with the first set of pairs.
The pairs of every channel are built at export (`pack_taps`) and loaded into registers once per
channel. Requantization is the float32 one of the other m7 kernels (`nnc_m7_requant`: vrintr.f32
and ssat).

Why not channels innermost (CMSIS-NN's layout): the activations are NCHW here, and pairing taps
gives two MACs per `smlad`, where pairing channels with `smlabb`/`smlatt` gives one.
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider
from .c_kernels import REQUANT_FLOAT, _signature


def is_depthwise(op) -> bool:
    if op.kind != "conv2d":
        return False
    _, cin, _, _ = op.inputs[0].shape
    return op.attrs["groups"] == cin == op.output.shape[1] and cin > 1


def _geometry(op) -> dict:
    _, c, h, w = op.inputs[0].shape
    _, _, oh, ow = op.output.shape
    kh, kw = (int(d) for d in op.params["weight"].shape[2:])
    (sh, sw), (ph, pw) = op.attrs["stride"], op.attrs["padding"]
    pairs_out = sw == 1 and ow > 1            # two outputs per pass from the same words
    words = (kw + 2) // 2 if pairs_out else (kw + 1) // 2   # int16 pairs per kernel row
    hp = max(h + 2 * ph, (oh - 1) * sh + kh)
    wp = max(w + 2 * pw, (ow - 1) * sw + 2 * words)        # room for the last pass's words
    return dict(c=c, h=h, w=w, oh=oh, ow=ow, kh=kh, kw=kw, sh=sh, sw=sw, ph=ph, pw=pw,
                pairs_out=pairs_out, words=words, hp=hp, wp=wp)


def pack_taps(weight: np.ndarray, words: int, pairs_out: bool) -> np.ndarray:
    """[c, 1, kh, kw] int8 -> int16 [c, sets, kh, 2 * words]: set 0 the taps padded with zeros
    on the right (output ox), set 1 (pairs_out only) shifted right by one (output ox + 1)."""
    c, _, kh, kw = weight.shape
    sets = 2 if pairs_out else 1
    taps = np.zeros((c, sets, kh, 2 * words), dtype=np.int16)
    taps[:, 0, :, :kw] = weight[:, 0]
    if pairs_out:
        taps[:, 1, :, 1:kw + 1] = weight[:, 0]
    return taps.reshape(-1)


class M7Depthwise(KernelProvider):
    """Depthwise conv2d (multiplier 1, dilation 1, float requantization, symmetric weights)."""
    name = "m7"

    def __init__(self, prelude: dict):
        self._prelude = prelude

    def supports(self, op) -> bool:
        if not is_depthwise(op) or op.attrs.get("requant") != "float":
            return False
        wzp = op.params.get("weight_zp")
        if wzp is not None and np.any(wzp != 0):
            return False
        return tuple(op.attrs["dilation"]) == (1, 1) and op.inputs[0].qparams is not None

    def emit(self, op, function: str) -> Kernel:
        g = _geometry(op)
        consts = {"taps": pack_taps(op.params["weight"].astype(np.int8), g["words"], g["pairs_out"]),
                  "bias": op.params["bias"].astype(np.int32),
                  "multiplier": op.params["multiplier"].astype(np.float32)}
        decls = ["const int16_t* taps", "const int32_t* bias", "const float* multiplier", "void* scratch"]
        lo, hi = op.attrs["clamp"]
        zp_out = op.output.qparams.zero_point
        if hi == 127:
            requant = f"nnc_m7_requant({{acc}}, m, {zp_out}, {lo})"
            prelude = dict(self._prelude)
        else:
            requant = f"nnc_requant_float({{acc}}, m, {zp_out}, {lo}, {hi})"
            prelude = dict(self._prelude, requant_float=REQUANT_FLOAT)
        src = f"""\
/* {op.name}: depthwise conv2d {g['c']}x{g['h']}x{g['w']} -> {g['c']}x{g['oh']}x{g['ow']}, kernel {g['kh']}x{g['kw']},
 * stride {g['sh']}x{g['sw']}, padding {g['ph']}x{g['pw']}. Cortex-M7 kernel: per channel the plane as int16 (x - zp)
 * with its zero padding ({g['hp']}x{g['wp']} in the scratch), tap pairs on smlad{", two outputs per pass" if g['pairs_out'] else ""}. */
NNC_M7_NOINLINE {_signature(function, decls)}
{{
    int16_t* const plane = (int16_t*)scratch;
    /* the padding (and the spare columns) stay 0 for every channel */
    for (int32_t i = 0; i < {g['hp'] * g['wp']}; ++i) {{
        plane[i] = 0;
    }}
    for (int32_t ch = 0; ch < {g['c']}; ++ch) {{
{self._copy(op, g)}{self._load_taps(g)}        const int32_t b = bias[ch];
        const float m = multiplier[ch];
        int8_t* out = output + ch * {g['oh'] * g['ow']};
        for (int32_t oy = 0; oy < {g['oh']}; ++oy, out += {g['ow']}) {{
            const int16_t* const row = plane + oy * {g['sh'] * g['wp']};
{self._row(g, requant)}        }}
    }}
}}
"""
        args = ["in0", "out0"] + [f"const:{k}" for k in consts] + ["scratch"]
        return Kernel(function, src, args, consts, self.name, prelude,
                      scratch_bytes=2 * g["hp"] * g["wp"])

    @staticmethod
    def _copy(op, g) -> str:
        zp = op.inputs[0].qparams.zero_point
        return f"""\
        {{   /* the channel's plane, x - {zp}, inside its padding */
            const int8_t* src = input + ch * {g['h'] * g['w']};
            int16_t* dst = plane + {g['ph'] * g['wp'] + g['pw']};
            for (int32_t y = 0; y < {g['h']}; ++y, src += {g['w']}, dst += {g['wp']}) {{
                for (int32_t x = 0; x < {g['w']}; ++x) {{
                    dst[x] = (int16_t)(src[x] - {zp});
                }}
            }}
        }}
"""

    @staticmethod
    def _load_taps(g) -> str:
        sets = 2 if g["pairs_out"] else 1
        per_channel = sets * g["kh"] * g["words"]
        lines = [f"        const int16_t* const t = taps + ch * {2 * per_channel};\n"]
        for s in range(sets):
            for ky in range(g["kh"]):
                for j in range(g["words"]):
                    k = (s * g["kh"] + ky) * g["words"] + j
                    lines.append(f"        const uint32_t t{s}_{ky}_{j} = nnc_m7_load32(t + {2 * k});\n")
        return "".join(lines)

    @staticmethod
    def _macs(g, sets, acc_of, x) -> str:
        lines = []
        for ky in range(g["kh"]):
            for j in range(g["words"]):
                lines.append(f"                const uint32_t x{ky}_{j} = nnc_m7_load32({x} + {ky * g['wp'] + 2 * j});\n")
                for s in sets:
                    a = acc_of(s)
                    lines.append(f"                {a} = nnc_m7_smlad(t{s}_{ky}_{j}, x{ky}_{j}, {a});\n")
        return "".join(lines)

    def _row(self, g, requant) -> str:
        ow = g["ow"]
        if not g["pairs_out"]:
            return f"""\
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                const int16_t* const x = row + ox * {g['sw']};
                int32_t acc = b;
{self._macs(g, [0], lambda s: "acc", "x")}                out[ox] = {requant.format(acc="acc")};
            }}
"""
        body = f"""\
            for (int32_t ox = 0; ox < {ow // 2 * 2}; ox += 2) {{
                const int16_t* const x = row + ox;
                int32_t acc0 = b, acc1 = b;
{self._macs(g, [0, 1], lambda s: f"acc{s}", "x")}                out[ox] = {requant.format(acc="acc0")};
                out[ox + 1] = {requant.format(acc="acc1")};
            }}
"""
        if ow % 2:
            body += f"""\
            {{   /* the last (odd) output of the row */
                const int16_t* const x = row + {ow - 1};
                int32_t acc0 = b;
{self._macs(g, [0], lambda s: "acc0", "x")}                out[{ow - 1}] = {requant.format(acc="acc0")};
            }}
"""
        return body
