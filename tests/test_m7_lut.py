"""The Cortex-M7 table-lookup kernel (kernels="m7", op `lut`): bit-exact against torch qnnpack.

On the host the kernel runs through the portable C definitions of the intrinsics (as in
test_m7_kernels.py); the same source compiles warning-free for the Cortex-M7, where each word of
four codes is one LDR and one STR.
"""
import copy
import os
import re
import subprocess

import numpy as np
import pytest
import torch

from conftest import build_host_library, edge_and_random_inputs, require_tools
from test_ops import ACTIVATIONS, Single, quantize

from nnc.frontend.torch_eager import import_torch_model, run_torch_int8
from nnc.kernels.m7_lut import byte_indexed_table
from nnc.toolchains import CORTEX_M7_CC, WARNING_FREE_FLAGS

# element counts around the 8-per-pass loop: a lone tail, one word, a pass plus 1..7, larger odd
LENGTHS = [1, 3, 4, 7, 8, 9, 15, 37, 256, 259, 1021]


def test_byte_indexed_table():
    table = np.arange(-128, 128, dtype=np.int16)[::-1].astype(np.int8)   # any permutation
    t = byte_indexed_table(table)
    for code in range(-128, 128):
        assert t[code & 0xFF] == table[code + 128]


def lut_model(act: str, n: int, seed: int = 0):
    q = quantize(Single(lambda s, x: s.act(x), act=ACTIVATIONS[act]()), (1, n), 3.0, seed=seed)
    return q, import_torch_model(q, torch.rand(1, n), f"lut_{act}_{n}")


def every_code_inputs(n: int) -> np.ndarray:
    """256 rows, row k = the 256 codes rotated by k (repeated to n elements): every code at every
    position (so through each byte lane of the words and through the tail loop)."""
    codes = np.arange(-128, 128, dtype=np.int16)
    return np.stack([np.resize(np.roll(codes, -k), n) for k in range(256)]).astype(np.int8)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("act", ["hardswish", "sigmoid", "gelu"])
def test_m7_lut_bit_exact(act, n, tmp_path):
    qmodel, graph = lut_model(act, n, seed=n)
    compiled, lib, _ = build_host_library(copy.deepcopy(graph), "m7", tmp_path, f"lut{n}")
    assert [compiled.kernels[id(op)].provider for op in compiled.graph.ops] == ["m7"]
    x = np.concatenate([every_code_inputs(n), edge_and_random_inputs((1, n), 1000, seed=n)])
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = lib.run(x)
    bad = int(np.count_nonzero(got != expected))
    assert bad == 0, f"{act}, {n} elements: {bad} of {got.size} outputs differ from torch"


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_m7_lut_all_256_codes(act, tmp_path):
    """Every activation, all 256 codes at every position of a tensor of 259 elements (32 words
    and a tail of 3)."""
    qmodel, graph = lut_model(act, 259)
    _, lib, _ = build_host_library(copy.deepcopy(graph), "m7", tmp_path, act)
    x = every_code_inputs(259)
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    assert int(np.count_nonzero(lib.run(x) != expected)) == 0


def test_m7_lut_compiles_to_word_loads_and_stores(tmp_path):
    """arm-none-eabi-gcc -Wall -Wextra -Werror prints nothing; the kernel's loop loads and stores
    whole words and looks the codes up with byte loads."""
    from nnc.compiler import compile_graph
    from nnc.targets.cpu import CpuTarget
    _, graph = lut_model("hardswish", 37)
    _, source = compile_graph(graph, CpuTarget("m7")).write(str(tmp_path / "gen"))
    obj = str(tmp_path / "lut.o")
    r = subprocess.run([CORTEX_M7_CC, *WARNING_FREE_FLAGS[CORTEX_M7_CC], "-c", source, "-I",
                        os.path.dirname(source), "-o", obj], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", obj], capture_output=True, text=True,
                         check=True).stdout
    body = re.search(r"<\w+_act(\.constprop\.\d+)?>:\n(.*?)\n\n", dis, re.S).group(2)
    assert re.search(r"\bldr(\.w)?\s", body) and re.search(r"\bstr(\.w)?\s", body), body
    assert len(re.findall(r"\bldrb(\.w)?\s", body)) >= 8, body


def test_bench_tools_run_the_lut_layer_on_the_emulated_m7(tmp_path):
    """networks.py generates the table layer, bench.py counts it on QEMU's Cortex-M7 and checks the
    firmware's outputs against the host library (the measurement of the README)."""
    import json
    import sys
    require_tools("qemu-system-arm", CORTEX_M7_CC, needed_for="to run the model on the emulated M7")
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "m7")
    gen = str(tmp_path / "gen")
    subprocess.run([sys.executable, os.path.join(fixtures, "networks.py"), "lut", gen, "--kernels", "m7"],
                   check=True, capture_output=True)
    r = subprocess.run([sys.executable, os.path.join(fixtures, "bench.py"), gen, "--check", "20"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [(l["kind"], l["kernel"]) for l in report["layers"]] == [("lut", "m7")]
    assert report["layers"][0]["instructions"] > 0
    assert report["check"] == {"inputs": 25, "elements": 25 * 4096, "mismatches": 0}
