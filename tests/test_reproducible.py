"""Reproducible images and the shared build cache (cache=DIR), on LeNet-5.

- Two clean builds in two checkouts at different absolute paths give byte-identical generated C
  (portable and Cortex-M7 kernels: .c, .h, model.json), host library, and bare-metal firmware for
  mps2-an500 and stm32f746g-disco (fw.elf with its debug information, fw.bin, fw.hex).
- A third fresh checkout pointing at the first one's cache= fetches every one of those files
  ("Retrieved ... from cache") and compiles, links and exports nothing; the fetched files are the
  same bytes; a second build there does nothing at all.
"""
import filecmp
import os
import re

import pytest

from conftest import require_tools
from fixtures.builds import copy_checkout, scons

pytestmark = pytest.mark.firmware   # test tier (pytest.ini)

MODEL = "lenet5"
BOARDS = ("mps2-an500", "stm32f746g-disco")
# What the two builds must agree on, byte for byte (paths in a checkout).
PRODUCTS = [f"build/gen/{k}/{MODEL}/{f}" for k in ("c", "m7")
            for f in (f"tvmgen_{MODEL}.c", f"tvmgen_{MODEL}.h", "model.json")] \
    + [f"build/host/{MODEL}/lib{MODEL}.so"] \
    + [f"build/{b}/{MODEL}/{f}" for b in BOARDS for f in ("fw.elf", "fw.bin", "fw.hex")]


def build(checkout: str, *options: str) -> str:
    """LeNet-5 for the host and both Cortex-M7 boards in `checkout`; returns SCons's output."""
    out = ""
    for board in BOARDS:
        targets = [p for p in PRODUCTS if p.startswith(("build/host", "build/gen", f"build/{board}/"))]
        r = scons("-j2", f"board={board}", f"model={MODEL}", *options, *targets, cwd=checkout, timeout=1800)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out += r.stdout
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Checkout a: clean build filling a new cache; b: clean build without the cache (another
    path); c: a fresh checkout with a's cache."""
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-objcopy", needed_for="the firmware images")
    root = tmp_path_factory.mktemp("reproducible")
    cache = str(root / "cache")
    a, b, c = (copy_checkout(str(root / name / "nnc")) for name in ("a", "bb", "ccc"))
    out = {"a": build(a, f"cache={cache}"), "b": build(b), "c": build(c, f"cache={cache}")}
    out["c again"] = build(c, f"cache={cache}")
    return {"a": a, "b": b, "c": c, "cache": cache, "out": out}


@pytest.mark.parametrize("product", PRODUCTS)
def test_two_clean_builds_in_different_folders_are_identical(builds, product):
    a, b = (os.path.join(builds[k], product) for k in ("a", "b"))
    assert os.path.getsize(a) > 0
    assert filecmp.cmp(a, b, shallow=False), f"{product} differs between two clean builds in different folders"


def test_no_checkout_path_in_the_images(builds):
    """The debug information names the build folder as '.', not the checkout's absolute path."""
    for board in BOARDS:
        data = open(os.path.join(builds["a"], "build", board, MODEL, "fw.elf"), "rb").read()
        assert builds["a"].encode() not in data, f"{board}: fw.elf holds the checkout's path"


def test_fresh_checkout_fetches_everything_from_the_shared_cache(builds):
    out = builds["out"]["c"]
    retrieved = set(re.findall(r"Retrieved `([^']+)' from cache", out))
    missing = [p for p in PRODUCTS if p not in retrieved]
    assert not missing, f"not fetched from the cache: {missing}\n{out[-3000:]}"
    for tool in ("tools/export.py", "gcc -o", "objcopy"):
        assert tool not in out, f"the checkout with a warm cache ran {tool}:\n{out[-3000:]}"
    for product in PRODUCTS:
        assert filecmp.cmp(os.path.join(builds["a"], product), os.path.join(builds["c"], product),
                           shallow=False), product
    # the output folders' markers came along: the next export may replace the folder
    for kernels in ("c", "m7"):
        assert os.path.isfile(os.path.join(builds["c"], "build", "gen", kernels, MODEL, ".nnc-output"))
    again = builds["out"]["c again"]
    assert "Retrieved" not in again and "tools/export.py" not in again and "gcc" not in again, again[-3000:]
