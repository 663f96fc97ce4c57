"""summary.txt: the seed's per-operation report, with this compiler's numbers.

    OPERATION 2: ADDSUB (Working Mem: 0x002a1c00, Params: 0x000001e8)
      Parameters:
        subtract=False, mode=MATRIX, scale_ratio_a=0.9972, scale_ratio_b=1.0000, offset=-0.3592, ...
      Inputs:
        ID      Dimensions            Type    Location      Address   Data Start  Data Size   ...
        2       1 x 32 x 32 x 1       S CHAR  SCRATCH_RAM   0x2a0000  (0, 0)      32 x 32     ...
      Outputs:
        ...
      Est. Processing Time: 0.004 ms

Columns: ID (stable buffer ID), Dimensions (N x H x W x C), Type (S CHAR: int8), Location
(region), Address, Data Start ((row, column) of the first element: always (0, 0), nothing is
padded), Data Size (rows x bytes per row; planar storage: a C x H x W tensor is C*H rows of W
bytes), Row Stride and Bat Stride (bytes), Parent (the buffer a reshape view aliases, -1: none),
# Con (operations that read it, +1 for a model output read by the host), Quant Type
(PER_TENSOR), QS[0] (scale), QZ[0] (zero point, int8).

Cost model behind `Est. Processing Time` (ours, not measured on silicon; a relative guide):
one in-order core at PROCESSOR_CLOCK_MHZ (default 100 MHz), cycles per operation =
    OP_OVERHEAD (200: dispatch, loop set-up)
  + CONV_2D / FULLY_CONNECTED: 1 per multiply-accumulate + 4 per output (requantization)
  + ADDSUB: 4 per element (qnnpack integer) or 8 (torch float: 2 dequantize, add, fma, round)
  + RELU: 1 per element; MAX_POOL: 1 per window element; AVERAGE_POOL: 1 per window element
    + 4 per output; RESHAPE: 0 (alias) or 1 per byte (copy); CONCATENATE: 1 per byte, 8 when
    the input is requantized; TRANSPOSE: 2 per element.
"""
from __future__ import annotations

import numpy as np

from ...arith import FLOAT_ADD
from .config import REGIONS
from .memory import nhwc, rows_cols

OP_OVERHEAD = 200
OP_NAMES = {"conv2d": "CONV_2D", "dense": "FULLY_CONNECTED", "add": "ADDSUB", "relu": "RELU",
            "maxpool2d": "MAX_POOL", "avgpool2d": "AVERAGE_POOL", "reshape": "RESHAPE",
            "cat": "CONCATENATE", "transpose": "TRANSPOSE"}
COLUMNS = [("ID", 8), ("Dimensions", 22), ("Type", 8), ("Location", 14), ("Address", 10),
           ("Data Start", 12), ("Data Size", 12), ("Row Stride", 12), ("Bat Stride", 12),
           ("Parent", 8), ("# Con", 8), ("Quant Type", 14), ("QS[0]", 12), ("QZ[0]", 8)]


def op_name(op) -> str:
    if op.kind == "conv2d":
        cin, cout, g = op.inputs[0].shape[1], op.output.shape[1], op.attrs["groups"]
        if g > 1 and g == cin == cout:
            return "DEPTHWISE_CONV_2D"
    return OP_NAMES.get(op.kind, op.kind.upper())


def op_cycles(op) -> int:
    k, n = op.kind, op.output.size
    if k in ("conv2d", "dense"):
        c = op.macs() + 4 * n
    elif k == "add":
        c = (8 if op.attrs.get("requant") == FLOAT_ADD else 4) * n
    elif k == "relu":
        c = n
    elif k == "maxpool2d":
        c = n * int(np.prod(op.attrs["kernel"]))
    elif k == "avgpool2d":
        c = n * (int(np.prod(op.attrs["kernel"])) + 4)
    elif k == "reshape":
        c = 0 if op.output.alias_of is not None else n
    elif k == "cat":
        c = sum(t.size * (1 if t.qparams == op.output.qparams else 8) for t in op.inputs)
    else:
        c = 2 * n
    return OP_OVERHEAD + c


def _qs(scale: float) -> str:
    return f"{scale:.5f}" if scale >= 0.001 else f"{scale:.3e}"


def _parameters(op) -> str:
    a, k = op.attrs, op.kind
    pair = lambda v: f"{v[0]}x{v[1]}"
    act = "RELU" if a.get("relu") else "NONE"
    if k == "conv2d":
        kh, kw = op.params["weight"].shape[2:]
        return (f"kernel={kh}x{kw}, stride={pair(a['stride'])}, padding={pair(a['padding'])}, "
                f"dilation={pair(a['dilation'])}, groups={a['groups']}, activation={act}, "
                f"weights={a.get('weight_scheme', 'per_tensor').upper()}, "
                f"requant={a['requant'].upper()}, clamp=[{a['clamp'][0]}, {a['clamp'][1]}]")
    if k == "dense":
        out_f, in_f = op.params["weight"].shape
        return (f"in_features={in_f}, out_features={out_f}, activation={act}, "
                f"weights={a.get('weight_scheme', 'per_tensor').upper()}, "
                f"requant={a['requant'].upper()}, clamp=[{a['clamp'][0]}, {a['clamp'][1]}]")
    if k == "add":
        qa, qb, qo = (t.qparams for t in (op.inputs[0], op.inputs[1], op.output))
        ra, rb = qa.scale / qo.scale, qb.scale / qo.scale
        offset = qo.zero_point - qa.zero_point * ra - qb.zero_point * rb
        arithmetic = {FLOAT_ADD: "TORCH_FLOAT", "qnnpack_add": "QNNPACK_INTEGER"}.get(
            a["requant"], a["requant"].upper())
        return (f"subtract=False, mode=MATRIX, scale_ratio_a={ra:.4f}, scale_ratio_b={rb:.4f}, "
                f"offset={offset:.4f}, activation={act}, arithmetic={arithmetic}")
    if k == "relu":
        return f"clamp=[{a['clamp'][0]}, {a['clamp'][1]}]"
    if k == "maxpool2d":
        return (f"kernel={pair(a['kernel'])}, stride={pair(a['stride'])}, padding={pair(a['padding'])}, "
                f"dilation={pair(a['dilation'])}, ceil_mode={a['ceil_mode']}")
    if k == "avgpool2d":
        return (f"kernel={pair(a['kernel'])}, stride={pair(a['stride'])}, padding={pair(a['padding'])}, "
                f"ceil_mode={a['ceil_mode']}, count_include_pad={a['count_include_pad']}")
    if k == "reshape":
        src = " x ".join(map(str, nhwc(op.inputs[0].shape)))
        dst = " x ".join(map(str, nhwc(op.output.shape)))
        how = "alias, no data movement" if op.output.alias_of is not None else "copy"
        return f"from {src} to {dst} ({how})"
    if k == "cat":
        return f"axis={a['axis']} (NCHW), inputs={len(op.inputs)}"
    if k == "transpose":
        return f"perm={tuple(a['perm'])}"
    return ", ".join(f"{key}={v}" for key, v in sorted(a.items()))


def _row(low, memory, t, consumers: int) -> str:
    p = memory.placed[id(t)]
    rows, cols = rows_cols(t.shape)
    batch = max(1, int(t.shape[0]) if t.shape else 1)
    q = t.qparams
    cells = [str(p.buffer_id), " x ".join(map(str, nhwc(t.shape))), "S CHAR", p.region,
             f"0x{p.address:x}", "(0, 0)", f"{rows} x {cols}", str(cols), str(t.nbytes // batch),
             str(p.parent), str(consumers), "PER_TENSOR", _qs(q.scale) if q else "-",
             str(q.zero_point) if q else "-"]
    return "    " + "".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS))


def render(low, compiled, memory, cfg, model_label: str) -> str:
    g = low.graph
    clock = float(cfg["PROCESSOR_CLOCK_MHZ"])
    header = "    " + "".join(name.ljust(w) for name, w in COLUMNS)
    outputs = {id(t) for t in low.model_outputs}

    def consumers(t):
        return len(g.consumers(t)) + (1 if id(t) in outputs else 0)

    total_cycles = sum(op_cycles(op) for op in g.ops)
    lines = [
        "IMX681 DNN COMPILER SUMMARY",
        f"  Network:      {cfg.network_name} (model {model_label})",
        f"  Config:       {cfg.path}",
        f"  Output mode:  {cfg['OUTPUT_MODE']}, {cfg['MEMORY_ORDER']}",
        f"  Operations:   {len(g.ops)}    Buffers: {len(low.ids)}    MACs: {g.macs()}",
        f"  Arithmetic:   qnnpack (float32 multipliers) for layers; torch float for a state add",
        "  Memory:"]
    for r in REGIONS:
        start, size = memory.regions[r]
        used = memory.used[r]
        parts = ", ".join(f"{what} {n}" for what, n in memory.breakdown[r])
        lines.append(f"    {r:<12} start 0x{start:08x}  size {size:>9}  used {used:>9} "
                     f"({100.0 * used / size if size else 0:.1f}%)  [{parts}]")
    lines.append("  States:")
    if not low.persistent and not low.constants:
        lines.append("    none")
    for p in low.persistent:
        how = "MODEL_STATE_*_BUFFER_ID" if p.explicit else "automatic detection"
        lines.append(f"    '{p.attribute}': read buffer {low.ids[id(p.read)]}, write buffer "
                     f"{low.ids[id(p.write)]}, one STATIC_DATA buffer at 0x{memory.address_of(p.read):08x} "
                     f"({p.read.nbytes} bytes, QS {_qs(p.write.qparams.scale)} QZ "
                     f"{p.write.qparams.zero_point}), kept between frames ({how})")
    for c in low.constants:
        extra = f"; its write (buffer {low.ids[id(c.lost_write)]}) is DISCARDED: the state does " \
                "not persist" if c.lost_write is not None else ""
        lines.append(f"    '{c.attribute}': constant buffer {low.ids[id(c.read)]} in STATIC_DATA at "
                     f"0x{memory.address_of(c.read):08x}{extra}")
    lines.append("  Warnings:")
    lines += [f"    {w}" for w in low.warnings] or ["    none"]
    lines += [f"  Cost model:   {clock:g} MHz, cycles = {OP_OVERHEAD} per operation + work "
              "(see tools/nnc/targets/imx681/summary.py)",
              f"  Total Est. Processing Time: {total_cycles / (clock * 1e3):.3f} ms "
              f"({total_cycles} cycles)", ""]
    for i, op in enumerate(g.ops):
        lines += [f"OPERATION {i}: {op_name(op)} (Working Mem: 0x{memory.working_mem:08x}, "
                  f"Params: 0x{memory.op_params[i]:08x})",
                  "  Parameters:", f"    {_parameters(op)}", "  Inputs:", header]
        lines += [_row(low, memory, t, consumers(t)) for t in op.inputs]
        lines += ["  Outputs:", header]
        lines += [_row(low, memory, t, consumers(t)) for t in op.outputs]
        lines += [f"  Est. Processing Time: {op_cycles(op) / (clock * 1e3):.3f} ms", ""]
    return "\n".join(lines)


def parse_summary(text: str) -> dict:
    """{buffer ID: row fields} from a summary.txt (tests and tools; the last row of an ID wins)."""
    rows = {}
    names = [n for n, _ in COLUMNS]
    for line in text.splitlines():
        if not line.startswith("    ") or line.strip().startswith("ID"):
            continue
        cells, pos = [], 4
        for _, w in COLUMNS:
            cells.append(line[pos:pos + w].strip())
            pos += w
        if not cells[0].isdigit():
            continue
        rows[int(cells[0])] = dict(zip(names, cells))
    return rows

