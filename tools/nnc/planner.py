"""Static memory planner: every intermediate tensor gets an offset in one arena.

Lifetimes come from the execution order: a buffer is live from the step that writes it to the
last step that reads it (inclusive, so an op's inputs and outputs never share bytes). Graph
inputs and outputs live in the caller's buffers, not in the arena. Pure moves whose result is
already contiguous in their input (a reshape, a slice of whole inner rows, a transpose of
size-1 axes) reuse their input's bytes at an offset (`alias_moves`): no copy, no kernel. A kernel's scratch (an im2col column, say) is a buffer live during its own
step only: it shares the arena with the tensors instead of being a static array of its own.

Offsets: buffers are placed largest first, each at the lowest aligned offset that does not
collide with an already placed buffer whose lifetime overlaps (greedy by size, a well-known
near-optimal heuristic for this interval-packing problem). The plan reports its peak next to
the lower bound: the largest total of (aligned) bytes live at any one step. No plan can be
smaller than that bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .ir import Graph, Tensor

# Move ops that alias_moves may turn into views of their input.
_ALIASABLE = ("slice", "transpose")


def contiguous_box_offset(shape, begin, end, step) -> Optional[int]:
    """Element offset of a (begin, end, step) box of a C-contiguous array if the box's elements
    are one contiguous run in it, else None."""
    extents = [len(range(b, e, s)) for b, e, s in zip(begin, end, step)]
    partial = [i for i, (b, n, d) in enumerate(zip(begin, extents, shape)) if (b, n) != (0, d)]
    if partial:
        k = partial[-1]            # the innermost axis the box does not cover whole
        if any(extents[i] != 1 for i in range(k)) or (extents[k] > 1 and step[k] != 1):
            return None
    offset, stride = 0, 1
    for i in reversed(range(len(shape))):
        offset += begin[i] * stride
        stride *= shape[i]
    return offset


def view_offset(op) -> Optional[int]:
    """Byte offset at which `op`'s output lies, unchanged, inside its input; None if it must move."""
    if op.kind == "slice":
        a = op.attrs
        return contiguous_box_offset(op.inputs[0].shape, a["begin"], a["end"], a["step"])
    if op.kind == "transpose":
        shape = op.inputs[0].shape
        moved = [axis for axis in op.attrs["perm"] if shape[axis] != 1]
        return 0 if moved == sorted(moved) else None
    return None


def alias_moves(graph: Graph) -> None:
    """Let every slice or transpose that selects contiguous bytes alias its input."""
    for op in graph.ops:
        if op.kind in _ALIASABLE and op.output.alias_of is None:
            offset = view_offset(op)
            if offset is not None:
                op.output.alias_of = op.inputs[0]
                op.output.alias_offset = offset * op.output.nbytes // max(op.output.size, 1)


def align_up(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


@dataclass
class Buffer:
    tensor: Optional[Tensor]   # the storage tensor; None for a kernel's scratch
    size: int                  # bytes, aligned
    first: int                 # step that writes it
    last: int                  # last step that reads it
    offset: int = -1
    name: str = ""

    def __post_init__(self):
        self.name = self.name or self.tensor.name


@dataclass
class MemoryPlan:
    alignment: int
    buffers: list = field(default_factory=list)
    arena_size: int = 0
    lower_bound: int = 0

    def offset_of(self, tensor: Tensor):
        """Arena offset of a tensor's storage, or None if it lives outside the arena."""
        storage = tensor.storage()
        for b in self.buffers:
            if b.tensor is storage:
                return b.offset
        return None

    def scratch_offset(self, step: int):
        """Arena offset of the scratch of the op at `step`, or None if it has none."""
        for b in self.buffers:
            if b.tensor is None and b.first == step:
                return b.offset
        return None


def _lifetimes(graph: Graph, alignment: int) -> list:
    outside = {id(t.storage()) for t in graph.inputs + graph.outputs}
    buffers = {}
    for step, op in enumerate(graph.ops):
        for t in op.outputs:
            s = t.storage()
            if id(s) in outside or s is not t:
                continue
            buffers.setdefault(id(s), Buffer(s, align_up(s.nbytes, alignment), step, step))
        for t in op.inputs:
            b = buffers.get(id(t.storage()))
            if b is not None:
                b.last = max(b.last, step)
    return list(buffers.values())


def plan_memory(graph: Graph, alignment: int = 8, scratch: Optional[dict] = None) -> MemoryPlan:
    """`scratch`: step -> bytes of scratch the kernel of that step needs."""
    buffers = _lifetimes(graph, alignment)
    for step, nbytes in sorted((scratch or {}).items()):
        if nbytes:
            buffers.append(Buffer(None, align_up(nbytes, alignment), step, step,
                                  name=f"{graph.ops[step].name} (scratch)"))
    placed = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        overlapping = sorted((p for p in placed if p.first <= b.last and b.first <= p.last),
                             key=lambda p: p.offset)
        offset = 0
        for p in overlapping:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, align_up(p.offset + p.size, alignment))
        b.offset = offset
        placed.append(b)
    plan = MemoryPlan(alignment, sorted(buffers, key=lambda b: (b.first, b.offset)))
    plan.arena_size = max((b.offset + b.size for b in buffers), default=0)
    steps = range(len(graph.ops))
    plan.lower_bound = max((sum(b.size for b in buffers if b.first <= s <= b.last) for s in steps),
                           default=0)
    return plan
