"""Shared test set-up: import paths, build locations, and the model zoo's compiled artefacts."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]

BUILD = os.path.join(ROOT, "build")
FULL = os.environ.get("NNC_FULL_TESTS") == "1"


def generated_dir(model: str, kernels: str = "c") -> str:
    return os.path.join(BUILD, "gen", kernels, model)


def host_library_path(model: str) -> str:
    return os.path.join(BUILD, "host", model, f"lib{model}.so")


def load_host_library(model: str):
    import hostlib
    so = host_library_path(model)
    header = os.path.join(generated_dir(model), f"tvmgen_{model}.h")
    if not os.path.exists(so):
        pytest.fail(f"{so} is missing: run the tests through `./scons host test`")
    return hostlib.load(so, header)


def edge_and_random_inputs(shape, n_random: int, seed: int = 0) -> np.ndarray:
    """All -128, all 127, all 0, a checkerboard of the extremes, then uniform random int8."""
    rng = np.random.default_rng(seed)
    per = tuple(shape[1:])
    edges = [np.full(per, -128), np.full(per, 127), np.zeros(per),
             np.where(np.indices(per).sum(axis=0) % 2 == 0, 127, -128)]
    rand = rng.integers(-128, 128, size=(n_random,) + per)
    return np.concatenate([np.stack(edges), rand]).astype(np.int8)


def quantize_ptq(model, scheme: str, calib):
    """A small test network -> converted int8 model: PTQ (qnnpack) calibrated on `calib`."""
    from models import quant
    quant.prepare_ptq(model, scheme)
    with quant.quiet():
        quant.calibrate(model, calib.numpy())
    return quant.convert(model)


def build_host_library(graph, kernels: str, out_dir, tag: str):
    """Compile a graph for the cpu target with the given kernels into a host library.

    Returns (CompiledModel, loaded library, path of the generated .c); the C must compile
    with the host flags and print nothing (no warning)."""
    import hostlib
    from nnc.compiler import compile_graph
    from nnc.targets.cpu import CpuTarget
    compiled = compile_graph(graph, CpuTarget(kernels=kernels))
    out = os.path.join(str(out_dir), tag)
    header, source = compiled.write(out)
    so = os.path.join(out, f"lib{tag}.so")
    compile_host_library(source, so)
    return compiled, hostlib.load(so, header), source


def compile_host_library(source: str, so: str):
    """Generated C (next to its header) -> a host shared library, with the host compiler and flags
    of `./scons host`; the C must compile without printing anything (no warning)."""
    import subprocess
    from nnc.toolchains import HOST_CC, HOST_CFLAGS
    r = subprocess.run([HOST_CC, "-shared", "-fPIC", "-o", so, source, "-I", os.path.dirname(source), "-lm"]
                       + HOST_CFLAGS, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.fixture(scope="session")
def zoo():
    from models.registry import MODELS
    return MODELS


def require_tools(*tools: str, needed_for: str):
    """Skip the test naming each missing program; fail it instead when CI=true (CI has them all)."""
    import shutil
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (needed {needed_for})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
