"""Reliability of the host side: hostlib.load's identity check, run() from several threads, the
`inference` application against broken deployment directories (with property tests of its
deploy.cfg parser and of the metadata.json reader), divergence on an NHWC deployment, batch > 1
refused at import, and TVM kernels whose reduction covers one element."""
import concurrent.futures
import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (BUILD, ROOT, build_host_library, compile_host_library, edge_and_random_inputs,
                      generated_dir, host_library_path, inference_app, load_host_library, quantize_ptq)

import hostlib
from hostlib import HostLibError
from hostlib.deployment import read_metadata

INFERENCE = os.path.join(BUILD, "host", "inference")


def lenet_paths():
    return host_library_path("lenet5"), os.path.join(generated_dir("lenet5"), "tvmgen_lenet5.h")


# -- run() from several threads -----------------------------------------------------------------

def test_run_from_eight_threads_equals_single_threaded():
    """One static arena per library: without the per-library lock, threads corrupt each other's
    intermediates (cffi releases the GIL during the call)."""
    lib = load_host_library("residual_cnn")
    other = load_host_library("residual_cnn")       # a second handle on the same file shares the arena
    x = edge_and_random_inputs(lib.inputs[0].shape, 60, seed=21)
    expected = lib.run(x)

    def worker(k):
        use = lib if k % 2 else other
        return [use.run(x[i]) for _ in range(3) for i in range(len(x))]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    wrong = sum(int(np.count_nonzero(y != expected[i % len(x)]))
                for r in results for i, y in enumerate(r))
    assert wrong == 0, f"{wrong} output elements differ from the single-threaded run"


# -- hostlib.load: the library and the header must belong together ------------------------------

def test_identity_is_in_header_and_library_and_hashes_the_c():
    so, header = lenet_paths()
    lib = hostlib.load(so, header)
    source = open(os.path.join(generated_dir("lenet5"), "tvmgen_lenet5.c")).read()
    body = source.split("\n/* Identity of this build")[0]
    assert lib.identity["c_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    assert lib.identity["prefix"] == "tvmgen_lenet5" and lib.identity["output0_size"] == "10"
    assert lib.identity["kernels"] == "c" and len(lib.identity["graph_sha256"]) == 64
    assert f'"{" ".join(f"{k}={v}" for k, v in lib.identity.items())}"' in open(header).read()


def _edited_header(tmp_path, edit):
    _, header = lenet_paths()
    text = edit(open(header).read())
    out = tmp_path / "tvmgen_lenet5.h"
    out.write_text(text)
    return str(out)


BAD_HEADERS = {
    "smaller output": lambda t: t.replace("OUTPUT0_SIZE 10", "OUTPUT0_SIZE 4").replace("{ 1, 10 }", "{ 1, 4 }"),
    "size without shape": lambda t: t.replace("OUTPUT0_SIZE 10", "OUTPUT0_SIZE 4"),
    "other scale": lambda t: re.sub(r"OUTPUT0_SCALE 0x[0-9a-f.p+-]+f", "OUTPUT0_SCALE 0x1p-3f", t),
    "other weights (graph hash)": lambda t: re.sub(r"graph_sha256=[0-9a-f]+", "graph_sha256=" + "0" * 64, t),
    "other C, same kernels": lambda t: re.sub(r"c_sha256=[0-9a-f]+", "c_sha256=" + "1" * 64, t),
    "no identity": lambda t: re.sub(r"#define TVMGEN_LENET5_IDENTITY .*\n", "", t),
    "garbage shape": lambda t: t.replace("{ 1, 10 }", "{ 1, ten }"),
    "no workspace": lambda t: t.replace("WORKSPACE_SIZE", "WORKSPACE"),
}


@pytest.mark.parametrize("what", sorted(BAD_HEADERS))
def test_header_that_does_not_belong_to_the_library_is_refused(what, tmp_path):
    so, _ = lenet_paths()
    header = _edited_header(tmp_path, BAD_HEADERS[what])
    with pytest.raises(HostLibError) as e:
        hostlib.load(so, header)
    assert "lenet5" in str(e.value) or "header" in str(e.value)


def test_another_models_header_and_library_are_refused():
    so, header = lenet_paths()
    with pytest.raises(HostLibError, match="tvmgen_lenet5_identity"):
        hostlib.load(host_library_path("ffn"), header)
    with pytest.raises(HostLibError, match="tvmgen_ffn_identity"):
        hostlib.load(so, os.path.join(generated_dir("ffn"), "tvmgen_ffn.h"))


def _bytes_file(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_broken_files_are_hostlib_errors(tmp_path):
    so, header = lenet_paths()
    blob = open(so, "rb").read()
    rng = np.random.default_rng(0)
    cases = {
        "garbage .so": (_bytes_file(tmp_path, "garbage.so", rng.bytes(20000)), header, "not a shared library"),
        "empty .so": (_bytes_file(tmp_path, "empty.so", b""), header, "not a shared library"),
        "truncated .so": (_bytes_file(tmp_path, "trunc.so", blob[:len(blob) // 2]), header, "truncated"),
        "truncated inside a segment": (_bytes_file(tmp_path, "trunc2.so", blob[:9000]), header, "truncated"),
        "an object file": (_bytes_file(tmp_path, "obj.so", blob[:16] + b"\1\0" + blob[18:]), header,
                           "not a shared library"),
        "a directory": (str(tmp_path), header, "cannot read"),
        "missing .so": (str(tmp_path / "nope.so"), header, "does not exist"),
        "missing header": (so, str(tmp_path / "nope.h"), "does not exist"),
        "binary header": (so, _bytes_file(tmp_path, "bin.h", b"\xff\xfe\x00" + rng.bytes(3000)), "not a text file"),
        "empty header": (so, _bytes_file(tmp_path, "empty.h", b""), "no tvmgen_<name>_run"),
        "the .so as header": (so, so, "not a text file"),
    }
    for what, (s, h, message) in cases.items():
        with pytest.raises(HostLibError) as e:
            hostlib.load(s, h)
        assert message in str(e.value), f"{what}: {e.value}"


def test_library_without_identity_is_refused(tmp_path):
    """A library built before libraries carried an identity (or from hand-made C)."""
    gen = generated_dir("lenet5")
    text = open(os.path.join(gen, "tvmgen_lenet5.c")).read().split("\n/* Identity of this build")[0]
    src = tmp_path / "tvmgen_lenet5.c"
    src.write_text(text)
    shutil.copy(os.path.join(gen, "tvmgen_lenet5.h"), tmp_path)
    compile_host_library(str(src), str(tmp_path / "old.so"))
    with pytest.raises(HostLibError, match="has no symbol tvmgen_lenet5_identity"):
        hostlib.load(str(tmp_path / "old.so"), str(tmp_path / "tvmgen_lenet5.h"))


def test_other_kernels_of_the_same_model_are_accepted(tmp_path):
    """The m7 header with the portable-C library (the firmware comparison does that): same model,
    same ports, same graph hash, bit-exact by contract."""
    from nnc.cli.export import compile_model
    _, _, m7 = compile_model("lenet5", "m7")
    header, _ = m7.write(str(tmp_path))
    lib = hostlib.load(host_library_path("lenet5"), header)
    assert lib.identity["kernels"] == "c" and "kernels=m7" in open(header).read()


# -- batch > 1 is refused at import ---------------------------------------------------------------

def test_batch_above_one_is_refused_at_import():
    import torch
    from nnc.errors import NncError
    from nnc.frontend.model_files import load_model
    from nnc.frontend.torch_eager import import_torch_model
    loaded = load_model("lenet5")
    example = torch.cat([loaded.example_input] * 4)
    with pytest.raises(NncError) as e:
        import_torch_model(loaded.model, example, "lenet5")
    assert "batch size 4" in str(e.value) and "x[:1]" in str(e.value)


# -- TVM kernels: reductions over one element ----------------------------------------------------

def test_tvm_kernels_with_one_element_reductions_are_bit_exact(tmp_path):
    import torch
    import torch.nn as nn
    from nnc import reference
    from nnc.frontend.torch_eager import import_torch_model, run_torch_int8

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.pw = nn.Conv2d(1, 4, 1)                  # 1x1 conv, one input channel
            self.dw = nn.Conv2d(4, 4, 1, groups=4)        # depthwise 1x1
            self.squeeze = nn.Linear(4 * 6 * 6, 1)
            self.fc = nn.Linear(1, 5)                     # Linear(1, n)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def fuse_model(self, qat=False):
            pass

        def forward(self, x):
            x = self.dw(self.pw(self.quant(x)))
            return self.dequant(self.fc(self.squeeze(x.reshape(x.shape[0], -1))))

    torch.manual_seed(4)
    qmodel = quantize_ptq(Net(), "per_channel", torch.randn(64, 1, 6, 6) * 2)
    graph = import_torch_model(qmodel, torch.randn(1, 1, 6, 6), "one_element")
    compiled, lib, _ = build_host_library(copy.deepcopy(graph), "tvm", tmp_path, "one_element")
    heavy = [op for op in compiled.graph.ops if op.kind in ("conv2d", "dense")]
    assert len(heavy) == 4 and all(compiled.kernels[id(op)].provider == "tvm" for op in heavy)
    x = edge_and_random_inputs((1, 1, 6, 6), 996, seed=8)
    got = lib.run(x)
    assert int(np.count_nonzero(got != reference.run(graph, [x])[0])) == 0
    assert int(np.count_nonzero(got != run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0])) == 0
    assert len(np.unique(got)) > 10


# -- the inference application against broken deployments ----------------------------------------

@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from nnc.cli.deploy import deploy
    out = tmp_path_factory.mktemp("dep") / "lenet5"
    deploy("lenet5", str(out))
    if not os.path.exists(INFERENCE):
        pytest.fail(f"{INFERENCE} is missing: run the tests through `./scons host test`")
    return out


def run_inference(directory, runs=1):
    return subprocess.run([INFERENCE, str(directory), "--runs", str(runs)], capture_output=True, text=True)


def _copy(deployment, tmp_path):
    out = tmp_path / "d"
    shutil.copytree(deployment, out)
    return out


def _set_cfg(d, key, value):
    text = (d / "deploy.cfg").read_text()
    (d / "deploy.cfg").write_text(re.sub(rf"^{key} .*$", f"{key} {value}", text, flags=re.M))


def test_inference_good_deployment_is_bit_exact(deployment):
    r = run_inference(deployment)
    assert r.returncode == 0 and "result: bit-exact" in r.stdout, r.stdout + r.stderr


BAD_DEPLOYMENTS = {
    "output0_size 1": (lambda d: _set_cfg(d, "output0_size", "1"), "the library was compiled for 10"),
    "output0_size 0": (lambda d: _set_cfg(d, "output0_size", "0"), "whole number of bytes"),
    "output0_size huge": (lambda d: _set_cfg(d, "output0_size", "99999999999999"), "whole number of bytes"),
    "output0_size -5": (lambda d: _set_cfg(d, "output0_size", "-5"), "whole number of bytes"),
    "input0_size 700": (lambda d: _set_cfg(d, "input0_size", "700"), "the library was compiled for 784"),
    "a second output": (lambda d: open(d / "deploy.cfg", "a").write("output1_size 10\n"), "output(s)"),
    "unknown key": (lambda d: open(d / "deploy.cfg", "a").write("threads 4\n"), "deploy.cfg:5: unknown key"),
    "library outside": (lambda d: _set_cfg(d, "library", "../liblenet5.so"), "inside the deployment"),
    "other run symbol": (lambda d: _set_cfg(d, "run_symbol", "tvmgen_ffn_run"), "no run function"),
    "truncated .so": (lambda d: (d / "liblenet5.so").write_bytes((d / "liblenet5.so").read_bytes()[:20000]),
                      "truncated"),
    "garbage .so": (lambda d: (d / "liblenet5.so").write_bytes(os.urandom(50000)), "no ELF header"),
    "another model's .so": (lambda d: shutil.copy(host_library_path("ffn"), d / "liblenet5.so"), "no run function"),
    "missing input0.bin": (lambda d: (d / "input0.bin").unlink(), "cannot open"),
    "short input0.bin": (lambda d: (d / "input0.bin").write_bytes(b"\0" * 783), "holds 783 bytes"),
    "long ref_result": (lambda d: (d / "ref_result_0.bin").write_bytes(b"\0" * 11), "holds more than 10"),
    "missing ref_result": (lambda d: (d / "ref_result_0.bin").unlink(), "cannot open"),
    "missing deploy.cfg": (lambda d: (d / "deploy.cfg").unlink(), "deploy.cfg"),
    "NUL in deploy.cfg": (lambda d: (d / "deploy.cfg").write_bytes((d / "deploy.cfg").read_bytes()
                                                                   .replace(b"10\n", b"10\0x\n")), "NUL"),
}


@pytest.mark.parametrize("what", sorted(BAD_DEPLOYMENTS))
def test_inference_refuses_a_broken_deployment(what, deployment, tmp_path):
    d = _copy(deployment, tmp_path)
    edit, message = BAD_DEPLOYMENTS[what]
    edit(d)
    r = run_inference(d)
    assert r.returncode == 2, f"{what}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    assert message in r.stderr, r.stderr
    assert "bit-exact" not in r.stdout


def test_inference_usage_errors(deployment):
    for args, message in ((["--runs"], "--runs needs a positive integer"),
                          ([str(deployment), "--runs", "0"], "--runs needs a positive integer"),
                          ([str(deployment), "--runs", "99999999999999999999"], "positive integer"),
                          ([str(deployment), "--fast"], "unknown option"),
                          ([str(deployment), str(deployment)], "unexpected argument"),
                          ([], "no deployment directory")):
        r = subprocess.run([INFERENCE, *args], capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and "bit-exact" not in r.stdout, (args, r.stderr)


def test_inference_reports_a_wrong_reference_with_exit_1(deployment, tmp_path):
    d = _copy(deployment, tmp_path)
    ref = bytearray((d / "ref_result_0.bin").read_bytes())
    ref[3] = (ref[3] + 1) % 256
    (d / "ref_result_0.bin").write_bytes(bytes(ref))
    r = run_inference(d)
    assert r.returncode == 1 and "MISMATCH" in r.stdout and "correct ratio 0.900000" in r.stdout


def test_inference_accepts_comments_and_a_bom(deployment, tmp_path):
    d = _copy(deployment, tmp_path)
    (d / "deploy.cfg").write_bytes(b"\xef\xbb\xbf# written by hand\n\n" + (d / "deploy.cfg").read_bytes())
    r = run_inference(d)
    assert r.returncode == 0, r.stderr


CFG_KEYS = ("library", "run_symbol", "input0_size", "output0_size", "output1_size", "input9_size", "x")


def _accepted(cfg: bytes, valid: dict) -> bool:
    """The rules deploy.cfg is read by (hostlib/inference.c), for the property test's oracle."""
    seen = {}
    for number, line in enumerate(cfg.split(b"\n"), 1):
        if b"\0" in line or len(line) > 1000:
            return False
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        tokens = line.split()
        if not tokens or tokens[0].startswith(b"#"):
            continue
        if len(tokens) != 2:
            return False
        key, value = (t.decode("latin-1") for t in tokens)
        if key in seen:
            return False
        if key.endswith("_size"):
            if not (value.isdigit() and len(value) <= 10 and value.isascii()):
                return False
            value = str(int(value))
        seen[key] = value
    return seen == valid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_deploy_cfg_never_crashes_never_passes_bad_input(deployment, tmp_path_factory, data):
    d = tmp_path_factory.mktemp("fuzz")
    for f in os.listdir(deployment):
        if f != "deploy.cfg":
            os.symlink(deployment / f, d / f)
    valid = {"library": "liblenet5.so", "run_symbol": "tvmgen_lenet5_run", "input0_size": "784",
             "output0_size": "10"}
    lines = [f"{k} {v}".encode() for k, v in valid.items()]
    value = st.one_of(st.sampled_from(["0", "1", "10", "784", "0010", "-1", "1e3", "99999999999",
                                       "liblenet5.so", "tvmgen_lenet5_run", "", "a b"]),
                      st.integers(-2**40, 2**40).map(str), st.text(max_size=12))
    for _ in range(data.draw(st.integers(0, 4))):
        how = data.draw(st.sampled_from(["drop", "duplicate", "value", "line", "bytes"]))
        i = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        if how == "drop" and lines:
            lines.pop(i)
        elif how == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif how == "value" and lines:
            lines[i] = lines[i].split(b" ")[0] + b" " + data.draw(value).encode("utf-8", "replace")
        elif how == "line":
            lines.insert(i, f"{data.draw(st.sampled_from(CFG_KEYS))} {data.draw(value)}".encode("utf-8", "replace"))
        else:
            lines.insert(i, data.draw(st.binary(max_size=40)))
    cfg = b"\n".join(lines) + b"\n"
    (d / "deploy.cfg").write_bytes(cfg)
    r = subprocess.run([INFERENCE, str(d), "--runs", "1"], capture_output=True)
    assert r.returncode in (0, 2), f"exit {r.returncode} (a signal is negative) on {cfg!r}"
    assert b"Traceback" not in r.stderr
    assert (r.returncode == 0) == _accepted(cfg, valid), f"exit {r.returncode} on {cfg!r}: {r.stderr!r}"


def test_metadata_reader_on_a_real_deployment(deployment):
    meta = read_metadata(str(deployment))
    assert meta == {"name": "lenet5", "prefix": "tvmgen_lenet5", "layout": "nchw", "kernels": "c",
                    "library": "liblenet5.so", "header": "tvmgen_lenet5.h", "source": "tvmgen_lenet5.c"}


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_metadata_reader_raises_only_hostlib_errors(deployment, tmp_path_factory, data):
    doc = json.loads((deployment / "metadata.json").read_text())
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.sampled_from(sorted(doc) + ["compiler_options"]))
        how = data.draw(st.sampled_from(["drop", "value"]))
        if how == "drop":
            doc.pop(key, None)
        else:
            doc[key] = data.draw(JSON_VALUES)
    raw = json.dumps(doc).encode()
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=8))
    d = tmp_path_factory.mktemp("meta")
    (d / "metadata.json").write_bytes(raw)
    try:
        meta = read_metadata(str(d))
    except HostLibError as e:
        assert "metadata.json" in str(e)
        return
    assert meta["layout"] in ("nchw", "nhwc") and meta["kernels"] in ("c", "tvm", "m7")
    assert "/" not in meta["library"] + meta["header"] + meta["source"]


# -- divergence on the README's NHWC deployment ---------------------------------------------------

@pytest.mark.parametrize("model,kernels", [("residual_cnn", "c"), ("lenet5", "m7")])
def test_divergence_on_an_nhwc_deployment(model, kernels, tmp_path):
    """The README's flow with layout=nhwc; with kernels=m7 the fused conv+pool layers line up too."""
    from nnc.cli.deploy import deploy
    out = tmp_path / "nhwc"
    deploy(model, str(out), layout="nhwc", kernels=kernels)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "divergence.py"), "--model", model,
                        "--c-source", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no divergence" in r.stdout and "transpose" in r.stdout
    # every layer's C output was captured and compared; every layer after the transpose with torch too
    rows = [l for l in r.stdout.splitlines()[1:] if re.match(r"\s+\d+ ", l)]
    assert len(rows) > 5 and all(l.rstrip().endswith("0 (max 0)") for l in rows)
    assert all(l.count("0 (max 0)") == 2 for l in rows[1:])
    if kernels == "m7":
        assert "conv2d_maxpool2d" in r.stdout


def test_divergence_errors_are_clean(tmp_path, deployment):
    tool = [sys.executable, os.path.join(ROOT, "tools", "divergence.py")]
    bad_meta = _copy(deployment, tmp_path)
    (bad_meta / "metadata.json").write_bytes(b"\xff{")
    cases = {
        "other model": (["--model", "ffn", "--c-source", str(deployment)], "deployment of 'lenet5'"),
        "bad metadata": (["--model", "lenet5", "--c-source", str(bad_meta)], "not valid JSON"),
        "not a directory": (["--model", "lenet5", "--c-source", str(tmp_path / "none")], "not a directory"),
        "negative seed": (["--model", "lenet5", "--seed", "-3"], "--seed must be 0 or more"),
    }
    for what, (args, message) in cases.items():
        r = subprocess.run(tool + args, capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, f"{what}: {r.stderr}"


# -- deploy and divergence of factory files (not zoo models) ---------------------------------------
CONV_FACTORY = ("import torch, torch.nn as nn\n"
                "def build():\n"
                "    torch.manual_seed(0)\n"
                "    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 4, 5))\n"
                "    return m.eval(), torch.rand(1, 3, 5, 6)\n")
MLP_FACTORY = ("import torch, torch.nn as nn\n"
               "def build():\n"
               "    torch.manual_seed(0)\n"
               "    return nn.Sequential(nn.Linear(13, 7), nn.Tanh(), nn.Linear(7, 3)).eval(), torch.rand(1, 13)\n")


@pytest.mark.parametrize("which", ["conv", "mlp"])
def test_deploy_and_divergence_of_a_float_factory_in_nhwc(which, tmp_path, capsys):
    """A float factory needs --calibration, which deploy and divergence accept as export does (they
    told the user to pass it and had no such option); an NHWC deployment of a model file gets a
    sample input in its layout (it was transposed a second time, and a 2-D input, which NHWC
    leaves as it is, was transposed at all: internal errors); divergence --c-source takes the
    factory that made the deployment (it asked for the deployment's name)."""
    from nnc.cli.main import main
    (tmp_path / "net.py").write_text(CONV_FACTORY if which == "conv" else MLP_FACTORY)
    shape = (64, 3, 5, 6) if which == "conv" else (64, 13)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random(shape, dtype=np.float32))
    model, calib, out = f"{tmp_path}/net.py:build", f"npy:{tmp_path}/calib.npy", tmp_path / "deploy"
    assert main(["deploy", "--model", model, "--calibration", calib, "--layout", "nhwc", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["inputs"][0]["shape"] == ([1, 5, 6, 3] if which == "conv" else [1, 13])
    assert np.fromfile(out / "input0.bin", dtype=np.int8).size == int(np.prod(shape[1:]))
    r = subprocess.run([inference_app(), str(out), "--runs", "1"], capture_output=True, text=True)
    assert r.returncode == 0 and "result: bit-exact" in r.stdout, r.stdout + r.stderr
    capsys.readouterr()
    assert main(["divergence", "--debug", "--model", model, "--calibration", calib, "--c-source", str(out)]) == 0, capsys.readouterr().err
    assert "no divergence" in capsys.readouterr().out
