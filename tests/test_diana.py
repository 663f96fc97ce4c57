"""DIANA target: partitioning, layout, packing, tiling, the bit-exact accelerator model, firmware.

Host: every graph's generated C + the HAL (firmware/diana/hal) built into a shared library with
gcc, run through cffi on >= 1000 inputs (4 edge cases + random int8) and compared with the numpy
reference (nnc.reference) byte for byte. QEMU: the RV32IMC firmware runs the demo application
(a few samples per graph, embedded) and must report zero mismatches and exit 0.
"""
import copy
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import ROOT
from diana_host import assert_bit_exact, build_host_library, inputs_for, quiet_compile

from nnc import reference
from nnc.builder import (flatten, graph_input, make_graph, maxpool2d, random_array, soma_add,
                         soma_conv2d, soma_dense)
from nnc.errors import NncError
from nnc.ir import OP_KINDS
from nnc.targets import diana
from nnc.targets.diana import (ACCEL, CPU, REVERSE, DianaFallbackWarning, compile_diana, hardware,
                               pack_weights, run_transformed, tiling)
from nnc.reports.diana import parse_results
from nnc.targets.diana import firmware as fw
from nnc.targets.diana.demo import DemoModel, create_demo_file, demo_inputs
from nnc.targets.diana.examples import EXAMPLES, example, htvm_grid

N_HOST = 1000          # random inputs per graph on the host (plus 4 edge cases)
N_QEMU = 8             # samples per seed graph in the emulated firmware
N_QEMU_GRID = 4        # samples per grid case in the emulated firmware


def placements(build):
    return {p.layer: p for p in build.target.placements}


# -- the seed's four graphs -----------------------------------------------------------------------

def test_seed_graphs_place_as_expected():
    for name in EXAMPLES:
        g = example(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            b = compile_diana(g)
        fallbacks = [str(w.message) for w in caught if issubclass(w.category, DianaFallbackWarning)]
        p = placements(b)
        if name == "two_layers_strided":
            assert p["conv1"].where == ACCEL and p["conv2"].where == CPU
            assert len(fallbacks) == 1
            assert "'conv2'" in fallbacks[0] and "strides (1, 2)" in fallbacks[0]
        else:
            assert fallbacks == [], fallbacks
            assert all(x.where == ACCEL for x in p.values()), name
        report = b.report
        assert "MACs on the accelerator" in report and g.name in report


@pytest.fixture(scope="module")
def seed_libs(tmp_path_factory):
    graphs = {name: example(name) for name in EXAMPLES}
    builds = [quiet_compile(g) for g in graphs.values()]
    libs = build_host_library(builds, str(tmp_path_factory.mktemp("diana_seed")))
    return graphs, libs


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_seed_graph_host_c_equals_reference(seed_libs, name):
    graphs, libs = seed_libs
    g = graphs[name]
    xs = inputs_for(g, N_HOST, seed=3)
    assert len(xs[0]) >= 1000
    expected = assert_bit_exact(libs[g.name], g, xs)
    inside = np.mean((expected > -128) & (expected < 127))
    assert inside > 0.3, f"{name}: only {inside:.0%} of outputs are not saturated: a weak test"


# -- HTVM's grid: the accelerator model --------------------------------------------------------

GRID = htvm_grid()


def test_grid_covers_htvm():
    names = [n for n, _ in GRID]
    for k in ("k7x7", "k5x5", "k3x3", "k1x1", "k7x5"):
        for s in ("s1", "s2"):
            for r in ("relu", "norelu"):
                assert f"conv_{k}_{s}_{r}" in names and f"dw_{k}_{s}_{r}" in names
    for extra in ("dense_relu", "dense_norelu", "add_relu", "add_norelu"):
        assert extra in names


@pytest.fixture(scope="module")
def grid_libs(tmp_path_factory):
    builds = [quiet_compile(g) for _, g in GRID]
    for b in builds:   # every grid op runs on the accelerator: the model is what is tested
        assert all(p.where == ACCEL for p in b.target.placements), b.report
    return build_host_library(builds, str(tmp_path_factory.mktemp("diana_grid")))


@pytest.mark.parametrize("name", [n for n, _ in GRID])
def test_grid_accelerator_model_equals_reference(grid_libs, name):
    g = dict(GRID)[name]
    xs = inputs_for(g, N_HOST, seed=5)
    expected = assert_bit_exact(grid_libs[name], g, xs)
    assert np.mean((expected > -128) & (expected < 127)) > 0.3


# -- tiling -----------------------------------------------------------------------------------------



def small_l1(graph):
    """L1 sizes that force the graph's one layer into several tiles but still admit one."""
    op = graph.ops[-1]
    if op.kind == "conv2d":
        geo = tiling.conv_geometry(op)
        kmin = min(16, geo["k"])
        ib, ob, wb = tiling.conv_tile_bytes(geo, kmin, 1)
        both = op.inputs[0].nbytes + op.output.nbytes
        return dict(l1_act=max(ib + ob, both // 3), l1_weights=wb)
    if op.kind == "dense":
        c = op.params["weight"].shape[1]
        return dict(l1_act=hardware.align4(c) + 16, l1_weights=16 * hardware.ceil16(c) * 16 + 64)
    return dict(l1_act=3 * op.output.size // 5)
TILED_GRID = ["conv_k3x3_s1_relu", "conv_k3x3_s2_norelu", "conv_k7x5_s2_relu", "conv_k7x7_s1_norelu",
              "dw_k5x5_s2_norelu", "dw_k7x5_s1_relu", "dense_relu", "add_norelu"]


@pytest.fixture(scope="module")
def small_l1_libs(tmp_path_factory):
    builds = []
    for name in TILED_GRID:
        b = quiet_compile(dict(GRID)[name], **small_l1(dict(GRID)[name]))
        t = [p.tiling for p in b.target.placements]
        assert all(x is not None and x.n_tiles > 1 for x in t), (name, b.report)
        builds.append(b)
    return build_host_library(builds, str(tmp_path_factory.mktemp("diana_small_l1")))


@pytest.mark.parametrize("name", TILED_GRID)
def test_tiles_through_a_small_l1_stay_bit_exact(small_l1_libs, name):
    g = dict(GRID)[name]
    assert_bit_exact(small_l1_libs[name], g, inputs_for(g, N_HOST, seed=9))


def big_depthwise():
    x = graph_input("input", (1, 64, 64, 64))            # 262144 B > L1 256000 B by itself
    w = random_array((64, 1, 3, 3), np.int8, seed=31, low=-8, high=8)
    return make_graph("big_depthwise", soma_conv2d(x, "dw", w, None, groups=64, shift_bits=4))


def big_weights():
    x = graph_input("input", (1, 64, 8, 8))
    w = random_array((128, 64, 3, 3), np.int8, seed=32, low=-4, high=4)   # 73728 B > 64000 B
    b = random_array((128,), np.int32, seed=33, low=-1000, high=1000)
    return make_graph("big_weights", soma_conv2d(x, "conv", w, b, relu=True, shift_bits=7))


def big_rows_strided():
    x = graph_input("input", (1, 16, 128, 128))          # 262144 B
    w = random_array((16, 16, 3, 3), np.int8, seed=34, low=-4, high=4)
    return make_graph("big_rows_strided",
                      soma_conv2d(x, "conv", w, None, strides=(2, 2), shift_bits=6))


# random inputs per big layer (each is 2.4M-9.4M MACs per inference)
BIG = {"big_depthwise": (big_depthwise, 200), "big_weights": (big_weights, 300),
       "big_rows_strided": (big_rows_strided, 60)}


@pytest.fixture(scope="module")
def big_libs(tmp_path_factory):
    builds = {}
    for name, (make, _) in BIG.items():
        b = quiet_compile(make())
        builds[name] = b
    return builds, build_host_library(list(builds.values()), str(tmp_path_factory.mktemp("diana_big")))


@pytest.mark.parametrize("name", list(BIG))
def test_layer_bigger_than_l1_is_tiled_and_bit_exact(big_libs, name):
    builds, libs = big_libs
    b = builds[name]
    op = b.compiled.graph.ops[[o.kind for o in b.compiled.graph.ops].index("conv2d")]
    t = op.attrs["diana_tiling"]
    assert not t.untiled and t.n_tiles > 1
    assert t.in_tile_bytes + t.out_tile_bytes <= diana.L1_ACT_BYTES
    assert t.weight_tile_bytes <= diana.L1_WEIGHT_BYTES
    g = b.source_graph
    in_out = g.inputs[0].nbytes + g.outputs[0].nbytes
    w = op.params["weight"].size
    assert in_out > diana.L1_ACT_BYTES or w > diana.L1_WEIGHT_BYTES
    assert_bit_exact(libs[g.name], g, inputs_for(g, BIG[name][1], seed=11))


def untileable():
    x = graph_input("input", (1, 512, 4, 4))
    w = random_array((16, 512, 3, 3), np.int8, seed=41)
    return make_graph("untileable", soma_conv2d(x, "huge_conv", w, None, shift_bits=8))


def test_untileable_layer_fails_with_name_and_sizes():
    with pytest.raises(NncError) as e:
        quiet_compile(untileable())
    msg = e.value.format()
    assert "huge_conv" in msg
    assert "73792 B" in msg and "64000 B" in msg        # the smallest weight tile vs L1
    assert "512x4x4 = 8192 B" in msg


def test_cli_untileable_fails_and_leaves_nothing(tmp_path):
    script = tmp_path / "big.py"
    script.write_text(
        "import numpy as np\n"
        "from nnc.builder import graph_input, make_graph, random_array, soma_conv2d\n"
        "def create_model():\n"
        "    x = graph_input('input', (1, 512, 4, 4))\n"
        "    w = random_array((16, 512, 3, 3), np.int8, seed=41)\n"
        "    return make_graph('untileable', soma_conv2d(x, 'huge_conv', w, None, shift_bits=8))\n")
    out = tmp_path / "out"
    # a stale build of the same name must not survive the failure
    ok = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "diana_compile.py"), "--graph",
                         "single_layer", "--out", str(out), "--quiet", "--samples", "1"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (out / "placement_report.txt").exists()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "diana_compile.py"), "--script",
                        str(script), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 2
    assert "huge_conv" in p.stderr and "B" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-diana")]


# -- partitioning constraints ----------------------------------------------------------------------

def test_tensor_not_divisible_by_4_falls_back_with_warning(tmp_path):
    x = graph_input("input", (1, 3, 5, 5))                # 75 elements
    w = random_array((4, 3, 3, 3), np.int8, seed=51, low=-8, high=8)
    y = soma_conv2d(x, "odd_conv", w, None, relu=True, shift_bits=3)
    w2 = random_array((8, 4, 3, 3), np.int8, seed=52, low=-8, high=8)
    z = soma_conv2d(y, "even_conv", w2, None, shift_bits=4)   # 4x5x5 = 100 -> 8x5x5 = 200: accel
    g = make_graph("odd_size", z)
    with pytest.warns(DianaFallbackWarning, match=r"'odd_conv'.*75 elements, not a multiple of 4"):
        b = compile_diana(g)
    p = placements(b)
    assert p["odd_conv"].where == CPU and p["even_conv"].where == ACCEL
    libs = build_host_library([b], str(tmp_path))
    assert_bit_exact(libs["odd_size"], g, inputs_for(g, N_HOST))


@pytest.mark.parametrize("kind,kwargs,needle", [
    ("kernel", dict(shape=(8, 8, 2, 2), padding=(1, 1)), "kernel 2x2"),
    ("stride", dict(shape=(8, 8, 3, 3), strides=(2, 1)), "strides (2, 1)"),
    ("padding", dict(shape=(8, 8, 3, 3), padding=(0, 0)), "padding (0, 0)"),
    ("dilation", dict(shape=(8, 8, 3, 3), dilation=(2, 2), padding=(2, 2)), "dilation (2, 2)"),
    ("groups", dict(shape=(8, 4, 3, 3), groups=2), "groups 2"),
])
def test_each_conv_constraint_names_layer_and_rule(kind, kwargs, needle):
    x = graph_input("input", (1, 8, 8, 8))
    shape = kwargs.pop("shape")
    w = random_array(shape, np.int8, seed=3, low=-4, high=4)
    g = make_graph(f"bad_{kind}", soma_conv2d(x, f"bad_{kind}_conv", w, None, shift_bits=4, **kwargs))
    with pytest.warns(DianaFallbackWarning) as rec:
        b = compile_diana(g)
    msgs = [str(r.message) for r in rec]
    assert any(f"'bad_{kind}_conv'" in m and needle in m for m in msgs), msgs
    assert placements(b)[f"bad_{kind}_conv"].where == CPU
    assert np.array_equal(run_transformed(b.compiled.graph, inputs_for(g, 20)),
                          reference.run(g, inputs_for(g, 20)))


def test_pooling_is_never_offloaded():
    x = graph_input("input", (1, 8, 8, 8))
    y = soma_conv2d(x, "conv", random_array((8, 8, 3, 3), np.int8, seed=1, low=-4, high=4), None,
                    relu=True, shift_bits=5)
    g = make_graph("with_pool", maxpool2d(y, "pool", 2))
    with pytest.warns(DianaFallbackWarning, match="'pool'.*pooling is never offloaded"):
        b = compile_diana(g)
    assert placements(b)["pool"].where == CPU and placements(b)["conv"].where == ACCEL


# -- layout: word reversal ------------------------------------------------------------------------

def reversals(build):
    return [op for op in build.compiled.graph.ops if op.kind == REVERSE]


def test_reversal_pairs_cancel_between_accelerator_layers():
    b = quiet_compile(example("two_layers"))
    lay = b.target.layout
    assert lay.inserted == 4 and lay.cancelled_pairs == 1
    assert [op.name for op in reversals(b)] == ["conv1.reverse_in0", "conv2.reverse_out"]
    # a CPU layer in between keeps its reversals
    b = quiet_compile(example("two_layers_strided"))
    assert b.target.layout.cancelled_pairs == 0 and len(reversals(b)) == 2


def test_shared_input_reversal_is_merged():
    b = quiet_compile(example("two_layers_and_residual"))
    lay = b.target.layout
    assert lay.inserted == 7 and lay.cancelled_pairs == 2 and lay.merged == 1
    assert [op.name for op in reversals(b)] == ["conv1.reverse_in0", "add.reverse_out"]


def conv_flatten_dense():
    x = graph_input("input", (1, 4, 8, 8))
    y = soma_conv2d(x, "conv", random_array((8, 4, 3, 3), np.int8, seed=61, low=-8, high=8), None,
                    relu=True, shift_bits=5)
    z = soma_dense(y, "fc", random_array((12, 512), np.int8, seed=62, low=-4, high=4),
                   random_array((12,), np.int32, seed=63, low=-100, high=100), shift_bits=8)
    return make_graph("conv_flatten_dense", z)


def test_reversals_cancel_across_a_reshape(tmp_path):
    g = conv_flatten_dense()
    b = quiet_compile(g)
    lay = b.target.layout
    assert "fc.flatten" in lay.moved_across
    assert [op.name for op in reversals(b)] == ["conv.reverse_in0", "fc.reverse_out"]
    xs = inputs_for(g, N_HOST)
    assert np.array_equal(run_transformed(b.compiled.graph, xs)[0], reference.run(g, xs)[0])
    libs = build_host_library([b], str(tmp_path))
    assert_bit_exact(libs[g.name], g, xs)


def test_reversals_cancel_across_a_cpu_relu(tmp_path):
    from nnc.builder import relu
    x = graph_input("input", (1, 8, 6, 6))
    y = soma_conv2d(x, "conv1", random_array((8, 8, 3, 3), np.int8, seed=81, low=-8, high=8), None,
                    shift_bits=5)
    y = relu(y, "act")                     # standalone: runs on the RISC-V core, on reversed data
    z = soma_conv2d(y, "conv2", random_array((4, 8, 1, 1), np.int8, seed=82, low=-8, high=8), None,
                    shift_bits=4)
    g = make_graph("relu_between", z)
    with pytest.warns(DianaFallbackWarning, match="'act'.*standalone ReLU"):
        b = compile_diana(g)
    assert b.target.layout.moved_across == ["act"]
    assert [op.name for op in reversals(b)] == ["conv1.reverse_in0", "conv2.reverse_out"]
    libs = build_host_library([b], str(tmp_path))
    assert_bit_exact(libs[g.name], g, inputs_for(g, N_HOST))


def test_transformed_graphs_keep_their_meaning():
    """The interpreter of the transformed graph (explicit reversals) equals the reference."""
    for name, g in [(n, example(n)) for n in EXAMPLES] + GRID[:6]:
        b = quiet_compile(g)
        xs = inputs_for(g, 30)
        assert np.array_equal(run_transformed(b.compiled.graph, xs)[0], reference.run(g, xs)[0]), name


# -- weight packing ---------------------------------------------------------------------------------

def _word_reversed(blob, i):
    return blob[i ^ 3]


def test_conv_weight_packing_layout():
    x = graph_input("input", (1, 3, 8, 8))
    w = random_array((20, 3, 3, 5), np.int8, seed=71)
    bias = np.array([-(1 << 20) - 7, 1 << 24] + list(range(18)), np.int32)
    g = make_graph("pack", soma_conv2d(x, "conv", w, bias, padding=(1, 2)))
    op = g.ops[0]
    blob = pack_weights(op)
    kp = 32
    assert blob.size == kp * 3 * 3 * 5 + 4 * kp
    for k in range(kp):
        for c in range(3):
            for fy in range(3):
                for fx in range(5):
                    i = ((((k // 16) * 3 + c) * 3 + fy) * 5 + fx) * 16 + k % 16
                    want = w[k, c, fy, fx] if k < 20 else 0
                    assert _word_reversed(blob, i) == want
    base = kp * 3 * 3 * 5
    raw = blob.view(np.uint8)
    for k in range(kp):
        be = int.from_bytes(bytes(raw[base + 4 * k: base + 4 * k + 4]), "big", signed=True)
        assert be == (bias[k] if k < 20 else 0)


def test_depthwise_and_dense_packing():
    x = graph_input("input", (1, 16, 4, 4))
    w = random_array((16, 1, 3, 3), np.int8, seed=72)
    op = make_graph("dw", soma_conv2d(x, "dw", w, None, groups=16)).ops[0]
    blob = pack_weights(op)
    assert blob.size == 16 * 4 * 9 + 64
    for k in range(16):
        for slot in range(4):
            for t in range(9):
                v = _word_reversed(blob, (slot * 9 + t) * 16 + k)
                assert v == (w[k, 0].reshape(-1)[t] if slot == 0 else 0)
    x = graph_input("input", (1, 20))
    wd = random_array((5, 20), np.int8, seed=73)
    op = make_graph("fc", soma_dense(x, "fc", wd)).ops[0]
    blob = pack_weights(op)
    assert blob.size == 16 * 32 + 64
    for k in range(16):
        for c in range(32):
            want = wd[k, c] if k < 5 and c < 20 else 0
            assert _word_reversed(blob, c * 16 + k) == want


# -- the package: one module per step, the IR closed at import time ---------------------------------

def test_the_layout_op_is_declared_by_the_ir_not_by_importing_diana():
    code = ("import sys\n"
            "from nnc import ir\n"
            "before = dict(ir.OP_KINDS)\n"
            "assert 'reverse_words' in before\n"
            "import nnc.targets.diana\n"
            "assert ir.OP_KINDS == before, 'importing DIANA changed ir.OP_KINDS'\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools")))
    assert p.returncode == 0, p.stderr
    assert hardware.REVERSE in OP_KINDS


def _module_imports(path):
    """(line, module, names, at module level) of every relative or nnc import in a file."""
    import ast
    tree = ast.parse(open(path).read())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("nnc")):
            yield node.lineno, node.level, node.module, [a.name for a in node.names], id(node) in top


def test_diana_package_imports_flow_one_way_without_private_names():
    """No function-level imports, no private names across modules, and no module imports one
    that comes later in the package's order (so there is no cycle)."""
    order = ["hardware", "partition", "tiling", "packing", "layout", "kernels", "target",
             "firmware", "demo", "examples"]
    pkg = os.path.dirname(diana.__file__)
    assert sorted(order + ["__init__"]) == sorted(f[:-3] for f in os.listdir(pkg) if f.endswith(".py"))
    for i, name in enumerate(order):
        for line, level, module, names, at_top in _module_imports(os.path.join(pkg, name + ".py")):
            where = f"{name}.py:{line}"
            assert at_top, f"{where}: function-level import of {module}"
            assert not [n for n in names if n.startswith("_")], f"{where}: private name from {module}"
            if level == 1:
                assert module in order[:i], f"{where}: imports .{module}, which comes later"


# -- CLI and report -------------------------------------------------------------------------------

def test_cli_help_and_report_next_to_build(tmp_path):
    cli = os.path.join(ROOT, "tools", "diana_compile.py")
    h = subprocess.run([sys.executable, cli, "--help"], capture_output=True, text=True)
    assert h.returncode == 0 and "--graph" in h.stdout and "--script" in h.stdout
    out = tmp_path / "b"
    p = subprocess.run([sys.executable, cli, "--graph", "two_layers_strided", "--out", str(out),
                        "--samples", "2"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "warning: DIANA: layer 'conv2'" in p.stderr and "strides (1, 2)" in p.stderr
    assert "DIANA placement report" in p.stdout
    report = (out / "placement_report.txt").read_text()
    assert "conv2" in report and "RISC-V" in report and "42.9%" in report
    summary = json.loads((out / "placement.json").read_text())
    assert summary["accelerator_macs"] == 884736
    assert (out / "gen" / "tvmgen_two_layers_strided.c").exists()
    assert "DEMO" in (out / "app" / "demo.c").read_text()
    bad = subprocess.run([sys.executable, cli, "--graph", "nope", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "single_layer" in bad.stderr and not (tmp_path / "x").exists()


def test_builder_rejects_mistakes():
    x = graph_input("input", (1, 3, 8, 8))
    with pytest.raises(NncError, match="do not fit input channels"):
        soma_conv2d(x, "c", np.zeros((4, 2, 3, 3), np.int8))
    y = soma_conv2d(x, "c", np.zeros((4, 3, 3, 3), np.int8))
    with pytest.raises(NncError, match="two layers are named"):
        soma_conv2d(y, "c", np.zeros((4, 4, 3, 3), np.int8))
    other = graph_input("input", (1, 4, 8, 8))
    with pytest.raises(NncError, match="two different graphs"):
        soma_add(y, other, "add")
    f = flatten(y, "flat")
    assert f.shape == (1, 256) and f.alias_of is y


# -- RV32 firmware under QEMU -----------------------------------------------------------------------

@pytest.fixture
def riscv_tools():
    """`./scons host test` installs the RV32 toolchain and QEMU; their absence is a failure."""
    missing = fw.toolchain_missing()
    if missing is not None:
        pytest.fail(f"{missing} is not installed (apt-get install --no-install-recommends "
                    "gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf qemu-system-misc)")


needs_riscv = pytest.mark.usefixtures("riscv_tools")


def run_demo_firmware(tmp_path, models, name):
    gen_dirs = []
    for m in models:
        d = str(tmp_path / "gen" / m.build.compiled.graph.name)
        m.build.compiled.write(d)
        gen_dirs.append(d)
    demo = create_demo_file(models, str(tmp_path / "app" / "demo.c"))
    elf = fw.build_firmware(gen_dirs, demo, str(tmp_path / f"{name}.elf"))
    return fw.run_qemu(elf)


def demo_model(g, n, **kw):
    b = quiet_compile(g, **kw)
    xs = demo_inputs(g, n, seed=17)
    return DemoModel(b, xs, reference.run(g, xs)[0])


def check_results(rc, out, models):
    assert rc == 0, out[-3000:]
    results = {r["model"]: r for r in parse_results(out)}
    assert set(results) == {m.build.compiled.graph.name for m in models}
    for m in models:
        r = results[m.build.compiled.graph.name]
        assert r["mismatches"] == 0 and r["hal_error"] == 0 and r["samples"] == len(m.expected)
        for layer in r["layers"]:
            assert layer["instructions"] > 0
            if layer["where"] == "accelerator":   # the HAL's counters equal the compiler's estimate
                assert layer["cycles"] == layer["est_cycles"] > 0
    assert "DEMO: PASS" in out
    return results


@needs_riscv
def test_firmware_seed_graphs_under_qemu(tmp_path):
    models = [demo_model(example(n), N_QEMU) for n in EXAMPLES]
    rc, out = run_demo_firmware(tmp_path, models, "seed")
    results = check_results(rc, out, models)
    strided = {l["name"]: l for l in results["two_layers_strided"]["layers"]}
    assert strided["conv2"]["where"] == "cpu" and strided["conv2"]["instructions"] > 1_000_000


@needs_riscv
def test_firmware_htvm_grid_under_qemu(tmp_path):
    models = [demo_model(g, N_QEMU_GRID) for _, g in GRID]
    for n in TILED_GRID[:4]:
        g = copy.deepcopy(dict(GRID)[n])
        g.name = n + "_tiled"
        models.append(demo_model(g, N_QEMU_GRID, **small_l1(g)))
    models.append(demo_model(conv_flatten_dense(), N_QEMU_GRID))
    rc, out = run_demo_firmware(tmp_path, models, "grid")
    check_results(rc, out, models)


@needs_riscv
def test_firmware_reports_a_mismatch_with_a_failing_exit(tmp_path):
    m = demo_model(example("single_layer"), 2)
    m.expected = m.expected.copy()
    m.expected[1].flat[5] ^= 1
    rc, out = run_demo_firmware(tmp_path, [m], "broken")
    assert rc != 0
    assert "1 mismatching bytes" in out and "DEMO: FAIL" in out
