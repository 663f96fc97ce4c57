"""The static memory planner on random graphs (hypothesis): the plan is checked against lifetimes
computed here from the op order, independently of the planner's own bookkeeping."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.ir import Graph, Op, QParams, Tensor
from nnc.planner import align_up, alias_moves, contiguous_box_offset, plan_memory, view_offset

Q = QParams.make(1.0, 0)


@st.composite
def random_graphs(draw):
    """A DAG of 1..12 ops in execution order; each reads one or two earlier tensors (or the
    graph input) and writes one tensor of 1..300 bytes. Returns (graph, {tensor name: (first,
    last)} of the arena tensors, scratch {step: bytes})."""
    n = draw(st.integers(1, 12))
    x = Tensor("x", (1, draw(st.integers(1, 64))), "int8", Q)
    tensors, ops = [x], []
    for step in range(n):
        k = draw(st.integers(1, min(2, len(tensors))))
        ins = draw(st.lists(st.sampled_from(tensors), min_size=k, max_size=k))
        out = Tensor(f"t{step}", (1, draw(st.integers(1, 300))), "int8", Q)
        ops.append(Op("add" if len(ins) == 2 else "relu", f"op{step}", ins, [out]))
        tensors.append(out)
    outputs = [ops[-1].output]
    graph = Graph("g", [x], outputs, ops)
    lifetimes = {}
    for step, op in enumerate(ops):
        if op.output is not outputs[0]:
            lifetimes[op.output.name] = [step, step]
    for step, op in enumerate(ops):
        for t in op.inputs:
            if t.name in lifetimes:
                lifetimes[t.name][1] = max(lifetimes[t.name][1], step)
    scratch = draw(st.dictionaries(st.integers(0, n - 1), st.integers(1, 200), max_size=3))
    return graph, lifetimes, scratch


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(random_graphs(), st.sampled_from([1, 4, 8, 16]))
def test_plan_invariants(case, alignment):
    graph, lifetimes, scratch = case
    plan = plan_memory(graph, alignment, scratch)
    # Every intermediate tensor and every scratch has a buffer; graph inputs/outputs have none.
    names = {b.name for b in plan.buffers if b.tensor is not None}
    assert names == set(lifetimes)
    assert plan.offset_of(graph.inputs[0]) is None and plan.offset_of(graph.outputs[0]) is None
    spans = []
    for b in plan.buffers:
        if b.tensor is None:
            step = b.first
            assert b.last == step and plan.scratch_offset(step) == b.offset
            assert b.size == align_up(scratch[step], alignment)
            first, last = step, step
        else:
            first, last = lifetimes[b.name]
            assert (b.first, b.last) == (first, last)
            assert b.size == align_up(b.tensor.nbytes, alignment) >= b.tensor.nbytes
            assert plan.offset_of(b.tensor) == b.offset
        assert b.offset >= 0 and b.offset % alignment == 0
        assert b.offset + b.size <= plan.arena_size
        spans.append((first, last, b.offset, b.offset + b.size, b.name))
    # No two buffers live at the same step share a byte.
    for i, (f0, l0, s0, e0, n0) in enumerate(spans):
        for f1, l1, s1, e1, n1 in spans[i + 1:]:
            if f0 <= l1 and f1 <= l0:
                assert e0 <= s1 or e1 <= s0, f"{n0} [{s0},{e0}) and {n1} [{s1},{e1}) overlap while both live"
    # The lower bound is the largest sum of live bytes at one step, and no plan is below it.
    bound = max((sum(e - s for f, l, s, e, _ in spans if f <= step <= l)
                 for step in range(len(graph.ops))), default=0)
    assert plan.lower_bound == bound <= plan.arena_size
    assert plan.scratch_offset(len(graph.ops)) is None


def test_chain_reuses_memory_and_meets_the_bound():
    """x -> a -> b -> c -> y: a and c may share bytes, the arena is two buffers, not three."""
    x = Tensor("x", (1, 100), "int8", Q)
    a, b, c, y = (Tensor(n, (1, 100), "int8", Q) for n in "abcy")
    ops = [Op("relu", f"r{i}", [s], [d]) for i, (s, d) in enumerate([(x, a), (a, b), (b, c), (c, y)])]
    plan = plan_memory(Graph("chain", [x], [y], ops), alignment=8)
    assert plan.arena_size == plan.lower_bound == 2 * 104
    assert plan.offset_of(a) == plan.offset_of(c) != plan.offset_of(b)


def test_an_alias_has_no_buffer_of_its_own():
    x = Tensor("x", (1, 2, 4), "int8", Q)
    a = Tensor("a", (1, 2, 4), "int8", Q)
    v = Tensor("v", (1, 8), "int8", Q, alias_of=a)
    y = Tensor("y", (1, 8), "int8", Q)
    ops = [Op("relu", "r", [x], [a]), Op("reshape", "flat", [a], [v]), Op("relu", "r2", [v], [y])]
    plan = plan_memory(Graph("g", [x], [y], ops))
    assert [b.name for b in plan.buffers] == ["a"]
    assert plan.buffers[0].last == 2          # the alias's reader keeps its storage alive
    assert plan.offset_of(v) == plan.offset_of(a)


@st.composite
def boxes(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    begin, end, step = [], [], []
    for d in shape:
        b = draw(st.integers(0, d - 1))
        e = draw(st.integers(b + 1, d))
        begin.append(b)
        end.append(e)
        step.append(draw(st.integers(1, 3)))
    return shape, begin, end, step


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(boxes())
def test_contiguous_box_offset_matches_numpy(box):
    """The offset is given exactly when the box's elements are one run of the flat array."""
    shape, begin, end, step = box
    flat = np.arange(int(np.prod(shape))).reshape(shape)
    picked = flat[tuple(slice(b, e, s) for b, e, s in zip(begin, end, step))].ravel()
    is_run = np.array_equal(picked, picked[0] + np.arange(picked.size))
    offset = contiguous_box_offset(shape, begin, end, step)
    if is_run:
        assert offset == picked[0]
    else:
        assert offset is None


def _move(kind, in_shape, out_shape, attrs):
    x = Tensor("x", in_shape, "int8", Q)
    src = Tensor("src", in_shape, "int8", Q)
    out = Tensor("out", out_shape, "int8", Q)
    y = Tensor("y", out_shape, "int8", Q)
    ops = [Op("relu", "r", [x], [src]), Op(kind, "m", [src], [out], attrs), Op("relu", "r2", [out], [y])]
    return Graph("g", [x], [y], ops), ops[1]


def test_alias_moves_turns_a_channel_chunk_into_a_view():
    graph, op = _move("slice", (1, 4, 3, 3), (1, 2, 3, 3),
                      {"begin": (0, 2, 0, 0), "end": (1, 4, 3, 3), "step": (1, 1, 1, 1)})
    alias_moves(graph)
    assert op.output.alias_of is op.inputs[0] and op.output.alias_offset == 18
    plan = plan_memory(graph, alignment=1)
    assert plan.offset_of(op.output) == plan.offset_of(op.inputs[0])
    assert [b.name for b in plan.buffers] == ["src"]


def test_alias_moves_keeps_a_copy_for_a_strided_slice_and_a_real_transpose():
    graph, op = _move("slice", (1, 4, 3, 3), (1, 4, 3, 1),
                      {"begin": (0, 0, 0, 1), "end": (1, 4, 3, 2), "step": (1, 1, 1, 1)})
    alias_moves(graph)
    assert op.output.alias_of is None
    graph, op = _move("transpose", (1, 2, 3, 1), (1, 3, 2, 1), {"perm": (0, 2, 1, 3)})
    assert view_offset(op) is None
    graph, op = _move("transpose", (1, 1, 3, 4), (1, 3, 1, 4), {"perm": (0, 2, 1, 3)})
    assert view_offset(op) == 0       # only a size-1 axis moves: the bytes stay in order


@pytest.mark.parametrize("n,a,want", [(0, 8, 0), (1, 8, 8), (8, 8, 8), (9, 8, 16), (5, 1, 5)])
def test_align_up(n, a, want):
    assert align_up(n, a) == want
