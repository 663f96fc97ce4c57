"""DIANA test helpers: compile graphs quietly, build them with the HAL into one host library,
and compare the library with the numpy reference byte for byte."""
import os
import warnings

import numpy as np

from conftest import ROOT, edge_and_random_inputs

from nnc import reference
from nnc.targets.diana import DianaFallbackWarning, compile_diana
from nnc.targets.diana.firmware import HAL_SOURCE
from nnc.toolchains import host_shared_library


def quiet_compile(graph, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DianaFallbackWarning)
        return compile_diana(graph, **kw)


def build_host_library(builds, out_dir):
    """All models and the HAL in one shared library; returns {graph name: hostlib library}."""
    import hostlib
    os.makedirs(out_dir, exist_ok=True)
    sources, headers = [], {}
    for b in builds:
        gen = os.path.join(out_dir, b.compiled.graph.name)
        h, c = b.compiled.write(gen)
        sources.append(c)
        headers[b.compiled.graph.name] = h
    so = host_shared_library(sources + [HAL_SOURCE], os.path.join(out_dir, "libdiana_models.so"),
                             include_dirs=[os.path.join(ROOT, "firmware", "diana", "hal")])
    return {name: hostlib.load(so, h) for name, h in headers.items()}


def inputs_for(graph, n_random, seed=0):
    """Per graph input: the four edge cases of edge_and_random_inputs, then n_random random."""
    return [edge_and_random_inputs(t.shape, n_random, seed=seed + 7 * i)
            for i, t in enumerate(graph.inputs)]


def reference_outputs(graph, xs, chunk=250):
    """nnc.reference in chunks (its int64 windows of a big batch would take gigabytes)."""
    n = len(xs[0])
    return np.concatenate([reference.run(graph, [x[i:i + chunk] for x in xs])[0]
                           for i in range(0, n, chunk)])


def assert_bit_exact(lib, graph, xs, label=""):
    expected = reference_outputs(graph, xs)
    got = lib.run(*xs)
    assert got.shape == expected.shape
    mismatches = int(np.count_nonzero(got != expected))
    assert mismatches == 0, f"{label or graph.name}: {mismatches} of {got.size} bytes differ"
    return expected
