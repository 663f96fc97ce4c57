"""Each rounding rule of nnc.arith against a direct scalar computation (Python ints, numpy
float32 scalars), on edge values and random ones."""
import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc import arith
from nnc.ir import QParams

F32 = np.float32
INT32 = st.integers(-(2 ** 31), 2 ** 31 - 1)
INT8 = st.integers(-128, 127)
SCALES = st.floats(1e-4, 4.0, allow_nan=False).map(lambda s: float(F32(s)))
CLAMPS = [(-128, 127), (0, 127), (-20, 50)]


def half_even(v: float) -> int:
    """Round half to even, written out (what rintf does in the default rounding mode)."""
    lo = math.floor(v)
    d = v - lo
    if d > 0.5 or (d == 0.5 and lo % 2):
        return lo + 1
    return lo


@pytest.mark.parametrize("acc,mult,want", [(5, 0.5, 2), (7, 0.5, 4), (-5, 0.5, -2), (-7, 0.5, -4),
                                           (3, 0.5, 2), (1, 0.5, 0), (-1, 0.5, 0)])
def test_requant_float_rounds_half_to_even(acc, mult, want):
    got = arith.requant_float(np.array([acc]), np.array([mult]), 0, (-128, 127))
    assert int(got[0]) == want


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(INT32, st.floats(1e-6, 2.0, allow_nan=False), st.integers(-128, 127), st.sampled_from(CLAMPS))
def test_requant_float_is_float32_multiply_round_add_clamp(acc, mult, zp, clamp):
    m = F32(mult)
    product = float(F32(acc) * m)           # one float32 multiply, as C with -ffp-contract=off
    want = min(max(half_even(product) + zp, clamp[0]), clamp[1])
    got = arith.requant_float(np.array([acc], np.int64), np.array([m]), zp, clamp)
    assert got.dtype == np.int8 and int(got[0]) == want


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(INT32, st.integers(0, 31), st.sampled_from(CLAMPS))
def test_requant_shift_floors_without_rounding(acc, shift, clamp):
    want = min(max(math.floor(acc / 2 ** shift), clamp[0]), clamp[1])
    assert int(arith.requant_shift(np.array([acc]), shift, clamp)[0]) == want


def test_requant_shift_edges():
    acc = np.array([-1, -2, 1, 2 ** 31 - 1, -(2 ** 31)])
    assert arith.requant_shift(acc, 1, (-128, 127)).tolist() == [-1, -1, 0, 127, -128]
    assert arith.requant_shift(acc, 31, (-128, 127)).tolist() == [-1, -1, 0, 0, -1]


def qnnpack_add_scalar(a, b, a_zp, b_zp, a_mult, b_mult, shift, out_zp, clamp):
    """qnnpack q8add: multiply-add in int32, then a rounding right shift that rounds half away
    from zero (the remainder compared against half of the divisor, -1 for negative values)."""
    acc = a_mult * (a - a_zp) + b_mult * (b - b_zp)
    acc = (acc + 2 ** 31) % 2 ** 32 - 2 ** 31        # int32 wrap-around
    mask = (1 << shift) - 1
    remainder = (acc & mask) - (1 if acc < 0 else 0)
    y = (acc >> shift) + (1 if remainder > (mask >> 1) else 0) + out_zp
    return min(max(y, clamp[0]), clamp[1])


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(SCALES, SCALES, SCALES, INT8, INT8, INT8)
def test_qnnpack_add_params_and_rounding(sa, sb, so, za, zb, zo):
    a, b, out = QParams(sa, za), QParams(sb, zb), QParams(so, zo)
    ratio = max(F32(sa) / F32(so), F32(sb) / F32(so))
    p = arith.qnnpack_add_params(a, b, out)
    exponent = ((struct.unpack("<I", struct.pack("<f", float(ratio)))[0] >> 23) & 0xFF) - 127
    assert p["shift"] == 21 - exponent
    # the larger multiplier has 22 significant bits: 2^21 <= mult < 2^22 (or exactly 2^22 after rounding)
    assert 2 ** 21 <= max(p["a_mult"], p["b_mult"]) <= 2 ** 22
    xs = np.array([-128, -1, 0, 1, 127, za, zb], np.int8)
    grid_a, grid_b = np.meshgrid(xs, xs)
    got = arith.qnnpack_add(grid_a, grid_b, p, (-128, 127))
    for x, y, g in zip(grid_a.ravel(), grid_b.ravel(), got.ravel()):
        want = qnnpack_add_scalar(int(x), int(y), za, zb, p["a_mult"], p["b_mult"], p["shift"], zo, (-128, 127))
        assert int(g) == want
        if p["shift"] <= 31:   # and it approximates the real sum to within one code
            real = (sa * (int(x) - za) + sb * (int(y) - zb)) / so + zo
            if -128 < real < 127:
                assert abs(int(g) - real) <= 1.0


@pytest.mark.parametrize("shift", [1, 2, 3, 13])
def test_qnnpack_add_rounding_shift_rounds_half_away_from_zero(shift):
    """With multipliers 1 and 0 the add is one rounding shift of (a - zp): exact halves included."""
    a = np.arange(-128, 128, dtype=np.int8)
    p = {"a_mult": 1, "b_mult": 0, "shift": shift, "a_zp": 0, "b_zp": 0, "out_zp": 0}
    got = arith.qnnpack_add(a, np.zeros_like(a), p, (-128, 127))
    d = 2 ** shift
    want = [int(math.copysign(math.floor(abs(int(v)) / d + 0.5), int(v))) for v in a]
    assert got.tolist() == want


def test_qnnpack_add_all_input_pairs():
    p = arith.qnnpack_add_params(QParams.make(0.07, -5), QParams.make(0.02, 9), QParams.make(0.09, 3))
    codes = np.arange(-128, 128)
    a, b = (g.astype(np.int8) for g in np.meshgrid(codes, codes))
    got = arith.qnnpack_add(a, b, p, (0, 127))
    want = [qnnpack_add_scalar(int(x), int(y), -5, 9, p["a_mult"], p["b_mult"], p["shift"], 3, (0, 127))
            for x, y in zip(a.ravel(), b.ravel())]
    assert got.ravel().tolist() == want


def test_requantize_tensor_is_torch_float32_dequantize_quantize():
    src, dst = QParams.make(0.05, -3), QParams.make(0.07, 10)
    x = np.arange(-128, 128, dtype=np.int8)
    got = arith.requantize_tensor(x, src, dst)
    inv = F32(1.0) / F32(dst.scale)
    for q, g in zip(x, got):
        real = F32(int(q) - src.zero_point) * F32(src.scale)
        assert int(g) == min(max(half_even(float(real * inv)) + dst.zero_point, -128), 127)
    assert arith.requantize_tensor(x, src, src).tolist() == x.tolist()


def test_avgpool_multiplier_is_one_float32_expression():
    src, dst = QParams.make(0.1, 0), QParams.make(0.3, 0)
    m = arith.avgpool_multiplier(src, dst, 9)
    assert m.dtype == np.float32 and m == F32(src.scale) / (F32(dst.scale) * F32(9))


@pytest.mark.parametrize("x", [0.0, 1.0, -2.5, 0.1, 1e-30, 3.4e38, float(F32(1 / 3))])
def test_hex_float_round_trips_exactly(x):
    text = arith.hex_float(x)
    assert text.endswith("f")
    value = 0.0 if text == "0.0f" else float.fromhex(text[:-1])
    assert value == float(F32(x))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(SCALES, SCALES, SCALES, INT8, INT8, INT8, st.sampled_from(CLAMPS))
def test_qnnpack_mul_against_scalar(sa, sb, so, za, zb, zo, clamp):
    a, b, out = QParams(sa, za), QParams(sb, zb), QParams(so, zo)
    xs = np.array([-128, 0, 127, za], np.int8)
    ys = np.array([127, -128, zb, 5], np.int8)[:, None]          # broadcasting (4, 1) x (4,)
    got = arith.qnnpack_mul(xs, ys, a, b, out, clamp)
    m = (F32(sa) * F32(sb)) * (F32(1.0) / F32(so))
    assert got.shape == (4, 4)
    for i in range(4):
        for j in range(4):
            prod = (int(ys[i, 0]) - zb) * (int(xs[j]) - za)
            want = min(max(half_even(float(F32(prod) * m)) + zo, clamp[0]), clamp[1])
            assert int(got[i, j]) == want


def test_mean_of_codes_rounds_the_float32_quotient_of_uint8_codes():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, size=(20, 7)).astype(np.int8)
    x[0] = -128
    x[1] = 127
    x[2, :] = [-128, -127, -128, -127, -128, -127, -128]   # a sum on a .5 boundary is not needed
    got = arith.mean_of_codes(x, 7)
    for row, g in zip(x, got):
        total = sum(int(v) + 128 for v in row)
        assert int(g) == half_even(float(F32(total) / F32(7))) - 128
    assert got[0] == -128 and got[1] == 127
    halves = np.array([[-128, -127]], np.int8)           # codes 0, 1: mean 0.5 rounds to 0 (even)
    assert arith.mean_of_codes(halves, 2).tolist() == [-128]


def test_softmax_table_and_normalisation():
    table = arith.softmax_table(0.1, 10)
    assert table.dtype == np.uint32 and table[255] == 8388607       # exp(0) * min(2^32/10, 2^23-1)
    assert np.all(np.diff(table.astype(np.int64)) >= 0)
    assert table[0] == int(np.rint(8388607 * math.exp(-255 * float(F32(0.1)))))
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(50, 10)).astype(np.int8)
    y = arith.softmax(x, table, axis=1)
    probs = (y.astype(np.int64) + 128) / 256
    assert np.all(np.abs(probs.sum(axis=1) - 1) <= 10 / 256)        # each code rounds once
    assert np.array_equal(np.argmax(y, axis=1), np.argmax(x, axis=1)) or np.all(
        y[np.arange(50), np.argmax(x, axis=1)] == y.max(axis=1))
    uniform = arith.softmax(np.zeros((1, 4), np.int8), arith.softmax_table(0.1, 4), axis=1)
    assert uniform.tolist() == [[-64] * 4]                          # 1/4 = 64/256 -> code 64 - 128
    assert np.array_equal(arith.softmax(x.T, table, axis=0), y.T)
