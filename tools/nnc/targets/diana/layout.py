"""Layout: the accelerator keeps 32-bit words byte-reversed. A `reverse_words` op is inserted on
every edge of an accelerator op (HTVM's reshape -> reverse(axis=1) -> reshape), then pairs that
cancel are removed, also across layout-agnostic ops (reshape, ReLU)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ... import reference
from ...ir import Graph, Op, Tensor, c_identifier
from .hardware import ACCEL, CPU, REVERSE

LAYOUT_AGNOSTIC = ("reshape", "relu")   # commute with a per-word byte reversal


@dataclass
class LayoutStats:
    inserted: int = 0
    cancelled_pairs: int = 0
    merged: int = 0
    moved_across: list = field(default_factory=list)   # layout-agnostic ops now on reversed data

    @property
    def remaining(self) -> int:
        return self.inserted - 2 * self.cancelled_pairs - self.merged


def _reverse_op(name: str, src: Tensor, dst: Tensor) -> Op:
    return Op(REVERSE, name, [src], [dst], {"diana_placement": CPU})


def _fresh(t: Tensor, name: str) -> Tensor:
    return Tensor(name, tuple(t.shape), t.dtype, t.qparams)


def _op_namer(graph: Graph):
    """Names for new ops whose C identifiers differ from every other op's (a user's layer may be
    called 'conv1_reverse_out'); a name is only changed when it would clash."""
    taken = {c_identifier(op.name) for op in graph.ops}

    def fresh(name: str) -> str:
        while c_identifier(name) in taken:
            name += "_"
        taken.add(c_identifier(name))
        return name
    return fresh


def insert_reversals(graph: Graph, stats: Optional[LayoutStats] = None) -> LayoutStats:
    """A reverse_words op on every edge of every accelerator op (before any cancellation)."""
    stats = stats or LayoutStats()
    fresh = _op_namer(graph)
    new_ops = []
    for op in graph.ops:
        if op.attrs.get("diana_placement") != ACCEL:
            new_ops.append(op)
            continue
        for i, t in enumerate(op.inputs):
            r = _fresh(t, f"{t.name}.rev_for_{op.name}_{i}")
            new_ops.append(_reverse_op(fresh(f"{op.name}.reverse_in{i}"), t, r))
            op.inputs[i] = r
            stats.inserted += 1
        out = op.outputs[0]
        r = _fresh(out, f"{out.name}.rev")
        op.outputs[0] = r
        new_ops.append(op)
        new_ops.append(_reverse_op(fresh(f"{op.name}.reverse_out"), r, out))
        stats.inserted += 1
    graph.ops[:] = new_ops
    return stats


def _rewire(graph: Graph, old: Tensor, new: Tensor) -> None:
    for op in graph.ops:
        op.inputs = [new if t is old else t for t in op.inputs]
        for t in op.outputs:
            if t.alias_of is old:
                t.alias_of = new


def _is_output(graph: Graph, t: Tensor) -> bool:
    return any(t is o for o in graph.outputs)


def _used(graph: Graph, t: Tensor) -> bool:
    return _is_output(graph, t) or bool(graph.consumers(t)) or any(
        o.alias_of is t for op in graph.ops for o in op.outputs)


def cancel_reversals(graph: Graph, stats: Optional[LayoutStats] = None) -> LayoutStats:
    """Remove reversals that undo each other; repeat until nothing changes."""
    stats = stats or LayoutStats()
    changed = True
    while changed:
        changed = False
        for r2 in list(graph.ops):
            if r2.kind != REVERSE or r2 not in graph.ops:
                continue
            src = r2.inputs[0]
            p = graph.producer(src)
            if p is None:
                continue
            dst = r2.output
            if _is_output(graph, dst):
                continue
            if p.kind == REVERSE:
                # rev(rev(x)) == x: readers of dst read x
                _rewire(graph, dst, p.inputs[0])
                graph.ops.remove(r2)
                stats.cancelled_pairs += 1
                if not _used(graph, src):
                    graph.ops.remove(p)
                else:   # the other reversal stays for its other readers: one removed, not a pair
                    stats.cancelled_pairs -= 1
                    stats.merged += 1
                changed = True
            elif (p.kind in LAYOUT_AGNOSTIC and len(graph.consumers(src)) == 1
                  and not _is_output(graph, src)):
                r1 = graph.producer(p.inputs[0])
                if r1 is None or r1.kind != REVERSE:
                    continue
                # rev(L(rev(x))) == L(x) for a byte-order-agnostic L
                mid = p.inputs[0]
                p.inputs[0] = r1.inputs[0]
                if p.kind == "reshape" and src.alias_of is mid:
                    src.alias_of = r1.inputs[0]
                _rewire(graph, dst, src)
                graph.ops.remove(r2)
                stats.moved_across.append(p.name)
                if not _used(graph, mid):
                    graph.ops.remove(r1)
                    stats.cancelled_pairs += 1
                else:
                    stats.merged += 1
                changed = True
        # two reversals of one tensor: keep the first
        seen = {}
        for op in list(graph.ops):
            if op.kind != REVERSE:
                continue
            key = id(op.inputs[0])
            if key in seen and not _is_output(graph, op.output):
                _rewire(graph, op.output, seen[key].output)
                graph.ops.remove(op)
                stats.merged += 1
                changed = True
            else:
                seen.setdefault(key, op)
    return stats


def run_transformed(graph: Graph, inputs: list) -> list:
    """Numpy interpreter of a graph after the DIANA passes (reversed layouts made explicit).

    Used by the tests to check that the layout pass keeps the graph's meaning."""
    def rev(x):
        n = x.shape[0]
        return x.reshape(n, -1, 4)[:, :, ::-1].reshape(x.shape)

    def run_op(op, xs):
        if op.kind == REVERSE:
            return rev(xs[0])
        if op.attrs.get("diana_placement") == ACCEL:
            # the accelerator: reads and writes word-reversed data
            return rev(reference.run_op(op, [rev(x) for x in xs]))
        return reference.run_op(op, xs)

    return reference.run(graph, inputs, op_runner=run_op)
