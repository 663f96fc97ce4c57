"""tools/serial_client.py against a misbehaving device (no emulator needed).

- Property tests (hypothesis): the reply parsers and the frame reader, given any bytes, return a
  reply or raise the client's ProtocolError; never another exception. Valid replies round-trip.
- End to end: a fake device on a TCP socket answers with malformed replies; the client exits 1
  with one clear line naming what it received, no traceback.
"""
import os
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.tools   # test tier (pytest.ini)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from nnc.cli import serial_client as sc

CLIENT = os.path.join(ROOT, "tools", "serial_client.py")
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def info_payload(model=b"lenet5", board=b"fake", unit=sc.COST_TICKS, hz=25_000_000, n_in=784, n_out=10,
                 scale=0.0039, zp=-128):
    return (struct.pack("<BBIHHHIfifiI", 1, unit, hz, n_in, n_out, 5, 2824, scale, zp, 0.1, 3, 220)
            + bytes([len(model)]) + model + bytes([len(board)]) + board)


def infer_payload(out, pred=None, layers=(10, 20), unit=sc.COST_TICKS, hz=25_000_000, cost=1000):
    out = np.asarray(out, dtype=np.int8)
    pred = int(np.argmax(out)) if pred is None else pred
    return (struct.pack("<HBBII", pred, unit, len(layers), hz, cost) + struct.pack(f"<{len(layers)}I", *layers)
            + struct.pack("<H", len(out)) + out.tobytes())


def text_result(out, pred=0, cost=5, hz=25_000_000):
    return f"result class={pred} cost={cost} unit=ticks hz={hz} output=" + ",".join(map(str, out))


@PROPERTY
@given(st.binary(max_size=300))
def test_binary_parsers_never_raise_anything_but_protocol_errors(data):
    for parse in (sc.parse_info, sc.parse_infer, sc.parse_error):
        try:
            r = parse(data)
        except sc.ProtocolError as e:
            assert "malformed" in str(e) and "received" in str(e)
        else:
            assert r is not None


@PROPERTY
@given(st.text(max_size=300) | st.builds(lambda o, junk: text_result(o) + junk,
                                          st.lists(st.integers(-300, 300), min_size=1, max_size=12),
                                          st.text(max_size=20)))
def test_text_result_parser_never_raises_anything_but_protocol_errors(line):
    try:
        r = sc.parse_text_result(line)
    except sc.ProtocolError as e:
        assert "malformed text result" in str(e)
    else:
        assert r["class"] >= 0 and len(r["output"]) >= 1


@PROPERTY
@given(st.lists(st.integers(-128, 127), min_size=1, max_size=64), st.lists(st.integers(0, 2**32 - 1), max_size=20),
       st.text(min_size=0, max_size=40), st.text(max_size=40))
def test_valid_replies_round_trip(out, layers, model, board):
    r = sc.parse_infer(infer_payload(out, layers=layers))
    assert r["output"].tolist() == out and r["layers"] == layers and r["class"] == int(np.argmax(out))
    m, b = model.encode()[:255], board.encode()[:255]
    try:
        m.decode(), b.decode()
    except UnicodeDecodeError:      # cut inside a character: a malformed name
        return
    info = sc.parse_info(info_payload(m, b))
    assert info["model"] == m.decode() and info["board"] == b.decode() and info["input_size"] == 784
    t = sc.parse_text_result(text_result(out, pred=len(out) - 1))
    assert t["output"].tolist() == out and t["class"] == len(out) - 1


class FakeSerial:
    """Bytes a device sends, for Firmware.read_frame (no real port)."""

    def __init__(self, data):
        self.data = bytearray(data)

    def read(self, n):
        chunk = bytes(self.data[:n])
        del self.data[:n]
        return chunk


def reader(data):
    fw = sc.Firmware.__new__(sc.Firmware)
    fw.ser, fw.timeout, fw.text_seen, fw._info = FakeSerial(data), 0.002, b"", None
    return fw


@PROPERTY
@given(st.binary(max_size=200), st.binary(max_size=100))
def test_frame_reader_never_raises_anything_but_protocol_errors(before, body):
    fw = reader(before + sc.MAGIC + body)
    try:
        ftype, payload = fw.read_frame(0.002)
    except sc.ProtocolError:
        pass
    else:
        assert isinstance(payload, bytes)


@PROPERTY
@given(st.integers(0, 255), st.binary(max_size=120))
def test_any_good_frame_is_read_back(ftype, payload):
    fw = reader(b"boot banner\r\n" + sc.make_frame(ftype, payload))
    assert fw.read_frame(0.5) == (ftype, payload)


# ---- end to end: the client against a fake device -------------------------------------------

class FakeDevice:
    """A TCP 'serial port' answering every request frame with `reply(type, payload)` bytes."""

    def __init__(self, reply):
        self.reply = reply
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.server.accept()
        buf = b""
        with conn:
            while True:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while True:
                    i = buf.find(sc.MAGIC)
                    if i < 0 or len(buf) < i + 6:
                        break
                    n = struct.unpack_from("<H", buf, i + 4)[0]
                    if len(buf) < i + 8 + n:
                        break
                    ftype, payload = buf[i + 3], buf[i + 6:i + 6 + n]
                    buf = buf[i + 8 + n:]
                    conn.sendall(self.reply(ftype, payload))


def reply_with(info=None, infer=None, raw_infer=None):
    """INFO is answered with `info` (a payload), inferences with `infer` (a payload) or the raw
    bytes `raw_infer`; the defaults are good replies."""
    def reply(ftype, payload):
        if ftype == sc.T_INFO:
            return sc.make_frame(sc.T_REPLY | sc.T_INFO, info if info is not None else info_payload())
        if raw_infer is not None:
            return raw_infer
        return sc.make_frame(sc.T_REPLY | ftype, infer if infer is not None else infer_payload(np.arange(10)))
    return reply


MALFORMED = {
    "info_truncated": (dict(info=info_payload()[:20]), "malformed INFO reply from the device"),
    "info_model_not_utf8": (dict(info=info_payload(model=b"\xff\xfelenet")), "the model name is not UTF-8"),
    "info_zero_hz": (dict(info=info_payload(hz=0)), "malformed INFO reply"),
    "info_zero_input": (dict(info=info_payload(n_in=0)), "input size 0"),
    "infer_garbage": (dict(infer=b"\x01\x02\x03"), "malformed inference reply from the device"),
    "infer_extra_bytes": (dict(infer=infer_payload(np.arange(10)) + b"xx"), "2 bytes more than its fields"),
    "infer_class_out_of_range": (dict(infer=infer_payload(np.arange(10), pred=77)), "predicted class 77 of 10"),
    "bad_checksum": (dict(raw_infer=sc.make_frame(0x81, b"abc")[:-1] + b"\x00"), "bad checksum"),
    "wrong_type": (dict(raw_infer=sc.make_frame(0x83, b"")), "expected reply type 0x81, got 0x83"),
    "bad_version": (dict(raw_infer=sc.MAGIC + b"\x07\x81\x00\x00" + struct.pack("<H", sc.crc16(b"\x07\x81\x00\x00"))),
                    "protocol version 7"),
    "no_frame": (dict(raw_infer=b"no frame here"), "within 2 s: it sent 13 bytes that start no frame"),
    "garbage_flood": (dict(raw_infer=bytes(b % 0xA5 for b in range(20000))),
                      "it sent 20000 bytes that start no frame"),
    "silence": (dict(raw_infer=b""), "no reply frame from the device within 2 s: it sent nothing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_device_reply_is_a_clear_error(case):
    kwargs, words = MALFORMED[case]
    dev = FakeDevice(reply_with(**kwargs))
    r = subprocess.run([sys.executable, CLIENT, "--port", dev.url, "--random", "1", "--timeout", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), r.stderr
    assert words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_good_fake_device_is_answered():
    dev = FakeDevice(reply_with())
    r = subprocess.run([sys.executable, CLIENT, "--port", dev.url, "--random", "2"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "2 of 2 inputs answered" in r.stdout


def test_malformed_text_result_is_a_clear_error():
    fw = reader(b"result class=1 cost=x unit=ticks hz=1 output=1,2\r\n")
    fw.send_raw = lambda data: None
    with pytest.raises(sc.ProtocolError, match="malformed text result.*not an integer"):
        fw.infer_text(np.zeros(4, dtype=np.uint8))
    fw = reader(b"\xff\xfe\x00garbage\r\nresult class=1 cost=3 unit=ticks hz=1 output=1,2\r\n")
    fw.send_raw = lambda data: None
    fw.timeout = 1
    assert fw.infer_text(np.zeros(4, dtype=np.uint8))["output"].tolist() == [1, 2]


def _npy_header(shape, descr="<f4"):
    head = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    head += " " * (118 - len(head)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode()


@pytest.mark.parametrize("what", ["nan", "inf", "empty", "huge header", "npz"])
def test_hostile_npy_inputs_are_refused(tmp_path, what):
    """NaN and +inf images were quantized to -128 without a word; a header declaring 10^12
    images was a MemoryError; an empty array sent nothing."""
    path = tmp_path / "x.npy"
    if what in ("nan", "inf"):
        x = np.full((3, 4), 0.5, np.float32)
        x[1, 2] = np.nan if what == "nan" else np.inf
        np.save(path, x)
    elif what == "empty":
        np.save(path, np.zeros((0, 4), np.uint8))
    elif what == "npz":
        np.savez(open(path, "wb"), x=np.zeros((3, 4), np.uint8))
    else:
        path.write_bytes(_npy_header((10 ** 12, 4)) + bytes(64))
    with pytest.raises(sc.UserError) as e:
        sc.samples_from_npy(str(path), 4, {"input_scale": 1 / 255, "input_zero_point": -128})
    assert str(path) in str(e.value) and ("image 1" in str(e.value) or what not in ("nan", "inf"))


def _png(path, width, height):
    """A grayscale PNG of zeros, written row by row: a few hundred KB for 400 million pixels."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    rows = b"".join(z.compress(b"\x00" + bytes(width)) for _ in range(height)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return str(path)


def test_image_bombs_are_refused_before_decoding(tmp_path):
    """A PNG declaring 20000x20000 pixels was PIL's DecompressionBombError, an internal error
    (exit 3); 5000x5000 was decoded (25 MB) with PIL's warning. Both refused from the header."""
    for w, h in ((20000, 20000), (5000, 5000)):
        path = _png(tmp_path / f"{w}.png", w, h)
        with pytest.raises(sc.UserError, match=f"{w}x{h} image, more than the 16,777,216 pixels|"
                                              "400000000 pixels.*decompression bomb"):
            sc.load_png(path, 784, (28, 28))
    assert sc.load_png(_png(tmp_path / "ok.png", 56, 56), 784, (28, 28)).shape == (784,)
