"""Foundation: importer, reference, planner, AOT C, host library; bit-exact against torch qnnpack."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, edge_and_random_inputs, generated_dir, load_host_library

from nnc import reference
from nnc.toolchains import WARNING_FREE_FLAGS
from nnc.frontend.torch_eager import import_torch_model, quantize_like_torch, run_torch_int8

CORE_MODELS = ["lenet5", "residual_cnn"]


def quantize_real(spec, graph, n):
    """Real data-set samples, quantized as the model's QuantStub does."""
    return quantize_like_torch(spec.calibration_inputs(n).float().numpy(), graph.inputs[0].qparams)


@pytest.fixture(scope="module", params=CORE_MODELS)
def compiled(request, zoo):
    spec = zoo[request.param]
    qmodel = spec.load_quantized()
    graph = import_torch_model(qmodel, spec.example_input(), request.param)
    n_real = 500
    x = np.concatenate([edge_and_random_inputs(spec.input_shape, 1000 - n_real, seed=1),
                        quantize_real(spec, graph, n_real)])
    return request.param, spec, qmodel, graph, x


def test_c_library_equals_torch_qnnpack(compiled):
    name, spec, qmodel, graph, x = compiled
    assert len(x) >= 1000
    lib = load_host_library(name)
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = lib.run(x)
    assert got.shape == expected.shape
    mismatches = int(np.count_nonzero(got != expected))
    assert mismatches == 0, f"{name}: {mismatches} of {got.size} output elements differ from torch"


def test_reference_equals_torch_qnnpack(compiled):
    name, spec, qmodel, graph, x = compiled
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = reference.run(graph, [x])[0]
    assert int(np.count_nonzero(got != expected)) == 0


def test_edge_inputs_really_reach_the_extremes(compiled):
    """The edge inputs are what they claim: a guard against a silently weakened test set."""
    x = compiled[4]
    assert (x[0] == -128).all() and (x[1] == 127).all()


@pytest.mark.parametrize("compiler", sorted(WARNING_FREE_FLAGS))
@pytest.mark.parametrize("model", CORE_MODELS)
def test_generated_c_compiles_without_warnings(compiler, model, tmp_path):
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} is not installed: `./scons host test` installs it (Debian package)")
    gen = generated_dir(model)
    src = os.path.join(gen, f"tvmgen_{model}.c")
    cmd = [compiler, *WARNING_FREE_FLAGS[compiler], "-c", src, "-I", gen, "-o", str(tmp_path / "model.o")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_export_is_deterministic(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "export.py"), "--model", "lenet5", "--quiet"]
    for d in ("a", "b"):
        subprocess.run(cmd + ["--out", str(tmp_path / d)], check=True)
    for f in ("tvmgen_lenet5.h", "tvmgen_lenet5.c", "model.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_lenet5_arena_equals_lower_bound(zoo):
    from nnc.planner import plan_memory
    spec = zoo["lenet5"]
    graph = import_torch_model(spec.load_quantized(), spec.example_input(), "lenet5")
    plan = plan_memory(graph)
    assert plan.arena_size == plan.lower_bound
    assert plan.arena_size > 0
    # No two buffers that are live at the same step overlap in the arena.
    for a in plan.buffers:
        for b in plan.buffers:
            if a is not b and a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset


def test_header_reports_the_planned_workspace(compiled):
    name = compiled[0]
    lib = load_host_library(name)
    import json
    meta = json.load(open(os.path.join(generated_dir(name), "model.json")))
    assert lib.workspace_size == meta["arena_bytes"]
    assert meta["arena_bytes"] >= meta["arena_lower_bound"]


def test_host_library_checks_shape_and_dtype():
    import hostlib
    lib = load_host_library("lenet5")
    with pytest.raises(hostlib.HostLibError, match="int8"):
        lib.run(np.zeros((1, 1, 28, 28), dtype=np.float32))
    with pytest.raises(hostlib.HostLibError, match="shape"):
        lib.run(np.zeros((1, 1, 27, 28), dtype=np.int8))
