"""Model zoo: registry API, committed checkpoints, data, recipes (QAT and PTQ, per-tensor and
per-channel) and the CLIs. Torch only; the C comparisons live in the core tests."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from models import MODELS, data, get, nets, quant, recipes  # noqa: E402

torch.set_num_threads(1)
ALL = list(MODELS)
COMPILABLE = [n for n in ALL if not MODELS[n].stateful]


def _torch_int8_output(qmodel, x):
    """The quantized tensor the model dequantizes at its end, as int8 (quint8 - 128)."""
    deq = [m for m in qmodel.modules() if isinstance(m, torch.ao.nn.quantized.DeQuantize)][-1]
    box = {}
    h = deq.register_forward_pre_hook(lambda m, inp: box.__setitem__("q", inp[0]))
    with torch.no_grad():
        qmodel(x)
    h.remove()
    q = box["q"]
    r = q.int_repr().numpy().astype(np.int16)
    return (r - 128 if q.dtype == torch.quint8 else r).astype(np.int8)


def _int8_input(qmodel, x):
    qs = [m for m in qmodel.modules() if isinstance(m, torch.ao.nn.quantized.Quantize)][0]
    q = qs(x)
    return (q.int_repr().numpy().astype(np.int16) - 128).astype(np.int8)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
def test_registry_has_the_required_models():
    for name in ("lenet5", "mnist_cnn", "ffn", "stateful", "resnet18", "resnet50", "residual_cnn"):
        s = get(name)
        assert s.name == name
        assert s.recipe in ("qat", "ptq")
        assert s.input_shape[0] == 1
        assert s.checkpoint.startswith("models/checkpoints/")
        assert isinstance(s.fits_stm32, bool) and s.description
    assert get("lenet5").recipe == "qat" and get("mnist_cnn").recipe == "ptq"
    assert get("mnist_cnn").fits_stm32 is False
    assert get("lenet5").scheme == "per_tensor" and get("residual_cnn").scheme == "per_channel"


def test_unknown_model_lists_known_ones():
    with pytest.raises(KeyError) as e:
        get("nope")
    msg = str(e.value)
    assert "nope" in msg and all(n in msg for n in ALL)


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_loads_fast_and_runs(name):
    spec = get(name)
    assert os.path.isfile(spec.path()), f"missing {spec.checkpoint}"
    t0 = time.process_time()   # CPU time: other jobs on the machine do not count
    q = spec.load_quantized()
    assert time.process_time() - t0 < 2.0
    assert torch.backends.quantized.engine == "qnnpack"
    assert not q.training
    x = spec.example_input()
    assert x.dtype == torch.float32 and tuple(x.shape) == tuple(spec.input_shape)
    with torch.no_grad():
        y1 = q(x)
        y2 = spec.load_quantized()(x)
    assert torch.equal(y1, y2), "loading is not deterministic"
    assert torch.isfinite(y1).all()
    f = spec.load_float()
    with torch.no_grad():
        assert f(x).shape == y1.shape


@pytest.mark.parametrize("name", ALL)
def test_calibration_inputs_are_real_data(name):
    spec = get(name)
    for n in (7, 1500):
        c = spec.calibration_inputs(n)
        assert c.dtype == torch.float32 and tuple(c.shape) == (n,) + tuple(spec.input_shape[1:])
    if spec.dataset != "ffn_synthetic":
        assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
        # distinct images, not one repeated
        assert len(np.unique(c.reshape(n, -1).numpy(), axis=0)) > 0.95 * n


# ---------------------------------------------------------------------------------------------
# accuracy of the committed checkpoints
# ---------------------------------------------------------------------------------------------
def test_lenet5_int8_accuracy_at_least_97_percent():
    spec = get("lenet5")
    held = spec.heldout()
    assert len(held) >= 300
    acc = recipes.metric("classify", recipes.predict(spec.load_quantized(), held.x), held)
    assert acc >= 0.97, acc


@pytest.mark.parametrize("name", ["mnist_cnn", "residual_cnn", "resnet18", "resnet50", "stateful"])
def test_digit_models_are_trained(name):
    spec = get(name)
    held = spec.heldout()
    acc = recipes.metric("classify", recipes.predict(spec.load_quantized(), held.x), held)
    assert acc >= 0.85, acc


def test_ffn_int8_mse_within_10_percent_of_float():
    spec = get("ffn")
    held = spec.heldout()
    f = recipes.metric("regress", recipes.predict(spec.load_float(), held.x), held)
    i = recipes.metric("regress", recipes.predict(spec.load_quantized(), held.x), held)
    assert i <= 1.10 * f, (f, i)
    assert f < 0.02     # noise variance is 0.01: the float model has learned the function


# ---------------------------------------------------------------------------------------------
# the importer accepts the zoo; its golden reference agrees with torch
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMPILABLE)
def test_importer_accepts_committed_model(name):
    from nnc.frontend.torch_eager import import_torch_model
    spec = get(name)
    q = spec.load_quantized()
    g = import_torch_model(q, spec.example_input(), name)
    assert g.inputs and g.outputs and g.ops
    schemes = {op.attrs.get("weight_scheme") for op in g.ops} - {None}
    assert schemes == {spec.scheme}


@pytest.mark.parametrize("name", [n for n in COMPILABLE if n != "resnet50"])
def test_reference_interpreter_matches_torch(name):
    from nnc import reference
    from nnc.frontend.torch_eager import import_torch_model
    spec = get(name)
    q = spec.load_quantized()
    g = import_torch_model(q, spec.example_input(), name)
    x = spec.calibration_inputs(32)
    want = _torch_int8_output(q, x)
    got = reference.run(g, [_int8_input(q, x)])[0]
    assert np.array_equal(got.reshape(want.shape), want)


def test_stateful_model_is_not_compilable_but_says_why():
    from nnc.errors import NncError
    from nnc.frontend.torch_eager import import_torch_model
    spec = get("stateful")
    with pytest.raises(NncError):
        import_torch_model(spec.load_quantized(), spec.example_input(), "stateful")


# ---------------------------------------------------------------------------------------------
# recipes from scratch: QAT and PTQ, per-tensor and per-channel
# ---------------------------------------------------------------------------------------------
def _small_digits(n=256):
    train, held = data.digits(28)
    return data.Split(train.x[:n], train.y[:n]), held


def test_qat_path_produces_an_importable_model():
    from nnc.frontend.torch_eager import import_torch_model
    train, held = _small_digits()
    torch.manual_seed(0)
    m = quant.prepare_qat(nets.LeNet5(), "per_tensor")
    recipes.train_classifier(m, train, epochs=1, lr=3e-3, batch_size=64, seed=0, progress=False,
                             epoch_hook=recipes.qat_epoch_hook(1, 1))
    q = quant.convert(m)
    g = import_torch_model(q, torch.from_numpy(held.x[:1]), "lenet5_qat_test")
    assert {op.attrs.get("weight_scheme") for op in g.ops} - {None} == {"per_tensor"}


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_ptq_path_produces_an_importable_model(scheme):
    from nnc import reference
    from nnc.frontend.torch_eager import import_torch_model
    train, held = _small_digits()
    torch.manual_seed(0)
    m = nets.ResidualCNN()
    recipes.train_classifier(m, train, epochs=1, lr=3e-3, batch_size=64, seed=0, progress=False)
    q = recipes.ptq(m.eval(), scheme, train.x[:64], progress=False)
    g = import_torch_model(q, torch.from_numpy(held.x[:1]), f"residual_{scheme}")
    assert {op.attrs.get("weight_scheme") for op in g.ops} - {None} == {scheme}
    assert any(op.kind == "add" for op in g.ops)
    x = torch.from_numpy(held.x[:16])
    got = reference.run(g, [_int8_input(q, x)])[0]
    assert np.array_equal(got.reshape(-1, 10), _torch_int8_output(q, x))


def test_ptq_of_a_qat_trained_float_network(tmp_path):
    """tools/quantize.py --model lenet5: PTQ of the QAT-trained weights also compiles."""
    out = tmp_path / "lenet5_ptq.pt"
    r = _cli("quantize.py", "--model", "lenet5", "--out", str(out), "--calib", "64", "--quiet")
    assert r.returncode == 0, r.stderr
    from nnc.frontend.torch_eager import import_torch_model
    spec = get("lenet5")
    import_torch_model(spec.load_quantized(str(out)), spec.example_input(), "lenet5_ptq")


# ---------------------------------------------------------------------------------------------
# stateful model
# ---------------------------------------------------------------------------------------------
def test_stateful_state_carries_between_frames():
    spec = get("stateful")
    for model in (spec.load_float(), spec.load_quantized()):
        model.reset_state()
        x = spec.example_input()
        with torch.no_grad():
            a = model(x)
            s1 = model.state.clone()
            b = model(x)
            s2 = model.state.clone()
        assert s1.abs().sum() > 0 and not torch.equal(s1, s2)
        assert torch.allclose(s2, 2 * s1, atol=0.05 * float(s1.abs().max()) + 0.1)
        assert not torch.equal(a, b)
        model.reset_state()
        with torch.no_grad():
            assert torch.equal(model(x), a)


# ---------------------------------------------------------------------------------------------
# ResNets: architecture and users' own checkpoints
# ---------------------------------------------------------------------------------------------
def test_resnet_depths_and_user_checkpoint(tmp_path):
    torch.manual_seed(0)
    user = nets.QuantizableResNet(depth=18, num_classes=5, in_channels=3, width=8, stem="imagenet")
    # torchvision-style bare state_dict
    path = tmp_path / "my_resnet18.pth"
    torch.save(user.state_dict(), path)
    cfg = nets.resnet_config_from_state_dict(torch.load(path), 18)
    assert cfg == dict(depth=18, num_classes=5, in_channels=3, width=8, stem="imagenet")
    out = tmp_path / "my_resnet18_int8.pt"
    r = _cli("quantize.py", "--model", "resnet18", "--float-checkpoint", str(path), "--calib-data",
             "random", "--calib", "4", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    q = get("resnet18").load_quantized(str(out))
    with torch.no_grad():
        assert q(torch.rand(1, 3, 224, 224)).shape == (1, 5)
    assert q.config["stem"] == "imagenet"


def test_resnet50_uses_bottlenecks():
    m = get("resnet50").build()
    assert sum(isinstance(b, nets.Bottleneck) for b in m.modules()) == 16
    assert sum(isinstance(b, nets.BasicBlock) for b in get("resnet18").build().modules()) == 8


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def test_digits_split_is_deterministic_and_normalised():
    train, held = data.digits(28)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == np.float32
    assert len(train) + len(held) == 1797 and len(held) == 359
    assert train.x.min() >= 0 and train.x.max() <= 1 and train.x.max() > 0.9
    # k/255 values, as ToTensor gives
    assert np.allclose(np.rint(train.x * 255) / 255, train.x)
    data._DIGITS_CACHE.clear()
    t2, h2 = data.digits(28)
    assert np.array_equal(h2.x, held.x) and np.array_equal(t2.y, train.y)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loader(tmp_path, gz):
    import gzip
    import struct
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 12), ("t10k", 5)):
        imgs = rng.randint(0, 256, size=(n, 28, 28)).astype(np.uint8)
        lbls = rng.randint(0, 10, size=n).astype(np.uint8)
        for suffix, arr, magic in (("images-idx3-ubyte", imgs, 0x0803), ("labels-idx1-ubyte", lbls, 0x0801)):
            raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()
            p = tmp_path / f"{prefix}-{suffix}"
            if gz:
                with gzip.open(str(p) + ".gz", "wb") as f:
                    f.write(raw)
            else:
                p.write_bytes(raw)
        if prefix == "t10k":
            want_x, want_y = imgs, lbls
    train, test = data.image_data(f"mnist:{tmp_path}")
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert np.array_equal(test.y, want_y) and np.allclose(test.x[:, 0] * 255, want_x)


def test_mnist_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte"):
        data.image_data(f"mnist:{tmp_path}")
    with pytest.raises(data.DataError, match="digits"):
        data.image_data("cifar")


def test_ffn_generator_is_seeded():
    a, _ = data.ffn_synthetic(100, seed=1)
    b, _ = data.ffn_synthetic(100, seed=1)
    c, _ = data.ffn_synthetic(100, seed=2)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y) and not np.array_equal(a.x, c.x)
    assert a.x.shape == (80, 2) and a.y.shape == (80, 1)


# ---------------------------------------------------------------------------------------------
# CLIs
# ---------------------------------------------------------------------------------------------
def _cli(script, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("script", ["train.py", "quantize.py", "evaluate.py"])
def test_cli_help_and_user_errors(script):
    r = _cli(script, "--help")
    assert r.returncode == 0 and "--model" in r.stdout
    r = _cli(script, "--model", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nope" in r.stderr and "lenet5" in r.stderr


def test_cli_bad_data_spec_is_a_user_error(tmp_path):
    r = _cli("evaluate.py", "--model", "lenet5", "--data", f"mnist:{tmp_path}/none", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr


def test_benchmark_only_models_refuse_accuracy_and_real_data():
    r = _cli("evaluate.py", "--model", "mlperf_dscnn", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "benchmark-only" in r.stderr
    r = _cli("train.py", "--model", "mlperf_resnet8", "--data", "digits", "--no-save", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "synthetic inputs" in r.stderr


def test_benchmark_only_weights_are_remade_exactly(tmp_path):
    """`train.py` re-makes a benchmark-only network's committed int8 checkpoint bit for bit."""
    import torch
    from models import registry
    r = _cli("train.py", "--model", "mlperf_dscnn", "--out-dir", str(tmp_path), "--quiet")
    assert r.returncode == 0, r.stderr
    spec = registry.get("mlperf_dscnn")
    made = spec.load_quantized(str(tmp_path / "mlperf_dscnn_int8.pt")).state_dict()
    committed = spec.load_quantized().state_dict()
    assert made.keys() == committed.keys()
    for k, v in committed.items():
        if isinstance(v, torch.Tensor):
            a, b = (t.int_repr() if t.is_quantized else t for t in (made[k], v))
            assert torch.equal(a, b), k


def test_evaluate_cli_reports_fp32_and_int8():
    r = _cli("evaluate.py", "--model", "lenet5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "fp32 accuracy" in r.stdout and "int8 accuracy" in r.stdout


def test_train_cli_quick_run_writes_loadable_checkpoints(tmp_path):
    r = _cli("train.py", "--model", "ffn", "--epochs", "1", "--n_samples", "500", "--out-dir",
             str(tmp_path), "--quiet")
    assert r.returncode == 0, r.stderr
    spec = get("ffn")
    q = spec.load_quantized(str(tmp_path / "ffn_int8.pt"))
    assert q(torch.zeros(1, 2)).shape == (1, 1)
