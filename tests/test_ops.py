"""Operator coverage: activations through tables, multiply, mean, softmax and data movement,
each alone over a grid of shapes and scales, compiled to C and compared with torch qnnpack on
>= 1000 inputs (zero mismatches); the tables over all 256 codes; the aliasing of pure moves."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import build_host_library, edge_and_random_inputs, require_tools

from fixtures import mobilenetv3 as mbv3
from nnc import reference
from nnc.frontend.torch_eager import import_torch_model, run_torch_int8
from nnc.toolchains import WARNING_FREE_FLAGS

torch.backends.quantized.engine = "qnnpack"
N_RANDOM = 1000
tq = torch.ao.quantization


class Single(nn.Module):
    """QuantStub -> body(x) -> DeQuantStub; `body` is a callable taking (self, x)."""

    def __init__(self, body, **modules):
        super().__init__()
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()
        self.f = torch.ao.nn.quantized.FloatFunctional()
        for k, m in modules.items():
            setattr(self, k, m)
        self._body = body

    def forward(self, x):
        return self.dequant(self._body(self, self.quant(x)))


def quantize(model, shape, spread, seed=0, qconfig=None):
    torch.manual_seed(seed)
    model.eval()
    model.qconfig = qconfig or tq.get_default_qconfig("qnnpack")
    with torch.no_grad(), np.errstate(all="ignore"):
        prepared = tq.prepare(model)
        prepared(torch.randn(64, *shape[1:]) * spread + 0.3 * spread)
    return tq.convert(prepared)


def check(qmodel, shape, tmp_path, tag, n_random=N_RANDOM, seed=1, inputs=None, device_softmax=False):
    """Compile, run torch and the C on the same int8 inputs, assert zero mismatches; returns the
    compiled model."""
    graph = import_torch_model(qmodel, torch.rand(*shape), tag, device_softmax=device_softmax)
    x = edge_and_random_inputs(shape, n_random, seed) if inputs is None else inputs
    compiled, lib, _ = build_host_library(copy.deepcopy(graph), "c", tmp_path, tag)
    got = lib.run(x)
    ref = reference.run(graph, [x])[0]
    if device_softmax:
        expected = ref
    else:
        expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
        assert np.array_equal(ref, expected), f"{tag}: the numpy reference differs from torch"
    assert got.shape == expected.shape
    bad = int(np.count_nonzero(got != expected))
    assert bad == 0, f"{tag}: {bad} of {got.size} outputs differ from torch"
    return compiled


# -- activations: one table each ------------------------------------------------------------------
ACTIVATIONS = {
    "hardswish": lambda: nn.Hardswish(),
    "hardsigmoid": lambda: nn.Hardsigmoid(),
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "gelu": lambda: nn.GELU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": lambda: nn.ELU(),
    "hardtanh": lambda: nn.Hardtanh(-1.5, 2.0),
    "relu6": lambda: nn.ReLU6(),
}
GRID = [((1, 3, 5, 7), 1.0), ((1, 8, 4, 4), 4.0), ((1, 37), 0.25)]


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
@pytest.mark.parametrize("case", range(len(GRID)))
def test_activation_grid(act, case, tmp_path):
    shape, spread = GRID[case]
    q = quantize(Single(lambda s, x: s.act(x), act=ACTIVATIONS[act]()), shape, spread, seed=case)
    compiled = check(q, shape, tmp_path, f"{act}{case}", n_random=N_RANDOM if case == 0 else 300)
    assert [op.kind for op in compiled.graph.ops] == ["lut"]


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_activation_table_is_exhaustive(act, tmp_path):
    """All 256 input codes in one tensor: the C table equals torch on every one."""
    q = quantize(Single(lambda s, x: s.act(x), act=ACTIVATIONS[act]()), (1, 256), 3.0)
    codes = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    check(q, (1, 256), tmp_path, f"{act}_all", inputs=codes)


FUNCTIONS = {
    "F.hardsigmoid": lambda s, x: F.hardsigmoid(x),
    "torch.sigmoid": lambda s, x: torch.sigmoid(x),
    "x.tanh()": lambda s, x: x.tanh(),
    "F.relu6": lambda s, x: F.relu6(x),
    "F.leaky_relu": lambda s, x: F.leaky_relu(x, 0.2),
    "torch.clamp": lambda s, x: torch.clamp(x, -0.5, 0.5),
}


@pytest.mark.parametrize("fn", sorted(FUNCTIONS))
def test_activation_functions_and_methods(fn, tmp_path):
    q = quantize(Single(FUNCTIONS[fn]), (1, 4, 6, 6), 2.0)
    check(q, (1, 4, 6, 6), tmp_path, "fn", n_random=N_RANDOM)


# -- multiply and mean ----------------------------------------------------------------------------
MULS = {
    "same_shape": lambda s, x: s.f.mul(x, s.act(x)),
    "square": lambda s, x: s.f.mul(x, x),
    "se_broadcast": lambda s, x: s.f.mul(s.act(x.mean((2, 3), keepdim=True)), x),
    "broadcast_last": lambda s, x: s.f.mul(x, s.act(x[:, :, :, :1])),
}


@pytest.mark.parametrize("kind", sorted(MULS))
@pytest.mark.parametrize("spread", [0.5, 6.0])
def test_mul_grid(kind, spread, tmp_path):
    shape = (1, 6, 5, 4)
    q = quantize(Single(MULS[kind], act=nn.Hardsigmoid()), shape, spread)
    compiled = check(q, shape, tmp_path, "mul")
    assert "mul" in [op.kind for op in compiled.graph.ops]


@pytest.mark.parametrize("dims", [(2, 3), (-1, -2), (3,)])
@pytest.mark.parametrize("keepdim", [True, False])
@pytest.mark.parametrize("shape", [(1, 5, 7, 3), (1, 16, 4, 4)])
def test_mean(dims, keepdim, shape, tmp_path):
    """dims (2, 3): torch runs qnnpack's global average pool; other innermost dims: its mean of
    the codes (different rounding: ties of the checkerboard input tell them apart)."""
    q = quantize(Single(lambda s, x: torch.mean(x, dim=dims, keepdim=keepdim)), shape, 2.0)
    check(q, shape, tmp_path, "mean")


# -- data movement ----------------------------------------------------------------------------------
def channel_shuffle(x, groups: int):
    batch, channels, height, width = x.size()
    per_group = channels // groups
    x = x.view(batch, groups, per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


def chunk_swap(s, x):
    a, b = x.chunk(2, dim=1)
    return s.f.cat([b, a], dim=1)


def split_add(s, x):
    a, b, c = torch.split(x, [1, 2, 3], dim=1)
    return s.f.cat([c, s.f.add(a, b[:, 1:])], dim=1)


MOVES = {
    "channel_shuffle": lambda s, x: channel_shuffle(x, 3),
    "permute": lambda s, x: x.permute(0, 2, 3, 1),
    "transpose_hw": lambda s, x: x.transpose(2, 3),
    "chunk_cat": lambda s, x: chunk_swap(s, x),
    "split_uneven": lambda s, x: split_add(s, x),
    "slice_step": lambda s, x: x[:, 1:, ::2, 1:-1],
    "index_int": lambda s, x: x[:, 2],
    "narrow_w": lambda s, x: x.narrow(3, 1, 3),
    "pad": lambda s, x: F.pad(x, (1, 2, 0, 3)),
    "upsample2": lambda s, x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "upsample_size": lambda s, x: F.interpolate(x, size=(7, 9), mode="nearest"),
    "upsample_module": lambda s, x: s.up(x),
}


@pytest.mark.parametrize("kind", sorted(MOVES))
def test_data_movement(kind, tmp_path):
    shape = (1, 6, 5, 4)
    q = quantize(Single(MOVES[kind], up=nn.Upsample(scale_factor=(1, 3))), shape, 1.5)
    check(q, shape, tmp_path, "move")


def test_contiguous_pieces_alias_their_input(tmp_path):
    """chunk along channels of an NCHW tensor: each half is already contiguous, so no copy."""
    def body(s, x):
        a, b = x.chunk(2, dim=1)
        return s.f.add(s.act(a), b)
    q = quantize(Single(body, act=nn.Hardswish()), (1, 8, 3, 3), 1.0)
    compiled = check(q, (1, 8, 3, 3), tmp_path, "alias")
    slices = [op for op in compiled.graph.ops if op.kind == "slice"]
    assert len(slices) == 2 and all(op.output.alias_of is not None for op in slices)
    assert all(id(op) not in compiled.kernels for op in slices)
    assert [op.output.alias_offset for op in slices] == [0, 4 * 9]


def test_contiguous_box_offsets():
    from nnc.planner import contiguous_box_offset as off
    assert off((1, 8, 3, 3), (0, 4, 0, 0), (1, 8, 3, 3), (1, 1, 1, 1)) == 36
    assert off((1, 8, 3, 3), (0, 0, 1, 0), (1, 8, 2, 3), (1, 1, 1, 1)) is None    # rows of 8 channels
    assert off((1, 1, 3, 3), (0, 0, 1, 0), (1, 1, 2, 3), (1, 1, 1, 1)) == 3
    assert off((1, 4, 3, 3), (0, 2, 1, 0), (1, 3, 2, 3), (1, 1, 1, 1)) == 21       # one channel, one row
    assert off((1, 4, 3, 3), (0, 0, 0, 0), (1, 4, 3, 3), (1, 2, 1, 1)) is None


# -- softmax ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dim,spread", [((1, 10), 1, 3.0), ((1, 4, 3, 5), 1, 1.0), ((1, 3, 7), -1, 8.0)])
def test_softmax_equals_qnnpack(shape, dim, spread, tmp_path):
    """torch's quantized Softmax module with qnnpack's output quantization (1/256, 0)."""
    q = quantize(Single(lambda s, x: s.act(x), act=nn.Identity()), shape, spread)
    q.act = torch.ao.nn.quantized.Softmax(dim=dim, scale=1 / 256, zero_point=0)
    compiled = check(q, shape, tmp_path, "softmax")
    assert [op.kind for op in compiled.graph.ops] == ["softmax"]


class SoftmaxNet(nn.Module):
    def __init__(self, features=16, classes=10):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.fc = nn.Linear(features, classes)

    def forward(self, x):
        return torch.softmax(self.dequant(self.fc(self.quant(x))), dim=1)


# (classes, calibration spread): logit scales from about 0.03 to 0.13; a wide spread makes
# near-certain predictions, whose probability rounds above 255/256, the largest int8 output
SOFTMAX_CASES = [(10, 2.0), (10, 8.0), (2, 2.0), (100, 2.0)]


@pytest.mark.parametrize("classes,spread", SOFTMAX_CASES)
def test_device_softmax_error_against_float_softmax(classes, spread, tmp_path):
    """softmax after the DeQuantStub, compiled on the device: the error of its int8
    probabilities (scale 1/256) against torch's float softmax of the same logits, on 1004 inputs.
    Measured (README): at most 1/256, reached only where the output saturates at 255/256."""
    torch.manual_seed(classes)                 # the weights too: the figures are reproducible
    q = quantize(SoftmaxNet(16, classes), (1, 16), spread)
    plain = import_torch_model(q, torch.rand(1, 16), "logits")
    check(q, (1, 16), tmp_path, "devsoftmax", device_softmax=True)
    graph = import_torch_model(q, torch.rand(1, 16), "devsoftmax", device_softmax=True)
    x = edge_and_random_inputs((1, 16), N_RANDOM, 5)
    logits = reference.run(plain, [x])[0]
    lq = plain.outputs[0].qparams
    want = torch.softmax(torch.from_numpy((logits.astype(np.float32) - lq.zero_point) * lq.scale), 1).numpy()
    probs = (reference.run(graph, [x])[0].astype(np.float32) + 128) / 256
    err = np.abs(probs - want)
    below = err[probs < 255 / 256]
    print(f"device softmax, {classes} classes, logit scale {lq.scale:.4g}, {len(x)} inputs: max error "
          f"{err.max() * 256:.3f}/256 ({below.max() * 256:.3f}/256 below saturation), mean "
          f"{err.mean() * 256:.3f}/256")
    assert err.max() <= 1 / 256, err.max() * 256
    assert below.max() <= 0.6 / 256, below.max() * 256


# -- networks: torchvision's MobileNetV3 (small, large), a ShuffleNetV2 block, an SE block ----------
NETWORKS = {
    "mobilenet_v3_small": ((1, 3, 32, 32), lambda: mbv3.mobilenet_v3("small", 1.0, 10)),
    "mobilenet_v3_large": ((1, 3, 32, 32), lambda: mbv3.mobilenet_v3("large", 1.0, 10)),
    "shufflenet_block": ((1, 3, 16, 16), lambda: mbv3.ShuffleNetBlock()),
    "se_block": ((1, 3, 8, 8), lambda: mbv3.SEBlock()),
}


@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_network_bit_exact(net, tmp_path):
    shape, make = NETWORKS[net]
    q = mbv3.quantize_with_random_bn(make(), shape)
    compiled = check(q, shape, tmp_path, net)
    kinds = {op.kind for op in compiled.graph.ops}
    want = {"mobilenet_v3_small": {"lut", "mul", "add"}, "mobilenet_v3_large": {"lut", "mul", "add"},
            "shufflenet_block": {"slice", "transpose", "cat"}, "se_block": {"mul", "lut"}}[net]
    assert want <= kinds, kinds


def test_unsupported_op_names_the_innermost_user_line(monkeypatch):
    """The error points at the line inside the helper that calls the op, not at forward()."""
    import inspect
    from nnc.errors import NncError

    def inner_helper(x):
        return torch.cumsum(x, 1)          # <- the line the error must name

    q = quantize(Single(lambda s, x: inner_helper(x)), (1, 4), 1.0)
    line = inspect.getsourcelines(inner_helper)[1] + 1
    monkeypatch.delenv("NNC_DEBUG", raising=False)
    with pytest.raises(NncError) as e:
        import_torch_model(q, torch.rand(1, 4), "bad")
    where = e.value.where
    assert f'test_ops.py", line {line}, in inner_helper' in where and "torch.cumsum(x, 1)" in where
    assert "called from" not in where and "NNC_DEBUG=1" in where
    monkeypatch.setenv("NNC_DEBUG", "1")
    with pytest.raises(NncError) as e:
        import_torch_model(q, torch.rand(1, 4), "bad")
    assert "called from" in e.value.where and "in forward" in e.value.where


@pytest.mark.parametrize("cc", sorted(WARNING_FREE_FLAGS))
def test_new_kernels_compile_warning_free_on_every_target(cc, tmp_path):
    """One model with every new op kind, compiled by gcc, arm-none-eabi-gcc and
    riscv64-unknown-elf-gcc with -Wall -Wextra -Werror: no output at all. A missing compiler
    skips its case by name (and fails it when CI=true: CI has every compiler)."""
    import os
    import subprocess
    from nnc.compiler import compile_graph
    from nnc.targets.cpu import CpuTarget

    flags = WARNING_FREE_FLAGS[cc]
    require_tools(cc, needed_for="to check the generated C is warning-free on its target")

    def body(s, x):
        a, b = x.chunk(2, dim=1)
        y = s.f.cat([s.act(channel_shuffle(F.pad(a, (1, 1, 1, 1)), 3)[:, :, 1:-1, 1:-1]), b], dim=1)
        y = s.f.mul(y, torch.sigmoid(y.mean((3, 2), keepdim=True)))
        y = F.interpolate(y.permute(0, 1, 3, 2), size=(7, 9), mode="nearest")
        return s.sm(y[:, :, ::2])

    shape = (1, 6, 5, 4)
    q = quantize(Single(body, act=nn.Hardswish(), sm=nn.Identity()), shape, 1.5)
    q.sm = torch.ao.nn.quantized.Softmax(dim=1, scale=1 / 256, zero_point=0)
    compiled = check(q, shape, tmp_path, "allops")
    kinds = {op.kind for op in compiled.graph.ops}
    assert {"lut", "mul", "mean", "softmax", "slice", "pad", "upsample_nearest", "transpose"} <= kinds
    out = compile_graph(import_torch_model(q, torch.rand(*shape), "allops"), CpuTarget("m7"))
    header, source = out.write(str(tmp_path / "gen"))
    r = subprocess.run([cc, *flags, "-c", source, "-I", os.path.dirname(source), "-o", str(tmp_path / "x.o")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", f"{cc}: {r.stderr}"


# -- tools/export.py: --device-softmax and --debug ----------------------------------------------------
class _TestSpec:
    """Stands in for a zoo ModelSpec: tools/export.py takes zoo names."""
    stateful = False

    def __init__(self, qmodel, shape):
        self.qmodel, self.shape = qmodel, shape

    def load_quantized(self, path=None):
        return self.qmodel

    def example_input(self):
        return torch.rand(*self.shape)


def export_cli(monkeypatch, capsys, qmodel, shape, *flags):
    import json
    import os
    import tempfile
    from nnc.cli.main import main as nnc
    from models import registry
    monkeypatch.setitem(registry.MODELS, "testnet", _TestSpec(qmodel, shape))
    out = os.path.join(tempfile.mkdtemp(), "gen")
    rc = nnc(["export", "--model", "testnet", "--out", out, "--quiet", *flags])
    err = capsys.readouterr().err
    meta = json.load(open(os.path.join(out, "model.json"))) if rc == 0 else None
    assert rc == 0 or not os.path.exists(out), "a failed export wrote output"
    return rc, err, meta


def test_export_help_names_the_flags(capsys):
    from nnc.cli.main import main as nnc
    with pytest.raises(SystemExit) as e:
        nnc(["export", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--device-softmax" in text and "--debug" in text and "NNC_DEBUG=1" in text


def test_export_device_softmax(monkeypatch, capsys):
    q = quantize(SoftmaxNet(), (1, 16), 2.0)
    rc, err, plain = export_cli(monkeypatch, capsys, q, (1, 16))
    assert rc == 0, err
    assert [l["kind"] for l in plain["layers"]] == ["dense"]
    rc, err, meta = export_cli(monkeypatch, capsys, q, (1, 16), "--device-softmax")
    assert rc == 0, err
    assert [l["kind"] for l in meta["layers"]] == ["dense", "softmax"]
    assert meta["outputs"][0]["scale"] == 1 / 256 and meta["outputs"][0]["zero_point"] == -128
    assert any("softmax compiled on the device" in n for n in meta["notes"])


def test_export_device_softmax_refuses_log_softmax_and_no_softmax(monkeypatch, capsys):
    """A model ending in log_softmax, and one with nothing after its DeQuantStub: exit 2, the
    reason and the fix, nothing written."""
    class LogSoftmaxNet(SoftmaxNet):
        def forward(self, x):
            return F.log_softmax(self.dequant(self.fc(self.quant(x))), dim=1)

    class Logits(SoftmaxNet):
        def forward(self, x):
            return self.dequant(self.fc(self.quant(x)))

    rc, err, _ = export_cli(monkeypatch, capsys, quantize(LogSoftmaxNet(), (1, 16), 2.0), (1, 16),
                            "--device-softmax")
    assert rc == 2 and "log_softmax cannot run on the device" in err and "in forward" in err, err
    assert "Traceback" not in err
    rc, err, _ = export_cli(monkeypatch, capsys, quantize(Logits(), (1, 16), 2.0), (1, 16),
                            "--device-softmax")
    assert rc == 2 and "no softmax after its DeQuantStub" in err and "fix:" in err, err


def test_export_debug_prints_the_call_chain(monkeypatch, capsys):
    def helper(x):
        return torch.cumsum(x, 1)

    q = quantize(Single(lambda s, x: helper(x)), (1, 4), 1.0)
    monkeypatch.setenv("NNC_DEBUG", "0")          # restored after the test (--debug sets it)
    rc, err, _ = export_cli(monkeypatch, capsys, q, (1, 4))
    assert rc == 2 and "in helper" in err and "called from" not in err and "--debug" in err, err
    rc, err, _ = export_cli(monkeypatch, capsys, q, (1, 4), "--debug")
    assert rc == 2 and "in helper" in err and "called from" in err and "in forward" in err, err
    assert "Traceback" not in err
