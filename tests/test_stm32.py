"""STM32F746G-DISCO firmware (firmware/riot) on the emulated Cortex-M7 (QEMU mps2-an500).

- LeNet-5, 1000 inputs over the serial line (digits, random images, edge and random int8
  tensors): every output equals the host library and torch qnnpack.
- Every other stateless zoo model that fits the board (the registry's fits_stm32, checked against
  the link of every model): 1000 int8 inputs (-128, 127, 0, zero point, checkerboard, random) over
  the serial line, zero mismatching output elements against torch qnnpack and the host library
  built from the same C.
- Bad frames (garbage, short, oversize, bad checksum, bad version/type/length, bad text) each
  get an error reply and the next good frame is answered correctly.
- `flash` without a probe fails with one clear message; a model that does not fit fails the build
  with the numbers and leaves no fw.elf; the F746 firmware has no double-precision instructions.
"""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from nnc.cli import serial_client as sc
from conftest import compile_host_library, edge_and_random_inputs  # noqa: E402
from fixtures.builds import scons  # noqa: E402,F401  (the repository's SCons, one run at a time)
from fixtures import signal_at  # noqa: E402
from nnc.frontend.torch_eager import quantize_like_torch  # noqa: E402
from nnc.reports.regression import record_test_result  # noqa: E402

MODEL = "lenet5"
NO_PROBE = "no ST-LINK probe found (or no permission: udev rules)"

@pytest.fixture(autouse=True)
def arm_tools():
    """`./scons host test` installs these; their absence is a failure, not a skip."""
    if not (shutil.which("qemu-system-arm") and shutil.which("arm-none-eabi-gcc")):
        pytest.fail("needs qemu-system-arm and arm-none-eabi-gcc (apt-get install --no-install-recommends "
                    "qemu-system-arm gcc-arm-none-eabi libnewlib-arm-none-eabi)")




@pytest.fixture(scope="module")
def lenet_build():
    elf = os.path.join(ROOT, "build", "mps2-an500", MODEL, "fw.elf")
    so = os.path.join(ROOT, "build", "host", MODEL, f"lib{MODEL}.so")
    r = scons("board=mps2-an500", f"model={MODEL}", f"build/mps2-an500/{MODEL}/fw.elf",
              f"build/host/{MODEL}/lib{MODEL}.so")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # build/host/<model>/lib<model>.so is the portable C reference, whatever the board's kernels
    return {"elf": elf, "so": so, "header": os.path.join(ROOT, "build", "gen", "c", MODEL, f"tvmgen_{MODEL}.h")}


@pytest.fixture(scope="module")
def host(lenet_build):
    from hostlib import load
    return load(lenet_build["so"], lenet_build["header"])


@contextlib.contextmanager
def serving(proc, timeout=30):
    """A connection to the firmware process `proc` starts (QEMU, native64); it must leave with
    status 0 after the EXIT request."""
    fw = sc.Firmware(proc.start(), timeout=timeout)
    proc.connected()
    try:
        yield fw
        fw.exit(0)
        assert proc.wait() == 0
    finally:
        fw.close()
        proc.stop()


def emulated(elf, timeout=30):
    """The firmware under QEMU (-icount: exact instruction counts)."""
    # the module-scoped session outlives the zoo tests between its users: 20 minutes were not
    # enough with two test workers on a loaded 2-core machine (QEMU was stopped mid-module)
    return serving(sc.Qemu(elf, time_limit=3600), timeout)


@pytest.fixture(scope="module")
def fw(lenet_build):
    with emulated(lenet_build["elf"]) as fw:
        yield fw


def torch_int8_outputs(q, port, model=MODEL):
    """torch qnnpack on int8 inputs (the zoo's quantized model)."""
    from models.registry import get
    from nnc.frontend.torch_eager import run_torch_int8
    qmodel = get(model).load_quantized()
    return np.concatenate([run_torch_int8(qmodel, [q[i:i + 250]], [port])[0] for i in range(0, len(q), 250)])


def torch_quantize(x, port):
    return quantize_like_torch(x, port)


def test_info(fw, host):
    info = fw.info()
    assert info["model"] == MODEL and info["board"] == "mps2-an500"
    assert info["input_size"] == 784 and info["output_size"] == 10
    assert info["cost_unit"] == sc.COST_TICKS and info["hz"] == 25_000_000
    assert info["input_scale"] == np.float32(host.inputs[0].scale)
    assert info["input_zero_point"] == host.inputs[0].zero_point


def test_1000_inputs_equal_host_library_and_torch(fw, host):
    costs, tensors = send_1000_inputs_and_compare(fw, host)
    # costs: deterministic instruction counts (-icount), of the order of the bench figure
    instr = [sc.instructions(c, 25_000_000, sc.QEMU_ICOUNT_SHIFT) for c in costs]
    assert 100_000 < min(instr) <= max(instr) < 20_000_000
    r1, r2 = fw.infer_i8(tensors[0]), fw.infer_i8(tensors[0])
    assert r1["cost"] == r2["cost"] or abs(r1["cost"] - r2["cost"]) <= 2   # +-1 tick at 3.2 ticks/instruction
    # one cost per layer of the firmware's own model (m7 kernels fuse conv+pool: fewer layers than
    # the portable reference library)
    fw_header = open(os.path.join(ROOT, "build", "gen", "m7", MODEL, f"tvmgen_{MODEL}.h")).read()
    assert len(r1["layers"]) == int(re.search(rf"TVMGEN_{MODEL.upper()}_NUM_LAYERS (\d+)", fw_header).group(1))


def send_1000_inputs_and_compare(fw, host):
    """LeNet-5 firmware (any board): 600 pixel images (the held-out digits, then random) and 400
    int8 tensors (edge values, then random) over the serial line; every output must equal the host
    library's and torch qnnpack's. Returns (costs, tensors)."""
    from models.data import image_data
    shape = host.inputs[0].shape
    _, held = image_data("digits", 28)
    pixels = np.rint(held.x.reshape(len(held), -1) * 255.0).astype(np.uint8)
    rng = np.random.default_rng(2024)
    n_pix = 600
    pixels = np.concatenate([pixels, rng.integers(0, 256, (n_pix - len(pixels), 784), dtype=np.uint8)])
    edge = np.stack([np.full(784, -128), np.full(784, 127), np.zeros(784),
                     np.where(np.indices((28, 28)).sum(0).ravel() % 2, 127, -128)]).astype(np.int8)
    tensors = np.concatenate([edge, rng.integers(-128, 128, (1000 - n_pix - len(edge), 784), dtype=np.int8)])

    # what the firmware must compute from pixels: torch's own quantization of ToTensor's p/255
    q_pix = torch_quantize(pixels.astype(np.float32) / np.float32(255.0), host.inputs[0])
    assert np.array_equal(q_pix, sc.pixels_to_tensor(pixels, fw.info()))

    got, costs = [], []
    t0 = time.monotonic()
    for p in pixels:
        r = fw.infer_u8(p)
        got.append(r["output"])
        costs.append(r["cost"])
    for t in tensors:
        r = fw.infer_i8(t)
        got.append(r["output"])
        costs.append(r["cost"])
    elapsed = time.monotonic() - t0
    got = np.stack(got)
    q = np.concatenate([q_pix, tensors]).reshape((-1,) + tuple(shape[1:]))
    assert len(got) == 1000

    expected_host = host.run(q).reshape(1000, -1)
    bad = np.flatnonzero((got != expected_host).any(axis=1))
    assert len(bad) == 0, f"{len(bad)} of 1000 inputs differ from the host library (first: {bad[:10]})"
    expected_torch = torch_int8_outputs(q, host.inputs[0]).reshape(1000, -1)
    bad = np.flatnonzero((got != expected_torch).any(axis=1))
    assert len(bad) == 0, f"{len(bad)} of 1000 inputs differ from torch qnnpack (first: {bad[:10]})"
    print(f"1000 inferences over the serial line in {elapsed:.1f} s")
    return costs, tensors


def good_frame_works(fw, host, seed):
    t = np.random.default_rng(seed).integers(-128, 128, 784, dtype=np.int8)
    r = fw.infer_i8(t)
    assert np.array_equal(r["output"], host.run(t.reshape(host.inputs[0].shape))[0].ravel())


def frame_error(fw, data, timeout=10):
    fw.send_raw(data)
    ftype, payload = fw.read_frame(timeout)
    assert ftype == sc.T_ERROR, f"expected an error frame, got type {ftype:#x}"
    return sc.parse_error(payload)


BAD_FRAMES = ["garbage", "short", "oversize", "bad_checksum", "bad_version", "bad_type", "bad_length",
              "magic_then_garbage"]


@pytest.mark.parametrize("case", BAD_FRAMES)
def test_bad_frame_gets_error_and_next_frame_works(fw, host, case):
    bad_frame_then_good_frame(fw, host, case)


def bad_frame_then_good_frame(fw, host, case):
    """One bad frame of LeNet-5's firmware (any board): the error reply the protocol promises, then
    a good frame answered correctly."""
    good = sc.make_frame(sc.T_INFER_I8, bytes(784))
    if case == "garbage":
        junk = b"\x00\x13hello garbage \xfe\xff"
        e = frame_error(fw, junk)
        assert e.code == 1 and e.detail == len(junk)
    elif case == "short":
        e = frame_error(fw, good[:100])
        assert e.code == 7
    elif case == "oversize":
        body = bytes([1, sc.T_INFER_I8]) + (2000).to_bytes(2, "little") + bytes(2000)
        e = frame_error(fw, sc.MAGIC + body + sc.crc16(body).to_bytes(2, "little"))
        assert e.code == 4 and e.detail == 2000
    elif case == "bad_checksum":
        e = frame_error(fw, good[:-1] + bytes([good[-1] ^ 0x55]))
        assert e.code == 6
    elif case == "bad_version":
        e = frame_error(fw, sc.make_frame(sc.T_INFER_I8, bytes(784), version=9))
        assert e.code == 2
    elif case == "bad_type":
        e = frame_error(fw, sc.make_frame(0x42, b"abc"))
        assert e.code == 3
    elif case == "bad_length":
        e = frame_error(fw, sc.make_frame(sc.T_INFER_I8, bytes(100)))
        assert e.code == 5 and e.detail == 100
    elif case == "magic_then_garbage":
        e = frame_error(fw, b"\xa5garbage")
        assert e.code == 1
    assert e.message, "error replies carry a readable message"
    good_frame_works(fw, host, seed=len(case))


def test_text_mode(fw, host):
    from models.data import image_data
    _, held = image_data("digits", 28)
    px = np.rint(held.x[0].ravel() * 255.0).astype(np.uint8)
    r_text = fw.infer_text(px)
    r_bin = fw.infer_u8(px)
    assert np.array_equal(r_text["output"], r_bin["output"]) and r_text["class"] == r_bin["class"]
    assert r_text["cost"] > 0
    # a person's typo: an error line, and the firmware keeps serving
    fw.send_raw(b"12 7 x 3\n")
    assert text_reply(fw).startswith("error unexpected character (2 numbers read; send 784 pixel values")
    fw.send_raw(b"300 ")
    assert text_reply(fw).startswith("error value > 255")
    good_frame_works(fw, host, seed=99)


def text_reply(fw, timeout=10):
    """The next result or error line of text mode (the boot banner and other lines skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        line = fw.read_line(deadline)
        if line.startswith(("result ", "error ")):
            return line


def text_line(pixels) -> bytes:
    return (" ".join(str(int(v)) for v in pixels) + "\n").encode()


def test_text_line_is_one_image(fw, host):
    """Too many or too few numbers make the line an error; nothing carries over to the next
    text line or binary frame, also when the frame follows at once."""
    from models.data import image_data
    _, held = image_data("digits", 28)
    a, b = (np.rint(held.x[i].ravel() * 255.0).astype(np.uint8) for i in (0, 1))
    expected_b = fw.infer_u8(b)["output"]
    for line, words in ((text_line(list(a) + [7]), "error too many numbers (785 numbers read"),
                        (text_line(list(a) + list(a)), "error too many numbers (1568 numbers read"),
                        (text_line(a[:-1]), "error too few numbers (783 numbers read"),
                        (b"5\r\n", "error too few numbers (1 numbers read")):
        fw.send_raw(line)
        assert text_reply(fw).startswith(words)
        r = fw.infer_text(b)
        assert np.array_equal(r["output"], expected_b), f"after {words!r} the next line was not image b"
    t = np.random.default_rng(5).integers(-128, 128, 784, dtype=np.int8)
    expected_t = host.run(t.reshape(host.inputs[0].shape))[0].ravel()
    # a bad line and a binary frame sent together: the error line, then the frame's reply
    fw.send_raw(text_line(list(a) + [7]) + sc.make_frame(sc.T_INFER_I8, t.tobytes()))
    assert text_reply(fw).startswith("error too many numbers (785 numbers read")
    assert np.array_equal(sc.parse_infer(fw.expect_reply(sc.T_INFER_I8))["output"], expected_t)
    # a line without its newline, then a frame: the frame's first byte ends the line
    fw.send_raw(b"1 2 3" + sc.make_frame(sc.T_INFER_I8, t.tobytes()))
    assert text_reply(fw).startswith("error binary frame inside a text line (3 numbers read")
    assert np.array_equal(sc.parse_infer(fw.expect_reply(sc.T_INFER_I8))["output"], expected_t)
    good_frame_works(fw, host, seed=7)


def descendants(pid):
    """Process ids below pid (from /proc), with their command names."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            parent[int(d)] = (int(rest[1]), comm)
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        for child, (ppid, comm) in parent.items():
            if ppid == p and child not in found:
                found[child] = comm
                todo.append(child)
    return found


def alive(pid):
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serial_client_stops_qemu_when_killed(lenet_build, sig):
    client = os.path.join(ROOT, "tools", "serial_client.py")
    p = subprocess.Popen([sys.executable, client, "--qemu", lenet_build["elf"], "--random", "3000", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().startswith("firmware: model lenet5"), p.stderr.read()
        below = descendants(p.pid)
        assert any("qemu" in comm for comm in below.values()), below
        p.send_signal(sig)
        rc = p.wait(60)
        err = p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 128 + sig and f"stopped by {signal.Signals(sig).name}" in err and "Traceback" not in err, err
    left = [f"{pid} ({comm})" for pid, comm in below.items() if alive(pid)]
    assert not left, f"still running after the client stopped: {left}"


def test_serial_client_stops_cleanly_whatever_moment_the_signal_comes(lenet_build):
    """A signal at a spread of moments of a short run (QEMU started but its pid not yet recorded,
    the port being opened, a request, numpy's first random images, the EXIT, the clean-up
    itself, ...) always ends in 128 + the signal with QEMU gone. The Ctrl-C that landed in
    numpy's import of its random module was swallowed there and the client ran on."""
    failures = signal_at.stop_everywhere(
        ["--qemu", lenet_build["elf"], "--random", "3", "--quiet"],
        ["Popen._close_pipe_fds", "Firmware.__init__", "gather_samples", "ChildProcess.wait",
         "ChildProcess.stop", "ChildProcess._kill_group", "Popen.communicate"],
        [0.02, 0.15, 0.3, 0.45])
    assert not failures, "\n".join(failures)


def test_scons_run_alias(lenet_build):
    r = scons("board=mps2-an500", f"model={MODEL}", "run", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "20 of 20 inputs answered" in r.stdout
    assert "0 mismatches against the host library" in r.stdout


# ---- every zoo model that fits the board ---------------------------------------------------

def stateless_zoo():
    from models.registry import MODELS
    return [name for name, spec in MODELS.items() if not spec.stateful]


def fits_by_registry():
    """The registry's fits_stm32 flag; test_zoo_fit_agrees_with_the_build checks it against the link.
    LeNet-5 has its own 1000-input test above (pixels and tensors)."""
    from models.registry import MODELS
    return [name for name in stateless_zoo() if MODELS[name].fits_stm32 and name != MODEL]


@pytest.fixture(scope="module")
def zoo_build():
    """Every stateless model's emulator firmware in one `scons -k` run: a model that does not fit
    fails its own link and nothing else. Returns the scons output."""
    models = stateless_zoo()
    r = scons("-k", "-j2", "board=mps2-an500", "model=all",
              *[f"build/mps2-an500/{m}/fw.elf" for m in models], timeout=1800)
    return r.stdout + r.stderr


@pytest.mark.parametrize("name", stateless_zoo())
def test_zoo_fit_agrees_with_the_build(zoo_build, name):
    from models.registry import get
    d = os.path.join(ROOT, "build", "mps2-an500", name)
    fit_json = os.path.join(d, "fit.json")
    assert os.path.exists(fit_json), f"{name}: the link did not run\n{zoo_build[-3000:]}"
    fit = json.load(open(fit_json))
    assert fit["fits"] == get(name).fits_stm32, \
        f"{name}: registry fits_stm32={get(name).fits_stm32}, the link says {fit}"
    assert os.path.exists(os.path.join(d, "fw.elf")) == fit["fits"]
    if not fit["fits"]:
        assert f"error: model '{name}' does not fit the mps2-an500" in zoo_build, zoo_build[-3000:]
        flash = fit["regions"]["FLASH"]
        assert flash["available"] == 1024 * 1024 < flash["needed"]
        assert f"FLASH: {flash['needed']:,} bytes needed, 1,048,576 available" in zoo_build


@pytest.fixture(scope="module")
def m7_host_libs(tmp_path_factory):
    """The firmware's C (build/gen/m7) compiled for the host. Not build/host/<m>: that holds the
    kernels of whichever board was built last, and other tests expect the portable ones there."""
    from hostlib import load
    out = tmp_path_factory.mktemp("m7_host")

    def lib(name):
        so = str(out / f"lib{name}.so")
        if not os.path.exists(so):
            compile_host_library(os.path.join(ROOT, "build", "gen", "m7", name, f"tvmgen_{name}.c"), so)
        return load(so, os.path.join(ROOT, "build", "gen", "m7", name, f"tvmgen_{name}.h"))
    return lib


def infer_on_emulators(elf, x, model, input_size):
    """The outputs of the firmware for every input in x, in order. One QEMU per core (QEMU runs a
    guest on one host thread, and most of the time per input is the serial transfer, byte by
    byte), each answering a contiguous share of x over its own serial line."""
    from concurrent.futures import ThreadPoolExecutor
    instances = max(1, min(2, os.cpu_count() or 1))

    def run(share):
        with emulated(elf, timeout=120) as fw:
            info = fw.info()
            assert info["model"] == model and info["input_size"] == input_size
            return [fw.infer_i8(t.ravel())["output"] for t in share]
    with ThreadPoolExecutor(instances) as pool:
        shares = list(pool.map(run, np.array_split(x, instances)))
    return np.stack([out for share in shares for out in share])


@pytest.mark.parametrize("name", fits_by_registry())
def test_zoo_model_1000_inputs_equal_torch_and_host_library(zoo_build, m7_host_libs, name):
    elf = os.path.join(ROOT, "build", "mps2-an500", name, "fw.elf")
    assert os.path.exists(elf), f"{name}: no firmware\n{zoo_build[-3000:]}"
    host = m7_host_libs(name)
    port = host.inputs[0]
    n = 1000
    zero_point = np.full((1,) + tuple(port.shape[1:]), port.zero_point, dtype=np.int8)
    x = np.concatenate([edge_and_random_inputs(port.shape, n - 5, seed=11), zero_point])
    assert len(x) == n and x.min() == -128 and x.max() == 127

    # The serial line moves about 30 KB/s under QEMU: a model with large inputs (MobileNet's 27 KB)
    # sends its first inputs (the edge values among them) over the line through the real firmware,
    # and all 1000 through the same model C in the semihosting check image of the M7 bench.
    n_serial = min(n, max(100, SERIAL_BYTES_PER_MODEL // port.size))
    t0 = time.monotonic()
    got = infer_on_emulators(elf, x[:n_serial], name, port.size)
    if n_serial < n:
        got = np.concatenate([got, m7_check_image_outputs(name, x[n_serial:])])
    elapsed = time.monotonic() - t0

    expected_torch = torch_int8_outputs(x, port, name).reshape(n, -1)
    expected_host = host.run(x).reshape(n, -1)
    assert got.shape == expected_torch.shape
    bad_torch = int(np.count_nonzero(got != expected_torch))
    bad_host = int(np.count_nonzero(got != expected_host))
    record_test_result(ROOT, "firmware", name, n, int(got.size), max(bad_torch, bad_host))   # for `scons report`
    assert bad_torch == 0, f"{name}: {bad_torch} of {got.size} output elements differ from torch qnnpack"
    assert bad_host == 0, f"{name}: {bad_host} of {got.size} output elements differ from the host library"
    print(f"{name}: {n} inferences on the emulated Cortex-M7 ({n_serial} over the serial line) "
          f"in {elapsed:.1f} s (wall)")


SERIAL_BYTES_PER_MODEL = 2_000_000


def m7_check_image_outputs(name, x):
    """Outputs of the model's firmware C (build/gen/m7) in bench.py's semihosting check image."""
    import tempfile
    from fixtures.m7 import bench
    gen = os.path.join(ROOT, "build", "gen", "m7", name)
    (_, check_elf), _ = bench.build(gen, tempfile.mkdtemp(), x[0].ravel())
    return bench.firmware_outputs(check_elf, x).reshape(len(x), -1)


# ---- the real board's firmware ------------------------------------------------------------

@pytest.fixture(scope="module")
def f746_build():
    r = scons("board=stm32f746g-disco", f"model={MODEL}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    d = os.path.join(ROOT, "build", "stm32f746g-disco", MODEL)
    for f in ("fw.elf", "fw.bin", "fw.hex", "size.json"):
        assert os.path.exists(os.path.join(d, f)), f
    r = scons("board=stm32f746g-disco", f"model={MODEL}", "size")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = re.search(r"flash\s+([\d,]+) B of 1,048,576 .*model weights ([\d,]+), model code ([\d,]+), "
                  r"runtime ([\d,]+)", r.stdout)
    assert m, r.stdout
    total, weights, code, runtime = (int(v.replace(",", "")) for v in m.groups())
    assert total == weights + code + runtime and weights > 50_000 and code > 0 and runtime > 0
    assert re.search(r"RAM\s+[\d,]+ B of 327,680 .*model arena\+data [\d,]+, stack reserve", r.stdout)
    return d


def test_f746_has_no_double_precision_instructions(f746_build):
    elf = os.path.join(f746_build, "fw.elf")
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", elf], capture_output=True, text=True, check=True).stdout
    f64 = [line for line in dis.splitlines() if re.search(r"\tv\w+(\.\w+)*\.f64", line)]
    assert not f64, "double-precision FP instructions (the F746 FPU is single precision):\n" + "\n".join(f64[:20])
    syms = subprocess.run(["arm-none-eabi-nm", elf], capture_output=True, text=True, check=True).stdout
    soft = sorted(set(re.findall(r"\b(__aeabi_d\w+|__\w+df\d?)\b", syms)))
    assert not soft, f"software double-precision helpers linked in: {soft}"
    # the ELF really is for the F746: vector table at the start of its flash
    hdr = subprocess.run(["arm-none-eabi-objdump", "-h", elf], capture_output=True, text=True, check=True).stdout
    assert re.search(r"\.isr_vector\s+\w+\s+08000000", hdr)


@pytest.mark.parametrize("programmer", ["openocd", "stlink"])
def test_flash_without_probe_fails_clearly(f746_build, programmer):
    tool = "openocd" if programmer == "openocd" else "st-flash"
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed (apt-get install --no-install-recommends openocd stlink-tools)")
    r = scons("board=stm32f746g-disco", f"model={MODEL}", f"programmer={programmer}", "flash")
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert out.count(NO_PROBE) == 1, out
    assert "Traceback" not in out


def test_flash_tool_usage_errors():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "flash.py"), "--elf", "/nonexistent/fw.elf"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_serial_client_usage_errors(tmp_path):
    client = os.path.join(ROOT, "tools", "serial_client.py")
    r = subprocess.run([sys.executable, client, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--port" in r.stdout and "--qemu" in r.stdout
    for args, words in ([["--port", "/dev/nonexistent-tty", "--random", "1"], "cannot open serial port"],
                        [["--qemu", str(tmp_path / "none.elf"), "--random", "1"], "no such firmware file"],
                        [["--port", "socket://127.0.0.1:1"], "nothing to send"]):
        r = subprocess.run([sys.executable, client, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr


# ---- a model that does not fit ------------------------------------------------------------

OVERSIZE_HEADER = """\
#ifndef TVMGEN_BIG_H
#define TVMGEN_BIG_H
#include <stdint.h>
#define TVMGEN_BIG_WORKSPACE_SIZE {arena}
#define TVMGEN_BIG_INPUT0_SIZE 784
#define TVMGEN_BIG_INPUT0_SHAPE {{ 1, 1, 28, 28 }}
#define TVMGEN_BIG_INPUT0_SCALE 0x1.010102p-8f
#define TVMGEN_BIG_INPUT0_ZERO_POINT (-128)
#define TVMGEN_BIG_OUTPUT0_SIZE 10
#define TVMGEN_BIG_OUTPUT0_SCALE 0x1p-3f
#define TVMGEN_BIG_OUTPUT0_ZERO_POINT (0)
#define TVMGEN_BIG_NUM_LAYERS 1
struct tvmgen_big_inputs {{ void* input0; }};
struct tvmgen_big_outputs {{ void* output0; }};
int32_t tvmgen_big_run(struct tvmgen_big_inputs* inputs, struct tvmgen_big_outputs* outputs);
#endif
"""
OVERSIZE_SOURCE = """\
#include <stdint.h>
#include <string.h>
#include "tvmgen_big.h"
#ifndef TVMGEN_LAYER_HOOK
#define TVMGEN_LAYER_HOOK(index) ((void)0)
#endif
static const int8_t weights[{weights}] = {{ 1, 2, 3 }};
static int8_t arena[TVMGEN_BIG_WORKSPACE_SIZE];
int32_t tvmgen_big_run(struct tvmgen_big_inputs* inputs, struct tvmgen_big_outputs* outputs)
{{
    const int8_t* in = (const int8_t*)inputs->input0;
    int8_t* out = (int8_t*)outputs->output0;
    int32_t acc = 0;
    memcpy(arena, in, 784);
    for (uint32_t i = 0; i < sizeof(weights); i += 4096) acc += weights[i] * arena[i % 784];
    for (int o = 0; o < 10; o++) out[o] = (int8_t)(acc + o + arena[sizeof(arena) - 1 - o]);
    TVMGEN_LAYER_HOOK(0);
    return 0;
}}
"""
# A project of its own uses the firmware builders through the repository's site_scons.
SITE_DIR = f"--site-dir={os.path.join(ROOT, 'site_scons')}"
TEST_SCONSTRUCT = """\
import os, sys
env = Environment(ENV=os.environ.copy(), PYTHON=sys.executable)
env["OPTS"] = {{}}
Default(SConscript({script!r}, exports={{"env": env, "board": {board!r}, "model": "big",
                   "gen_dir": Dir({gen!r}), "build_dir": {build!r}}}))
"""


@pytest.mark.parametrize("board,weights,arena,region", [
    ("stm32f746g-disco", 1200 * 1024, 1024, "FLASH"),
    ("mps2-an500", 1024, 400 * 1024, "RAM"),
])
def test_oversize_model_fails_build_clearly(tmp_path, board, weights, arena, region):
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "tvmgen_big.h").write_text(OVERSIZE_HEADER.format(arena=arena))
    (gen / "tvmgen_big.c").write_text(OVERSIZE_SOURCE.format(weights=weights))
    build = tmp_path / "build"
    (tmp_path / "SConstruct").write_text(TEST_SCONSTRUCT.format(
        script=os.path.join(ROOT, "firmware", "riot", "SConscript"), board=board, gen=str(gen),
        build=str(build)))
    r = scons(SITE_DIR, cwd=str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"error: model 'big' does not fit the {board}" in out, out
    m = re.search(rf"{region}: ([\d,]+) bytes needed, ([\d,]+) available", out)
    assert m, out
    needed, available = (int(v.replace(",", "")) for v in m.groups())
    assert available == (1024 if region == "FLASH" else 320) * 1024 and needed > available
    assert needed >= (weights if region == "FLASH" else arena)
    assert "what to do" in out and ("model weights" in out if region == "FLASH" else "model arena" in out)
    assert "Traceback" not in out
    assert not (build / "fw.elf").exists() and not (build / "fw.bin").exists()
    # the same sources with a model that fits link fine (the failure was the size, nothing else)
    (gen / "tvmgen_big.c").write_text(OVERSIZE_SOURCE.format(weights=4096))
    (gen / "tvmgen_big.h").write_text(OVERSIZE_HEADER.format(arena=1024))
    r = scons(SITE_DIR, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (build / "fw.elf").exists()


def test_zoo_mnist_cnn_does_not_fit_the_f746():
    """Seed 002's first model (fc1 9216x128): 1.2 MB of int8 weights for a 1 MiB flash."""
    r = scons("board=stm32f746g-disco", "model=mnist_cnn")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "error: model 'mnist_cnn' does not fit the stm32f746g-disco" in out, out
    m = re.search(r"FLASH: ([\d,]+) bytes needed, 1,048,576 available", out)
    assert m and int(m.group(1).replace(",", "")) > 1_200_000, out
    assert "model weights 1,2" in out and "what to do" in out and "Traceback" not in out
    assert not os.path.exists(os.path.join(ROOT, "build", "stm32f746g-disco", "mnist_cnn", "fw.elf"))
