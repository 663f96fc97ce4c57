"""The application through a real RIOT (firmware/riot/Makefile, RIOT 2026.07), and the check alias.

The RIOT tree comes from the environment: RIOTBASE (an extracted RIOT tree, e.g. a checkout whose
vendor packages have been downloaded) or NNC_RIOT_TARBALL (an offline RIOT archive with RIOT/ at
its root: extracted once into build/riot/). Without either the RIOT tests are skipped, naming the
variables; with CI=true they fail.

- STM32F746G-DISCO through RIOT: lenet5 (kernels m7 and c, switched in the same build folder) and
  residual_cnn; each image holds its own model, the m7 image `smlad` and the c image none, the
  vector table at 0x08000000, RIOT's stdio on the UART, no double precision, the DWT cycle counter
  at 216 MHz, the model compiled to the same machine code as in the bare-metal image, the size
  report with RIOT's sections; mnist_cnn fails the build with RIOT's `rom` region and its numbers.
- native64 through RIOT: 1000 LeNet-5 inputs over the pty, every output equal to the host library
  and torch; bad frames get errors and the next frame is right; text mode; `scons run`.
- The F746 register addresses of the bare-metal board layer against ST's stm32f746xx.h.
- `scons check` on the emulated Cortex-M7 and on native64; on the F746 without a probe it fails clearly.
"""
import fcntl
import os
import re
import signal
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from fixtures.builds import build_lock
from nnc.cli import serial_client as sc
from nnc.toolchains import CORTEX_M7_CC, CORTEX_M7_FLAGS
from test_stm32 import (BAD_FRAMES, bad_frame_then_good_frame, good_frame_works, scons,  # noqa: E402
                        send_1000_inputs_and_compare, serving)

BUILD = os.path.join(ROOT, "build")
F746 = "stm32f746g-disco"
FLASH_BASE, FLASH_SIZE = 0x08000000, 1024 * 1024
RAM_BASE, RAM_SIZE = 0x20000000, 320 * 1024


def missing(what: str):
    """A missing optional component: a skip naming it, a failure in CI (CI=true has everything)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)


def extract_once(tarball: str) -> str:
    """NNC_RIOT_TARBALL extracted into build/riot/ (again only when the archive changed); the
    archive keeps the time stamps RIOT's package stamps rely on (tar restores them)."""
    dest = os.path.join(BUILD, "riot")
    stamp = os.path.join(dest, ".extracted-from")
    st = os.stat(tarball)
    ident = f"{os.path.abspath(tarball)} {st.st_size} {int(st.st_mtime)}\n"
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, "riot.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # one extraction, also with pytest-xdist
        if os.path.exists(stamp) and open(stamp).read() == ident:
            return os.path.join(dest, "RIOT")
        tmp = dest + ".tmp"
        for d in (tmp, dest):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(tmp)
        r = subprocess.run(["tar", "xJf", tarball, "-C", tmp], capture_output=True, text=True)
        if r.returncode != 0 or not os.path.isfile(os.path.join(tmp, "RIOT", "Makefile.include")):
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(f"NNC_RIOT_TARBALL={tarball}: not a RIOT archive with RIOT/ at its root: {r.stderr}")
        with open(os.path.join(tmp, ".extracted-from"), "w") as f:
            f.write(ident)
        os.rename(tmp, dest)
    return os.path.join(dest, "RIOT")


@pytest.fixture(scope="session")
def riotbase():
    base = os.environ.get("RIOTBASE")
    if base:
        if not os.path.isfile(os.path.join(base, "Makefile.include")):
            pytest.fail(f"RIOTBASE={base} is not a RIOT tree (no Makefile.include)")
        return os.path.abspath(base)
    tarball = os.environ.get("NNC_RIOT_TARBALL")
    if tarball:
        if not os.path.isfile(tarball):
            pytest.fail(f"NNC_RIOT_TARBALL={tarball}: no such file")
        return extract_once(tarball)
    missing("no RIOT tree: set RIOTBASE=/path/to/RIOT or NNC_RIOT_TARBALL=/path/to/riot-offline.tar.xz")


def tool(*cmd) -> str:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=True).stdout


def riot_scons(riotbase, *args, timeout=1200):
    return scons("-j2", f"RIOTBASE={riotbase}", *args, timeout=timeout)


def built(r):
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r


@pytest.fixture(scope="session")
def f746_images(riotbase, tmp_path_factory):
    """RIOT images of the F746, kept per variant: lenet5 m7, lenet5 c (same build folder), lenet5
    m7 again (after the switch), residual_cnn m7; and the bare-metal lenet5 m7 image."""
    keep = tmp_path_factory.mktemp("riot-images")
    images = {}
    with build_lock():     # the kernels switch in one build folder: no other worker's build between
        _build_f746_images(riotbase, keep, images)
    return images


def _build_f746_images(riotbase, keep, images):
    for name, model, extra in [("lenet5_m7", "lenet5", []), ("lenet5_c", "lenet5", ["kernels=c"]),
                               ("lenet5_m7_again", "lenet5", []), ("residual_cnn_m7", "residual_cnn", [])]:
        r = built(riot_scons(riotbase, f"board={F746}", f"model={model}", *extra))
        d = os.path.join(BUILD, F746, model, "riot")
        images[name] = {"out": r.stdout}
        for f in ("fw.elf", "fw.bin", "size.json"):
            dst = keep / f"{name}.{f}"
            shutil.copyfile(os.path.join(d, f), dst)
            images[name][f] = str(dst)
    for model in ("lenet5", "residual_cnn"):
        built(scons(f"board={F746}", f"model={model}"))
        images[f"bare_{model}_m7"] = {"fw.elf": os.path.join(BUILD, F746, model, "fw.elf")}


def symbols(elf: str) -> dict:
    """{name: (address, size, type)} of an ARM ELF."""
    out = {}
    for line in tool("arm-none-eabi-nm", "-S", "--defined-only", elf).splitlines():
        p = line.split()
        if len(p) == 4:
            out[p[3]] = (int(p[0], 16), int(p[1], 16), p[2])
        elif len(p) == 3:
            out[p[2]] = (int(p[0], 16), 0, p[1])
    return out


def test_each_model_and_kernels_builds_its_own_image(f746_images):
    bins = {k: open(v["fw.bin"], "rb").read() for k, v in f746_images.items() if "fw.bin" in v}
    assert bins["lenet5_m7"] != bins["lenet5_c"], "kernels=c linked the m7 image"
    assert bins["lenet5_m7"] != bins["residual_cnn_m7"], "residual_cnn linked the lenet5 image"
    assert bins["lenet5_m7_again"] == bins["lenet5_m7"], "switching back to m7 did not rebuild the m7 image"
    for name, model in [("lenet5_m7", "lenet5"), ("lenet5_c", "lenet5"), ("residual_cnn_m7", "residual_cnn")]:
        syms = symbols(f746_images[name]["fw.elf"])
        other = "residual_cnn" if model == "lenet5" else "lenet5"
        assert f"tvmgen_{model}_run" in syms and f"tvmgen_{other}_run" not in syms, name


def test_m7_image_uses_smlad_and_c_image_does_not(f746_images):
    def smlad(name):
        return len(re.findall(r"\tsmlad\b", tool("arm-none-eabi-objdump", "-d", f746_images[name]["fw.elf"])))
    assert smlad("lenet5_m7") > 0 and smlad("residual_cnn_m7") > 0
    assert smlad("lenet5_c") == 0


def test_vector_table_at_the_start_of_flash(f746_images):
    elf = f746_images["lenet5_m7"]["fw.elf"]
    assert symbols(elf)["cortex_vector_base"][0] == FLASH_BASE
    head = tool("arm-none-eabi-objdump", "-h", elf)
    assert re.search(r"\.text\s+\w+\s+08000000\s+08000000", head), head
    words = np.frombuffer(open(f746_images["lenet5_m7"]["fw.bin"], "rb").read(8), dtype="<u4")
    sp, reset = int(words[0]), int(words[1])
    assert RAM_BASE < sp <= RAM_BASE + RAM_SIZE, f"initial stack pointer {sp:#x} not in the F746's SRAM"
    assert reset & 1 and FLASH_BASE <= reset < FLASH_BASE + FLASH_SIZE, f"reset vector {reset:#x}"


def test_riot_stdio_on_the_uart_is_linked(f746_images):
    syms = symbols(f746_images["lenet5_m7"]["fw.elf"])
    for name in ("stdio_init", "stdio_read", "stdio_write", "stdio_available", "uart_write", "uart_init",
                 "isrpipe_read", "ztimer_now", "plat_getc"):
        assert name in syms, f"{name} not linked"


def test_no_double_precision(f746_images):
    for name in ("lenet5_m7", "lenet5_c", "residual_cnn_m7"):
        elf = f746_images[name]["fw.elf"]
        f64 = [ln for ln in tool("arm-none-eabi-objdump", "-d", elf).splitlines()
               if re.search(r"\tv\w+(\.\w+)*\.f64", ln)]
        assert not f64, f"{name}: double-precision instructions:\n" + "\n".join(f64[:10])
        soft = sorted(set(re.findall(r"\b(__aeabi_d\w+|__\w+df\d?)\b", tool("arm-none-eabi-nm", elf))))
        assert not soft, f"{name}: software double-precision helpers linked in: {soft}"


def disassembly(elf: str, symbol: str) -> str:
    return tool("arm-none-eabi-objdump", "-d", f"--disassemble={symbol}", elf).split(f"<{symbol}>:", 1)[1]


def test_cost_is_dwt_cycles_at_216_mhz(f746_images):
    """plat_ticks reads DWT CYCCNT (0xE0001004), plat_tick_hz is RIOT's core clock (coreclk():
    216 MHz), the cost unit is cycles (protocol.h: NNC_COST_CYCLES = 1)."""
    elf = f746_images["lenet5_m7"]["fw.elf"]
    ticks = disassembly(elf, "plat_ticks")
    assert ".word\t0xe0001000" in ticks and "#4]" in ticks, ticks
    assert ".word\t0x0cdfe600" in disassembly(elf, "plat_tick_hz")   # 216,000,000
    assert re.search(r"movs\tr0, #1\n", disassembly(elf, "plat_cost_unit"))


def mnemonics(elf: str, symbol: str) -> list:
    return re.findall(r"^\s+[0-9a-f]+:\s+(?:[0-9a-f]{4} ?){1,2}\s+([a-z][\w.]*)", disassembly(elf, symbol), re.M)


@pytest.mark.parametrize("model", ["lenet5", "residual_cnn"])
def test_model_is_the_same_machine_code_as_bare_metal(f746_images, model):
    """Both builds compile the model with model.cflags, so the emulator's instruction counts of the
    bare-metal image describe the RIOT image (RIOT's own -Os and -fwrapv gave other code)."""
    riot_elf, bare_elf = f746_images[f"{model}_m7"]["fw.elf"], f746_images[f"bare_{model}_m7"]["fw.elf"]
    riot, bare = symbols(riot_elf), symbols(bare_elf)
    # the layer functions and the static helpers they call (residual_cnn: nnc_m7_gemm_pairs, in assembly)
    model_funcs = sorted(n for n, (_a, _s, t) in bare.items()
                         if t in "tT" and n.startswith((f"tvmgen_{model}", "nnc_m7_")))
    assert len(model_funcs) >= 5
    for n in model_funcs:
        assert n in riot and riot[n][1] == bare[n][1], f"{n}: {riot.get(n)} under RIOT, {bare[n]} bare metal"
        assert mnemonics(riot_elf, n) == mnemonics(bare_elf, n), n


def test_size_report_counts_riot_sections(f746_images):
    import json
    rep = json.load(open(f746_images["lenet5_m7"]["size.json"]))
    secs = {}
    for line in tool("arm-none-eabi-size", "-A", "-d", f746_images["lenet5_m7"]["fw.elf"]).splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)", line)
        if m:
            secs[m.group(1)] = int(m.group(2))
    assert secs[".relocate"] > 0
    assert rep["flash"]["total"] == secs[".text"] + secs[".relocate"] + secs.get(".backup.data", 0)
    assert rep["ram"]["total"] == secs[".stack"] + secs[".relocate"] + secs[".bss"] + secs.get(".noinit", 0)
    assert 60_000 < rep["flash"]["model_weights"] < 70_000 and rep["flash"]["model_code"] > 1000
    assert 2_000 < rep["ram"]["model_arena_and_data"] < 6_000


def test_oversize_model_fit_error_names_riot_region(riotbase):
    """mnist_cnn: 1.2 MB of weights for the 1 MiB flash; RIOT's linker calls the flash `rom`."""
    r = riot_scons(riotbase, f"board={F746}", "model=mnist_cnn")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "error: model 'mnist_cnn' does not fit the stm32f746g-disco" in out, out[-3000:]
    m = re.search(r"rom: ([\d,]+) bytes needed, 1,048,576 available \(flash at 0x08000000\)", out)
    assert m and 1_200_000 < int(m.group(1).replace(",", "")) < 1_300_000, out[-3000:]
    assert "available (at 0x20000000)" not in out and "ram:" not in out
    assert re.search(r"model weights 1,2\d\d,\d\d\d B", out) and "what to do" in out, out[-3000:]
    assert "Traceback" not in out
    assert not os.path.exists(os.path.join(BUILD, F746, "mnist_cnn", "riot", "fw.elf"))


def test_riotbase_that_is_not_riot_is_a_usage_error(tmp_path):
    r = scons(f"board={F746}", "model=lenet5", f"RIOTBASE={tmp_path}")
    assert r.returncode == 2 and "not a RIOT tree (it has no Makefile.include)" in r.stdout
    r = scons("board=native64", "model=lenet5")
    assert r.returncode == 2 and "board=native64 is built through RIOT: add RIOTBASE=" in r.stdout


# ---- the F746 register definitions against ST's --------------------------------------------

def linker_memory(path: str) -> dict:
    text = open(path).read()
    out = {}
    for region, origin, length in re.findall(r"(\w+)\s*\(\w+\)\s*:\s*ORIGIN\s*=\s*(\w+),\s*LENGTH\s*=\s*(\w+)", text):
        n = int(length[:-1]) * 1024 if length.endswith("K") else int(length, 0)
        out[region] = (int(origin, 0), n)
    return out


def compile_register_check(riotbase, include_first=()):
    vendor = os.path.join(riotbase, "build")
    board = os.path.join(ROOT, "firmware", "riot", "board")
    mem = linker_memory(os.path.join(board, F746, "linker.ld"))
    cmd = [CORTEX_M7_CC, "-std=c11", *CORTEX_M7_FLAGS, "-fsyntax-only", "-Wall", "-Wextra",
           "-DSTM32F746xx", *[f"-I{d}" for d in include_first],
           "-I", os.path.join(vendor, "stm32", "cmsis", "f7", "Include"),
           "-I", os.path.join(vendor, "pkg", "cmsis", "CMSIS", "Core", "Include"),
           "-I", os.path.join(board, "common"), "-I", os.path.join(board, F746),
           f"-DLD_FLASH_ORIGIN={mem['FLASH'][0]:#x}u", f"-DLD_FLASH_LENGTH={mem['FLASH'][1]}u",
           f"-DLD_RAM_ORIGIN={mem['RAM'][0]:#x}u", f"-DLD_RAM_LENGTH={mem['RAM'][1]}u",
           os.path.join(ROOT, "tests", "fixtures", "riot", "f746_registers_vs_st.c")]
    return subprocess.run(cmd, capture_output=True, text=True)


def test_f746_registers_match_st_headers(riotbase, tmp_path):
    st = os.path.join(riotbase, "build", "stm32", "cmsis", "f7", "Include", "stm32f746xx.h")
    if not os.path.isfile(st):
        missing(f"{st} is missing: build any stm32f746g-disco app once so RIOT downloads cmsis_device_f7")
    r = compile_register_check(riotbase)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # the check can fail: one wrong bit position in a copy of our header
    header = open(os.path.join(ROOT, "firmware", "riot", "board", F746, "f746_regs.h")).read()
    bad = header.replace("#define F746_USART_ISR_RXNE_POS 5", "#define F746_USART_ISR_RXNE_POS 6")
    assert bad != header
    (tmp_path / "f746_regs.h").write_text(bad)
    r = compile_register_check(riotbase, include_first=[str(tmp_path)])
    assert r.returncode != 0 and "F746_USART_ISR_RXNE_POS differs from USART_ISR_RXNE_Pos" in r.stderr


# ---- native64: the RIOT app as a Linux process --------------------------------------------

@pytest.fixture(scope="session")
def native_elf(riotbase):
    built(riot_scons(riotbase, "board=native64", "model=lenet5", "build/native64/lenet5/fw.elf",
                     "build/host/lenet5/liblenet5.so"))
    return os.path.join(BUILD, "native64", "lenet5", "fw.elf")


@pytest.fixture(scope="module")
def native_host(native_elf):
    from hostlib import load
    return load(os.path.join(BUILD, "host", "lenet5", "liblenet5.so"),
                os.path.join(BUILD, "gen", "c", "lenet5", "tvmgen_lenet5.h"))


@pytest.fixture(scope="module")
def native_fw(native_elf):
    with serving(sc.Native(native_elf, time_limit=1200), timeout=20) as fw:
        yield fw


def test_native64_info(native_fw, native_host):
    info = native_fw.info()
    assert info["model"] == "lenet5" and info["board"] == "native64"
    assert info["input_size"] == 784 and info["output_size"] == 10
    assert info["cost_unit"] == sc.COST_TICKS and info["hz"] == 1_000_000   # RIOT's ztimer_usec
    assert info["input_scale"] == np.float32(native_host.inputs[0].scale)


def test_native64_1000_inputs_equal_host_library_and_torch(native_fw, native_host):
    costs, _ = send_1000_inputs_and_compare(native_fw, native_host)
    assert all(c >= 0 for c in costs)


@pytest.mark.parametrize("case", BAD_FRAMES)
def test_native64_bad_frame_gets_error_and_next_frame_works(native_fw, native_host, case):
    bad_frame_then_good_frame(native_fw, native_host, case)


def test_native64_text_mode_needs_the_large_stdin_buffer(native_fw, native_host):
    """784 numbers as text (about 3 KB in one piece from the pty): RIOT's default 64-byte stdin
    buffer cut it short."""
    from models.data import image_data
    _, held = image_data("digits", 28)
    px = np.rint(held.x[1].ravel() * 255.0).astype(np.uint8)
    r_text = native_fw.infer_text(px)
    assert np.array_equal(r_text["output"], native_fw.infer_u8(px)["output"])
    good_frame_works(native_fw, native_host, seed=7)


def test_native64_answers_thousands_of_back_to_back_requests(native_fw):
    """RIOT native's idle thread sleeps in pause() and loses a SIGIO (stdin) that lands just
    before it; a firmware that blocked in stdio_read() there slept for ever with a request unread
    (seen about once in 90,000 requests on loaded cores). The application waits in host
    nanosleep() on native instead: 5000 requests in a row, each answered."""
    for i in range(5000):
        native_fw._info = None   # a fresh INFO request each time, not the cached reply
        assert native_fw.info()["model"] == "lenet5", f"request {i}"


def test_native64_process_stops_at_once(native_elf):
    """RIOT native blocks SIGTERM while its threads run; the client stops it with SIGINT (its
    Ctrl-C), so stopping it with the port still open (an error path) does not wait for
    `timeout`'s kill."""
    nat = sc.Native(native_elf, time_limit=60)
    fw = sc.Firmware(nat.start(), timeout=20)
    nat.connected()
    try:
        assert fw.info()["board"] == "native64"
    finally:
        nat.stop()
        fw.close()
    assert nat.proc.returncode is not None
    assert nat.proc.returncode != -signal.SIGKILL and nat.proc.returncode != 128 + signal.SIGKILL, \
        "the native64 process had to be killed"


def test_scons_native64_run(riotbase, native_elf):
    r = built(riot_scons(riotbase, "board=native64", "model=lenet5", "run", timeout=900))
    assert "1000 of 1000 inputs answered" in r.stdout and "0 mismatches against the host library" in r.stdout


# ---- check: the board-in-the-loop alias, here against the emulated M7 and native64 --------

def test_check_on_the_emulated_m7_reports_instructions():
    r = built(scons("board=mps2-an500", "model=lenet5", "check", "count=60", timeout=900))
    assert "60 of 60 inputs answered" in r.stdout and "0 mismatches against the host library" in r.stdout
    assert re.search(r"mean cost per inference [\d,]+ instructions", r.stdout), r.stdout[-2000:]


def test_check_on_native64(riotbase, native_elf):
    r = built(riot_scons(riotbase, "board=native64", "model=lenet5", "check", "count=40"))
    assert "40 of 40 inputs answered" in r.stdout and "0 mismatches against the host library" in r.stdout
    assert re.search(r"mean cost per inference [\d,]+ us", r.stdout), r.stdout[-2000:]


def test_check_on_the_f746_without_a_board_fails_clearly():
    r = scons(f"board={F746}", "model=lenet5", "check")   # flashes first: no probe here
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "no ST-LINK probe found" in out and "error: flash failed" in out, out[-2000:]
    r = scons(f"board={F746}", "model=lenet5", "check", "flash=0", "port=/dev/nnc-no-such-port")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "cannot open serial port '/dev/nnc-no-such-port'" in out, out[-2000:]
    assert "Traceback" not in out
    r = scons(f"board={F746}", "model=lenet5", "check", "count=zero")
    assert r.returncode == 2 and "count=zero: give the number of inputs" in r.stdout


def test_check_fails_when_outputs_differ(native_elf):
    """What check relies on: the serial client exits 1 when the firmware's outputs differ from the
    host library's (here: LeNet-5's firmware against residual_cnn's library, same shapes)."""
    r = built(scons("build/host/residual_cnn/libresidual_cnn.so"))
    client = os.path.join(ROOT, "tools", "serial_client.py")
    r = subprocess.run([sys.executable, client, "--native", native_elf, "--random", "5", "--quiet",
                        "--so", os.path.join(BUILD, "host", "residual_cnn", "libresidual_cnn.so"),
                        "--header", os.path.join(BUILD, "gen", "c", "residual_cnn", "tvmgen_residual_cnn.h")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    m = re.search(r"5 of 5 inputs answered, ([1-5]) mismatches against the host library", r.stdout)
    assert m, r.stdout
