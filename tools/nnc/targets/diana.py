"""The DIANA target ("soma_dory, c"): digital-accelerator layers as DORY kernels, the rest as C.

DIANA (KU Leuven) is a RISC-V host core (RV32IMC) with a digital int8 accelerator (SoMa, a
16x16 PE array). The passes, in order:

1. partition  every op that meets the accelerator's constraints (`accelerator_violations`) is
              placed on it; every other op falls back to C on the RISC-V core, with a
              `DianaFallbackWarning` that names the layer and the constraint it broke.
2. tile       every accelerator layer is fitted into L1 (256000 B activations, 64000 B weights):
              untiled when it fits, else tiles of output rows x output channels (multiples of
              16) streamed between L2 and L1. A layer that cannot be tiled is an NncError that
              names the layer and its sizes.
3. layout     the accelerator keeps 32-bit words byte-reversed: a `reverse_words` op is inserted
              on every edge of an accelerator op (HTVM's reshape -> reverse(axis=1) -> reshape),
              then pairs that cancel are removed, also across layout-agnostic ops (reshape, ReLU).

Weights are packed as the accelerator reads them (`pack_weights`); the kernels themselves come
from `nnc.kernels.diana_kernels` and call the HAL in firmware/diana/hal, a bit-exact C model.
The placement report (layer, where it runs, why, MACs, tiles, estimated cycles) is
`DianaTarget.report_text()`.

Cost model (also in firmware/diana/hal/diana_hal.h, which counts the same numbers at run time):
conv2d ceil(k/16)*ceil(c/16)*fy*fx*oy*ox cycles per tile, depthwise ceil(k/16)*fy*fx*oy*ox,
dense ceil(k/16)*ceil(c/16), add ceil(n/16); DMA ceil(bytes/4) (one word per cycle, not
overlapped). Peak 256 MAC/cycle at 100 MHz.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .. import ir
from ..errors import NncError
from ..ir import Graph, Op, Tensor

L1_ACT_BYTES = 256000
L1_WEIGHT_BYTES = 64000
L2_BYTES = 512000
CLOCK_HZ = 100_000_000
PEAK_MACS_PER_CYCLE = 256
KERNEL_SIZES = (1, 3, 5, 7)

REVERSE = "reverse_words"
# The IR learns the layout op (a CPU op: HTVM's fused reshape_reverse_reshape).
ir.OP_KINDS.setdefault(REVERSE, "swap the 4 bytes of every 32-bit word (DIANA accelerator layout)")
LAYOUT_AGNOSTIC = ("reshape", "relu")   # commute with a per-word byte reversal

ACCEL = "accelerator"
CPU = "cpu"


class DianaFallbackWarning(UserWarning):
    """An op runs on the RISC-V core instead of the digital accelerator."""


def ceil16(n: int) -> int:
    return (n + 15) // 16


def align4(n: int) -> int:
    return (n + 3) // 4 * 4


# -- 1. partitioning ------------------------------------------------------------------------------

def _zp(t: Tensor) -> int:
    return t.qparams.zero_point if t.qparams else 0


def _common_violations(op: Op) -> list:
    out = []
    a = op.attrs
    if a.get("requant") != "shift":
        out.append(f"requantization {a.get('requant')!r}: the accelerator only does "
                   "right_shift -> clip -> cast (requant='shift')")
    else:
        s = a.get("shift")
        if not isinstance(s, (int, np.integer)) or not 0 <= int(s) <= 31:
            out.append(f"shift {s!r}: the accelerator takes a constant right shift in [0, 31]")
    if tuple(a.get("clamp", ())) not in ((-128, 127), (0, 127)):
        out.append(f"clip {tuple(a.get('clamp', ()))}: the accelerator clips to [-128, 127], "
                   "or [0, 127] with ReLU")
    for t in op.inputs + op.outputs:
        if t.dtype != "int8":
            out.append(f"tensor '{t.name}' is {t.dtype}: the accelerator takes int8")
        elif t.size % 4:
            out.append(f"tensor '{t.name}' {tuple(t.shape)} has {t.size} elements, not a multiple "
                       "of 4 (the accelerator works in 4-byte words)")
        if _zp(t) != 0:
            out.append(f"tensor '{t.name}' has zero point {_zp(t)}: the accelerator has none")
    wzp = op.params.get("weight_zp")
    if wzp is not None and np.any(wzp != 0):
        out.append("weights with a zero point: the accelerator takes symmetric int8 weights")
    for key, dtype in (("weight", np.int8), ("bias", np.int32)):
        if key in op.params and op.params[key].dtype != dtype:
            out.append(f"{key} is {op.params[key].dtype}: the accelerator takes {np.dtype(dtype)}")
    return out


def accelerator_violations(op: Op) -> list:
    """The accelerator constraints `op` breaks (empty: it runs on the digital accelerator)."""
    a = op.attrs
    if op.kind == "conv2d":
        out = []
        cout, cin_g, kh, kw = op.params["weight"].shape
        cin = op.inputs[0].shape[1]
        if kh not in KERNEL_SIZES or kw not in KERNEL_SIZES:
            out.append(f"kernel {kh}x{kw}: the accelerator takes 1, 3, 5 or 7 in each direction")
        if tuple(a["stride"]) not in ((1, 1), (2, 2)):
            out.append(f"strides {tuple(a['stride'])}: the accelerator takes (1, 1) or (2, 2)")
        if tuple(a["dilation"]) != (1, 1):
            out.append(f"dilation {tuple(a['dilation'])}: the accelerator takes (1, 1)")
        if tuple(a["padding"]) != (kh // 2, kw // 2):
            out.append(f"padding {tuple(a['padding'])}: the accelerator takes symmetric 'same' "
                       f"padding ({kh // 2}, {kw // 2}) for a {kh}x{kw} kernel")
        g = a["groups"]
        if g != 1 and not (g == cin == cout and cin_g == 1):
            out.append(f"groups {g}: the accelerator takes 1, or groups == channels (depthwise)")
        return out + _common_violations(op)
    if op.kind == "dense":
        out = []
        if len(op.inputs[0].shape) != 2:
            out.append(f"input of shape {op.inputs[0].shape}: dense takes [1, features]")
        return out + _common_violations(op)
    if op.kind == "add":
        out = []
        if tuple(op.inputs[0].shape) != tuple(op.inputs[1].shape):
            out.append(f"inputs of shapes {op.inputs[0].shape} and {op.inputs[1].shape}: "
                       "the accelerator adds tensors of one shape")
        return out + _common_violations(op)
    if op.kind in ("maxpool2d", "avgpool2d"):
        return ["pooling is never offloaded: it runs on the RISC-V core"]
    if op.kind == "relu":
        return ["a standalone ReLU is no accelerator op (fuse it: relu=True on the layer before)"]
    if op.kind == "reshape":
        return ["a reshape moves no data"]
    return [f"{op.kind} is not an operation of the digital accelerator"]


def check_shift(op: Op) -> None:
    """A shift outside [0, 31] has no backend: the C fallback would shift an int32 by 32 or
    more (undefined behaviour), so it is an error, not a fallback."""
    s = op.attrs.get("shift")
    if op.attrs.get("requant") == "shift" and (
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) <= 31):
        raise NncError(f"shift {s!r} is not an integer in [0, 31]", f"layer '{op.name}'",
                       "build the layer with shift_bits between 0 and 31")


def is_depthwise(op: Op) -> bool:
    return op.kind == "conv2d" and op.attrs["groups"] > 1


# -- 2. tiling ------------------------------------------------------------------------------------

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


def _words(nbytes: int) -> int:
    return (nbytes + 3) // 4


def _conv_geometry(op: Op) -> dict:
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
    """(compute, dma) cycles of the tile loop diana_kernels emits (mirrors the HAL counters)."""
    compute = dma = 0
    for k0 in range(0, g["k"], kt):
        kn = min(kt, g["k"] - k0)
        blocks = ceil16(kn)
        dma += _words(blocks * g["block"]) + _words(64 * blocks)
        for y0 in range(0, g["oh"], ht):
            yn = min(ht, g["oh"] - y0)
            first = y0 * g["s"] - g["pt"]
            last = (y0 + yn - 1) * g["s"] - g["pt"] + g["fy"]
            rows = min(last, g["h"]) - max(first, 0)
            cin_t = kn if g["depthwise"] else g["c"]
            dma += _words(cin_t * rows * g["w"]) + _words(kn * yn * g["ow"])
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
    g = _conv_geometry(op)
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
            compute, dma = 0, _words(c)
            for k0 in range(0, k, kt):
                kn = min(kt, k - k0)
                dma += _words(ceil16(kn) * block) + _words(64 * ceil16(kn)) + _words(kn)
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
        dma += 3 * _words(m)
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


# -- weight packing -------------------------------------------------------------------------------

def _reverse_words(b: np.ndarray) -> np.ndarray:
    assert b.size % 4 == 0, b.size
    return b.reshape(-1, 4)[:, ::-1].reshape(-1)


def pack_weights(op: Op) -> np.ndarray:
    """The int8 blob the accelerator reads: packed weights then int32 biases, word-reversed.

    conv:      [K/16][C][FY][FX][16] (K padded to 16), then K_pad int32 biases
    depthwise: [K/16][4][FY][FX][16], slot 0 the channel's kernel, slots 1..3 zero
    dense:     [K/16][C_pad][16] (C padded to 16)
    """
    w = op.params["weight"].astype(np.int8)
    k = w.shape[0]
    kp = ceil16(k) * 16
    if op.kind == "conv2d":
        _, c, fy, fx = w.shape
        if is_depthwise(op):
            wp = np.zeros((kp, 4, fy, fx), np.int8)
            wp[:k, 0] = w[:, 0]
            c = 4
        else:
            wp = np.zeros((kp, c, fy, fx), np.int8)
            wp[:k] = w
        packed = wp.reshape(kp // 16, 16, c, fy, fx).transpose(0, 2, 3, 4, 1)
    elif op.kind == "dense":
        c = w.shape[1]
        cp = ceil16(c) * 16
        wp = np.zeros((kp, cp), np.int8)
        wp[:k, :c] = w
        packed = wp.reshape(kp // 16, 16, cp).transpose(0, 2, 1)
    else:
        raise ValueError(f"{op.name}: {op.kind} has no weights")
    bias = np.zeros(kp, "<i4")
    bias[:k] = op.params["bias"].astype(np.int32)
    blob = np.concatenate([packed.reshape(-1).view(np.uint8), bias.view(np.uint8)])
    return _reverse_words(blob).view(np.int8).copy()


# -- 3. layout: word reversal ---------------------------------------------------------------------

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


def insert_reversals(graph: Graph, stats: Optional[LayoutStats] = None) -> LayoutStats:
    """A reverse_words op on every edge of every accelerator op (before any cancellation)."""
    stats = stats or LayoutStats()
    new_ops = []
    for op in graph.ops:
        if op.attrs.get("diana_placement") != ACCEL:
            new_ops.append(op)
            continue
        for i, t in enumerate(op.inputs):
            r = _fresh(t, f"{t.name}.rev_for_{op.name}_{i}")
            new_ops.append(_reverse_op(f"{op.name}.reverse_in{i}", t, r))
            op.inputs[i] = r
            stats.inserted += 1
        out = op.outputs[0]
        r = _fresh(out, f"{out.name}.rev")
        op.outputs[0] = r
        new_ops.append(op)
        new_ops.append(_reverse_op(f"{op.name}.reverse_out", r, out))
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
    from .. import reference

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


# -- the target -----------------------------------------------------------------------------------

@dataclass
class Placement:
    layer: str
    kind: str
    where: str           # ACCEL or CPU
    why: str
    macs: int
    tiling: Optional[Tiling] = None
    kernel: str = ""     # which DORY entry point


def _kernel_entry(op: Op) -> str:
    if op.kind == "conv2d":
        return "digital_depthwise_conv_2d" if is_depthwise(op) else "digital_conv_2d"
    return {"dense": "digital_fully_connected", "add": "digital_element_wise_sum"}[op.kind]


class DianaTarget:
    """compile_graph(graph, DianaTarget()) compiles for DIANA; the graph is changed in place
    (use `compile_diana`, which works on a copy)."""
    name = "diana"
    target_string = "soma_dory, c"
    golden_reference = "nnc.reference (requant='shift': arithmetic right shift, clip)"

    def __init__(self, l1_act: int = L1_ACT_BYTES, l1_weights: int = L1_WEIGHT_BYTES,
                 warn: bool = True):
        self.l1_act, self.l1_weights, self.warn = l1_act, l1_weights, warn
        self.placements: list = []
        self.layout = LayoutStats()
        self.graph_name = ""
        self.fallback_warnings: list = []

    # passes
    def passes(self):
        return [self.partition, self.tile, self.layout_pass]

    def partition(self, graph: Graph) -> None:
        self.graph_name = graph.name
        self.placements = []
        for op in graph.ops:
            check_shift(op)
            violations = accelerator_violations(op)
            if not violations:
                op.attrs["diana_placement"] = ACCEL
                self.placements.append(Placement(op.name, op.kind, ACCEL,
                                                 "meets every digital accelerator constraint",
                                                 op.macs(), kernel=_kernel_entry(op)))
                continue
            op.attrs["diana_placement"] = CPU
            why = "; ".join(violations)
            self.placements.append(Placement(op.name, op.kind, CPU, why, op.macs(), kernel="C"))
            if op.kind != "reshape":
                msg = (f"DIANA: layer '{op.name}' ({op.kind}) falls back to the RISC-V core (C): "
                       f"{why}")
                self.fallback_warnings.append(msg)
                if self.warn:
                    warnings.warn(DianaFallbackWarning(msg), stacklevel=2)

    def tile(self, graph: Graph) -> None:
        by_name = {p.layer: p for p in self.placements}
        for op in graph.ops:
            if op.attrs.get("diana_placement") == ACCEL:
                t = tile_op(op, self.l1_act, self.l1_weights)
                op.attrs["diana_tiling"] = t
                by_name[op.name].tiling = t

    def layout_pass(self, graph: Graph) -> None:
        self.layout = insert_reversals(graph)
        cancel_reversals(graph, self.layout)

    def kernel_providers(self):
        from ..kernels.c_kernels import PortableCKernels
        from ..kernels.diana_kernels import DianaKernels
        return [DianaKernels(), PortableCKernels()]

    def extra_header_api(self, graph) -> str:
        accel = sum(1 for p in self.placements if p.where == ACCEL)
        return (f"/* DIANA (soma_dory, c): {accel} of {len(self.placements)} layers on the digital "
                f"accelerator;\n * link firmware/diana/hal/diana_hal.c (bit-exact model). */\n"
                f"#define TVMGEN_{ir.c_identifier(graph.name).upper()}_DIANA_ACCEL_MACS "
                f"{self.accel_macs()}")

    def extra_source(self, graph, plan) -> str:
        return ""

    # report
    def accel_macs(self) -> int:
        return sum(p.macs for p in self.placements if p.where == ACCEL)

    def total_macs(self) -> int:
        return sum(p.macs for p in self.placements)

    def accel_cycles(self) -> int:
        return sum(p.tiling.cycles for p in self.placements if p.tiling)

    def summary(self) -> dict:
        total = self.total_macs()
        return {
            "graph": self.graph_name, "target": self.target_string,
            "macs": total, "accelerator_macs": self.accel_macs(),
            "accelerator_mac_share": self.accel_macs() / total if total else 0.0,
            "accelerator_cycles": self.accel_cycles(),
            "accelerator_us": self.accel_cycles() / CLOCK_HZ * 1e6,
            "reversals": {"inserted": self.layout.inserted,
                          "cancelled_pairs": self.layout.cancelled_pairs,
                          "merged": self.layout.merged,
                          "moved_across": list(self.layout.moved_across)},
            "warnings": list(self.fallback_warnings),
            "layers": [{"layer": p.layer, "kind": p.kind, "where": p.where, "why": p.why,
                        "macs": p.macs, "kernel": p.kernel,
                        "tiling": p.tiling.describe() if p.tiling else None,
                        "cycles": p.tiling.cycles if p.tiling else None,
                        "compute_cycles": p.tiling.compute_cycles if p.tiling else None,
                        "dma_cycles": p.tiling.dma_cycles if p.tiling else None}
                       for p in self.placements],
        }

    def report_text(self, graph: Optional[Graph] = None) -> str:
        rows = [("layer", "kind", "runs on", "MACs", "tiling", "est. cycles", "why")]
        for p in self.placements:
            where = "accelerator" if p.where == ACCEL else "RISC-V (C)"
            rows.append((p.layer, p.kind, where, str(p.macs),
                         p.tiling.describe() if p.tiling else "-",
                         str(p.tiling.cycles) if p.tiling else "-", p.why))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = [f"DIANA placement report: {self.graph_name} (target \"{self.target_string}\")", ""]
        for r in rows:
            lines.append("  ".join(r[i].ljust(widths[i]) if i in (0, 1, 2, 4) else r[i].rjust(widths[i])
                                   for i in range(6)) + "  " + r[6])
        total, accel = self.total_macs(), self.accel_macs()
        share = 100.0 * accel / total if total else 0.0
        cyc = self.accel_cycles()
        lay = self.layout
        lines += ["",
                  f"MACs on the accelerator: {accel} of {total} ({share:.1f}%)",
                  f"estimated accelerator time: {cyc} cycles = {cyc / CLOCK_HZ * 1e6:.1f} us at "
                  f"{CLOCK_HZ // 1_000_000} MHz (peak {PEAK_MACS_PER_CYCLE} MAC/cycle; DMA one word/cycle)",
                  f"layout: {lay.inserted} word reversals inserted, {lay.cancelled_pairs} pairs cancelled"
                  f"{', ' + str(lay.merged) + ' merged' if lay.merged else ''}"
                  f"{' (across ' + ', '.join(lay.moved_across) + ')' if lay.moved_across else ''}, "
                  f"{lay.remaining} remain on the CPU",
                  f"L1: activations {self.l1_act} B, weights {self.l1_weights} B"]
        if graph is not None:
            lines.append("reversals left: " + (", ".join(op.name for op in graph.ops
                                                        if op.kind == REVERSE) or "none"))
        return "\n".join(lines) + "\n"


@dataclass
class DianaBuild:
    compiled: object          # nnc.compiler.CompiledModel (graph after the passes)
    target: DianaTarget
    source_graph: Graph       # the graph as built (the reference runs this one)

    def l2_usage(self) -> dict:
        """Bytes the model needs in DIANA's L2: arena, constants (packed weights), graph I/O."""
        c = self.compiled
        consts = sum(int(v.nbytes) for k in c.kernels.values() for v in k.consts.values())
        io = sum(t.nbytes for t in c.graph.inputs + c.graph.outputs)
        return {"arena": c.plan.arena_size, "constants": consts, "io": io,
                "total": c.plan.arena_size + consts + io, "l2": L2_BYTES}

    @property
    def report(self) -> str:
        u = self.l2_usage()
        line = (f"L2: arena {u['arena']} B + weights/constants {u['constants']} B + inputs/outputs "
                f"{u['io']} B = {u['total']} B of {L2_BYTES} B")
        if u["total"] > L2_BYTES:
            line += (" -- does NOT fit DIANA's L2 (the QEMU firmware has more RAM, real DIANA "
                     "would need the model split)")
        return self.target.report_text(self.compiled.graph) + line + "\n"


def compile_diana(graph: Graph, l1_act: int = L1_ACT_BYTES, l1_weights: int = L1_WEIGHT_BYTES,
                  warn: bool = True) -> DianaBuild:
    """Compile a copy of `graph` for DIANA. Raises NncError for an untileable layer."""
    from ..compiler import compile_graph
    work = copy.deepcopy(graph)
    target = DianaTarget(l1_act, l1_weights, warn)
    compiled = compile_graph(work, target)
    compiled.report = target.summary()
    return DianaBuild(compiled, target, graph)
