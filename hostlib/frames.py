"""Frame API of a compiled stateful model (IMX681 C sources) from Python, through cffi.

    from hostlib.frames import load_frames
    model = load_frames("build/imx681/stateful/host/libstateful_frames.so",
                        "build/imx681/stateful/c_sources/tvmgen_classification_with_state.h")
    y1 = model.run(frame1)      # int8 (1, 32, 32) or (1, 1, 32, 32) -> int8 (10,)
    y2 = model.run(frame2)      # the state carried over from frame 1
    model.reset_state()         # back to the initial state
    ys = model.run_sequence(frames)   # (T, ...) frames -> (T, ...) outputs, state carried

The header says everything: `<prefix>_frame()`, the frame inputs and outputs (the first
<PREFIX>_FRAME_INPUTS / _FRAME_OUTPUTS ports), the state sizes. The state lives inside the
library (STATIC_DATA), so one loaded library is one sensor: two `load_frames()` of the same
file share it (dlopen loads a file once); copy the .so to run two independent sequences.
"""
from __future__ import annotations

import os

import numpy as np

from . import HostLibError, parse_header


class FrameModel:
    def __init__(self, so_path: str, header_path: str):
        import cffi
        for p in (so_path, header_path):
            if not os.path.exists(p):
                raise HostLibError(f"{p} does not exist; build it with `./scons board=imx681`")
        info = parse_header(header_path)
        self.prefix = info["prefix"]
        d = info["defines"]
        macro = self.prefix.upper()
        if f"{macro}_FRAME_INPUTS" not in d:
            raise HostLibError(f"{header_path} has no frame API ({macro}_FRAME_INPUTS): "
                               "compile the model with nnc imx681")
        n_in, n_out = int(d[f"{macro}_FRAME_INPUTS"]), int(d[f"{macro}_FRAME_OUTPUTS"])
        self.inputs, self.outputs = info["inputs"][:n_in], info["outputs"][:n_out]
        self.state_sizes = [int(d[f"{macro}_STATE{i}_SIZE"]) for i in range(int(d[f"{macro}_STATES"]))]
        self.ffi = cffi.FFI()
        args = [f"const void* input{i}" for i in range(n_in)] + [f"void* output{i}" for i in range(n_out)]
        self.ffi.cdef(f"int32_t {self.prefix}_frame({', '.join(args)});\n"
                      f"void {self.prefix}_reset_state(void);\n"
                      f"const int8_t* {self.prefix}_state(int32_t index);")
        self.lib = self.ffi.dlopen(os.path.abspath(so_path))
        self._frame = getattr(self.lib, f"{self.prefix}_frame")
        self._reset = getattr(self.lib, f"{self.prefix}_reset_state")
        self._state = getattr(self.lib, f"{self.prefix}_state")

    def _check(self, x, port) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise HostLibError(f"{port.name}: expected int8, got {x.dtype} (quantize first: "
                               f"q = round(x / {port.scale:g}) + {port.zero_point})")
        if x.size != port.size:
            raise HostLibError(f"{port.name}: expected one frame of shape {port.shape[1:]}, got {x.shape}")
        return np.ascontiguousarray(x.reshape(port.shape[1:]))

    def run(self, *frames):
        """One frame: int8 arrays (one per frame input); returns the output (or a list)."""
        if len(frames) != len(self.inputs):
            raise HostLibError(f"expected {len(self.inputs)} frame inputs, got {len(frames)}")
        xs = [self._check(x, p) for x, p in zip(frames, self.inputs)]
        ys = [np.zeros(p.shape[1:], dtype=np.int8) for p in self.outputs]
        rc = self._frame(*[self.ffi.from_buffer(x) for x in xs], *[self.ffi.from_buffer(y) for y in ys])
        if rc != 0:
            raise HostLibError(f"{self.prefix}_frame returned {rc}")
        return ys[0] if len(ys) == 1 else ys

    def run_sequence(self, frames) -> np.ndarray:
        """Frames (T, ...) of the single frame input, in order; outputs stacked (T, ...)."""
        return np.stack([self.run(f) for f in frames])

    def reset_state(self) -> None:
        self._reset()

    def state(self, index: int = 0) -> np.ndarray:
        """A copy of the current value of a state buffer (int8)."""
        if not 0 <= index < len(self.state_sizes):
            raise HostLibError(f"state {index}: the model has {len(self.state_sizes)} state(s)")
        ptr = self._state(index)
        return np.frombuffer(self.ffi.buffer(ptr, self.state_sizes[index]), dtype=np.int8).copy()

    def quantize(self, x, index: int = 0) -> np.ndarray:
        """float32 -> int8 with a frame input's quantization parameters, as torch quantizes to
        quint8: round(x * (1/scale) + zero_point) with one rounding to float32 (fused multiply-add),
        then to the nearest integer (ties to even); the int8 value is that minus 128."""
        p = self.inputs[index]
        inv = np.float32(1.0) / np.float32(p.scale)
        r = (np.asarray(x, dtype=np.float32).astype(np.float64) * np.float64(inv)
             + np.float64(p.zero_point + 128)).astype(np.float32)
        q = np.rint(np.clip(r, 0.0, 255.0)).astype(np.int64) - 128
        return q.astype(np.int8)


def load_frames(so_path: str, header_path: str) -> FrameModel:
    return FrameModel(so_path, header_path)


class ImageFrameModel:
    """The same frame API on the memory images of an I2C_IMAGES package, executed by the IMX681
    runtime (firmware/imx681/runtime, built as a shared library): what the sensor runs.

        model = load_images("build/imx681/runtime/libimx681_runtime.so",
                            "build/imx681/stateful/imx681_pytorch_classification_with_state_i2c")

    Memory regions are numpy buffers of the sizes the package uses (manifest.json)."""

    def __init__(self, runtime_so: str, package_dir: str):
        import json

        import cffi
        manifest_path = os.path.join(package_dir, "manifest.json")
        for p in (runtime_so, manifest_path):
            if not os.path.exists(p):
                raise HostLibError(f"{p} does not exist; build it with `./scons board=imx681`")
        with open(manifest_path) as f:
            self.manifest = m = json.load(f)
        if m.get("mode") != "I2C_IMAGES":
            raise HostLibError(f"{package_dir} holds {m.get('mode')}, not memory images")
        net = m["network"]
        with open(os.path.join(package_dir, f"{net}_params.bin"), "rb") as f:
            self.params = np.frombuffer(f.read(), dtype=np.uint8).copy()
        with open(os.path.join(package_dir, f"{net}_static_data.bin"), "rb") as f:
            self.static_image = np.frombuffer(f.read(), dtype=np.uint8).copy()
        regions = m["regions"]
        self.static = self.static_image.copy()
        if self.static.size == 0:
            self.static = np.zeros(8, dtype=np.uint8)
        self.scratch = np.zeros(max(8, regions["SCRATCH_RAM"]["used"]), dtype=np.uint8)
        self.static_start = regions["STATIC_DATA"]["start"]
        self.ffi = cffi.FFI()
        self.ffi.cdef("""
            int32_t imx681_rt_struct_size(void);
            int32_t imx681_rt_init(void* rt, const uint8_t* params, uint32_t params_size,
                uint32_t params_start, uint8_t* static_data, uint32_t static_size,
                uint32_t static_start, uint8_t* scratch, uint32_t scratch_size,
                uint32_t scratch_start);
            int32_t imx681_rt_frame(void* rt, const int8_t* const* inputs, int8_t* const* outputs);
            void imx681_rt_reset_state(void* rt, const uint8_t* static_image, uint32_t static_size);
            int32_t imx681_rt_num_inputs(const void* rt);
            int32_t imx681_rt_num_outputs(const void* rt);
            int32_t imx681_rt_input_size(const void* rt, int32_t index);
            int32_t imx681_rt_output_size(const void* rt, int32_t index);""")
        self.lib = self.ffi.dlopen(os.path.abspath(runtime_so))
        self.rt = self.ffi.new("uint8_t[]", int(self.lib.imx681_rt_struct_size()))
        buf = self.ffi.from_buffer
        rc = self.lib.imx681_rt_init(self.rt, buf(self.params), self.params.size,
                                     regions["PARAMS"]["start"], buf(self.static), self.static.size,
                                     self.static_start, buf(self.scratch), self.scratch.size,
                                     regions["SCRATCH_RAM"]["start"])
        if rc != 0:
            raise HostLibError(f"imx681_rt_init failed with {rc} (see imx681_runtime.h)")
        self.input_shapes = [tuple(s[1:]) for s in m["frame_inputs"]]
        self.output_shapes = [tuple(s[1:]) for s in m["model_outputs"]]
        n_in, n_out = self.lib.imx681_rt_num_inputs(self.rt), self.lib.imx681_rt_num_outputs(self.rt)
        if (n_in, n_out) != (len(self.input_shapes), len(self.output_shapes)):
            raise HostLibError(f"the image has {n_in} inputs / {n_out} outputs, the manifest "
                               f"{len(self.input_shapes)} / {len(self.output_shapes)}")
        self.state_sizes = [s["bytes"] for s in m["states"]]
        # The runtime takes frame inputs and gives outputs in buffer-ID order.
        self.in_order = list(np.argsort(m.get("frame_input_buffer_ids", range(n_in)), kind="stable"))
        self.out_order = list(np.argsort(m.get("model_output_buffer_ids", range(n_out)), kind="stable"))

    def run(self, *frames):
        if len(frames) != len(self.input_shapes):
            raise HostLibError(f"expected {len(self.input_shapes)} frame inputs, got {len(frames)}")
        xs = []
        for x, shape in zip(frames, self.input_shapes):
            x = np.asarray(x)
            if x.dtype != np.int8 or x.size != int(np.prod(shape)):
                raise HostLibError(f"expected one int8 frame of shape {shape}, got {x.dtype} {x.shape}")
            xs.append(np.ascontiguousarray(x.reshape(shape)))
        ys = [np.zeros(s, dtype=np.int8) for s in self.output_shapes]
        ptr = lambda a: self.ffi.cast("int8_t*", self.ffi.from_buffer(a))
        ins = self.ffi.new("int8_t*[]", [ptr(xs[i]) for i in self.in_order])
        outs = self.ffi.new("int8_t*[]", [ptr(ys[i]) for i in self.out_order])
        rc = self.lib.imx681_rt_frame(self.rt, ins, outs)
        if rc != 0:
            raise HostLibError(f"imx681_rt_frame returned {rc}")
        return ys[0] if len(ys) == 1 else ys

    def run_sequence(self, frames) -> np.ndarray:
        return np.stack([self.run(f) for f in frames])

    def reset_state(self) -> None:
        self.lib.imx681_rt_reset_state(self.rt, self.ffi.from_buffer(self.static_image),
                                       self.static_image.size)

    def state(self, index: int = 0) -> np.ndarray:
        s = self.manifest["states"][index]
        off = s["address"] - self.static_start
        return self.static[off:off + s["bytes"]].view(np.int8).copy()


def load_images(runtime_so: str, package_dir: str) -> ImageFrameModel:
    return ImageFrameModel(runtime_so, package_dir)
