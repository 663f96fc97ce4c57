"""Plots (tools/plots.py): the memory map of LeNet-5, whose peak is the planner's arena size,
and the footprint chart against the board's flash and RAM (from the board's linker script)."""
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from conftest import BUILD, ROOT, generated_dir

from nnc.cli import plots

MODEL = "lenet5"


def model_json():
    path = os.path.join(generated_dir(MODEL), "model.json")
    if not os.path.isfile(path):
        pytest.fail(f"{path} is missing: run the tests through `./scons host test`")
    with open(path) as f:
        return json.load(f)


def test_memory_map_peak_is_planner_arena(tmp_path):
    info = model_json()
    out = str(tmp_path / "mm.png")
    r = plots.memory_map(MODEL, out)
    assert r["peak"] == info["arena_bytes"] == r["arena_bytes"]   # measured on the drawn bars
    assert r["bars"] == len(info["buffers"])
    assert r["max_live"] == info["arena_lower_bound"]             # planner's lower bound, at peak_step
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300
    # the CLI writes next to the build
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plots.py"), "memory-map", MODEL],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert os.path.isfile(os.path.join(BUILD, "plots", f"{MODEL}_memory_map.png"))
    assert f"arena {info['arena_bytes']} B" in p.stdout


def test_board_memory_from_linker_script():
    mem = plots.board_memory("stm32f746g-disco")
    assert mem["flash"] == 1024 * 1024 and mem["ram"] == 320 * 1024
    assert mem["source"].endswith("stm32f746g-disco/linker.ld")
    with pytest.raises(plots.PlotError, match="no linker script"):
        plots.board_memory("no-such-board")


def test_footprint_chart(tmp_path):
    info = model_json()
    out = str(tmp_path / "fp.png")
    r = plots.footprint([MODEL], out)
    (row,) = r["models"]
    assert row["weights"] == info["weight_bytes"] and row["arena"] == info["arena_bytes"]
    if row["code"] is not None:   # compiled for the Cortex-M7: its const data is about the weights
        assert row["code"] > 0 and abs(row["rodata"] - info["weight_bytes"]) < 0.05 * info["weight_bytes"]
    assert Image.open(out).format == "PNG"


def test_errors(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plots.py"), "memory-map", "nope"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "nope" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "plots.py"), "--help"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "memory-map" in p.stdout and "footprint" in p.stdout
