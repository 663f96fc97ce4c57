"""IMX681 memory regions: where every buffer lives, and whether the network fits.

Regions come from the configuration (`<REGION>_START`, `<REGION>_SIZE`):
  PARAMS       the parameter image (image.py): header, buffer table, operation records
               with their weights, biases and multipliers. An operation's `Params` address in
               summary.txt is its record.
  STATIC_DATA  state buffers (one per merged state, read and write share it), then constants
               (unmerged reads), each 8-byte aligned, in that order.
  SCRATCH_RAM  the activation arena at the start (offsets from nnc.planner: buffers whose
               lifetimes do not overlap share bytes), then the frame inputs, then the model
               outputs, each 8-byte aligned.
Reshape outputs that move no data alias their parent's bytes (summary.txt: `Parent`).

The portable kernels need no working memory; `Working Mem` in summary.txt is the first free
SCRATCH_RAM byte (where an operation's working memory would go) with 0 bytes reserved.

Buffers are stored planar (NCHW, the layout of the C kernels); summary.txt prints dimensions in
the seed's N x H x W x C order and, for a C x H x W tensor, C*H rows of W bytes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import NncError
from ...planner import align_up
from .config import REGIONS

ALIGN = 8


def nhwc(shape) -> tuple:
    """Dimensions in the seed's N x H x W x C order (vectors: N x 1 x F x 1)."""
    s = tuple(int(d) for d in shape)
    if len(s) == 4:
        return (s[0], s[2], s[3], s[1])
    if len(s) == 3:
        return (s[0], s[1], s[2], 1)
    if len(s) == 2:
        return (s[0], 1, s[1], 1)
    if len(s) == 1:
        return (1, 1, s[0], 1)
    return (1, 1, 1, 1)


def rows_cols(shape) -> tuple:
    """(rows, bytes per row) of a planar int8 buffer (batch 1)."""
    s = tuple(int(d) for d in shape)
    if len(s) == 4:
        return s[1] * s[2], s[3]
    if len(s) == 3:
        return s[1], s[2]
    if len(s) == 2:
        return 1, s[1]
    return 1, max(1, s[0] if s else 1)


@dataclass
class Placed:
    buffer_id: int
    tensor: object
    role: str          # frame_input | output | state | constant | activation | alias
    region: str
    address: int
    size: int
    parent: int = -1


@dataclass
class MemoryMap:
    regions: dict                          # name -> (start, size)
    used: dict                             # name -> bytes used
    breakdown: dict                        # name -> [(what, bytes)]
    placed: dict = field(default_factory=dict)          # id(tensor) -> Placed
    op_params: list = field(default_factory=list)       # op index -> address of its record
    working_mem: int = 0

    def address_of(self, tensor) -> int:
        return self.placed[id(tensor)].address

    def usage(self) -> dict:
        return {r: {"start": s, "size": n, "used": self.used[r]} for r, (s, n) in self.regions.items()}


def layout(lowered, plan, cfg, params_layout) -> MemoryMap:
    """Place every buffer; an error names the region, the bytes needed and available."""
    regions = {r: (cfg[f"{r}_START"], cfg[f"{r}_SIZE"]) for r in REGIONS}
    g, ids = lowered.graph, lowered.ids
    mm = MemoryMap(regions, {r: 0 for r in REGIONS}, {r: [] for r in REGIONS})

    # PARAMS: the image built by image.py.
    start = regions["PARAMS"][0]
    mm.used["PARAMS"] = params_layout.size
    mm.breakdown["PARAMS"] = params_layout.breakdown()
    mm.op_params = [start + off for off in params_layout.op_offsets]

    # STATIC_DATA: states, then constants.
    start, cursor = regions["STATIC_DATA"][0], 0
    for p in lowered.persistent:
        size = p.read.nbytes
        for t in (p.read, p.write):
            mm.placed[id(t)] = Placed(ids[id(t)], t, "state", "STATIC_DATA", start + cursor, size)
        mm.breakdown["STATIC_DATA"].append((f"state '{p.attribute}'", size))
        cursor = align_up(cursor + size, ALIGN)
    for c in lowered.constants:
        size = c.read.nbytes
        mm.placed[id(c.read)] = Placed(ids[id(c.read)], c.read, "constant", "STATIC_DATA",
                                       start + cursor, size)
        mm.breakdown["STATIC_DATA"].append((f"constant '{c.attribute}'", size))
        cursor = align_up(cursor + size, ALIGN)
    mm.used["STATIC_DATA"] = cursor

    # SCRATCH_RAM: arena, frame inputs, model outputs.
    start = regions["SCRATCH_RAM"][0]
    cursor = align_up(plan.arena_size, ALIGN)
    mm.breakdown["SCRATCH_RAM"].append(("activation arena", plan.arena_size))
    for kind, tensors in (("frame_input", lowered.frame_inputs), ("output", lowered.model_outputs)):
        for t in tensors:
            s = t.storage()
            if id(s) not in mm.placed:
                mm.placed[id(s)] = Placed(ids[id(s)], s, kind, "SCRATCH_RAM", start + cursor, s.nbytes)
                mm.breakdown["SCRATCH_RAM"].append((f"{kind.replace('_', ' ')} {s.name}", s.nbytes))
                cursor = align_up(cursor + s.nbytes, ALIGN)
    mm.used["SCRATCH_RAM"] = cursor
    mm.working_mem = start + cursor

    # Everything else: arena tensors and aliases.
    for t in g.tensors():
        if id(t) in mm.placed:
            continue
        if t.alias_of is not None:
            continue
        off = plan.offset_of(t)
        if off is None:
            raise NncError(f"internal: tensor {t.name} has no storage", "imx681 memory layout")
        mm.placed[id(t)] = Placed(ids[id(t)], t, "activation", "SCRATCH_RAM", start + off, t.nbytes)
    for t in g.tensors():
        if id(t) not in mm.placed:
            s = mm.placed[id(t.storage())]
            mm.placed[id(t)] = Placed(ids[id(t)], t, "alias", s.region, s.address, t.nbytes,
                                      ids[id(t.alias_of)])

    for r in REGIONS:
        need, (_, have) = mm.used[r], regions[r]
        if need > have:
            parts = ", ".join(f"{what} {n}" for what, n in mm.breakdown[r])
            raise NncError(f"the network does not fit in {r}: it needs {need} bytes, "
                           f"{have} bytes are available ({r}_SIZE {have})",
                           f"{cfg.where(f'{r}_SIZE')}; {r} holds: {parts}",
                           f"give {r} at least {need} bytes ({r}_SIZE {need}), or compile a "
                           "smaller model")
    return mm
