"""PT2E frontend: NncQuantizer programs and other quantizers' programs -> C, bit-exact against
nnc.reference (>= 1000 inputs: edge values, random, real digits), qnnpack where it has the kernel,
and the mismatch count against the float-simulated converted program (printed, in the README).
Model files: .pt2 round trip, factory file, bad files (clean error, exit 2, nothing written)."""
import json
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT, build_host_library, edge_and_random_inputs

from nnc import reference
from nnc.errors import NncError
from nnc.frontend.model_files import load_model
from nnc.frontend.pt2e import import_pt2e, run_pt2e_int8
from nnc.frontend.pt2e_quantizer import NncQuantizer, pt2e_api, quantize_pt2e
from nnc.frontend.torch_eager import quantize_like_torch

ZOO = ["lenet5_pt2e", "residual_cnn_pt2e", "dwsep_pt2e"]


def inputs_for(graph, n_random=800, seed=3):
    """Edge values, random int8 and >= 200 real held-out digits, quantized like the input step."""
    x = edge_and_random_inputs(graph.inputs[0].shape, n_random, seed)
    if graph.inputs[0].shape[1:] == (1, 28, 28):
        from models.registry import get
        held = get("lenet5").heldout().x[:300].reshape(-1, 1, 28, 28)
        x = np.concatenate([x, quantize_like_torch(held, graph.inputs[0].qparams)])
    assert len(x) >= 1000
    return x


@pytest.fixture(scope="module", params=ZOO)
def zoo_program(request):
    m = load_model(request.param, progress=False)
    return request.param, m, m.graph()


@pytest.mark.parametrize("kernels", ["c", "m7"])
def test_zoo_pt2e_c_equals_reference(zoo_program, kernels, tmp_path):
    name, m, graph = zoo_program
    import copy
    g = copy.deepcopy(graph)
    _, lib, _ = build_host_library(g, kernels, tmp_path, name)
    x = inputs_for(graph)
    expected = reference.run(graph, [x])[0]
    got = lib.run(x)
    assert int(np.count_nonzero(got != expected)) == 0, f"{name} ({kernels}): C != nnc.reference"
    # Against the converted program itself (float conv/linear between quantize steps): reported.
    program = m.run_int8([x])[0]
    diff = np.abs(program.astype(int) - got.astype(int))
    print(f"\n{name}: vs the float-simulated PT2E program: {int(np.count_nonzero(diff))} of "
          f"{diff.size} elements differ, max abs diff {int(diff.max())}")


def test_zoo_pt2e_top1_equals_program(zoo_program):
    name, m, graph = zoo_program
    from models.registry import get
    held = get("lenet5").heldout()
    x = quantize_like_torch(held.x.reshape(-1, 1, 28, 28), graph.inputs[0].qparams)
    ours = reference.run(graph, [x])[0].argmax(1)
    theirs = m.run_int8([x])[0].argmax(1)
    acc_ours, acc_prog = float((ours == held.y).mean()), float((theirs == held.y).mean())
    from models import pt2e_zoo
    with torch.no_grad():
        float_top1 = pt2e_zoo.MODELS[name].load_float()(torch.from_numpy(held.x)).argmax(1).numpy()
    acc_float = float((float_top1 == held.y).mean())
    print(f"\n{name}: top-1 on {len(x)} held-out digits: float {acc_float:.2%}, PT2E program "
          f"{acc_prog:.2%}, C/reference {acc_ours:.2%}")
    assert acc_ours == acc_prog
    assert acc_float >= 0.9 and acc_ours >= 0.9, f"{name} is weakly trained"


def test_qnnpack_oracle_on_pt2e_layers(zoo_program):
    name, m, graph = zoo_program
    assert qnnpack_oracle_layers(graph, inputs_for(graph)[:200]) >= 2


def qnnpack_oracle_layers(graph, x) -> int:
    """Every conv/linear of the program, run by torch's quantized qnnpack kernel with the same
    parameters (weights, scales, zero points, bias as the float the int32 bias stands for),
    equals the reference layer by layer. Returns how many layers were checked."""
    torch.backends.quantized.engine = "qnnpack"
    _, values = reference.run(graph, [x], capture=True)
    env = {graph.inputs[0].name: x}
    env.update(values)
    checked = 0
    for op in graph.ops:
        if op.kind not in ("conv2d", "dense") or op.params["weight_zp"].any():
            continue
        src, out = op.inputs[0], op.output
        w_scale = np.asarray(op.attrs["weight_scales"], np.float64)
        w = torch._make_per_channel_quantized_tensor(
            torch.from_numpy(op.params["weight"].astype(np.int8)), torch.from_numpy(w_scale),
            torch.zeros(len(w_scale), dtype=torch.int64), 0)
        bias = torch.from_numpy(op.params["bias"].astype(np.float64) * w_scale * src.qparams.scale).float()
        xin = torch.from_numpy(env[src.name].astype(np.int16) + 128).to(torch.uint8)
        xq = torch._make_per_tensor_quantized_tensor(xin, src.qparams.scale, src.qparams.zero_point + 128)
        a = op.attrs
        if op.kind == "conv2d":
            mod = torch.ao.nn.quantized.Conv2d(w.shape[1] * a["groups"], w.shape[0], tuple(w.shape[2:]),
                                               a["stride"], a["padding"], a["dilation"], a["groups"])
        else:
            mod = torch.ao.nn.quantized.Linear(w.shape[1], w.shape[0])
        mod.set_weight_bias(w, bias)
        mod.scale, mod.zero_point = out.qparams.scale, out.qparams.zero_point + 128
        y = mod(xq).int_repr().numpy().astype(np.int16) - 128
        y = np.clip(y, *a["clamp"]).astype(np.int8)
        assert np.array_equal(y, env[out.name]), f"{graph.name}: layer {op.name} differs from qnnpack"
        checked += 1
    return checked


def check_imported_program(prog, graph, x, tmp_path, what):
    """The checks every imported third-party program gets: its C (host library) equals
    nnc.reference on all of x with 0 mismatches; at least two of its conv/linear layers equal
    torch's qnnpack kernel with the same parameters; the mismatch count and max abs diff against
    the float-simulated PT2E program are printed (reported, not asserted: the program's float
    arithmetic is not the integer contract). Returns the reference's outputs."""
    _, lib, _ = build_host_library(graph, "c", tmp_path, graph.name)
    ref = reference.run(graph, [x])[0]
    assert int(np.count_nonzero(lib.run(x) != ref)) == 0
    assert qnnpack_oracle_layers(graph, x[:200]) >= 2
    diff = np.abs(run_pt2e_int8(prog, [x], [graph.inputs[0].qparams])[0].astype(int) - ref)
    print(f"\n{what}: {int(np.count_nonzero(diff))} of {diff.size} elements differ from the "
          f"float-simulated program, max abs diff {int(diff.max())}")
    return ref


def small_ffn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 1)).eval()


def test_ffn_pt2e_c_equals_reference(tmp_path):
    x0 = torch.rand(1, 2)
    prog = quantize_pt2e(small_ffn(), x0, [torch.rand(1, 2) * 2 - 1 for _ in range(200)], progress=False)
    graph = import_pt2e(prog, "ffn_pt2e")
    _, lib, _ = build_host_library(graph, "c", tmp_path, "ffn_pt2e")
    x = edge_and_random_inputs(graph.inputs[0].shape, 2000, 4)
    assert int(np.count_nonzero(lib.run(x) != reference.run(graph, [x])[0])) == 0


# -- other quantizers ---------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.c2 = nn.Conv2d(4, 8, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.max_pool2d(F.hardtanh(self.dw(x), 0.0, 6.0) + x, 2)
        return F.max_pool2d(F.relu(self.c2(x)), 2)


def _convert(model, quantizer, fold=True):
    api = pt2e_api()
    x = torch.randn(1, 1, 28, 28)
    m = api.prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
    torch.manual_seed(2)
    for _ in range(16):
        m(torch.randn(1, 1, 28, 28))
    return api.convert_pt2e(m, fold_quantize=fold), x


@pytest.mark.parametrize("fold", [True, False])
def test_xnnpack_quantizer_program_imports(fold, tmp_path):
    """Symmetric weights in [-127, 127], a standalone hardtanh, float weight copies (fold=False)."""
    from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    torch.manual_seed(0)
    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prog, x0 = _convert(Block().eval(), q, fold)
    graph = import_pt2e(prog, "xnn", x0)
    x = edge_and_random_inputs(graph.inputs[0].shape, 1000, 7)
    check_imported_program(prog, graph, x, tmp_path, f"XNNPACK-style program (fold={fold})")


class DepthwiseBlock(nn.Module):
    """A MobileNet-style block as the x86 quantizer quantizes it end to end: stem, depthwise and
    pointwise convolutions with ReLU, a float max pool between the pointwise conv and its quantize
    step, a classifier."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = F.relu(self.dw(F.relu(self.stem(x))))
        return self.fc(torch.flatten(F.max_pool2d(F.relu(self.pw(x)), 2), 1))


def _x86_quantizer(outputs=True):
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    from nnc.frontend.pt2e_quantizer import QuantizedOutputs
    x86 = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    return ComposableQuantizer([x86, QuantizedOutputs()]) if outputs else x86


def _x86_program(model, example, calibration, outputs=True):
    api = pt2e_api()
    m = api.prepare_pt2e(torch.export.export(model.eval(), (example,)).module(), _x86_quantizer(outputs))
    with torch.no_grad():
        for c in calibration:
            m(c.reshape(example.shape))
    return torch.export.export(api.convert_pt2e(m), (example,))


def _x86_case(which):
    """(program, example) for an x86-quantized network: real weights and digits where the zoo has them."""
    from models import pt2e_zoo
    torch.manual_seed(0)
    if which == "ffn":
        return _x86_program(small_ffn(), torch.rand(1, 2), [torch.rand(1, 2) * 2 - 1 for _ in range(200)])
    spec = pt2e_zoo.MODELS["lenet5_pt2e"]
    calib = [torch.as_tensor(c) for c in spec.calibration_inputs(64)]
    model = spec.load_float() if which == "lenet5" else DepthwiseBlock()
    return _x86_program(model, torch.as_tensor(spec.example_input()), calib)


@pytest.mark.parametrize("which", ["lenet5", "depthwise_block", "ffn"])
def test_x86_quantizer_program_imports(which, tmp_path):
    """torchao's X86InductorQuantizer: uint8 activations, int8 weights in [-128, 127], float biases,
    relu and max pool in float between a conv and its quantize step (computed in integers after
    it: quantizing commutes with them). C == nnc.reference on >= 1000 inputs, 0 mismatches; each
    conv/linear equals torch's qnnpack kernel with the same parameters."""
    prog = _x86_case(which)
    graph = import_pt2e(prog, f"x86_{which}")
    x = inputs_for(graph) if which != "ffn" else edge_and_random_inputs(graph.inputs[0].shape, 1000, 5)
    check_imported_program(prog, graph, x, tmp_path, f"x86 quantizer, {which}")
    if which == "lenet5":
        from models.registry import get
        held = get("lenet5").heldout()
        xh = quantize_like_torch(held.x.reshape(-1, 1, 28, 28), graph.inputs[0].qparams)
        ours = float((reference.run(graph, [xh])[0].argmax(1) == held.y).mean())
        theirs = float((run_pt2e_int8(prog, [xh], [graph.inputs[0].qparams])[0].argmax(1) == held.y).mean())
        print(f"x86 lenet5: top-1 on {len(xh)} held-out digits: C/reference {ours:.2%}, program {theirs:.2%}")
        assert ours == theirs


@pytest.mark.parametrize("name, node, op, line", [
    # conv2's float output goes straight into the add (the x86 backend fuses conv + add)
    ("residual_cnn_pt2e", "add", "conv2d", "y + self.conv2(y)"),
    # the float relu6 output is averaged before any quantize step
    ("dwsep_pt2e", "adaptive_avg_pool2d", "relu6", "F.adaptive_avg_pool2d(x, 1)"),
])
def test_x86_quantizer_inexact_float_ops_refused(name, node, op, line):
    """Where the x86 program computes in float what no integer kernel reproduces exactly, the
    import stops naming the node, the op, the user's forward() line and the reason."""
    from models import pt2e_zoo
    spec = pt2e_zoo.MODELS[name]
    calib = [torch.as_tensor(c) for c in spec.calibration_inputs(16)]
    prog = _x86_program(spec.load_float(), torch.as_tensor(spec.example_input()), calib)
    with pytest.raises(NncError) as e:
        import_pt2e(prog, name)
    msg = e.value.format()
    assert msg.startswith("error: cannot compute exactly in integers"), msg
    assert f"PT2E node '{node}'" in msg and f"({op})" in msg and "pt2e_zoo.py" in msg and line in msg, msg


def test_float_program_output_refused_with_the_fix():
    """The x86 quantizer alone leaves the last linear's output in float: refused, naming
    QuantizedOutputs, which adds the quantize step."""
    prog = _x86_program(small_ffn(), torch.rand(1, 2), [torch.rand(1, 2) for _ in range(16)], outputs=False)
    with pytest.raises(NncError) as e:
        import_pt2e(prog, "x86_float_out")
    assert "returns a float result" in str(e.value) and "QuantizedOutputs" in str(e.value)


def test_uint8_activations_map_onto_int8(tmp_path):
    """uint8 activations [0, 255] (x86/qnnpack style) shift by 128 onto the int8 kernels exactly."""
    torch.manual_seed(0)
    prog, x0 = _convert(Block().eval(), NncQuantizer(uint8_activations=True))
    graph = import_pt2e(prog, "u8", x0)
    x = edge_and_random_inputs(graph.inputs[0].shape, 1000, 8)
    check_imported_program(prog, graph, x, tmp_path, "uint8 program")


# -- bad programs ---------------------------------------------------------------------------------
class Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.cumsum(self.c(x), 1)   # the line the error must name


def test_unsupported_op_names_node_and_line():
    prog, x0 = _convert(Cumsum().eval(), NncQuantizer())
    with pytest.raises(NncError) as e:
        import_pt2e(prog, "s", x0)
    msg = str(e.value)
    assert "cumsum" in msg and "test_pt2e.py" in msg and "in forward" in msg and "supported are" in msg


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = F.hardswish(self.c1(x))
        return torch.sigmoid(self.c2(x))


def test_element_wise_functions_become_exact_tables(tmp_path):
    """hardswish/sigmoid between quantize steps: a table made from the program's own ops, so the
    C equals the reference and the table layers equal the program."""
    torch.manual_seed(0)
    prog, x0 = _convert(Activations().eval(), NncQuantizer())
    graph = import_pt2e(prog, "act", x0)
    assert [op.kind for op in graph.ops].count("lut") == 2
    _, lib, _ = build_host_library(graph, "c", tmp_path, "act")
    x = edge_and_random_inputs(graph.inputs[0].shape, 1000, 9)
    ref = reference.run(graph, [x])[0]
    assert int(np.count_nonzero(lib.run(x) != ref)) == 0


# -- model files ---------------------------------------------------------------------------------
EXPORT = [sys.executable, os.path.join(ROOT, "tools", "export.py")]


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2")
    prog = quantize_pt2e(small_ffn(), torch.rand(1, 2), [torch.rand(1, 2) for _ in range(64)], progress=False)
    path = str(d / "pt2e_test_ffn.pt2")   # builds as pt2e_test_ffn: no zoo name is touched
    torch.export.save(prog, path)
    return prog, path


def test_pt2_round_trip(pt2_file, tmp_path):
    prog, path = pt2_file
    g1 = import_pt2e(prog, "ffn")
    g2 = load_model(path).graph()
    x = edge_and_random_inputs(g1.inputs[0].shape, 1000, 1)
    assert np.array_equal(reference.run(g1, [x])[0], reference.run(g2, [x])[0])
    out = tmp_path / "gen"
    r = subprocess.run(EXPORT + ["--model", path, "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "tvmgen_pt2e_test_ffn.c").exists()


def test_factory_file_with_calibration(tmp_path):
    (tmp_path / "net.py").write_text(
        "import torch, torch.nn as nn\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))\n"
        "    return m.eval(), torch.rand(1, 1, 28, 28)\n")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32))
    out = tmp_path / "gen"
    r = subprocess.run(EXPORT + ["--model", f"{tmp_path}/net.py:build", "--calibration",
                                 f"npy:{tmp_path}/calib.npy", "--out", str(out), "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "tvmgen_net.c").exists()
    r = subprocess.run(EXPORT + ["--model", f"{tmp_path}/net.py:build", "--out", str(tmp_path / "g2")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "calibration" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "g2").exists()


EAGER_FACTORY = """
import torch, torch.nn as nn
tq = torch.ao.quantization
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv, self.relu, self.fc = nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Linear(5 * 6 * 6, 7)
    def forward(self, x):
        return self.dequant(self.fc(self.relu(self.conv(self.quant(x))).flatten(1)))
def build():
    torch.manual_seed(0)
    torch.backends.quantized.engine = "qnnpack"
    m = Net().eval()
    m.qconfig = tq.get_default_qconfig("qnnpack")
    p = tq.prepare(m)
    p(torch.randn(32, 3, 6, 6))
    return tq.convert(p), torch.randn(1, 3, 6, 6)
"""


def test_factory_returning_an_eager_quantized_model(tmp_path):
    """A factory may return a torch.ao.quantization converted model: it is imported as it is (like
    a zoo model), not taken for a float model to quantize again (which asked for calibration data
    and then failed inside torch). Its C equals the reference and torch qnnpack, 0 mismatches."""
    (tmp_path / "eager_net.py").write_text(EAGER_FACTORY)
    m = load_model(f"{tmp_path}/eager_net.py:build", progress=False)
    assert m.kind == "eager"
    graph = m.graph()
    x = edge_and_random_inputs(graph.inputs[0].shape, 1000, 3)
    ref = reference.run(graph, [x])[0]
    assert np.array_equal(ref, m.run_int8([x])[0])
    for kernels in ("c", "m7"):
        _, lib, _ = build_host_library(graph, kernels, tmp_path, f"eager_net_{kernels}")
        assert int(np.count_nonzero(lib.run(x) != ref)) == 0, kernels


BAD_FACTORIES = {   # factory body -> what the error must name
    "raises": ("def build():\n    raise ValueError('no weights here')\n",
               ["build() in", "ValueError: no weights here"]),
    "fails on its example": (
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 2, 5)\n"
        "    def forward(self, x):\n"
        "        return self.conv(x)\n"
        "def build():\n"
        "    return Net().eval(), torch.rand(1, 1, 3, 3)\n",
        ["fails on the example input", "line 7, in forward: return self.conv(x)"]),
    "data-dependent control flow": (
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 2, 3)\n"
        "    def forward(self, x):\n"
        "        if x.sum() > 0:\n"
        "            x = x * 2\n"
        "        return self.conv(x)\n"
        "def build():\n"
        "    return Net().eval(), torch.rand(1, 1, 6, 6)\n",
        ["torch.export cannot capture the model", "line 7, in forward: if x.sum() > 0:", "control flow"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FACTORIES))
def test_factory_failures_are_user_errors(case, tmp_path, capsys):
    """A factory that raises, a model that fails on its own example input, a forward() that
    torch.export cannot capture: exit 2 naming the user's file and line, not "internal error (a
    bug in nnc)" with exit 3, and nothing written."""
    from nnc.cli.main import main
    body, expected = BAD_FACTORIES[case]
    (tmp_path / "net.py").write_text(body)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((8, 1, 6, 6), dtype=np.float32))
    out = tmp_path / "gen"
    status = main(["export", "--quiet", "--model", f"{tmp_path}/net.py:build", "--calibration",
                   f"npy:{tmp_path}/calib.npy", "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: ") and "internal error" not in err and "Traceback" not in err, err
    assert "net.py" in err and all(e in err for e in expected), err
    assert not out.exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


# per process: parallel test workers each have their own
MARKER = os.path.join(tempfile.gettempdir(), f"nnc-pt2e-pickle-ran-{os.getpid()}")


def _bad_files(tmp_path, good):
    not_model = tmp_path / "notes.pt2"
    not_model.write_text("hello\n")
    truncated = tmp_path / "cut.pt2"
    data = open(good, "rb").read()
    truncated.write_bytes(data[:len(data) // 2])
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            if item.filename.endswith("sample_inputs/model.pt"):
                body = pickle.dumps(_RunsCode())
            zout.writestr(item, body)
    future = tmp_path / "future.pt2"   # written by a torch whose export schema this one does not read
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(future, "w") as zout:
        for item in zin.infolist():
            body = zin.read(item.filename)
            if item.filename.endswith("models/model.json"):
                doc = json.loads(body)
                doc["schema_version"] = {"major": doc["schema_version"]["major"] + 90, "minor": 0}
                body = json.dumps(doc).encode()
            zout.writestr(item, body)
    ckpt = tmp_path / "evil_ckpt.pt"
    ckpt.write_bytes(pickle.dumps(_RunsCode()))
    return {"not a model": [str(not_model)], "truncated": [str(truncated)], "pickled code": [str(evil)],
            "incompatible torch": [str(future)], "checkpoint with code": ["lenet5", "--checkpoint", str(ckpt)]}


def test_bad_model_files(pt2_file, tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    for what, model_args in _bad_files(tmp_path, pt2_file[1]).items():
        out = tmp_path / f"out_{what.replace(' ', '_')}"
        r = subprocess.run(EXPORT + ["--model"] + model_args + ["--out", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 2, (what, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, (what, r.stderr)
        assert not out.exists(), what
        if what == "incompatible torch":
            assert "cannot load this program" in r.stderr and "export it again" in r.stderr, r.stderr
    assert not os.path.exists(MARKER), "a pickle in a model file ran code"


def _rewrite(good, out, edit=lambda name, body: body, extra=()):
    """A copy of the archive `good` with members edited (edit returns None: left out) or added."""
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            body = edit(item.filename, zin.read(item.filename))
            if body is not None:
                zout.writestr(item, body)
        for name, body in extra:
            zout.writestr(name, body)
    return str(out)


def _hostile_archives(tmp_path, good, marker):
    """{what: path} of archives built to break the loader: each must be refused with NncError."""
    root = zipfile.ZipFile(good).namelist()[0].split("/")[0]
    so = tmp_path / "ctor.so"   # a shared library whose constructor leaves a marker file
    (tmp_path / "ctor.c").write_text('#include <stdio.h>\n__attribute__((constructor)) static void ran(void)'
                                     f' {{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(so), str(tmp_path / "ctor.c")], check=True)
    metadata = json.dumps({"AOTI_DEVICE_KEY": "cpu"}).encode()
    aoti = f"{root}/data/aotinductor/model/"
    config = "model_weights_config.json"
    files = {
        "aotinductor library": _rewrite(good, tmp_path / "aoti.pt2", extra=[
            (aoti + "model.wrapper.so", so.read_bytes()), (aoti + "model.wrapper_metadata.json", metadata),
            (aoti + "model_metadata.json", metadata)]),
        "config not json": _rewrite(good, tmp_path / "cfg1.pt2",
                                    lambda n, b: b"{not json" if n.endswith(config) else b),
        "config a list": _rewrite(good, tmp_path / "cfg2.pt2", lambda n, b: b"[1]" if n.endswith(config) else b),
        "config entry a number": _rewrite(good, tmp_path / "cfg3.pt2",
                                          lambda n, b: b'{"config": {"w": 5}}' if n.endswith(config) else b),
    }
    data = bytearray(open(good, "rb").read())   # one weight byte flipped: its CRC-32 no longer holds
    info = zipfile.ZipFile(good).getinfo(f"{root}/data/weights/weight_0")
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len] ^= 0x40
    (tmp_path / "crc.pt2").write_bytes(data)
    files["damaged weight"] = str(tmp_path / "crc.pt2")
    for what, bit, offset in (("encrypted", 1, (6, 8)), ("unknown compression", None, (8, 10))):
        data = bytearray(open(good, "rb").read())
        for sig, off in zip((b"PK\x03\x04", b"PK\x01\x02"), offset):
            at = data.find(sig)
            while at >= 0:
                if bit:
                    data[at + off] |= bit
                else:
                    data[at + off:at + off + 2] = (99).to_bytes(2, "little")
                at = data.find(sig, at + 4)
        files[what] = str(tmp_path / f"{what.replace(' ', '_')}.pt2")
        open(files[what], "wb").write(data)
    bomb = tmp_path / "bomb.pt2"   # a few MB that declare 2 GiB: deflated zeros
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{root}/archive_format", b"pt2")
        with z.open(f"{root}/data/sample_inputs/model.pt", "w", force_zip64=True) as f:
            for _ in range(128):
                f.write(bytes(1 << 24))
    files["zip bomb"] = str(bomb)
    return files


def test_hostile_archives_refused_before_loading(pt2_file, tmp_path):
    """Archives that load torch.export.load's native code (AOTInductor: it dlopen()s the library,
    running its constructors), damaged members torch's own reader does not check, configs that
    are not what torch writes, encryption, unknown compression and a zip bomb: each one NncError
    naming the file, nothing of it run, memory bounded (the bomb is refused by its declared size)."""
    marker = tmp_path / "constructor-ran"
    for what, path in _hostile_archives(tmp_path, pt2_file[1], marker).items():
        with pytest.raises(NncError) as e:
            load_model(path)
        assert path in e.value.where, (what, str(e.value))
        assert not marker.exists(), f"{what}: loading ran the archive's native code"


def _scons(*args):
    from fixtures.builds import scons
    return scons(*args, timeout=1800)


def test_scons_host_model_file(pt2_file):
    import hostlib
    prog, path = pt2_file
    r = _scons("host", f"model={path}")
    assert r.returncode == 0, r.stdout + r.stderr
    name = "pt2e_test_ffn"
    lib = hostlib.load(os.path.join(ROOT, "build", "host", name, f"lib{name}.so"),
                       os.path.join(ROOT, "build", "gen", "c", name, f"tvmgen_{name}.h"))
    graph = import_pt2e(prog, name)
    x = edge_and_random_inputs(graph.inputs[0].shape, 1000, 11)
    assert int(np.count_nonzero(lib.run(x) != reference.run(graph, [x])[0])) == 0


def test_scons_m7_run_model_file(pt2_file):
    """The .pt2 on the emulated Cortex-M7 through the serial client, checked against the host library."""
    import shutil
    if not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")):
        if os.environ.get("CI") == "true":
            pytest.fail("needs qemu-system-arm and arm-none-eabi-gcc")
        pytest.skip("needs qemu-system-arm and arm-none-eabi-gcc")
    r = _scons("board=mps2-an500", f"model={pt2_file[1]}", "run")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert " 0 mismatches" in out, out


def test_scons_f746_flash_model_file(pt2_file):
    """`scons board=stm32f746g-disco model=FILE flash`: the .pt2 is compiled and linked into the
    board's firmware, then the flash step fails clearly here (no board attached): one message
    naming the missing probe, non-zero exit, no traceback."""
    import shutil
    missing = [t for t in ("arm-none-eabi-gcc", "openocd") if not shutil.which(t)]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"needs {', '.join(missing)}")
        pytest.skip(f"needs {', '.join(missing)}")
    r = _scons("board=stm32f746g-disco", f"model={pt2_file[1]}", "flash")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert os.path.isfile(os.path.join(ROOT, "build", "stm32f746g-disco", "pt2e_test_ffn", "fw.elf")), out[-3000:]
    assert out.count("error: no ST-LINK probe found") == 1, out[-3000:]
    assert "Traceback" not in out


def test_imx681_model_file(pt2_file, tmp_path):
    cfg = tmp_path / "file.cfg"
    src = open(os.path.join(ROOT, "firmware", "imx681", "configs",
                            "imx681_pytorch_classification_with_state_c.cfg")).read().splitlines()
    keep = [ln for ln in src if not ln.split() or ln.split()[0] not in ("MODEL", "OUTPUT_DIRECTORY",
                                                                        "NETWORK_NAME")]
    cfg.write_text("\n".join(keep + [f"MODEL_FILE {pt2_file[1]}", f"OUTPUT_DIRECTORY {tmp_path}/out"]) + "\n")
    tool = [sys.executable, os.path.join(ROOT, "tools", "imx681_compile.py"), "--config", str(cfg)]
    r = subprocess.run(tool + ["--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "tvmgen_pt2e_test_ffn.c").exists()
    r = subprocess.run(tool + ["--set", "MODEL=stateful", "--set", f"OUTPUT_DIRECTORY={tmp_path}/o2"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "exactly one of MODEL and MODEL_FILE" in r.stderr
    assert not (tmp_path / "o2").exists()


def test_qat_flow(tmp_path):
    """prepare_qat_pt2e with NncQuantizer(qat=True), a few training steps, convert, compile."""
    api = pt2e_api()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 26 * 26, 10)).train()
    x0 = torch.rand(8, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=64)
    m = torch.export.export(model, (x0,), dynamic_shapes=({0: batch},)).module()
    m = api.prepare_qat_pt2e(m, NncQuantizer(qat=True))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(m(torch.rand(8, 1, 28, 28)), torch.randint(0, 10, (8,))).backward()
        opt.step()
    converted = api.convert_pt2e(m)
    graph = import_pt2e(converted, "qat", torch.rand(1, 1, 28, 28))
    _, lib, _ = build_host_library(graph, "c", tmp_path, "qat")
    x = edge_and_random_inputs(graph.inputs[0].shape, 1000, 12)
    assert int(np.count_nonzero(lib.run(x) != reference.run(graph, [x])[0])) == 0
