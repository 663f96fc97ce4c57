"""`scons all`, the daily build matrix: every zoo model for every board it fits in one invocation.

- In a fresh checkout, `scons -n all` plans the host library of every stateless model, the
  stm32f746g-disco and mps2-an500 images (fw.bin, fw.hex) of every model the registry says fits,
  only the fit-check link of the others, DIANA's example graphs and the IMX681 packages of the
  stateful models.
- A model that does not fit is linked for its fit check only: fit.json with the bytes it needs,
  no image, exit 0, and the next build does not link it again.
- `all` with board=/model=/bench is refused (exit 2).
"""
import json
import os
import re
import shutil

import pytest

from conftest import require_tools
from fixtures.builds import ROOT, copy_checkout, scons

pytestmark = pytest.mark.tools   # test tier (pytest.ini)


def zoo():
    from models.registry import MODELS
    return MODELS


def test_all_plans_every_model_for_every_board_it_fits(tmp_path):
    checkout = copy_checkout(str(tmp_path / "nnc"))
    r = scons("-n", "all", cwd=checkout, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = r.stdout
    for name, spec in zoo().items():
        if spec.stateful:
            assert f"build/imx681/{name}/host/lib{name}_frames.so" in plan, name
            assert f"build/host/{name}/" not in plan, name
            continue
        assert f"-o build/host/{name}/lib{name}.so" in plan, name
        for board in ("stm32f746g-disco", "mps2-an500"):
            compiled = f"-o build/{board}/{name}/obj/tvmgen_{name}.o" in plan
            imaged = re.search(rf"objcopy -O binary \S*build/{board}/{name}/fw.elf", plan) is not None
            assert compiled, (name, board)
            assert imaged == spec.fits_stm32, (name, board, spec.fits_stm32)
    from nnc.targets.diana.examples import EXAMPLES
    for graph in EXAMPLES:
        assert f"-o build/diana/{graph}/{graph}.elf" in plan, graph


@pytest.mark.parametrize("extra", ["board=diana", "model=lenet5", "bench"])
def test_all_builds_the_whole_matrix_only(extra):
    r = scons("-n", "all", extra, timeout=600, lock=False)
    assert r.returncode == 2 and "`scons all` builds the whole zoo for every board" in r.stdout, \
        r.stdout[-2000:] + r.stderr[-2000:]


FIT_SCONSTRUCT = """\
import os
import firmware_arm
env = Environment(ENV=os.environ.copy())
Default(firmware_arm.fit_check(env, "mps2-an500", "big", Dir({gen!r}), {build!r}, Dir({fw!r})))
"""


def test_a_model_that_does_not_fit_is_listed_not_fatal(tmp_path):
    require_tools("arm-none-eabi-gcc", needed_for="the fit check's link")
    from test_stm32 import OVERSIZE_HEADER, OVERSIZE_SOURCE
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "tvmgen_big.h").write_text(OVERSIZE_HEADER.format(arena=1024))
    (gen / "tvmgen_big.c").write_text(OVERSIZE_SOURCE.format(weights=1200 * 1024))
    build = tmp_path / "build"
    (tmp_path / "SConstruct").write_text(FIT_SCONSTRUCT.format(
        gen=str(gen), build=str(build),
        fw=os.path.join(ROOT, "firmware", "riot")))
    site_dir = f"--site-dir={os.path.join(ROOT, 'site_scons')}"   # the project's builders
    r = scons(site_dir, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "note: model 'big' does not fit the mps2-an500" in out and "listed as 'does not fit'" in out, out
    fit = json.load(open(build / "fit.json"))
    assert not fit["fits"] and fit["regions"]["FLASH"]["needed"] > fit["regions"]["FLASH"]["available"]
    assert sorted(os.listdir(build)) == ["fit.json", "obj"], "an image or a half-linked file was left"
    r = scons(site_dir, cwd=str(tmp_path))
    assert r.returncode == 0 and "arm-none-eabi-gcc" not in r.stdout, "the fit check ran again:\n" + r.stdout
    shutil.rmtree(build)
