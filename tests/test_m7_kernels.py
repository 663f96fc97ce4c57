"""Cortex-M7 DSP kernels (kernels="m7"): bit-exact against torch qnnpack on the host.

On the host the kernels run through the portable C definitions of the intrinsics (smlad,
sxtb16); the same source is compiled for the Cortex-M7 with the real instructions, warning-free,
with no double-precision instructions and with vcvtr.s32.f32 for the requantization.
"""
import copy
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from conftest import build_host_library, edge_and_random_inputs, quantize_ptq

from nnc.frontend.torch_eager import import_torch_model, run_torch_int8
from nnc.kernels import m7_gemm, m7_kernels, m7_rowpair
from nnc.kernels.m7_gemm import channel_blocks, pack_weights, pack_wide_weights, unroll_factor
from nnc.toolchains import CORTEX_M7_CC, HOST_CC, WARNING_FREE_FLAGS

N_INPUTS = 1000
GRID_SHAPE = (1, 1, 27, 23)


def build(graph, out_dir, tag):
    return build_host_library(graph, "m7", out_dir, tag)


def providers_of(compiled):
    return {op.name: compiled.kernels[id(op)].provider for op in compiled.graph.ops
            if id(op) in compiled.kernels}


# -- the weight layout and the intrinsics' semantics -------------------------------------------

def _sxtb16(word):
    b = np.array(word, dtype=np.uint32)
    lo = ((b & 0xFF).astype(np.uint8).view(np.int8)).astype(np.int32)
    hi = (((b >> 16) & 0xFF).astype(np.uint8).view(np.int8)).astype(np.int32)
    return lo, hi


def _emulate_int8(words, col, cout, n4, block):
    """The int8 layout's inner loops (dot1/dot2/dot4) in numpy: per block, per group of 4, one
    word per channel of the block, widened by sxtb16 and sxtb16 ror 8."""
    got, wi = np.zeros(cout, dtype=np.int64), 0
    for oc, n in channel_blocks(cout, block):
        for g in range(n4):
            for c in range(n):
                word = int(words[wi]); wi += 1
                lo, hi = _sxtb16(word)
                lo2, hi2 = _sxtb16(((word >> 8) | (word << 24)) & 0xFFFFFFFF)
                got[oc + c] += lo * col[4 * g] + hi * col[4 * g + 1] + lo2 * col[4 * g + 2] \
                    + hi2 * col[4 * g + 3]
    assert wi == len(words)
    return got


def _emulate_wide(words, col, cout, n4):
    """The wide layout's inner loops (dot1w/dot2x2w): per block, per group of 4, two words
    (int16 pairs, low half first) per channel of the block."""
    got, wi = np.zeros(cout, dtype=np.int64), 0
    halves = lambda word: (np.int64(np.uint16(word & 0xFFFF).view(np.int16)),
                           np.int64(np.uint16(word >> 16).view(np.int16)))
    for oc, n in channel_blocks(cout, 2):
        for g in range(n4):
            for c in range(n):
                for j in range(2):
                    lo, hi = halves(int(words[wi])); wi += 1
                    got[oc + c] += lo * col[4 * g + 2 * j] + hi * col[4 * g + 2 * j + 1]
    assert wi == len(words)
    return got


@pytest.mark.parametrize("block", [2, 4])
def test_packed_weights_give_the_dot_product(block):
    """Emulates the kernels' inner loops on the packed layouts in numpy."""
    rng = np.random.default_rng(0)
    for cout, k in ((1, 1), (2, 5), (3, 25), (7, 150), (4, 8), (10, 27), (13, 64)):
        w = rng.integers(-128, 128, size=(cout, k)).astype(np.int8)
        w[0, 0] = -128
        x = rng.integers(-128, 128, size=k).astype(np.int32)
        packed, kp = pack_weights(w, block)
        assert packed.dtype == np.uint32 and kp % 4 == 0 and kp >= k and packed.size == cout * kp // 4
        col = np.zeros(kp, dtype=np.int32)
        col[:k] = x
        want = w.astype(np.int64) @ x
        assert np.array_equal(_emulate_int8(packed, col, cout, kp // 4, block), want), (cout, k)
        wide, kp2 = pack_wide_weights(w)
        assert wide.dtype == np.uint32 and kp2 == kp and wide.size == cout * kp // 2
        assert np.array_equal(_emulate_wide(wide, col, cout, kp // 4), want), (cout, k)


def test_unroll_factor_divides_the_column_or_pays_for_its_code():
    # a long, much-called column: the largest divisor up to MAX_UNROLL; a prime length: 2 with
    # a remainder step; a short one: all of it; a rarely called one: 2 (its code would not pay)
    assert unroll_factor(36, 4096, True) == 6 and unroll_factor(144, 1024, True) == 6
    assert unroll_factor(37, 4096, True) == 2 and unroll_factor(7, 4096, True) == 7
    assert unroll_factor(8, 10, False) == 2 and unroll_factor(9, 10 ** 6, False) == 3
    for n4 in range(1, 80):
        u = unroll_factor(n4, 10 ** 6, n4 % 2 == 0)
        assert u == 2 or (u <= m7_gemm.MAX_UNROLL and n4 % u == 0), (n4, u)


@pytest.mark.parametrize("multiplier", [0.5, 0.25, 0.0009765625, 0.00123456, 0.3333333])
def test_magic_requant_equals_the_float_contract(multiplier, tmp_path):
    """nnc_m7_requant_magic (the rounding by adding 1.5 * 2^23 + zp) against nearbyintf(f32(acc) *
    m) + zp, saturated, for every accumulator whose product stays inside the bound it is used
    for, at even zero points incl. -128 and a ReLU's lower bound above -128; multipliers 0.5 and
    0.25 put exact ties (x.5) at every other / fourth accumulator."""
    import ctypes
    from conftest import compile_host_library
    src = tmp_path / "requant.c"
    src.write_text("#include <stdint.h>\n#include <math.h>\n" + m7_kernels.INTRINSICS + m7_kernels.REQUANT_MAGIC
                   + "void run(const int32_t* acc, int32_t n, float m, float magic, int32_t lo, int8_t* out)"
                   " { for (int32_t i = 0; i < n; ++i) out[i] = nnc_m7_requant_magic(acc[i], m, magic, lo); }\n")
    compile_host_library(str(src), str(tmp_path / "requant.so"))
    run = ctypes.CDLL(str(tmp_path / "requant.so")).run
    m = np.float32(multiplier)
    reach = int(m7_kernels.MAGIC_BOUND / multiplier)
    acc = np.arange(-reach, reach + 1, dtype=np.int32)
    for zp, lo in ((-128, -128), (0, -128), (126, -128), (-40, -40), (4, 4)):
        got = np.zeros(acc.size, dtype=np.int8)
        run(acc.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), ctypes.c_int32(acc.size), ctypes.c_float(m),
            ctypes.c_float(1.5 * 2 ** 23 + zp), ctypes.c_int32(lo), got.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
        want = np.clip(np.rint(acc.astype(np.float32) * m).astype(np.int64) + zp, lo, 127)
        assert int(np.count_nonzero(got != want)) == 0, (zp, lo)


def test_magic_requant_refuses_odd_zero_points_and_large_products():
    from nnc.ir import Op, QParams, Tensor
    w = np.full((2, 1, 3, 3), 100, dtype=np.int8)
    params = {"weight": w, "bias": np.zeros(2, dtype=np.int32), "multiplier": np.full(2, 0.01, np.float32)}

    def conv(zp, multiplier):
        x = Tensor("x", (1, 1, 8, 8), qparams=QParams.make(0.1, 0))
        y = Tensor("y", (1, 2, 8, 8), qparams=QParams.make(0.1, zp))
        return Op("conv2d", "c", [x], [y], {"clamp": (-128, 127)},
                  dict(params, multiplier=np.full(2, multiplier, np.float32)))
    bias = np.zeros(2, dtype=np.int64)
    assert m7_kernels.magic_requant_applies(conv(-128, 0.01), bias)    # |acc| <= 115,200: 1,152
    assert not m7_kernels.magic_requant_applies(conv(-127, 0.01), bias)  # odd: ties would flip
    assert not m7_kernels.magic_requant_applies(conv(-128, 0.3), bias)   # 34,560: past the bound


def test_channel_blocks_cover_every_channel_once():
    for block in (2, 4):
        for cout in range(1, 12):
            blocks = channel_blocks(cout, block)
            assert [c for oc, n in blocks for c in range(oc, oc + n)] == list(range(cout))
            assert all(n in (1, 2, block) for _, n in blocks)
            assert sum(n < block for _, n in blocks) <= 2


# -- zoo models -----------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["lenet5", "residual_cnn"])
def zoo_build(request, zoo, tmp_path_factory):
    name = request.param
    spec = zoo[name]
    qmodel = spec.load_quantized()
    graph = import_torch_model(qmodel, spec.example_input(), name)
    compiled, lib, source = build(graph, tmp_path_factory.mktemp("m7zoo"), name)
    return name, qmodel, graph, compiled, lib, source


def test_zoo_model_bit_exact(zoo_build):
    name, qmodel, graph, compiled, lib, _ = zoo_build
    provs = providers_of(compiled)
    heavy = [op.name for op in compiled.graph.ops
             if op.kind in ("conv2d", "conv2d_maxpool2d", "dense")]
    assert heavy and all(provs[n] == "m7" for n in heavy), provs
    if name == "lenet5":   # both conv+pool pairs run fused: the conv outputs are never stored
        assert [n for n in heavy if "+" in n] == ["conv1+maxpool2d", "conv2+maxpool2d_1"]
    # the ways of padding: lenet5's first layer copies its small input once with the padding;
    # residual_cnn's 3x3 stride-1 convolutions fill their columns two windows at a time
    # (m7_rowpair, padding at the edges); the generic border path: test_conv_grid_bit_exact
    sources = {op.name: compiled.kernels[id(op)].source for op in compiled.graph.ops
               if id(op) in compiled.kernels}
    if name == "lenet5":
        first = sources["conv1+maxpool2d"]
        assert "padded" in first and "border" not in first
    else:
        assert all("m7_rowpair" in sources[n] and "padded" not in sources[n] for n in ("conv1", "conv2"))
    x = edge_and_random_inputs(graph.inputs[0].shape, N_INPUTS, seed=5)
    assert len(x) >= 1000
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = lib.run(x)
    mismatches = int(np.count_nonzero(got != expected))
    assert mismatches == 0, f"{name}: {mismatches} of {got.size} outputs differ from torch qnnpack"


@pytest.mark.parametrize("compiler", [HOST_CC, CORTEX_M7_CC])
def test_zoo_source_compiles_warning_free(zoo_build, compiler, tmp_path):
    if shutil.which(compiler) is None:
        pytest.fail(f"{compiler} is not installed")
    name, _, _, compiled, _, source = zoo_build
    obj = str(tmp_path / "m.o")
    r = subprocess.run([compiler, *WARNING_FREE_FLAGS[compiler], "-c", source, "-I", os.path.dirname(source),
                        "-o", obj], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    if compiler == CORTEX_M7_CC:
        dis = subprocess.run(["arm-none-eabi-objdump", "-d", obj], capture_output=True, text=True,
                             check=True).stdout
        assert not re.search(r"\.f64|\t__aeabi_d", dis), "double-precision instruction"
        assert "smlad" in dis and "sxtb16" in dis
        assert "vcvtr.s32.f32" in dis and "nearbyintf" not in dis
        assert "bl\t" not in dis or not re.search(r"bl\s+[0-9a-f]+ <(nearbyintf|__aeabi_)", dis)


# -- a conv/dense grid ----------------------------------------------------------------------

def make_grid_model(scheme: str, seed: int):
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.c1 = nn.Conv2d(1, 5, 5, padding=2)                     # 1 input channel, odd cout
            self.r1 = nn.ReLU()
            self.p1 = nn.MaxPool2d(2)             # fused into c1; floor: the last row/col unused
            self.c2 = nn.Conv2d(5, 6, 3, stride=2, padding=1)           # stride 2, pad 1
            self.p3 = nn.MaxPool2d(3, stride=1, padding=1)   # overlapping: not fused, portable C
            self.c3 = nn.Conv2d(6, 7, (3, 2), stride=(1, 2), padding=(0, 1))  # non-square
            self.r3 = nn.ReLU()
            self.c4 = nn.Conv2d(7, 4, 1)                                # 1x1
            self.c5 = nn.Conv2d(4, 4, 3, padding=1, groups=4)           # depthwise: portable C
            self.c6 = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False)  # dilation 2, no bias
            self.c7 = nn.Conv2d(6, 3, 7, stride=3, padding=3)           # 7x7 stride 3
            self.fc1 = nn.Linear(3 * 2 * 2, 9)
            self.rf = nn.ReLU()
            self.fc2 = nn.Linear(9, 6)      # dense: channel blocks of 4 + 1 (fc1), 4 + 2 (fc2)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.p1(self.r1(self.c1(x)))
            x = self.c2(x)
            x = self.p3(x)
            x = self.r3(self.c3(x))
            x = self.c4(x)
            x = self.c5(x)
            x = self.c6(x)
            x = self.c7(x)
            x = x.reshape(x.shape[0], -1)
            x = self.rf(self.fc1(x))
            return self.dequant(self.fc2(x))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["c1", "r1"], ["c3", "r3"], ["fc1", "rf"]],
                                               inplace=True)

    torch.manual_seed(seed)
    model = Net()
    model = quantize_ptq(model, scheme, torch.randn(64, *GRID_SHAPE[1:]) * 1.5 + 1.0)
    return model, torch.randn(*GRID_SHAPE)


@pytest.mark.parametrize("layout", ["wide", "int8"])
@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_conv_grid_bit_exact(scheme, layout, tmp_path, monkeypatch):
    """Both weight layouts of the convolutions: int16 (every layer here is small enough) and, with
    the size limit at 0, the int8 layout that layers above WIDE_WEIGHTS_MAX keep; with the int8
    layout the padded convolutions also take the border path of inputs too big to copy padded,
    and every dot product's loop is unrolled as far as its length allows (unroll_factor)."""
    if layout == "int8":
        monkeypatch.setattr(m7_kernels, "WIDE_WEIGHTS_MAX", 0)
        monkeypatch.setattr(m7_kernels, "PADDED_COPY_MAX", 0)
        monkeypatch.setattr(m7_gemm, "MIN_SAVED_PER_BYTE", 0)
    qmodel, example = make_grid_model(scheme, seed=7 if scheme == "per_tensor" else 11)
    graph = import_torch_model(qmodel, example, f"m7grid_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7grid_{scheme}")
    def calling(name):
        return {op.name for op in compiled.graph.ops if id(op) in compiled.kernels
                and name in compiled.kernels[id(op)].source}
    # widened weights: the fused conv + pool on the 2x2 dot product, the others on m7_pairs
    assert calling("nnc_m7_dot2x2w_u") == ({"c1+p1"} if layout == "wide" else set())
    assert calling("nnc_m7_gemm_pairs(cols") == ({"c2", "c3", "c4", "c6", "c7"} if layout == "wide" else set())
    padding = "padded" if layout == "wide" else "border"
    assert all(padding in compiled.kernels[id(op)].source for op in compiled.graph.ops
               if op.name in ("c1+p1", "c2", "c3", "c6", "c7")), padding
    provs = providers_of(compiled)
    assert provs["c5"] == "m7"  # depthwise: m7_depthwise
    assert provs["p3"] == "m7"  # an overlapping pool is not fused: the m7 max pool
    assert all(provs[n] == "m7" for n in ("c1+p1", "c2", "c3", "c4", "c6", "c7", "fc1", "fc2")), provs
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, GRID_SHAPE, 3, tmp_path, on_m7=True)


ROWPAIR_SHAPE = (1, 1, 12, 10)


def make_rowpair_model(scheme: str, seed: int):
    """Convolutions with 3-wide windows at stride 1 along x (the m7_rowpair column fill): odd and
    even input channels (an odd number of window rows leaves a lone row), kernel heights 1/3/5,
    vertical stride 2, padding 0/1 along x and 0/1/2 along y (whole rows of padding), rows of
    4 bytes where both edges are padding in the same pass, and both weight layouts."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.a = nn.Conv2d(1, 3, 3, padding=1)                         # 3 rows: a lone row
            self.ra = nn.ReLU()
            self.b = nn.Conv2d(3, 4, (5, 3), padding=(2, 1))              # 15 rows
            self.c = nn.Conv2d(4, 5, (1, 3), padding=(0, 1))              # 1x3
            self.d = nn.Conv2d(5, 6, 3, stride=(2, 1), padding=(1, 0))    # 12x10 -> 6x8
            self.e = nn.Conv2d(6, 4, 3, padding=(2, 1))                   # 6x8 -> 8x8
            self.f = nn.Conv2d(4, 3, 3)                                   # 8x8 -> 6x6
            self.g = nn.Conv2d(3, 2, 3)                                   # 6x6 -> 4x4
            self.h = nn.Conv2d(2, 3, 3, padding=1)                        # rows of 4 bytes
            self.fc = nn.Linear(3 * 4 * 4, 5)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.ra(self.a(x))
            for conv in (self.b, self.c, self.d, self.e, self.f, self.g, self.h):
                x = conv(x)
            return self.dequant(self.fc(x.reshape(x.shape[0], -1)))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["a", "ra"]], inplace=True)

    torch.manual_seed(seed)
    model = quantize_ptq(Net(), scheme, torch.randn(64, *ROWPAIR_SHAPE[1:]) * 1.5 + 0.5)
    return model, torch.randn(*ROWPAIR_SHAPE)


@pytest.mark.parametrize("layout", ["wide", "int8"])
@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_rowpair_fill_bit_exact(scheme, layout, tmp_path, monkeypatch):
    """Every layer's dot product unrolled as far as its length allows (unroll_factor: 3 to 7
    steps here, or all of a short column)."""
    monkeypatch.setattr(m7_gemm, "MIN_SAVED_PER_BYTE", 0)
    if layout == "int8":
        monkeypatch.setattr(m7_kernels, "WIDE_WEIGHTS_MAX", 0)
    qmodel, example = make_rowpair_model(scheme, seed=21 if scheme == "per_tensor" else 22)
    graph = import_torch_model(qmodel, example, f"m7rowpair_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7rowpair_{scheme}")
    convs = [op for op in compiled.graph.ops if op.kind == "conv2d"]
    assert len(convs) == 8
    for op in convs:
        k = compiled.kernels[id(op)]
        assert k.provider == "m7" and "m7_rowpair" in k.source, op.name
        assert ("nnc_m7_gemm_pairs(cols" in k.source) == (layout == "wide"), op.name
    # the ReLU layer (output zero point -128) requantizes by the float add, the others by vcvtr
    magic = {op.name for op in convs if "nnc_m7_requant_magic(" in compiled.kernels[id(op)].source}
    assert "a" in magic and len(magic) < len(convs), magic
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, ROWPAIR_SHAPE, 9, tmp_path, on_m7=True)


PAIRS_SHAPE = (1, 1, 24, 24)


def make_pairs_model(scheme: str, seed: int):
    """Convolutions on m7_pairs whose columns have 1 to 16 groups of 4 values: every remainder
    of the 8 times unrolled loop (the entry in its middle), one to two passes, odd channel
    counts (the last channel on the interleaved columns alone), odd numbers of positions (the
    last pair computes one position twice), the rowpair fill and the copied columns."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.convs = nn.ModuleList([
                nn.Conv2d(1, 4, 3, padding=1),               # 24x24, rowpair fill, 3 groups
                nn.Conv2d(4, 7, 1, stride=2),                # -> 12x12, 1 group
                nn.Conv2d(7, 8, 3, stride=2, padding=1),     # -> 6x6, 16 groups
                nn.Conv2d(8, 5, 2),                          # -> 5x5, 8 groups, 25 positions
                nn.Conv2d(5, 6, (1, 2)),                     # -> 5x4, 3 groups
                nn.Conv2d(6, 4, 3, padding=1),               # rowpair fill, 14 groups
                nn.Conv2d(4, 5, 2, padding=1),               # -> 6x5, 4 groups
                nn.Conv2d(5, 7, 2),                          # -> 5x4, 5 groups
                nn.Conv2d(7, 6, 2),                          # -> 4x3, 7 groups
                nn.Conv2d(6, 11, 1, stride=2),               # -> 2x2, 2 groups
                nn.Conv2d(11, 6, 2, padding=1),              # -> 3x3, 11 groups
            ])
            self.relu = nn.ReLU()
            self.fc = nn.Linear(6 * 3 * 3, 5)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            for i, conv in enumerate(self.convs):
                x = conv(x)
                if i == 4:
                    x = self.relu(x)
            return self.dequant(self.fc(x.reshape(x.shape[0], -1)))

        def fuse_model(self, qat=False):
            pass

    torch.manual_seed(seed)
    model = quantize_ptq(Net(), scheme, torch.randn(64, *PAIRS_SHAPE[1:]) * 1.5 + 0.5)
    return model, torch.randn(*PAIRS_SHAPE)


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_gemm_pairs_every_column_length_bit_exact(scheme, tmp_path):
    qmodel, example = make_pairs_model(scheme, seed=31 if scheme == "per_tensor" else 32)
    graph = import_torch_model(qmodel, example, f"m7pairs_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7pairs_{scheme}")
    groups = sorted(int(m.group(1)) for op in compiled.graph.ops if id(op) in compiled.kernels
                    for m in [re.search(r"nnc_m7_gemm_pairs\(cols, weight, sums, (\d+),",
                                        compiled.kernels[id(op)].source)] if m)
    assert groups == [1, 2, 3, 3, 4, 5, 7, 8, 11, 14, 16], groups
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, PAIRS_SHAPE, 13, tmp_path, on_m7=True)


POOL_SHAPE = (1, 1, 13, 11)


def make_pool_model(shape, channels: int, pools: list, seed: int):
    """A 3x3 convolution to `channels` channels, then the pools in turn (per-tensor)."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.c = nn.Conv2d(1, channels, 3, padding=1)
            self.pools = nn.Sequential(*pools)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.pools(self.c(self.quant(x))))

        def fuse_model(self, qat=False):
            pass

    torch.manual_seed(seed)
    model = quantize_ptq(Net(), "per_tensor", torch.randn(64, *shape[1:]) * 1.5)
    return model, torch.randn(*shape)


def make_maxpool_model(seed: int):
    """Max pools on their own (the m7 max pool kernel): kernels 5/3/(2,3)/2, strides 1/2/(1,2),
    padding 0/1/2 (-128 is neutral), ceil mode, rows that are not whole words and rows shorter
    than a word, output rows that are not a multiple of 4 long."""
    import torch.nn as nn
    return make_pool_model(POOL_SHAPE, 5, [
        nn.MaxPool2d(5, stride=1, padding=2),                       # 5x13x11
        nn.MaxPool2d((2, 3), stride=(1, 2), padding=(1, 1)),        # 5x14x6
        nn.MaxPool2d(3, stride=2, ceil_mode=True),                  # 5x7x3
        nn.MaxPool2d(2, stride=1)], seed)                           # 5x6x2


def test_maxpool_bit_exact(tmp_path):
    qmodel, example = make_maxpool_model(seed=31)
    graph = import_torch_model(qmodel, example, "m7maxpool")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, "m7maxpool")
    pools = [op for op in compiled.graph.ops if op.kind == "maxpool2d"]
    assert len(pools) == 4 and all(compiled.kernels[id(op)].provider == "m7" for op in pools)
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, POOL_SHAPE, 12, tmp_path, on_m7=True)


AVGPOOL_SHAPE = (1, 1, 27, 23)


def make_padded_avgpool_model(channels: int, seed: int):
    """Average pools with padding (the m7_pool kernel): kernels 3, 5, (2, 3); strides 1, 2,
    (1, 2); padding 1, 2, (1, 1); count_include_pad both ways (qnnpack divides by kh * kw either
    way); rows that are not whole words and rows shorter than a word."""
    import torch.nn as nn
    return make_pool_model(AVGPOOL_SHAPE, channels, [
        nn.AvgPool2d(3, stride=1, padding=1),                                           # 27x23
        nn.AvgPool2d(5, stride=2, padding=2, count_include_pad=False),                  # 14x12
        nn.AvgPool2d((2, 3), stride=(1, 2), padding=(1, 1)),                            # 15x6
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)], seed)           # 8x3


@pytest.mark.parametrize("channels", [5, 8])
def test_padded_avgpool_bit_exact(channels, tmp_path):
    qmodel, example = make_padded_avgpool_model(channels, seed=40 + channels)
    tag = f"m7avgpool{channels}"
    graph = import_torch_model(qmodel, example, tag)
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, tag)
    pools = [op for op in compiled.graph.ops if op.kind == "avgpool2d"]
    assert len(pools) == 4 and all(compiled.kernels[id(op)].provider == "m7" for op in pools), providers_of(compiled)
    assert all("frame" in compiled.kernels[id(op)].source for op in pools)   # the padded-frame kernel
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, AVGPOOL_SHAPE, 13 + channels, tmp_path, on_m7=True)


def test_padded_avgpool_per_position_divisors_equal_portable(tmp_path):
    """A divisor per output position (count_include_pad=False, as the PT2E frontend may give;
    eager models are qnnpack's kh * kw): the same graph through the m7 and the portable kernels,
    1000 inputs, equal."""
    from conftest import build_host_library
    qmodel, example = make_padded_avgpool_model(5, seed=61)
    graph = import_torch_model(qmodel, example, "m7avgpool_div")
    for op in graph.ops:
        if op.kind == "avgpool2d":
            op.attrs["count_include_pad"] = False
    compiled, m7_lib, _ = build(copy.deepcopy(graph), tmp_path / "m7", "m7avgpool_div_m7")
    pools = [compiled.kernels[id(op)] for op in compiled.graph.ops if op.kind == "avgpool2d"]
    assert all(k.provider == "m7" and "multiplier" in k.consts for k in pools)
    _, c_lib, _ = build_host_library(copy.deepcopy(graph), "c", tmp_path / "c", "m7avgpool_div_c")
    x = edge_and_random_inputs(AVGPOOL_SHAPE, N_INPUTS, seed=62)
    got, want = m7_lib.run(x), c_lib.run(x)
    assert int(np.count_nonzero(got != want)) == 0


def test_avgpool_ceil_mode_is_refused_clearly():
    """torch's quantized average pool with ceil_mode=True is not qnnpack's arithmetic (it rounds
    after adding the zero point): a clear error naming the layer, not outputs that differ."""
    import torch.nn as nn
    from nnc.errors import NncError
    qmodel, example = make_pool_model(AVGPOOL_SHAPE, 3, [nn.AvgPool2d(3, stride=2, ceil_mode=True)], seed=3)
    with pytest.raises(NncError) as e:
        import_torch_model(qmodel, example, "m7avgpool_ceil")
    msg = e.value.format()
    assert "ceil_mode=True" in msg and "pools" in msg and "use ceil_mode=False" in msg


GROUPED_SHAPE = (1, 6, 12, 10)


def make_grouped_model(scheme: str, seed: int):
    """Grouped convolutions (not depthwise) on the m7 GEMM: 2 and 3 groups, odd channel counts per
    group, 3x3 at stride 1 (the row-pair fill), stride 2 with padding, 5x3, 1x1, and one output
    position (the dense-like path)."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.convs = nn.Sequential(
                nn.Conv2d(6, 6, 3, padding=1, groups=2),                  # 3 -> 3 per group, rowpair
                nn.Conv2d(6, 9, (5, 3), stride=2, padding=(2, 1), groups=3),   # 2 -> 3, 6x5
                nn.Conv2d(9, 6, 1, groups=3),                             # 3 -> 2, 1x1
                nn.Conv2d(6, 10, 3, stride=2, groups=2),                  # 3 -> 5, 2x2
                nn.Conv2d(10, 4, 2, groups=2))                            # one position
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.convs(self.quant(x)))

        def fuse_model(self, qat=False):
            pass

    torch.manual_seed(seed)
    model = quantize_ptq(Net(), scheme, torch.randn(64, *GROUPED_SHAPE[1:]) * 1.5)
    return model, torch.randn(*GROUPED_SHAPE)


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_grouped_conv_bit_exact(scheme, tmp_path):
    qmodel, example = make_grouped_model(scheme, seed=41 if scheme == "per_tensor" else 42)
    graph = import_torch_model(qmodel, example, f"m7grouped_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7grouped_{scheme}")
    convs = [op for op in compiled.graph.ops if op.kind == "conv2d"]
    assert [op.attrs["groups"] for op in convs] == [2, 3, 3, 2, 2]
    for op in convs:
        k = compiled.kernels[id(op)]
        assert k.provider == "m7" and "groups, each a conv2d" in k.source, op.name
    assert "m7_rowpair" in compiled.kernels[id(convs[0])].source
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, GROUPED_SHAPE, 13, tmp_path, on_m7=True)


def test_rowpair_tap_order_is_a_permutation():
    for rows in range(1, 12):
        order = m7_rowpair.tap_order(rows)
        assert sorted(t for t in order if t >= 0) == list(range(3 * rows))
        assert len(order) == 3 * rows + rows % 2     # a lone row pads one slot


def assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, shape, seed, tmp_path, on_m7=False):
    """N_INPUTS inputs: the host library equals torch qnnpack; the source compiles warning-free
    for the Cortex-M7. `on_m7`: the same inputs also through the very same C built for the
    emulated Cortex-M7 (the inline assembly of the intrinsics), equal to torch too."""
    x = edge_and_random_inputs(shape, N_INPUTS, seed=seed)
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = lib.run(x)
    mismatches = int(np.count_nonzero(got != expected))
    assert mismatches == 0, f"{graph.name}: {mismatches} of {got.size} outputs differ from torch"
    obj = str(tmp_path / "m7.o")
    r = subprocess.run([CORTEX_M7_CC, *WARNING_FREE_FLAGS[CORTEX_M7_CC], "-c", source, "-I",
                        os.path.dirname(source), "-o", obj], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    if on_m7:
        m7 = emulated_m7_outputs(graph, source, x, tmp_path).reshape(expected.shape)
        mismatches = int(np.count_nonzero(m7 != expected))
        assert mismatches == 0, f"{graph.name} on the emulated M7: {mismatches} of {m7.size} outputs differ"


def emulated_m7_outputs(graph, source, x, tmp_path):
    """Outputs of the generated C on QEMU's Cortex-M7 (the semihosting check image of
    tests/fixtures/m7/bench.py), one row per input."""
    import json
    import sys
    from conftest import require_tools
    require_tools(CORTEX_M7_CC, "qemu-system-arm", needed_for="running the kernels on the emulated M7")
    from fixtures.m7 import bench
    gen = os.path.dirname(source)
    meta = {"inputs": [{"shape": list(t.shape)} for t in graph.inputs],
            "outputs": [{"shape": list(t.shape)} for t in graph.outputs]}
    with open(os.path.join(gen, "model.json"), "w") as f:
        json.dump(meta, f)
    work = tmp_path / "m7bench"
    work.mkdir()
    (_, check_elf), _ = bench.build(gen, str(work), x[0].ravel())
    return bench.firmware_outputs(check_elf, x)


# -- the add and the average pool ---------------------------------------------------------------

def make_residual_model(seed: int):
    """conv+ReLU -> conv -> add+ReLU (skip) -> avg pool 3x5 stride 2 (a row of 5: one word and a
    tail) -> fc."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1)
            self.r1 = nn.ReLU()
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.skip = torch.ao.nn.quantized.FloatFunctional()
            self.pool = nn.AvgPool2d((3, 5), stride=2)
            self.fc = nn.Linear(4 * 5 * 4, 6)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            y = self.r1(self.c1(x))
            x = self.skip.add_relu(y, self.c2(y))
            x = self.pool(x).reshape(x.shape[0], -1)
            return self.dequant(self.fc(x))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["c1", "r1"]], inplace=True)

    torch.manual_seed(seed)
    model = Net()
    model = quantize_ptq(model, "per_tensor", torch.randn(64, 1, 11, 11) * 1.5)
    return model, torch.randn(1, 1, 11, 11)


def test_add_and_avgpool_bit_exact(tmp_path):
    qmodel, example = make_residual_model(seed=4)
    graph = import_torch_model(qmodel, example, "m7residual")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, "m7residual")
    kinds = {op.kind: compiled.kernels[id(op)].provider for op in compiled.graph.ops
             if id(op) in compiled.kernels}
    assert kinds["add"] == "m7" and kinds["avgpool2d"] == "m7", kinds
    x = edge_and_random_inputs((1, 1, 11, 11), N_INPUTS, seed=8)
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = lib.run(x)
    assert int(np.count_nonzero(got != expected)) == 0


def make_two_adds_model(seed: int):
    """An add + ReLU (output zero point -128: the one-constant form) and a plain add (negative
    ties: the signed form) over 3x11x11 = 363 elements (four per step and a tail of 3)."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.c1 = nn.Conv2d(1, 3, 3, padding=1)
            self.r1 = nn.ReLU()
            self.c2 = nn.Conv2d(3, 3, 3, padding=1)
            self.add1 = torch.ao.nn.quantized.FloatFunctional()
            self.add2 = torch.ao.nn.quantized.FloatFunctional()
            self.fc = nn.Linear(3 * 11 * 11, 5)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            y = self.r1(self.c1(x))
            z = self.c2(y)
            x = self.add2.add(self.add1.add_relu(y, z), z)
            return self.dequant(self.fc(x.reshape(x.shape[0], -1)))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["c1", "r1"]], inplace=True)

    torch.manual_seed(seed)
    model = quantize_ptq(Net(), "per_tensor", torch.randn(64, 1, 11, 11) * 1.5)
    return model, torch.randn(1, 1, 11, 11)


def test_two_adds_bit_exact(tmp_path):
    qmodel, example = make_two_adds_model(seed=5)
    graph = import_torch_model(qmodel, example, "m7adds")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, "m7adds")
    adds = [op for op in compiled.graph.ops if op.kind == "add"]
    assert [compiled.kernels[id(op)].provider for op in adds] == ["m7", "m7"]
    x = edge_and_random_inputs((1, 1, 11, 11), N_INPUTS, seed=9)
    expected = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    got = lib.run(x)
    assert int(np.count_nonzero(got != expected)) == 0


@pytest.mark.parametrize("scales, clamp, form", [
    ((0.01, 0, 0.01, 0, 0.02, 0), (-128, 127), "signed"),          # x0 + x1 odd: ties both ways
    ((0.01, 3, 0.013, -7, 0.02, -128), (-128, 127), "unsigned"),    # add + ReLU, zero point -128
    ((0.01, 0, 0.01, 0, 0.02, -100), (-100, 127), "unsigned"),      # ReLU above -128: its clamp
    ((0.02, -5, 0.01, 9, 0.015, 4), (-128, 127), "unsigned"),       # no pair lands on a tie
])
def test_add_forms_exhaustive(scales, clamp, form, tmp_path):
    """The C of each folded form of the add, compiled on the host through the portable
    intrinsics, against qnnpack's add for all 65,536 input pairs (and 3 more: the tail after
    the steps of four)."""
    import ctypes
    from conftest import compile_host_library
    from nnc import arith
    from nnc.ir import Op, QParams, Tensor
    from nnc.kernels.m7_pointwise import ADD_SIGNED_ROUND, add_form, emit_add
    sa, za, sb, zb, so, zo = scales
    n = 65536 + 3
    a, b = Tensor("a", (1, n), qparams=QParams.make(sa, za)), Tensor("b", (1, n), qparams=QParams.make(sb, zb))
    op = Op("add", "add", [a, b], [Tensor("o", (1, n), qparams=QParams.make(so, zo))],
            {"requant": "qnnpack_add", "clamp": clamp})
    assert add_form(op) == form
    src = tmp_path / "add.c"
    src.write_text("#include <stdint.h>\n#include <math.h>\n" + m7_kernels.INTRINSICS + ADD_SIGNED_ROUND
                   + emit_add(op, "kernel") + "void run(const int8_t* a, const int8_t* b, int8_t* o)"
                   " { kernel(a, b, o); }\n")
    compile_host_library(str(src), str(tmp_path / "add.so"))
    x0, x1 = (v.ravel().astype(np.int8) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    x0, x1 = np.concatenate([x0, [-128, 127, 0]]).astype(np.int8), np.concatenate([x1, [127, -128, 0]]).astype(np.int8)
    got = np.zeros(n, dtype=np.int8)
    ptr = lambda v: v.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
    ctypes.CDLL(str(tmp_path / "add.so")).run(ptr(x0), ptr(x1), ptr(got))
    p = arith.qnnpack_add_params(a.qparams, b.qparams, op.output.qparams)
    assert int(np.count_nonzero(got != arith.qnnpack_add(x0, x1, p, clamp))) == 0


def test_add_whose_folded_form_overflows_stays_portable():
    """A tiny input/output scale ratio makes qnnpack shift by 31: the folded rounding would leave
    int32, so the exhaustive export-time check must refuse the m7 add."""
    from nnc.ir import Op, QParams, Tensor
    from nnc.kernels.m7_pointwise import add_is_exact
    a = Tensor("a", (1, 4), qparams=QParams.make(0.001, 0))
    b = Tensor("b", (1, 4), qparams=QParams.make(0.0005, 3))
    out = Tensor("out", (1, 4), qparams=QParams.make(2.0, 0))
    tiny = Op("add", "add", [a, b], [out], {"requant": "qnnpack_add", "clamp": (-128, 127)})
    assert not add_is_exact(tiny)
    usual = Op("add", "add", [a, b], [Tensor("o", (1, 4), qparams=QParams.make(0.002, -5))],
               {"requant": "qnnpack_add", "clamp": (-128, 127)})
    assert add_is_exact(usual)


# -- depthwise convolution ------------------------------------------------------------------------

DW_SHAPE = (1, 5, 13, 11)


def make_depthwise_model(scheme: str, seed: int):
    """Depthwise layers over a grid: odd and even channel counts, kernels 3/5/7 and non-square,
    strides 1, 2 and (2, 1), with and without padding, odd and even output widths, ReLU."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.d1 = nn.Conv2d(5, 5, 3, padding=1, groups=5)                    # 13x11, odd width
            self.r1 = nn.ReLU()
            self.d2 = nn.Conv2d(5, 5, 5, stride=2, padding=2, groups=5)          # 7x6, stride 2
            self.d3 = nn.Conv2d(5, 5, (3, 5), padding=(0, 2), groups=5)          # non-square
            self.r3 = nn.ReLU()
            self.pw = nn.Conv2d(5, 6, 1)
            self.d4 = nn.Conv2d(6, 6, 7, padding=3, groups=6, bias=False)        # 7x7, no bias
            self.d5 = nn.Conv2d(6, 6, (5, 3), stride=(2, 1), padding=(1, 0), groups=6)
            self.fc = nn.Linear(6 * 2 * 4, 5)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.r1(self.d1(x))
            x = self.r3(self.d3(self.d2(x)))
            x = self.d5(self.d4(self.pw(x)))
            return self.dequant(self.fc(x.reshape(x.shape[0], -1)))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["d1", "r1"], ["d3", "r3"]], inplace=True)

    torch.manual_seed(seed)
    model = Net()
    return quantize_ptq(model, scheme, torch.randn(64, *DW_SHAPE[1:]) * 1.5 + 0.5), torch.randn(*DW_SHAPE)


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_depthwise_grid_bit_exact(scheme, tmp_path):
    qmodel, example = make_depthwise_model(scheme, seed=5 if scheme == "per_tensor" else 9)
    graph = import_torch_model(qmodel, example, f"m7dw_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7dw_{scheme}")
    provs = providers_of(compiled)
    assert all(provs[n] == "m7" for n in ("d1", "d2", "d3", "d4", "d5")), provs
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, DW_SHAPE, 2, tmp_path)


def test_mobilenet_v3_depthwise_on_m7_bit_exact(tmp_path):
    """torchvision's MobileNetV3-small (3x3 and 5x5 depthwise, strides 1 and 2, between
    hardswish tables and squeeze-excite muls) with kernels=m7: every depthwise layer on the m7
    kernel, 1000 inputs equal to torch qnnpack."""
    import torch
    import torch.nn as nn

    from fixtures import mobilenetv3 as mbv3
    torch.manual_seed(0)
    model = mbv3.mobilenet_v3("small", 1.0, 10)
    for m in model.modules():          # batch-norm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    shape = (1, 3, 32, 32)
    qmodel = quantize_ptq(model, "per_channel", torch.randn(32, *shape[1:]))
    graph = import_torch_model(qmodel, torch.randn(*shape), "m7mbv3")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, "m7mbv3")
    depthwise = [op for op in compiled.graph.ops if op.kind == "conv2d" and op.attrs["groups"] > 1]
    assert {tuple(op.params["weight"].shape[2:]) for op in depthwise} == {(3, 3), (5, 5)}
    assert all(compiled.kernels[id(op)].provider == "m7" for op in depthwise)
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, shape, 4, tmp_path)


THREE_TAP_SHAPE = (1, 7, 12, 10)


def make_three_tap_model(scheme: str, seed: int):
    """Depthwise layers with rows of three taps (the int8 kernel): 3x3 at stride 1 and 2, with and
    without padding, odd and even input and output sizes, an odd channel count, a 2x3 kernel at
    stride (1, 2), ReLU."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.t1 = nn.Conv2d(7, 7, 3, padding=1, groups=7)                    # 7x12x10, stride 1
            self.r1 = nn.ReLU()
            self.t2 = nn.Conv2d(7, 7, 3, stride=2, padding=1, groups=7)          # 6x5 from an even input
            self.t3 = nn.Conv2d(7, 7, 3, groups=7)                               # 4x3, no padding
            self.pw = nn.Conv2d(7, 6, 1)
            self.t4 = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False)  # 2x2 from 4x3
            self.r4 = nn.ReLU()
            self.t5 = nn.Conv2d(6, 6, (2, 3), stride=(1, 2), padding=1, groups=6)    # 3x1
            self.fc = nn.Linear(6 * 3 * 1, 5)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.t3(self.t2(self.r1(self.t1(x))))
            x = self.t5(self.r4(self.t4(self.pw(x))))
            return self.dequant(self.fc(x.reshape(x.shape[0], -1)))

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["t1", "r1"], ["t4", "r4"]], inplace=True)

    torch.manual_seed(seed)
    model = Net()
    return (quantize_ptq(model, scheme, torch.randn(64, *THREE_TAP_SHAPE[1:]) * 1.5 + 0.5),
            torch.randn(*THREE_TAP_SHAPE))


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_three_tap_depthwise_bit_exact(scheme, tmp_path):
    qmodel, example = make_three_tap_model(scheme, seed=21 if scheme == "per_tensor" else 23)
    graph = import_torch_model(qmodel, example, f"m7dw3_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7dw3_{scheme}")
    kernels = {op.name: compiled.kernels[id(op)] for op in compiled.graph.ops if op.name.startswith("t")}
    assert sorted(kernels) == ["t1", "t2", "t3", "t4", "t5"], sorted(kernels)
    for name, k in kernels.items():   # every layer on the int8 three-tap kernel
        assert k.provider == "m7" and "nnc_m7_smlabb" in k.source, name
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, THREE_TAP_SHAPE, 6, tmp_path)


# -- first layers and small-K pointwise layers (m7_small_k) ---------------------------------------

# name -> (input shape, [(layer name, Conv2d arguments, ReLU after)]): first layers with 1-3 input
# channels (kernels 3x3, 5x3, 10x4, 7x7; strides 1, 2, (2, 1); the padded input copied whole or
# through a band of rows), pointwise layers with K = 6 (a zero word of padding), 8, 12 (three dot
# steps: one per loop pass), 16, 32, 64, 128, 256 (several passes); odd output channel counts, odd
# output widths, position counts that are not a multiple of 4.
SMALL_K_MODELS = {
    "whole": ((1, 2, 30, 27), [("f1", dict(in_channels=2, out_channels=8, kernel_size=(5, 3), stride=(2, 1),
                                           padding=(2, 1)), True),
                               ("pw8", dict(in_channels=8, out_channels=16, kernel_size=1), False),
                               ("pw16", dict(in_channels=16, out_channels=5, kernel_size=1), True)]),
    "band": ((1, 3, 39, 38), [("f1", dict(in_channels=3, out_channels=7, kernel_size=3, stride=2, padding=1),
                                False),
                               ("pw", dict(in_channels=7, out_channels=4, kernel_size=1), True)]),
    "dscnn": ((1, 1, 49, 10), [("f1", dict(in_channels=1, out_channels=6, kernel_size=(10, 4), stride=2,
                                            padding=(5, 1)), True),
                                ("pw6", dict(in_channels=6, out_channels=3, kernel_size=1), False)]),
    "stem7": ((1, 1, 11, 9), [("f1", dict(in_channels=1, out_channels=4, kernel_size=7, padding=3), False),
                               ("pw4", dict(in_channels=4, out_channels=4, kernel_size=1), True)]),
    "k12": ((1, 2, 5, 9), [("f1", dict(in_channels=2, out_channels=12, kernel_size=3, padding=1), True),
                            ("pw12", dict(in_channels=12, out_channels=5, kernel_size=1), False)]),
    "k256": ((1, 3, 3, 5), [("f1", dict(in_channels=3, out_channels=128, kernel_size=3, padding=1), True),
                             ("pw128", dict(in_channels=128, out_channels=256, kernel_size=1), True),
                             ("pw256", dict(in_channels=256, out_channels=9, kernel_size=1), False)]),
    "wide": ((1, 2, 9, 7), [("f1", dict(in_channels=2, out_channels=32, kernel_size=3, padding=1), True),
                             ("pw32", dict(in_channels=32, out_channels=64, kernel_size=1), True),
                             ("pw64", dict(in_channels=64, out_channels=7, kernel_size=1), False)]),
}


def make_small_k_model(name: str, scheme: str, seed: int):
    import torch
    import torch.nn as nn
    shape, layers = SMALL_K_MODELS[name]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.names = [n for n, _, _ in layers]
            for n, args, relu in layers:
                setattr(self, n, nn.Conv2d(**args))
                if relu:
                    setattr(self, n + "_relu", nn.ReLU())
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            for n in self.names:
                x = getattr(self, n)(x)
                if hasattr(self, n + "_relu"):
                    x = getattr(self, n + "_relu")(x)
            return self.dequant(x)

        def fuse_model(self, qat=False):
            pairs = [[n, n + "_relu"] for n, _, relu in layers if relu]
            if pairs:
                torch.ao.quantization.fuse_modules(self, pairs, inplace=True)

    torch.manual_seed(seed)
    return quantize_ptq(Net(), scheme, torch.randn(64, *shape[1:]) * 1.5 + 0.5), torch.randn(*shape), shape


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("name", sorted(SMALL_K_MODELS))
def test_small_k_bit_exact(name, scheme, tmp_path):
    qmodel, example, shape = make_small_k_model(name, scheme, seed=31 + len(name) + len(scheme))
    graph = import_torch_model(qmodel, example, f"m7sk_{name}_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7sk_{name}_{scheme}")
    expected = {n for n, args, _ in SMALL_K_MODELS[name][1]
                if args["in_channels"] <= 3 or (args["kernel_size"] == 1 and args["in_channels"] % 2 == 0)}
    for op in compiled.graph.ops:
        k = compiled.kernels[id(op)]
        if op.name in expected:      # on the small-K kernel (pointwise: the shared function)
            marker = "nnc_m7_pointwise_" if op.params["weight"].shape[2:] == (1, 1) else "nnc_m7_dot16_2x2"
            assert k.provider == "m7" and marker in k.source, op.name
            expected.discard(op.name)
    assert not expected, expected
    # on the emulated M7 too: the pointwise dot step is inline assembly there
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, shape, 8, tmp_path, on_m7=True)


def test_small_k_pointwise_clamp_variants_equal_portable(tmp_path):
    """The shared pointwise function's other requantization variants (a fused ReLU above -128:
    `relu`; an upper bound below 127, as a ReLU6 from the PT2E frontend: `clamp`), which eager
    models do not produce: the same graph with those clamps through the m7 and the portable
    kernels, 1000 inputs, equal."""
    from conftest import build_host_library
    qmodel, example, shape = make_small_k_model("whole", "per_channel", seed=77)
    graph = import_torch_model(qmodel, example, "m7sk_clamps")
    x = edge_and_random_inputs(shape, N_INPUTS, seed=78)
    unclamped = run_torch_int8(qmodel, [x], [graph.inputs[0].qparams])[0]
    clamps = {"pw8": (-100, 90), "pw16": (-50, 127)}
    for op in graph.ops:
        if op.name in clamps:
            op.attrs["clamp"] = clamps[op.name]
    compiled, m7_lib, _ = build(copy.deepcopy(graph), tmp_path / "m7", "m7sk_clamps_m7")
    sources = {op.name: compiled.kernels[id(op)].source for op in compiled.graph.ops if op.name in clamps}
    assert "nnc_m7_pointwise_clamp_" in sources["pw8"] and "nnc_m7_pointwise_relu_" in sources["pw16"], sources
    _, c_lib, _ = build_host_library(copy.deepcopy(graph), "c", tmp_path / "c", "m7sk_clamps_c")
    got, want = m7_lib.run(x), c_lib.run(x)
    assert int(np.count_nonzero(got != want)) == 0
    assert np.count_nonzero(want != unclamped) > want.size // 10   # the clamps take effect
    assert len(np.unique(want)) > 10                                # not a saturated output


# -- cat (m7_cat) ----------------------------------------------------------------------------

CAT_SHAPE = (1, 1, 11, 13)


def make_cat_model(scheme: str, seed: int):
    """Concatenations along the channels (odd counts: 5 + 3 + 5, one tensor twice), the height
    (the same tensor twice: its own quantization, copied) and the width (13 + 13: rows that are
    not whole words, many outer steps)."""
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.a = nn.Conv2d(1, 5, 3, padding=1)
            self.a_relu = nn.ReLU()
            self.b = nn.Conv2d(1, 3, 3, padding=1)
            self.d = nn.Conv2d(13, 13, 3, padding=1)
            self.cats = nn.ModuleList(torch.ao.nn.quantized.FloatFunctional() for _ in range(3))
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            a, b = self.a_relu(self.a(x)), self.b(x)
            c = self.cats[0].cat([a, b, a], dim=1)            # 13x11x13
            d = self.cats[1].cat([c, self.d(c)], dim=3)       # 13x11x26
            return self.dequant(self.cats[2].cat([d, d], dim=2))   # 13x22x26

        def fuse_model(self, qat=False):
            torch.ao.quantization.fuse_modules(self, [["a", "a_relu"]], inplace=True)

    torch.manual_seed(seed)
    return quantize_ptq(Net(), scheme, torch.randn(64, *CAT_SHAPE[1:]) * 1.5), torch.randn(*CAT_SHAPE)


@pytest.mark.parametrize("scheme", ["per_tensor", "per_channel"])
def test_cat_bit_exact(scheme, tmp_path):
    qmodel, example = make_cat_model(scheme, seed=51 if scheme == "per_tensor" else 52)
    graph = import_torch_model(qmodel, example, f"m7cat_{scheme}")
    compiled, lib, source = build(copy.deepcopy(graph), tmp_path, f"m7cat_{scheme}")
    cats = [compiled.kernels[id(op)] for op in compiled.graph.ops if op.kind == "cat"]
    assert len(cats) == 3 and all(k.provider == "m7" for k in cats), providers_of(compiled)
    text = "".join(k.source for k in cats)
    assert "requantized through its table" in text and "copied" in text   # both paths
    assert_bit_exact_and_m7_clean(qmodel, graph, lib, source, CAT_SHAPE, 17, tmp_path, on_m7=True)
