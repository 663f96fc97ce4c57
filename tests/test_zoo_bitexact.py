"""Every stateless zoo model: the compiled C library equals torch qnnpack, element for element.

Inputs: all -128, all 127, all 0, a -128/127 checkerboard, uniform random int8, and real
data-set samples quantized by the model's QuantStub. 1000 inputs per model; ResNet-50 runs 20
by default and 1000 with `./scons host test full=1` (NNC_FULL_TESTS=1).
"""
import numpy as np
import pytest

from conftest import FULL, ROOT, edge_and_random_inputs, load_host_library

from nnc.frontend.torch_eager import import_torch_model, quantize_like_torch, run_torch_int8
from nnc.reports.regression import record_test_result


def zoo_models():
    from models.registry import MODELS
    return [name for name, spec in MODELS.items() if not spec.stateful]


def real_inputs(spec, qparams, n):
    return quantize_like_torch(spec.calibration_inputs(n).float().numpy(), qparams)


def inputs_and_torch_outputs(name, spec, seed=7):
    """The test set of a zoo model (edge, random and real inputs; 1000, ResNet-50 20 unless full=1)
    and torch qnnpack's int8 outputs for it."""
    qmodel = spec.load_quantized()
    graph = import_torch_model(qmodel, spec.example_input(), name)
    n = 20 if name == "resnet50" and not FULL else 1000
    n_real = n // 2
    x = np.concatenate([edge_and_random_inputs(spec.input_shape, n - n_real - 4, seed=seed),
                        real_inputs(spec, graph.inputs[0].qparams, n_real)])
    assert len(x) == n
    expected = np.concatenate([run_torch_int8(qmodel, [x[i:i + 250]], [graph.inputs[0].qparams])[0]
                               for i in range(0, n, 250)])
    return x, expected


@pytest.mark.parametrize("name", zoo_models())
def test_c_library_equals_torch(name, zoo):
    x, expected = inputs_and_torch_outputs(name, zoo[name])
    lib = load_host_library(name)
    got = lib.run(x)
    mismatches = int(np.count_nonzero(got != expected))
    record_test_result(ROOT, "bitexact", name, len(x), int(got.size), mismatches)   # for `scons report`
    assert mismatches == 0, f"{name}: {mismatches} of {got.size} elements differ from torch qnnpack"
