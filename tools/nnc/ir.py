"""Integer graph IR: tensors, ops and graphs. Nothing here knows about a target.

Activations are int8. A quantized tensor carries one (scale, zero_point) pair; the real
value of an element q is scale * (q - zero_point). Torch's quint8 activations map to this
exactly by subtracting 128 from values and zero points.

Each op names the arithmetic of its requantization (`attrs["requant"]`):
  "float"  conv/dense: rintf(f32(acc + bias) * f32 multiplier) + zp, clamp  (qnnpack)
  "shift"  conv/dense/add: (acc + bias) >> shift, clamp                      (DIANA)
  "qnnpack_add"  add: qnnpack's integer add (22-bit multipliers, rounding shift)
  "torch_float_add"  add: torch's dequantize -> float32 add -> quantize (a state added in float)
The rules themselves are in nnc.arith.
Ops without a requantization of their own: `lut` carries its 256-entry table (computed by the
frontend, e.g. by running torch's own quantized function on every input code), `mul` follows
torch's quantized mul (`arith.qnnpack_mul`), `softmax` qnnpack's table-based softmax
(`arith.softmax_table`); the data movement ops (slice, pad, upsample_nearest, transpose,
reshape) copy codes unchanged, and the planner lets a move alias its input where the bytes
it selects are already contiguous (`Tensor.alias_of` + `alias_offset`).
The reference interpreter and every kernel provider implement exactly these contracts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import NncError

INT8_MIN, INT8_MAX = -128, 127

# Op kinds the IR knows, with the one-line meaning used in error messages and reports.
OP_KINDS = {
    "conv2d": "2-D convolution (any stride/padding/groups), int32 bias, requantized to int8",
    "dense": "fully connected layer, int32 bias, requantized to int8",
    "add": "element-wise add of two int8 tensors, requantized",
    "relu": "clamp at the zero point",
    "maxpool2d": "max pooling",
    "conv2d_maxpool2d": "2-D convolution and the max pooling after it, fused: only the pooled "
                        "output is stored (a kernel provider asks for it, see passes.fuse_conv_maxpool)",
    "avgpool2d": "average pooling, requantized",
    "reshape": "shape change without data movement (flatten, view, reshape)",
    "cat": "concatenation along one axis, each input requantized to the output",
    "transpose": "permutation of axes (any rank; attrs perm)",
    "lut": "element-wise function of one int8 code through a 256-entry table (params table, "
           "indexed by code + 128): every activation with a curve",
    "mul": "element-wise multiply of two int8 tensors (numpy broadcasting), requantized as torch's "
           "quantized mul",
    "slice": "a strided box of the input (attrs begin, end, step per axis): chunk, split, narrow, "
             "x[a:b]; aliases its input when the box is contiguous",
    "pad": "constant padding (attrs pads: (before, after) per axis, value: the int8 code written)",
    "upsample_nearest": "nearest-neighbour resampling (attrs index: per axis, the source index of "
                        "every output index)",
    "mean": "mean over the innermost `count` elements as torch's quantized mean computes it there: "
            "rint(f32(sum of uint8 codes) / count), output quantization = input's",
    "softmax": "qnnpack's softmax along one axis: exp through a 256-entry uint32 table, integer "
               "normalisation; output scale 1/256, zero point -128",
    "reverse_words": "swap the 4 bytes of every 32-bit word (an accelerator's word layout, DIANA)",
}

# Ops that only move or select bytes: their output may share storage with their input.
DATA_MOVEMENT = ("reshape", "slice", "transpose", "pad", "upsample_nearest")


@dataclass(frozen=True)
class QParams:
    scale: float          # always a float32-representable value
    zero_point: int       # in the int8 domain

    @staticmethod
    def make(scale: float, zero_point: int) -> "QParams":
        return QParams(float(np.float32(scale)), int(zero_point))


@dataclass(eq=False)
class Tensor:
    name: str
    shape: tuple
    dtype: str = "int8"
    qparams: Optional[QParams] = None
    # For moves that need no copy (reshape, a contiguous slice): the tensor whose bytes this
    # one reuses, starting alias_offset bytes into them.
    alias_of: Optional["Tensor"] = None
    alias_offset: int = 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def storage(self) -> "Tensor":
        """The tensor that owns the bytes (follows reshape aliases)."""
        t = self
        while t.alias_of is not None:
            t = t.alias_of
        return t

    def storage_offset(self) -> int:
        """Bytes from the start of `storage()` to this tensor's first element."""
        t, offset = self, 0
        while t.alias_of is not None:
            offset += t.alias_offset
            t = t.alias_of
        return offset

    def __repr__(self):
        return f"Tensor({self.name}, {self.shape}, {self.dtype})"


@dataclass(eq=False)
class Op:
    kind: str
    name: str                 # layer name, as the user knows it (fx node / builder name)
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)   # name -> np.ndarray (weights, bias, ...)

    @property
    def output(self) -> Tensor:
        return self.outputs[0]

    def macs(self) -> int:
        """Multiply-accumulates of one inference (0 for ops without MACs)."""
        if self.kind in ("conv2d", "conv2d_maxpool2d"):
            w = self.params["weight"]
            shape = self.attrs.get("conv_shape", self.output.shape)
            return int(np.prod(shape)) * int(np.prod(w.shape[1:]))
        if self.kind == "dense":
            return int(np.prod(self.output.shape)) * int(self.params["weight"].shape[1])
        return 0

    def __repr__(self):
        return f"Op({self.kind} {self.name})"


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list
    outputs: list
    ops: list                 # in execution order
    meta: dict = field(default_factory=dict)

    def tensors(self) -> list:
        seen, out = set(), []
        for t in self.inputs + [t for op in self.ops for t in op.inputs + op.outputs]:
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        return out

    def consumers(self, tensor: Tensor) -> list:
        return [op for op in self.ops if any(t is tensor for t in op.inputs)]

    def producer(self, tensor: Tensor) -> Optional[Op]:
        for op in self.ops:
            if any(t is tensor for t in op.outputs):
                return op
        return None

    def macs(self) -> int:
        return sum(op.macs() for op in self.ops)

    def weight_bytes(self) -> int:
        return sum(int(p.nbytes) for op in self.ops for p in op.params.values())

    def validate(self) -> None:
        """Every op input is a graph input or produced earlier; kinds are known."""
        defined = {id(t) for t in self.inputs}
        for op in self.ops:
            if op.kind not in OP_KINDS:
                raise ValueError(f"op {op.name}: unknown kind {op.kind!r}")
            for t in op.inputs:
                if id(t) not in defined:
                    raise ValueError(f"op {op.name}: input {t.name} is used before it is produced")
            defined.update(id(t) for t in op.outputs)
        for t in self.outputs:
            if id(t) not in defined:
                raise ValueError(f"graph output {t.name} is never produced")


def check_batch_one(graph: Graph) -> None:
    """One sample per run(): the arena, the kernels and the firmware's frame loop are built for
    batch 1, as a microcontroller processes one image at a time. A batch would be N calls."""
    for t in graph.inputs:
        if len(t.shape) >= 2 and t.shape[0] != 1:
            raise NncError(f"input '{t.name}' has batch size {t.shape[0]} (shape {tuple(t.shape)}); "
                           "nnc compiles one sample per run()", f"model '{graph.name}'",
                           "trace the model with an example input of batch size 1 (e.g. x[:1]); to run "
                           "a batch, call run() once per sample (hostlib's run() takes (N, ...) arrays "
                           "and does that)")
    # An op that moves data into the batch axis (cat or stack along dim 0, a reshape to (4, ...))
    # or drops it (flatten() to 1-D) makes a tensor the one-sample run() cannot hold: a caller's
    # output buffer of the header's per-sample size would be overrun, and the reference, which
    # runs N samples along dim 0, would mix them.
    for op in graph.ops:
        for t in op.outputs:
            if len(t.shape) < 2 or t.shape[0] != 1:
                what = f"batch size {t.shape[0]}" if len(t.shape) >= 2 else "no batch axis"
                raise NncError(f"layer '{op.name}' ({op.kind}) makes a tensor with {what} (shape "
                               f"{tuple(t.shape)}) from one sample; nnc compiles one sample per run()",
                               f"model '{graph.name}', layer '{op.name}'",
                               "keep the batch axis (dim 0) of size 1: concatenate along another "
                               "dimension (e.g. dim=1), flatten(1) instead of flatten(), reshape to "
                               "(1, ...)")


def c_identifier(name: str) -> str:
    """A C identifier from a layer or model name ('layer1.0.conv1' -> 'layer1_0_conv1')."""
    out = "".join(ch if ch.isalnum() else "_" for ch in name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out
