"""The pipeline: IR graph -> passes -> memory plan -> kernels -> C files, for one target.

Data flows one way. A target supplies its passes and kernel providers (`nnc.targets`); the
planner and the AOT emitter are shared.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import identity
from .codegen.aot import emit_header, emit_source
from .errors import NncError
from .ir import Graph, c_identifier
from .kernels import first_provider, select_kernels
from .outdir import write_file
from .passes import conv_maxpool_parts, fuse_conv_maxpool
from .planner import MemoryPlan, alias_moves, plan_memory


@dataclass
class CompiledModel:
    graph: Graph
    plan: MemoryPlan
    kernels: dict
    header: str
    source: str
    report: dict = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return f"tvmgen_{c_identifier(self.graph.name)}"

    def write(self, out_dir: str) -> list:
        """Write tvmgen_<name>.h/.c into out_dir, each atomically: readers never see half a file.
        A tool that owns a whole output folder writes through nnc.outdir.output_dir."""
        return [write_file(os.path.join(out_dir, self.prefix + suffix), text)
                for suffix, text in ((".h", self.header), (".c", self.source))]


def resolve_reshapes(graph: Graph) -> None:
    """Moves alias their input, except where the result must land in a caller's buffer."""
    outputs = {id(t) for t in graph.outputs}
    for op in graph.ops:
        out = op.output
        if id(out) in outputs and out.alias_of is not None:
            src = out.alias_of.storage()
            if not any(src is t for t in graph.outputs):
                out.alias_of, out.alias_offset = None, 0   # own storage: the kernel copies the bytes


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


def _runs_fused(fused, providers) -> bool:
    """Fuse only where the fused op runs on the same family of kernels as the convolution would
    (e.g. m7: a first layer that m7_small_k would take alone still fuses with its pool on the m7
    conv kernel, which never stores the convolution's output)."""
    p = first_provider(conv_maxpool_parts(fused)[0], providers)
    q = first_provider(fused, providers)
    return p is not None and q is not None and q.name == p.name


def compile_graph(graph: Graph, target, alignment: int = 8) -> CompiledModel:
    check_batch_one(graph)
    model_hash = identity.graph_sha256(graph)     # before the target's passes: kernel-independent
    for p in target.passes():
        p(graph)
    providers = target.kernel_providers()
    fuse_conv_maxpool(graph, lambda fused: _runs_fused(fused, providers))
    alias_moves(graph)
    resolve_reshapes(graph)
    graph.validate()
    # Aliasing moves move no data: they get no kernel and no call.
    moving = [op for op in graph.ops if op.output.alias_of is None]
    kernels = select_kernels(moving, providers, f"tvmgen_{c_identifier(graph.name)}")
    scratch = {step: kernels[id(op)].scratch_bytes for step, op in enumerate(graph.ops)
               if id(op) in kernels}
    plan = plan_memory(graph, alignment, scratch)
    prefix = f"tvmgen_{c_identifier(graph.name)}"
    source = emit_source(graph, plan, kernels, target.extra_source(graph, plan))
    ident = identity.identity(prefix, graph, getattr(target, "kernel_choice", target.name), model_hash,
                              source)
    header = emit_header(graph, plan, target.extra_header_api(graph), ident)
    source += "\n" + identity.c_definition(prefix, ident)
    return CompiledModel(graph, plan, kernels, header, source)
