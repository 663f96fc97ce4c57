"""Shared test set-up: import paths, build locations, the model zoo's compiled artefacts, and the
test tiers.

Tiers (markers registered in pytest.ini) are given by file, so a new test file gets one without
edits: tests/unit/ is `unit`; the files in FIRMWARE_FILES and tests named *qemu* or *firmware* are
`firmware`; the files in TOOLS_FILES are `tools`; everything else is `bitexact`. A test that
carries a tier marker itself keeps it.
"""
import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BUILD = os.path.join(ROOT, "build")
FULL = os.environ.get("NNC_FULL_TESTS") == "1"


TIERS = ("unit", "bitexact", "firmware", "tools")
FIRMWARE_FILES = ("test_stm32.py", "test_riot.py", "test_digit_pad.py")
TOOLS_FILES = ("test_models.py", "test_errors.py", "test_deploy.py", "test_plots.py", "test_cli.py",
               "test_reliability_writers.py")
UNIT_DIR = os.path.join(ROOT, "tests", "unit")


def tier_of(path: str, test_name: str) -> str:
    name = os.path.basename(path)
    if os.path.commonpath([os.path.abspath(path), UNIT_DIR]) == UNIT_DIR:
        return "unit"
    if name in FIRMWARE_FILES or "qemu" in test_name or "firmware" in test_name:
        return "firmware"
    return "tools" if name in TOOLS_FILES else "bitexact"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(getattr(pytest.mark, tier_of(str(item.path), item.name)))


def pytest_ignore_collect(collection_path, config):
    """`-m unit` alone: do not import the other tiers' files (they load torch, TVM, ...)."""
    if (config.getoption("markexpr") or "").strip() == "unit" and collection_path.suffix == ".py":
        return tier_of(str(collection_path), "") != "unit" or None
    return None


# Artefacts `./scons host` builds, made here (once per session, in a temporary folder) when a
# test needs one that is not built: a single test then runs without a prior `./scons host`.
_made_here = []


def _scratch(*parts) -> str:
    if not _made_here:
        _made_here.append(tempfile.mkdtemp(prefix="nnc-tests-"))
        atexit.register(shutil.rmtree, _made_here[0], True)
    return os.path.join(_made_here[0], *parts)


def generated_dir(model: str, kernels: str = "c") -> str:
    """build/gen/<kernels>/<model>, or the same files exported here if that is not built."""
    built = os.path.join(BUILD, "gen", kernels, model)
    if os.path.isfile(os.path.join(built, f"tvmgen_{model}.c")):
        return built
    made = _scratch("gen", kernels, model)
    if not os.path.isfile(os.path.join(made, f"tvmgen_{model}.c")):
        from nnc.cli.export import export
        export(model, made, kernels=kernels, quiet=True)
    return made


def host_library_path(model: str) -> str:
    """build/host/<model>/lib<model>.so, or the same library built here if that is not built."""
    built = os.path.join(BUILD, "host", model, f"lib{model}.so")
    if os.path.isfile(built):
        return built
    made = _scratch("host", model, f"lib{model}.so")
    if not os.path.isfile(made):
        os.makedirs(os.path.dirname(made), exist_ok=True)
        compile_host_library(os.path.join(generated_dir(model), f"tvmgen_{model}.c"), made)
    return made


def inference_app() -> str:
    """build/host/inference (the C application of "Deploy"), or the same program built here."""
    built = os.path.join(BUILD, "host", "inference")
    if os.path.isfile(built):
        return built
    made = _scratch("host", "inference")
    if not os.path.isfile(made):
        import subprocess
        from nnc.toolchains import HOST_CC
        os.makedirs(os.path.dirname(made), exist_ok=True)
        r = subprocess.run([HOST_CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", made,
                            os.path.join(ROOT, "hostlib", "inference.c"), "-ldl"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    return made


def load_host_library(model: str):
    import hostlib
    so = host_library_path(model)
    return hostlib.load(so, os.path.join(generated_dir(model), f"tvmgen_{model}.h"))


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
