"""Importer for PT2E programs (torch.export + torchao prepare_pt2e/convert_pt2e) -> integer graph IR.

A converted program computes float ops between quantize/dequantize steps:

    x_q = quantize_per_tensor(x, s, zp)           model input
    y   = conv2d(dequantize(x_q), dequantize_per_channel(W_q, s_w), bias) [-> relu/hardtanh/clamp]
    y_q = quantize_per_tensor(y, s_out, zp_out)   one IR conv2d op, requantized by arith's contract

The importer reads what the graph says (scales, zero points, ranges, int8/uint8, float or int32
biases), not what NncQuantizer would have chosen, so programs from other PT2E quantizers import
too. Every float node is tracked as either
  exact:   its value is exactly dequantize(an int8 IR tensor) -- after dequantize, and after max
           pool, relu, flatten/view/reshape of an exact value (computed in integers, same scale);
  pending: a float result that only a following quantize step turns back into integers (conv,
           linear, add, average pooling, cat), optionally through relu/hardtanh/clamp, max pool
           and flatten/view/reshape. Quantizing is monotonic and element-wise, so it commutes with
           these: quantize(max_pool(relu(v))) == max_pool(clamp(quantize(v))) exactly. The op is
           requantized straight to the quantize step's parameters and the moves follow in integers
           (the x86 quantizer's conv -> relu -> max pool -> quantize).
A pending value used by anything else (or by two ops) cannot be computed exactly in integers:
the importer refuses it, naming the node and the reason. uint8 activations map onto int8 exactly
by subtracting 128 from values, zero points and ranges.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import NncError
from ..ir import INT8_MAX, INT8_MIN, Graph, Op, QParams, Tensor
from .torch_eager import user_source_line

SUPPORTED = (
    "quantize_per_tensor/dequantize_per_tensor (int8 or uint8 activations), dequantize_per_channel "
    "and dequantize_per_tensor of constant weights (int8) and biases (int32 or float), "
    "conv2d (incl. depthwise/grouped), linear, relu/hardtanh/clamp/relu6 after them, add (+relu), "
    "max_pool2d, avg_pool2d, adaptive_avg_pool2d, mean over H and W (keepdim), cat, "
    "relu, flatten/view/reshape/squeeze/unsqueeze/contiguous/clone/dropout, element-wise "
    "sigmoid/tanh/hardswish/hardsigmoid/gelu/leaky_relu/elu/silu/... of a dequantized tensor (a table); "
    "softmax/log_softmax after the last dequantize (left to the caller)"
)

_Q_OPS = {"quantize_per_tensor"}
_DQ_OPS = {"dequantize_per_tensor", "dequantize_per_channel"}
_CONST_Q_OPS = {"quantize_per_channel"}
_ACTIVATIONS = {"relu", "relu_", "hardtanh", "hardtanh_", "clamp", "clamp_", "relu6"}
_VIEWS = {"flatten", "view", "reshape", "_unsafe_view", "squeeze", "unsqueeze"}
_ALIASES = {"contiguous", "clone", "dropout", "alias", "detach", "_guards_fn"}
# Float ops that commute with quantizing (monotonic, element-wise): exact on a pending result.
_COMMUTING = {"max_pool2d"} | _VIEWS | _ALIASES
_EPILOGUE = {"softmax", "_softmax", "log_softmax", "_log_softmax"}
# Element-wise functions of one dequantized tensor: exact as a 256-entry table (IR op lut), made by
# running the program's own dequantize -> function -> quantize on every code.
_UNARY = {"sigmoid", "tanh", "hardswish", "hardsigmoid", "gelu", "leaky_relu", "elu", "silu",
          "mish", "softplus", "exp", "abs", "neg"}


def _torch():
    import torch  # deferred: importing torch costs seconds, only the frontends need it
    return torch


def _op_name(node) -> str:
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", getattr(target, "__name__", str(target)))


def _where(node) -> str:
    kind = f"{node.op} {_op_name(node)}" if node.op == "call_function" else node.op
    where = f"PT2E node '{node.name}' ({kind})"
    line = user_source_line(node)
    return f"{where}, at {line}" if line else where


def _unsupported(node, what, fix=None):
    return NncError(f"unsupported operation: {what}", _where(node),
                    fix or f"supported are: {SUPPORTED}. Rewrite forward() with these, or annotate "
                           "the op with the quantizer so a quantize step follows it")


def _not_exact(node, reason, fix=None):
    return NncError(f"cannot compute exactly in integers: {reason}", _where(node),
                    fix or "quantize this value before it is used (annotate the op in the quantizer, "
                           "e.g. with NncQuantizer), or remove the float op from forward()")


@dataclass
class _QStep:
    """A quantize/dequantize step's parameters in the int8 domain."""
    qparams: QParams
    qmin: int
    qmax: int

    @property
    def full_range(self) -> bool:
        return (self.qmin, self.qmax) == (INT8_MIN, INT8_MAX)


@dataclass
class _Weight:
    values: np.ndarray          # int8 (weights) or int32 (bias)
    scale: np.ndarray           # float64, one per output channel
    zero_point: np.ndarray      # int32, one per output channel
    per_channel: bool


@dataclass
class _Pending:
    """A float result waiting for its quantize step."""
    kind: str
    node: object                # the op's fx node (name, trace)
    inputs: list                # IR tensors
    attrs: dict
    weight: _Weight = None
    bias: object = None         # None | _Weight (int32) | np.ndarray (float)
    bounds: list = field(default_factory=list)   # float (lo, hi) of relu/hardtanh/clamp after it
    moves: list = field(default_factory=list)    # max pool / view nodes after it, applied in integers


class _Recorder:
    """Runs the program once on an example input and keeps every node's value (shapes,
    constants, folded weights)."""

    def __init__(self, gm):
        import torch.fx
        values = self.values = {}

        class Interp(torch.fx.Interpreter):
            def run_node(self, n):
                v = super().run_node(n)
                values[n] = v
                return v
        self.interp = Interp(gm)

    def run(self, example: tuple):
        self.interp.run(*example)
        return self.values


def _q_step(node, args, torch) -> _QStep:
    scale, zp, qmin, qmax, dtype = args[1:6]
    scale, zp = float(np.asarray(scale).reshape(-1)[0]), int(np.asarray(zp).reshape(-1)[0])
    if dtype == torch.uint8:
        offset = 128
    elif dtype == torch.int8:
        offset = 0
    else:
        raise _unsupported(node, f"activations quantized to {dtype} (only int8 and uint8 map onto "
                                 "the int8 kernels)")
    return _QStep(QParams.make(scale, zp - offset), int(qmin) - offset, int(qmax) - offset)


class _Builder:
    def __init__(self, gm, values, name):
        self.gm, self.values, self.name = gm, values, name
        self.torch = _torch()
        self.exact = {}        # fx node -> IR tensor whose dequantized value the node is
        self.pending = {}      # fx node -> _Pending
        self.quantized = {}    # quantize node -> IR tensor
        self.weights = {}      # dequantize-of-constant node -> _Weight
        self.ops, self.inputs, self.outputs, self.notes = [], [], [], []
        self.names = set()

    # -- helpers -----------------------------------------------------------------------------------
    def layer_name(self, node) -> str:
        """The module path the user knows ('layer1.0.conv1'), else the node name; unique."""
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        base = path if path and node.op == "call_function" else node.name
        name, i = base, 1
        while name in self.names:
            name, i = f"{base}_{i}", i + 1
        self.names.add(name)
        return name

    def new_tensor(self, node, qparams, name=None) -> Tensor:
        return Tensor(name or node.name, tuple(self.values[node].shape), "int8", qparams)

    def exact_input(self, node, arg) -> Tensor:
        if arg in self.exact:
            return self.exact[arg]
        if arg in self.pending:
            raise _not_exact(node, f"it reads the float result of '{arg.name}' ({_op_name(arg)}) "
                                   "before that result is quantized")
        raise _unsupported(node, f"an input that is not a dequantized int8 tensor ('{getattr(arg, 'name', arg)}')")

    def add_op(self, kind, node, inputs, qparams, attrs=None, params=None, alias=False) -> Tensor:
        name = self.layer_name(node)
        out = self.new_tensor(node, qparams, name)
        if alias:
            out.alias_of = inputs[0]
        self.ops.append(Op(kind, name, inputs, [out], attrs or {}, params or {}))
        return out

    # -- walk --------------------------------------------------------------------------------------
    def build(self) -> Graph:
        for node in self.gm.graph.nodes:
            if node.op in ("placeholder", "get_attr"):
                continue
            if node.op == "output":
                self.output(node)
            elif node.op == "call_module":
                if node.target != "_guards_fn":
                    raise _unsupported(node, f"a call of the module {node.target}")
            elif node.op == "call_function":
                self.call_function(node)
            else:
                raise _unsupported(node, f"{node.op} {node.target}")
        if not self.inputs:
            raise NncError("the program has no quantize step on its input: it is not quantized",
                           f"program {self.name}",
                           "run prepare_pt2e(..., NncQuantizer()), calibrate and convert_pt2e() "
                           "before exporting")
        g = Graph(self.name, self.inputs, self.outputs, self.ops, {"notes": self.notes})
        g.validate()
        return g

    def call_function(self, node):
        name = _op_name(node)
        args = node.args
        if name in _Q_OPS:
            return self.quantize(node)
        if name in _DQ_OPS:
            return self.dequantize(node)
        if name in _CONST_Q_OPS or self.is_constant(node):
            return   # weights quantized inside the graph: their values are recorded
        if name == "getitem" and args[0] in self.pending:
            raise _not_exact(node, "indexing into a float result")
        users_pending = [a for a in node.all_input_nodes if a in self.pending]
        if name in _ACTIVATIONS and users_pending:
            return self.fuse_activation(node, name)
        if name in _COMMUTING and users_pending:
            return self.move_pending(node)
        if users_pending:
            raise _not_exact(node, f"{name} reads the float result of '{users_pending[0].name}' "
                                   f"({_op_name(users_pending[0])}) before it is quantized")
        handler = getattr(self, f"op_{name.rstrip('_')}", None)
        if name.rstrip("_") in _UNARY:
            handler = self.op_unary
        if name in _ACTIVATIONS and name.rstrip("_") != "relu":
            handler = self.op_clamp
        if name in _VIEWS:
            handler = self.op_view
        elif name in _ALIASES:
            handler = self.op_alias
        elif name in _EPILOGUE:
            handler = self.op_epilogue
        if handler is None:
            raise _unsupported(node, f"function {name}")
        handler(node)

    def is_constant(self, node) -> bool:
        """A node computed from constants only (weight copies, folded shapes)."""
        return all(a.op == "get_attr" or (a.op == "call_function" and self.is_constant(a))
                   for a in node.all_input_nodes) and bool(node.all_input_nodes)

    # -- quantize / dequantize ----------------------------------------------------------------------
    def quantize(self, node):
        torch = self.torch
        src = node.args[0]
        step = _q_step(node, node.args, torch)
        if src.op == "placeholder":
            if not step.full_range:
                raise _unsupported(node, f"a model input quantized to [{step.qmin}, {step.qmax}] "
                                         "(the C interface takes the full int8 range)")
            t = self.new_tensor(node, step.qparams, f"input{len(self.inputs)}")
            self.inputs.append(t)
            self.quantized[node] = t
        elif self.is_constant(node):
            return
        elif src in self.pending:
            p = self.pending.pop(src)
            t = self.materialize(p, node, step)
            for move in p.moves:
                t = self.apply_move(move, t)
            self.quantized[node] = t
        elif src in self.exact:
            t = self.exact[src]
            if t.qparams != step.qparams:
                raise _not_exact(node, f"a requantize from (scale {t.qparams.scale:g}, zero point "
                                       f"{t.qparams.zero_point}) to (scale {step.qparams.scale:g}, "
                                       f"zero point {step.qparams.zero_point}) with no op between "
                                       "(the quantizer should share the parameters here)")
            if not step.full_range:
                t = self.add_op("relu", node, [t], t.qparams, {"clamp": (step.qmin, step.qmax)})
            self.quantized[node] = t
        else:
            raise _unsupported(node, f"quantize of '{src.name}' ({_op_name(src)}), which is neither "
                                     "a model input nor the result of a supported op")

    def dequantize(self, node):
        src = node.args[0]
        if src in self.quantized:
            t = self.quantized[src]
            if node.args[1:3] != src.args[1:3]:
                raise _unsupported(node, "a dequantize whose parameters differ from its quantize step")
            self.exact[node] = t
            return
        if src.op == "get_attr" or self.is_constant(src) or _op_name(src) in _CONST_Q_OPS:
            self.weights[node] = self.constant_weight(node)
            return
        raise _unsupported(node, f"dequantize of '{src.name}', which is neither a quantized "
                                 "activation nor a constant")

    def constant_weight(self, node) -> _Weight:
        torch = self.torch
        values = self.values[node.args[0]]
        ints = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        scale, zp = self.values.get(node.args[1], node.args[1]), self.values.get(node.args[2], node.args[2])
        scale = np.asarray(scale.numpy() if isinstance(scale, torch.Tensor) else scale, np.float64).reshape(-1)
        zp = np.asarray(zp.numpy() if isinstance(zp, torch.Tensor) else zp).astype(np.int64).reshape(-1)
        per_channel = _op_name(node) == "dequantize_per_channel"
        if per_channel and int(node.args[3]) != 0:
            raise _unsupported(node, f"per-channel weights quantized along axis {node.args[3]} "
                                     "(only the output-channel axis 0)")
        n = ints.shape[0] if ints.ndim else 1
        return _Weight(ints, np.broadcast_to(scale, (n,)).copy(), np.broadcast_to(zp, (n,)).astype(np.int32),
                       per_channel)

    # -- ops on exact values --------------------------------------------------------------------
    def apply_move(self, node, x: Tensor) -> Tensor:
        """A max pool / view that followed a float result, now on its quantized tensor."""
        if _op_name(node) == "max_pool2d":
            return self.max_pool(node, x)
        if _op_name(node) in _VIEWS:
            return self.view(node, x)
        return x

    def op_max_pool2d(self, node):
        self.exact[node] = self.max_pool(node, self.exact_input(node, node.args[0]))

    def max_pool(self, node, x: Tensor) -> Tensor:
        a = list(node.args) + [None] * 6
        pair = lambda v, d: tuple(int(i) for i in v) * (2 // len(v)) if v else d
        k = pair(a[1], None)
        attrs = {"kernel": k, "stride": pair(a[2], k), "padding": pair(a[3], (0, 0)),
                 "dilation": pair(a[4], (1, 1)), "ceil_mode": bool(a[5])}
        return self.add_op("maxpool2d", node, [x], x.qparams, attrs)

    def op_relu(self, node):
        x = self.exact_input(node, node.args[0])
        clamp = (max(x.qparams.zero_point, INT8_MIN), INT8_MAX)
        self.exact[node] = self.add_op("relu", node, [x], x.qparams, {"clamp": clamp})

    def op_view(self, node):
        self.exact[node] = self.view(node, self.exact_input(node, node.args[0]))

    def view(self, node, x: Tensor) -> Tensor:
        if tuple(self.values[node].shape) == tuple(x.shape):
            return x
        return self.add_op("reshape", node, [x], x.qparams, alias=True)

    def op_alias(self, node):
        if _op_name(node) == "dropout" and len(node.args) > 2 and node.args[2]:
            raise _unsupported(node, "dropout in training mode", "export the model in eval() mode")
        self.exact[node] = self.exact_input(node, node.args[0])

    def op_epilogue(self, node):
        x = self.exact_input(node, node.args[0])
        if any(u.op != "output" for u in node.users):
            raise _not_exact(node, f"{_op_name(node)} is only accepted as the program's last step")
        self.notes.append(f"{node.name}: {_op_name(node)} after the last dequantize is not compiled; "
                          "the C model returns the int8 tensor before it")
        self.exact[node] = x

    # -- ops that need a quantize step -------------------------------------------------------------
    def weight_of(self, node, arg) -> _Weight:
        if arg not in self.weights:
            raise _unsupported(node, "a weight that is not a dequantized int8 constant "
                                     "(dynamic or float weights)")
        w = self.weights[arg]
        if w.values.dtype != np.int8:
            raise _unsupported(node, f"{w.values.dtype} weights (only int8 map onto the kernels)")
        return w

    def bias_of(self, node, arg):
        if arg is None:
            return None
        if arg in self.weights:
            return self.weights[arg]
        if arg.op == "get_attr" or self.is_constant(arg):
            return self.values[arg].detach().float().numpy()
        raise _unsupported(node, "a bias that is neither a constant nor a dequantized int32 constant")

    def op_conv2d(self, node):
        a = list(node.args) + [None] * 7
        x = self.exact_input(node, a[0])
        pair = lambda v, d: tuple(int(i) for i in v) * (2 // len(v)) if v else d
        if isinstance(a[4], str):
            raise _unsupported(node, f"conv2d padding={a[4]!r}", "give the padding as numbers")
        attrs = {"stride": pair(a[3], (1, 1)), "padding": pair(a[4], (0, 0)),
                 "dilation": pair(a[5], (1, 1)), "groups": int(a[6] or 1)}
        self.pending[node] = _Pending("conv2d", node, [x], attrs, self.weight_of(node, a[1]),
                                      self.bias_of(node, a[2]))

    def op_linear(self, node):
        a = list(node.args) + [None]
        x = self.exact_input(node, a[0])
        if len(x.shape) != 2:
            raise _unsupported(node, f"linear on a {len(x.shape)}-D tensor {x.shape} (only [N, features])")
        self.pending[node] = _Pending("dense", node, [x], {}, self.weight_of(node, a[1]),
                                      self.bias_of(node, a[2]))

    def op_add(self, node):
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise _unsupported(node, "add with alpha or more than two operands")
        xs = [self.exact_input(node, a) if hasattr(a, "op") else None for a in node.args]
        if None in xs:
            raise _unsupported(node, "add of a tensor and a constant")
        if xs[0].shape != xs[1].shape:
            raise _unsupported(node, f"add of tensors with different shapes {xs[0].shape} and "
                                     f"{xs[1].shape} (broadcasting)")
        self.pending[node] = _Pending("add", node, xs, {})

    def op_avg_pool2d(self, node):
        a = list(node.args) + [None] * 7
        x = self.exact_input(node, a[0])
        pair = lambda v, d: tuple(int(i) for i in v) * (2 // len(v)) if v else d
        if a[6]:
            raise _unsupported(node, "avg_pool2d with divisor_override")
        k = pair(a[1], None)
        attrs = {"kernel": k, "stride": pair(a[2], k), "padding": pair(a[3], (0, 0)),
                 "ceil_mode": bool(a[4]), "count_include_pad": True if a[5] is None else bool(a[5])}
        self.pending[node] = _Pending("avgpool2d", node, [x], attrs)

    def _global_pool(self, node, x, out_hw):
        h, w = x.shape[2], x.shape[3]
        oh, ow = out_hw
        if h % oh or w % ow:
            raise _unsupported(node, f"adaptive average pooling from {h}x{w} to {oh}x{ow} "
                                     "(only output sizes that divide the input)")
        k = (h // oh, w // ow)
        attrs = {"kernel": k, "stride": k, "padding": (0, 0), "ceil_mode": False, "count_include_pad": True}
        self.pending[node] = _Pending("avgpool2d", node, [x], attrs)

    def op_adaptive_avg_pool2d(self, node):
        x = self.exact_input(node, node.args[0])
        self._global_pool(node, x, tuple(self.values[node].shape[2:]))

    def op_mean(self, node):
        x = self.exact_input(node, node.args[0])
        dims = sorted(d % len(x.shape) for d in node.args[1]) if len(node.args) > 1 else []
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if len(x.shape) != 4 or dims != [2, 3] or not keepdim:
            raise _unsupported(node, f"mean over dims {dims} keepdim={keepdim} (only over H and W "
                                     "with keepdim=True, i.e. global average pooling)")
        self._global_pool(node, x, (1, 1))

    def op_cat(self, node):
        xs = [self.exact_input(node, a) for a in node.args[0]]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        self.pending[node] = _Pending("cat", node, xs, {"axis": dim % len(xs[0].shape)})

    def op_clamp(self, node):
        """hardtanh/clamp/relu6 of a dequantized value: the bounds may fall between two integers,
        so the result is exact only once quantized again (with the input's parameters)."""
        x = self.exact_input(node, node.args[0])
        self.pending[node] = _Pending("clamp", node, [x], {})
        self.fuse_activation(node, _op_name(node))

    def op_unary(self, node):
        src = node.args[0]
        x = self.exact_input(node, src)
        if _op_name(src) not in _DQ_OPS:
            raise _not_exact(node, f"{_op_name(node)} of '{src.name}', which is not a dequantize step "
                                   "(quantize the value before the function)")
        self.pending[node] = _Pending("lut", node, [x], {"dequantize": src})

    def lut_table(self, p: _Pending, qnode) -> np.ndarray:
        """table[c + 128] = the program's quantize(f(dequantize(c))) for every int8-domain code c."""
        torch = self.torch
        dq = p.attrs["dequantize"]
        dtype = dq.args[5]
        offset = 128 if dtype == torch.uint8 else 0
        codes = torch.arange(-128, 128, dtype=torch.int16) + offset
        with torch.no_grad():
            v = dq.target(codes.to(dtype), *dq.args[1:], **dq.kwargs)
            y = p.node.target(v, *p.node.args[1:], **p.node.kwargs)
            q = qnode.target(y, *qnode.args[1:], **qnode.kwargs)
        return (q.to(torch.int16) - (128 if q.dtype == torch.uint8 else 0)).numpy().astype(np.int8)

    def take_pending(self, node, src) -> _Pending:
        """The pending result `node` continues; only its single user may continue it."""
        others = [u.name for u in src.users if u is not node]
        if others:
            raise _not_exact(node, f"the float result of '{src.name}' ({_op_name(src)}) is also read by "
                                   f"'{others[0]}' before it is quantized")
        return self.pending.pop(src)

    def move_pending(self, node):
        """max pool / flatten / view of a float result: done in integers after its quantize step."""
        src = node.args[0]
        if _op_name(node) == "dropout" and len(node.args) > 2 and node.args[2]:
            raise _unsupported(node, "dropout in training mode", "export the model in eval() mode")
        p = self.take_pending(node, src)
        p.moves.append(node)
        self.pending[node] = p

    def fuse_activation(self, node, name):
        src = node.args[0]
        p = self.take_pending(node, src) if src in self.pending else self.pending.pop(node)
        if p.kind not in ("conv2d", "dense", "add", "clamp"):
            raise _not_exact(node, f"{name} after {p.kind} (only after conv2d, linear and add)")
        a = list(node.args) + [None, None]
        if name.startswith("relu6"):
            lo, hi = 0.0, 6.0
        elif name.startswith("relu"):
            lo, hi = 0.0, None
        elif name.startswith("hardtanh"):
            lo, hi = float(-1.0 if a[1] is None else a[1]), float(1.0 if a[2] is None else a[2])
        else:
            lo = None if a[1] is None else float(a[1])
            hi = None if a[2] is None else float(a[2])
        p.bounds.append((lo, hi))
        self.pending[node] = p

    # -- a pending result meets its quantize step ------------------------------------------------------
    def clamp_for(self, p, step) -> tuple:
        """quantize(clamp(v, lo, hi)) == clamp(quantize(v), quantize(lo), quantize(hi)): quantizing is
        monotonic, so a float activation after the op is an integer clamp after requantizing."""
        lo, hi = step.qmin, step.qmax
        inv = np.float32(1.0) / np.float32(step.qparams.scale)
        q = lambda v: int(np.rint(np.float32(v) * inv)) + step.qparams.zero_point
        for b_lo, b_hi in p.bounds:
            if b_lo is not None:
                lo = max(lo, q(b_lo))
            if b_hi is not None:
                hi = min(hi, q(b_hi))
        return (max(lo, INT8_MIN), min(hi, INT8_MAX))

    def materialize(self, p: _Pending, qnode, step: _QStep) -> Tensor:
        if p.kind in ("conv2d", "dense"):
            params, scheme = self.weighted_params(p, step)
            attrs = dict(p.attrs, requant="float", weight_scheme=scheme, relu=bool(p.bounds),
                         clamp=self.clamp_for(p, step),
                         weight_scales=tuple(float(s) for s in p.weight.scale))   # for oracles
            return self.add_op(p.kind, p.node, p.inputs, step.qparams, attrs, params)
        if p.kind == "add":
            for t in p.inputs:
                ratio = np.float32(t.qparams.scale) / np.float32(step.qparams.scale)
                if not (2.0 ** -14 <= ratio < 2.0 ** 8):
                    raise NncError(f"add: input scale / output scale = {ratio:g} is outside qnnpack's "
                                   "range [2^-14, 2^8)", _where(p.node),
                                   "calibrate with representative data so the scales stay comparable")
            return self.add_op("add", p.node, p.inputs, step.qparams,
                               {"requant": "qnnpack_add", "relu": bool(p.bounds),
                                "clamp": self.clamp_for(p, step)})
        if p.kind == "lut":
            return self.add_op("lut", p.node, p.inputs, step.qparams, {"function": _op_name(p.node)},
                               {"table": self.lut_table(p, qnode)})
        if p.kind == "clamp":
            x = p.inputs[0]
            if x.qparams != step.qparams:
                raise _not_exact(qnode, f"{_op_name(p.node)} whose output quantization differs from "
                                        "its input's (the quantizer should share the parameters)")
            return self.add_op("relu", p.node, [x], x.qparams, {"clamp": self.clamp_for(p, step)})
        if not step.full_range:
            raise _unsupported(qnode, f"{p.kind} quantized to [{step.qmin}, {step.qmax}] "
                                      "(its kernel writes the full int8 range)")
        return self.add_op(p.kind, p.node, p.inputs, step.qparams, p.attrs)

    def weighted_params(self, p: _Pending, step: _QStep):
        torch = self.torch
        w = p.weight
        s_in = np.float32(p.inputs[0].qparams.scale)
        s_out = np.float32(step.qparams.scale)
        out_ch = w.values.shape[0]
        if isinstance(p.bias, _Weight):
            expected = w.scale.astype(np.float32) * s_in
            if p.bias.values.dtype != np.int32 or np.any(p.bias.zero_point != 0) or not np.allclose(
                    np.broadcast_to(p.bias.scale, (out_ch,)), expected, rtol=1e-5, atol=0):
                raise _unsupported(p.node, "a quantized bias that is not int32 at scale s_in * s_w "
                                           "with zero point 0")
            bias = p.bias.values.astype(np.int32)
        elif p.bias is None:
            bias = np.zeros(out_ch, dtype=np.int32)
        else:
            # A float bias: quantized like qnnpack does, with scale s_w * s_in and zero point 0.
            scales = torch.tensor(w.scale * float(s_in), dtype=torch.float64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                bias = torch.quantize_per_channel(torch.from_numpy(np.ascontiguousarray(p.bias, np.float32)),
                                                  scales, torch.zeros(out_ch, dtype=torch.int64), 0,
                                                  torch.qint32).int_repr().numpy().astype(np.int32)
        mult = (w.scale.astype(np.float32) * s_in) * (np.float32(1.0) / s_out)
        params = {"weight": w.values.astype(np.int8), "weight_zp": w.zero_point.astype(np.int32),
                  "bias": bias, "multiplier": mult.astype(np.float32)}
        return params, "per_channel" if w.per_channel else "per_tensor"

    # -- outputs -------------------------------------------------------------------------------------
    def output(self, node):
        outs = node.args[0]
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for o in outs:
            if o in self.pending:
                raise _not_exact(o, "the program returns a float result with no quantize step "
                                    "(the C model returns int8 tensors)",
                                 "quantize the outputs too: prepare_pt2e(m, ComposableQuantizer([your "
                                 "quantizer, nnc.frontend.pt2e_quantizer.QuantizedOutputs()]))")
            self.outputs.append(self.exact_input(node, o))


def _graph_module(program):
    """An ExportedProgram or a converted GraphModule -> (GraphModule, example args)."""
    torch = _torch()
    if isinstance(program, torch.export.ExportedProgram):
        example = program.example_inputs[0] if program.example_inputs else None
        return program.module(), example
    return program, None


def _example_from_placeholders(gm):
    torch = _torch()
    xs = []
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            val = n.meta.get("val")
            if val is None:
                raise NncError("the program does not record its input shapes", f"input {n.name}",
                               "pass an example input, or export with torch.export.export")
            xs.append(torch.zeros(tuple(val.shape), dtype=val.dtype))
    return tuple(xs)


def import_pt2e(program, name: str, example_input=None) -> Graph:
    """PT2E converted program (ExportedProgram or GraphModule) -> IR graph."""
    torch = _torch()
    gm, example = _graph_module(program)
    if example_input is not None:
        example = (example_input,) if isinstance(example_input, torch.Tensor) else tuple(example_input)
    if example is None:
        example = _example_from_placeholders(gm)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            values = _Recorder(gm).run(example)
        except Exception as exc:   # noqa: BLE001 -- any failure of the user's program is their error
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NncError(f"torch cannot run the program on its example input: {first}",
                           f"program {name}", "export the converted model again with an example "
                                              "input of the shape the model expects") from None
    return _Builder(gm, values, name).build()


def _output_quantize_nodes(gm) -> list:
    """The quantize node behind each program output (output <- dequantize <- quantize)."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    nodes = []
    for o in (out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]):
        while _op_name(o) in _EPILOGUE | _ALIASES | _VIEWS:
            o = o.args[0]
        if _op_name(o) not in _DQ_OPS:
            raise NncError("a program output is not a dequantized tensor", _where(o))
        nodes.append(o.args[0])
    return nodes


def run_pt2e_int8(program, inputs: list, input_qparams: list) -> list:
    """Run the converted (float-simulated) program on int8 inputs; the int8 tensors its output
    quantize steps produce, in the IR's int8 domain."""
    torch = _torch()
    gm, _ = _graph_module(program)
    qnodes = _output_quantize_nodes(gm)
    floats = [torch.from_numpy((np.asarray(x, np.float32) - q.zero_point) * np.float32(q.scale))
              for x, q in zip(inputs, input_qparams)]
    results = [[] for _ in qnodes]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(floats[0])):
            values = _Recorder(gm).run(tuple(f[i:i + 1] for f in floats))
            for k, qn in enumerate(qnodes):
                v = values[qn]
                offset = 128 if v.dtype == torch.uint8 else 0
                results[k].append((v.to(torch.int16) - offset).numpy().astype(np.int8))
    return [np.concatenate(r) for r in results]
