"""The identity of a generated model: what a library and a header must agree on.

Every generated model carries one identity string, twice: as the macro `<PREFIX>_IDENTITY` in
tvmgen_<name>.h and as the exported `const char tvmgen_<name>_identity[]` in tvmgen_<name>.c, so
the compiled library carries it too. hostlib.load() and the `inference` application compare the
library's copy with the header (or deploy.cfg) before they pass a single buffer to the C: a header
of another model, of another build or with edited sizes would otherwise make the C write past
the caller's buffers.

The string is space-separated KEY=VALUE tokens, no spaces inside values (read by hostlib in
Python and by hostlib/inference.c in C):

    nnc_identity=1 prefix=tvmgen_lenet5 kernels=c inputs=1 outputs=1
    input0_size=784 input0_shape=1x1x28x28 input0_scale=0x1.0p-7 input0_zero_point=-128 ...
    graph_sha256=<hex> c_sha256=<hex>

graph_sha256: the model as compiled (ops, attributes, weights, quantization, shapes), taken
before any target pass, so builds of one model with other kernels (c, m7, tvm) share it.
c_sha256: the generated .c before its identity block (the blank line, comment and definition
that end the file).
"""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from .ir import Graph, QParams, Tensor

VERSION = 1


def _canonical(value):
    """A JSON-able, deterministic form of an attribute or parameter value."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return ["ndarray", str(data.dtype), list(data.shape), hashlib.sha256(data.tobytes()).hexdigest()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return ["float", value.hex()]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return [[str(k), _canonical(value[k])] for k in sorted(value, key=str)]
    if isinstance(value, QParams):
        return ["qparams", float(value.scale).hex(), int(value.zero_point)]
    if isinstance(value, Tensor):
        return ["tensor", value.name]
    # Anything else by its type and text, without memory addresses (deterministic).
    return [type(value).__name__, re.sub(r" at 0x[0-9a-f]+", "", repr(value))]


def graph_sha256(graph: Graph) -> str:
    tensors = [[t.name, list(t.shape), t.dtype, _canonical(t.qparams),
                t.alias_of.name if t.alias_of is not None else None] for t in graph.tensors()]
    ops = [[op.kind, op.name, [t.name for t in op.inputs], [t.name for t in op.outputs],
            _canonical(op.attrs), _canonical(op.params)] for op in graph.ops]
    doc = {"name": graph.name, "inputs": [t.name for t in graph.inputs],
           "outputs": [t.name for t in graph.outputs], "tensors": tensors, "ops": ops}
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()


def port_fields(kind: str, index: int, tensor: Tensor) -> dict:
    q = tensor.qparams or QParams(1.0, 0)
    return {f"{kind}{index}_size": str(tensor.nbytes),
            f"{kind}{index}_shape": "x".join(str(d) for d in tensor.shape),
            f"{kind}{index}_scale": float(q.scale).hex(),
            f"{kind}{index}_zero_point": str(int(q.zero_point))}


def identity(prefix: str, graph: Graph, kernels: str, graph_hash: str, source: str) -> str:
    fields = {"nnc_identity": str(VERSION), "prefix": prefix, "kernels": kernels,
              "inputs": str(len(graph.inputs)), "outputs": str(len(graph.outputs))}
    for kind, tensors in (("input", graph.inputs), ("output", graph.outputs)):
        for i, t in enumerate(tensors):
            fields.update(port_fields(kind, i, t))
    fields["graph_sha256"] = graph_hash
    fields["c_sha256"] = hashlib.sha256(source.encode()).hexdigest()
    return " ".join(f"{k}={v}" for k, v in fields.items())


def c_definition(prefix: str, text: str) -> str:
    """The last lines of the .c: the identity as an exported constant (it goes into the library)."""
    return (f"/* Identity of this build (see {prefix}.h): checked by hostlib.load() and inference. */\n"
            f'const char {prefix}_identity[] = "{text}";\n')
