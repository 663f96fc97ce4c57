"""Seed 004's example graphs, and HTVM's test grid, written with nnc.builder.

The seed builds its weights with np.random (single layer: uniform in [-10, 10]) or
load_or_create_random_array; here every array comes from a fixed seed so that every build is
the same. The two-layer graphs use small weights (|w| <= 3, not the full int8 range) so that
after the seed's shift by 4 most outputs stay inside the int8 range instead of saturating: a
bit-exactness test on saturated outputs would prove little.

The seed's residual graph adds with relay.add on int8 (wrapping); DIANA's element-wise sum is
cast-to-int32 -> add -> shift -> clip, which is what soma_add builds (a saturating add).
"""
from __future__ import annotations

import numpy as np

from ...builder import graph_input, make_graph, random_array, soma_add, soma_conv2d, soma_dense


def create_model_single_layer():
    x = graph_input("input", (1, 3, 32, 32))
    w = random_array((5, 3, 3, 3), np.int8, seed=1, low=-10, high=10)
    b = random_array((5,), np.int32, seed=2, low=-10, high=10)
    y = soma_conv2d(x, "conv1", w, b, padding=(1, 1), relu=True, shift_bits=0)
    return make_graph("single_layer", y)


def create_model_two_layers(strides_conv2=(1, 1)):
    x = graph_input("input", (1, 3, 32, 32))
    w1 = random_array((32, 3, 3, 3), np.int8, seed=11, low=-3, high=3)
    x = soma_conv2d(x, "conv1", w1, np.ones(32, np.int32), relu=True, shift_bits=4)
    w2 = random_array((8, 32, 3, 3), np.int8, seed=12, low=-2, high=2)
    x = soma_conv2d(x, "conv2", w2, np.ones(8, np.int32), strides=strides_conv2, relu=False,
                    shift_bits=4)
    name = "two_layers" if tuple(strides_conv2) == (1, 1) else \
        "two_layers_strided_" + "x".join(str(s) for s in strides_conv2)
    return make_graph(name, x)


def create_model_two_layers_and_residual():
    x = graph_input("input", (1, 32, 32, 32))
    w1 = random_array((16, 32, 3, 3), np.int8, seed=21, low=-1, high=1)
    y = soma_conv2d(x, "conv1", w1, np.ones(16, np.int32), relu=True, shift_bits=4)
    w2 = random_array((32, 16, 3, 3), np.int8, seed=22, low=-2, high=2)
    y = soma_conv2d(y, "conv2", w2, np.ones(32, np.int32), relu=False, shift_bits=4)
    out = soma_add(x, y, "add")
    return make_graph("two_layers_and_residual", out)


# name -> factory: what tools/diana_compile.py --graph and firmware/diana/SConscript build
EXAMPLES = {
    "single_layer": create_model_single_layer,
    "two_layers": create_model_two_layers,
    "two_layers_strided": lambda: create_model_two_layers((1, 2)),
    "two_layers_and_residual": create_model_two_layers_and_residual,
}


def example(name: str):
    g = EXAMPLES[name]()
    g.name = name
    return g


# -- HTVM's test grid -----------------------------------------------------------------------------

GRID_KERNELS = [((7, 7), (3, 3)), ((5, 5), (2, 2)), ((3, 3), (1, 1)), ((1, 1), (0, 0)),
                ((7, 5), (3, 2))]


def auto_shift(terms: int, w_bound: int = 8, target_std: float = 48.0) -> int:
    """A shift that puts a random layer's outputs mostly inside int8 (std ~ target_std) for
    uniform int8 inputs (std 74) and uniform weights in [-w_bound, w_bound]."""
    w_std = np.sqrt(((2 * w_bound + 1) ** 2 - 1) / 12.0)
    acc_std = np.sqrt(terms) * 74.0 * w_std
    return int(max(0, round(np.log2(acc_std / target_std))))


def _weights(shape, seed, scale_shift=3):
    return random_array(shape, np.int8, seed=seed, low=-(1 << scale_shift), high=1 << scale_shift)


def grid_conv(kernel, padding, stride, relu, cin=8, cout=20, hw=(10, 12), shift=None, seed=0):
    kh, kw = kernel
    shift = auto_shift(cin * kh * kw) if shift is None else shift
    name = f"conv_k{kh}x{kw}_s{stride}_{'relu' if relu else 'norelu'}"
    x = graph_input("input", (1, cin, hw[0], hw[1]))
    w = _weights((cout, cin, kh, kw), seed)
    b = random_array((cout,), np.int32, seed=seed + 1, low=-300, high=300)
    y = soma_conv2d(x, "conv", w, b, strides=(stride, stride), padding=padding, relu=relu,
                    shift_bits=shift)
    return make_graph(name, y)


def grid_depthwise(kernel, padding, stride, relu, c=16, hw=(10, 12), shift=None, seed=0):
    kh, kw = kernel
    shift = auto_shift(kh * kw) if shift is None else shift
    name = f"dw_k{kh}x{kw}_s{stride}_{'relu' if relu else 'norelu'}"
    x = graph_input("input", (1, c, hw[0], hw[1]))
    w = _weights((c, 1, kh, kw), seed)
    b = random_array((c,), np.int32, seed=seed + 1, low=-100, high=100)
    y = soma_conv2d(x, "dwconv", w, b, strides=(stride, stride), padding=padding, groups=c,
                    relu=relu, shift_bits=shift)
    return make_graph(name, y)


def grid_dense(relu, cin=100, cout=20, shift=None, seed=0):
    shift = auto_shift(cin) if shift is None else shift
    name = f"dense_{'relu' if relu else 'norelu'}"
    x = graph_input("input", (1, cin))
    w = _weights((cout, cin), seed)
    b = random_array((cout,), np.int32, seed=seed + 1, low=-500, high=500)
    return make_graph(name, soma_dense(x, "fc", w, b, relu=relu, shift_bits=shift))


def grid_add(relu, shape=(1, 8, 12, 12), shift=1):
    name = f"add_{'relu' if relu else 'norelu'}"
    a = graph_input("input_a", shape)
    b = graph_input("input_b", shape, like=a)
    return make_graph(name, soma_add(a, b, "add", relu=relu, shift_bits=shift))


def htvm_grid() -> list:
    """(name, graph) for HTVM's grid: 5 kernels x strides 1, 2 x ReLU on/off, as conv and as
    depthwise, plus dense and add with ReLU on/off."""
    cases, seed = [], 100
    for kernel, padding in GRID_KERNELS:
        for stride in (1, 2):
            for relu in (False, True):
                seed += 10
                cases.append(grid_conv(kernel, padding, stride, relu, seed=seed))
                cases.append(grid_depthwise(kernel, padding, stride, relu, seed=seed + 5))
    for relu in (False, True):
        cases.append(grid_dense(relu, seed=300 + relu))
        cases.append(grid_add(relu))
    return [(g.name, g) for g in cases]
