"""The graph builder and the reference interpreter on tiny hand-made graphs, each checked against
loops written out here (int64 sums, floor shifts)."""
import numpy as np
import pytest

from nnc import reference
from nnc.builder import (flatten, graph_input, make_graph, maxpool2d, relu, soma_add, soma_conv2d,
                         soma_dense)
from nnc.errors import NncError
from nnc.ir import Graph, Op, QParams, Tensor

RNG = np.random.default_rng(7)


def conv_loops(x, w, b, stride, pad, groups, shift, clamp):
    """Direct convolution of one image (C, H, W), zero padding, then >> shift and clip."""
    cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    xp = np.zeros((cin, h + 2 * pad[0], wd + 2 * pad[1]), np.int64)
    xp[:, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    oh = (h + 2 * pad[0] - kh) // stride[0] + 1
    ow = (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((cout, oh, ow), np.int64)
    for o in range(cout):
        g = o // (cout // groups)
        for y in range(oh):
            for x_ in range(ow):
                acc = int(b[o])
                for c in range(cin_g):
                    for i in range(kh):
                        for j in range(kw):
                            acc += int(xp[g * cin_g + c, y * stride[0] + i, x_ * stride[1] + j]) * int(w[o, c, i, j])
                out[o, y, x_] = min(max(acc >> shift, clamp[0]), clamp[1])
    return out


@pytest.mark.parametrize("stride,pad,groups,relu_", [((1, 1), None, 1, False), ((2, 1), (0, 1), 1, True),
                                                     ((1, 2), (1, 0), 2, False), ((1, 1), None, 4, True)])
def test_conv2d_equals_loops(stride, pad, groups, relu_):
    x = graph_input("x", (1, 4, 6, 5))
    w = RNG.integers(-128, 128, size=(4, 4 // groups, 3, 3)).astype(np.int8)
    b = RNG.integers(-5000, 5000, size=4).astype(np.int32)
    y = soma_conv2d(x, "conv", w, b, strides=stride, padding=pad, groups=groups, relu=relu_, shift_bits=6)
    g = make_graph("g", y)
    xs = np.concatenate([np.full((1, 4, 6, 5), -128), np.full((1, 4, 6, 5), 127),
                         RNG.integers(-128, 128, size=(6, 4, 6, 5))]).astype(np.int8)
    got = reference.run(g, [xs])[0]
    clamp = (0, 127) if relu_ else (-128, 127)
    p = (1, 1) if pad is None else pad
    for n in range(len(xs)):
        assert np.array_equal(got[n], conv_loops(xs[n], w, b, stride, p, groups, 6, clamp)), n


def test_dense_add_relu_maxpool_flatten_chain():
    x = graph_input("x", (1, 2, 4, 4))
    p = maxpool2d(x, "pool", kernel=2)
    f = flatten(p, "flat")
    w = RNG.integers(-128, 128, size=(3, 8)).astype(np.int8)
    d = soma_dense(f, "fc", w, np.array([10, -10, 0], np.int32), shift_bits=3)
    r = relu(d, "relu")
    s = soma_add(r, d, "sum", shift_bits=1)
    g = make_graph("chain", s)
    assert [op.kind for op in g.ops] == ["maxpool2d", "reshape", "dense", "relu", "add"]
    assert f.alias_of is p
    xs = RNG.integers(-128, 128, size=(5, 2, 4, 4)).astype(np.int8)
    outs, captured = reference.run(g, [xs], capture=True)
    pooled = xs.reshape(5, 2, 2, 2, 2, 2).max(axis=(3, 5))
    assert np.array_equal(captured["pool"], pooled)
    dense = np.clip((pooled.reshape(5, 8).astype(np.int64) @ w.T.astype(np.int64) + [10, -10, 0]) >> 3,
                    -128, 127)
    assert np.array_equal(captured["fc"], dense)
    assert np.array_equal(outs[0], np.clip((np.maximum(dense, 0) + dense) >> 1, -128, 127))


def test_make_graph_keeps_only_what_the_outputs_need():
    x = graph_input("x", (1, 4))
    y = graph_input("y", (1, 4), like=x)
    kept = relu(x, "kept")
    relu(y, "dropped")
    g = make_graph("g", kept)
    assert [op.name for op in g.ops] == ["kept"] and g.inputs == [x]


@pytest.mark.parametrize("make,needle", [
    (lambda x: (relu(x, "a"), relu(x, "a")), "two layers are named 'a'"),
    (lambda x: soma_conv2d(x, "c", np.zeros((2, 3, 3), np.int8)), "not OIHW"),
    (lambda x: soma_conv2d(x, "c", np.full((2, 3, 1, 1), 300)), r"= 300 is not an integer in \[-128, 127\]"),
    (lambda x: soma_conv2d(x, "c", np.zeros((2, 2, 1, 1), np.int8)), "do not fit input channels 3"),
    (lambda x: soma_conv2d(x, "c", np.zeros((2, 3, 1, 1), np.int8), np.zeros(3)), "bias of shape"),
    (lambda x: soma_conv2d(x, "c", np.zeros((2, 3, 1, 1), np.int8), shift_bits=-1), "shift_bits=-1"),
    (lambda x: soma_conv2d(x, "c", np.zeros((2, 3, 9, 9), np.int8), padding=0), "kernel 9x9 spans 9 in height"),
    (lambda x: make_graph("tiny net", relu(x, "r")), "graph name 'tiny net' is not a C identifier"),
    (lambda x: soma_add(x, graph_input("z", (1, 3, 4, 4)), "s"), "two different graphs"),
    (lambda x: soma_add(x, maxpool2d(x, "p"), "s"), "no broadcasting"),
    (lambda x: soma_dense(x, "fc", np.zeros((2, 5), np.int8)), "do not fit input features 48"),
])
def test_builder_mistakes_are_user_errors(make, needle):
    x = graph_input("x", (1, 3, 4, 4))
    with pytest.raises(NncError, match=needle) as e:
        make(x)
    assert e.value.format().startswith("error: ")


def test_reference_checks_input_shape_and_dtype():
    x = graph_input("x", (1, 4))
    g = make_graph("g", relu(x, "r"))
    with pytest.raises(ValueError, match=r"input x: expected int8"):
        reference.run(g, [np.zeros((2, 5), np.int8)])
    with pytest.raises(ValueError, match=r"input x: expected int8"):
        reference.run(g, [np.zeros((2, 4), np.int16)])


@pytest.mark.parametrize("include_pad", [True, False])
def test_avgpool_with_padding_equals_loops(include_pad):
    """Border windows divide by their own count (torch's count_include_pad rule)."""
    src, dst = QParams.make(0.05, -7), QParams.make(0.04, 3)
    x = Tensor("x", (1, 2, 5, 4), "int8", src)
    y = Tensor("y", (1, 2, 3, 2), "int8", dst)
    attrs = {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1), "count_include_pad": include_pad}
    g = Graph("pool", [x], [y], [Op("avgpool2d", "pool", [x], [y], attrs)])
    xs = np.concatenate([np.full((1, 2, 5, 4), 127), RNG.integers(-128, 128, size=(5, 2, 5, 4))]).astype(np.int8)
    got = reference.run(g, [xs])[0]
    f32 = np.float32
    for n in range(len(xs)):
        for c in range(2):
            for oy in range(3):
                for ox in range(2):
                    total, inside = 0, 0
                    for i in range(oy * 2 - 1, oy * 2 + 2):
                        for j in range(ox * 2 - 1, ox * 2 + 2):
                            if 0 <= i < 5 and 0 <= j < 4:
                                total += int(xs[n, c, i, j]) - src.zero_point
                                inside += 1
                    count = 9 if include_pad else inside
                    mult = f32(src.scale) / (f32(dst.scale) * f32(count))
                    want = int(np.clip(np.rint(f32(total) * mult) + dst.zero_point, -128, 127))
                    assert int(got[n, c, oy, ox]) == want, (n, c, oy, ox)


def test_lut_indexes_the_table_by_code_plus_128():
    q = QParams.make(0.1, 0)
    x, y = Tensor("x", (1, 256), "int8", q), Tensor("y", (1, 256), "int8", q)
    table = np.roll(np.arange(-128, 128), 5).astype(np.int8)
    g = Graph("lut", [x], [y], [Op("lut", "act", [x], [y], params={"table": table})])
    codes = np.arange(-128, 128, dtype=np.int8)[None]
    assert np.array_equal(reference.run(g, [codes])[0][0], table)
