"""The arithmetic contracts, in one place: parameter derivations and numpy golden arithmetic.

Every kernel provider must produce exactly what these functions produce. float32 operations
are done in numpy float32, which rounds like C float arithmetic compiled with
-ffp-contract=off (no fused multiply-add), and np.rint rounds half to even like rintf.
"""
from __future__ import annotations

import struct

import numpy as np

from .ir import INT8_MAX, INT8_MIN, QParams


def requant_float(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, clamp) -> np.ndarray:
    """qnnpack conv/linear: rintf(f32(acc) * f32(mult)) + zp, clamped. acc includes the bias."""
    scaled = acc.astype(np.int32).astype(np.float32) * np.asarray(multiplier, dtype=np.float32)
    q = np.rint(scaled).astype(np.int64) + zero_point
    return np.clip(q, clamp[0], clamp[1]).astype(np.int8)


def requant_shift(acc: np.ndarray, shift: int, clamp) -> np.ndarray:
    """DIANA: arithmetic right shift without rounding, then clip."""
    q = acc.astype(np.int64) >> int(shift)
    return np.clip(q, clamp[0], clamp[1]).astype(np.int8)


def _f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def qnnpack_add_params(a: QParams, b: QParams, out: QParams) -> dict:
    """qnnpack's integer add: 22-bit multipliers and a rounding right shift of 13..31 bits."""
    a_ratio = np.float32(a.scale) / np.float32(out.scale)
    b_ratio = np.float32(b.scale) / np.float32(out.scale)
    max_ratio = max(a_ratio, b_ratio)
    exponent = ((_f32_bits(float(max_ratio)) >> 23) & 0xFF) - 127
    shift = 21 - exponent
    scale_multiplier = np.float32(2.0 ** shift)
    a_mult = int(np.rint(np.float32(a_ratio * scale_multiplier)))
    b_mult = int(np.rint(np.float32(b_ratio * scale_multiplier)))
    return {"a_mult": a_mult, "b_mult": b_mult, "shift": shift,
            "a_zp": a.zero_point, "b_zp": b.zero_point, "out_zp": out.zero_point}


def qnnpack_add(a: np.ndarray, b: np.ndarray, p: dict, clamp) -> np.ndarray:
    acc = (p["a_mult"] * (a.astype(np.int64) - p["a_zp"])
           + p["b_mult"] * (b.astype(np.int64) - p["b_zp"])).astype(np.int32).astype(np.int64)
    mask = (1 << p["shift"]) - 1
    remainder = (acc & mask) - (acc < 0)
    threshold = mask >> 1
    y = (acc >> p["shift"]) + (remainder > threshold) + p["out_zp"]
    return np.clip(y, clamp[0], clamp[1]).astype(np.int8)


def requantize_tensor(x: np.ndarray, src: QParams, dst: QParams) -> np.ndarray:
    """torch's dequantize -> quantize_per_tensor: float32 throughout, nearbyint of x * (1/scale)."""
    if src == dst:
        return x.astype(np.int8)
    real = (x.astype(np.int32) - src.zero_point).astype(np.float32) * np.float32(src.scale)
    inv = np.float32(1.0) / np.float32(dst.scale)
    q = np.rint(real * inv).astype(np.int64) + dst.zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8)


def avgpool_multiplier(src: QParams, dst: QParams, count: int) -> np.float32:
    """qnnpack average pooling: one float32 scale s_in / (s_out * count)."""
    return np.float32(src.scale) / (np.float32(dst.scale) * np.float32(count))


def hex_float(x) -> str:
    """An exact C float literal (hex float) for a float32 value."""
    v = float(np.float32(x))
    if v == 0.0:
        return "0.0f"
    mantissa, exponent = v.hex().split("p")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}p{exponent}f"
