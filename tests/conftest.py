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


@pytest.fixture(scope="session")
def zoo():
    from models.registry import MODELS
    return MODELS
