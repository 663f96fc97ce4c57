"""Deployment directories, the `inference` app and the divergence finder (seed 001's flow)."""
import io
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import inference_app

from nnc.cli.deploy import deploy
from nnc.cli.divergence import find_divergence
from nnc.toolchains import host_shared_library



def run_inference(directory, runs=5):
    return subprocess.run([inference_app(), str(directory), "--runs", str(runs)], capture_output=True, text=True)


@pytest.mark.parametrize("model", ["lenet5", "resnet18"])
def test_deployment_runs_bit_exact(model, tmp_path):
    out = tmp_path / model
    meta = deploy(model, str(out))
    for f in ("deploy.cfg", "metadata.json", "input0.bin", "ref_result_0.bin", f"lib{model}.so",
              f"tvmgen_{model}.c", f"tvmgen_{model}.h"):
        assert (out / f).exists(), f
    assert meta["reference"].startswith("torch")
    r = run_inference(out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "correct ratio 1.000000" in r.stdout
    assert re.search(r"mean latency: [0-9.]+ ms", r.stdout)


def test_corrupted_weight_is_caught_and_located(tmp_path):
    out = tmp_path / "lenet5"
    deploy("lenet5", str(out))
    src = out / "tvmgen_lenet5.c"
    text = src.read_text()
    # Corrupt conv2 (the middle of the network): drive the first line of its weights to the
    # opposite extreme, enough to change the final output on the deployment input.
    start = text.index("tvmgen_lenet5_conv2_weight[")
    body = text.index("{", start) + 1
    line_end = text.index("\n", body + 1)
    values = [int(v) for v in text[body:line_end].strip().rstrip(",").split(",")]
    flipped = ", ".join(str(127 if v < 0 else -128) for v in values)
    text = text[:body] + f"\n    {flipped}," + text[line_end:]
    src.write_text(text)
    host_shared_library([str(src)], str(out / "liblenet5.so"), include_dirs=[str(out)])

    r = run_inference(out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MISMATCH" in r.stdout

    report = io.StringIO()
    rows, first = find_divergence("lenet5", str(out), out=report)
    assert first is not None and first[0] == "conv2", report.getvalue()
    assert first[1] == ["c"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["conv1"]["c"][0] == 0          # layers before the corruption agree


def test_nhwc_and_nchw_deployments_agree(tmp_path):
    import hostlib
    a = deploy("residual_cnn", str(tmp_path / "nchw"), layout="nchw")
    b = deploy("residual_cnn", str(tmp_path / "nhwc"), layout="nhwc")
    assert a["inputs"][0]["shape"] != b["inputs"][0]["shape"]
    ref_a = np.fromfile(tmp_path / "nchw" / "ref_result_0.bin", dtype=np.int8)
    ref_b = np.fromfile(tmp_path / "nhwc" / "ref_result_0.bin", dtype=np.int8)
    assert np.array_equal(ref_a, ref_b)
    lib_a = hostlib.load(str(tmp_path / "nchw" / "libresidual_cnn.so"), str(tmp_path / "nchw" / "tvmgen_residual_cnn.h"))
    lib_b = hostlib.load(str(tmp_path / "nhwc" / "libresidual_cnn.so"), str(tmp_path / "nhwc" / "tvmgen_residual_cnn.h"))
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(200,) + tuple(lib_a.inputs[0].shape[1:])).astype(np.int8)
    assert np.array_equal(lib_a.run(x), lib_b.run(np.ascontiguousarray(x.transpose(0, 2, 3, 1))))
    for d in ("nchw", "nhwc"):
        assert run_inference(tmp_path / d).returncode == 0


def test_inference_usage_errors(tmp_path):
    r = run_inference(tmp_path / "missing")
    assert r.returncode == 2 and "deploy.cfg" in r.stderr


def test_deploy_cli_bad_model_leaves_nothing(tmp_path):
    import sys
    from conftest import ROOT
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "deploy.py"), "--model", "nope",
                        "--out", str(tmp_path / "d")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".deploy-")]
