"""`scons report`: the report of lenet5 (bench on the emulated Cortex-M7 + host library), and the
baseline gate run for real: the same figures pass, a baseline that the build is worse than
fails with a table naming the figures, thresholds let a growth through, a bad baseline file
stops the build before anything runs, and the committed baseline of the zoo passes."""
import copy
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.firmware
REPORT = os.path.join(ROOT, "build", "report.json")


def scons(*args):
    if not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")):
        if os.environ.get("CI") == "true":
            pytest.fail("needs qemu-system-arm and arm-none-eabi-gcc")
        pytest.skip("needs qemu-system-arm and arm-none-eabi-gcc (Debian packages qemu-system-arm, "
                    "gcc-arm-none-eabi)")
    return subprocess.run([sys.executable, "-m", "SCons", "-Q", "report", "model=lenet5", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def lenet5_report():
    r = scons()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(REPORT) as f:
        report = json.load(f)
    assert os.path.exists(os.path.join(ROOT, "build", "report.md"))
    return report


def write(tmp_path, report, name="baseline.json"):
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return str(path)


def test_report_of_lenet5(lenet5_report):
    fw = lenet5_report["entries"]["lenet5@mps2-an500"]
    assert fw["fits"] and fw["kernels"] == "m7" and fw["instructions"] > 100_000
    assert 61_470 < fw["flash"] < 1 << 20 and fw["arena"] > 0 and 0 < fw["stack"] < 8192
    host = lenet5_report["entries"]["lenet5@host"]
    assert len(host["c_sha256"]) == 64 and len(fw["c_sha256"]) == 64


def test_same_figures_pass_and_worse_figures_fail(lenet5_report, tmp_path):
    r = scons(f"baseline={write(tmp_path, lenet5_report)}")
    assert r.returncode == 0 and "no changes: every figure equals the baseline" in r.stdout, r.stdout[-3000:]
    # the build is 2 % slower and one byte bigger than this baseline
    better = copy.deepcopy(lenet5_report)
    fw = better["entries"]["lenet5@mps2-an500"]
    fw["instructions"] = round(fw["instructions"] / 1.02)
    fw["flash"] -= 1
    r = scons(f"baseline={write(tmp_path, better)}")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("| lenet5@mps2-an500")]
    assert any("| instructions |" in l and "(+2.00%)" in l and "| FAIL " in l for l in lines), out
    assert any("| flash " in l and "+1 " in l and "| FAIL " in l for l in lines), out
    assert "gate: FAIL (2 figures past the threshold)" in r.stdout and "Traceback" not in out
    assert os.path.exists(REPORT), "the report is written even when the gate fails"
    # thresholds given as options let the same growth through
    r = scons(f"baseline={write(tmp_path, better)}", "max_instructions_growth=2.5", "max_flash_growth=1")
    assert r.returncode == 0 and "gate: pass" in r.stdout, r.stdout[-3000:]


@pytest.mark.parametrize("content,needle", [("[1, 2]", "is not an nnc report"), (None, "no such file")])
def test_bad_baseline_stops_before_building(tmp_path, content, needle):
    path = tmp_path / "b.json"
    if content is not None:
        path.write_text(content)
    r = scons(f"baseline={path}")
    out = r.stdout + r.stderr
    assert r.returncode == 2 and needle in out and f"where: baseline={path}" in out, out[-3000:]
    assert "bench:" not in out and "Traceback" not in out


def test_bad_threshold_option():
    r = scons("max_flash_growth=lots")
    assert r.returncode == 2 and "max_flash_growth=lots: give a whole number of bytes" in r.stdout, r.stdout


def test_committed_baseline_passes(lenet5_report):
    """baselines/zoo.json: a change that makes lenet5 slower or bigger fails here. An intended
    change: `./scons report` and copy build/report.json to baselines/zoo.json (see README)."""
    r = scons("baseline=baselines/zoo.json")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
