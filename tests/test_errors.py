"""Every user mistake gets a clear message, a non-zero exit and no half-written output."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from conftest import ROOT

from nnc.errors import NncError
from nnc.frontend.torch_eager import import_torch_model

torch.backends.quantized.engine = "qnnpack"


def quantize(model, shape):
    model.eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.rand(shape))
    return torch.ao.quantization.convert(prepared)


class WithSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(1, 2, 3)
        self.act = nn.PReLU()        # converted to a quantized PReLU, which nnc does not compile
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.act(self.conv(self.quant(x))))


class FloatLeftOver(nn.Module):
    """A Conv2d that stays float: its qconfig was switched off before prepare()."""
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(1, 2, 3)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.conv(self.quant(x)))


class NoQuantStub(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x)


def test_unsupported_module_names_node_op_and_supported_list():
    q = quantize(WithSigmoid(), (4, 1, 8, 8))
    with pytest.raises(NncError) as e:
        import_torch_model(q, torch.rand(1, 1, 8, 8), "bad")
    msg = e.value.format()
    assert "fx node 'act'" in msg and "PReLU" in msg
    assert "supported are" in msg and "Conv2d" in msg
    assert "test_errors.py" in msg and "line" in msg     # the user's forward() line


def test_float_module_left_in_quantized_model():
    m = FloatLeftOver().eval()
    m.qconfig = torch.ao.quantization.get_default_qconfig("qnnpack")
    m.conv.qconfig = None
    p = torch.ao.quantization.prepare(m)
    p(torch.rand(2, 1, 8, 8))
    q = torch.ao.quantization.convert(p)
    with pytest.raises(NncError, match="fx node 'conv'"):
        import_torch_model(q, torch.rand(1, 1, 8, 8), "bad")


def test_model_without_quantstub():
    with pytest.raises(NncError):
        import_torch_model(NoQuantStub().eval(), torch.rand(1, 1, 8, 8), "bad")


def test_export_cli_unknown_model_fails_cleanly(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export.py"), "--model", "nope",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "nope" in r.stderr and "lenet5" in r.stderr
    assert not out.exists()


def test_scons_unknown_model_fails_cleanly():
    r = subprocess.run([sys.executable, "-m", "SCons", "-C", ROOT, "-Q", "model=nope", "host"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "unknown model 'nope'" in r.stdout + r.stderr


class SampleMixing(nn.Module):
    """One sample in, but an op makes a tensor without a batch axis of size 1."""
    def __init__(self, how):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(1, 2, 3)
        self.f = torch.ao.nn.quantized.FloatFunctional()
        self.dequant = torch.ao.quantization.DeQuantStub()
        self.how = how

    def forward(self, x):
        y = self.conv(self.quant(x))
        if self.how == "cat":
            y = self.f.cat([y, y], dim=0)
        elif self.how == "flatten":
            y = y.flatten()
        return self.dequant(y)


@pytest.mark.parametrize("how, layer, what", [("cat", "cat", "batch size 2"),
                                               ("flatten", "flatten", "no batch axis")])
def test_op_that_leaves_batch_one_is_refused(how, layer, what):
    """cat along dim 0 of one sample made an output of batch 2, flatten() one without a batch axis:
    the C wrote the whole tensor per run into hostlib's buffer of one sample's size (shape[1:]),
    and the reference raised a ValueError. Now an NncError names the layer, at import and at compile."""
    from nnc.compiler import compile_graph
    from nnc.ir import check_batch_one
    from nnc.targets.cpu import CpuTarget
    q = quantize(SampleMixing(how), (4, 1, 5, 5))
    with pytest.raises(NncError) as e:
        import_torch_model(q, torch.rand(1, 1, 5, 5), "mix")
    assert f"layer '{layer}'" in e.value.format() and what in str(e.value) and "dim 0" in e.value.fix
    ok = import_torch_model(quantize(SampleMixing("none"), (4, 1, 5, 5)), torch.rand(1, 1, 5, 5), "ok")
    check_batch_one(ok)
    ok.ops[-1].outputs[0].shape = (2,) + tuple(ok.ops[-1].outputs[0].shape)[1:]
    with pytest.raises(NncError):
        compile_graph(ok, CpuTarget())


class ConvThenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 6 * 6, 3)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.fc(self.conv(self.quant(x)).flatten(1)))


@pytest.mark.parametrize("side", [5, 7])
def test_linear_given_the_wrong_number_of_features(side):
    """torch's quantized Linear (qnnpack) runs on 50 or 98 features where it has weights for 72
    (reading the first 72, or past the end): an example input of the wrong size exported C that
    computed on truncated (or out-of-bounds) data. Now the import names the layer and both sizes."""
    q = quantize(ConvThenLinear(), (4, 1, 6, 6))
    with pytest.raises(NncError) as e:
        import_torch_model(q, torch.rand(1, 1, side, side), "wrong_size")
    msg = e.value.format()
    assert f"Linear with 72 input features is given {2 * side * side}" in msg and "fx node 'fc'" in msg
    assert "test_errors.py" in msg                     # the user's forward() line
    import_torch_model(q, torch.rand(1, 1, 6, 6), "right_size")
