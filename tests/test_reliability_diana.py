"""DIANA graph builder under bad input: every parameter is checked when the layer is made.

A table of bad inputs (each must give an NncError naming the layer and the parameter), the CLI
(exit status 2, no traceback, nothing written), and property tests with hypothesis: random valid
graphs build, compile for DIANA and stay bit-exact against nnc.reference on 1,004 inputs (edge
values first); one bad parameter in a random valid layer is named; any values at all give either
a layer or an NncError, never another exception.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import ROOT
from diana_host import assert_bit_exact, build_host_library, inputs_for, quiet_compile

from nnc.builder import (INT32, graph_input, make_graph, maxpool2d, random_array, soma_add,
                         soma_conv2d, soma_dense)
from nnc.errors import NncError
from nnc.ir import Tensor

# Examples per property test; CI may raise it (NNC_PROPERTY_EXAMPLES), the seed is fixed.
EXAMPLES = int(os.environ.get("NNC_PROPERTY_EXAMPLES", "30"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLI = os.path.join(ROOT, "tools", "diana_compile.py")


def conv_input():
    return graph_input("input", (1, 4, 6, 6))


def small_weights(shape=(8, 4, 3, 3)):
    return random_array(shape, np.int8, seed=1, low=-4, high=4)


def conv(**kw):
    args = dict(x=conv_input(), name="conv1", weights=small_weights(), bias=None, shift_bits=4)
    args.update(kw)
    return soma_conv2d(**args)


def dense(**kw):
    args = dict(x=graph_input("input", (1, 16)), name="fc", weights=random_array((4, 16), seed=2),
                shift_bits=6)
    args.update(kw)
    return soma_dense(**args)


def add(**kw):
    a = graph_input("input_a", (1, 2, 4, 4))
    args = dict(a=a, b_=graph_input("input_b", (1, 2, 4, 4), like=a), name="add", shift_bits=1)
    args.update(kw)
    return soma_add(**args)


def pool(**kw):
    args = dict(x=conv_input(), name="pool", kernel=2)
    args.update(kw)
    return maxpool2d(**args)


def overflowing_bias():
    return np.full(8, INT32.max - 127 * 127 * 36 + 1, np.int64)


def other_graph_add():
    return soma_add(conv_input(), conv_input(), "add")


# (bad input, how it is made, the layer, text the error must contain). The README's table of
# bad inputs is this list.
BAD_INPUTS = [
    ("shift_bits=40 (C would shift an int32 by 40)", lambda: conv(shift_bits=40), "conv1",
     "shift_bits=40 is out of range"),
    ("shift_bits=32", lambda: conv(shift_bits=32), "conv1", "shift_bits=32"),
    ("shift_bits=-1", lambda: conv(shift_bits=-1), "conv1", "shift_bits=-1"),
    ("shift_bits=2.5", lambda: conv(shift_bits=2.5), "conv1", "shift_bits=2.5 is not an integer"),
    ("shift_bits='4'", lambda: conv(shift_bits="4"), "conv1", "shift_bits='4'"),
    ("padding=-1", lambda: conv(padding=-1), "conv1", "padding=-1 is out of range"),
    ("padding=(0, -2)", lambda: conv(padding=(0, -2)), "conv1", "padding=-2"),
    ("strides=0", lambda: conv(strides=0), "conv1", "strides=0 is out of range"),
    ("strides=(1, 0)", lambda: conv(strides=(1, 0)), "conv1", "strides=0"),
    ("strides=(1, 1, 1)", lambda: conv(strides=(1, 1, 1)), "conv1", "has 3 values"),
    ("dilation=0", lambda: conv(dilation=0), "conv1", "dilation=0"),
    ("groups=0", lambda: conv(groups=0), "conv1", "groups=0"),
    ("groups=3 on 4 input channels", lambda: conv(groups=3), "conv1", "groups 3"),
    ("kernel 9x9 on a 6x6 input without padding",
     lambda: conv(weights=small_weights((8, 4, 9, 9)), padding=0), "conv1", "kernel 9x9"),
    ("weights holding 1000.7", lambda: conv(weights=np.full((8, 4, 3, 3), 1000.7)), "conv1",
     "weights[0, 0, 0, 0] = 1000.7 is not an integer in [-128, 127]"),
    ("int16 weights holding 200", lambda: conv(weights=np.full((8, 4, 3, 3), 200, np.int16)),
     "conv1", "= 200 is not an integer in [-128, 127]"),
    ("weights holding 0.5", lambda: conv(weights=np.full((8, 4, 3, 3), 0.5)), "conv1", "0.5"),
    ("weights holding NaN", lambda: conv(weights=np.full((8, 4, 3, 3), np.nan)), "conv1", "nan"),
    ("weights of strings", lambda: conv(weights=np.full((8, 4, 3, 3), "a")), "conv1",
     "element type"),
    ("ragged weights", lambda: conv(weights=[[1, 2], [3]]), "conv1", "not an array of numbers"),
    ("weights of shape (8, 4, 3)", lambda: conv(weights=small_weights((8, 4, 3))), "conv1",
     "not OIHW"),
    ("weights of shape (0, 4, 3, 3)", lambda: conv(weights=small_weights((0, 4, 3, 3))), "conv1",
     "not OIHW"),
    ("bias of 2**40", lambda: conv(bias=np.full(8, 2 ** 40)), "conv1",
     "bias[0] = 1099511627776 is not an integer in [-2147483648, 2147483647]"),
    ("bias of 1.5", lambda: conv(bias=np.full(8, 1.5)), "conv1", "bias[0] = 1.5"),
    ("bias of shape (7,)", lambda: conv(bias=np.zeros(7, np.int32)), "conv1", "bias of shape (7,)"),
    ("bias + weights overflow int32",
     lambda: conv(weights=np.full((8, 4, 3, 3), 127, np.int8), bias=overflowing_bias()), "conv1",
     "accumulator would overflow"),
    ("relu='yes'", lambda: conv(relu="yes"), "conv1", "relu='yes'"),
    ("layer name ''", lambda: conv(name=""), "''", "layer name '' is not a name"),
    ("layer name 'a */ b'", lambda: conv(name="a */ b"), "'a */ b'", "is not a name"),
    ("layer name 3", lambda: conv(name=3), "3", "layer name 3"),
    ("layers 'c.1' and 'c_1' (one C name)",
     lambda: soma_conv2d(conv(name="c.1"), "c_1", small_weights((8, 8, 1, 1))), "c_1",
     "the same C name 'c_1'"),
    ("a 0-channel input", lambda: graph_input("input", (1, 0, 8, 8)), "input", "shape=0"),
    ("an input of batch 2", lambda: graph_input("input", (2, 3, 8, 8)), "input", "batch 2"),
    ("a 3-D input", lambda: graph_input("input", (1, 3, 8)), "input", "is not (1, features)"),
    ("an input of 2**40 x 2**40 pixels", lambda: graph_input("input", (1, 1, 2 ** 40, 2 ** 40)),
     "input", "more than 2147483647 elements"),
    ("dense weights holding 1000.7 (wrapped to int8 before)",
     lambda: dense(weights=np.full((4, 16), 1000.7)), "fc", "1000.7 is not an integer"),
    ("dense bias of 2**40 (wrapped before)", lambda: dense(bias=np.full(4, 2 ** 40)), "fc",
     "bias[0] = 1099511627776"),
    ("dense shift_bits=40", lambda: dense(shift_bits=40), "fc", "shift_bits=40"),
    ("dense weights for 15 features on 16", lambda: dense(weights=random_array((4, 15))), "fc",
     "do not fit input features 16"),
    ("dense bias of shape (3,)", lambda: dense(bias=np.zeros(3)), "fc", "bias of shape (3,)"),
    ("add shift_bits=40", lambda: add(shift_bits=40), "add", "shift_bits=40"),
    ("add relu=2", lambda: add(relu=2), "add", "relu=2"),
    ("add of tensors of two graphs", other_graph_add, "graph builder", "two different graphs"),
    ("max pool 9x9 on a 6x6 input", lambda: pool(kernel=9), "pool", "pool window 9x9"),
    ("max pool stride 0", lambda: pool(stride=0), "pool", "stride=0"),
    ("max pool padding -1", lambda: pool(padding=-1), "pool", "padding=-1"),
    ("max pool padding 2 on a 2x2 window", lambda: pool(padding=2), "pool", "more than half"),
    ("max pool of a (1, 16) tensor", lambda: pool(x=graph_input("input", (1, 16))), "pool",
     "is not NCHW"),
    ("graph name '../x'", lambda: make_graph("../x", conv()), "make_graph", "graph name '../x'"),
    ("graph output that is its input", lambda: make_graph("g", conv_input()), "make_graph",
     "is a graph input"),
    ("graph without outputs", lambda: make_graph("g", []), "make_graph", "without outputs"),
]


@pytest.mark.parametrize("make,layer,needle", [row[1:] for row in BAD_INPUTS],
                         ids=[row[0] for row in BAD_INPUTS])
def test_bad_builder_input_is_a_clear_error(make, layer, needle):
    with pytest.raises(NncError) as e:
        make()
    text = e.value.format()
    assert needle in text, text
    assert layer in e.value.where, text
    assert e.value.fix, text


def test_cli_rejects_a_bad_shift_with_exit_2_and_writes_nothing(tmp_path):
    script = tmp_path / "bad_shift.py"
    script.write_text(
        "import numpy as np\n"
        "from nnc.builder import graph_input, make_graph, random_array, soma_conv2d\n"
        "def create_model():\n"
        "    x = graph_input('input', (1, 3, 32, 32))\n"
        "    w = random_array((32, 3, 3, 3), np.int8, seed=1, low=-3, high=3)\n"
        "    return make_graph('bad', soma_conv2d(x, 'conv1', w, None, shift_bits=40))\n")
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, CLI, "--script", str(script), "--out", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "shift_bits=40" in p.stderr and "layer 'conv1'" in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()


@pytest.mark.parametrize("body,needle", [
    ("def create_model():\n    return undefined_name\n", "NameError"),
    ("def create_model(:\n", "is not valid Python"),
    ("NAME = '../../x'\nfrom nnc.builder import graph_input, make_graph, relu\n"
     "def create_model():\n    return make_graph('g', relu(graph_input('i', (1, 4)), 'r'))\n",
     "graph name '../../x'"),
])
def test_cli_mistakes_in_the_user_script_name_the_line(tmp_path, body, needle):
    script = tmp_path / "graph.py"
    script.write_text(body)
    p = subprocess.run([sys.executable, CLI, "--script", str(script), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert p.returncode == 2, p.stdout + p.stderr
    assert needle in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not (tmp_path / "o").exists()


def test_a_layer_named_like_a_generated_reversal_still_compiles(tmp_path):
    """The layout pass names its ops '<layer>.reverse_out'; a user's 'conv1_reverse_out' has the
    same C name, so the pass picks another one instead of emitting two functions of one name."""
    x = graph_input("input", (1, 4, 6, 6))
    y = soma_conv2d(x, "conv1", small_weights(), None, shift_bits=4)
    g = make_graph("clash", maxpool2d(y, "conv1_reverse_out", 2))   # on the RISC-V core
    b = quiet_compile(g)
    lib = build_host_library([b], str(tmp_path))[g.name]
    assert_bit_exact(lib, g, inputs_for(g, 1000))


# -- property tests ---------------------------------------------------------------------------------

def draw_bias(data, weights):
    """Small, none, large, or exactly at the edge of the int32 accumulator."""
    k = weights.shape[0]
    mode = data.draw(st.sampled_from(["small", "none", "large", "edge_high", "edge_low"]))
    if mode == "none":
        return None
    seed = data.draw(st.integers(0, 2 ** 16))
    bound = 300 if mode == "small" else 2 ** 30
    bias = random_array((k,), np.int64, seed=seed, low=-bound, high=bound)
    w = weights.reshape(k, -1).astype(np.int64)
    if mode == "edge_high":      # bias + the largest reachable sum == INT32 max
        bias[0] = INT32.max - np.where(w[0] > 0, 127 * w[0], -128 * w[0]).sum()
    elif mode == "edge_low":
        bias[0] = INT32.min - np.where(w[0] > 0, -128 * w[0], 127 * w[0]).sum()
    return bias


def draw_weights(data, shape):
    bound = data.draw(st.sampled_from([1, 8, 127]))
    seed = data.draw(st.integers(0, 2 ** 16))
    return random_array(shape, np.int8, seed=seed, low=-128 if bound == 127 else -bound, high=bound)


def first_fits(options, limit):
    """The options not above `limit`, in their order (the first ones suit the accelerator:
    hypothesis starts from and shrinks towards them)."""
    return st.sampled_from([v for v in options if v <= limit] or [1])


def draw_conv(data, x, name):
    _, c, h, w = x.shape
    same = data.draw(st.sampled_from([True, False]))    # the accelerator's padding: kernel // 2
    pad = (0, 0) if same else (data.draw(st.integers(0, 3)), data.draw(st.integers(0, 3)))
    dil = (1, 1) if same else (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    kernels = [3, 1, 5, 2, 4]
    kh = data.draw(first_fits(kernels, (h + 2 * pad[0] - 1) // dil[0] + 1))
    kw = data.draw(first_fits(kernels, (w + 2 * pad[1] - 1) // dil[1] + 1))
    if same:   # "same" padding must still let the kernel fit
        kh, kw = (k if k % 2 else k - 1 for k in (kh, kw))
    groups = data.draw(st.sampled_from([1, c] + [g for g in range(2, c) if c % g == 0]))
    per_group = [1, 2, 3] if groups > 1 else [4, 8, 16, 1, 3]
    cout = groups * data.draw(st.sampled_from(per_group))
    weights = draw_weights(data, (cout, c // groups, kh, kw))
    return soma_conv2d(x, name, weights, draw_bias(data, weights),
                       strides=data.draw(st.sampled_from([1, 2, (2, 2), 3, (1, 2)])),
                       padding=None if same else pad, groups=groups,
                       relu=data.draw(st.booleans()), shift_bits=data.draw(st.integers(0, 31)),
                       dilation=dil)


def draw_layer(data, x, name, earlier):
    if len(x.shape) == 2:
        kinds = ["dense", "add"]
    else:
        kinds = ["conv", "conv", "add", "dense", "pool"]
    kind = data.draw(st.sampled_from(kinds))
    relu_, shift = data.draw(st.booleans()), data.draw(st.integers(0, 31))
    if kind == "conv":
        return draw_conv(data, x, name)
    if kind == "dense":
        features = int(np.prod(x.shape[1:]))
        weights = draw_weights(data, (data.draw(st.sampled_from([4, 8, 12, 1, 3, 10])), features))
        return soma_dense(x, name, weights, draw_bias(data, weights), relu=relu_, shift_bits=shift)
    if kind == "add":
        same = [t for t in earlier if t.shape == x.shape]
        other = data.draw(st.sampled_from(same)) if same else x
        return soma_add(x, other, name, relu=relu_, shift_bits=shift)
    h, w = x.shape[2:]
    k = (data.draw(first_fits([2, 3, 1], h)), data.draw(first_fits([2, 3, 1], w)))
    pad = (data.draw(st.integers(0, k[0] // 2)), data.draw(st.integers(0, k[1] // 2)))
    return maxpool2d(x, name, k, stride=data.draw(st.integers(1, 3)), padding=pad)


def draw_graph(data):
    sides = [8, 4, 6, 5, 9, 1, 2]
    if data.draw(st.integers(0, 5)) == 0:
        x = graph_input("input", (1, data.draw(st.sampled_from([16, 40, 1, 7]))))
    else:
        x = graph_input("input", (1, data.draw(st.sampled_from([4, 8, 1, 3, 6])),
                                  data.draw(st.sampled_from(sides)), data.draw(st.sampled_from(sides))))
    earlier = [x]
    for i in range(data.draw(st.integers(1, 3))):
        x = draw_layer(data, x, f"l{i}", earlier)
        earlier.append(x)
    return make_graph("random_graph", x)


@PROPERTY
@given(data=st.data())
def test_random_valid_graphs_are_bit_exact_on_diana(data):
    g = draw_graph(data)
    b = quiet_compile(g)
    with tempfile.TemporaryDirectory() as out:
        lib = build_host_library([b], out)[g.name]
        xs = inputs_for(g, 1000, seed=data.draw(st.integers(0, 2 ** 16)))
        assert len(xs[0]) == 1004
        assert_bit_exact(lib, g, xs)


# (parameter, bad values, text naming it): one of them replaces a parameter of a valid layer
BAD_CONV_PARAMS = {
    "shift_bits": ([32, 40, 63, -1, 2.5, "4", None, True], "shift_bits"),
    "strides": ([0, -1, (1, 0), (1, 2, 3), 1.5, "a"], "strides"),
    "padding": ([-1, (0, -2), (1, 1, 1), float("nan")], "padding"),
    "dilation": ([0, -2, (1, 0)], "dilation"),
    "groups": ([0, -1, 1.5, "1"], "groups"),
    "relu": (["yes", 2, None], "relu"),
    "bias": ([np.full(64, 2.0 ** 40), np.full(64, 0.5), np.zeros(65), "b"], "bias"),
}


@PROPERTY
@given(data=st.data())
def test_one_bad_parameter_in_a_valid_layer_is_named(data):
    x = graph_input("input", (1, data.draw(st.integers(1, 6)), 6, 6))
    c = x.shape[1]
    weights = draw_weights(data, (data.draw(st.integers(1, 8)), c, 3, 3))
    kw = dict(bias=None, strides=1, padding=1, dilation=1, groups=1, relu=False, shift_bits=4)
    param = data.draw(st.sampled_from(sorted(BAD_CONV_PARAMS)))
    values, needle = BAD_CONV_PARAMS[param]
    value = data.draw(st.sampled_from(values))
    if param == "bias" and isinstance(value, np.ndarray) and value.size == 64:
        value = value[:weights.shape[0]]
    kw[param] = value
    with pytest.raises(NncError) as e:
        soma_conv2d(x, "layer_under_test", weights, **kw)
    assert "layer 'layer_under_test'" in e.value.where and needle in e.value.format()


ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
    st.tuples(st.integers(-3, 5), st.integers(-3, 5)), st.lists(st.integers(-3, 5), max_size=4),
    hnp.arrays(st.sampled_from([np.int8, np.int16, np.int64, np.uint8, np.float32, np.float64,
                                np.bool_]),
               hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)))


@PROPERTY
@given(data=st.data())
def test_any_parameter_values_give_a_layer_or_a_clear_error(data):
    """Never a traceback: whatever the values, the builder makes a layer or raises NncError, and
    a graph it makes compiles for DIANA (or raises NncError)."""
    kind = data.draw(st.sampled_from(["input", "conv", "dense", "add", "pool"]))
    base = graph_input("input", (1, 4, 6, 6))
    try:
        if kind == "input":
            graph_input(data.draw(st.one_of(st.text(max_size=4), ANY_VALUE)), data.draw(ANY_VALUE))
            return
        if kind == "conv":
            kw = {k: data.draw(ANY_VALUE) for k in ("strides", "padding", "groups", "relu",
                                                    "shift_bits", "dilation", "bias")}
            weights = data.draw(st.one_of(ANY_VALUE, st.just(small_weights())))
            y = soma_conv2d(base, data.draw(st.sampled_from(["c", "", "a b"])), weights, **kw)
        elif kind == "dense":
            weights = data.draw(st.one_of(ANY_VALUE, st.just(random_array((4, 144), seed=3))))
            y = soma_dense(base, "fc", weights, data.draw(ANY_VALUE), relu=data.draw(ANY_VALUE),
                           shift_bits=data.draw(ANY_VALUE))
        elif kind == "add":
            y = soma_add(base, base, "add", relu=data.draw(ANY_VALUE),
                         shift_bits=data.draw(ANY_VALUE))
        else:
            y = maxpool2d(base, "pool", data.draw(ANY_VALUE), data.draw(ANY_VALUE),
                          data.draw(ANY_VALUE))
    except NncError:
        return
    assert isinstance(y, Tensor)
    if y.size <= 100_000:
        try:
            quiet_compile(make_graph("g", y))
        except NncError:
            pass
