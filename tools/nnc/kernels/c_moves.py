"""Portable C for the data movement ops: transpose, slice, pad, nearest upsampling.

All four are one kernel shape: a loop nest over the output's axes in order (so the output is
written sequentially), where each output index maps to one input index along one input axis.
Per axis the emitter needs the C expression of that source index, the input stride, and for
padding the input extent (an index outside it reads the pad value). Axes of extent 1 get no
loop. The batch axis (always 1) is left out. Moves that need no copy never get here: the
planner lets them alias their input (`planner.alias_moves`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import Kernel, c_signature, kernel_args


@dataclass
class _Axis:
    extent: int                     # output extent
    source: str                     # C expression of the input index, in terms of `{i}`
    stride: int                     # input elements between neighbours along the input axis
    bound: Optional[int] = None     # input extent, when the source index may fall outside it


def _strides(shape) -> list:
    return [int(np.prod(shape[i + 1:])) for i in range(len(shape))]


def _emit(op, function, axes, comment, pad_value=0, consts=None, provider="c") -> Kernel:
    consts = consts or {}
    decls = [f"const int32_t* {name}" for name in consts]
    lines, depth, offset, valid = [], 1, "0", []
    for j, ax in enumerate(axes):
        ind = "    " * depth
        var = f"i{j}"
        if ax.extent > 1:
            lines.append(f"{ind}for (int32_t {var} = 0; {var} < {ax.extent}; ++{var}) {{")
            depth += 1
            ind = "    " * depth
            source = ax.source.format(i=var)
        else:
            source = ax.source.format(i="0")
        if ax.bound is not None:
            lines.append(f"{ind}const int32_t s{j} = {source};")
            valid.append(f"(uint32_t)s{j} < {ax.bound}u")
            source = f"s{j}"
        if ax.stride and source != "0":
            term = source if ax.stride == 1 else f"({source}) * {ax.stride}"
            lines.append(f"{ind}const int32_t p{j} = {term if offset == '0' else offset + ' + ' + term};")
            offset = f"p{j}"
    ind = "    " * depth
    read = f"input[{offset}]"
    if valid:
        read = f"({' && '.join(valid)}) ? {read} : (int8_t)({pad_value})"
    lines.append(f"{ind}output[o++] = {read};")
    for d in range(depth - 1, 0, -1):
        lines.append("    " * d + "}")
    body = "\n".join(lines)
    src = (f"/* {op.name}: {comment}: {tuple(op.inputs[0].shape)} -> {tuple(op.output.shape)}. */\n"
           f"{c_signature(function, decls)}\n{{\n    int32_t o = 0;\n{body}\n}}\n")
    return Kernel(function, src, kernel_args(consts), consts, provider)


def emit_transpose(op, function) -> Kernel:
    shape, perm = op.inputs[0].shape, op.attrs["perm"]
    if perm[0] != 0:
        raise ValueError(f"{op.name}: a transpose must keep the batch axis first")
    strides = _strides(shape)
    axes = [_Axis(op.output.shape[j], "{i}", strides[perm[j]]) for j in range(1, len(shape))]
    return _emit(op, function, axes, f"transpose (axes {tuple(perm)})")


def emit_slice(op, function) -> Kernel:
    a, shape = op.attrs, op.inputs[0].shape
    strides = _strides(shape)
    axes = []
    for j in range(1, len(shape)):
        b, s = a["begin"][j], a["step"][j]
        source = "{i}" if (b, s) == (0, 1) else (f"{b} + {{i}}" if s == 1 else f"{b} + {s} * {{i}}")
        axes.append(_Axis(op.output.shape[j], source, strides[j]))
    box = ", ".join(f"{b}:{e}:{s}" for b, e, s in zip(a["begin"][1:], a["end"][1:], a["step"][1:]))
    return _emit(op, function, axes, f"slice [{box}], a copy")


def emit_pad(op, function) -> Kernel:
    shape, pads = op.inputs[0].shape, op.attrs["pads"]
    strides = _strides(shape)
    axes = []
    for j in range(1, len(shape)):
        before, after = pads[j]
        if (before, after) == (0, 0):
            axes.append(_Axis(op.output.shape[j], "{i}", strides[j]))
        else:
            axes.append(_Axis(op.output.shape[j], f"{{i}} - {before}", strides[j], shape[j]))
    return _emit(op, function, axes, f"constant pad {tuple(tuple(p) for p in pads[1:])} with "
                 f"code {op.attrs['value']}", pad_value=op.attrs["value"])


def emit_upsample_nearest(op, function) -> Kernel:
    shape = op.inputs[0].shape
    strides = _strides(shape)
    axes, consts = [], {}
    for j in range(1, len(shape)):
        index = np.asarray(op.attrs["index"][j], dtype=np.int32)
        factor = len(index) // shape[j]
        if np.array_equal(index, np.arange(len(index)) // max(factor, 1)):
            source = "{i}" if factor == 1 else f"{{i}} / {factor}"   # an integer factor
        else:
            consts[f"index{j}"] = index                           # any other ratio: a table
            source = f"index{j}[{{i}}]"
        axes.append(_Axis(op.output.shape[j], source, strides[j]))
    return _emit(op, function, axes, "nearest-neighbour upsampling", consts=consts)
