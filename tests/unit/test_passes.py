"""Graph passes: each rewrite keeps the graph's meaning (checked with the reference interpreter)."""
import numpy as np
import pytest

from nnc import reference
from nnc.builder import graph_input, make_graph, maxpool2d, relu, soma_conv2d
from nnc.errors import NncError
from nnc.passes import apply_input_layout, conv_maxpool_parts, fuse_conv_maxpool

RNG = np.random.default_rng(3)


def conv_pool_graph(extra_reader=False):
    x = graph_input("x", (1, 2, 6, 6))
    w = RNG.integers(-128, 128, size=(3, 2, 3, 3)).astype(np.int8)
    c = soma_conv2d(x, "conv", w, RNG.integers(-900, 900, 3), relu=True, shift_bits=5)
    p = maxpool2d(c, "pool", kernel=2)
    outs = [p, relu(c, "other")] if extra_reader else p
    return make_graph("g", outs)


def test_fuse_conv_maxpool_is_exact():
    g = conv_pool_graph()
    xs = RNG.integers(-128, 128, size=(20, 2, 6, 6)).astype(np.int8)
    before = reference.run(g, [xs])[0]
    asked = []
    fuse_conv_maxpool(g, lambda op: asked.append(op) or True)
    assert [op.kind for op in g.ops] == ["conv2d_maxpool2d"] and asked[0] is g.ops[0]
    conv, pool = conv_maxpool_parts(g.ops[0])
    assert (conv.kind, conv.name, pool.kind, pool.name) == ("conv2d", "conv", "maxpool2d", "pool")
    assert conv.output.shape == (1, 3, 6, 6) and pool.output is g.outputs[0]
    assert np.array_equal(reference.run(g, [xs])[0], before)


def test_no_fusion_when_refused_or_the_conv_output_has_another_reader():
    g = conv_pool_graph()
    fuse_conv_maxpool(g, lambda op: False)
    assert [op.kind for op in g.ops] == ["conv2d", "maxpool2d"]
    g = conv_pool_graph(extra_reader=True)
    fuse_conv_maxpool(g, lambda op: True)
    assert "conv2d_maxpool2d" not in [op.kind for op in g.ops]


def test_nhwc_input_layout_transposes_in_front():
    x = graph_input("x", (1, 3, 4, 5))
    g = make_graph("g", relu(x, "r"))
    xs = RNG.integers(-128, 128, size=(4, 3, 4, 5)).astype(np.int8)
    want = reference.run(g, [xs])[0]
    apply_input_layout(g, "nhwc")
    g.validate()
    assert g.inputs[0].shape == (1, 4, 5, 3) and g.inputs[0].name == "x"
    assert g.ops[0].kind == "transpose" and g.meta["input_layout"] == "nhwc"
    assert np.array_equal(reference.run(g, [xs.transpose(0, 2, 3, 1).copy()])[0], want)


def test_nchw_layout_changes_nothing_and_unknown_layout_is_a_user_error():
    x = graph_input("x", (1, 3, 4, 5))
    g = make_graph("g", relu(x, "r"))
    apply_input_layout(g, "nchw")
    assert len(g.ops) == 1 and "input_layout" not in g.meta
    with pytest.raises(NncError, match="unknown input layout 'hwc'") as e:
        apply_input_layout(g, "hwc")
    assert "nchw, nhwc" in e.value.fix
