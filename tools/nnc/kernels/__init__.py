"""The kernel interface: one op in, one C function out.

A provider turns an IR op into a `Kernel`: a C function definition, the order of its
arguments, and the constant arrays it reads (in the layout *it* wants: a DSP kernel may
reorder weights, an accelerator kernel packs them). The AOT emitter only places the
constants, allocates the activations and calls the function; it never looks inside.

Providers are tried in order; the first that `supports(op)` wins. So a hand-written or
accelerator kernel takes any op's place by being listed before the generic one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import NncError


@dataclass
class Kernel:
    function: str                 # C function name
    source: str                   # C definition (static)
    # Argument list, in order: "in0", "in1", ... (activations), "out0", "const:<name>", or
    # "scratch" (a void* to scratch_bytes of the arena, live during this kernel only).
    args: list
    consts: dict = field(default_factory=dict)     # name -> np.ndarray (int8/int32/float32)
    provider: str = ""
    # Extra C (helpers shared by many kernels), keyed so that each is emitted once.
    prelude: dict = field(default_factory=dict)
    scratch_bytes: int = 0


class KernelProvider:
    name = "base"

    def supports(self, op) -> bool:
        raise NotImplementedError

    def emit(self, op, function: str) -> Kernel:
        raise NotImplementedError


def c_signature(function, decls, n_inputs=1):
    """The C prototype of a kernel: its inputs, its output, then `decls` (constants, scratch)."""
    ins = [f"const int8_t* input{i}" if n_inputs > 1 else "const int8_t* input" for i in range(n_inputs)]
    return f"static void {function}({', '.join(ins + ['int8_t* output'] + decls)})"


def kernel_args(consts, n_inputs=1):
    """Kernel.args for a kernel with the prototype of c_signature."""
    return [f"in{i}" for i in range(n_inputs)] + ["out0"] + [f"const:{k}" for k in consts]


def first_provider(op, providers):
    """The provider that would run `op`, or None."""
    return next((p for p in providers if p.supports(op)), None)


def select_kernels(ops, providers, prefix: str) -> dict:
    """id(op) -> Kernel for each of `ops`, using the first provider that supports it."""
    from ..ir import c_identifier
    kernels = {}
    for op in ops:
        p = first_provider(op, providers)
        if p is not None:
            kernels[id(op)] = p.emit(op, f"{prefix}_{c_identifier(op.name)}")
        else:
            names = ", ".join(p.name for p in providers)
            raise NncError(f"no kernel for op {op.kind} with attributes {op.attrs}",
                           f"layer '{op.name}'", f"kernel providers tried: {names}")
    return kernels


C_TYPES = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.float32): "float",
           np.dtype(np.uint8): "uint8_t", np.dtype(np.int16): "int16_t", np.dtype(np.uint32): "uint32_t"}
