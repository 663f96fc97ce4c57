"""The Target interface: what a target adds to the shared pipeline (nnc.compiler.compile).

    compile(model_or_graph, target)
      graph    = target.prepare(graph)          its own copy or lowering of the imported graph
      passes   = target.passes()                run in order on that graph, in place
      kernels  = target.kernel_providers()      tried in order, first that supports an op wins
      C        = AOT emitter + target.extra_header_api(graph) + target.extra_source(graph, plan)
      package  = target.package(compiled, graph) the files of its output folder (and its reports)

A new target subclasses Target in its own module or subpackage of nnc.targets; nothing else
changes (the frontends, the planner and the emitter know no target).
"""
from __future__ import annotations

from ..compiler import CompiledModel, Package
from ..ir import Graph


class Target:
    name = "base"
    golden_reference = ""
    # The kernel family named in the build identity; None: the target's name.
    kernel_choice = None
    # Whether a torch model is imported with state detection (nnc.frontend.state).
    stateful = False

    def prepare(self, graph: Graph) -> Graph:
        """The graph the pipeline changes (passes run on it in place): by default the one given."""
        return graph

    def passes(self) -> list:
        return []

    def kernel_providers(self) -> list:
        raise NotImplementedError

    def extra_header_api(self, graph: Graph) -> str:
        return ""

    def extra_source(self, graph: Graph, plan) -> str:
        return ""

    def package(self, compiled: CompiledModel, source_graph: Graph) -> Package:
        """The AOT C files: tvmgen_<name>.h/.c."""
        return Package(compiled, {compiled.prefix + ".h": compiled.header,
                                  compiled.prefix + ".c": compiled.source})
