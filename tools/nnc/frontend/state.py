"""Stateful eager-quantized torch models: find the state tensors and import them into the IR.

A *state tensor* is a module attribute or buffer that forward() reads and then overwrites, so
that its value persists from one frame to the next (seed 000's SampleModel):

    x = self.dequant_1(x)
    x = torch.add(x, self.state)     # read
    x = self.quant_2(x)
    self.state = x.dequantize()      # write (or `self.state = x`, or `self.state.copy_(...)`)

How it is found, without any annotation by the user:
  * tracing: a torch.fx tracer that records every assignment of a traced value to a tensor
    attribute (`Module.__setattr__` is intercepted while tracing, so the model object is never
    modified) and every in-place `attr.copy_(value)`. Reads are the fx `get_attr` nodes of the
    same attributes. A `bool()` of a traced value is resolved on the example input only when it
    depends on tensor metadata alone (`x.is_quantized`, shapes, dtypes); anything else is
    data-dependent control flow and an error.
  * a state is an attribute that is both read and written. An attribute that is read but never
    written is a constant (it is imported the same way, without a write).

What the importer produces (plain IR, nothing target-specific):
  * every read is an extra graph input, after the frame inputs, quantized *on its own*
    (min/max of its current value, like a torch observer; all zeros -> scale 1, zero point 0);
  * every write is an extra graph output, after the model's outputs: the quantized tensor the
    attribute is assigned from (through `.dequantize()`/`.detach()`/`.clone()`);
  * `graph.meta["states"]`: one `StateTensor` per attribute (name, read, write, initial value).
A target decides what to do with them: the IMX681 target merges each read/write pair into one
buffer that keeps its value between frames (nnc.targets.imx681).

The float pattern `QuantStub(torch.add(DeQuantStub(a), state))` becomes one IR `add` op with
`attrs["requant"] == arith.FLOAT_ADD` and `attrs["torch_zp_offset"]`: exactly torch's arithmetic,
element by element (the contract and its numpy golden version are in nnc.arith; nnc.reference
runs it).
"""
from __future__ import annotations

import builtins
import contextlib
import operator
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..arith import FLOAT_ADD
from ..errors import NncError
from ..ir import INT8_MAX, INT8_MIN, Graph, QParams, Tensor
from .torch_eager import TorchEagerImporter, _GraphBuilder, _Recorder, _torch, _unsupported, _where

# Tensor metadata a bool() may depend on (resolved on the example input, never data-dependent).
_META_ATTRS = {"is_quantized", "dtype", "shape", "ndim", "is_floating_point", "device", "qscheme"}
_META_METHODS = {"size", "dim", "numel", "is_floating_point", "qscheme"}
_PURE_OPERATORS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
                   operator.getitem, operator.not_, operator.and_, operator.or_, operator.add,
                   operator.sub, operator.mul, operator.floordiv, operator.mod, builtins.len,
                   builtins.isinstance}
# Calls a written value may pass through on its way to the attribute (no arithmetic).
_PASS_METHODS = {"detach", "dequantize", "clone", "contiguous", "float"}


@dataclass(eq=False)
class StateTensor:
    attribute: str                 # qualified attribute name ("state", "block.state")
    read: Tensor                   # the value forward() reads: a graph input
    write: Optional[Tensor]        # the value stored back: a graph output (None: a constant)
    initial: np.ndarray            # the attribute's value at import time (float32 or int8 repr)
    initial_qparams: Optional[QParams] = None   # set when the attribute is a quantized tensor
    torch_zp_offset: int = 128     # torch dtype of the state's arithmetic: quint8 (128) / qint8 (0)

    @property
    def is_state(self) -> bool:
        return self.write is not None


def own_qparams(values: np.ndarray) -> QParams:
    """Quantization of a constant on its own: min/max (including 0) over int8, like a torch
    MinMax observer; a constant that is all zeros gets scale 1 and zero point 0."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = min(0.0, float(v.min(initial=0.0))), max(0.0, float(v.max(initial=0.0)))
    if hi - lo <= 0.0:
        return QParams.make(1.0, 0)
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(round(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return QParams.make(scale, zp)


# ---------------------------------------------------------------------------------------------
# Tracing
# ---------------------------------------------------------------------------------------------
def _state_float_add(a, state):
    """Marker target of the fused `QuantStub(dequant(a) + state)` node (never executed)."""
    raise RuntimeError("marker function")


class _StateTracer:
    """Builds a torch.fx.Tracer subclass lazily (importing torch only when needed)."""

    @staticmethod
    def make(example):
        torch = _torch()
        from torch.fx._symbolic_trace import _orig_module_call

        class Tracer(torch.fx.Tracer):
            def __init__(self):
                super().__init__()
                self.record_stack_traces = True
                self.example = example
                self.writes = []          # (qualified attribute name, fx node or value, where)
                self.concrete = {}        # fx node -> value, for metadata-only bool()

            # -- bool() of a traced value: allowed when it only depends on tensor metadata -----
            def to_bool(self, obj):
                node = obj.node
                if not self._metadata_only(node):
                    raise NncError("data-dependent control flow in forward(): `if` on a traced "
                                   "tensor value", _where(node),
                                   "compute both branches, or move the decision out of forward()")
                return bool(self._evaluate(node))

            def _metadata_only(self, node) -> bool:
                if node.op == "call_function" and node.target is builtins.getattr:
                    return node.args[1] in _META_ATTRS
                if node.op == "call_method" and node.target in _META_METHODS:
                    return True
                if node.op == "call_function" and node.target in _PURE_OPERATORS:
                    return all(self._metadata_only(a) for a in node.all_input_nodes)
                return False

            def _evaluate(self, target):
                """Concrete value of a node on the example input (runs the graph so far)."""
                torch_fx = torch.fx
                for node in self.graph.nodes:
                    if node in self.concrete:
                        if node is target:
                            break
                        continue
                    load = lambda a: torch_fx.node.map_arg(a, lambda n: self.concrete[n])
                    args, kwargs = load(node.args), load(node.kwargs)
                    if node.op == "placeholder":
                        value = self.example
                    elif node.op == "get_attr":
                        value = self.root
                        for atom in node.target.split("."):
                            value = getattr(value, atom)
                    elif node.op == "call_module":
                        value = _orig_module_call(self.root.get_submodule(node.target), *args, **kwargs)
                    elif node.op == "call_function":
                        value = node.target(*args, **kwargs)
                    elif node.op == "call_method":
                        value = getattr(args[0], node.target)(*args[1:], **kwargs)
                    else:
                        break
                    self.concrete[node] = value
                    if node is target:
                        break
                return self.concrete[target]

        return Tracer()


def _tensor_attribute_names(model) -> set:
    """Qualified names of every tensor attribute (plain attribute or buffer) of the model."""
    torch = _torch()
    names = set()
    for prefix, m in model.named_modules():
        for k, v in list(vars(m).items()) + list(m._buffers.items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, torch.nn.Parameter):
                names.add(f"{prefix}.{k}" if prefix else k)
    return names


@contextlib.contextmanager
def _recording_setattr(model, tracer, attr_names):
    """While tracing, `module.attr = traced value` is recorded instead of performed."""
    torch = _torch()
    from torch.fx import Proxy
    original = torch.nn.Module.__setattr__
    owner = {id(m): prefix for prefix, m in model.named_modules()}

    def setattr_wrapper(mod, name, value):
        prefix = owner.get(id(mod))
        qual = f"{prefix}.{name}" if prefix else name
        if prefix is not None and (isinstance(value, Proxy) or qual in attr_names):
            tracer.writes.append((qual, value))
            return
        original(mod, name, value)

    torch.nn.Module.__setattr__ = setattr_wrapper
    try:
        yield
    finally:
        torch.nn.Module.__setattr__ = original


def trace_stateful(model, example):
    """(GraphModule, tracer) with the state writes recorded in tracer.writes."""
    torch = _torch()
    tracer = _StateTracer.make(example)
    attr_names = _tensor_attribute_names(model)
    try:
        with _recording_setattr(model, tracer, attr_names):
            fx_graph = tracer.trace(model)
    except NncError:
        raise
    except Exception as exc:
        raise NncError(f"torch.fx cannot trace the model: {exc}", f"model {type(model).__name__}",
                       "remove data-dependent control flow from forward()") from None
    return torch.fx.GraphModule(tracer.root, fx_graph), tracer, attr_names


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------
def _is_dequant(gm, node) -> bool:
    torch = _torch()
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), torch.ao.nn.quantized.modules.DeQuantize)
    return (node.op == "call_method" and node.target == "dequantize") or \
        (node.op == "call_function" and node.target is torch.dequantize)


def _is_quant_stub(gm, node) -> bool:
    torch = _torch()
    return node.op == "call_module" and \
        isinstance(gm.get_submodule(node.target), torch.ao.nn.quantized.modules.Quantize)


def _is_float_add(node) -> bool:
    torch = _torch()
    return (node.op == "call_function" and node.target in (torch.add, operator.add, operator.iadd)) \
        or (node.op == "call_method" and node.target in ("add", "__add__"))


class _StateGraphBuilder(_GraphBuilder):
    """The eager importer's builder, plus state reads (pre-made tensors) and the fused add."""

    def __init__(self, gm, values, name, reads: dict, writes: dict):
        super().__init__(gm, values, name)
        self.reads = reads        # fx placeholder node -> IR read tensor
        self.writes = writes      # attribute -> fx node of the quantized written value
        self.tensors.update(reads)

    def call_function(self, node):
        if node.target is _state_float_add:
            self.float_add(node)
        else:
            super().call_function(node)

    def float_add(self, node):
        a, b = (self.input_of(node, x) for x in node.args[:2])
        value = self.values[node]
        offset = 128 if value.dtype == self.torch.quint8 else 0
        self.add_op("add", node, [a, b], {"requant": FLOAT_ADD, "relu": False,
                                          "clamp": (INT8_MIN, INT8_MAX), "torch_zp_offset": offset})

    def finish_output(self, node):
        # Reads become graph inputs after the frame inputs, writes outputs after the model's.
        self.inputs.extend(self.reads.values())
        for attr, wnode in self.writes.items():
            if wnode not in self.tensors:
                raise NncError(f"the value stored into the state '{attr}' is not a quantized "
                               "tensor of the model", _where(wnode),
                               "store the output of a quantized layer or QuantStub "
                               "(e.g. `self.state = self.quant_2(x).dequantize()`)")
            self.outputs.append(self.tensors[wnode])


class StatefulTorchImporter(TorchEagerImporter):
    """`import_model(model, example_input, name) -> Graph` with the state tensors found."""

    def import_model(self, model, example_input, name: str) -> Graph:
        torch = _torch()
        torch.backends.quantized.engine = "qnnpack"
        model = model.eval()
        gm, tracer, attr_names = trace_stateful(model, example_input)
        with torch.no_grad():
            values = _Recorder(gm).run(example_input)
        graph_nodes = list(gm.graph.nodes)

        # Reads: get_attr nodes of tensor attributes. Writes: recorded assignments + copy_().
        reads = {}
        for node in graph_nodes:
            if node.op == "get_attr" and node.target in attr_names:
                reads.setdefault(node.target, []).append(node)
        writes = {}
        for qual, value in tracer.writes:
            node = getattr(value, "node", None)
            if node is None:
                raise NncError(f"forward() stores a value that is not a traced tensor into '{qual}'",
                               f"model {type(model).__name__}",
                               "store a tensor computed from the input (a state)")
            writes[qual] = node
        for node in graph_nodes:
            if node.op == "call_method" and node.target == "copy_" and \
                    node.args[0].op == "get_attr" and node.args[0].target in attr_names:
                writes[node.args[0].target] = node.args[1]
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
        for qual in writes:
            if qual not in reads:
                raise NncError(f"forward() writes the tensor attribute '{qual}' but never reads it",
                               f"model {type(model).__name__}",
                               "a state is read (e.g. added to the frame) and then written")
        states = self._rewrite(gm, values, reads, writes)
        builder = _StateGraphBuilder(gm, values, name,
                                     {s["placeholder"]: s["tensor"] for s in states},
                                     {s["attr"]: s["write_node"] for s in states if s["write_node"] is not None})
        graph = builder.build()
        meta = []
        for s in states:
            w = s["write_node"]
            st = StateTensor(s["attr"], s["tensor"], builder.tensors[w] if w is not None else None,
                             s["initial"], s["initial_qparams"], s["zp_offset"])
            if st.write is not None and st.write.shape != st.read.shape:
                raise NncError(f"the state '{st.attribute}' is read as {st.read.shape} but written as "
                               f"{st.write.shape}", f"model {type(model).__name__}",
                               "a state keeps its shape from frame to frame")
            meta.append(st)
        graph.meta["states"] = meta
        graph.meta.setdefault("notes", []).extend(
            f"state '{s.attribute}': read {s.read.name}, written from {s.write.name}" if s.is_state
            else f"constant '{s.attribute}': {s.read.name}" for s in meta)
        graph.validate()
        return graph

    # -- fx rewrite ----------------------------------------------------------------------------
    def _rewrite(self, gm, values, reads, writes) -> list:
        """Fuse the float add, turn reads into placeholders, drop the write chains."""
        torch = _torch()
        g = gm.graph
        states = []
        last_placeholder = [n for n in g.nodes if n.op == "placeholder"][-1]
        for qual, nodes in reads.items():
            value = values[nodes[0]]
            with g.inserting_after(last_placeholder):
                ph = g.placeholder(f"state_{qual.replace('.', '_')}")
            last_placeholder = ph
            values[ph] = value
            fused_shape = None
            zp_offset = 128
            for rnode in nodes:
                for user in list(rnode.users):
                    if value.is_quantized:
                        continue          # quantized ops read it like any quantized tensor
                    fused = self._fuse_float_add(gm, values, rnode, user, ph)
                    if fused is None:
                        raise _unsupported(user, f"a float use of the state '{qual}' other than "
                                                 "`QuantStub(DeQuantStub(x) + state)`")
                    fused_shape = tuple(values[fused].shape)
                    zp_offset = 128 if values[fused].dtype == torch.quint8 else 0
                rnode.replace_all_uses_with(ph)
                g.erase_node(rnode)
            # Initial value and the read's own quantization.
            if value.is_quantized:
                offset = 128 if value.dtype == torch.quint8 else 0
                initial = (value.int_repr().to(torch.int16) - offset).numpy().astype(np.int8)
                qp = QParams.make(value.q_scale(), int(value.q_zero_point()) - offset)
                shape = tuple(value.shape)
                read_q, init_q = qp, qp
            else:
                initial = value.detach().float().numpy().astype(np.float32)
                shape = fused_shape or tuple(value.shape)
                if int(np.prod(shape)) != initial.size:
                    raise NncError(f"the state '{qual}' {tuple(initial.shape)} broadcasts to {shape} "
                                   "where it is used", f"model {type(gm).__name__}",
                                   "give the state the shape of the tensor it is added to")
                initial = np.broadcast_to(initial, shape).copy()
                read_q, init_q = own_qparams(initial), None
            tensor = Tensor(f"state_{qual.replace('.', '_')}", shape, "int8", read_q)
            states.append({"attr": qual, "placeholder": ph, "tensor": tensor, "write_node": None,
                           "initial": initial, "initial_qparams": init_q, "zp_offset": zp_offset})
        # The written value (looked up after the fusion, which may have replaced its node):
        # walk back through detach/dequantize/clone to the quantized tensor.
        resolved = {}
        for qual, node in writes.items():
            start = node
            while not (isinstance(values.get(node), torch.Tensor) and values[node].is_quantized):
                if node.op == "call_method" and node.target in _PASS_METHODS or \
                        node.op == "call_function" and node.target in (torch.detach, torch.clone,
                                                                        torch.dequantize) or \
                        _is_dequant(gm, node):
                    node = node.args[0]
                    continue
                raise NncError(f"the state '{qual}' is stored in float, not as a quantized tensor",
                               _where(start),
                               "quantize the new state before storing it, as the int8 model "
                               "holds it: `x = self.quant_2(x); self.state = x.dequantize()`")
            resolved[qual] = node
        for s in states:
            s["write_node"] = resolved.get(s["attr"])
        # Drop what only fed the writes (the .dequantize()/.detach() chains): dead code now.
        for node in reversed(list(g.nodes)):
            if not node.users and node.op in ("call_method", "call_function") and \
                    (node.target in _PASS_METHODS or node.target in (torch.detach, torch.clone,
                                                                     torch.dequantize)):
                g.erase_node(node)
        g.lint()
        return states

    def _fuse_float_add(self, gm, values, rnode, user, ph):
        """`Q(add(DQ(a), state))` -> `_state_float_add(a, state)`; returns the new node."""
        g = gm.graph
        if not _is_float_add(user) or len(user.args) != 2 or user.kwargs:
            return None
        other = user.args[0] if user.args[1] is rnode else user.args[1]
        if other is rnode or not hasattr(other, "op") or not _is_dequant(gm, other):
            return None
        quants = list(user.users)
        if len(quants) != 1 or not _is_quant_stub(gm, quants[0]):
            return None
        q = quants[0]
        with g.inserting_before(q):
            fused = g.call_function(_state_float_add, (other.args[0], ph))
        fused.name = q.name
        fused.meta = dict(q.meta)
        values[fused] = values[q]
        q.replace_all_uses_with(fused)
        g.erase_node(q)
        g.erase_node(user)
        if not other.users:
            g.erase_node(other)
        return fused


def import_stateful_model(model, example_input, name: str) -> Graph:
    """Import an eager-quantized model whose state tensors persist from frame to frame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StatefulTorchImporter().import_model(model, example_input, name)


def run_torch_sequences(qmodel, frames: np.ndarray, input_qparams: QParams, states: list) -> np.ndarray:
    """Run S independent sequences of T int8 frames through the torch model, as a batch of S for
    T steps: frames (S, T, *frame shape) -> the int8 tensors reaching its last DeQuantStub,
    (S, T, *output shape). Every sequence starts from the state's initial value (`states`:
    graph.meta["states"]); the model's attributes are restored afterwards."""
    torch = _torch()
    torch.backends.quantized.engine = "qnnpack"
    frames = np.asarray(frames)
    n_seq, n_steps = frames.shape[:2]
    captured = []

    def grab(_module, args):
        q = args[0]
        offset = 128 if q.dtype == torch.quint8 else 0
        captured.append((q.int_repr().to(torch.int16) - offset).numpy().astype(np.int8))

    def owner(qual):
        parts = qual.split(".")
        return qmodel.get_submodule(".".join(parts[:-1])) if len(parts) > 1 else qmodel, parts[-1]

    saved = {s.attribute: getattr(*owner(s.attribute)) for s in states}
    dequants = [m for m in qmodel.modules() if isinstance(m, torch.ao.nn.quantized.modules.DeQuantize)]
    hook = dequants[-1].register_forward_pre_hook(grab)
    outs = []
    try:
        for s in states:
            if s.initial_qparams is not None:
                raise NncError(f"run_torch_sequences: the state '{s.attribute}' holds a quantized "
                               "tensor; only float states are supported here")
            init = np.broadcast_to(s.initial, (n_seq,) + tuple(s.read.shape[1:])).copy()
            setattr(*owner(s.attribute), torch.from_numpy(init))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for t in range(n_steps):
                real = torch.from_numpy((frames[:, t].astype(np.float32) - input_qparams.zero_point)
                                        * np.float32(input_qparams.scale))
                captured.clear()
                qmodel(real)
                outs.append(captured[-1])
    finally:
        hook.remove()
        for qual, value in saved.items():
            setattr(*owner(qual), value)
    return np.stack(outs, axis=1)
