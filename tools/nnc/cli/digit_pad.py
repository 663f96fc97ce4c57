"""Digit pad: draw a digit with the mouse, send it to the board over the serial line, see the answer.

The drawing is preprocessed the way the training digits were made (scikit-learn's digits, from
UCI optdigits: the digit's bounding box scaled to fill a 32x32 bitmap, counted in 4x4 blocks to
8x8 values 0..16, then resized to 28x28 by models/data.py), sent as 28x28 pixels (INFER_U8), and
the answer is shown: predicted digit, the ten scores as bars, the firmware's cost figure, and
whether the host library (the same compiled model built for x86) gives the same output tensor.

    nnc pad --port /dev/ttyACM0          a board (STM32F746G-DISCO) on USB
    nnc pad --port socket://127.0.0.1:4444   an emulator started elsewhere
    nnc pad --emulate                    start the emulated board (QEMU mps2-an500) itself,
                                              firmware build/mps2-an500/lenet5/fw.elf (--elf)

Keys: Return sends, Escape clears, Ctrl+Q quits. The protocol is firmware/riot/protocol.h; the serial side is
`nnc serial`. Exit status: 0, or 2 for a usage error (no display, missing firmware).
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading

import numpy as np

from nnc.cli import ROOT
from nnc.cli import serial_client as sc   # the protocol: Firmware, Qemu, describe_cost, ...
from nnc.errors import NncError

SIDE = 28            # model input side
SCALE = 12           # screen pixels per model pixel on the drawing canvas
PAD = SIDE * SCALE   # canvas size in screen pixels (the ink is kept at this resolution)
BRUSH = 13           # brush radius in screen pixels
PREVIEW = 4          # screen pixels per model pixel in the "model input" preview
DEFAULT_MODEL = "lenet5"


# ---- preprocessing (no Tk here: tests use it directly) -------------------------------------

def preprocess(ink: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Ink (H, W) in [0, 1] (any resolution) -> (side, side) uint8 pixels like the training data.

    optdigits: the bounding box of the digit is scaled, keeping its aspect, to fit a 32x32 bitmap
    (height 32 for the usual tall digit), centred; 4x4 blocks count set bits -> 8x8 in 0..16.
    models/data.py then resizes 8x8 -> side x side bilinearly (8-bit), exactly as it made the
    training and held-out images."""
    from PIL import Image
    from models.data import _resize_digits

    ink = np.asarray(ink, dtype=np.float32)
    on = ink > 0.5
    if not on.any():
        return np.zeros((side, side), dtype=np.uint8)
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    crop = on[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    f = 32.0 / max(h, w)
    nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    small = Image.fromarray((crop * 255).astype(np.uint8), mode="L").resize((nw, nh), Image.BILINEAR)
    bitmap = np.zeros((32, 32), dtype=np.uint8)
    y0, x0 = (32 - nh) // 2, (32 - nw) // 2
    bitmap[y0:y0 + nh, x0:x0 + nw] = np.asarray(small) >= 128
    counts = bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float64)   # 0..16
    x = _resize_digits(counts[None], side)[0, 0]                              # k/255 floats
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def softmax(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    x = (q.astype(np.float64) - zero_point) * scale
    e = np.exp(x - x.max())
    return e / e.sum()


def default_host_paths(model: str) -> tuple:
    return (os.path.join(ROOT, "build", "host", model, f"lib{model}.so"),
            os.path.join(ROOT, "build", "gen", "c", model, f"tvmgen_{model}.h"))


def load_host(so: str, header: str):
    """-> (library or None, message)."""
    if not (os.path.isfile(so) and os.path.isfile(header)):
        return None, f"host library not found ({os.path.relpath(so, ROOT)}): ./scons host"
    from hostlib import HostLibError, load
    try:
        return load(so, header), ""
    except HostLibError as e:
        return None, f"host library unusable: {e}"


# ---- the board side, off the Tk thread -----------------------------------------------------

class Link:
    """Connection to the firmware; every call runs on a worker thread."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.fw = None
        self.port = None
        self.info = None
        self.lock = threading.Lock()

    def infer(self, port: str, pixels: np.ndarray) -> tuple:
        with self.lock:
            if self.fw is None or port != self.port:
                self.close()
                self.fw = sc.Firmware(port, timeout=self.timeout)
                self.port = port
                try:
                    self.info = self.fw.info()
                except Exception:
                    self.close()
                    raise
            try:
                return self.info, self.fw.infer_u8(pixels.ravel())
            except (sc.ProtocolError, OSError):
                self.close()   # resynchronise on the next send
                raise

    def close(self, exit_code: int | None = None):
        if self.fw is not None:
            try:
                if exit_code is not None:
                    self.fw.exit(exit_code)
            except Exception:
                pass
            try:
                self.fw.close()
            except Exception:
                pass
        self.fw, self.info = None, None


# ---- the app -------------------------------------------------------------------------------

class DigitPad:
    def __init__(self, root, port: str, host, host_msg: str, icount_shift, state_file: str | None,
                 timeout: float, qemu=None):
        import tkinter as tk
        self.tk = tk
        self.root = root
        self.host, self.host_msg = host, host_msg
        self.icount_shift = icount_shift
        self.state_file = state_file
        self.qemu = qemu
        self.link = Link(timeout)
        self.results = []
        self.events = queue.Queue()
        self.busy = False
        self.ink = None
        self.last = None
        self._new_ink()

        root.title("Digit pad")
        root.resizable(False, False)
        left = tk.Frame(root, padx=8, pady=8)
        left.grid(row=0, column=0, sticky="n")
        right = tk.Frame(root, padx=8, pady=8)
        right.grid(row=0, column=1, sticky="n")

        tk.Label(left, text="Draw a digit (fill the height):").pack(anchor="w")
        self.canvas = tk.Canvas(left, width=PAD, height=PAD, bg="black", highlightthickness=1,
                                highlightbackground="gray", cursor="pencil")
        self.canvas.pack()
        self._grid_lines()
        buttons = tk.Frame(left)
        buttons.pack(fill="x", pady=(6, 0))
        self.clear_btn = tk.Button(buttons, text="Clear", width=10, command=self.clear)
        self.clear_btn.pack(side="left")
        self.send_btn = tk.Button(buttons, text="Send", width=10, command=self.send)
        self.send_btn.pack(side="right")
        portrow = tk.Frame(left)
        portrow.pack(fill="x", pady=(6, 0))
        tk.Label(portrow, text="Port:").pack(side="left")
        self.port_var = tk.StringVar(value=port)
        self.port_entry = tk.Entry(portrow, textvariable=self.port_var, width=34)
        self.port_entry.pack(side="left", fill="x", expand=True)
        self.status_var = tk.StringVar(value="emulated board running" if qemu else "ready")
        self.status = tk.Label(left, textvariable=self.status_var, anchor="w", justify="left",
                               wraplength=PAD, fg="gray25")
        self.status.pack(fill="x", pady=(6, 0))

        tk.Label(right, text="Model input (28x28):").pack(anchor="w")
        self.preview = tk.Canvas(right, width=SIDE * PREVIEW, height=SIDE * PREVIEW, bg="black",
                                 highlightthickness=0)
        self.preview.pack(anchor="w")
        self.pred_var = tk.StringVar(value="–")
        tk.Label(right, text="Prediction:").pack(anchor="w", pady=(8, 0))
        self.pred_label = tk.Label(right, textvariable=self.pred_var, font=("TkDefaultFont", 40, "bold"))
        self.pred_label.pack(anchor="w")
        self.bars = tk.Canvas(right, width=260, height=10 * 20 + 4, bg="white", highlightthickness=0)
        self.bars.pack(anchor="w")
        self.cost_var = tk.StringVar(value="cost: –")
        tk.Label(right, textvariable=self.cost_var, anchor="w", justify="left", wraplength=260).pack(
            anchor="w", pady=(6, 0))
        self.agree_var = tk.StringVar(value="host library: " + ("loaded" if host else host_msg))
        self.agree_label = tk.Label(right, textvariable=self.agree_var, anchor="w", justify="left",
                                    wraplength=260)
        self.agree_label.pack(anchor="w")
        self._draw_bars(None)

        self.canvas.bind("<ButtonPress-1>", self._press)
        self.canvas.bind("<B1-Motion>", self._motion)
        self.canvas.bind("<ButtonRelease-1>", lambda e: setattr(self, "_prev", None))
        root.bind("<Return>", lambda e: self.send())
        root.bind("<Escape>", lambda e: self.clear())
        root.bind("<Control-q>", lambda e: self.quit())
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self._prev = None
        root.after(50, self._poll)
        root.after(200, self._write_state)

    # -- drawing --
    def _new_ink(self):
        from PIL import Image, ImageDraw
        self.ink = Image.new("L", (PAD, PAD), 0)
        self.ink_draw = ImageDraw.Draw(self.ink)

    def _grid_lines(self):
        for i in range(1, SIDE):
            if i % 7 == 0:
                self.canvas.create_line(i * SCALE, 0, i * SCALE, PAD, fill="gray15", tags="grid")
                self.canvas.create_line(0, i * SCALE, PAD, i * SCALE, fill="gray15", tags="grid")

    def _dot(self, x, y):
        r = BRUSH
        self.ink_draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        self.canvas.create_oval(x - r, y - r, x + r, y + r, fill="white", outline="white", tags="ink")

    def _press(self, e):
        self._prev = (e.x, e.y)
        self._dot(e.x, e.y)

    def _motion(self, e):
        if self._prev is None:
            self._press(e)
            return
        x0, y0 = self._prev
        self.ink_draw.line((x0, y0, e.x, e.y), fill=255, width=2 * BRUSH)
        self.canvas.create_line(x0, y0, e.x, e.y, fill="white", width=2 * BRUSH, tags="ink")
        self._dot(e.x, e.y)
        self._prev = (e.x, e.y)

    def ink_array(self) -> np.ndarray:
        return np.asarray(self.ink, dtype=np.float32) / 255.0

    def clear(self):
        self.canvas.delete("ink")
        self._new_ink()
        self.preview.delete("all")
        self.pred_var.set("–")
        self.cost_var.set("cost: –")
        self._draw_bars(None)

    # -- results --
    def _draw_preview(self, pixels):
        self.preview.delete("all")
        for y in range(SIDE):
            for x in range(SIDE):
                v = int(pixels[y, x])
                if v:
                    c = f"#{v:02x}{v:02x}{v:02x}"
                    self.preview.create_rectangle(x * PREVIEW, y * PREVIEW, (x + 1) * PREVIEW,
                                                  (y + 1) * PREVIEW, fill=c, outline=c)

    def _draw_bars(self, r):
        b = self.bars
        b.delete("all")
        probs = None
        if r is not None:
            probs = softmax(r["output"], r["out_scale"], r["out_zp"])
        for d in range(10):
            y = 2 + d * 20
            b.create_text(10, y + 9, text=str(d), font=("TkDefaultFont", 10, "bold"))
            b.create_rectangle(22, y + 2, 222, y + 16, outline="gray70")
            if probs is not None:
                best = d == r["class"]
                b.create_rectangle(22, y + 2, 22 + int(round(200 * probs[d])), y + 16,
                                   fill="#2a7" if best else "#58c", outline="")
                b.create_text(226, y + 9, anchor="w", text=f"{int(r['output'][d]):4d}", font=("TkFixedFont", 8))

    def send(self):
        if self.busy:
            return
        port = self.port_var.get().strip()
        if not port:
            self._status("give a port: /dev/ttyACM0 or socket://HOST:PORT", error=True)
            return
        pixels = preprocess(self.ink_array())
        self._draw_preview(pixels)
        self.busy = True
        self.send_btn.config(state="disabled")
        self._status(f"sending to {port} ...")

        def work():
            try:
                info, r = self.link.infer(port, pixels)
                self.events.put(("result", pixels, info, r))
            except sc.FirmwareError as e:
                self.events.put(("error", str(e)))
            except sc.UserError as e:
                self.events.put(("error", str(e)))
            except sc.ProtocolError as e:
                self.events.put(("error", f"no valid answer from {port}: {e}"))
            except Exception as e:   # serial exceptions, socket errors
                self.events.put(("error", f"{type(e).__name__}: {e}"))
        threading.Thread(target=work, daemon=True).start()

    def _status(self, text, error=False):
        self.status_var.set(text)
        self.status.config(fg="red3" if error else "gray25")

    def _poll(self):
        try:
            while True:
                ev = self.events.get_nowait()
                self.busy = False
                self.send_btn.config(state="normal")
                if ev[0] == "error":
                    self._status(ev[1], error=True)
                    self._record({"error": ev[1]})
                else:
                    self._show(*ev[1:])
        except queue.Empty:
            pass
        self.root.after(50, self._poll)

    def _show(self, pixels, info, r):
        r = dict(r, out_scale=info["output_scale"], out_zp=info["output_zero_point"])
        self.pred_var.set(str(r["class"]))
        self._draw_bars(r)
        self.cost_var.set(f"cost on {info['board']}: {sc.describe_cost(r, self.icount_shift)}")
        host_class = host_out = None
        if self.host is None:
            agree = None
            self.agree_var.set("host library: " + self.host_msg)
            self.agree_label.config(fg="gray25")
        else:
            tensor = sc.pixels_to_tensor(pixels.ravel(), info)
            shape = (1,) + tuple(self.host.inputs[0].shape[1:])
            host_out = self.host.run(tensor.reshape(shape))[0].ravel()
            host_class = int(np.argmax(host_out))
            agree = bool(np.array_equal(host_out, r["output"]))
            if agree:
                self.agree_var.set(f"host library agrees: class {host_class}, all {len(host_out)} outputs equal")
                self.agree_label.config(fg="dark green")
            else:
                n = int(np.sum(host_out != r["output"]))
                self.agree_var.set(f"host library DISAGREES: class {host_class}, {n} of {len(host_out)} "
                                   "outputs differ")
                self.agree_label.config(fg="red3")
        self._status(f"model {info['model']} on {info['board']} via {self.link.port}")
        self._record({"pixels": pixels.tolist(), "class": int(r["class"]), "output": r["output"].tolist(),
                      "cost": int(r["cost"]), "cost_unit": int(r["cost_unit"]), "hz": int(r["hz"]),
                      "host_class": host_class, "host_output": None if host_out is None else host_out.tolist(),
                      "agree": agree, "model": info["model"], "board": info["board"],
                      "shown": {"prediction": self.pred_var.get(), "cost": self.cost_var.get(),
                                "agreement": self.agree_var.get()}})

    # -- state for scripts and tests --
    def _record(self, entry):
        self.results.append(entry)
        self._write_state()

    def _geometry(self, w):
        return [w.winfo_rootx(), w.winfo_rooty(), w.winfo_width(), w.winfo_height()]

    def _write_state(self):
        if not self.state_file:
            return
        self.root.update_idletasks()
        state = {"pid": os.getpid(), "port": self.port_var.get(), "canvas": self._geometry(self.canvas),
                 "send": self._geometry(self.send_btn), "clear": self._geometry(self.clear_btn),
                 "window": self._geometry(self.root), "scale": SCALE, "results": self.results}
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)

    def shutdown(self):
        """Close the line; the emulator is asked to EXIT (QEMU then leaves by itself)."""
        self.link.close(exit_code=0 if self.qemu else None)
        if self.qemu is not None and self.qemu.proc is not None:
            try:
                self.qemu.wait(5)
            except Exception:
                pass
            self.qemu.stop()

    def quit(self):
        self.shutdown()
        try:
            self.root.destroy()
        except self.tk.TclError:
            pass


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--port", default=None,
                       help="serial device or pyserial URL (default /dev/ttyACM0; editable in the window)")
    where.add_argument("--emulate", action="store_true",
                       help="start the emulated board (QEMU mps2-an500) and connect to it")
    ap.add_argument("--elf", help="firmware for --emulate (default build/mps2-an500/<model>/fw.elf)")
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"model the firmware runs, for the host library (default {DEFAULT_MODEL})")
    ap.add_argument("--so", help="host library (default build/host/<model>/lib<model>.so)")
    ap.add_argument("--header", help="its generated header (default build/gen/c/<model>/tvmgen_<model>.h)")
    ap.add_argument("--icount-shift", type=int, default=None, metavar="S",
                    help="QEMU -icount shift of an emulator given with --port (cost in instructions)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for a reply (default 20)")
    ap.add_argument("--state", metavar="JSON", help="keep widget positions and every answer in this file "
                    "(for scripts and tests)")
    ap.set_defaults(run=run)


def run(args) -> int:
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        raise NncError("no display", "DISPLAY is not set", "set DISPLAY, or run under Xvfb (xvfb-run nnc pad ...)")
    try:
        import tkinter as tk
        root = tk.Tk()
    except Exception as e:   # ImportError, TclError
        raise NncError(f"cannot open a Tk window: {e}", f"DISPLAY={os.environ.get('DISPLAY', '')}",
                       "check the display (xdpyinfo), or run under Xvfb") from None
    so, header = default_host_paths(args.model)
    host, host_msg = load_host(args.so or so, args.header or header)
    qemu = None
    port = args.port or "/dev/ttyACM0"
    shift = args.icount_shift
    if args.emulate:
        elf = args.elf or os.path.join(ROOT, "build", "mps2-an500", args.model, "fw.elf")
        try:
            qemu = sc.Qemu(elf)
            port = qemu.start()
        except NncError as e:    # no such firmware, or the emulator did not come up
            root.destroy()
            raise NncError(str(e), "--emulate") from None
        shift = sc.QEMU_ICOUNT_SHIFT if shift is None else shift
    pad = None
    try:
        pad = DigitPad(root, port, host, host_msg, shift, args.state, args.timeout, qemu)
        root.mainloop()
    except KeyboardInterrupt:
        pass
    finally:   # also when the window was destroyed without WM_DELETE_WINDOW
        if pad is not None:
            pad.shutdown()
        elif qemu is not None:
            qemu.stop()
    return 0
