"""Hand-made integer graphs, written like seed 004's relay snippets.

    from nnc.builder import graph_input, soma_conv2d, soma_add, make_graph
    x = graph_input("input", (1, 3, 32, 32))
    y = soma_conv2d(x, "conv1", w, b, strides=(1, 1), relu=True, shift_bits=4)
    graph = make_graph("two_layers", y)

Every tensor is int8 NCHW with scale 1 and zero point 0 (the DIANA flow has no zero points:
its requantization is a power-of-two shift). `soma_conv2d` is the seed's `relay_soma_conv2d`:
qnn.conv2d -> bias_add -> right_shift(shift_bits) -> clip(-128, 127) -> cast int8
[-> clip(0, 127) when relu]. `soma_dense` and `soma_add` are the same tail after a dense layer
or an int32 sum. Nothing here knows about a target: the ops are plain IR ops with
attrs["requant"] == "shift", run by `nnc.reference` and by every kernel provider.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .errors import NncError
from .ir import Graph, Op, QParams, Tensor

UNIT = QParams.make(1.0, 0)


class _Builder:
    """The ops created so far for one graph (shared by every tensor derived from one input)."""

    def __init__(self):
        self.ops: list = []
        self.inputs: list = []
        self.names: set = set()

    def name(self, name: str) -> str:
        """Checks that `name` is new (it is taken when the op or input is made)."""
        if name in self.names:
            raise NncError(f"two layers are named {name!r}", "graph builder",
                           "give every layer a unique name")
        return name

    def tensor(self, name: str, shape) -> Tensor:
        self.names.add(self.name(name))
        t = Tensor(name, tuple(int(d) for d in shape), "int8", UNIT)
        t._builder = self
        return t

    def op(self, kind, name, inputs, out_shape, attrs=None, params=None) -> Tensor:
        out = self.tensor(name, out_shape)
        self.ops.append(Op(kind, name, list(inputs), [out], dict(attrs or {}), dict(params or {})))
        return out


def _builder_of(*tensors) -> _Builder:
    bs = {id(getattr(t, "_builder", None)): getattr(t, "_builder", None) for t in tensors}
    if None in bs.values():
        raise NncError("a tensor that was not made by nnc.builder", "graph builder",
                       "start from graph_input() and build with the helpers of nnc.builder")
    if len(bs) != 1:
        raise NncError("tensors of two different graphs are combined", "graph builder",
                       "make a graph with several inputs with graph_input(name, shape, like=x)")
    return next(iter(bs.values()))


def graph_input(name: str, shape: Sequence[int], like: Optional[Tensor] = None) -> Tensor:
    """An int8 graph input (NCHW, batch 1). Pass like=x to add a second input to x's graph."""
    b = _builder_of(like) if like is not None else _Builder()
    t = b.tensor(b.name(name), shape)
    b.inputs.append(t)
    return t


def _pair(v) -> tuple:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise NncError(f"expected one or two values, got {v!r}", "graph builder")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _check_shift(name, shift_bits):
    if int(shift_bits) != shift_bits or shift_bits < 0:
        raise NncError(f"shift_bits={shift_bits!r} is not a non-negative integer", f"layer '{name}'")


def _clamp(relu: bool) -> tuple:
    return (0, 127) if relu else (-128, 127)


def conv_output_hw(hw, kernel, stride, padding, dilation=(1, 1)) -> tuple:
    return tuple((hw[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                 for i in range(2))


def soma_conv2d(x: Tensor, name: str, weights, bias=None, strides=(1, 1), padding=None,
                groups: int = 1, relu: bool = False, shift_bits: int = 0, dilation=(1, 1)) -> Tensor:
    """conv2d (weights int8 OIHW, bias int32) -> >> shift_bits -> clip -> int8 [-> ReLU].

    padding defaults to "same" (kernel // 2 on each side), as the seed's relay_soma_conv2d.
    groups == channels makes a depthwise convolution (weights (C, 1, kh, kw)).
    """
    b = _builder_of(x)
    name = b.name(name)
    w = np.asarray(weights)
    if w.ndim != 4:
        raise NncError(f"weights of shape {w.shape} are not OIHW", f"layer '{name}'")
    if w.dtype != np.int8:
        if np.any((w < -128) | (w > 127)) or np.any(np.asarray(w) != np.round(w)):
            raise NncError("weights are not int8 values", f"layer '{name}'")
        w = w.astype(np.int8)
    cout, cin_g, kh, kw = w.shape
    if len(x.shape) != 4:
        raise NncError(f"input {x.name} of shape {x.shape} is not NCHW", f"layer '{name}'")
    cin = x.shape[1]
    if cin % groups or cout % groups or cin // groups != cin_g:
        raise NncError(f"weights {w.shape} do not fit input channels {cin} with groups {groups}",
                       f"layer '{name}'")
    bias = np.zeros(cout, np.int32) if bias is None else np.asarray(bias)
    if bias.shape != (cout,):
        raise NncError(f"bias of shape {bias.shape}, expected ({cout},)", f"layer '{name}'")
    _check_shift(name, shift_bits)
    stride, dil = _pair(strides), _pair(dilation)
    pad = (kh // 2, kw // 2) if padding is None else _pair(padding)
    oh, ow = conv_output_hw(x.shape[2:], (kh, kw), stride, pad, dil)
    if oh < 1 or ow < 1:
        raise NncError(f"output would be {oh}x{ow}", f"layer '{name}'", "check kernel/padding/stride")
    attrs = {"stride": stride, "padding": pad, "dilation": dil, "groups": int(groups),
             "requant": "shift", "shift": int(shift_bits), "relu": bool(relu), "clamp": _clamp(relu)}
    params = {"weight": w, "bias": bias.astype(np.int32), "weight_zp": np.zeros(cout, np.int32)}
    return b.op("conv2d", name, [x], (1, cout, oh, ow), attrs, params)


def soma_dense(x: Tensor, name: str, weights, bias=None, relu: bool = False,
               shift_bits: int = 0) -> Tensor:
    """dense (weights int8 [out][in], bias int32) -> >> shift_bits -> clip -> int8 [-> ReLU].
    A 4-D input is flattened first (a reshape that moves no data)."""
    b = _builder_of(x)
    if len(x.shape) != 2:
        x = flatten(x, f"{name}.flatten")
    name = b.name(name)
    w = np.asarray(weights)
    if w.ndim != 2 or w.shape[1] != x.shape[1]:
        raise NncError(f"weights {w.shape} do not fit input features {x.shape[1]}", f"layer '{name}'")
    w = w.astype(np.int8)
    bias = np.zeros(w.shape[0], np.int32) if bias is None else np.asarray(bias)
    _check_shift(name, shift_bits)
    attrs = {"requant": "shift", "shift": int(shift_bits), "relu": bool(relu), "clamp": _clamp(relu)}
    params = {"weight": w, "bias": bias.astype(np.int32), "weight_zp": np.zeros(w.shape[0], np.int32)}
    return b.op("dense", name, [x], (1, w.shape[0]), attrs, params)


def soma_add(a: Tensor, b_: Tensor, name: str, relu: bool = False, shift_bits: int = 0) -> Tensor:
    """cast both to int32 -> add -> >> shift_bits -> clip -> int8 [-> ReLU] (saturating add)."""
    b = _builder_of(a, b_)
    name = b.name(name)
    if tuple(a.shape) != tuple(b_.shape):
        raise NncError(f"add of shapes {a.shape} and {b_.shape} (no broadcasting)", f"layer '{name}'")
    _check_shift(name, shift_bits)
    attrs = {"requant": "shift", "shift": int(shift_bits), "relu": bool(relu), "clamp": _clamp(relu)}
    return b.op("add", name, [a, b_], a.shape, attrs)


def relu(x: Tensor, name: str) -> Tensor:
    b = _builder_of(x)
    return b.op("relu", b.name(name), [x], x.shape, {"clamp": (0, 127)})


def maxpool2d(x: Tensor, name: str, kernel=2, stride=None, padding=0) -> Tensor:
    """Max pooling (never offloaded on DIANA: it runs on the RISC-V core)."""
    b = _builder_of(x)
    k = _pair(kernel)
    s = k if stride is None else _pair(stride)
    p = _pair(padding)
    oh, ow = conv_output_hw(x.shape[2:], k, s, p)
    attrs = {"kernel": k, "stride": s, "padding": p, "dilation": (1, 1), "ceil_mode": False}
    return b.op("maxpool2d", b.name(name), [x], (x.shape[0], x.shape[1], oh, ow), attrs)


def flatten(x: Tensor, name: str) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W): a reshape, the output reuses the input's bytes."""
    b = _builder_of(x)
    out = b.op("reshape", b.name(name), [x], (x.shape[0], int(np.prod(x.shape[1:]))))
    out.alias_of = x
    return out


def make_graph(name: str, outputs) -> Graph:
    """The graph from its inputs to `outputs` (one tensor or a list), ops in creation order."""
    outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    b = _builder_of(*outs)
    needed = {id(t) for t in outs}
    keep = []
    for op in reversed(b.ops):
        if any(id(t) in needed for t in op.outputs):
            keep.append(op)
            needed.update(id(t) for t in op.inputs)
    keep.reverse()
    inputs = [t for t in b.inputs if id(t) in needed]
    g = Graph(name, inputs, outs, keep, meta={"builder": "nnc.builder"})
    g.validate()
    return g


# -- weights -------------------------------------------------------------------------------------

def random_array(shape, dtype=np.int8, seed: int = 0, low: Optional[int] = None,
                 high: Optional[int] = None) -> np.ndarray:
    """Deterministic random integers (full int8 range by default, inclusive bounds)."""
    info = np.iinfo(dtype)
    lo = info.min if low is None else low
    hi = info.max if high is None else high
    return np.random.default_rng(seed).integers(lo, hi + 1, size=shape).astype(dtype)


def load_or_create_random_array(path: str, shape, dtype=np.int8, seed: int = 0, low=None,
                                high=None) -> np.ndarray:
    """The seed's helper: the array stored in `path` (.npy), or a new random one saved there."""
    if os.path.exists(path):
        a = np.load(path)
        if a.shape != tuple(shape) or a.dtype != np.dtype(dtype):
            raise NncError(f"{path} holds {a.dtype} {a.shape}, expected {np.dtype(dtype)} {tuple(shape)}",
                           "load_or_create_random_array", f"delete {path} to create a new one")
        return a
    a = random_array(shape, dtype, seed, low, high)
    np.save(path, a)
    return a
