"""The pipeline: IR graph -> passes -> memory plan -> kernels -> C files, for one target.

Data flows one way. A target supplies its passes and kernel providers (`nnc.targets`); the
planner and the AOT emitter are shared.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .codegen.aot import emit_header, emit_source
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


def _runs_fused(fused, providers) -> bool:
    """Fuse only where the kernel that would run the convolution can run the fused op too."""
    p = first_provider(conv_maxpool_parts(fused)[0], providers)
    return p is not None and p.supports(fused)


def compile_graph(graph: Graph, target, alignment: int = 8) -> CompiledModel:
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
    header = emit_header(graph, plan, target.extra_header_api(graph))
    source = emit_source(graph, plan, kernels, target.extra_source(graph, plan))
    return CompiledModel(graph, plan, kernels, header, source)
