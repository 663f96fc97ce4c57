"""TVM-generated conv2d/dense kernels (kernels="tvm"): bit-exact against the reference and torch.

Small random quantized torch models cover conv 3x3 pad 1, stride 2, depthwise, groups=2,
dilation 2, 1x1, non-square kernels/strides, dense; per-tensor and per-channel weights. The
"shift" requantization and non-zero weight zero points (which no torch qnnpack model has) are
checked by editing the imported graph and comparing against nnc.reference.
"""
import copy
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import build_host_library, edge_and_random_inputs, quantize_ptq

from nnc import reference
from nnc.compiler import compile_graph
from nnc.frontend.torch_eager import import_torch_model, run_torch_int8
from nnc.targets.cpu import CpuTarget
from nnc.toolchains import (CORTEX_M7_CC, CORTEX_M7_FLAGS, HOST_CC, HOST_CFLAGS, RV32_CC,
                            RV32_FLAGS)

N_INPUTS = 1000
SHAPE = (1, 3, 12, 12)

CROSS_COMPILERS = {CORTEX_M7_CC: CORTEX_M7_FLAGS, RV32_CC: RV32_FLAGS, HOST_CC: []}
CFLAGS = HOST_CFLAGS


def make_model(scheme: str, seed: int):
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.c1 = nn.Conv2d(3, 8, 3, padding=1)                                # 3x3 pad 1
            self.r1 = nn.ReLU()
            self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)                      # stride 2
            self.c3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)                      # depthwise
            self.r3 = nn.ReLU()
            self.c4 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)          # groups 2, dil 2
            self.c5 = nn.Conv2d(8, 6, 1)                                           # 1x1
            self.c6 = nn.Conv2d(6, 4, (3, 2), stride=(1, 2), padding=(0, 1), bias=False)
            self.fc1 = nn.Linear(4 * 4 * 4, 10)
            self.rf = nn.ReLU()
            self.fc2 = nn.Linear(10, 5)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.r1(self.c1(x))
            x = self.c2(x)
            x = self.r3(self.c3(x))
            x = self.c4(x)
            x = self.c5(x)
            x = self.c6(x)
            x = x.reshape(x.shape[0], -1)
            x = self.rf(self.fc1(x))
            return self.dequant(self.fc2(x))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["c1", "r1"], ["c3", "r3"], ["fc1", "rf"]],
                                               inplace=True)

    torch.manual_seed(seed)
    model = Net()
    # Offset data: the input zero point is far from 0, so padding must be the zero point.
    model = quantize_ptq(model, scheme, torch.randn(64, *SHAPE[1:]) * 1.5 + 1.0)
    return model, torch.randn(*SHAPE)


def build(graph, tmp_path, tag):
    return build_host_library(graph, "tvm", tmp_path, tag)


@pytest.fixture(scope="module", params=["per_tensor", "per_channel"])
def model(request):
    qmodel, example = make_model(request.param, seed=7 if request.param == "per_tensor" else 11)
    graph = import_torch_model(qmodel, example, f"tvmk_{request.param}")
    x = edge_and_random_inputs(SHAPE, N_INPUTS, seed=3)
    return request.param, qmodel, graph, x


def test_tvm_kernels_bit_exact(model, tmp_path):
    scheme, qmodel, graph, x = model
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"tvmk_{scheme}")
    providers = {op.name: compiled.kernels[id(op)].provider for op in compiled.graph.ops
                 if id(op) in compiled.kernels}
    heavy = [op.name for op in graph.ops if op.kind in ("conv2d", "dense")]
    assert len(heavy) == 8
    assert all(providers[n] == "tvm" for n in heavy), providers
    assert "TVM_DLL" not in source and "tvm/" not in source and "__tvm" not in source
    assert len(x) >= 1000 and (x[0] == -128).all() and (x[1] == 127).all()
    got = lib.run(x)
    ref = reference.run(graph, [x])[0]
    torch_out = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    assert int(np.count_nonzero(got != ref)) == 0
    assert int(np.count_nonzero(got != torch_out)) == 0
    assert int(np.count_nonzero(ref != torch_out)) == 0
    # the outputs are not trivially saturated
    assert len(np.unique(got)) > 20


def _edited(graph, how):
    g = copy.deepcopy(graph)
    rng = np.random.default_rng(5)
    for op in g.ops:
        if op.kind not in ("conv2d", "dense"):
            continue
        if how == "shift":
            op.attrs["requant"] = "shift"
            op.attrs["shift"] = int(rng.integers(4, 10))
        elif how == "weight_zp":
            op.params["weight_zp"] = rng.integers(-3, 4, size=op.params["weight"].shape[0]).astype(np.int32)
    return g


@pytest.mark.parametrize("how", ["shift", "weight_zp"])
def test_tvm_kernels_shift_and_weight_zp(model, how, tmp_path):
    scheme, qmodel, graph, x = model
    if scheme != "per_channel":
        pytest.skip("one weight scheme is enough for the edited graphs")
    g = _edited(graph, how)
    compiled, lib, _ = build(g, tmp_path, f"tvmk_{how}")
    assert all(compiled.kernels[id(op)].provider == "tvm" for op in compiled.graph.ops
               if op.kind in ("conv2d", "dense"))
    got = lib.run(x)
    ref = reference.run(g, [x])[0]
    assert int(np.count_nonzero(got != ref)) == 0
    assert len(np.unique(got)) > 5


def test_tvm_output_deterministic_and_warning_free(model, tmp_path):
    scheme, _, graph, _ = model
    if scheme != "per_tensor":
        pytest.skip("one model is enough")
    from nnc.kernels import tvm_kernels
    a = compile_graph(copy.deepcopy(graph), CpuTarget(kernels="tvm"))
    tvm_kernels._CACHE.clear()   # regenerate through TVM, not from the cache
    b = compile_graph(copy.deepcopy(graph), CpuTarget(kernels="tvm"))
    assert a.source == b.source and a.header == b.header
    header, source = a.write(str(tmp_path / "gen"))
    for compiler, flags in sorted(CROSS_COMPILERS.items()):
        if shutil.which(compiler) is None:
            pytest.fail(f"{compiler} is not installed")
        r = subprocess.run([compiler] + CFLAGS + ["-c", source, "-I", os.path.dirname(header),
                            "-o", str(tmp_path / f"{compiler}.o")] + flags,
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", f"{compiler}: {r.stderr}"


def test_unsupported_ops_fall_back_to_portable_c(model):
    _, _, graph, _ = model
    from nnc.kernels.tvm_kernels import TvmKernels
    p = TvmKernels()
    for op in graph.ops:
        assert p.supports(op) == (op.kind in ("conv2d", "dense"))


def test_requant_rounds_half_to_even(tmp_path):
    """multiplier 0.5 / 0.25 makes exact .5 ties: nearbyintf must round them to even."""
    from nnc.ir import Graph, Op, QParams, Tensor
    x_t = Tensor("input0", (1, 4), "int8", QParams.make(1.0, 3))
    y_t = Tensor("y", (1, 8), "int8", QParams.make(1.0, -1))
    weight = np.zeros((8, 4), np.int8)
    weight[np.arange(8), np.arange(8) % 4] = 1
    params = {"weight": weight, "bias": np.zeros(8, np.int32), "weight_zp": np.zeros(8, np.int32),
              "multiplier": np.array([0.5] * 4 + [0.25] * 4, np.float32)}
    op = Op("dense", "fc", [x_t], [y_t], {"requant": "float", "clamp": (-128, 127)}, params)
    # A no-op ReLU after it: a one-op graph has an unused arena, which the AOT emitter warns about.
    z_t = Tensor("z", (1, 8), "int8", y_t.qparams)
    relu = Op("relu", "relu", [y_t], [z_t], {"clamp": (-128, 127)})
    g = Graph("ties", [x_t], [z_t], [op, relu])
    _, lib, _ = build(g, tmp_path, "ties")
    x = np.repeat(np.arange(-128, 128, dtype=np.int16)[:, None], 4, axis=1).astype(np.int8)
    got = lib.run(x)
    acc = x.astype(np.int64) - 3
    assert np.array_equal(got[:, 0], (np.rint(acc[:, 0] * 0.5) - 1).astype(np.int8))
    assert np.array_equal(got[:, 4], (np.rint(acc[:, 0] * 0.25) - 1).astype(np.int8))
    assert np.array_equal(got, reference.run(g, [x])[0])
    # ties really occur and go to even: acc = 1 -> 0.5 -> 0, acc = 3 -> 1.5 -> 2, acc = -1 -> -0
    row = {int(a): got[i, 0] + 1 for i, a in enumerate(acc[:, 0])}
    assert (row[1], row[3], row[-1], row[-3], row[5]) == (0, 2, 0, -2, 2)
