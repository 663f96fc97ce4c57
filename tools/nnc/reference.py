"""Numpy reference interpreter of the IR: the golden model of each target's arithmetic.

Runs a batch at once: arrays carry a leading batch dimension N in place of the graph's 1.
`run(graph, inputs, capture=True)` also returns every intermediate tensor, by name, for the
divergence finder.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import arith
from .ir import Graph, Op
from .passes import conv_maxpool_parts


def _windows(x, kernel, stride, dilation):
    """(N, C, H, W) -> (N, C, OH, OW, KH, KW) views, with dilation."""
    kh, kw = kernel
    dh, dw = dilation
    win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, ::stride[0], ::stride[1], ::dh, ::dw]


def _pad(x, padding, out_hw, kernel, stride, dilation, value):
    """Pad like torch, plus the extra bottom/right rows that ceil_mode windows reach."""
    ph, pw = padding
    need_h = (out_hw[0] - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    need_w = (out_hw[1] - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    extra_h = max(0, need_h - (x.shape[2] + 2 * ph))
    extra_w = max(0, need_w - (x.shape[3] + 2 * pw))
    return np.pad(x, ((0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)), constant_values=value)


def conv2d_acc(op: Op, x: np.ndarray) -> np.ndarray:
    """int64 accumulators (N, O, OH, OW) including the bias."""
    a = op.attrs
    w = op.params["weight"].astype(np.int64) - op.params["weight_zp"].astype(np.int64)[:, None, None, None]
    zp = op.inputs[0].qparams.zero_point if op.inputs[0].qparams else 0
    out_hw = op.output.shape[2:]
    xp = _pad(x.astype(np.int64) - zp, a["padding"], out_hw, w.shape[2:], a["stride"], a["dilation"], 0)
    win = _windows(xp, w.shape[2:], a["stride"], a["dilation"])[:, :, :out_hw[0], :out_hw[1]]
    groups = a["groups"]
    cin_g, cout_g = x.shape[1] // groups, w.shape[0] // groups
    outs = []
    for g in range(groups):
        wg = w[g * cout_g:(g + 1) * cout_g]
        xg = win[:, g * cin_g:(g + 1) * cin_g]
        outs.append(np.einsum("ncyxij,ocij->noyx", xg, wg, optimize=True))
    acc = np.concatenate(outs, axis=1)
    return acc + op.params["bias"].astype(np.int64)[None, :, None, None]


def dense_acc(op: Op, x: np.ndarray) -> np.ndarray:
    w = op.params["weight"].astype(np.int64) - op.params["weight_zp"].astype(np.int64)[:, None]
    zp = op.inputs[0].qparams.zero_point if op.inputs[0].qparams else 0
    acc = (x.astype(np.int64) - zp) @ w.T
    return acc + op.params["bias"].astype(np.int64)[None, :]


def _requant(op: Op, acc: np.ndarray, channel_axis: int) -> np.ndarray:
    a = op.attrs
    if a["requant"] == "float":
        shape = [1] * acc.ndim
        shape[channel_axis] = -1
        mult = op.params["multiplier"].reshape(shape)
        return arith.requant_float(acc, mult, op.output.qparams.zero_point, a["clamp"])
    if a["requant"] == "shift":
        return arith.requant_shift(acc, a["shift"], a["clamp"])
    raise ValueError(f"{op.name}: unknown requant {a['requant']}")


def _maxpool(op, x):
    a = op.attrs
    out_hw = op.output.shape[2:]
    xp = _pad(x.astype(np.int16), a["padding"], out_hw, a["kernel"], a["stride"], a["dilation"], -32768)
    win = _windows(xp, a["kernel"], a["stride"], a["dilation"])[:, :, :out_hw[0], :out_hw[1]]
    return win.max(axis=(4, 5)).astype(np.int8)


def avgpool_divisors(op) -> np.ndarray:
    """Per output position, the count torch divides by (shape (OH, OW))."""
    a = op.attrs
    (kh, kw), (sh, sw), (ph, pw) = a["kernel"], a["stride"], a["padding"]
    h, w = op.inputs[0].shape[2:]
    oh, ow = op.output.shape[2:]
    div = np.zeros((oh, ow), dtype=np.int64)
    for y in range(oh):
        for x in range(ow):
            y0, x0 = y * sh - ph, x * sw - pw
            y1, x1 = min(y0 + kh, h + ph), min(x0 + kw, w + pw)
            if a["count_include_pad"]:
                div[y, x] = (y1 - y0) * (x1 - x0)
            else:
                div[y, x] = (min(y1, h) - max(y0, 0)) * (min(x1, w) - max(x0, 0))
    return div


def _avgpool(op, x):
    a = op.attrs
    src, dst = op.inputs[0].qparams, op.output.qparams
    out_hw = op.output.shape[2:]
    xp = _pad(x.astype(np.int64) - src.zero_point, a["padding"], out_hw, a["kernel"], a["stride"],
              (1, 1), 0)
    win = _windows(xp, a["kernel"], a["stride"], (1, 1))[:, :, :out_hw[0], :out_hw[1]]
    acc = win.sum(axis=(4, 5))
    div = avgpool_divisors(op)
    mult = np.vectorize(lambda c: arith.avgpool_multiplier(src, dst, int(c)), otypes=[np.float32])(div)
    return arith.requant_float(acc, mult[None, None], dst.zero_point, (-128, 127))


def run_op(op: Op, xs: list) -> np.ndarray:
    k = op.kind
    if k == "conv2d":
        return _requant(op, conv2d_acc(op, xs[0]), 1)
    if k == "dense":
        return _requant(op, dense_acc(op, xs[0]), 1)
    if k == "relu":
        return np.clip(xs[0], *op.attrs["clamp"]).astype(np.int8)
    if k == "maxpool2d":
        return _maxpool(op, xs[0])
    if k == "conv2d_maxpool2d":
        conv, pool = conv_maxpool_parts(op)
        return _maxpool(pool, run_op(conv, xs))
    if k == "avgpool2d":
        return _avgpool(op, xs[0])
    if k == "reshape":
        return xs[0].reshape((xs[0].shape[0],) + tuple(op.output.shape[1:]))
    if k == "add":
        if op.attrs["requant"] == "qnnpack_add":
            p = arith.qnnpack_add_params(op.inputs[0].qparams, op.inputs[1].qparams, op.output.qparams)
            return arith.qnnpack_add(xs[0], xs[1], p, op.attrs["clamp"])
        if op.attrs["requant"] == arith.FLOAT_ADD:
            return arith.torch_float_add(xs[0], xs[1], op.inputs[0].qparams, op.inputs[1].qparams,
                                         op.output.qparams, op.attrs["torch_zp_offset"], op.attrs["clamp"])
        acc = xs[0].astype(np.int64) + xs[1].astype(np.int64)
        return arith.requant_shift(acc, op.attrs["shift"], op.attrs["clamp"])
    if k == "transpose":
        return np.ascontiguousarray(np.transpose(xs[0], op.attrs["perm"]))
    if k == "lut":
        return op.params["table"][xs[0].astype(np.int64) + 128]
    if k == "mul":
        a, b = op.inputs
        return arith.qnnpack_mul(xs[0], xs[1], a.qparams, b.qparams, op.output.qparams, op.attrs["clamp"])
    if k == "slice":
        a = op.attrs
        box = tuple(slice(b, e, s) for b, e, s in zip(a["begin"][1:], a["end"][1:], a["step"][1:]))
        return np.ascontiguousarray(xs[0][(slice(None),) + box])
    if k == "pad":
        return np.pad(xs[0], ((0, 0),) + tuple(op.attrs["pads"][1:]), constant_values=op.attrs["value"])
    if k == "upsample_nearest":
        y = xs[0]
        for axis, index in enumerate(op.attrs["index"]):
            if axis:
                y = np.take(y, np.asarray(index, dtype=np.int64), axis=axis)
        return np.ascontiguousarray(y)
    if k == "mean":
        rows = xs[0].reshape(xs[0].shape[0], -1, op.attrs["count"])
        return arith.mean_of_codes(rows, op.attrs["count"]).reshape((xs[0].shape[0],) + op.output.shape[1:])
    if k == "softmax":
        return arith.softmax(xs[0], op.params["table"], op.attrs["axis"])
    if k == "cat":
        parts = [arith.requantize_tensor(x, t.qparams, op.output.qparams)
                 for x, t in zip(xs, op.inputs)]
        return np.concatenate(parts, axis=op.attrs["axis"])
    raise ValueError(f"reference: no implementation for {k}")


def run(graph: Graph, inputs: list, capture: bool = False, op_runner=run_op):
    """Run a batch. Returns the list of outputs, and with capture=True also {tensor name: array}.

    A target whose graphs hold ops or arithmetic of its own passes an `op_runner` that handles
    those and defers to `run_op` for the rest."""
    env = {}
    for t, x in zip(graph.inputs, inputs):
        x = np.asarray(x)
        if x.shape[1:] != tuple(t.shape[1:]) or x.dtype != np.int8:
            raise ValueError(f"input {t.name}: expected int8 (N, {t.shape[1:]}), got {x.dtype} {x.shape}")
        env[id(t)] = x
    captured = {}
    for op in graph.ops:
        y = op_runner(op, [env[id(t)] for t in op.inputs])
        env[id(op.output)] = y
        if capture:
            captured[op.output.name] = y
    outs = [env[id(t)] for t in graph.outputs]
    return (outs, captured) if capture else outs
