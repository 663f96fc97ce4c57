"""The eager importer's element-wise functions, multiply, mean, softmax and data movement.

Each handler reads what torch computed for the node (`self.values`) and emits IR ops whose
meaning is torch's, by construction where possible:
- an activation becomes a `lut` op whose table is torch's own quantized function evaluated on
  all 256 input codes (laid out in the node's input shape, so every code passes through the
  same kernel path the model uses; a function that maps one code to two values is refused);
- pad values and nearest-upsampling source indices are read back from torch's results;
- shape arithmetic (`x.size(1) // groups`) is a Python value the recorder already computed.
"""
from __future__ import annotations

import numpy as np

from .. import arith
from ..errors import NncError
from ..ir import Op, Tensor

# Element-wise activations turned into a table. Modules by class name (torch's quantized
# versions and the float modules that torch runs on quantized tensors), functions and
# methods by name.
LUT_MODULES = ("Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "GELU", "LeakyReLU", "ELU", "Hardtanh",
               "ReLU6", "SiLU", "Mish", "Softsign", "CELU", "SELU")
LUT_FUNCTIONS = ("hardswish", "hardsigmoid", "sigmoid", "tanh", "gelu", "leaky_relu", "elu", "hardtanh",
                 "relu6", "silu", "mish", "celu", "selu", "clamp", "clip")
MUL_FUNCTIONS = ("mul", "mul_relu")


class EagerOpsMixin:
    """Handlers used by torch_eager._GraphBuilder (needs values, tensors, ops, add_op, ...)."""

    # -- activations through a table -----------------------------------------------------------
    def lut(self, node, call, label):
        """`call(q)` runs the node's own function on a quantized tensor like its input."""
        torch = self.torch
        x = self.input_of(node, node.args[0])
        src = self.values[node.args[0]]
        shape = tuple(src.shape)
        per_batch = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        batch = max(1, -(-256 // per_batch))
        codes = (np.arange(batch * per_batch) % 256).astype(np.uint8)
        probe = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(codes.reshape((batch,) + shape[1:])), src.q_scale(), src.q_zero_point()) \
            if src.dtype == torch.quint8 else None
        if probe is None:
            raise self.unsupported(node, f"{label} on a {src.dtype} tensor (only quint8 activations)")
        with torch.no_grad():
            y = call(probe)
        out_q = self.qparams_of(self.values[node])
        if not getattr(y, "is_quantized", False) or self.qparams_of(y) != out_q:
            raise self.unsupported(node, f"{label}: torch's result on the table probe is not a quantized "
                                         "tensor with the layer's output quantization")
        got = (y.int_repr().numpy().astype(np.int16).ravel() - (128 if y.dtype == torch.quint8 else 0))
        table = np.zeros(256, dtype=np.int16)
        table[codes[:256].astype(np.int64)] = got[:256]
        if not np.array_equal(table[codes.astype(np.int64)], got):
            raise self.unsupported(node, f"{label}: torch maps one input code to different outputs at "
                                         "different positions, so no table can reproduce it")
        # Index the table by int8 code + 128: uint8 code u is int8 u - 128.
        self.add_op("lut", node, [x], {"function": label}, {"table": table.astype(np.int8)})

    def lut_module(self, node, m):
        self.lut(node, m, f"module {type(m).__name__}")

    def lut_call(self, node, fn, name):
        args = self._load_args(node.args[1:])
        kwargs = self._load_args(node.kwargs)
        self.lut(node, lambda q: fn(q, *args, **kwargs), name)

    def _load_args(self, a):
        import torch.fx
        return torch.fx.node.map_arg(a, lambda n: self.values[n])

    # -- multiply ------------------------------------------------------------------------------
    def mul(self, node, relu: bool):
        a, b = (self.input_of(node, x) for x in node.args[:2])
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self.unsupported(node, f"mul of shapes {a.shape} and {b.shape} that do not broadcast")
        self.add_op("mul", node, [a, b], {"relu": relu, "clamp": self.clamp_of(node, relu)})

    # -- mean ----------------------------------------------------------------------------------
    def mean(self, node, dims, keepdim):
        """torch has two exact paths: dims literally (2, 3) of a 4-D tensor is qnnpack's global
        average pool (an avgpool2d op); other innermost dims are the mean of the raw codes."""
        x = self.input_of(node, node.args[0])
        rank = len(x.shape)
        literal = tuple(dims) if isinstance(dims, (tuple, list)) else (dims,)
        axes = sorted(d % rank for d in literal)
        out_q = self.qparams_of(self.values[node])
        if out_q != x.qparams:
            raise self.unsupported(node, "mean whose output quantization differs from its input")
        if rank == 4 and literal == (2, 3):
            h, w = x.shape[2:]
            n, c = x.shape[:2]
            attrs = {"kernel": (h, w), "stride": (h, w), "padding": (0, 0), "ceil_mode": False,
                     "count_include_pad": True}
            if keepdim:
                self.add_op("avgpool2d", node, [x], attrs)
                return
            pooled = Tensor(f"{node.name}_pooled", (n, c, 1, 1), "int8", out_q)
            self.ops.append(Op("avgpool2d", f"{node.name}_pooled", [x], [pooled], attrs))
            out = self.new_tensor(node)
            out.alias_of = pooled
            self.ops.append(Op("reshape", node.name, [pooled], [out]))
            return
        if axes != list(range(rank - len(axes), rank)) or 0 in axes:
            raise self.unsupported(node, f"mean over dims {literal} of a {rank}-D tensor (torch computes "
                                         "that in float; use dims (2, 3) or the innermost dims)")
        self.add_op("mean", node, [x], {"count": int(np.prod([x.shape[a] for a in axes]))})

    # -- softmax ---------------------------------------------------------------------------------
    def softmax(self, node, x, dim, out_q, name=None):
        rank = len(x.shape)
        axis = dim % rank
        if out_q != arith.SOFTMAX_OUTPUT:
            raise NncError(f"softmax with output scale {out_q.scale:g} and zero point {out_q.zero_point + 128} "
                           "(torch computes that one in float)", self.where(node),
                           "give the softmax qnnpack's fixed output quantization, scale 1/256 and zero "
                           "point 0 (qconfig activation torch.ao.quantization."
                           "default_fixed_qparams_range_0to1_observer), which the C reproduces exactly")
        table = arith.softmax_table(x.qparams.scale, x.shape[axis])
        out = Tensor(name or node.name, x.shape, "int8", arith.SOFTMAX_OUTPUT)
        op = Op("softmax", name or node.name, [x], [out], {"axis": axis}, {"table": table})
        self.ops.append(op)
        return out

    def softmax_node(self, node, dim):
        x = self.input_of(node, node.args[0])
        self.tensors[node] = self.softmax(node, x, dim, self.qparams_of(self.values[node]))

    # -- data movement ---------------------------------------------------------------------------
    def transpose(self, node, perm):
        x = self.input_of(node, node.args[0])
        perm = tuple(int(p) % len(x.shape) for p in perm)
        if perm[0] != 0:
            raise self.unsupported(node, f"a permutation {perm} that moves the batch axis")
        self.add_op("transpose", node, [x], {"perm": perm})

    def box(self, node, x, begin, end, step, name, out_shape=None):
        """A slice op of x (full rank begin/end/step); a reshape after it if torch dropped axes."""
        if begin[0] != 0 or end[0] != x.shape[0] or step[0] != 1:
            raise self.unsupported(node, "slicing along the batch axis")
        shape = tuple(len(range(b, e, s)) for b, e, s in zip(begin, end, step))
        t = Tensor(name, shape, "int8", x.qparams)
        self.ops.append(Op("slice", name, [x], [t], {"begin": tuple(begin), "end": tuple(end),
                                                     "step": tuple(step)}))
        if out_shape is not None and tuple(out_shape) != shape:
            r = Tensor(f"{name}_view", tuple(out_shape), "int8", x.qparams, alias_of=t)
            self.ops.append(Op("reshape", f"{name}_view", [t], [r]))
            return r
        return t

    def split(self, node, dim):
        """chunk/split/unbind: one slice per piece; the node's value is the tuple of pieces."""
        x = self.input_of(node, node.args[0])
        rank = len(x.shape)
        axis = dim % rank
        pieces, start = [], 0
        for i, v in enumerate(self.values[node]):
            size = v.shape[axis] if v.dim() == rank else 1
            begin = [0] * rank
            end = list(x.shape)
            begin[axis], end[axis] = start, start + size
            pieces.append(self.box(node, x, begin, end, [1] * rank, f"{node.name}_{i}", tuple(v.shape)))
            start += size
        self.tensors[node] = pieces

    def index(self, node):
        """x[...] with slices and integers (steps > 0)."""
        x = self.input_of(node, node.args[0])
        idx = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        rank = len(x.shape)
        if Ellipsis in idx:
            at = idx.index(Ellipsis)
            idx = idx[:at] + (slice(None),) * (rank - len(idx) + 1) + idx[at + 1:]
        if len(idx) > rank or not all(isinstance(i, (slice, int)) for i in idx):
            raise self.unsupported(node, f"indexing with {node.args[1]} (only slices and integers)")
        idx = idx + (slice(None),) * (rank - len(idx))
        begin, end, step = [], [], []
        for i, d in zip(idx, x.shape):
            if isinstance(i, int):
                i = slice(i % d, i % d + 1, 1)
            b, e, s = i.indices(d)
            if s <= 0:
                raise self.unsupported(node, "a slice with a negative step")
            begin.append(b), end.append(max(e, b)), step.append(s)
        self.tensors[node] = self.box(node, x, begin, end, step, node.name, tuple(self.values[node].shape))

    def narrow(self, node, dim, start, length):
        x = self.input_of(node, node.args[0])
        rank = len(x.shape)
        axis = dim % rank
        begin, end = [0] * rank, list(x.shape)
        begin[axis] = start % x.shape[axis]
        end[axis] = begin[axis] + length
        self.tensors[node] = self.box(node, x, begin, end, [1] * rank, node.name)

    def pad(self, node, pads, mode):
        x = self.input_of(node, node.args[0])
        if mode != "constant" or any(p < 0 for p in pads):
            raise self.unsupported(node, f"pad mode {mode!r} with pads {tuple(pads)} "
                                         "(only constant padding by non-negative amounts)")
        rank = len(x.shape)
        per_axis = [(0, 0)] * rank
        for i in range(len(pads) // 2):          # torch lists the last axis first
            per_axis[rank - 1 - i] = (int(pads[2 * i]), int(pads[2 * i + 1]))
        if per_axis[0] != (0, 0):
            raise self.unsupported(node, "padding the batch axis")
        y = self.values[node]
        value = x.qparams.zero_point
        for axis, (before, after) in enumerate(per_axis):
            if before or after:      # read the code torch wrote into the padding
                at = [0] * rank
                at[axis] = 0 if before else y.shape[axis] - 1
                value = int(y.int_repr()[tuple(at)]) - (128 if y.dtype == self.torch.quint8 else 0)
                break
        if self.qparams_of(y) != x.qparams:
            raise self.unsupported(node, "pad whose output quantization differs from its input")
        self.add_op("pad", node, [x], {"pads": tuple(per_axis), "value": value})

    def upsample(self, node, call, mode):
        """Nearest upsampling; torch's own source index per axis, read back from `call` run on a
        float tensor whose elements hold their own coordinates."""
        torch = self.torch
        x = self.input_of(node, node.args[0])
        if mode != "nearest" or len(x.shape) != 4:
            raise self.unsupported(node, f"upsampling mode {mode!r} of a {len(x.shape)}-D tensor "
                                         "(only mode 'nearest' on NCHW)")
        _, c, h, w = x.shape
        coords = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w).expand(1, c, h, w)
        with torch.no_grad():
            y = call(coords.contiguous())[0, 0].numpy().astype(np.int64)
        rows, cols = y[:, 0] // w, y[0, :] % w
        if not np.array_equal(y, rows[:, None] * w + cols[None, :]):
            raise self.unsupported(node, "an upsampling whose source index is not separable by axis")
        oh, ow = y.shape
        index = ((0,), tuple(range(c)), tuple(int(v) for v in rows), tuple(int(v) for v in cols))
        if tuple(self.values[node].shape) != (x.shape[0], c, oh, ow):
            raise self.unsupported(node, "an upsampling whose output shape torch did not predict")
        self.add_op("upsample_nearest", node, [x], {"index": index})
