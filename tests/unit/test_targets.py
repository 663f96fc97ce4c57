"""The Target interface and compile() -> Package, on hand-made graphs (no torch, no gcc)."""
import os

import numpy as np
import pytest

from nnc import outdir
from nnc.builder import graph_input, make_graph, relu, soma_conv2d, soma_dense
from nnc.compiler import Package, compile, compile_graph
from nnc.errors import NncError
from nnc.kernels.c_kernels import PortableCKernels
from nnc.targets.base import Target
from nnc.targets.cpu import CpuTarget
from nnc.targets.diana import DianaPackage, DianaTarget, compile_diana


def tiny_graph(name="tiny_net"):
    x = graph_input("x", (1, 2, 3, 3))
    return make_graph(name, relu(soma_dense(x, "fc", np.ones((4, 18), np.int8), shift_bits=2), "r"))


def conv_graph():
    x = graph_input("x", (1, 16, 8, 8))
    w = np.ones((16, 16, 3, 3), np.int8)
    return make_graph("conv_net", soma_conv2d(x, "conv", w, np.zeros(16, np.int32), padding=(1, 1),
                                              relu=True, shift_bits=6))


def test_cpu_package_is_the_aot_pair():
    pkg = compile(tiny_graph(), CpuTarget("c"))
    assert isinstance(pkg, Package)
    assert sorted(pkg.files) == ["tvmgen_tiny_net.c", "tvmgen_tiny_net.h"]
    assert pkg.files["tvmgen_tiny_net.c"] == pkg.compiled.source
    assert pkg.files["tvmgen_tiny_net.h"] == pkg.compiled.header


def test_compile_graph_is_compile_then_its_c():
    a, b = compile_graph(tiny_graph(), CpuTarget("c")), compile(tiny_graph(), CpuTarget("c")).compiled
    assert (a.header, a.source) == (b.header, b.source)


def test_package_write_makes_exactly_its_files(tmp_path):
    pkg = compile(tiny_graph(), CpuTarget("c"))
    pkg.files["sub/extra.txt"] = b"bytes too\n"
    out = tmp_path / "out"
    pkg.write(str(out))
    written = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
    assert written == sorted(list(pkg.files) + [outdir.MARKER])
    assert (out / "sub" / "extra.txt").read_bytes() == b"bytes too\n"
    assert (out / "tvmgen_tiny_net.c").read_text() == pkg.compiled.source


def test_package_write_refuses_a_folder_nnc_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(NncError, match="was not made by nnc"):
        compile(tiny_graph(), CpuTarget("c")).write(str(mine), "--out")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(mine)) == ["notes.txt"]


def test_diana_package_keeps_the_graph_as_built():
    g = conv_graph()
    ops_before = [op.kind for op in g.ops]
    pkg = compile_diana(g, warn=False)
    assert isinstance(pkg, DianaPackage) and isinstance(pkg.target, DianaTarget)
    assert pkg.source_graph is g and [op.kind for op in g.ops] == ops_before   # passes ran on a copy
    assert pkg.compiled.graph is not g
    assert sorted(pkg.files) == ["gen/tvmgen_conv_net.c", "gen/tvmgen_conv_net.h", "placement_report.txt"]
    assert pkg.files["placement_report.txt"] == pkg.report
    assert pkg.compiled.report["accelerator_macs"] == g.macs()


class RecordingTarget(Target):
    """A fourth target, written against the interface only: its own pass, header line, source
    line and package file."""
    name = "recording"

    def __init__(self):
        self.seen = []

    def prepare(self, graph):
        self.seen.append("prepare")
        return graph

    def passes(self):
        return [lambda graph: self.seen.append(f"pass on {graph.name}")]

    def kernel_providers(self):
        return [PortableCKernels()]

    def extra_header_api(self, graph):
        return "#define RECORDING_TARGET 1"

    def extra_source(self, graph, plan):
        return f"/* arena of {plan.arena_size} bytes */"

    def package(self, compiled, source_graph):
        pkg = super().package(compiled, source_graph)
        pkg.files["target.txt"] = self.name + "\n"
        return pkg


def test_a_new_target_plugs_in_through_the_interface():
    t = RecordingTarget()
    pkg = compile(tiny_graph("plug"), t)
    assert t.seen == ["prepare", "pass on plug"]
    assert "#define RECORDING_TARGET 1" in pkg.compiled.header
    assert f"/* arena of {pkg.compiled.plan.arena_size} bytes */" in pkg.compiled.source
    assert sorted(pkg.files) == ["target.txt", "tvmgen_plug.c", "tvmgen_plug.h"]
    assert " kernels=c " in compile(tiny_graph(), CpuTarget("c")).compiled.header
    assert " kernels=recording " in pkg.compiled.header       # the build identity names the target


def test_a_torch_model_needs_an_example_and_a_name():
    with pytest.raises(NncError, match="example input and a name"):
        compile(object(), CpuTarget("c"))
