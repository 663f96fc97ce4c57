"""`scons all`, the daily build matrix: every zoo model for every board it fits in one invocation.

- In a fresh checkout, `scons -n all` plans the host library of every stateless model, the
  stm32f746g-disco and mps2-an500 images (fw.bin, fw.hex) of every model the registry says fits,
  only the fit-check link of the others, DIANA's example graphs and the IMX681 packages of the
  stateful models.
- A model that does not fit is linked for its fit check only: fit.json with the bytes it needs,
  no image, exit 0, and the next build does not link it again.
- `all` with board=/model=/bench is refused (exit 2).
- A team's list of model files (models=FILE): a PT2E program and two factories (one too big for
  the boards) build beside the zoo, for host and both Cortex-M7 boards; the one that does not fit
  is listed with its bytes; a bad list stops the build before anything is built (exit 2, the list
  file and line named). The model-list reader's own cases: tests/unit/test_model_list.py.
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


# Factories returning float models (quantized by the export on the digits). `big` holds more
# weights (784 x 1400 int8) than the boards' 1 MB flash.
FACTORY = """\
import torch


class Net(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=2)
        self.fc = torch.nn.Linear(4 * 13 * 13, width)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def build():
    torch.manual_seed(0)
    return Net({width}).eval(), torch.zeros(1, 1, 28, 28)
"""
BIG = """\
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 1400)).eval(), torch.zeros(1, 1, 28, 28)
"""
LISTED = ("prog", "wide")      # the listed models that fit the boards
TOO_BIG = "big"


@pytest.fixture(scope="module")
def team_list(tmp_path_factory):
    """A team's folder: a PT2E program made with the README's PT2E flow (prog.pt2), two factory
    files, and the list naming them with paths relative to it."""
    import torch
    from nnc.frontend.pt2e_quantizer import NncQuantizer, pt2e_api
    folder = tmp_path_factory.mktemp("team")
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 13 * 13, 10)).eval()
    x = torch.randn(1, 1, 28, 28)
    api = pt2e_api()
    m = api.prepare_pt2e(torch.export.export(model, (x,)).module(), NncQuantizer())
    for _ in range(16):
        m(torch.randn(1, 1, 28, 28))
    m = api.convert_pt2e(m)
    (folder / "programs").mkdir()
    torch.export.save(torch.export.export(m, (x,)), str(folder / "programs" / "prog.pt2"))
    (folder / "wide.py").write_text(FACTORY.format(width=64))
    (folder / "big.py").write_text(BIG)
    listing = folder / "models.txt"
    listing.write_text("# the team's models\nprograms/prog.pt2\n"
                       "wide.py:build  calibration=digits   # a float model, calibrated on the digits\n"
                       "big.py calibration=digits\n")
    return listing


def test_all_plans_every_model_for_every_board_it_fits(tmp_path, team_list):
    checkout = copy_checkout(str(tmp_path / "nnc"))
    r = scons("-n", "all", f"models={team_list}", cwd=checkout, timeout=600)
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
    for name in LISTED + (TOO_BIG,):    # beside the zoo: host and both boards, no DIANA or IMX681
        assert f"-o build/host/{name}/lib{name}.so" in plan, name
        for board in ("stm32f746g-disco", "mps2-an500"):
            assert f"-o build/{board}/{name}/obj/tvmgen_{name}.o" in plan, (name, board)
        assert f"build/imx681/{name}/" not in plan and f"build/diana/{name}/" not in plan, name


def test_listed_model_files_build_for_host_and_both_cortex_m7_boards_and_are_cached(tmp_path, team_list):
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-objcopy", needed_for="the Cortex-M7 images")
    checkout = copy_checkout(str(tmp_path / "nnc"))
    cache = f"cache={tmp_path / 'cache'}"
    # zoo=0: the list alone (the zoo's part of the matrix is the plan above)
    r = scons("-j2", "all", f"models={team_list}", "zoo=0", cache, cwd=checkout, timeout=1800)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    build = os.path.join(checkout, "build")
    table = open(os.path.join(build, "all", "matrix.md")).read()
    assert table.startswith("Build matrix: 3 listed models x 4 targets, 7 builds, 2 that do not fit"), table
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model")}
    assert list(rows) == list(LISTED) + [TOO_BIG], table
    for name in LISTED:
        host, stm32, mps2, imx681 = rows[name]
        assert host == f"{os.path.getsize(os.path.join(build, 'host', name, f'lib{name}.so')):,} B"
        for board, cell in (("stm32f746g-disco", stm32), ("mps2-an500", mps2)):
            size = json.load(open(os.path.join(build, board, name, "size.json")))
            assert cell == f"flash {size['flash']['total']:,} B, RAM {size['ram']['total']:,} B", (name, board)
            for image in ("fw.elf", "fw.bin", "fw.hex"):
                assert os.path.getsize(os.path.join(build, board, name, image)) > 0, (name, board, image)
        assert imx681 == "-", name
    for board, cell in zip(("stm32f746g-disco", "mps2-an500"), rows[TOO_BIG][1:3]):
        assert cell.startswith("does not fit: needs") and "flash of 1,048,576" in cell, table
        assert not json.load(open(os.path.join(build, board, TOO_BIG, "fit.json")))["fits"]
        left = sorted(os.listdir(os.path.join(build, board, TOO_BIG)))
        assert left == ["fit.json", "obj"], f"an image or a half-linked file was left: {left}"
    assert f"{TOO_BIG} on stm32f746g-disco: does not fit" in table
    # a second run exports and compiles nothing (the big model is linked again: its fit is only
    # known from its link)
    r = scons("-j2", "all", f"models={team_list}", "zoo=0", cache, cwd=checkout, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "tools/export.py" not in r.stdout and " -c " not in r.stdout, r.stdout
    # a second checkout with the same cache= fetches the listed models' exports, objects and images
    second = copy_checkout(str(tmp_path / "second"))
    r = scons("-j2", "all", f"models={team_list}", "zoo=0", cache, cwd=second, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "tools/export.py" not in r.stdout and " -c " not in r.stdout, r.stdout
    for name in LISTED:
        for part in (("host", name, f"lib{name}.so"), ("mps2-an500", name, "fw.bin"),
                     ("stm32f746g-disco", name, "fw.hex")):
            assert open(os.path.join(second, "build", *part), "rb").read() == \
                open(os.path.join(build, *part), "rb").read(), part


BAD_LISTS = [
    ("missing.pt2\n", "missing.pt2 does not exist", 1),
    ("programs/prog.pt2\nresnet9000\n", "unknown model 'resnet9000'", 2),
    ("programs/prog.pt2\n# comment\nprog.py\n", "prog.py would build as 'prog', like line 1", 3),
    ("models.txt\n", "models.txt is not a model file", 1),
    ("lenet5\n", "lenet5 is a zoo model", 1),
]


@pytest.mark.parametrize("text, what, line", BAD_LISTS, ids=[b[1] for b in BAD_LISTS])
def test_a_bad_list_stops_the_build_before_anything_is_built(team_list, text, what, line):
    (team_list.parent / "prog.py").write_text(FACTORY.format(width=10))
    bad = team_list.parent / "bad.txt"
    bad.write_text(text)
    r = scons("all", f"models={bad}", timeout=600, lock=False)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out[-3000:]
    assert f"error: {what}" in r.stdout and f"where: {bad}, line {line}: " in r.stdout, out
    assert "Traceback" not in out and "tools/export.py" not in out and "gcc" not in out, out


def test_models_needs_all():
    r = scons("host", "models=team.txt", timeout=600, lock=False)
    assert r.returncode == 2 and "models=team.txt chooses the models of the daily matrix" in r.stdout, \
        r.stdout[-2000:] + r.stderr[-2000:]


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


TEAM_LIST = os.path.join(ROOT, "team", "models.txt")


def team_files():
    """The model files of the committed team list (its PT2E zoo variants: tests/test_pt2e.py)."""
    from nnc.frontend.model_list import read_model_list
    return [e for e in read_model_list(TEAM_LIST, {}) if e.source != e.name]


@pytest.mark.parametrize("entry", team_files(), ids=lambda e: e.name)
@pytest.mark.parametrize("kernels", ["c", "m7"])
def test_the_team_list_models_are_bit_exact(entry, kernels, tmp_path):
    """Every model file of team/models.txt: its C == nnc.reference on >= 1000 inputs (edge values,
    random, held-out digits), with the portable and the Cortex-M7 kernels."""
    import copy

    import numpy as np

    from conftest import build_host_library
    from nnc import reference
    from nnc.frontend.model_files import load_model
    from test_pt2e import inputs_for
    graph = load_model(entry.source, calibration=entry.calibration, progress=False).graph()
    _, lib, _ = build_host_library(copy.deepcopy(graph), kernels, tmp_path, entry.name)
    x = inputs_for(graph)
    assert int(np.count_nonzero(lib.run(x) != reference.run(graph, [x])[0])) == 0, \
        f"{entry.name} ({kernels}): C != nnc.reference"
