"""Cortex-M7 kernel for `cat`: each input copied into its slice of the output, requantized to the
output's quantization as torch does.

torch requantizes every element as float32 (dequantize, times 1/scale, round half to even), a
function of the int8 code alone: here it is a 256-entry table per input whose quantization
differs from the output's, made at export from `arith.requantize_tensor` on every code, so the
kernel equals the reference by construction. Four codes per 32-bit load and store (`m7_lut`'s
lookup: the table indexed by the code's raw byte); an input with the output's quantization is
copied a word at a time. Loads and stores go through memcpy (the M7 allows unaligned words), so
slices at any byte offset are fine.
"""
from __future__ import annotations

import numpy as np

from .. import arith
from . import Kernel, KernelProvider
from .c_kernels import _signature
from .m7_kernels import INTRINSICS
from .m7_lut import LOOKUP4, OPAQUE, byte_indexed_table


def requantize_table(src, dst) -> np.ndarray:
    """int8 [256]: entry code + 128 = the code requantized from `src` to `dst` (the IR's table order)."""
    return arith.requantize_tensor(np.arange(-128, 128), src, dst)


class M7Cat(KernelProvider):
    """Concatenation along any axis: word copies, or four table lookups per word."""
    name = "m7"

    def supports(self, op) -> bool:
        return (op.kind == "cat" and len(op.inputs) >= 2 and op.output.qparams is not None
                and all(t.qparams is not None for t in op.inputs))

    def emit(self, op, function: str) -> Kernel:
        axis = op.attrs["axis"]
        outer = int(np.prod(op.output.shape[:axis]))
        out_inner = int(np.prod(op.output.shape[axis:]))
        dst = op.output.qparams
        consts, parts, offset = {}, [], 0
        for i, t in enumerate(op.inputs):
            inner = int(np.prod(t.shape[axis:]))
            if t.qparams == dst:
                how, word, byte = "copied", "nnc_m7_load32(src + k)", "src[k]"
            else:
                consts[f"table{i}"] = byte_indexed_table(requantize_table(t.qparams, dst))
                how = "requantized through its table"
                word, byte = f"nnc_m7_lookup4(t{i}, nnc_m7_load32(src + k))", f"(int8_t)t{i}[(uint8_t)src[k]]"
            table = "" if t.qparams == dst else f"""\
        const uint8_t* t{i} = (const uint8_t*)table{i};
        NNC_M7_OPAQUE(t{i});
"""
            words = f"""\
            for (; k < {inner // 4 * 4}; k += 4) {{
                nnc_m7_store32(dst + k, {word});
            }}
""" if inner >= 4 else ""
            rest = f"""\
            for (; k < {inner}; ++k) {{
                dst[k] = {byte};
            }}
""" if inner % 4 else ""
            parts.append(f"""\
    {{   /* input {i}: {inner} bytes per outer step, {how} */
{table}        for (int32_t o = 0; o < {outer}; ++o) {{
            const int8_t* const src = input{i} + o * {inner};
            int8_t* const dst = output + o * {out_inner} + {offset};
            int32_t k = 0;
{words}{rest}        }}
    }}
""")
            offset += inner
        n = len(op.inputs)
        decls = [f"const int8_t* {name}" for name in consts]
        src = f"""\
/* {op.name}: concatenation of {n} tensors along axis {axis}, each requantized to the output as torch
 * does (float32), through a 256-entry table per input made at export from the reference on every
 * code. Cortex-M7 kernel: four codes per 32-bit load and store. */
NNC_M7_NOINLINE {_signature(function, decls, n)}
{{
{"".join(parts)}}}
"""
        args = [f"in{i}" for i in range(n)] + ["out0"] + [f"const:{k}" for k in consts]
        prelude = {"m7_0_intrinsics": INTRINSICS, "m7_lut_lookup4": LOOKUP4, "m7_lut_opaque": OPAQUE}
        return Kernel(function, src, args, consts, self.name, prelude)
