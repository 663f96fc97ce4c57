"""Cortex-M7 kernels for depthwise convolution (groups == input channels == output channels).

The graph is NCHW, so a depthwise layer is one small single-channel convolution per channel. Two
kernels, both with the padding outside the MAC loop (a padded copy of the channel's plane, whose
border is written once per layer) and the per-channel bias, multiplier and taps loaded once per
channel:

- three-tap rows (3x3, 5x3, ...) at horizontal stride 1 or 2, the layers of DS-CNN and MobileNet:
  the plane is copied as int8, padding at the input zero point (which is folded into the bias,
  bias - zp * sum(w), as in the conv kernels), four bytes per load and store. One 32-bit load of
  the plane row b0 b1 b2 b3 gives, by `sxtb16`, (b0, b2) and (b1, b3). With the taps of the row
  packed as (w0, w2) and w1:
      output at b0:  smlad((w0, w2), (b0, b2)) + smlabb((b1, b3), w1)      (stride 1 and 2)
      output at b1:  smlad((w0, w2), (b1, b3)) + smlatb((b0, b2), w1)      (stride 1)
  so at stride 1 two neighbouring outputs share the load and both `sxtb16`: 7 instructions for 6
  MACs per kernel row, two tap registers per row. At stride 2 the next output starts 2 bytes on:
  its own load, no plane of every other column is made.
- any other kernel (5x5, 7x7, 1x5, ...): the plane is copied as int16 (x - zp) with zero
  padding and the kernel taps of one row are paired, (w0, w1), (w2, w3), ...: one `smlad` on a
  32-bit load of two neighbouring int16 inputs does two MACs; at stride 1 two neighbouring outputs
  come from the same words: output ox uses (w0, w1), (w2, 0) on the words at ox, ox + 2, output
  ox + 1 uses (0, w0), (w1, w2) (`pack_taps`).
Requantization is the float32 one of the other m7 kernels (`nnc_m7_requant`: vcvtr and ssat).

Why not channels innermost (CMSIS-NN's layout): the activations are NCHW here, and `smlad` on a
pair of channels would add the two channels' products; pairing the taps of one channel keeps two
MACs per `smlad`.
"""
from __future__ import annotations

import numpy as np

from . import Kernel, KernelProvider
from .c_kernels import REQUANT_FLOAT, _signature
from .m7_common import NO_PRESCHEDULE, bias_folds, folded_bias


ROW_INTRINSICS = """\
/* One-product DSP intrinsics of the three-tap depthwise kernel. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
/* acc + bottom(a) * bottom(b), signed halfwords */
static inline int32_t nnc_m7_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlabb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
/* acc + top(a) * bottom(b), signed halfwords */
static inline int32_t nnc_m7_smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    int32_t r;
    __asm__("smlatb %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(acc));
    return r;
}
#else
static inline int32_t nnc_m7_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t p = (int32_t)(int16_t)(uint16_t)(a & 0xFFFFu) * (int32_t)(int16_t)(uint16_t)(b & 0xFFFFu);
    return (int32_t)((uint32_t)acc + (uint32_t)p);
}
static inline int32_t nnc_m7_smlatb(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t p = (int32_t)(int16_t)(uint16_t)(a >> 16) * (int32_t)(int16_t)(uint16_t)(b & 0xFFFFu);
    return (int32_t)((uint32_t)acc + (uint32_t)p);
}
#endif
"""


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


def is_three_tap(op) -> bool:
    """Rows of three taps at horizontal stride 1 or 2: the int8 kernel (any height, any vertical
    stride)."""
    return int(op.params["weight"].shape[3]) == 3 and op.attrs["stride"][1] in (1, 2)


def pack_row_taps(weight: np.ndarray) -> np.ndarray:
    """[c, 1, kh, 3] int8 -> int16 [c, kh, 4]: per kernel row the words (w0, w2) and (w1, 0)."""
    c, _, kh, _ = weight.shape
    taps = np.zeros((c, kh, 4), dtype=np.int16)
    taps[:, :, 0], taps[:, :, 1], taps[:, :, 2] = weight[:, 0, :, 0], weight[:, 0, :, 2], weight[:, 0, :, 1]
    return taps.reshape(-1)


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
        if is_three_tap(op) and bias_folds(op):
            return self._emit_three_tap(op, function)
        g = _geometry(op)
        consts = {"taps": pack_taps(op.params["weight"].astype(np.int8), g["words"], g["pairs_out"]),
                  "bias": op.params["bias"].astype(np.int32),
                  "multiplier": op.params["multiplier"].astype(np.float32)}
        decls = ["const int16_t* taps", "const int32_t* bias", "const float* multiplier", "void* scratch"]
        requant, prelude = self._requant(op)
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

    def _requant(self, op):
        """The requantization expression (of {acc} and the channel's multiplier m) and the
        prelude it needs."""
        lo, hi = op.attrs["clamp"]
        zp_out = op.output.qparams.zero_point
        if hi == 127:
            return f"nnc_m7_requant({{acc}}, m, {zp_out}, {lo})", dict(self._prelude)
        return (f"nnc_requant_float({{acc}}, m, {zp_out}, {lo}, {hi})",
                dict(self._prelude, requant_float=REQUANT_FLOAT))

    def _emit_three_tap(self, op, function: str) -> Kernel:
        _, c, h, w = op.inputs[0].shape
        _, _, oh, ow = op.output.shape
        kh = int(op.params["weight"].shape[2])
        (sh, sw), (ph, pw) = op.attrs["stride"], op.attrs["padding"]
        zp = op.inputs[0].qparams.zero_point
        hp, wp = h + 2 * ph, w + 2 * pw
        # The last pass loads 4 bytes of which it uses 3: one byte past the plane.
        plane_bytes = hp * wp + 1
        consts = {"taps": pack_row_taps(op.params["weight"].astype(np.int8)),
                  "bias": folded_bias(op), "multiplier": op.params["multiplier"].astype(np.float32)}
        decls = ["const int16_t* taps", "const int32_t* bias", "const float* multiplier", "void* scratch"]
        requant, prelude = self._requant(op)
        prelude.update(m7_4_depthwise_rows=ROW_INTRINSICS, m7_4_no_preschedule=NO_PRESCHEDULE)
        taps = "".join(f"        const uint32_t w02_{ky} = nnc_m7_load32(t + {4 * ky}), "
                       f"w1_{ky} = nnc_m7_load32(t + {4 * ky + 2});\n" for ky in range(kh))

        def macs(pair: bool, x: str) -> str:
            lines = []
            for ky in range(kh):
                lines.append(f"                const uint32_t v{ky} = nnc_m7_load32({x} + {ky * wp});\n"
                             f"                const uint32_t s{ky} = nnc_m7_sxtb16(v{ky}), "
                             f"r{ky} = nnc_m7_sxtb16_ror8(v{ky});\n"
                             f"                acc0 = nnc_m7_smlabb(r{ky}, w1_{ky}, nnc_m7_smlad(w02_{ky}, s{ky}, acc0));\n")
                if pair:
                    lines.append(f"                acc1 = nnc_m7_smlatb(s{ky}, w1_{ky}, nnc_m7_smlad(w02_{ky}, r{ky}, acc1));\n")
            return "".join(lines)

        if sw == 1:
            pass_body = f"""\
            for (int32_t ox = 0; ox < {ow // 2 * 2}; ox += 2) {{
                const int8_t* const x = row + ox;
                int32_t acc0 = b, acc1 = b;
{macs(True, "x")}                out[ox] = {requant.format(acc="acc0")};
                out[ox + 1] = {requant.format(acc="acc1")};
            }}
"""
        else:
            pass_body = f"""\
            for (int32_t ox = 0; ox < {ow}; ++ox) {{
                const int8_t* const x = row + {sw} * ox;
                int32_t acc0 = b;
{macs(False, "x")}                out[ox] = {requant.format(acc="acc0")};
            }}
"""
        if sw == 1 and ow % 2:
            pass_body += f"""\
            {{   /* the last (odd) output of the row */
                const int8_t* const x = row + {ow - 1};
                int32_t acc0 = b;
{macs(False, "x")}                out[{ow - 1}] = {requant.format(acc="acc0")};
            }}
"""
        src = f"""\
/* {op.name}: depthwise conv2d {c}x{h}x{w} -> {c}x{oh}x{ow}, kernel {kh}x3, stride {sh}x{sw},
 * padding {ph}x{pw}. Cortex-M7 kernel: per channel the plane as int8 inside its padding ({hp}x{wp}
 * in the scratch, padding at the zero point {zp}, folded into the bias); per kernel row one load,
 * sxtb16 (b0, b2) and (b1, b3), smlad with (w0, w2) and smlabb with w1{"; two outputs share them" if sw == 1 else ""}. */
NNC_M7_NOINLINE NNC_M7_NO_PRESCHEDULE {_signature(function, decls)}
{{
    int8_t* const plane = (int8_t*)scratch;
    /* the padding stays at the zero point for every channel */
    for (int32_t i = 0; i < {plane_bytes}; ++i) {{
        plane[i] = {zp};
    }}
    for (int32_t ch = 0; ch < {c}; ++ch) {{
{self._copy_int8(h, w, wp, ph * wp + pw)}        const int16_t* const t = taps + ch * {4 * kh};
{taps}        const int32_t b = bias[ch];
        const float m = multiplier[ch];
        int8_t* out = output + ch * {oh * ow};
        for (int32_t oy = 0; oy < {oh}; ++oy, out += {ow}) {{
            const int8_t* const row = plane + oy * {sh * wp};
{pass_body}        }}
    }}
}}
"""
        args = ["in0", "out0"] + [f"const:{k}" for k in consts] + ["scratch"]
        return Kernel(function, src, args, consts, self.name, prelude, scratch_bytes=plane_bytes)

    @staticmethod
    def _copy_int8(h, w, wp, offset) -> str:
        """C that copies the channel's h x w plane into rows of wp bytes from plane + offset:
        whole words, then the rest of the row byte by byte."""
        tail = "".join(f"                dst[{x}] = src[{x}];\n" for x in range(w // 4 * 4, w))
        words = ""
        if w // 4:
            words = f"""\
                for (int32_t i = 0; i < {w // 4 * 4}; i += 4) {{
                    nnc_m7_store32(dst + i, nnc_m7_load32(src + i));
                }}
"""
        return f"""\
        {{   /* the channel's plane inside its padding */
            const int8_t* src = input + ch * {h * w};
            int8_t* dst = plane + {offset};
            for (int32_t y = 0; y < {h}; ++y, src += {w}, dst += {wp}) {{
{words}{tail}            }}
        }}
"""

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
