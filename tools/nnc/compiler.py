"""The pipeline: model or IR graph -> target passes -> memory plan -> kernels -> C -> package.

    package = compile(graph, CpuTarget("m7"))          # or a quantized torch model + example_input
    package.write("out/")                              # the target's files, all or nothing

Data flows one way. A target (`nnc.targets.base.Target`) supplies its passes, kernel providers,
extra header and source lines and its package; the planner and the AOT emitter are shared.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import identity
from .codegen.aot import emit_header, emit_source
from .errors import NncError
from .ir import Graph, c_identifier, check_batch_one
from .kernels import first_provider, select_kernels
from .outdir import output_dir, write_file
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


@dataclass
class Package:
    """What a target makes of one model: the compiled C and the files of its output folder
    (relative path -> str or bytes). A target's package may carry more (reports, images)."""
    compiled: CompiledModel
    files: dict

    @property
    def prefix(self) -> str:
        return self.compiled.prefix

    def write(self, out_dir: str, where: str = "--out") -> str:
        """(Re)create out_dir with exactly `files`, all or nothing, and only if nnc made it
        (nnc.outdir); `where` names the option or key the folder came from. Returns its path."""
        with output_dir(out_dir, where) as staging:
            for name, data in sorted(self.files.items()):
                write_file(os.path.join(staging, name), data)
        return os.path.abspath(out_dir)


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
    """Fuse only where the fused op runs on the same family of kernels as the convolution would
    (e.g. m7: a first layer that m7_small_k would take alone still fuses with its pool on the m7
    conv kernel, which never stores the convolution's output)."""
    p = first_provider(conv_maxpool_parts(fused)[0], providers)
    q = first_provider(fused, providers)
    return p is not None and q is not None and q.name == p.name


def as_graph(model_or_graph, target, example_input=None, name: str = None) -> Graph:
    """The IR graph of a Graph, a loaded model file (nnc.frontend.model_files.LoadedModel) or an
    eager quantized torch model (imported with state detection when the target keeps states)."""
    if isinstance(model_or_graph, Graph):
        return model_or_graph
    if callable(getattr(model_or_graph, "graph", None)):
        return model_or_graph.graph()
    if example_input is None or not name:
        raise NncError("a torch model needs an example input and a name to be compiled",
                       f"compile(..., {target.name})", "pass example_input= and name=, or an IR graph")
    if target.stateful:
        from .frontend.state import import_stateful_model
        return import_stateful_model(model_or_graph, example_input, name)
    from .frontend.torch_eager import import_torch_model
    return import_torch_model(model_or_graph, example_input, name)


def compile(model_or_graph, target, example_input=None, name: str = None,   # noqa: A001
            alignment: int = 8):
    """Compile a model (see `as_graph`) for `target` -> the target's Package (nothing written)."""
    graph = as_graph(model_or_graph, target, example_input, name)
    compiled = generate_c(target.prepare(graph), target, alignment)
    return target.package(compiled, graph)


def compile_graph(graph: Graph, target, alignment: int = 8) -> CompiledModel:
    """The compiled C of `graph` for `target` (compile(...).compiled)."""
    return compile(graph, target, alignment=alignment).compiled


def generate_c(graph: Graph, target, alignment: int = 8) -> CompiledModel:
    """The shared pipeline on a graph the target prepared (changed in place by its passes)."""
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
    ident = identity.identity(prefix, graph, target.kernel_choice or target.name, model_hash, source)
    header = emit_header(graph, plan, target.extra_header_api(graph), ident)
    source += "\n" + identity.c_definition(prefix, ident)
    return CompiledModel(graph, plan, kernels, header, source)
