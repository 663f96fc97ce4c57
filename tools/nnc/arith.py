"""The arithmetic contracts, in one place: parameter derivations and numpy golden arithmetic.

Every kernel provider must produce exactly what these functions produce. float32 operations
are done in numpy float32, which rounds like C float arithmetic compiled with
-ffp-contract=off (no fused multiply-add), and np.rint rounds half to even like rintf.
"""
from __future__ import annotations

import struct
from fractions import Fraction

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


def inverse_scale(q: QParams) -> np.float32:
    """float32 1/scale: torch's quantize multiplies by it (quantize_per_tensor, requantize)."""
    return np.float32(1.0) / np.float32(q.scale)


def requantize_tensor(x: np.ndarray, src: QParams, dst: QParams) -> np.ndarray:
    """torch's dequantize -> quantize_per_tensor: float32 throughout, nearbyint of x * (1/scale)."""
    if src == dst:
        return x.astype(np.int8)
    real = (x.astype(np.int32) - src.zero_point).astype(np.float32) * np.float32(src.scale)
    inv = inverse_scale(dst)
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


def qnnpack_mul_multiplier(a: QParams, b: QParams, out: QParams) -> np.float32:
    """torch's quantized mul (quint8, any engine): one float32 multiplier (s_a * s_b) * (1 / s_out)."""
    return (np.float32(a.scale) * np.float32(b.scale)) * inverse_scale(out)


def qnnpack_mul(x: np.ndarray, y: np.ndarray, a: QParams, b: QParams, out: QParams, clamp) -> np.ndarray:
    """rintf(f32((x - zp_a) * (y - zp_b)) * multiplier) + zp_out, clamped; numpy broadcasting.
    The product fits 17 bits, so its float32 conversion is exact."""
    prod = (x.astype(np.int32) - a.zero_point) * (y.astype(np.int32) - b.zero_point)
    return requant_float(prod, qnnpack_mul_multiplier(a, b, out), out.zero_point, clamp)


SOFTMAX_OUTPUT = QParams(2.0 ** -8, -128)   # qnnpack's only softmax output: scale 1/256, uint8 zp 0


def softmax_table(input_scale: float, channels: int) -> np.ndarray:
    """qnnpack's softargmax table: lrint(qscale * exp((i - 255) * s_in)) for the 256 codes, with
    qscale = min(UINT32_MAX / channels, 2^23 - 1) so that a row's sum fits uint32. Computed in
    double with the C library's exp (Python's math.exp), as qnnpack does at operator creation."""
    import math
    qscale = min(float(0xFFFFFFFF) / float(channels), 8388607.0)
    s = float(np.float32(input_scale))
    return np.array([int(np.rint(qscale * math.exp(float(i - 255) * s))) for i in range(256)],
                    dtype=np.uint32)


def softmax(x: np.ndarray, table: np.ndarray, axis: int) -> np.ndarray:
    """qnnpack's u8lut32norm along `axis`: t = table shifted by the row's max, q = (t[x] * 256 +
    sum / 2) / sum (uint32 division), clamped to 255, returned in the int8 domain (-128)."""
    xs = np.moveaxis(x.astype(np.int64), axis, -1)
    index = 255 - xs.max(axis=-1, keepdims=True) + xs        # codes relative to the row's max
    t = table.astype(np.int64)[index]
    total = t.sum(axis=-1, keepdims=True) & 0xFFFFFFFF
    q = (((t << 8) + (total >> 1)) & 0xFFFFFFFF) // total
    return np.moveaxis(np.minimum(q, 255) - 128, -1, axis).astype(np.int8)


def mean_of_codes(x: np.ndarray, count: int) -> np.ndarray:
    """torch's quantized mean over innermost dims: nearbyint(f32(sum of the uint8 codes) / f32(count)).
    `x` is (..., count) int8; the sum (< 2^24 for count < 65793) converts to float32 exactly."""
    total = (x.astype(np.int64) + 128).sum(axis=-1)
    return (np.rint(total.astype(np.float32) / np.float32(count)).astype(np.int64) - 128).astype(np.int8)


# torch's dequantize -> float add -> quantize, exactly (a stateful model's state added in float,
# nnc.frontend.state; the IMX681 target compiles it). An `add` op with attrs["requant"] ==
# FLOAT_ADD computes, element by element,
#
#     fa = f32(qa - za) * f32(sa)              dequantize (no fused multiply-add)
#     fb = f32(qb - zb) * f32(sb)
#     s  = fa + fb                             float32 add
#     q  = nearbyint(fmaf(s, 1.f / so, zo_t))  quantize: ONE rounding of s * (1/so) + zo_t
#     q  = clamp(q, 0, 255) - 128              (quint8 -> the IR's int8)
#
# where zo_t is the zero point in torch's dtype (quint8: zo + 128, attrs["torch_zp_offset"]). The
# fused multiply-add and the zero point inside it are what torch 2.x's quantize_per_tensor
# computes (measured: the unfused `rint(s * inv) + zo` differs in ~0.5% of elements).
FLOAT_ADD = "torch_float_add"


def fma_f32(a: np.ndarray, b: np.float32, c: np.float32) -> np.ndarray:
    """float32(a * b + c) with ONE rounding (C's fmaf), for float32 a, b, c.

    a * b is exact in float64 (24 + 24 bits); adding c rounds once in float64 and the cast to
    float32 rounds again. That double rounding can only be wrong when the float64 result is
    exactly halfway between two float32 values; those few elements are redone exactly."""
    a = np.asarray(a, dtype=np.float32)
    r64 = a.astype(np.float64) * np.float64(b) + np.float64(c)
    r32 = r64.astype(np.float32)
    # Neighbours of r32 towards r64; r64 is a tie if it equals their midpoint.
    other = np.nextafter(r32, np.where(r64 >= r32.astype(np.float64), np.float32(np.inf),
                                       np.float32(-np.inf)).astype(np.float32))
    mid = (r32.astype(np.float64) + other.astype(np.float64)) / 2.0
    suspicious = np.nonzero(r64 == mid)[0] if r64.ndim else (np.array([0]) if r64 == mid else [])
    flat_a, flat_out = a.reshape(-1), r32.reshape(-1).copy()
    for i in np.atleast_1d(suspicious):
        exact = Fraction(float(flat_a[i])) * Fraction(float(b)) + Fraction(float(c))
        lo = np.float32(float(exact))                      # a float32 near the exact value
        cands = sorted({float(np.nextafter(lo, np.float32(-np.inf))), float(lo),
                        float(np.nextafter(lo, np.float32(np.inf)))})
        best = min(cands, key=lambda v: (abs(Fraction(v) - exact),
                                         int(np.float32(v).view(np.uint32)) & 1))
        flat_out[i] = np.float32(best)
    return flat_out.reshape(r32.shape)


def torch_quantize(real: np.ndarray, q: QParams, zp_offset: int = 128) -> np.ndarray:
    """torch.quantize_per_tensor(real, scale, zero_point) of float32 values, as int8 (IR domain)."""
    inv = inverse_scale(q)
    zt = np.float32(q.zero_point + zp_offset)
    r = fma_f32(np.asarray(real, dtype=np.float32), inv, zt)
    lo, hi = INT8_MIN + zp_offset, INT8_MAX + zp_offset
    return (np.clip(np.rint(np.clip(r, lo, hi)), lo, hi).astype(np.int64) - zp_offset).astype(np.int8)


def torch_dequantize(x: np.ndarray, q: QParams) -> np.ndarray:
    return (np.asarray(x).astype(np.int32) - q.zero_point).astype(np.float32) * np.float32(q.scale)


def torch_float_add(a: np.ndarray, b: np.ndarray, qa: QParams, qb: QParams, qo: QParams,
                    zp_offset: int, clamp=(INT8_MIN, INT8_MAX)) -> np.ndarray:
    """The FLOAT_ADD contract: torch's dequantize -> float32 add -> quantize_per_tensor."""
    s = torch_dequantize(a, qa) + torch_dequantize(b, qb)
    y = torch_quantize(s, qo, zp_offset)
    return np.clip(y, clamp[0], clamp[1]).astype(np.int8)
