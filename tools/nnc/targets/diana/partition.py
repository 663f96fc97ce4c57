"""Partitioning: which ops meet the digital accelerator's constraints (the others fall back to C
on the RISC-V core, with a DianaFallbackWarning naming the layer and the constraint)."""
from __future__ import annotations

import numpy as np

from ...errors import NncError
from ...ir import Op, Tensor
from .hardware import KERNEL_SIZES


class DianaFallbackWarning(UserWarning):
    """An op runs on the RISC-V core instead of the digital accelerator."""


def _zp(t: Tensor) -> int:
    return t.qparams.zero_point if t.qparams else 0


def _common_violations(op: Op) -> list:
    out = []
    a = op.attrs
    if a.get("requant") != "shift":
        out.append(f"requantization {a.get('requant')!r}: the accelerator only does "
                   "right_shift -> clip -> cast (requant='shift')")
    else:
        s = a.get("shift")
        if not isinstance(s, (int, np.integer)) or not 0 <= int(s) <= 31:
            out.append(f"shift {s!r}: the accelerator takes a constant right shift in [0, 31]")
    if tuple(a.get("clamp", ())) not in ((-128, 127), (0, 127)):
        out.append(f"clip {tuple(a.get('clamp', ()))}: the accelerator clips to [-128, 127], "
                   "or [0, 127] with ReLU")
    for t in op.inputs + op.outputs:
        if t.dtype != "int8":
            out.append(f"tensor '{t.name}' is {t.dtype}: the accelerator takes int8")
        elif t.size % 4:
            out.append(f"tensor '{t.name}' {tuple(t.shape)} has {t.size} elements, not a multiple "
                       "of 4 (the accelerator works in 4-byte words)")
        if _zp(t) != 0:
            out.append(f"tensor '{t.name}' has zero point {_zp(t)}: the accelerator has none")
    wzp = op.params.get("weight_zp")
    if wzp is not None and np.any(wzp != 0):
        out.append("weights with a zero point: the accelerator takes symmetric int8 weights")
    for key, dtype in (("weight", np.int8), ("bias", np.int32)):
        if key in op.params and op.params[key].dtype != dtype:
            out.append(f"{key} is {op.params[key].dtype}: the accelerator takes {np.dtype(dtype)}")
    return out


def accelerator_violations(op: Op) -> list:
    """The accelerator constraints `op` breaks (empty: it runs on the digital accelerator)."""
    a = op.attrs
    if op.kind == "conv2d":
        out = []
        cout, cin_g, kh, kw = op.params["weight"].shape
        cin = op.inputs[0].shape[1]
        if kh not in KERNEL_SIZES or kw not in KERNEL_SIZES:
            out.append(f"kernel {kh}x{kw}: the accelerator takes 1, 3, 5 or 7 in each direction")
        if tuple(a["stride"]) not in ((1, 1), (2, 2)):
            out.append(f"strides {tuple(a['stride'])}: the accelerator takes (1, 1) or (2, 2)")
        if tuple(a["dilation"]) != (1, 1):
            out.append(f"dilation {tuple(a['dilation'])}: the accelerator takes (1, 1)")
        if tuple(a["padding"]) != (kh // 2, kw // 2):
            out.append(f"padding {tuple(a['padding'])}: the accelerator takes symmetric 'same' "
                       f"padding ({kh // 2}, {kw // 2}) for a {kh}x{kw} kernel")
        g = a["groups"]
        if g != 1 and not (g == cin == cout and cin_g == 1):
            out.append(f"groups {g}: the accelerator takes 1, or groups == channels (depthwise)")
        return out + _common_violations(op)
    if op.kind == "dense":
        out = []
        if len(op.inputs[0].shape) != 2:
            out.append(f"input of shape {op.inputs[0].shape}: dense takes [1, features]")
        return out + _common_violations(op)
    if op.kind == "add":
        out = []
        if tuple(op.inputs[0].shape) != tuple(op.inputs[1].shape):
            out.append(f"inputs of shapes {op.inputs[0].shape} and {op.inputs[1].shape}: "
                       "the accelerator adds tensors of one shape")
        return out + _common_violations(op)
    if op.kind in ("maxpool2d", "avgpool2d"):
        return ["pooling is never offloaded: it runs on the RISC-V core"]
    if op.kind == "relu":
        return ["a standalone ReLU is no accelerator op (fuse it: relu=True on the layer before)"]
    if op.kind == "reshape":
        return ["a reshape moves no data"]
    return [f"{op.kind} is not an operation of the digital accelerator"]


def check_shift(op: Op) -> None:
    """A shift outside [0, 31] has no backend: the C fallback would shift an int32 by 32 or
    more (undefined behaviour), so it is an error, not a fallback."""
    s = op.attrs.get("shift")
    if op.attrs.get("requant") == "shift" and (
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) <= 31):
        raise NncError(f"shift {s!r} is not an integer in [0, 31]", f"layer '{op.name}'",
                       "build the layer with shift_bits between 0 and 31")


def is_depthwise(op: Op) -> bool:
    return op.kind == "conv2d" and op.attrs["groups"] > 1


def kernel_entry(op: Op) -> str:
    """The DORY entry point that runs an accelerator op."""
    if op.kind == "conv2d":
        return "digital_depthwise_conv_2d" if is_depthwise(op) else "digital_conv_2d"
    return {"dense": "digital_fully_connected", "add": "digital_element_wise_sum"}[op.kind]
