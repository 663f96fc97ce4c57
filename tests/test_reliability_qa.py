"""The seeds' workflows misused as a careless or hostile user would: each test is one mistake
found by running the README's commands with wrong files, and checks that the tool names what
is wrong and where, exits non-zero, and prints no traceback through nnc's code.
"""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, require_tools
from test_reliability_writers import run_tool


def test_serial_client_refuses_a_file_that_is_not_an_elf(tmp_path):
    """Passing a text file as the firmware used to crash QEMU and end in a pyserial traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for flag in ("--qemu", "--native"):
        r = run_tool("serial_client.py", flag, notes, "--random", "1")
        assert r.returncode == 2, r.stderr
        assert f"{notes} is not an ELF file" in r.stderr
        assert "build it: scons board=" in r.stderr


def test_serial_client_reports_qemu_dying_instead_of_a_traceback(tmp_path):
    """An ELF for the wrong machine (an x86 program) makes QEMU abort: the client says the
    connection was lost, that QEMU exited and with what words; exit 1, no traceback."""
    require_tools("qemu-system-arm", "gcc", needed_for="to run an x86 ELF under QEMU")
    src, elf = tmp_path / "main.c", tmp_path / "x86.elf"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", str(src), "-o", str(elf)], check=True)
    r = run_tool("serial_client.py", "--qemu", elf, "--random", "1", "--timeout", "10")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "connection to the firmware lost" in r.stderr or "timeout" in r.stderr, r.stderr
    assert "QEMU exited with status" in r.stderr, r.stderr


def test_quantize_calibration_npy_that_is_hostile_truncated_or_text(tmp_path):
    """quantize.py --calib-data npy:FILE used to end in numpy's traceback (exit 1) for a pickled
    object array, a truncated file or strings; now exit 2 naming the file, nothing written, and
    the pickle's payload never runs."""
    import numpy as np

    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    good = tmp_path / "good.npy"
    np.save(good, np.zeros((4, 1, 28, 28), np.float32))
    np.save(tmp_path / "pickle.npy", np.array([Payload()], dtype=object), allow_pickle=True)
    (tmp_path / "truncated.npy").write_bytes(good.read_bytes()[:200])
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    out = tmp_path / "int8.pt"
    for name in ("pickle.npy", "truncated.npy", "text.npy"):
        r = run_tool("quantize.py", "--model", "lenet5", "--calib-data", f"npy:{tmp_path / name}",
                     "--calib", "4", "--out", out, "--no-eval", "--quiet")
        assert r.returncode == 2, r.stderr
        assert f"calibration file '{tmp_path / name}' " in r.stderr   # says what: unreadable, strings
        assert "is not a readable numeric .npy array" in r.stderr or "holds <U1 values" in r.stderr
        assert not out.exists() and not marker.exists()


def test_divergence_with_c_that_does_not_compile(tmp_path):
    """divergence.py --c-source DIR whose C does not compile (or has no header) used to end in a
    RuntimeError / IndexError traceback with exit 1; now exit 2 with the compiler's words."""
    gen = os.path.join(ROOT, "build", "gen", "c", "lenet5")
    if not os.path.isfile(os.path.join(gen, "tvmgen_lenet5.h")):
        pytest.skip("build/gen/c/lenet5 missing: run ./scons host model=lenet5")
    c = tmp_path / "tvmgen_lenet5.c"
    c.write_text("int x = ;\n")
    r = run_tool("divergence.py", "--model", "lenet5", "--c-source", tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"no tvmgen_lenet5.h in {tmp_path}" in r.stderr
    shutil.copy(os.path.join(gen, "tvmgen_lenet5.h"), tmp_path)
    r = run_tool("divergence.py", "--model", "lenet5", "--c-source", tmp_path)
    assert r.returncode == 2, r.stderr
    assert f"error: the C in {tmp_path} does not compile" in r.stderr
    assert "expected expression" in r.stderr


def test_train_out_dir_that_is_a_file_is_refused_before_training(tmp_path):
    """train.py --out-dir FILE used to train for minutes and then end in FileExistsError."""
    notes = tmp_path / "notes.txt"
    notes.write_text("keep\n")
    for option, model in (("--out-dir", "lenet5"), ("--save-data", "ffn")):
        r = run_tool("train.py", "--model", model, option, notes, "--epochs", "1", "--quiet")
        assert r.returncode == 2, r.stderr
        assert f"{option} {notes} exists and is not a folder" in r.stderr
        assert "trained in" not in r.stdout
        assert notes.read_text() == "keep\n"


@pytest.mark.parametrize("key, value, want", [
    ("run_symbol", "system", "run_symbol must be a C identifier tvmgen_<name>_run"),
    ("library", "../elsewhere/liblenet5.so", "library must be a file name inside the deployment directory"),
    ("input0_size", "-5", "a size must be a whole number of bytes, 1 .. 2^30"),
    ("input0_size", "99999999999", "a size must be a whole number of bytes, 1 .. 2^30"),
    ("output0_size", "10x", "a size must be a whole number of bytes, 1 .. 2^30"),
])
def test_inference_refuses_a_deploy_cfg_it_did_not_write(tmp_path, key, value, want):
    """The inference app called whatever deploy.cfg named: `run_symbol system` made it call
    libc's system() on the input bytes; a library path could point outside the deployment;
    sizes were read with atol (garbage -> 0, negatives accepted). Now each is refused, exit 2."""
    from test_deploy import run_inference
    from nnc.cli.deploy import deploy
    out = tmp_path / "dep"
    deploy("lenet5", str(out))
    cfg = out / "deploy.cfg"
    lines = [ln for ln in cfg.read_text().splitlines() if not ln.startswith(key + " ")]
    cfg.write_text("\n".join(lines + [f"{key} {value}"]) + "\n")
    r = run_inference(out, runs=1)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{cfg}:{len(lines) + 1}: {want}" in r.stderr
    assert "latency" not in r.stdout


def test_scons_diana_refuses_a_zoo_model_instead_of_ignoring_it():
    """`./scons board=diana model=lenet5` built the seed's example graphs and said nothing, so the
    user believed LeNet-5 ran on DIANA; now exit 2 naming model= and the way to a DIANA graph."""
    r = subprocess.run([os.path.join(ROOT, "scons"), "board=diana", "model=lenet5", "-n"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "board=diana builds seed 004's example graphs, not the zoo model 'lenet5'" in r.stdout
    assert "where: model=lenet5" in r.stdout and "nnc diana --script" in r.stdout


def test_export_deploy_divergence_of_the_stateful_model_point_to_the_imx681(tmp_path):
    """export/deploy/divergence --model stateful told the user to 'remove data-dependent control
    flow from forward()' of the zoo's own model; now: it keeps a state, use the IMX681 flow."""
    for tool, extra in (("export.py", ["--out", tmp_path / "e", "--quiet"]),
                        ("deploy.py", ["--out", tmp_path / "d"]), ("divergence.py", [])):
        r = run_tool(tool, "--model", "stateful", *extra)
        assert r.returncode == 2, r.stderr
        assert "model 'stateful' keeps a state between frames" in r.stderr
        assert "imx681_compile.py" in r.stderr and "control flow" not in r.stderr
    assert not (tmp_path / "e").exists() and not (tmp_path / "d").exists()


def test_quantize_out_that_is_a_folder_is_refused_up_front(tmp_path):
    """quantize.py --out FOLDER calibrated, then died in os.replace with IsADirectoryError."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    r = run_tool("quantize.py", "--model", "lenet5", "--out", mine, "--no-eval", "--quiet", "--calib", "8")
    assert r.returncode == 2, r.stderr
    assert f"--out {mine} is a folder; give the checkpoint's file name" in r.stderr
    assert "calibrated" not in r.stdout
    assert sorted(os.listdir(mine)) == ["notes.txt"] and sorted(os.listdir(tmp_path)) == ["mine"]


def test_serial_client_bench_path_is_checked_before_running(tmp_path):
    """--bench FOLDER (or in a missing folder) failed with a traceback after every inference."""
    for bench in (tmp_path, tmp_path / "missing" / "bench.json"):
        r = run_tool("serial_client.py", "--qemu", tmp_path / "fw.elf", "--random", "1", "--bench", bench)
        assert r.returncode == 2, r.stderr
        assert f"--bench {bench}: give a file name in an existing folder" in r.stderr
