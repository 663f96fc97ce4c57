"""The digit pad (tools/digit_pad.py) under Xvfb: a digit drawn with synthetic mouse events
(xdotool, through the X server like a real mouse) is sent over the serial line, and the
prediction the window shows equals the host library's prediction for the same 28x28 image.

Two peers: a fake board (a TCP server in this process speaking firmware/riot/protocol.h and
answering with the host library) which always runs, and the emulated board (QEMU mps2-an500 with
the real firmware, started by the app's --emulate) when its firmware is built. Screenshots go to
build/test-artifacts/.
"""
import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import BUILD, ROOT, load_host_library

from nnc.cli import serial_client as sc

APP = os.path.join(ROOT, "tools", "digit_pad.py")
ARTIFACTS = os.path.join(BUILD, "test-artifacts")
MODEL = "lenet5"


# ---- X server --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def display():
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.fail("Xvfb and xdotool are needed: apt-get install --no-install-recommends xvfb xdotool")
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    num = b""
    deadline = time.monotonic() + 20
    while not num.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(r, 16)
        if not chunk:
            break
        num += chunk
    os.close(r)
    if not num.strip():
        proc.kill()
        pytest.fail("Xvfb did not start")
    yield f":{num.decode().strip()}"
    proc.terminate()
    proc.wait(10)


def xdotool(disp, *args):
    subprocess.run(["xdotool", *map(str, args)], check=True, env=dict(os.environ, DISPLAY=disp), timeout=30)


# ---- fake board ------------------------------------------------------------------------

class FakeBoard:
    """One connection, INFO and INFER_U8 only, answers computed by the host library."""

    def __init__(self, host):
        self.host = host
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.url = f"socket://127.0.0.1:{self.sock.getsockname()[1]}"
        inp, out = host.inputs[0], host.outputs[0]
        self.info = {"input_scale": inp.scale, "input_zero_point": inp.zero_point}
        self.info_payload = (struct.pack("<BBIHHHIfifiI", 1, sc.COST_TICKS, 25_000_000, 784, 10, 0, 5880,
                                         inp.scale, inp.zero_point, out.scale, out.zero_point, 1024)
                             + bytes([len(MODEL)]) + MODEL.encode() + bytes([4]) + b"fake")
        self.requests = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.sock.accept()
        f = conn.makefile("rb")
        while True:
            if f.read(2) != sc.MAGIC:
                return
            hdr = f.read(4)
            _, ftype, length = struct.unpack("<BBH", hdr)
            payload = f.read(length)
            f.read(2)
            self.requests += 1
            if ftype == sc.T_INFO:
                conn.sendall(sc.make_frame(sc.T_REPLY | ftype, self.info_payload))
            elif ftype == sc.T_INFER_U8:
                t = sc.pixels_to_tensor(np.frombuffer(payload, dtype=np.uint8), self.info)
                out = self.host.run(t.reshape(1, 1, 28, 28))[0].ravel()
                reply = struct.pack("<HBBII", int(np.argmax(out)), sc.COST_TICKS, 0, 25_000_000, 12345)
                reply += struct.pack("<H", len(out)) + out.astype(np.int8).tobytes()
                conn.sendall(sc.make_frame(sc.T_REPLY | ftype, reply))
            else:
                conn.sendall(sc.make_frame(sc.T_ERROR, bytes([3, ftype, 0, 0]) + b"bad type"))

    def close(self):
        self.sock.close()


# ---- driving the app -------------------------------------------------------------------

def zero_stroke(canvas, n=48):
    """Screen points of an upright ellipse (a '0') inside the canvas geometry [x, y, w, h]."""
    x, y, w, h = canvas
    cx, cy = x + w / 2, y + h / 2
    return [(int(cx + 0.25 * w * math.sin(2 * math.pi * i / n)), int(cy - 0.38 * h * math.cos(2 * math.pi * i / n)))
            for i in range(n + 2)]


def wait_state(path, proc, pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"digit_pad exited ({proc.returncode}) while waiting for {what}:\n{err.decode()[-3000:]}")
        try:
            with open(path) as f:
                st = json.load(f)
            if pred(st):
                return st
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"timeout waiting for {what}")


def draw_and_send(disp, tmp_path, app_args, shot_name, reply_timeout=120):
    state = str(tmp_path / "state.json")
    env = dict(os.environ, DISPLAY=disp)
    proc = subprocess.Popen([sys.executable, APP, "--state", state, *app_args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        st = wait_state(state, proc, lambda s: s["canvas"][2] > 100, 60, "the window")
        pts = zero_stroke(st["canvas"])
        cmd = ["mousemove", *pts[0], "mousedown", "1"]
        for p in pts[1:]:
            cmd += ["mousemove", *p, "sleep", "0.01"]
        cmd += ["mouseup", "1"]
        xdotool(disp, *cmd)
        bx, by, bw, bh = st["send"]
        xdotool(disp, "mousemove", bx + bw // 2, by + bh // 2, "click", "1")
        st = wait_state(state, proc, lambda s: s["results"], reply_timeout, "the answer")
        time.sleep(0.5)   # let Tk repaint before the screenshot
        from PIL import ImageGrab
        os.makedirs(ARTIFACTS, exist_ok=True)
        wx, wy, ww, wh = st["window"]
        ImageGrab.grab(bbox=(wx, wy, wx + ww, wy + wh), xdisplay=disp).save(os.path.join(ARTIFACTS, shot_name))
        return st["results"][-1], st
    finally:
        if proc.poll() is None:
            try:   # Ctrl+Q: the app's own quit (EXIT to the emulator, then QEMU leaves)
                xdotool(disp, "search", "--name", "^Digit pad$", "windowfocus", "--sync", "key", "ctrl+q")
            except subprocess.CalledProcessError:
                pass
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def check_answer(res, host):
    assert "error" not in res, res.get("error")
    pixels = np.array(res["pixels"], dtype=np.uint8)
    assert pixels.shape == (28, 28) and pixels.max() > 100, "nothing was drawn on the canvas"
    t = sc.pixels_to_tensor(pixels.ravel(), {"input_scale": host.inputs[0].scale,
                                             "input_zero_point": host.inputs[0].zero_point})
    expected = host.run(t.reshape(1, 1, 28, 28))[0].ravel()
    assert res["shown"]["prediction"] == str(int(np.argmax(expected)))   # what the window shows
    assert res["output"] == expected.tolist()
    assert res["agree"] is True and "agrees" in res["shown"]["agreement"]
    return int(np.argmax(expected))


# ---- tests -----------------------------------------------------------------------------

def test_preprocessing_matches_training_digits():
    """Held-out digits redrawn as big strokes and preprocessed like a drawing are recognised."""
    from PIL import Image
    from nnc.cli.digit_pad import preprocess
    host = load_host_library(MODEL)
    from sklearn.datasets import load_digits
    d = load_digits()
    ok = 0
    n = 80
    for img, y in zip(d.images[-n:], d.target[-n:]):
        big = np.asarray(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((256, 256), Image.BILINEAR))
        px = preprocess(big / 255.0)
        t = sc.pixels_to_tensor(px.ravel(), {"input_scale": host.inputs[0].scale,
                                             "input_zero_point": host.inputs[0].zero_point})
        ok += int(np.argmax(host.run(t.reshape(1, 1, 28, 28))[0])) == y
    assert ok / n >= 0.9
    # an empty pad is an all-zero image, not an error
    assert not preprocess(np.zeros((336, 336))).any()


def test_digit_pad_fake_board(display, tmp_path):
    host = load_host_library(MODEL)
    board = FakeBoard(host)
    try:
        res, _ = draw_and_send(display, tmp_path, ["--port", board.url], "digit_pad_fake_board.png", 30)
    finally:
        board.close()
    assert check_answer(res, host) == 0   # an ellipse is a zero
    assert res["board"] == "fake" and "12,345 timer ticks" in res["shown"]["cost"]


def firmware_elf():
    elf = os.environ.get("NNC_FW_ELF") or os.path.join(BUILD, "mps2-an500", MODEL, "fw.elf")
    if os.path.isfile(elf):
        return elf
    if not (os.path.isfile(os.path.join(ROOT, "firmware", "riot", "SConscript"))
            and shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")):
        pytest.fail(f"{elf} is not built and cannot be (firmware SConscript, arm-none-eabi-gcc, qemu)")
    subprocess.run([os.path.join(ROOT, "scons"), "-C", ROOT, "board=mps2-an500", f"model={MODEL}"],
                   check=True, capture_output=True)
    if not os.path.isfile(elf):
        pytest.fail(f"the firmware build did not produce {elf}")
    return elf


def test_digit_pad_emulated_board(display, tmp_path):
    elf = firmware_elf()
    host = load_host_library(MODEL)
    res, _ = draw_and_send(display, tmp_path, ["--emulate", "--elf", elf], "digit_pad.png")
    assert check_answer(res, host) == 0
    assert res["board"] and res["model"] == MODEL
    assert "instructions" in res["shown"]["cost"]


def test_help_and_errors(tmp_path, display):
    r = subprocess.run([sys.executable, APP, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--emulate" in r.stdout and "--port" in r.stdout
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    r = subprocess.run([sys.executable, APP], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "no display" in r.stderr
    r = subprocess.run([sys.executable, APP, "--emulate", "--elf", str(tmp_path / "missing.elf")],
                       capture_output=True, text=True, env=dict(os.environ, DISPLAY=display))
    assert r.returncode == 2 and "missing.elf" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_port_is_shown_not_raised(display, tmp_path):
    """A port nobody listens on: the window says so and stays usable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"socket://127.0.0.1:{s.getsockname()[1]}"
    res, st = draw_and_send(display, tmp_path, ["--port", url, "--timeout", "2"], "digit_pad_error.png", 30)
    assert "cannot open serial port" in res["error"]
