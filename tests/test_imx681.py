"""IMX681 target: stateful models frame by frame, configuration, summary.txt, memory, images.

Multi-frame bit-exactness: the C frame API (generated C, built here with gcc, through
hostlib.frames), the numpy reference (nnc.frontend.state.run_graph) and torch itself (the
quantized eager model, its state evolving) agree on every output of every frame.
"""
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import ROOT

from nnc.errors import NncError
from nnc import toolchains
from nnc.outdir import MARKER
from nnc.arith import torch_quantize
from nnc.frontend.state import import_stateful_model, run_torch_sequences
from nnc.targets.imx681 import ConfigError, compile_model, parse_config, reference_sequences
from nnc.targets.imx681.image import read_params_image
from nnc.targets.imx681.summary import parse_summary

torch = pytest.importorskip("torch")

HOST_CFLAGS = [*toolchains.HOST_CFLAGS, "-fPIC"]
SAMPLE_CFG = os.path.join(ROOT, "firmware", "imx681", "configs",
                          "imx681_pytorch_classification_with_state_i2c.cfg")
BASE = {"MODEL": "stateful", "OUTPUT_DIRECTORY": "out", "OUTPUT_MODE": "C_SOURCES",
        "PARAMS_START": "0x00000000", "PARAMS_SIZE": "0x00040000",
        "STATIC_DATA_START": "0x00290000", "STATIC_DATA_SIZE": "0x00010000",
        "SCRATCH_RAM_START": "0x002A0000", "SCRATCH_RAM_SIZE": "0x00020000"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def write_cfg(directory, name="test.cfg", drop=(), extra_lines=(), **keys):
    directory.mkdir(parents=True, exist_ok=True)
    values = dict(BASE, OUTPUT_DIRECTORY=str(directory / "out"))
    values.update({k: str(v) for k, v in keys.items()})
    lines = ["# written by tests/test_imx681.py"]
    lines += [f"{k} {v}" for k, v in values.items() if k not in drop]
    lines += list(extra_lines)
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def build_frames_library(package, directory):
    """Write the package's C sources, compile them with the host flags, load the frame API."""
    from hostlib.frames import load_frames
    directory.mkdir(parents=True, exist_ok=True)
    c = directory / f"{package.prefix}.c"
    h = directory / f"{package.prefix}.h"
    c.write_text(package.compiled.source)
    h.write_text(package.compiled.header)
    so = directory / f"lib{package.prefix}.so"
    subprocess.run([toolchains.HOST_CC, *HOST_CFLAGS, "-shared", "-I", str(directory), "-o", str(so), str(c), "-lm"],
                   check=True)
    return load_frames(str(so), str(h))


def frames_of(lib, frames):
    """S sequences x T frames through the C frame API, each sequence from reset_state()."""
    out = []
    for seq in frames:
        lib.reset_state()
        out.append(lib.run_sequence(seq))
    return np.stack(out)


class SignedStateModel(torch.nn.Module):
    """Seed 000's SampleModel pattern with a state that goes up AND down (no ReLU before the add),
    so that long sequences keep exercising the state arithmetic instead of saturating."""

    def __init__(self):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub
        nn = torch.nn
        self.quant = QuantStub()
        self.conv1 = nn.Conv2d(1, 4, 3, 1, 1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 1, 3, 1, 1)
        self.dequant_1 = DeQuantStub()
        self.quant_2 = QuantStub()
        self.conv3 = nn.Conv2d(1, 4, 3, 2, 1)
        self.relu3 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 8 * 8, 10)
        self.dequant_2 = DeQuantStub()
        self.state = torch.zeros(32, 32)

    def forward(self, x):
        x = self.quant(x)
        x = self.conv2(self.relu1(self.conv1(x)))
        x = self.dequant_1(x)
        x = torch.add(x, self.state)          # state = x + state
        x = self.quant_2(x)
        self.state = x.dequantize()
        x = self.pool(self.relu3(self.conv3(x)))
        x = torch.flatten(x, 1)
        return self.dequant_2(self.fc(x))


def signed_frames(rng, n_seq, n_steps):
    """Float frames whose mean alternates in sign from sequence to sequence and frame to frame."""
    base = rng.random((n_seq, n_steps, 1, 32, 32), dtype=np.float32)
    sign = np.where(rng.random((n_seq, n_steps, 1, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
    return (0.5 + sign * (base - 0.5) * 0.9 + 0.1 * sign).clip(0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def signed_model():
    """(quantized model, float model, example): PTQ calibrated on 100-frame sequences."""
    import copy
    from torch.ao import quantization as tq
    torch.manual_seed(681)
    torch.backends.quantized.engine = "qnnpack"
    fmodel = SignedStateModel().eval()
    with torch.no_grad():       # a zero-mean update: the state drifts both ways
        fmodel.conv2.weight -= fmodel.conv2.weight.mean()
        fmodel.conv2.bias.zero_()
    float_model = copy.deepcopy(fmodel)
    m = copy.deepcopy(fmodel)
    tq.fuse_modules(m, [["conv1", "relu1"], ["conv3", "relu3"]], inplace=True)
    # min/max observers: fast, and the state's range covers every calibration frame
    m.qconfig = tq.QConfig(activation=tq.MinMaxObserver.with_args(dtype=torch.quint8),
                           weight=tq.default_weight_observer)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare(m, inplace=True)
        with torch.no_grad():
            frames = signed_frames(rng, 16, 100)
            m.state = torch.zeros(16, 1, 32, 32)
            for t in range(frames.shape[1]):
                m(torch.from_numpy(frames[:, t]))
        tq.convert(m, inplace=True)
    m.state = torch.zeros(32, 32)
    return m, float_model, torch.rand(1, 1, 32, 32)


@pytest.fixture(scope="module")
def zoo_model():
    from models.registry import get
    spec = get("stateful")
    try:
        qmodel = spec.load_quantized()
    except (FileNotFoundError, ValueError) as e:
        pytest.fail(f"zoo model 'stateful' not available: {e}")
    return spec, qmodel, spec.example_input()


@pytest.fixture(scope="module")
def zoo_auto(zoo_model, tmp_path_factory):
    spec, qmodel, example = zoo_model
    d = tmp_path_factory.mktemp("zoo_auto")
    pkg = compile_model(qmodel, example, parse_config(write_cfg(d)))
    return pkg, build_frames_library(pkg, d / "lib")


def compile_cfg(model, example, directory, **keys):
    log = []
    pkg = compile_model(model, example, parse_config(write_cfg(directory, **keys)), log=log.append)
    return pkg, log


# ---------------------------------------------------------------------------------------------
# multi-frame bit-exactness
# ---------------------------------------------------------------------------------------------
def test_zoo_stateful_c_frames_equal_torch_and_reference(zoo_model, zoo_auto):
    """40 sequences x 30 frames of real digits (1200 frames): C == reference == torch, every
    output of every frame; the state buffer agrees with the reference after every sequence."""
    spec, qmodel, _ = zoo_model
    pkg, lib = zoo_auto
    low = pkg.lowered
    qin = low.frame_inputs[0].qparams
    frames = torch_quantize(spec.calibration_inputs(1200).numpy(), qin).reshape(40, 30, 1, 32, 32)
    expected = run_torch_sequences(qmodel, frames, qin, low.graph.meta["states"])
    reference = reference_sequences(low, frames)
    got = frames_of(lib, frames)
    assert got.shape == expected.shape == (40, 30, 10)
    assert int(np.count_nonzero(reference != expected)) == 0, "reference != torch"
    mismatches = int(np.count_nonzero(got != expected))
    assert mismatches == 0, f"{mismatches} of {got.size} outputs differ from torch"
    # The state really carries information: frame t's output depends on the frames before it.
    # frame 5 right after a reset gives other outputs than frame 5 of its sequence
    assert np.count_nonzero(frames_of(lib, frames[:, 5:6])[:, 0] != got[:, 5]) > 0


def test_signed_state_1000_frames_bit_exact_and_follow_float(signed_model, tmp_path):
    """10 sequences x 100 frames with a state that rises and falls: C == reference == torch on
    every frame; the state stays inside its quantization range (not saturated, so every frame
    tests the arithmetic) and the outputs follow the float model within quantization error."""
    qmodel, float_model, example = signed_model
    pkg, _ = compile_cfg(qmodel, example, tmp_path, MODEL="test_model")
    lib = build_frames_library(pkg, tmp_path / "lib")
    low = pkg.lowered
    qin = low.frame_inputs[0].qparams
    real = signed_frames(np.random.default_rng(7), 10, 100)
    frames = torch_quantize(real, qin)
    expected = run_torch_sequences(qmodel, frames, qin, low.graph.meta["states"])
    reference = reference_sequences(low, frames)
    states = []
    got = []
    for seq in frames:
        lib.reset_state()
        out = []
        for f in seq:
            out.append(lib.run(f))
            states.append(lib.state())
        got.append(np.stack(out))
    got = np.stack(got)
    assert got.size == 10 * 100 * 10
    assert int(np.count_nonzero(reference != expected)) == 0
    assert int(np.count_nonzero(got != expected)) == 0, "C frame API differs from torch"
    states = np.stack(states)
    saturated = np.mean((states == -128) | (states == 127))
    assert saturated < 0.05, f"{saturated:.1%} of state values saturated: a weak test"
    assert len(np.unique(states)) > 100
    # float model, float state, same frames
    float_model.state = torch.zeros(10, 1, 32, 32)
    with torch.no_grad():
        fl = np.stack([float_model(torch.from_numpy(real[:, t])).numpy() for t in range(100)], axis=1)
    qo = low.model_outputs[0].qparams
    deq = (got.astype(np.float32) - qo.zero_point) * qo.scale
    err = np.abs(deq - fl)
    assert np.mean(deq.argmax(-1) == fl.argmax(-1)) > 0.9
    assert err.mean() < 4 * qo.scale, f"mean error {err.mean():g} vs output scale {qo.scale:g}"


def test_reset_state_restarts_the_sequence_exactly(signed_model, tmp_path):
    qmodel, _, example = signed_model
    pkg, _ = compile_cfg(qmodel, example, tmp_path)
    lib = build_frames_library(pkg, tmp_path / "lib")
    qin = pkg.lowered.frame_inputs[0].qparams
    frames = torch_quantize(signed_frames(np.random.default_rng(3), 1, 25)[0], qin)
    initial = lib.state().copy()
    assert np.array_equal(initial, pkg.lowered.persistent[0].initial.ravel())
    first = lib.run_sequence(frames)
    after = lib.state()
    assert not np.array_equal(after, initial)
    continued = lib.run_sequence(frames)           # no reset: the state carries on
    assert np.any(continued != first)
    lib.reset_state()
    assert np.array_equal(lib.state(), initial)
    again = lib.run_sequence(frames)
    assert np.array_equal(again, first)
    assert np.array_equal(lib.state(), after)


# ---------------------------------------------------------------------------------------------
# explicit buffer IDs: the seed's two-step workflow
# ---------------------------------------------------------------------------------------------
def _state_ids_from_summary(text):
    """The seed's recipe: the ADDSUB that takes the state; its 2nd input is the read, its
    output the write."""
    block = re.search(r"OPERATION \d+: ADDSUB.*?Est\. Processing Time", text, re.S).group(0)
    ins = block.split("  Inputs:")[1].split("  Outputs:")[0]
    outs = block.split("  Outputs:")[1]
    rows = lambda part: [int(l.split()[0]) for l in part.splitlines() if re.match(r"^    \d", l)]
    return rows(ins)[1], rows(outs)[0]


def test_two_step_explicit_ids_equal_auto_detection(zoo_model, zoo_auto, tmp_path):
    spec, qmodel, example = zoo_model
    auto_pkg, auto_lib = zoo_auto
    # step 1: detection off, no keys: two buffers, a warning that the state will not persist
    before, log = compile_cfg(qmodel, example, tmp_path / "s1", MODEL_STATE_AUTO_DETECT="OFF")
    assert any("will NOT persist" in w for w in log)
    assert "will NOT persist" in before.summary
    read_id, write_id = _state_ids_from_summary(before.summary)
    rows = parse_summary(before.summary)
    r, w = rows[read_id], rows[write_id]
    assert r["Location"] == "STATIC_DATA" and w["Location"] == "SCRATCH_RAM"
    assert r["Address"] != w["Address"]
    assert (r["QS[0]"], r["QZ[0]"]) == ("1.00000", "0")          # the seed's "before" picture
    assert (r["QS[0]"], r["QZ[0]"]) != (w["QS[0]"], w["QZ[0]"])
    # step 2: the IDs from summary.txt, detection still off
    after, log = compile_cfg(qmodel, example, tmp_path / "s2", MODEL_STATE_AUTO_DETECT="OFF",
                             MODEL_STATE_READ_BUFFER_ID=read_id, MODEL_STATE_WRITE_BUFFER_ID=write_id)
    assert not log
    rows = parse_summary(after.summary)
    r, w = rows[read_id], rows[write_id]
    assert r["Location"] == w["Location"] == "STATIC_DATA"
    assert r["Address"] == w["Address"]
    assert (r["QS[0]"], r["QZ[0]"]) == (w["QS[0]"], w["QZ[0]"])
    # ... identical to automatic detection: same IDs, same summary rows, same C code
    auto_rows = parse_summary(auto_pkg.summary)
    assert auto_rows == rows
    assert after.compiled.source == auto_pkg.compiled.source
    assert after.compiled.header == auto_pkg.compiled.header
    # ... and the same frames
    lib = build_frames_library(after, tmp_path / "lib")
    qin = after.lowered.frame_inputs[0].qparams
    frames = torch_quantize(spec.calibration_inputs(200).numpy(), qin).reshape(8, 25, 1, 32, 32)
    assert np.array_equal(frames_of(lib, frames), frames_of(auto_lib, frames))


def test_detection_off_state_does_not_persist(zoo_model, tmp_path):
    """Without merging, every frame sees the initial state: like torch reset before each frame."""
    spec, qmodel, example = zoo_model
    pkg, _ = compile_cfg(qmodel, example, tmp_path, MODEL_STATE_AUTO_DETECT="OFF")
    lib = build_frames_library(pkg, tmp_path / "lib")
    qin = pkg.lowered.frame_inputs[0].qparams
    frames = torch_quantize(spec.calibration_inputs(40).numpy(), qin).reshape(40, 1, 1, 32, 32)
    each_reset = run_torch_sequences(qmodel, frames, qin, pkg.lowered.graph.meta["states"])[:, 0]
    lib.reset_state()
    got = lib.run_sequence(frames[:, 0])
    assert np.array_equal(got, each_reset)


def test_buffer_ids_are_stable(zoo_model, zoo_auto, tmp_path):
    spec, qmodel, example = zoo_model
    auto_pkg, _ = zoo_auto
    ids = lambda pkg: {t.name: pkg.lowered.ids[id(t)] for t in pkg.lowered.graph.tensors()}
    off, _ = compile_cfg(qmodel, example, tmp_path / "a", MODEL_STATE_AUTO_DETECT="OFF",
                         OUTPUT_MODE="I2C_IMAGES", MEMORY_ORDER="BIG_ENDIAN")
    assert ids(off) == ids(auto_pkg)
    again = compile_model(qmodel, example, parse_config(write_cfg(tmp_path / "a")))
    assert again.summary == auto_pkg.summary.replace(auto_pkg.config.path, again.config.path)


# ---------------------------------------------------------------------------------------------
# state ID errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("read, write, message", [
    (99, 4, "MODEL_STATE_READ_BUFFER_ID 99: no buffer has this ID"),
    (3, 77, "MODEL_STATE_WRITE_BUFFER_ID 77: no buffer has this ID"),
    (3, 5, "different shapes: read 3 is 1 x 32 x 32 x 1, write 5 is 1 x 16 x 16 x 8"),
    (3, 2, "is not computed from the read buffer 3"),
    (0, 4, "MODEL_STATE_READ_BUFFER_ID 0 is not a state read: it is buffer 0 (input0"),
    (3, 0, "MODEL_STATE_WRITE_BUFFER_ID 0 is not produced by any operation"),
    (3, 3, "are both 3"),
])
def test_bad_state_buffer_ids(zoo_model, tmp_path, read, write, message):
    spec, qmodel, example = zoo_model
    with pytest.raises(ConfigError) as e:
        compile_cfg(qmodel, example, tmp_path, MODEL_STATE_READ_BUFFER_ID=read,
                    MODEL_STATE_WRITE_BUFFER_ID=write)
    assert message in e.value.format()
    assert "test.cfg:" in e.value.format()      # where: the key's line


def test_read_without_write_key(tmp_path):
    with pytest.raises(ConfigError, match="MODEL_STATE_READ_BUFFER_ID is set but "
                                          "MODEL_STATE_WRITE_BUFFER_ID is not"):
        parse_config(write_cfg(tmp_path, MODEL_STATE_READ_BUFFER_ID=3))


# ---------------------------------------------------------------------------------------------
# configuration errors
# ---------------------------------------------------------------------------------------------
def test_unknown_key_reports_line_and_known_keys(tmp_path):
    path = write_cfg(tmp_path, extra_lines=["", "# comment", "MODEL_STATE_READ_BUFER_ID 27"])
    with pytest.raises(ConfigError) as e:
        parse_config(path)
    text = e.value.format()
    n = len(BASE) + 4        # header comment + keys + blank + comment + the bad line
    assert f"unknown key 'MODEL_STATE_READ_BUFER_ID' on line {n}" in text
    assert f"{path}:{n}" in text
    assert "known keys: MODEL, " in text and "MODEL_STATE_READ_BUFFER_ID" in text


def test_missing_required_key(tmp_path):
    with pytest.raises(ConfigError, match="missing required keys: OUTPUT_MODE, SCRATCH_RAM_SIZE"):
        parse_config(write_cfg(tmp_path, drop=("OUTPUT_MODE", "SCRATCH_RAM_SIZE")))


@pytest.mark.parametrize("key, value, message", [
    ("SCRATCH_RAM_SIZE", "lots", "bad value for SCRATCH_RAM_SIZE: 'lots' is not an integer"),
    ("OUTPUT_MODE", "USB", "bad value for OUTPUT_MODE: 'USB' is not one of C_SOURCES, I2C_IMAGES"),
    ("MODEL_STATE_AUTO_DETECT", "maybe", "'maybe' is not ON or OFF"),
    ("MEMORY_ORDER", "MIDDLE_ENDIAN", "is not one of LITTLE_ENDIAN, BIG_ENDIAN"),
    ("NETWORK_NAME", "9lives", "is not a C identifier"),
    ("PROCESSOR_CLOCK_MHZ", "-5", "is not a positive number"),
    ("PARAMS_START", "0x1FFFFFFFF", "is not a 32-bit value"),
])
def test_bad_values(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as e:
        parse_config(write_cfg(tmp_path, **{key: value}))
    assert message in e.value.format()
    assert re.search(r"test\.cfg:\d+", e.value.format())


def test_duplicate_key_and_missing_value(tmp_path):
    with pytest.raises(ConfigError, match=r"MODEL is given twice \(lines 2 and \d+\)"):
        parse_config(write_cfg(tmp_path, extra_lines=["MODEL lenet5"]))
    with pytest.raises(ConfigError, match="MEMORY_ORDER on line .* has no value"):
        parse_config(write_cfg(tmp_path, extra_lines=["MEMORY_ORDER   # nothing"]))


def test_overlapping_regions(tmp_path):
    with pytest.raises(ConfigError, match="memory regions STATIC_DATA .* and SCRATCH_RAM .* overlap"):
        parse_config(write_cfg(tmp_path, STATIC_DATA_SIZE="0x20000"))


def test_sample_config_parses():
    cfg = parse_config(SAMPLE_CFG)
    assert cfg["MODEL"] == "stateful" and cfg["OUTPUT_MODE"] == "I2C_IMAGES"
    assert cfg["MODEL_STATE_AUTO_DETECT"] is True


# ---------------------------------------------------------------------------------------------
# memory regions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("region, size", [("SCRATCH_RAM", 4096), ("PARAMS", 1000), ("STATIC_DATA", 512)])
def test_does_not_fit_names_region_needed_available(signed_model, tmp_path, region, size):
    qmodel, _, example = signed_model
    with pytest.raises(NncError) as e:
        compile_cfg(qmodel, example, tmp_path, **{f"{region}_SIZE": size})
    m = re.search(rf"does not fit in {region}: it needs (\d+) bytes, (\d+) bytes are available",
                  e.value.format())
    assert m, e.value.format()
    assert int(m.group(1)) > size == int(m.group(2))


def test_addresses_inside_regions_and_state_shared(zoo_auto):
    pkg, _ = zoo_auto
    m = pkg.memory
    for p in m.placed.values():
        start, size = m.regions[p.region]
        assert start <= p.address and p.address + p.size <= start + size, p
    st = pkg.lowered.persistent[0]
    assert m.address_of(st.read) == m.address_of(st.write) == m.regions["STATIC_DATA"][0]
    assert st.read.qparams == st.write.qparams
    # arena buffers that are live at the same time never overlap
    plan = pkg.compiled.plan
    for a in plan.buffers:
        for b in plan.buffers:
            if a is not b and a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset


# ---------------------------------------------------------------------------------------------
# memory images
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["LITTLE_ENDIAN", "BIG_ENDIAN"])
def test_params_image_round_trip(zoo_model, tmp_path, order):
    spec, qmodel, example = zoo_model
    pkg, _ = compile_cfg(qmodel, example, tmp_path, OUTPUT_MODE="I2C_IMAGES", MEMORY_ORDER=order)
    name = pkg.config.network_name
    params = pkg.files[f"{name}_params.bin"]
    static = pkg.files[f"{name}_static_data.bin"]
    img = read_params_image(params)
    assert img["crc_ok"] and img["big_endian"] == (order == "BIG_ENDIAN")
    assert img["size"] == len(params) == pkg.memory.used["PARAMS"]
    rows = parse_summary(pkg.summary)
    for b in img["buffers"]:
        assert f"0x{b['address']:x}" == rows[b["id"]]["Address"]
    low = pkg.lowered
    for op, rec in zip(low.graph.ops, img["ops"]):
        assert rec["inputs"] == [low.ids[id(t)] for t in op.inputs]
        if "weight" in op.params:
            assert np.array_equal(rec["consts"]["weight"], op.params["weight"].ravel())
            assert np.array_equal(rec["consts"]["bias"], op.params["bias"].ravel())
            assert np.array_equal(rec["consts"]["multiplier"], op.params["multiplier"].ravel())
    st = low.persistent[0]
    off = pkg.memory.address_of(st.read) - pkg.memory.regions["STATIC_DATA"][0]
    assert static[off:off + st.read.nbytes] == st.initial.astype(np.int8).tobytes()
    assert set(pkg.files) == {"summary.txt", "manifest.json", "images.txt", f"{name}_params.bin",
                              f"{name}_static_data.bin"}


# ---------------------------------------------------------------------------------------------
# frontend
# ---------------------------------------------------------------------------------------------
def test_detection_leaves_the_model_untouched(signed_model):
    qmodel, _, example = signed_model
    before = qmodel.state
    graph = import_stateful_model(qmodel, example, "t")
    assert qmodel.state is before and isinstance(qmodel.state, torch.Tensor)
    (st,) = graph.meta["states"]
    assert st.attribute == "state" and st.read.shape == st.write.shape == (1, 1, 32, 32)
    assert graph.inputs[-1] is st.read and graph.outputs[-1] is st.write


def test_state_stored_in_float_is_an_error(signed_model):
    qmodel, _, example = signed_model

    class FloatState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.state = torch.zeros(32, 32)

        def forward(self, x):
            m = self.inner
            x = m.dequant_1(m.conv2(m.conv1(m.quant(x))))
            s = torch.add(x, self.state)
            self.state = s                      # the float sum: cannot be int8-exact
            return m.dequant_2(m.quant_2(s))

    with pytest.raises(NncError, match="stored in float"):
        import_stateful_model(FloatState(qmodel), example, "t")


def test_data_dependent_branch_is_an_error(signed_model):
    qmodel, _, example = signed_model

    class Branchy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.sum() > 0:
                x = x * 2
            return self.inner(x)

    with pytest.raises(NncError, match="data-dependent control flow"):
        import_stateful_model(Branchy(qmodel), example, "t")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "imx681_compile.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_cli_help_and_keys():
    r = run_cli("--help")
    assert r.returncode == 0 and "--config FILE" in r.stdout
    r = run_cli("--keys")
    assert r.returncode == 0 and "MODEL_STATE_WRITE_BUFFER_ID" in r.stdout


def test_cli_config_error_exit_code_no_traceback_nothing_written(tmp_path):
    out = tmp_path / "out"
    path = write_cfg(tmp_path, extra_lines=["BOGUS_KEY 1"])
    r = run_cli("--config", path)
    assert r.returncode == 2
    assert "error: unknown key 'BOGUS_KEY'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
    r = run_cli("--config", str(tmp_path / "missing.cfg"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_cli_compile_then_too_small_keeps_previous_output(tmp_path):
    """A good compile writes the package; a failing one (does not fit) exits 2 without a
    traceback and leaves the previous output directory exactly as it was."""
    out = tmp_path / "out"
    path = write_cfg(tmp_path, OUTPUT_MODE="I2C_IMAGES")
    r = run_cli("--config", path)
    assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"] + [MARKER]) == files     # the marker: nnc made this folder
    assert manifest["states"][0]["read_buffer_id"] == 3
    before = {f: (out / f).read_bytes() for f in files}
    bad = write_cfg(tmp_path, name="small.cfg", OUTPUT_MODE="C_SOURCES", SCRATCH_RAM_SIZE=2048)
    r = run_cli("--config", bad)
    assert r.returncode == 2
    assert "does not fit in SCRATCH_RAM: it needs" in r.stderr and "Traceback" not in r.stderr
    assert {f: (out / f).read_bytes() for f in sorted(os.listdir(out))} == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".out")]


# ---------------------------------------------------------------------------------------------
# the runtime that executes the I2C memory images (firmware/imx681/runtime)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runtime_so(tmp_path_factory):
    d = tmp_path_factory.mktemp("runtime")
    so = d / "libimx681_runtime.so"
    src = os.path.join(ROOT, "firmware", "imx681", "runtime", "imx681_runtime.c")
    subprocess.run([toolchains.HOST_CC, *HOST_CFLAGS, "-Wshadow", "-Wconversion", "-Wno-sign-conversion",
                    "-shared", "-o", str(so), src, "-lm"], check=True)
    return str(so)


@pytest.mark.parametrize("order", ["LITTLE_ENDIAN", "BIG_ENDIAN"])
def test_i2c_images_run_bit_exact_on_the_runtime(zoo_model, runtime_so, tmp_path, order):
    """The sample configuration's memory images, executed by the sensor runtime: 10 x 30 frames
    equal the reference (and so torch) exactly; reset_state() restores the STATIC_DATA image."""
    from hostlib.frames import load_images
    spec, qmodel, example = zoo_model
    cfg = parse_config(SAMPLE_CFG, {"MEMORY_ORDER": order, "OUTPUT_DIRECTORY": str(tmp_path / "pkg")})
    pkg = compile_model(qmodel, example, cfg)
    model = load_images(runtime_so, pkg.write(str(tmp_path / "pkg")))
    low = pkg.lowered
    qin = low.frame_inputs[0].qparams
    frames = torch_quantize(spec.calibration_inputs(300).numpy(), qin).reshape(10, 30, 1, 32, 32)
    expected = reference_sequences(low, frames)
    got = frames_of(model, frames)
    assert int(np.count_nonzero(got != expected)) == 0
    assert np.array_equal(model.state(), reference_state_after(low, frames[-1]))
    model.reset_state()
    assert np.array_equal(model.state(), low.persistent[0].initial.ravel())


def reference_state_after(low, seq):
    from nnc.targets.imx681 import ReferenceFrames
    ref = ReferenceFrames(low)
    for f in seq:
        ref.run(f)
    return ref.states[0].ravel()


class CatModel(torch.nn.Module):
    """conv+ReLU, a quantized concatenation with the input (requantized), average pooling,
    a fully connected layer: the runtime's cat/avgpool/dense paths."""

    def __init__(self):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub
        nn = torch.nn
        self.quant = QuantStub()
        self.conv = nn.Conv2d(1, 3, 3, 1, 1)
        self.relu = nn.ReLU()
        self.cat = nn.quantized.FloatFunctional()
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 10)
        self.dequant = DeQuantStub()

    def forward(self, x):
        x = self.quant(x)
        x = self.cat.cat([self.relu(self.conv(x)), x], dim=1)
        return self.dequant(self.fc(torch.flatten(self.pool(x), 1)))


def _quantized_cat_model():
    from torch.ao import quantization as tq
    torch.manual_seed(5)
    m = CatModel().eval()
    tq.fuse_modules(m, [["conv", "relu"]], inplace=True)
    m.qconfig = tq.get_default_qconfig("qnnpack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tq.prepare(m, inplace=True)
        with torch.no_grad():
            m(torch.rand(64, 1, 16, 16) * 2 - 0.5)
        tq.convert(m, inplace=True)
    return m, torch.rand(1, 1, 16, 16)


@pytest.mark.parametrize("name", ["lenet5", "residual_cnn", "cat"])
def test_stateless_models_on_both_paths(runtime_so, tmp_path, name):
    """Models without a state: the C frame API and the image runtime both equal the numpy
    reference (conv, per-channel weights, ReLU, max/avg pool, qnnpack add, cat, reshape, dense)."""
    from hostlib.frames import load_images
    from nnc import reference
    from conftest import edge_and_random_inputs
    if name == "cat":
        qmodel, example = _quantized_cat_model()
    else:
        from models.registry import get
        spec = get(name)
        try:
            qmodel = spec.load_quantized()
        except (FileNotFoundError, ValueError) as e:
            pytest.fail(str(e))
        example = spec.example_input()
    pkg, log = compile_cfg(qmodel, example, tmp_path, MODEL=name, OUTPUT_MODE="I2C_IMAGES")
    assert not pkg.lowered.persistent and not log
    low = pkg.lowered
    x = edge_and_random_inputs(low.frame_inputs[0].shape, 60, seed=2)
    expected = reference.run(low.graph, [x])[0]
    images = load_images(runtime_so, pkg.write(str(tmp_path / "pkg")))
    c_lib = build_frames_library(pkg, tmp_path / "lib")
    assert np.array_equal(images.run_sequence(x), expected)
    assert np.array_equal(c_lib.run_sequence(x), expected)


def test_damaged_image_is_refused(zoo_model, runtime_so, tmp_path):
    from hostlib import HostLibError
    from hostlib.frames import load_images
    spec, qmodel, example = zoo_model
    pkg, _ = compile_cfg(qmodel, example, tmp_path, OUTPUT_MODE="I2C_IMAGES")
    out = pkg.write(str(tmp_path / "pkg"))
    path = os.path.join(out, f"{pkg.config.network_name}_params.bin")
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0x40                            # one bit of the last weight
    open(path, "wb").write(bytes(data))
    with pytest.raises(HostLibError, match="imx681_rt_init failed with -3"):
        load_images(runtime_so, out)
