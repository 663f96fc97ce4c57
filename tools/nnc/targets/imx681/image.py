"""IMX681 binary memory images (OUTPUT_MODE I2C_IMAGES): what is loaded over I2C.

Two files, each loaded at the start of its region (`images.txt` lists file, region, address,
bytes and CRC-32). Every multi-byte field is in the configured MEMORY_ORDER; the magic is bytes.

<network>_params.bin, at PARAMS_START
  header (32 bytes)
    0   4  magic "I681"
    4   u16 format version (1)           6   u16 flags (bit 0: big endian)
    8   u32 bytes of the image           12  u32 CRC-32 (zlib) of bytes [16, end)
    16  u16 operations                   18  u16 buffers
    20  u32 offset of the buffer table   24  u32 offset of the operation table
    28  u32 reserved (0)
  buffer table: one 32-byte entry per buffer, in buffer-ID order
    0 u16 buffer ID, 2 u8 region (0 PARAMS, 1 STATIC_DATA, 2 SCRATCH_RAM), 3 u8 flags
      (bit 0 state, 1 constant, 2 alias, 3 frame input, 4 output), 4 u32 address,
      8 u16 dims[4] N, H, W, C, 16 u32 bytes, 20 f32 scale, 24 i32 zero point,
      28 i32 parent buffer ID (-1: none)
  operation table: u32 offset of each operation record (from the image start)
  operation record (4-byte aligned)
    u16 kind (1 CONV_2D, 2 FULLY_CONNECTED, 3 ADDSUB, 4 RELU, 5 MAX_POOL, 6 AVERAGE_POOL,
    7 RESHAPE, 8 CONCATENATE, 9 TRANSPOSE), u16 record bytes,
    u16 inputs, u16 outputs, u16 buffer IDs (inputs, then outputs; padded to 4 bytes),
    u16 integer parameters, u16 constant blocks, i32 integer parameters...,
    constant blocks: u8 dtype (1 int8, 2 int32, 3 float32), u8 name (1 weight, 2 bias,
    3 multiplier, 4 weight zero point, 5 scales), u16 0, u32 count, data (padded to 4 bytes)
  integer parameters by kind (`_ints`): see the table in `_ints` below.

<network>_static_data.bin, at STATIC_DATA_START
  the region's initial content: each state buffer's initial value (int8) and each constant at
  the addresses of the buffer table; gaps are zero.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from ... import arith
from .memory import nhwc

MAGIC = b"I681"
VERSION = 1
HEADER = 32
BUFFER_ENTRY = 32
KIND_CODES = {"conv2d": 1, "dense": 2, "add": 3, "relu": 4, "maxpool2d": 5, "avgpool2d": 6,
              "reshape": 7, "cat": 8, "transpose": 9}
REGION_CODES = {"PARAMS": 0, "STATIC_DATA": 1, "SCRATCH_RAM": 2}
DTYPES = {np.dtype(np.int8): 1, np.dtype(np.int32): 2, np.dtype(np.float32): 3}
CONST_NAMES = {"weight": 1, "bias": 2, "multiplier": 3, "weight_zp": 4, "scales": 5}
REQUANT_CODES = {"float": 0, "shift": 1, "qnnpack_add": 2, arith.FLOAT_ADD: 3}


def _ints(op) -> list:
    """Integer parameters of an operation record, by kind.

    conv2d   requant, stride h/w, padding h/w, dilation h/w, groups, kernel h/w, clamp lo/hi,
             input zp, output zp (+ shift when requant is shift)
    dense    requant, clamp lo/hi, input zp, output zp (+ shift)
    add      requant; qnnpack_add: a mult, b mult, shift, a zp, b zp, out zp, clamp lo/hi;
             torch_float_add: a zp, b zp, out zp, torch zp offset, clamp lo/hi (scales as a
             float32 block: a scale, b scale, 1/out scale); shift: shift, clamp lo/hi
    relu     clamp lo/hi
    maxpool  kernel h/w, stride h/w, padding h/w, dilation h/w, ceil mode
    avgpool  kernel h/w, stride h/w, padding h/w, ceil mode, count_include_pad, in zp, out zp
    reshape  1 when it aliases its input (no data movement), else 0 (a copy)
    cat      outer count, output elements per outer step, then per input its elements per outer
             step, then the zero point of every input, then the output's (scales as a float32
             block: every input's, then the output's)
    transpose the permutation
    """
    a, k = op.attrs, op.kind
    zin = op.inputs[0].qparams.zero_point if op.inputs and op.inputs[0].qparams else 0
    zout = op.output.qparams.zero_point if op.output.qparams else 0
    if k in ("conv2d", "dense"):
        rq = [REQUANT_CODES[a["requant"]]]
        tail = [int(a["shift"])] if a["requant"] == "shift" else []
        if k == "dense":
            return rq + list(a["clamp"]) + [zin, zout] + tail
        kh, kw = op.params["weight"].shape[2:]
        return rq + list(a["stride"]) + list(a["padding"]) + list(a["dilation"]) + \
            [a["groups"], kh, kw] + list(a["clamp"]) + [zin, zout] + tail
    if k == "add":
        rq = a["requant"]
        qa, qb, qo = (t.qparams for t in (op.inputs[0], op.inputs[1], op.output))
        if rq == "qnnpack_add":
            p = arith.qnnpack_add_params(qa, qb, qo)
            return [REQUANT_CODES[rq], p["a_mult"], p["b_mult"], p["shift"], p["a_zp"], p["b_zp"],
                    p["out_zp"]] + list(a["clamp"])
        if rq == arith.FLOAT_ADD:
            return [REQUANT_CODES[rq], qa.zero_point, qb.zero_point, qo.zero_point,
                    a["torch_zp_offset"]] + list(a["clamp"])
        return [REQUANT_CODES[rq], a["shift"]] + list(a["clamp"])
    if k == "relu":
        return list(a["clamp"])
    if k == "maxpool2d":
        return list(a["kernel"]) + list(a["stride"]) + list(a["padding"]) + list(a["dilation"]) + \
            [int(a["ceil_mode"])]
    if k == "avgpool2d":
        return list(a["kernel"]) + list(a["stride"]) + list(a["padding"]) + \
            [int(a["ceil_mode"]), int(a["count_include_pad"]), zin, zout]
    if k == "reshape":
        return [int(op.output.alias_of is not None)]
    if k == "cat":
        axis = a["axis"]
        inner = lambda t: int(np.prod(t.shape[axis:]))
        return [int(np.prod(op.output.shape[:axis])), inner(op.output)] + \
            [inner(t) for t in op.inputs] + [t.qparams.zero_point for t in op.inputs] + [zout]
    if k == "transpose":
        return list(a["perm"])
    return []


def _consts(op) -> list:
    """(name, array) constant blocks of an operation record."""
    out = []
    for name in ("weight", "bias", "multiplier", "weight_zp"):
        if name in op.params:
            dtype = {"weight": np.int8, "multiplier": np.float32}.get(name, np.int32)
            out.append((name, np.asarray(op.params[name]).astype(dtype)))
    if op.kind == "add" and op.attrs.get("requant") == arith.FLOAT_ADD:
        qa, qb, qo = (t.qparams for t in (op.inputs[0], op.inputs[1], op.output))
        out.append(("scales", np.array([qa.scale, qb.scale, arith.inverse_scale(qo)],
                                        dtype=np.float32)))
    if op.kind == "avgpool2d":
        from ...reference import avgpool_divisors
        div = avgpool_divisors(op).ravel()
        out.append(("multiplier", np.array([arith.avgpool_multiplier(op.inputs[0].qparams,
                                                                     op.output.qparams, int(d))
                                            for d in div], dtype=np.float32)))
    if op.kind == "cat":
        out.append(("scales", np.array([t.qparams.scale for t in op.inputs] +
                                       [op.output.qparams.scale], dtype=np.float32)))
    return out


def _pad4(n: int) -> int:
    return (n + 3) // 4 * 4


@dataclass
class ParamsLayout:
    lowered: object
    big_endian: bool
    records: list = field(default_factory=list)       # (op, ints, consts, size)
    op_offsets: list = field(default_factory=list)
    buffer_table: int = 0
    op_table: int = 0
    size: int = 0

    def breakdown(self) -> list:
        weights = sum(a.nbytes for _, _, consts, _ in self.records for _, a in consts)
        return [("header and tables", self.op_offsets[0] if self.op_offsets else self.size),
                ("operation records", self.size - (self.op_offsets[0] if self.op_offsets else self.size)
                 - weights), ("weights, biases, multipliers", weights)]


def build_params_image(lowered, cfg) -> ParamsLayout:
    """Sizes and offsets of the parameter image (addresses are filled in later)."""
    lay = ParamsLayout(lowered, cfg.big_endian)
    g = lowered.graph
    n_buffers = len(lowered.ids)
    lay.buffer_table = HEADER
    lay.op_table = lay.buffer_table + BUFFER_ENTRY * n_buffers
    cursor = lay.op_table + 4 * len(g.ops)
    for op in g.ops:
        ints, consts = _ints(op), _consts(op)
        n_ids = len(op.inputs) + len(op.outputs)
        size = 4 + 4 + _pad4(2 * n_ids) + 4 + 4 * len(ints)
        size += sum(8 + _pad4(a.nbytes) for _, a in consts)
        lay.records.append((op, ints, consts, size))
        lay.op_offsets.append(cursor)
        cursor += size
    lay.size = cursor
    return lay


def _dt(kind: str, big: bool) -> np.dtype:
    return np.dtype(kind).newbyteorder(">" if big else "<")


def finish_params_image(lay: ParamsLayout, memory, cfg) -> bytes:
    big = lay.big_endian
    u16, u32, i32, f32 = (_dt(k, big) for k in ("u2", "u4", "i4", "f4"))
    low = lay.lowered
    g, ids = low.graph, low.ids
    buf = bytearray(lay.size)

    def put(offset, dtype, values):
        data = np.asarray(values).astype(dtype).tobytes()
        buf[offset:offset + len(data)] = data
        return offset + len(data)

    # buffer table
    roles = {"state": 1, "constant": 2, "alias": 4, "frame_input": 8, "output": 16}
    by_id = sorted(memory.placed.values(), key=lambda p: p.buffer_id)
    for p in by_id:
        off = lay.buffer_table + BUFFER_ENTRY * p.buffer_id
        t = p.tensor
        q = t.qparams
        flags = roles.get(p.role, 0)
        if any(t is o for o in low.model_outputs):
            flags |= 16
        put(off, u16, [p.buffer_id])
        buf[off + 2] = REGION_CODES[p.region]
        buf[off + 3] = flags
        put(off + 4, u32, [p.address])
        put(off + 8, u16, list(nhwc(t.shape)))
        put(off + 16, u32, [p.size])
        put(off + 20, f32, [q.scale if q else 0.0])
        put(off + 24, i32, [q.zero_point if q else 0])
        put(off + 28, i32, [p.parent])
    # operation table and records
    for i, ((op, ints, consts, size), off) in enumerate(zip(lay.records, lay.op_offsets)):
        put(lay.op_table + 4 * i, u32, [off])
        o = put(off, u16, [KIND_CODES[op.kind], size, len(op.inputs), len(op.outputs)])
        put(o, u16, [ids[id(t)] for t in op.inputs + op.outputs])
        o += _pad4(2 * (len(op.inputs) + len(op.outputs)))
        o = put(o, u16, [len(ints), len(consts)])
        o = put(o, i32, ints) if ints else o
        for name, arr in consts:
            buf[o] = DTYPES[arr.dtype]
            buf[o + 1] = CONST_NAMES[name]
            put(o + 4, u32, [arr.size])
            put(o + 8, _dt(arr.dtype.str[1:], big), arr.ravel())
            o += 8 + _pad4(arr.nbytes)
        assert o == off + size, (op.name, o, off, size)
    # header
    buf[0:4] = MAGIC
    put(4, u16, [VERSION, 1 if big else 0])
    put(8, u32, [lay.size])
    put(16, u16, [len(g.ops), len(ids)])
    put(20, u32, [lay.buffer_table, lay.op_table, 0])
    put(12, u32, [zlib.crc32(bytes(buf[16:])) & 0xFFFFFFFF])
    return bytes(buf)


def static_data_image(lowered, memory, cfg) -> bytes:
    start = memory.regions["STATIC_DATA"][0]
    buf = bytearray(memory.used["STATIC_DATA"])
    for p in lowered.persistent:
        a = memory.address_of(p.read) - start
        buf[a:a + p.read.nbytes] = p.initial.astype(np.int8).tobytes()
    for c in lowered.constants:
        a = memory.address_of(c.read) - start
        buf[a:a + c.read.nbytes] = c.initial.astype(np.int8).tobytes()
    return bytes(buf)


def load_list(name: str, memory, params: bytes, static: bytes, cfg) -> str:
    rows = [(f"{name}_params.bin", "PARAMS", params), (f"{name}_static_data.bin", "STATIC_DATA", static)]
    width = max(len(f) for f, _, _ in rows) + 2
    out = [f"# IMX681 memory images of network {name}: write each file over I2C at its address,",
           f"# then start the network. Byte order: {cfg['MEMORY_ORDER']}. Layout: see",
           "# tools/nnc/targets/imx681/image.py; firmware/imx681/runtime executes them.",
           "# " + "file".ljust(width - 2) + f"{'region':<13}{'address':<12}{'bytes':>8}  crc32"]
    for fname, region, data in rows:
        out.append(f"{fname:<{width}}{region:<13}0x{memory.regions[region][0]:08x}  {len(data):>8}  "
                   f"0x{zlib.crc32(data) & 0xFFFFFFFF:08x}")
    s, _ = memory.regions["SCRATCH_RAM"]
    out.append(f"# SCRATCH_RAM at 0x{s:08x}: {memory.used['SCRATCH_RAM']} bytes used at run time, "
               "nothing to load")
    return "\n".join(out) + "\n"


def read_params_image(data: bytes) -> dict:
    """Parse a parameter image back (tests, tools): header, buffers and operation records."""
    if data[:4] != MAGIC:
        raise ValueError("not an IMX681 parameter image (bad magic)")
    big = data[6:8] == b"\x00\x01"          # the flags field: 1 (big endian) written big endian
    u16, u32, i32, f32 = (_dt(k, big) for k in ("u2", "u4", "i4", "f4"))
    rd = lambda off, dt, n=1: np.frombuffer(data, dtype=dt, count=n, offset=off)
    size = int(rd(8, u32)[0])
    crc = int(rd(12, u32)[0])
    n_ops, n_bufs = (int(v) for v in rd(16, u16, 2))
    btab, otab = (int(v) for v in rd(20, u32, 2))
    buffers = []
    for i in range(n_bufs):
        off = btab + BUFFER_ENTRY * i
        buffers.append({"id": int(rd(off, u16)[0]), "region": data[off + 2], "flags": data[off + 3],
                        "address": int(rd(off + 4, u32)[0]), "dims": [int(v) for v in rd(off + 8, u16, 4)],
                        "bytes": int(rd(off + 16, u32)[0]), "scale": float(rd(off + 20, f32)[0]),
                        "zero_point": int(rd(off + 24, i32)[0]), "parent": int(rd(off + 28, i32)[0])})
    ops = []
    for i in range(n_ops):
        off = int(rd(otab + 4 * i, u32)[0])
        kind, rsize, nin, nout = (int(v) for v in rd(off, u16, 4))
        ids = [int(v) for v in rd(off + 8, u16, nin + nout)]
        o = off + 8 + _pad4(2 * (nin + nout))
        nints, nconsts = (int(v) for v in rd(o, u16, 2))
        ints = [int(v) for v in rd(o + 4, i32, nints)] if nints else []
        o += 4 + 4 * nints
        consts = {}
        inv_dt = {1: "i1", 2: "i4", 3: "f4"}
        inv_nm = {v: k for k, v in CONST_NAMES.items()}
        for _ in range(nconsts):
            dt, nm = data[o], data[o + 1]
            count = int(rd(o + 4, u32)[0])
            arr = rd(o + 8, _dt(inv_dt[dt], big), count).astype(inv_dt[dt])
            consts[inv_nm[nm]] = arr
            o += 8 + _pad4(arr.nbytes)
        ops.append({"offset": off, "kind": kind, "bytes": rsize, "inputs": ids[:nin],
                    "outputs": ids[nin:], "ints": ints, "consts": consts})
    return {"big_endian": big, "size": size, "crc_ok": crc == (zlib.crc32(data[16:size]) & 0xFFFFFFFF),
            "buffers": buffers, "ops": ops}
