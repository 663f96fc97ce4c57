"""IMX681 kernel provider: the ops only this target compiles. Everything else falls through to
the portable C kernels (nnc.kernels.c_kernels), which are bit-exact with qnnpack.

`add` with requant "torch_float_add" (a state added in float, the contract in nnc.arith):

    a = (float)(qa - za) * sa;  b = (float)(qb - zb) * sb;       dequantize, no FMA
    r = fmaf(a + b, 1.f / so, zo_t);                              ONE rounding, as torch
    q = nearbyintf(clamp(r, lo_t, hi_t)) - offset;                round half to even

Requires a correctly rounded C99 `fmaf` (glibc; Cortex-M4F/M7 and RISC-V F have it in hardware)
and -ffp-contract=off for the rest. Clamping before rounding equals torch's clamp after
rounding because rounding is monotonic and the bounds are integers.
"""
from __future__ import annotations

from ... import arith
from ...kernels import Kernel, KernelProvider


class Imx681Kernels(KernelProvider):
    name = "imx681"

    def supports(self, op) -> bool:
        return op.kind == "add" and op.attrs.get("requant") == arith.FLOAT_ADD

    def emit(self, op, function: str) -> Kernel:
        qa, qb, qo = op.inputs[0].qparams, op.inputs[1].qparams, op.output.qparams
        off = int(op.attrs["torch_zp_offset"])
        lo, hi = op.attrs["clamp"]
        inv = arith.inverse_scale(qo)
        n = op.output.size
        src = f"""\
/* {op.name}: add of {n} elements in float, as torch computes dequantize -> add -> quantize:
 * a scale {qa.scale:.9g} zp {qa.zero_point}, b scale {qb.scale:.9g} zp {qb.zero_point},
 * out scale {qo.scale:.9g} zp {qo.zero_point} (torch zero point {qo.zero_point + off}). */
static void {function}(const int8_t* input0, const int8_t* input1, int8_t* output)
{{
    for (int32_t i = 0; i < {n}; ++i) {{
        const float a = (float)((int32_t)input0[i] - ({qa.zero_point})) * {arith.hex_float(qa.scale)};
        const float b = (float)((int32_t)input1[i] - ({qb.zero_point})) * {arith.hex_float(qb.scale)};
        float r = fmaf(a + b, {arith.hex_float(inv)}, {arith.hex_float(qo.zero_point + off)});
        r = r < {arith.hex_float(lo + off)} ? {arith.hex_float(lo + off)} : (r > {arith.hex_float(hi + off)} ? {arith.hex_float(hi + off)} : r);
        output[i] = (int8_t)((int32_t)nearbyintf(r) - {off});
    }}
}}
"""
        return Kernel(function, src, ["in0", "in1", "out0"], {}, self.name)
