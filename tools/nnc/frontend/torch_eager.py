"""Importer for eager-mode quantized PyTorch models (engine qnnpack) -> integer graph IR.

Topology comes from torch.fx; shapes, quantization parameters and constant arguments come
from running the traced graph once on an example input, node by node, so that whatever torch
computes (e.g. `x.reshape(x.shape[0], -1)`) is resolved to concrete values. Weights, scales
and zero points are read straight from the quantized modules.

Activations in torch are quint8; the IR is int8: values and zero points are shifted by -128,
which changes no arithmetic (every formula uses q - zero_point).
"""
from __future__ import annotations

import operator
import os
import warnings

import numpy as np

from ..errors import DEBUG_ENV, NncError
from ..ir import INT8_MAX, INT8_MIN, Graph, Op, QParams, Tensor, check_batch_one
from .torch_eager_ops import LUT_FUNCTIONS, LUT_MODULES, MUL_FUNCTIONS, EagerOpsMixin

# What the importer accepts, listed in every "unsupported" error.
SUPPORTED = (
    "QuantStub/DeQuantStub, quantized Conv2d/ConvReLU2d, Linear/LinearReLU, ReLU, MaxPool2d, "
    "AvgPool2d (ceil_mode=False), AdaptiveAvgPool2d, mean over H,W, Flatten/flatten/reshape/view/squeeze/unsqueeze, "
    "Dropout/Identity/contiguous (no-ops), FloatFunctional/QFunctional add, add_relu, mul, mul_relu, "
    "cat; activations Hardswish, Hardsigmoid, Sigmoid, Tanh, GELU, LeakyReLU, ELU, Hardtanh, ReLU6 "
    "(modules, functions, methods; a 256-entry table each); softmax with output scale 1/256; "
    "transpose/permute, chunk/split/narrow/x[a:b], constant pad, nearest upsampling; Python "
    "arithmetic on shapes; after the DeQuantStub only softmax/log_softmax (left to the caller, or "
    "softmax compiled on the device with device_softmax)"
)

# Set NNC_DEBUG=1 (or pass debug=True) to get the whole chain of user frames in `where:`.


def _torch():
    import torch  # deferred: importing torch costs seconds, only this frontend needs it
    return torch


class _Recorder:
    """Runs the fx graph node by node, keeping every node's concrete value."""

    def __init__(self, gm):
        import torch.fx
        self.gm = gm
        self.values = {}
        self.interp = torch.fx.Interpreter(gm)

    def run(self, example):
        it = iter([example])
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = next(it)
            elif node.op == "output":
                break
            else:
                args = self._load(node.args)
                kwargs = self._load(node.kwargs)
                try:
                    self.values[node] = getattr(self.interp, node.op)(node.target, args, kwargs)
                except Exception as exc:   # e.g. a float module fed a quantized tensor
                    module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise NncError(f"torch cannot run this node of the quantized model: {first}",
                                   _where(node, module),
                                   "every module between QuantStub and DeQuantStub must be quantized: "
                                   "check its qconfig and that prepare()/convert() ran; supported are: "
                                   + SUPPORTED) from None
        return self.values

    def _load(self, a):
        import torch.fx
        return torch.fx.node.map_arg(a, lambda n: self.values[n])


def _user_frames(node) -> list:
    """(File "...", line N, in f) and its source line, for every frame of the user's code in the
    node's recorded stack, outermost first (torch's own frames left out)."""
    lines = (node.stack_trace or "").strip().splitlines()
    frames = []
    for i, ln in enumerate(lines):
        ln = ln.strip()
        if ln.startswith("File ") and f"{os.sep}torch{os.sep}" not in ln \
                and f"{os.sep}torchao{os.sep}" not in ln:
            code = lines[i + 1].strip() if i + 1 < len(lines) and not lines[i + 1].strip().startswith("File ") \
                else ""
            frames.append((ln, code))
    return frames


def _where(node, module=None, debug=None) -> str:
    """The fx node, the op, and the innermost line of the user's code that calls it (the whole
    chain of calls with NNC_DEBUG=1)."""
    kind = f"module {type(module).__module__}.{type(module).__name__}" if module is not None \
        else f"{node.op} {getattr(node.target, '__name__', node.target)}"
    where = f"fx node '{node.name}' ({kind})"
    frames = _user_frames(node)
    if frames:
        where += f", at {user_source_line(node)}"
        debug = os.environ.get(DEBUG_ENV) == "1" if debug is None else debug
        if debug and len(frames) > 1:
            where += "\n         called from: " + "\n                      ".join(
                f"{f} {code}".rstrip() for f, code in reversed(frames[:-1]))
        elif len(frames) > 1:
            where += f" (--debug or {DEBUG_ENV}=1 shows the {len(frames) - 1} calls above it)"
    return where


def user_source_line(node) -> str:
    """The innermost line of the user's code in a node's recorded stack ('File "net.py", line 14,
    in forward: x = ...'), or ''."""
    frames = _user_frames(node)
    return f"{frames[-1][0]}" + (f": {frames[-1][1]}" if frames[-1][1] else "") if frames else ""


def _unsupported(node, what, module=None):
    return NncError(f"unsupported operation: {what}", _where(node, module),
                    f"supported are: {SUPPORTED}. Rewrite the model with these, or quantize the "
                    "module (a float module left in a quantized model means convert() missed it)")


class TorchEagerImporter:
    """Frontend interface: `import_model(model, example_input, name) -> Graph`."""

    def __init__(self, device_softmax: bool = False):
        self.device_softmax = device_softmax

    def import_model(self, model, example_input, name: str) -> Graph:
        torch = _torch()
        torch.backends.quantized.engine = "qnnpack"
        model = model.eval()
        tracer = torch.fx.Tracer()
        tracer.record_stack_traces = True
        try:
            fx_graph = tracer.trace(model)
        except Exception as exc:  # fx cannot trace data-dependent control flow etc.
            raise NncError(f"torch.fx cannot trace the model: {exc}", f"model {type(model).__name__}",
                           "remove data-dependent control flow from forward()") from None
        gm = torch.fx.GraphModule(tracer.root, fx_graph)
        with torch.no_grad():
            values = _Recorder(gm).run(example_input)
        return _GraphBuilder(gm, values, name, self.device_softmax).build()


class _GraphBuilder(EagerOpsMixin):
    def __init__(self, gm, values, name, device_softmax=False):
        self.gm, self.values, self.name = gm, values, name
        self.device_softmax = device_softmax
        self.softmax_on_device = False
        self.torch = _torch()
        self.tensors = {}     # fx node -> IR tensor
        self.ops, self.inputs, self.outputs = [], [], []
        self.dequantized = set()   # float nodes after a DeQuantStub
        self.notes = []

    # -- helpers -----------------------------------------------------------------------------
    unsupported = staticmethod(lambda node, what, module=None: _unsupported(node, what, module))
    where = staticmethod(lambda node, module=None: _where(node, module))

    def qparams_of(self, value):
        offset = 128 if value.dtype == self.torch.quint8 else 0
        return QParams.make(value.q_scale(), int(value.q_zero_point()) - offset)

    def new_tensor(self, node, value=None):
        value = self.values[node] if value is None else value
        t = Tensor(node.name, tuple(value.shape), "int8", self.qparams_of(value))
        self.tensors[node] = t
        return t

    def input_of(self, node, arg):
        if not hasattr(arg, "op") or arg not in self.tensors or isinstance(self.tensors[arg], list):
            raise _unsupported(node, f"an input that is not a quantized tensor ({arg})")
        return self.tensors[arg]

    def add_op(self, kind, node, inputs, attrs=None, params=None):
        out = self.new_tensor(node)
        op = Op(kind, node.name, inputs, [out], attrs or {}, params or {})
        self.ops.append(op)
        return op

    def clamp_of(self, node, relu: bool):
        zp = self.qparams_of(self.values[node]).zero_point
        return (max(zp, INT8_MIN) if relu else INT8_MIN, INT8_MAX)

    # -- build ---------------------------------------------------------------------------------
    def build(self) -> Graph:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                self.finish_output(node)
                continue
            if any(isinstance(a, type(node)) and a in self.dequantized for a in node.all_input_nodes):
                self.float_epilogue(node)
                continue
            if node.op in ("call_function", "call_method") and self.is_python_value(node):
                continue   # shape arithmetic and the like: torch already computed the value
            if node.op == "call_module":
                self.call_module(node, self.gm.get_submodule(node.target))
            elif node.op == "call_function":
                self.call_function(node)
            elif node.op == "call_method":
                self.call_method(node)
            elif node.op == "get_attr":
                raise _unsupported(node, f"reading the attribute {node.target} as a tensor")
        if not self.inputs:
            raise NncError("the model has no QuantStub: nothing is quantized", f"model {self.name}",
                           "add torch.ao.quantization.QuantStub at the start of forward() and run "
                           "prepare()/convert() (or prepare_qat()/convert())")
        if not self.outputs:
            raise NncError("the model has no DeQuantStub: its output is not quantized",
                           f"model {self.name}", "end forward() with a DeQuantStub")
        if self.device_softmax and not self.softmax_on_device:
            raise NncError("a softmax on the device was asked for, but forward() has no softmax after "
                           "its DeQuantStub", f"model {self.name}",
                           "end forward() with torch.softmax(self.dequant(x), dim=1), or compile "
                           "without the device softmax (--device-softmax)")
        g = Graph(self.name, self.inputs, self.outputs, self.ops, {"notes": self.notes})
        g.validate()
        check_batch_one(g)
        return g

    def finish_output(self, node):
        pass  # outputs are the DeQuantStub inputs, recorded as they are met

    def device_softmax_output(self, node):
        """softmax(dequant(x), dim) compiled on the device: the graph output becomes qnnpack's
        int8 softmax of x (scale 1/256), in place of the logits."""
        src = node.args[0]
        if src not in self.dequantized or src.op != "call_module":
            raise _unsupported(node, "softmax on the device of anything but the DeQuantStub's output")
        x = self.tensors[src.args[0]]
        if node.op == "call_module":
            dim = self.gm.get_submodule(node.target).dim
        else:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dim is None:
            raise _unsupported(node, "softmax without an explicit dim")
        y = self.softmax(node, x, dim, QParams.make(2.0 ** -8, -128), f"{node.name}_int8")
        self.outputs[self.outputs.index(x)] = y
        self.softmax_on_device = True
        self.notes.append(f"{node.name}: softmax compiled on the device (qnnpack's integer softmax, "
                          "scale 1/256): the C model returns probabilities, not logits")
        self.dequantized.add(node)

    def is_python_value(self, node) -> bool:
        """True if the node computes no tensor (an int, a torch.Size, ...)."""
        torch = self.torch
        v = self.values[node]
        flat = v if isinstance(v, (tuple, list)) else (v,)
        return not any(isinstance(x, torch.Tensor) for x in flat)

    def float_epilogue(self, node):
        fn = node.target if node.op != "call_module" else type(self.gm.get_submodule(node.target))
        name = getattr(fn, "__name__", str(fn))
        if name in ("softmax", "Softmax") and self.device_softmax:
            self.device_softmax_output(node)
            return
        if name in ("log_softmax", "LogSoftmax") and self.device_softmax:
            raise NncError(f"{name} cannot run on the device: only softmax has an integer form "
                           "(qnnpack's, probabilities with scale 1/256)", _where(node),
                           "to get probabilities from the device use softmax in place of "
                           f"{name}; or compile without the device softmax (--device-softmax) "
                           f"and the C returns the logits before the {name}")
        if name in ("log_softmax", "softmax", "LogSoftmax", "Softmax"):
            self.notes.append(f"{node.name}: {name} after the DeQuantStub is not compiled; "
                              "the C model returns the int8 tensor before it")
            self.dequantized.add(node)
            return
        raise _unsupported(node, f"float operation {name} after the DeQuantStub")

    # -- modules -------------------------------------------------------------------------------
    def call_module(self, node, m):
        torch = self.torch
        nnq = torch.ao.nn.quantized
        nniq = torch.ao.nn.intrinsic.quantized
        qmods = torch.ao.nn.quantized.modules
        if isinstance(m, qmods.Quantize):
            t = self.new_tensor(node)
            t.name = f"input{len(self.inputs)}"
            self.inputs.append(t)
        elif isinstance(m, qmods.DeQuantize):
            src = self.input_of(node, node.args[0])
            self.outputs.append(src)
            self.dequantized.add(node)
        elif isinstance(m, (nniq.ConvReLU2d, nnq.Conv2d)):
            self.conv(node, m, relu=isinstance(m, nniq.ConvReLU2d))
        elif isinstance(m, (nniq.LinearReLU, nnq.Linear)):
            self.linear(node, m, relu=isinstance(m, nniq.LinearReLU))
        elif type(m).__name__ in LUT_MODULES:      # before ReLU: quantized ReLU6 subclasses it
            self.lut_module(node, m)
        elif isinstance(m, (torch.nn.ReLU,)):
            self.relu(node)
        elif isinstance(m, torch.nn.MaxPool2d):
            self.maxpool(node, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
        elif isinstance(m, torch.nn.AvgPool2d):
            self.avgpool(node, m.kernel_size, m.stride, m.padding, m.ceil_mode,
                         m.count_include_pad, m.divisor_override)
        elif isinstance(m, torch.nn.AdaptiveAvgPool2d):
            self.adaptive_avgpool(node)
        elif isinstance(m, (torch.nn.Flatten,)):
            self.reshape(node)
        elif isinstance(m, (torch.nn.Identity, torch.nn.Dropout)):
            self.alias_same(node)
        elif type(m).__name__ == "Softmax":
            self.softmax_node(node, m.dim)
        elif isinstance(m, torch.nn.Upsample):
            self.upsample(node, m, m.mode)
        else:
            raise _unsupported(node, f"module {type(m).__name__}", m)

    def _weights(self, node, m):
        torch = self.torch
        w = m.weight()
        wq = w.int_repr().numpy().astype(np.int8)
        out_ch = wq.shape[0]
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            w_scale = np.full(out_ch, w.q_scale(), dtype=np.float64)
            w_zp = np.full(out_ch, w.q_zero_point(), dtype=np.int32)
            scheme = "per_tensor"
        elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0:
                raise _unsupported(node, "per-channel weights quantized along an axis other than 0", m)
            w_scale = w.q_per_channel_scales().numpy().astype(np.float64)
            w_zp = w.q_per_channel_zero_points().numpy().astype(np.int32)
            scheme = "per_channel"
        else:
            raise _unsupported(node, f"weight quantization scheme {w.qscheme()}", m)
        in_q = self.values[node.args[0]]
        s_in = float(in_q.q_scale())
        s_out = float(m.scale)
        # qnnpack: bias quantized with scale s_w * s_in (zero point 0, int32) ...
        bias = m.bias()
        if bias is None:
            bq = np.zeros(out_ch, dtype=np.int32)
        else:
            scales = torch.tensor(w_scale * s_in, dtype=torch.float64)
            bq = torch.quantize_per_channel(bias.detach().float(), scales,
                                            torch.zeros(out_ch, dtype=torch.int64), 0,
                                            torch.qint32).int_repr().numpy().astype(np.int32)
        # ... and requantized with the float32 multiplier qnnpack computes:
        # (f32(s_w) * f32(s_in)) * (1.f / f32(s_out)).
        mult = (w_scale.astype(np.float32) * np.float32(s_in)) * (np.float32(1.0) / np.float32(s_out))
        params = {"weight": wq, "weight_zp": w_zp, "bias": bq, "multiplier": mult.astype(np.float32)}
        return params, scheme

    def conv(self, node, m, relu):
        if m.padding_mode != "zeros":
            raise _unsupported(node, f"Conv2d padding_mode={m.padding_mode!r}", m)
        params, scheme = self._weights(node, m)
        x = self.input_of(node, node.args[0])
        attrs = {"stride": tuple(m.stride), "padding": tuple(m.padding), "dilation": tuple(m.dilation),
                 "groups": int(m.groups), "requant": "float", "weight_scheme": scheme,
                 "relu": relu, "clamp": self.clamp_of(node, relu)}
        self.add_op("conv2d", node, [x], attrs, params)

    def linear(self, node, m, relu):
        params, scheme = self._weights(node, m)
        x = self.input_of(node, node.args[0])
        if len(x.shape) != 2:
            raise _unsupported(node, f"Linear on a {len(x.shape)}-D tensor {x.shape} (only [N, features])", m)
        if x.shape[1] != params["weight"].shape[1]:
            # torch's quantized Linear does not check this: it reads the first in_features values
            # (or past the end of a shorter input), so torch "runs" a model that cannot be right
            raise NncError(f"Linear with {params['weight'].shape[1]} input features is given "
                           f"{x.shape[1]} (input shape {tuple(x.shape)})", _where(node, m),
                           "fix the example input's shape or the Linear's in_features: the float "
                           "model raises on this input, only torch's quantized kernel does not check")
        attrs = {"requant": "float", "weight_scheme": scheme, "relu": relu,
                 "clamp": self.clamp_of(node, relu)}
        self.add_op("dense", node, [x], attrs, params)

    def relu(self, node):
        x = self.input_of(node, node.args[0])
        out_q = self.qparams_of(self.values[node])
        if out_q != x.qparams:
            raise _unsupported(node, "ReLU whose output quantization differs from its input")
        self.add_op("relu", node, [x], {"clamp": self.clamp_of(node, True)})

    def maxpool(self, node, k, s, p, d, ceil):
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))
        x = self.input_of(node, node.args[0])
        s = k if s is None or s == [] else s
        self.add_op("maxpool2d", node, [x], {"kernel": pair(k), "stride": pair(s), "padding": pair(p),
                                            "dilation": pair(d), "ceil_mode": bool(ceil)})

    def avgpool(self, node, k, s, p, ceil, count_include_pad, divisor_override):
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))
        x = self.input_of(node, node.args[0])
        s = k if s is None or s == [] else s
        if divisor_override:
            raise _unsupported(node, "AvgPool2d with divisor_override")
        if ceil:
            # torch runs it on its generic quantized kernel, which adds the output zero point before
            # rounding (ties go another way than qnnpack's round-then-add): no kernel here does that
            raise _unsupported(node, "AvgPool2d with ceil_mode=True (torch's quantized kernel for it "
                                     "rounds after adding the zero point, unlike qnnpack's; use "
                                     "ceil_mode=False, with padding if the border windows matter)")
        # qnnpack's average pool (the one torch runs without ceil_mode) divides every window by
        # kh * kw, its padding included, whatever count_include_pad says: the IR records that
        self.add_op("avgpool2d", node, [x], {"kernel": pair(k), "stride": pair(s), "padding": pair(p),
                                            "ceil_mode": False, "count_include_pad": True})

    def adaptive_avgpool(self, node):
        x = self.input_of(node, node.args[0])
        h, w = x.shape[2], x.shape[3]
        oh, ow = self.values[node].shape[2], self.values[node].shape[3]
        if h % oh or w % ow:
            raise _unsupported(node, f"AdaptiveAvgPool2d from {h}x{w} to {oh}x{ow} "
                                     "(only output sizes that divide the input)")
        k = (h // oh, w // ow)
        self.add_op("avgpool2d", node, [x], {"kernel": k, "stride": k, "padding": (0, 0),
                                            "ceil_mode": False, "count_include_pad": True})

    def reshape(self, node):
        x = self.input_of(node, node.args[0])
        out = self.new_tensor(node)
        out.alias_of = x
        self.ops.append(Op("reshape", node.name, [x], [out]))

    def alias_same(self, node):
        self.tensors[node] = self.input_of(node, node.args[0])

    # -- functions and methods -------------------------------------------------------------------
    def call_function(self, node):
        import torch.nn.functional as F
        torch = self.torch
        fn = node.target
        name = getattr(fn, "__name__", str(fn))
        args = node.args
        g = lambda i, key, d: args[i] if len(args) > i else node.kwargs.get(key, d)
        if fn is operator.getitem and isinstance(self.tensors.get(args[0]), list):
            self.tensors[node] = self.tensors[args[0]][args[1]]     # one piece of a chunk/split
            return
        if fn is operator.getitem:
            self.index(node)
            return
        if fn is torch.ops.quantized.add or fn is torch.ops.quantized.add_relu:
            self.add(node, relu=fn is torch.ops.quantized.add_relu)
        elif fn is torch.ops.quantized.cat:
            self.cat(node)
        elif fn in (F.relu, torch.relu):
            self.relu(node)
        elif name == "max_pool2d" or fn is torch.max_pool2d:
            k = args[1] if len(args) > 1 else node.kwargs["kernel_size"]
            g = lambda i, key, d: args[i] if len(args) > i else node.kwargs.get(key, d)
            self.maxpool(node, k, g(2, "stride", None), g(3, "padding", 0), g(4, "dilation", 1),
                         g(5, "ceil_mode", False))
        elif fn in (F.avg_pool2d, torch._C._nn.avg_pool2d):
            g = lambda i, key, d: args[i] if len(args) > i else node.kwargs.get(key, d)
            self.avgpool(node, g(1, "kernel_size", None), g(2, "stride", None), g(3, "padding", 0),
                         g(4, "ceil_mode", False), g(5, "count_include_pad", True),
                         g(6, "divisor_override", None))
        elif fn in (F.adaptive_avg_pool2d,):
            self.adaptive_avgpool(node)
        elif fn in (torch.flatten, torch.reshape):
            self.reshape(node)
        elif fn in (F.dropout,):
            self.alias_same(node)
        elif fn in [getattr(torch.ops.quantized, f) for f in MUL_FUNCTIONS]:
            self.mul(node, relu=fn is torch.ops.quantized.mul_relu)
        elif fn is torch.ops.quantized.softmax:
            self.softmax_node(node, g(1, "dim", -1))
        elif fn in (F.softmax, torch.softmax):
            self.softmax_node(node, g(1, "dim", None))
        elif name.split(".")[0] in LUT_FUNCTIONS:
            self.lut_call(node, fn, f"function {name}")
        elif fn in (torch.mean,):
            self.mean(node, g(1, "dim", None), g(2, "keepdim", False))
        elif fn in (torch.transpose,):
            self.transpose_two(node, g(1, "dim0", None), g(2, "dim1", None))
        elif fn in (torch.permute,):
            self.transpose(node, g(1, "dims", None))
        elif fn in (torch.chunk, torch.split, torch.unbind):
            self.split(node, g(2, "dim", 0) if fn is not torch.unbind else g(1, "dim", 0))
        elif fn in (torch.narrow,):
            self.narrow(node, g(1, "dim", 0), g(2, "start", 0), g(3, "length", 0))
        elif fn in (F.pad,):
            self.pad(node, g(1, "pad", ()), g(2, "mode", "constant"))
        elif fn in (F.interpolate, F.upsample, F.upsample_nearest):
            mode = "nearest" if fn is F.upsample_nearest else g(4, "mode", "nearest")
            rest = self._load_args(args[1:])
            kw = self._load_args(node.kwargs)
            self.upsample(node, lambda t: fn(t, *rest, **kw), mode)
        else:
            raise _unsupported(node, f"function {name}")

    def call_method(self, node):
        args = node.args
        g = lambda i, key, d: args[i] if len(args) > i else node.kwargs.get(key, d)
        m = node.target
        if m in ("reshape", "view", "flatten", "squeeze", "unsqueeze"):
            self.reshape(node)
        elif m in ("contiguous",):
            self.alias_same(node)
        elif m == "relu":
            self.relu(node)
        elif m in LUT_FUNCTIONS:
            self.lut_call(node, lambda q, *a, **k: getattr(q, m)(*a, **k), f"method .{m}()")
        elif m == "mean":
            self.mean(node, g(1, "dim", None), g(2, "keepdim", False))
        elif m == "softmax":
            self.softmax_node(node, g(1, "dim", None))
        elif m == "transpose":
            self.transpose_two(node, g(1, "dim0", None), g(2, "dim1", None))
        elif m == "permute":
            dims = args[1:] if len(args) > 2 or not isinstance(g(1, "dims", None), (tuple, list)) \
                else g(1, "dims", None)
            self.transpose(node, dims)
        elif m in ("chunk", "split"):
            self.split(node, g(2, "dim", 0))
        elif m == "unbind":
            self.split(node, g(1, "dim", 0))
        elif m == "narrow":
            self.narrow(node, g(1, "dim", 0), g(2, "start", 0), g(3, "length", 0))
        else:
            raise _unsupported(node, f"method .{m}()")

    def transpose_two(self, node, d0, d1):
        rank = len(self.values[node].shape)
        perm = list(range(rank))
        perm[d0 % rank], perm[d1 % rank] = perm[d1 % rank], perm[d0 % rank]
        self.transpose(node, perm)

    def add(self, node, relu):
        a, b = (self.input_of(node, x) for x in node.args[:2])
        if a.shape != b.shape:
            raise _unsupported(node, f"add of tensors with different shapes {a.shape} and {b.shape} "
                                     "(broadcasting)")
        out_q = self.qparams_of(self.values[node])
        for t in (a, b):
            ratio = np.float32(t.qparams.scale) / np.float32(out_q.scale)
            if not (2.0 ** -14 <= ratio < 2.0 ** 8):
                raise NncError(f"add: input scale / output scale = {ratio:g} is outside qnnpack's "
                               "range [2^-14, 2^8)", _where(node),
                               "calibrate with representative data so the scales stay comparable")
        self.add_op("add", node, [a, b], {"requant": "qnnpack_add", "relu": relu,
                                          "clamp": self.clamp_of(node, relu)})

    def cat(self, node):
        xs = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        inputs = [self.input_of(node, x) for x in xs]
        rank = len(inputs[0].shape)
        self.add_op("cat", node, inputs, {"axis": dim % rank})


def import_torch_model(model, example_input, name: str, device_softmax: bool = False) -> Graph:
    """`device_softmax`: compile a softmax that follows the DeQuantStub on the device (the C then
    returns qnnpack's int8 probabilities, scale 1/256) instead of leaving it to the caller."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TorchEagerImporter(device_softmax).import_model(model, example_input, name)


def quantize_like_torch(x, qparams) -> np.ndarray:
    """float inputs -> int8 exactly as a QuantStub with these parameters (torch's quantize).

    `qparams` is anything with `scale` and an int8-domain `zero_point` (QParams, a hostlib Port).
    """
    torch = _torch()
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch 2.13 deprecates quantize_per_tensor; it is the reference
        q = torch.quantize_per_tensor(x, float(qparams.scale), int(qparams.zero_point) + 128, torch.quint8)
    return (q.int_repr().numpy().astype(np.int16) - 128).astype(np.int8)


def run_torch_int8(qmodel, inputs: list, input_qparams: list) -> list:
    """Run the torch model on int8 inputs; return the int8 tensors that reach its DeQuantStubs.

    The int8 input is dequantized to float with the QuantStub's own parameters, which torch
    quantizes back to exactly the same integers; the outputs are captured before dequantizing.
    """
    torch = _torch()
    torch.backends.quantized.engine = "qnnpack"
    captured = []
    hooks = []

    def grab(_module, args):
        q = args[0]
        offset = 128 if q.dtype == torch.quint8 else 0
        captured.append((q.int_repr().to(torch.int16) - offset).numpy().astype(np.int8))

    for m in qmodel.modules():
        if isinstance(m, torch.ao.nn.quantized.modules.DeQuantize):
            hooks.append(m.register_forward_pre_hook(grab))
    try:
        floats = [torch.from_numpy((np.asarray(x, np.float32) - q.zero_point) * np.float32(q.scale))
                  for x, q in zip(inputs, input_qparams)]
        with torch.no_grad():
            qmodel(*floats)
    finally:
        for h in hooks:
            h.remove()
    return captured


def torch_intermediates(qmodel, float_input) -> dict:
    """{fx node name: int8 array} for every quantized tensor torch computes on one input.

    IR ops are named after their fx nodes, so this lines up with the reference's capture.
    """
    torch = _torch()
    torch.backends.quantized.engine = "qnnpack"
    gm = torch.fx.symbolic_trace(qmodel.eval())
    with torch.no_grad():
        values = _Recorder(gm).run(float_input)
    out = {}
    for node, v in values.items():
        if isinstance(v, torch.Tensor) and v.is_quantized:
            offset = 128 if v.dtype == torch.quint8 else 0
            out[node.name] = (v.int_repr().to(torch.int16) - offset).numpy().astype(np.int8)
    return out
