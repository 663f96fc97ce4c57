"""Tiling: every accelerator layer is fitted into L1 (256000 B activations, 64000 B weights):
untiled when it fits, else tiles of output rows x output channels (multiples of 16) streamed
between L2 and L1. A layer that cannot be tiled is an NncError that names the layer and its sizes.

Cost model (also in firmware/diana/hal/diana_hal.h, which counts the same numbers at run time):
conv2d ceil(k/16)*ceil(c/16)*fy*fx*oy*ox cycles per tile, depthwise ceil(k/16)*fy*fx*oy*ox,
dense ceil(k/16)*ceil(c/16), add ceil(n/16); DMA ceil(bytes/4) (one word per cycle, not
overlapped). Peak 256 MAC/cycle at 100 MHz.
"""
from __future__ import annotations

from dataclasses import dataclass

from ...errors import NncError
from ...ir import Op, Tensor
from .hardware import L1_ACT_BYTES, L1_WEIGHT_BYTES, align4, ceil16, words
from .partition import is_depthwise


@dataclass
class Tiling:
    """How an accelerator layer is cut into L1 tiles (streamed from and to L2)."""
    k_tile: int = 0            # output channels per tile (conv, dense)
    h_tile: int = 0            # output rows per tile (conv)
    n_tile: int = 0            # elements per tile (add)
    in_tile_bytes: int = 0     # the largest input tile(s), word aligned
    out_tile_bytes: int = 0
    weight_tile_bytes: int = 0  # packed weights + biases of one tile
    n_tiles: int = 1
    untiled: bool = True
    cycles: int = 0            # estimated accelerator cycles, compute + DMA
    compute_cycles: int = 0
    dma_cycles: int = 0

    def describe(self) -> str:
        if self.untiled:
            return "untiled"
        if self.n_tile:
            return f"{self.n_tiles} tiles of {self.n_tile} elements"
        rows = f" x {self.h_tile} rows" if self.h_tile else ""
        return f"{self.n_tiles} tiles of {self.k_tile} ch{rows}"


def conv_geometry(op: Op) -> dict:
    _, c, h, w = op.inputs[0].shape
    _, k, oh, ow = op.output.shape
    _, _, fy, fx = op.params["weight"].shape
    dw = is_depthwise(op)
    return dict(c=c, h=h, w=w, k=k, oh=oh, ow=ow, fy=fy, fx=fx, s=op.attrs["stride"][0],
                pt=op.attrs["padding"][0], pl=op.attrs["padding"][1], depthwise=dw,
                block=16 * (4 if dw else c) * fy * fx)


def conv_tile_bytes(g: dict, kt: int, ht: int) -> tuple:
    """(input tile, output tile, weight tile) bytes of a conv tile of kt channels x ht rows."""
    cin_t = kt if g["depthwise"] else g["c"]
    rows = min(g["h"], (ht - 1) * g["s"] + g["fy"])
    return (align4(cin_t * rows * g["w"]), align4(kt * ht * g["ow"]),
            ceil16(kt) * (g["block"] + 64))


def _conv_cost(g: dict, kt: int, ht: int) -> tuple:
    """(compute, dma) cycles of the tile loop nnc.targets.diana.kernels emits (mirrors the HAL counters)."""
    compute = dma = 0
    for k0 in range(0, g["k"], kt):
        kn = min(kt, g["k"] - k0)
        blocks = ceil16(kn)
        dma += words(blocks * g["block"]) + words(64 * blocks)
        for y0 in range(0, g["oh"], ht):
            yn = min(ht, g["oh"] - y0)
            first = y0 * g["s"] - g["pt"]
            last = (y0 + yn - 1) * g["s"] - g["pt"] + g["fy"]
            rows = min(last, g["h"]) - max(first, 0)
            cin_t = kn if g["depthwise"] else g["c"]
            dma += words(cin_t * rows * g["w"]) + words(kn * yn * g["ow"])
            if g["depthwise"]:
                compute += ceil16(kn) * g["fy"] * g["fx"] * yn * g["ow"]
            else:
                compute += ceil16(kn) * ceil16(g["c"]) * g["fy"] * g["fx"] * yn * g["ow"]
    return compute, dma


def _k_candidates(k: int) -> list:
    return [k] + [m for m in range(ceil16(k) * 16 - 16, 0, -16) if m < k]


def _shape_text(t: Tensor) -> str:
    return "x".join(str(d) for d in t.shape[1:])


def tile_conv(op: Op, l1_act: int = L1_ACT_BYTES, l1_w: int = L1_WEIGHT_BYTES) -> Tiling:
    g = conv_geometry(op)
    best = None
    for kt in _k_candidates(g["k"]):
        _, _, wb = conv_tile_bytes(g, kt, 1)
        if wb > l1_w:
            continue
        for ht in range(g["oh"], 0, -1):
            ib, ob, _ = conv_tile_bytes(g, kt, ht)
            if ib + ob <= l1_act:
                # DORY's objective: the biggest output tile; ties go to fewer weight reloads.
                score = (kt * ht, kt)
                if best is None or score > best[0]:
                    best = (score, kt, ht)
                break
    if best is None:
        ib, ob, wb = conv_tile_bytes(g, min(16, g["k"]), 1)
        w_total = ceil16(g["k"]) * 16 * (4 if g["depthwise"] else g["c"]) * g["fy"] * g["fx"]
        why = (f"the smallest tile ({min(16, g['k'])} output channels x 1 row) needs {wb} B of "
               f"weights+bias > L1 weights {l1_w} B" if wb > l1_w else
               f"the smallest tile ({min(16, g['k'])} output channels x 1 row) needs {ib} B input + "
               f"{ob} B output > L1 activations {l1_act} B")
        raise NncError(
            f"layer '{op.name}' cannot be tiled into DIANA's L1: {why}",
            f"layer '{op.name}': conv2d input {_shape_text(op.inputs[0])} = {op.inputs[0].nbytes} B, "
            f"output {_shape_text(op.output)} = {op.output.nbytes} B, kernel {g['fy']}x{g['fx']}, "
            f"packed weights {w_total} B + bias {ceil16(g['k']) * 64} B",
            "tiles keep all input channels (DORY); split the layer into layers with fewer input "
            "channels or a smaller input")
    _, kt, ht = best
    ib, ob, wb = conv_tile_bytes(g, kt, ht)
    n_tiles = -(-g["k"] // kt) * -(-g["oh"] // ht)
    compute, dma = _conv_cost(g, kt, ht)
    return Tiling(k_tile=kt, h_tile=ht, in_tile_bytes=ib, out_tile_bytes=ob, weight_tile_bytes=wb,
                  n_tiles=n_tiles, untiled=n_tiles == 1, cycles=compute + dma,
                  compute_cycles=compute, dma_cycles=dma)


def tile_dense(op: Op, l1_act: int = L1_ACT_BYTES, l1_w: int = L1_WEIGHT_BYTES) -> Tiling:
    k, c = op.params["weight"].shape
    block = 16 * ceil16(c) * 16
    ib = align4(c)
    for kt in _k_candidates(k):
        wb = ceil16(kt) * (block + 64)
        ob = align4(kt)
        if wb <= l1_w and ib + ob <= l1_act:
            compute, dma = 0, words(c)
            for k0 in range(0, k, kt):
                kn = min(kt, k - k0)
                dma += words(ceil16(kn) * block) + words(64 * ceil16(kn)) + words(kn)
                compute += ceil16(kn) * ceil16(c)
            n = -(-k // kt)
            return Tiling(k_tile=kt, in_tile_bytes=ib, out_tile_bytes=ob, weight_tile_bytes=wb,
                          n_tiles=n, untiled=n == 1, cycles=compute + dma, compute_cycles=compute,
                          dma_cycles=dma)
    raise NncError(
        f"layer '{op.name}' cannot be tiled into DIANA's L1: one tile of 16 outputs needs "
        f"{block + 64} B of weights+bias (L1 weights {l1_w} B) and {ib} B of input "
        f"(L1 activations {l1_act} B)",
        f"layer '{op.name}': dense {c} -> {k}, input {ib} B, weights {k * c} B",
        "tiles keep all input features (DORY); reduce the input features")


def tile_add(op: Op, l1_act: int = L1_ACT_BYTES) -> Tiling:
    n = op.output.size
    nt = min(n, l1_act // 3 // 4 * 4)
    compute = dma = 0
    for i0 in range(0, n, nt):
        m = min(nt, n - i0)
        dma += 3 * words(m)
        compute += ceil16(m)
    tiles = -(-n // nt)
    return Tiling(n_tile=nt, in_tile_bytes=2 * nt, out_tile_bytes=nt, n_tiles=tiles,
                  untiled=tiles == 1, cycles=compute + dma, compute_cycles=compute, dma_cycles=dma)


def tile_op(op: Op, l1_act: int = L1_ACT_BYTES, l1_w: int = L1_WEIGHT_BYTES) -> Tiling:
    if op.kind == "conv2d":
        return tile_conv(op, l1_act, l1_w)
    if op.kind == "dense":
        return tile_dense(op, l1_act, l1_w)
    if op.kind == "add":
        return tile_add(op, l1_act)
    raise ValueError(f"{op.name}: no accelerator tiling for {op.kind}")
