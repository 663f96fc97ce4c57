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

Every parameter is checked when the layer is made, so that a graph that builds is one every
backend computes exactly: a mistake is an NncError naming the layer, the parameter and the fix
(no wrapped weights, no shift the C cannot do, no int32 accumulator that can overflow).
"""
from __future__ import annotations

import os
import re
from typing import Optional, Sequence

import numpy as np

from .errors import NncError
from .ir import Graph, Op, QParams, Tensor, c_identifier

UNIT = QParams.make(1.0, 0)
MAX_SHIFT = 31             # an int32 accumulator shifted by 32 or more is undefined in C
INT32 = np.iinfo(np.int32)
# Names end up in C identifiers, comments and string literals, and in default output paths.
LAYER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
GRAPH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Builder:
    """The ops created so far for one graph (shared by every tensor derived from one input)."""

    def __init__(self):
        self.ops: list = []
        self.inputs: list = []
        self.c_names: dict = {}    # C identifier -> the layer name it came from

    def name(self, name) -> str:
        """Checks that `name` is a valid, new layer name (it is taken when the layer is made)."""
        if not isinstance(name, str) or not LAYER_NAME.match(name):
            raise NncError(f"layer name {name!r} is not a name", f"layer {name!r}",
                           "use letters, digits, '_', '.' and '-', starting with a letter or '_'")
        other = self.c_names.get(c_identifier(name))
        if other == name:
            raise NncError(f"two layers are named {name!r}", f"layer '{name}'",
                           "give every layer a unique name")
        if other is not None:
            raise NncError(f"layers {other!r} and {name!r} get the same C name "
                           f"{c_identifier(name)!r}", f"layer '{name}'",
                           "give the layers names that differ in a letter or digit")
        return name

    def tensor(self, name: str, shape) -> Tensor:
        if int(np.prod(shape, dtype=object)) > INT32.max:
            raise NncError(f"a tensor of shape {tuple(shape)} has more than {INT32.max} elements",
                           _where(name), "the generated C indexes tensors with int32: use a "
                           "smaller input, padding or stride")
        self.c_names[c_identifier(self.name(name))] = name
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
    """An int8 graph input, (1, features) or NCHW (1, C, H, W). Pass like=x to add a second
    input to x's graph."""
    b = _builder_of(like) if like is not None else _Builder()
    name = b.name(name)
    t = b.tensor(name, _input_shape(name, shape))
    b.inputs.append(t)
    return t


# -- parameter checks: each names the layer and the parameter -------------------------------------

def _where(layer: str) -> str:
    return f"layer '{layer}'"


def _range_text(lo: int, hi: Optional[int]) -> str:
    return f"an integer in [{lo}, {hi}]" if hi is not None else f"an integer >= {lo}"


def _integer(layer: str, param: str, value, lo: int, hi: Optional[int] = None) -> int:
    """`value` as an int when it is an integral number in [lo, hi]."""
    ok = (isinstance(value, (int, np.integer, float, np.floating))
          and not isinstance(value, (bool, np.bool_)))
    if ok and isinstance(value, (float, np.floating)):
        ok = bool(np.isfinite(value)) and float(value).is_integer()
    if not ok:
        raise NncError(f"{param}={value!r} is not an integer", _where(layer),
                       f"give {param} as {_range_text(lo, hi)}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        raise NncError(f"{param}={v} is out of range", _where(layer),
                       f"give {param} as {_range_text(lo, hi)}")
    return v


def _pair(layer: str, param: str, value, lo: int) -> tuple:
    """(height, width) from one value or two."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise NncError(f"{param}={value!r} has {len(value)} values", _where(layer),
                           f"give {param} as one value or two (height, width)")
        return tuple(_integer(layer, param, v, lo) for v in value)
    v = _integer(layer, param, value, lo)
    return v, v


def _flag(layer: str, param: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, (int, np.integer)) and value in (0, 1)):
        return bool(value)
    raise NncError(f"{param}={value!r} is not True or False", _where(layer),
                   f"give {param}=True or False")


def _shift(layer: str, shift_bits) -> int:
    return _integer(layer, "shift_bits", shift_bits, 0, MAX_SHIFT)


def _input_shape(name: str, shape) -> tuple:
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or isinstance(shape, (str, bytes)) or len(dims) not in (2, 4):
        raise NncError(f"input shape {shape!r} is not (1, features) or (1, C, H, W)", _where(name),
                       "give the shape as a tuple of 2 or 4 integers, batch first")
    dims = tuple(_integer(name, "shape", d, 1) for d in dims)
    if dims[0] != 1:
        raise NncError(f"input shape {dims} has batch {dims[0]}", _where(name),
                       "the builder makes batch-1 graphs: give shape (1, ...)")
    return dims


def _int_array(layer: str, param: str, values, dtype) -> np.ndarray:
    """`values` as an array of `dtype` when every element is an integral number in its range
    (nothing is wrapped or rounded)."""
    try:
        a = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise NncError(f"{param} is not an array of numbers: {e}", _where(layer),
                       f"give {param} as a numpy array of {np.dtype(dtype)} values") from None
    if a.dtype.kind not in "iuf":
        raise NncError(f"{param} has element type {a.dtype}, not integers", _where(layer),
                       f"give {param} as a numpy array of {np.dtype(dtype)} values")
    info = np.iinfo(dtype)
    wide = a.astype(np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(wide) | (wide != np.round(wide)) | (wide < info.min) | (wide > info.max)
    if np.any(bad):
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        index = f"[{', '.join(map(str, at))}]" if at else ""
        raise NncError(f"{param}{index} = {a[at].item()!r} is not an integer in "
                       f"[{info.min}, {info.max}] ({np.dtype(dtype)})", _where(layer),
                       f"quantize {param} to {np.dtype(dtype)} first: values are never wrapped "
                       "or rounded")
    return a.astype(dtype)


def _bias(layer: str, bias, channels: int) -> np.ndarray:
    if bias is None:
        return np.zeros(channels, np.int32)
    b = _int_array(layer, "bias", bias, np.int32)
    if b.shape != (channels,):
        raise NncError(f"bias of shape {b.shape}, expected ({channels},)", _where(layer),
                       "give one int32 bias per output channel")
    return b


def _check_accumulator(layer: str, weights: np.ndarray, bias: np.ndarray) -> None:
    """The int32 accumulator (bias + products of int8 inputs and weights) must not overflow
    for any input: C and the accelerator would wrap, the reference would not."""
    w = weights.reshape(weights.shape[0], -1).astype(np.int64)
    high = np.where(w > 0, 127 * w, -128 * w).sum(axis=1) + bias
    low = np.where(w > 0, -128 * w, 127 * w).sum(axis=1) + bias
    bad = np.flatnonzero((high > INT32.max) | (low < INT32.min))
    if bad.size:
        k = int(bad[0])
        raise NncError(f"output channel {k}: bias {int(bias[k])} plus the products of int8 inputs "
                       f"and the weights can reach [{int(low[k])}, {int(high[k])}], outside int32: "
                       "the accumulator would overflow", _where(layer),
                       "lower that channel's bias (or weights) so that the sum fits in int32")


def _need_nchw(layer: str, x: Tensor) -> None:
    if len(x.shape) != 4:
        raise NncError(f"input {x.name} of shape {x.shape} is not NCHW", _where(layer),
                       "give a (1, C, H, W) tensor")


def _check_window(layer: str, what: str, kernel, dilation, hw, padding) -> None:
    """A window must fit into the padded input (else there is no output position)."""
    for i, axis in enumerate(("height", "width")):
        extent = dilation[i] * (kernel[i] - 1) + 1
        if extent > hw[i] + 2 * padding[i]:
            dil = f" with dilation {dilation[i]}" if dilation[i] != 1 else ""
            raise NncError(f"{what} {kernel[0]}x{kernel[1]}{dil} spans {extent} in {axis}, more "
                           f"than the input's {hw[i]} plus padding 2x{padding[i]}", _where(layer),
                           f"use a smaller {what}, more padding or a larger input")


def _clamp(relu: bool) -> tuple:
    return (0, 127) if relu else (-128, 127)


def conv_output_hw(hw, kernel, stride, padding, dilation=(1, 1)) -> tuple:
    return tuple((hw[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                 for i in range(2))


# -- layers ---------------------------------------------------------------------------------------

def soma_conv2d(x: Tensor, name: str, weights, bias=None, strides=(1, 1), padding=None,
                groups: int = 1, relu: bool = False, shift_bits: int = 0, dilation=(1, 1)) -> Tensor:
    """conv2d (weights int8 OIHW, bias int32) -> >> shift_bits -> clip -> int8 [-> ReLU].

    padding defaults to "same" (kernel // 2 on each side), as the seed's relay_soma_conv2d.
    groups == channels makes a depthwise convolution (weights (C, 1, kh, kw)).
    """
    b = _builder_of(x)
    name = b.name(name)
    _need_nchw(name, x)
    w = _int_array(name, "weights", weights, np.int8)
    if w.ndim != 4 or 0 in w.shape:
        raise NncError(f"weights of shape {w.shape} are not OIHW", _where(name),
                       "give weights of shape (out channels, in channels / groups, kh, kw)")
    cout, cin_g, kh, kw = w.shape
    cin = x.shape[1]
    groups = _integer(name, "groups", groups, 1)
    if cin % groups or cout % groups or cin // groups != cin_g:
        raise NncError(f"weights {w.shape} do not fit input channels {cin} with groups {groups}",
                       _where(name), "groups must divide the input and output channels, and "
                       "weights.shape[1] be input channels / groups")
    bias = _bias(name, bias, cout)
    shift = _shift(name, shift_bits)
    relu = _flag(name, "relu", relu)
    stride = _pair(name, "strides", strides, 1)
    dil = _pair(name, "dilation", dilation, 1)
    pad = (kh // 2, kw // 2) if padding is None else _pair(name, "padding", padding, 0)
    _check_window(name, "kernel", (kh, kw), dil, x.shape[2:], pad)
    _check_accumulator(name, w, bias)
    oh, ow = conv_output_hw(x.shape[2:], (kh, kw), stride, pad, dil)
    attrs = {"stride": stride, "padding": pad, "dilation": dil, "groups": groups,
             "requant": "shift", "shift": shift, "relu": relu, "clamp": _clamp(relu)}
    params = {"weight": w, "bias": bias, "weight_zp": np.zeros(cout, np.int32)}
    return b.op("conv2d", name, [x], (1, cout, oh, ow), attrs, params)


def soma_dense(x: Tensor, name: str, weights, bias=None, relu: bool = False,
               shift_bits: int = 0) -> Tensor:
    """dense (weights int8 [out][in], bias int32) -> >> shift_bits -> clip -> int8 [-> ReLU].
    A 4-D input is flattened first (a reshape that moves no data)."""
    b = _builder_of(x)
    name = b.name(name)
    features = int(np.prod(x.shape[1:]))
    w = _int_array(name, "weights", weights, np.int8)
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] != features:
        raise NncError(f"weights {w.shape} do not fit input features {features}", _where(name),
                       f"give weights of shape (out features, {features})")
    bias = _bias(name, bias, w.shape[0])
    shift = _shift(name, shift_bits)
    relu = _flag(name, "relu", relu)
    _check_accumulator(name, w, bias)
    if len(x.shape) != 2:
        x = flatten(x, f"{name}.flatten")
    attrs = {"requant": "shift", "shift": shift, "relu": relu, "clamp": _clamp(relu)}
    params = {"weight": w, "bias": bias, "weight_zp": np.zeros(w.shape[0], np.int32)}
    return b.op("dense", name, [x], (1, w.shape[0]), attrs, params)


def soma_add(a: Tensor, b_: Tensor, name: str, relu: bool = False, shift_bits: int = 0) -> Tensor:
    """cast both to int32 -> add -> >> shift_bits -> clip -> int8 [-> ReLU] (saturating add)."""
    b = _builder_of(a, b_)
    name = b.name(name)
    if tuple(a.shape) != tuple(b_.shape):
        raise NncError(f"add of shapes {a.shape} and {b_.shape} (no broadcasting)", _where(name),
                       "add tensors of one shape")
    shift = _shift(name, shift_bits)
    relu = _flag(name, "relu", relu)
    attrs = {"requant": "shift", "shift": shift, "relu": relu, "clamp": _clamp(relu)}
    return b.op("add", name, [a, b_], a.shape, attrs)


def relu(x: Tensor, name: str) -> Tensor:
    b = _builder_of(x)
    return b.op("relu", b.name(name), [x], x.shape, {"clamp": (0, 127)})


def maxpool2d(x: Tensor, name: str, kernel=2, stride=None, padding=0) -> Tensor:
    """Max pooling (never offloaded on DIANA: it runs on the RISC-V core)."""
    b = _builder_of(x)
    name = b.name(name)
    _need_nchw(name, x)
    k = _pair(name, "kernel", kernel, 1)
    s = k if stride is None else _pair(name, "stride", stride, 1)
    p = _pair(name, "padding", padding, 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise NncError(f"padding {p} is more than half the pool window {k[0]}x{k[1]}: a window "
                       "could hold padding only", _where(name),
                       "use padding <= kernel // 2 (as torch)")
    _check_window(name, "pool window", k, (1, 1), x.shape[2:], p)
    oh, ow = conv_output_hw(x.shape[2:], k, s, p)
    attrs = {"kernel": k, "stride": s, "padding": p, "dilation": (1, 1), "ceil_mode": False}
    return b.op("maxpool2d", name, [x], (x.shape[0], x.shape[1], oh, ow), attrs)


def flatten(x: Tensor, name: str) -> Tensor:
    """(N, C, H, W) -> (N, C*H*W): a reshape, the output reuses the input's bytes."""
    b = _builder_of(x)
    out = b.op("reshape", b.name(name), [x], (x.shape[0], int(np.prod(x.shape[1:]))))
    out.alias_of = x
    return out


def check_graph_name(name, where: str = "make_graph") -> str:
    """A graph name becomes C identifiers (tvmgen_<name>) and a default output folder."""
    if not isinstance(name, str) or not GRAPH_NAME.match(name):
        raise NncError(f"graph name {name!r} is not a C identifier", where,
                       "use letters, digits and '_', starting with a letter or '_'")
    return name


def make_graph(name: str, outputs) -> Graph:
    """The graph from its inputs to `outputs` (one tensor or a list), ops in creation order."""
    check_graph_name(name)
    outs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if not outs:
        raise NncError("a graph without outputs", f"make_graph({name!r})",
                       "pass the tensor (or list of tensors) the graph computes")
    b = _builder_of(*outs)
    for t in outs:
        if any(t is i for i in b.inputs):
            raise NncError(f"output {t.name!r} is a graph input: the graph computes nothing",
                           f"make_graph({name!r})", "pass the output of a layer")
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
