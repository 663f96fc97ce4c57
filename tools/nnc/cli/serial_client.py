"""Send images to the inference firmware over a serial line and print what it answers.

Works the same against a board (`--port /dev/ttyACM0`), any pyserial URL
(`--port socket://127.0.0.1:4444`), the emulated Cortex-M7, which it can start itself
(`--qemu build/mps2-an500/lenet5/fw.elf`), and the RIOT app on RIOT's native64 board, a Linux
process it starts on a pseudo-terminal (`--native build/native64/lenet5/riot/fw.elf`).

    nnc serial --port /dev/ttyACM0 digit.png
    nnc serial --qemu fw.elf --dataset digits --count 20 \\
        --so build/host/lenet5/liblenet5.so --header build/gen/c/lenet5/tvmgen_lenet5.h

Inputs: PNG images (grayscale, scaled to the model's input size), .npy arrays (uint8 pixels,
int8 quantized tensors, or float images in [0, 1]), samples of a data set (--dataset digits or
mnist:DIR, the held-out split) or random images (--random N). Each reply prints the predicted
class, the firmware's cost figure and, with --so/--header, whether the output tensor equals the
host library's. Exit status: 0 all good, 1 a mismatch or an error reply, 2 a usage error.

The protocol is described in firmware/riot/protocol.h.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import numpy as np

from nnc.cli import stop_signals
from nnc.errors import DeviceError, NncError

MAGIC = b"\xa5\x5a"
VERSION = 1
T_INFER_U8, T_INFER_I8, T_INFO, T_EXIT = 0x01, 0x02, 0x03, 0x04
T_REPLY, T_ERROR = 0x80, 0xFF
COST_CYCLES, COST_TICKS = 1, 2
ERROR_NAMES = {1: "garbage", 2: "bad version", 3: "bad type", 4: "oversize", 5: "bad length",
               6: "bad checksum", 7: "timeout (short frame)", 8: "run failed", 9: "text input"}
QEMU_ICOUNT_SHIFT = 7   # one instruction = 128 ns of virtual time = 3.2 ticks of the 25 MHz timer


class UserError(NncError):
    """Something the user can fix: printed without a traceback, exit status 2."""


class ProtocolError(DeviceError):
    """The firmware's answer was not what the protocol says (or never came): exit status 1."""


class FirmwareError(DeviceError):
    """The firmware answered with an ERROR frame: exit status 1."""

    def __init__(self, code, req_type, detail, message):
        self.code, self.req_type, self.detail, self.message = code, req_type, detail, message
        super().__init__(f"firmware error {code} ({ERROR_NAMES.get(code, '?')}): {message} "
                         f"[detail {detail}]")


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def make_frame(ftype: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    body = struct.pack("<BBH", version, ftype, len(payload)) + bytes(payload)
    return MAGIC + body + struct.pack("<H", crc16(body))


class Firmware:
    """One connection to the firmware (board or emulator)."""

    def __init__(self, port: str, timeout: float = 10.0, baudrate: int = 115200):
        import serial
        try:
            if "://" in port:
                self.ser = serial.serial_for_url(port, timeout=timeout, baudrate=baudrate)
            else:
                self.ser = serial.Serial(port, baudrate=baudrate, timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as e:
            raise UserError(f"cannot open serial port {port!r}: {e}") from None
        sock = getattr(self.ser, "_socket", None)
        if sock is not None:   # small frames: no Nagle delay
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.text_seen = b""   # bytes outside frames (boot banner, fault messages)
        self._info = None

    def close(self):
        self.ser.close()

    # ---- raw frames --------------------------------------------------------------------
    def send_raw(self, data: bytes):
        import serial
        try:
            self.ser.write(data)
            self.ser.flush()
        except (serial.SerialException, OSError) as e:
            raise ProtocolError(f"connection to the firmware lost while sending: {e}") from None

    def _read_exact(self, n: int, deadline: float) -> bytes:
        import serial
        buf = b""
        while len(buf) < n:
            stop_signals.check()
            if time.monotonic() > deadline:
                raise ProtocolError(f"timeout: got {len(buf)} of {n} bytes from the device")
            try:
                buf += self.ser.read(n - len(buf))
            except (serial.SerialException, OSError) as e:
                raise ProtocolError(f"connection to the firmware lost: {e}") from None
        return buf

    def read_frame(self, timeout: float | None = None):
        """-> (type, payload); bytes before the magic are kept in text_seen."""
        wait = timeout or self.timeout
        deadline = time.monotonic() + wait
        prev = b""
        skipped = 0   # bytes before the frame: a banner, or garbage from a confused device
        while True:
            try:
                c = self._read_exact(1, deadline)
            except ProtocolError as e:
                if not str(e).startswith("timeout"):
                    raise
                # say what came instead of a frame, not "got 0 of 1 bytes"
                raise ProtocolError(f"no reply frame from the device within {wait:g} s: " + (
                    f"it sent {skipped} bytes that start no frame (the last: "
                    f"{received(self.text_seen[-48:])}); is it running this firmware, at this baud rate?"
                    if skipped else "it sent nothing")) from None
            skipped += 1
            if prev == MAGIC[:1] and c == MAGIC[1:]:
                self.text_seen = self.text_seen[:-1]
                break
            self.text_seen = (self.text_seen + c)[-4096:]
            if self.text_seen.endswith(b"\n") and b"fatal:" in self.text_seen.split(b"\n")[-2]:
                raise ProtocolError("firmware crashed: " + self.text_seen.decode(errors="replace").strip())
            prev = c
        hdr = self._read_exact(4, deadline)
        version, ftype, length = struct.unpack("<BBH", hdr)
        rest = self._read_exact(length + 2, deadline)
        payload, crc = rest[:-2], struct.unpack("<H", rest[-2:])[0]
        if crc16(hdr + payload) != crc:
            raise ProtocolError(f"reply with a bad checksum (received {received(MAGIC + hdr + rest)})")
        if version != VERSION:
            raise ProtocolError(f"reply with protocol version {version}, this client speaks {VERSION} "
                                f"(received {received(MAGIC + hdr + rest)})")
        return ftype, payload

    def request(self, ftype: int, payload: bytes = b"", timeout: float | None = None):
        self.send_raw(make_frame(ftype, payload))
        return self.expect_reply(ftype, timeout)

    def expect_reply(self, req_type: int, timeout: float | None = None) -> bytes:
        ftype, payload = self.read_frame(timeout)
        if ftype == T_ERROR:
            raise parse_error(payload)
        if ftype != (T_REPLY | req_type):
            raise ProtocolError(f"expected reply type {T_REPLY | req_type:#x}, got {ftype:#x} "
                                f"(payload {received(payload)})")
        return payload

    # ---- requests ----------------------------------------------------------------------
    def info(self) -> dict:
        if self._info is None:
            self._info = parse_info(self.request(T_INFO))
        return self._info

    def infer_u8(self, pixels) -> dict:
        return parse_infer(self.request(T_INFER_U8, np.asarray(pixels, dtype=np.uint8).tobytes()))

    def infer_i8(self, tensor) -> dict:
        return parse_infer(self.request(T_INFER_I8, np.asarray(tensor, dtype=np.int8).tobytes()))

    def infer_text(self, pixels) -> dict:
        """The person-at-a-terminal mode: numbers as text, one result line back."""
        text = " ".join(str(int(v)) for v in np.asarray(pixels, dtype=np.uint8).ravel()) + "\n"
        self.send_raw(text.encode())
        deadline = time.monotonic() + self.timeout
        while True:
            line = self.read_line(deadline)
            if line.startswith("result "):
                return parse_text_result(line)
            if line.startswith("error "):
                raise FirmwareError(9, 0, 0, line[len("error "):])

    def read_line(self, deadline: float, limit: int = 65536) -> str:
        """One text line of the firmware, without its line end (bytes that are no UTF-8 are
        shown as U+FFFD)."""
        line = b""
        while not line.endswith(b"\n"):
            line += self._read_exact(1, deadline)
            if len(line) > limit:
                raise ProtocolError(f"text line longer than {limit} bytes from the device "
                                    f"(received {received(line)})")
        return line.decode(errors="replace").strip()

    def exit(self, code: int = 0):
        self.request(T_EXIT, bytes([code & 0xFF]))


def received(data: bytes, limit: int = 48) -> str:
    """What came from the device, for an error message: its length and first bytes in hex."""
    shown = data[:limit].hex(" ")
    return f"{len(data)} bytes: {shown}{' ...' if len(data) > limit else ''}" if data else "0 bytes"


class _Reply:
    """Reads the fields of one reply payload; anything out of place is a ProtocolError that
    names the reply and shows what was received."""

    def __init__(self, payload: bytes, what: str):
        self.p, self.what, self.off = bytes(payload), what, 0

    def fail(self, problem: str) -> ProtocolError:
        return ProtocolError(f"malformed {self.what} reply from the device: {problem} "
                             f"(received {received(self.p)})")

    def take(self, fmt: str) -> tuple:
        n = struct.calcsize(fmt)
        if self.off + n > len(self.p):
            raise self.fail(f"truncated: it ends at byte {len(self.p)}, {self.off + n} expected")
        values = struct.unpack_from(fmt, self.p, self.off)
        self.off += n
        return values

    def text(self, n: int, field: str) -> str:
        (raw,) = self.take(f"{n}s")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"the {field} is not UTF-8 text") from None

    def end(self):
        if self.off != len(self.p):
            raise self.fail(f"{len(self.p) - self.off} bytes more than its fields")


def parse_error(payload: bytes) -> FirmwareError:
    """The error an ERROR frame reports (one too short to say which: error -1, 'malformed')."""
    r = _Reply(payload, "error")
    try:
        code, req, detail = r.take("<BBH")
    except ProtocolError as e:
        return FirmwareError(-1, 0, 0, str(e))
    return FirmwareError(code, req, detail, r.p[r.off:].decode(errors="replace"))


def parse_info(p: bytes) -> dict:
    r = _Reply(p, "INFO")
    (proto, unit, hz, n_in, n_out, n_layers, ws, in_scale, in_zp, out_scale, out_zp,
     stack) = r.take("<BBIHHHIfifiI")
    model = r.text(*r.take("B"), "model name")
    board = r.text(*r.take("B"), "board name")
    r.end()
    if unit not in (COST_CYCLES, COST_TICKS) or hz == 0:
        raise r.fail(f"cost unit {unit} at {hz} Hz (expected unit {COST_CYCLES} or {COST_TICKS}, hz > 0)")
    if n_in == 0 or n_out == 0:
        raise r.fail(f"input size {n_in}, output size {n_out}")
    if not (np.isfinite(in_scale) and in_scale > 0 and np.isfinite(out_scale) and out_scale > 0):
        raise r.fail(f"input scale {in_scale}, output scale {out_scale} (positive numbers expected)")
    if not (-128 <= in_zp <= 127 and -128 <= out_zp <= 127):
        raise r.fail(f"zero points {in_zp}, {out_zp} (int8 expected)")
    return {"protocol": proto, "cost_unit": unit, "hz": hz, "input_size": n_in, "output_size": n_out,
            "num_layers": n_layers, "workspace": ws, "input_scale": in_scale, "input_zero_point": in_zp,
            "output_scale": out_scale, "output_zero_point": out_zp, "stack_used": stack,
            "model": model, "board": board}


def parse_infer(p: bytes) -> dict:
    r = _Reply(p, "inference")
    pred, unit, nl, hz, cost = r.take("<HBBII")
    layers = list(r.take(f"<{nl}I"))
    (n_out,) = r.take("<H")
    out = np.frombuffer(r.take(f"{n_out}s")[0], dtype=np.int8).copy()
    r.end()
    if unit not in (COST_CYCLES, COST_TICKS) or hz == 0:
        raise r.fail(f"cost unit {unit} at {hz} Hz (expected unit {COST_CYCLES} or {COST_TICKS}, hz > 0)")
    if n_out == 0 or pred >= n_out:
        raise r.fail(f"predicted class {pred} of {n_out} outputs")
    return {"class": pred, "cost_unit": unit, "hz": hz, "cost": cost, "layers": layers, "output": out}


TEXT_RESULT_FIELDS = ("class", "cost", "unit", "hz", "output")


def parse_text_result(line: str) -> dict:
    """`result class=C cost=N unit=cycles|ticks hz=H output=o0,o1,...` (text mode)."""
    def fail(problem):
        shown = line if len(line) <= 200 else line[:200] + " ..."
        return ProtocolError(f"malformed text result from the device: {problem} (received {shown!r})")

    words = line.split()
    if not words or words[0].lower() != "result":
        raise fail("it does not start with 'result'")
    fields = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or key in fields:
            raise fail(f"{word!r} is not one KEY=VALUE field")
        fields[key] = value
    missing = [k for k in TEXT_RESULT_FIELDS if k not in fields]
    if missing:
        raise fail(f"no {', '.join(missing)}")
    if fields["unit"] not in ("cycles", "ticks"):
        raise fail(f"unit {fields['unit']!r}")
    try:
        numbers = {k: int(fields[k]) for k in ("class", "cost", "hz")}
        output = [int(v) for v in fields["output"].split(",")]
    except ValueError:
        raise fail("a number that is not an integer") from None
    if numbers["hz"] <= 0 or not all(-128 <= v <= 127 for v in output) or \
            numbers["class"] < 0 or numbers["cost"] < 0:
        raise fail("a value out of range")
    return {"class": numbers["class"], "cost": numbers["cost"],
            "cost_unit": COST_CYCLES if fields["unit"] == "cycles" else COST_TICKS,
            "hz": numbers["hz"], "layers": [], "output": np.array(output, dtype=np.int8)}


def instructions(ticks: int, hz: int, icount_shift: int) -> int:
    """QEMU `-icount shift=S`: one instruction = 2^S ns of virtual time."""
    return int(round(ticks * (1e9 / hz) / (1 << icount_shift)))


def describe_cost(r: dict, icount_shift: int | None) -> str:
    if r["cost_unit"] == COST_CYCLES:
        return f"{r['cost']:,} cycles ({r['cost'] / r['hz'] * 1e3:.3f} ms at {r['hz'] / 1e6:g} MHz)"
    if icount_shift is not None:
        return f"{instructions(r['cost'], r['hz'], icount_shift):,} instructions"
    if r["hz"] == 1_000_000:
        return f"{r['cost']:,} us (timer ticks at 1 MHz)"
    return f"{r['cost']:,} timer ticks at {r['hz'] / 1e6:g} MHz"


# ---- QEMU ------------------------------------------------------------------------------

def require_elf(path: str, build: str):
    """A firmware that is not an ELF file would only crash the emulator: say so up front."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise UserError(f"{path} is not an ELF file; pass the firmware image the build made "
                            f"(build it: {build})")


class ChildProcess:
    """A firmware this client starts (QEMU, a native64 process): start() -> the port to open,
    connected() once it is open, wait() for its exit status after EXIT, stop() -> its stderr."""
    what = "the firmware process"
    stop_signal = signal.SIGTERM
    proc = None

    def connected(self):
        pass

    def wait(self, timeout: float = 30) -> int:
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ProtocolError(f"{self.what} did not exit after the EXIT request") from None
        self._kill_group()
        return status

    def _kill_group(self):
        """Ends whatever is left of the process group the child leads (start_new_session): RIOT's
        native64 forks a helper process that outlives the main one and would stay behind."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):   # the group is gone already
            pass

    def exited_within(self, seconds: float) -> bool:
        try:
            self.proc.wait(seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> str:
        """Ends the process and its group (at most 15 s), whatever signal comes meanwhile."""
        with stop_signals.deferred():   # an Interrupted in here would skip the kill
            if self.proc is None:
                return ""
            if self.proc.poll() is None:
                self.proc.send_signal(self.stop_signal)   # `timeout` passes it on
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            self._kill_group()          # its own process group: `timeout`, the firmware, their children
            try:
                _, err = self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                err = b""
            return (err or b"").decode(errors="replace")


class Qemu(ChildProcess):
    """The firmware on QEMU's MPS2 AN500 (Cortex-M7), serial line on 127.0.0.1:<free port>."""
    what = "QEMU"

    def __init__(self, elf: str, icount_shift: int = QEMU_ICOUNT_SHIFT, time_limit: float = 900,
                 trace: str | None = None):
        if not os.path.isfile(elf):
            raise UserError(f"{elf}: no such firmware file (build it: scons board=mps2-an500)")
        require_elf(elf, "scons board=mps2-an500")
        self.qemu = shutil.which("qemu-system-arm")
        if not self.qemu:
            raise UserError("qemu-system-arm not found: apt-get install --no-install-recommends "
                            "qemu-system-arm")
        self.elf, self.icount_shift, self.time_limit, self.trace = elf, icount_shift, time_limit, trace
        self.proc = None
        self.port = None

    def command(self, port: int) -> list:
        cmd = []
        if shutil.which("timeout"):
            cmd = ["timeout", "--kill-after=5", str(int(self.time_limit))]
        cmd += [self.qemu, "-M", "mps2-an500", "-cpu", "cortex-m7", "-display", "none",
                "-monitor", "none", "-nodefaults", "-semihosting-config", "enable=on,target=native",
                "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
                "-kernel", self.elf]
        if self.icount_shift is not None:
            cmd[cmd.index("-kernel"):cmd.index("-kernel")] = ["-icount", f"shift={self.icount_shift}"]
        if self.trace:
            cmd += self.trace
        return cmd

    def start(self) -> str:
        """Start QEMU; returns the pyserial URL. QEMU holds the guest until we connect."""
        import select
        for _attempt in range(5):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            # its own process group: stop() can end `timeout` and QEMU together; no signal
            # between the start and the recording of its pid (stop() would not know it)
            with stop_signals.deferred():
                self.proc = subprocess.Popen(self.command(port), stdout=subprocess.DEVNULL,
                                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            deadline = time.monotonic() + 20
            err = b""
            while time.monotonic() < deadline and self.proc.poll() is None:
                stop_signals.check()
                ready, _, _ = select.select([self.proc.stderr], [], [], 0.1)
                if ready:
                    chunk = os.read(self.proc.stderr.fileno(), 4096)
                    err += chunk
                    if b"waiting for connection" in err:
                        self.port = port
                        return f"socket://127.0.0.1:{port}"
            err = err.decode(errors="replace") + self.stop()
            if "Address already in use" not in err:
                raise ProtocolError(f"QEMU did not start: {err.strip() or 'no output'}")
        raise ProtocolError("QEMU could not get a free TCP port")


# ---- RIOT native64 ----------------------------------------------------------------------

class Native(ChildProcess):
    """The RIOT application built for RIOT's native64 board: a Linux process whose stdio (RIOT's
    UART) is the slave side of a pseudo-terminal; the client opens that pty as its serial port.
    The pty is raw (no echo, no line editing) before the process starts, so no byte is changed."""
    what = "the native64 process"
    # RIOT native blocks every signal it has no interrupt for (SIGTERM too) while its threads
    # run; SIGINT, its Ctrl-C, is always open and shuts it down
    stop_signal = signal.SIGINT

    def __init__(self, elf: str, time_limit: float = 900):
        if not os.path.isfile(elf):
            raise UserError(f"{elf}: no such firmware file (build it: scons board=native64 RIOTBASE=...)")
        require_elf(elf, "scons board=native64 RIOTBASE=...")
        self.elf, self.time_limit = elf, time_limit
        self._master = self._slave = None

    def start(self) -> str:
        """Start the process; returns the pty device for the serial port."""
        import pty
        import tty
        cmd = [self.elf]
        if shutil.which("timeout"):
            cmd = ["timeout", "--kill-after=5", str(int(self.time_limit))] + cmd
        # no signal between the start and the recording of the pid and the pty (stop() ends
        # and closes what is recorded)
        with stop_signals.deferred():
            master, slave = pty.openpty()
            self._master = master
            self._slave = slave   # kept open until the client has opened the device (raw settings)
            tty.setraw(slave)
            tty.setraw(master)
            # RIOT native reads fd 0 and writes fd 1: both on the pty's master side, so that the
            # client's slave device behaves like the board's serial line
            self.proc = subprocess.Popen(cmd, stdin=master, stdout=master, stderr=subprocess.PIPE,
                                         start_new_session=True)
        return os.ttyname(slave)

    def connected(self):
        """The client has the pty open: the parent's extra descriptor can go."""
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def stop(self) -> str:
        with stop_signals.deferred():   # the pty is closed too, whatever signal comes
            err = super().stop()
            for fd in (self._master, self._slave):
                if fd is not None:
                    os.close(fd)
            self._master = self._slave = None
        return err


# ---- inputs ----------------------------------------------------------------------------

class Sample:
    def __init__(self, name, pixels=None, tensor=None, label=None):
        self.name, self.pixels, self.tensor, self.label = name, pixels, tensor, label


# An input image is scaled to the model's input (28x28 for the digits): 4096x4096 is plenty, and
# bounds what a small file that declares a huge image (a decompression bomb) can make us decode.
MAX_IMAGE_PIXELS = 4096 * 4096


def load_png(path: str, size: int, hw: tuple) -> np.ndarray:
    import warnings
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():   # PIL warns about large images: refused below, once
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)    # reads the header only
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise UserError(f"{path}: a {img.width}x{img.height} image, more than the {MAX_IMAGE_PIXELS:,} "
                            "pixels an input may have; scale it down first")
        img = img.convert("L")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None
    if img.size != (hw[1], hw[0]):
        img = img.resize((hw[1], hw[0]), Image.BILINEAR)
    px = np.asarray(img, dtype=np.uint8).ravel()
    if px.size != size:
        raise UserError(f"{path}: {px.size} pixels, the model takes {size}")
    return px


def samples_from_npy(path: str, size: int, info: dict) -> list:
    try:   # memory-mapped: a header that declares more than the file holds is an error, not a MemoryError
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None
    if not isinstance(a, np.ndarray):
        raise UserError(f"{path}: an .npz archive; save one array with numpy.save")
    if a.size % size or not a.size:
        raise UserError(f"{path}: {a.size} values is not a positive multiple of the model's input size {size}")
    a = np.asarray(a).reshape(-1, size)
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        # quantizing would turn NaN and +inf into -128 without a word
        bad = int(np.argmin(np.isfinite(a).all(axis=1)))
        raise UserError(f"{path}: image {bad} holds NaN or infinite values; images are floats in [0, 1]")
    base = os.path.basename(path)
    if a.dtype == np.uint8:
        return [Sample(f"{base}[{i}]", pixels=row) for i, row in enumerate(a)]
    if a.dtype == np.int8:
        return [Sample(f"{base}[{i}]", tensor=row) for i, row in enumerate(a)]
    if np.issubdtype(a.dtype, np.floating):
        q = quantize(a.astype(np.float32), info["input_scale"], info["input_zero_point"])
        return [Sample(f"{base}[{i}]", tensor=row) for i, row in enumerate(q)]
    raise UserError(f"{path}: dtype {a.dtype}; use uint8 pixels, int8 tensors or float images in [0, 1]")


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """As the firmware (and torch) does: q = clamp(rint(x * (1/scale)) + zp), float32 only."""
    inv = np.float32(1.0) / np.float32(scale)
    q = np.rint(np.asarray(x, dtype=np.float32) * inv).astype(np.int64) + zero_point
    return np.clip(q, -128, 127).astype(np.int8)


def pixels_to_tensor(pixels: np.ndarray, info: dict) -> np.ndarray:
    x = np.asarray(pixels, dtype=np.float32) / np.float32(255.0)
    return quantize(x, info["input_scale"], info["input_zero_point"])


def dataset_samples(spec: str, size: int, count: int) -> list:
    from models.data import image_data
    side = int(round(size ** 0.5))
    if side * side != size:
        raise UserError(f"--dataset gives square images; this model's input has {size} values")
    _, held = image_data(spec, side)     # DataError (an NncError) names the problem
    n = min(count, len(held)) if count else len(held)
    px = np.rint(held.x[:n].reshape(n, -1) * 255.0).astype(np.uint8)
    return [Sample(f"{spec}#{i}", pixels=px[i], label=int(held.y[i])) for i in range(n)]


def gather_samples(args, info: dict) -> list:
    size = info["input_size"]
    side = int(round(size ** 0.5))
    out = []
    for path in args.inputs:
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
        if path.lower().endswith(".npy"):
            out += samples_from_npy(path, size, info)
        else:
            out.append(Sample(os.path.basename(path), pixels=load_png(path, size, (side, side))))
    if args.dataset:
        out += dataset_samples(args.dataset, size, args.count)
    if args.random:
        rng = np.random.default_rng(args.seed)
        out += [Sample(f"random#{i}", pixels=rng.integers(0, 256, size, dtype=np.uint8))
                for i in range(args.random)]
    if args.count and len(out) > args.count:
        out = out[:args.count]
    return out


# ---- main ------------------------------------------------------------------------------

def load_host(args):
    if not (args.so or args.header):
        return None
    if not (args.so and args.header):
        raise UserError("--so and --header go together (the host library and its generated header)")
    from hostlib import load
    return load(args.so, args.header)    # HostLibError (an NncError) names the file and the fix


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device (/dev/ttyACM0) or pyserial URL (socket://HOST:PORT)")
    where.add_argument("--qemu", metavar="ELF", help="start this mps2-an500 firmware under QEMU and talk to it")
    where.add_argument("--native", metavar="ELF", help="start this RIOT native64 build on a pty and talk to it")
    ap.add_argument("inputs", nargs="*", help="PNG images or .npy arrays")
    ap.add_argument("--dataset", help="send held-out samples of a data set: digits | mnist:DIR")
    ap.add_argument("--random", type=int, default=0, metavar="N", help="send N random images")
    ap.add_argument("--seed", type=int, default=0, help="seed of --random (default 0)")
    ap.add_argument("--count", type=int, default=0, metavar="N", help="send at most N samples")
    ap.add_argument("--text", action="store_true", help="use the firmware's text mode instead of binary frames")
    ap.add_argument("--so", help="host library of the same model, to compare outputs (liblenet5.so)")
    ap.add_argument("--header", help="generated header of the model (tvmgen_<model>.h), with --so")
    ap.add_argument("--baud", type=int, default=115200, help="baud rate of a serial device (default 115200)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a reply (default 20)")
    ap.add_argument("--icount-shift", type=int, default=None, metavar="S",
                    help=f"QEMU -icount shift (with --qemu default {QEMU_ICOUNT_SHIFT}: exact instruction "
                         "counts); with --port to an emulator started elsewhere, the shift it runs with")
    ap.add_argument("--qemu-time-limit", type=float, default=900, help="kill QEMU (or the native64 process) after this many seconds")
    ap.add_argument("--bench", metavar="JSON", help="write the per-inference and per-layer costs here")
    ap.add_argument("--quiet", "-q", action="store_true", help="only print the summary")
    ap.set_defaults(run=main)


def check_args(args) -> None:
    if args.qemu and args.icount_shift is None:
        args.icount_shift = QEMU_ICOUNT_SHIFT
    if args.icount_shift is not None and not 0 <= args.icount_shift <= 10:
        raise UserError(f"--icount-shift must be 0..10, got {args.icount_shift}", "--icount-shift")
    if not (args.inputs or args.dataset or args.random):
        raise UserError("nothing to send: give image files, --dataset or --random")
    if args.bench and (os.path.isdir(args.bench)
                       or not os.path.isdir(os.path.dirname(os.path.abspath(args.bench)))):
        # found now, not after every inference has run
        raise UserError(f"--bench {args.bench}: give a file name in an existing folder")


def run(args) -> int:
    check_args(args)
    host = load_host(args)
    if args.qemu:     # the emulator or the native64 process this client starts, if any
        qemu = Qemu(args.qemu, args.icount_shift, args.qemu_time_limit)
    elif args.native:
        qemu = Native(args.native, args.qemu_time_limit)
    else:
        qemu = None
    fw = None
    try:
        port = qemu.start() if qemu is not None else args.port
        fw = Firmware(port, timeout=args.timeout, baudrate=args.baud)
        if qemu is not None:
            qemu.connected()
        info = fw.info()
        # flushed: the sign that the firmware answers, for whoever reads this through a pipe
        print(f"firmware: model {info['model']} on {info['board']}, input {info['input_size']} int8, "
              f"output {info['output_size']}, arena {info['workspace']} B, protocol {info['protocol']}",
              flush=True)
        samples = gather_samples(args, info)
        mismatches = errors = correct = labelled = 0
        costs, layer_costs = [], []
        for s in samples:
            stop_signals.check()
            tensor = s.tensor if s.tensor is not None else pixels_to_tensor(s.pixels, info)
            try:
                if args.text:
                    if s.pixels is None:
                        raise UserError(f"{s.name}: text mode sends pixels; this sample is a tensor")
                    r = fw.infer_text(s.pixels)
                elif s.pixels is not None:
                    r = fw.infer_u8(s.pixels)
                else:
                    r = fw.infer_i8(s.tensor)
            except FirmwareError as e:
                errors += 1
                print(f"{s.name}: {e}")
                continue
            costs.append(r["cost"])
            if r["layers"]:
                layer_costs.append(r["layers"])
            line = f"{s.name}: class {r['class']}"
            if s.label is not None:
                labelled += 1
                correct += int(r["class"] == s.label)
                line += f" (label {s.label})"
            line += f", cost {describe_cost(r, args.icount_shift)}"
            if host is not None:
                expected = host.run(tensor.reshape((1,) + tuple(host.inputs[0].shape[1:])))[0].ravel()
                if np.array_equal(expected, r["output"]):
                    line += ", host library: match"
                else:
                    mismatches += 1
                    diff = np.flatnonzero(expected != r["output"])
                    line += (f", host library: MISMATCH at {len(diff)} of {len(expected)} outputs "
                             f"(firmware {r['output'][diff[:4]].tolist()} vs host {expected[diff[:4]].tolist()})")
            if not args.quiet:
                print(line)
        fw._info = None
        info_after = fw.info()   # again: the stack high-water mark after the inferences
        summary = f"{len(costs)} of {len(samples)} inputs answered"
        if labelled:
            summary += f", accuracy {correct}/{labelled} = {100.0 * correct / labelled:.1f}%"
        if host is not None:
            summary += f", {mismatches} mismatches against the host library"
        if costs:
            unit_r = {"cost": int(np.mean(costs)), "cost_unit": info["cost_unit"], "hz": info["hz"]}
            summary += f", mean cost per inference {describe_cost(unit_r, args.icount_shift)}"
        summary += f", stack used {info_after['stack_used']} B"
        print(summary)
        if args.bench:
            write_bench(args.bench, info_after, costs, layer_costs, args.icount_shift)
        if qemu is not None:
            fw.exit(0)
            rc = qemu.wait()
            if rc != 0:
                print(f"error: {qemu.what} exited with status {rc}", file=sys.stderr)
                return 1
        return 1 if (mismatches or errors) else 0
    except ProtocolError as e:
        if qemu is not None and qemu.proc is not None and qemu.exited_within(5):
            # the process died (e.g. not a firmware image): its own words say why
            rc, err = qemu.proc.returncode, qemu.stop().strip()
            raise ProtocolError(f"{e}; {qemu.what} exited with status {rc}"
                                + (": " + "\n".join(err.splitlines()[:4]) if err else "")) from None
        raise
    finally:
        with stop_signals.deferred():   # a signal now must not skip stopping the child
            if fw is not None:
                fw.close()
            if qemu is not None:
                qemu.stop()


def write_bench(path, info, costs, layer_costs, shift):
    def conv(t):
        return instructions(t, info["hz"], shift) if (shift is not None and info["cost_unit"] == COST_TICKS) else t
    unit = "instructions" if (shift is not None and info["cost_unit"] == COST_TICKS) else (
        "cycles" if info["cost_unit"] == COST_CYCLES else "ticks")
    data = {"model": info["model"], "board": info["board"], "unit": unit, "icount_shift": shift,
            "inferences": len(costs), "per_inference": [conv(c) for c in costs],
            "per_layer": [conv(int(round(np.mean(col)))) for col in zip(*layer_costs)] if layer_costs else [],
            "stack_used": info["stack_used"], "workspace": info["workspace"]}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def main(args) -> int:
    """SIGTERM/SIGINT/SIGHUP raise Interrupted (nnc.cli.main exits 128 + the signal), so that the
    emulator or native process this client started is stopped on the way out."""
    with stop_signals.handled():
        return run(args)
