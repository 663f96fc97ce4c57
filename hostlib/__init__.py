"""Load a compiled model's shared library through cffi and run it from Python.

    from hostlib import load
    lib = load("build/host/lenet5/liblenet5.so", "build/host/lenet5/gen/tvmgen_lenet5.h")
    y = lib.run(x)          # x: int8 (N, 1, 28, 28) or (1, 28, 28); y: int8 (N, 10)

Everything about the interface is read from the generated header: prefix, input and output
sizes, shapes and quantization parameters.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np


class HostLibError(Exception):
    pass


@dataclass
class Port:
    name: str
    shape: tuple
    scale: float
    zero_point: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def _parse_float(text: str) -> float:
    text = text.strip().rstrip("f")
    return float.fromhex(text) if "0x" in text else float(text)


def parse_header(header_path: str) -> dict:
    text = open(header_path).read()
    m = re.search(r"int32_t (tvmgen_\w+)_run\(", text)
    if not m:
        raise HostLibError(f"{header_path}: no tvmgen_<name>_run() declaration; is it a generated header?")
    prefix = m.group(1)
    macro = prefix.upper()
    defs = dict(re.findall(r"#define (\w+) (.+?)(?:\s*/\*.*)?$", text, re.M))

    def ports(kind):
        out, i = [], 0
        while f"{macro}_{kind}{i}_SIZE" in defs:
            m_ = f"{macro}_{kind}{i}"
            shape = tuple(int(v) for v in defs[f"{m_}_SHAPE"].strip("{} ").split(","))
            out.append(Port(f"{kind.lower()}{i}", shape, _parse_float(defs[f"{m_}_SCALE"]),
                            int(defs[f"{m_}_ZERO_POINT"].strip("()"))))
            i += 1
        return out

    return {"prefix": prefix, "inputs": ports("INPUT"), "outputs": ports("OUTPUT"),
            "workspace": int(defs[f"{macro}_WORKSPACE_SIZE"]), "defines": defs}


class CompiledLibrary:
    def __init__(self, so_path: str, header_path: str):
        import cffi
        for p in (so_path, header_path):
            if not os.path.exists(p):
                raise HostLibError(f"{p} does not exist; build it with `./scons host`")
        info = parse_header(header_path)
        self.prefix = info["prefix"]
        self.inputs, self.outputs = info["inputs"], info["outputs"]
        self.workspace_size = info["workspace"]
        self.defines = info["defines"]
        self.ffi = cffi.FFI()
        ins = " ".join(f"void* {p.name};" for p in self.inputs)
        outs = " ".join(f"void* {p.name};" for p in self.outputs)
        self.ffi.cdef(f"struct {self.prefix}_inputs {{ {ins} }};\n"
                      f"struct {self.prefix}_outputs {{ {outs} }};\n"
                      f"int32_t {self.prefix}_run(struct {self.prefix}_inputs*, struct {self.prefix}_outputs*);")
        self.lib = self.ffi.dlopen(os.path.abspath(so_path))
        self._run = getattr(self.lib, f"{self.prefix}_run")

    def _check(self, x, port: Port) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise HostLibError(f"{port.name}: expected int8, got {x.dtype} (quantize first: "
                               f"q = round(x / {port.scale:g}) + {port.zero_point})")
        per_sample = port.shape[1:]
        if x.shape == tuple(per_sample):
            x = x[None]
        if x.shape[1:] != tuple(per_sample):
            raise HostLibError(f"{port.name}: expected shape (N, {', '.join(map(str, per_sample))}), "
                               f"got {x.shape}")
        return np.ascontiguousarray(x)

    def run(self, *xs):
        """Run every sample of a batch; returns one int8 array (or a list for several outputs)."""
        if len(xs) != len(self.inputs):
            raise HostLibError(f"expected {len(self.inputs)} input arrays, got {len(xs)}")
        xs = [self._check(x, p) for x, p in zip(xs, self.inputs)]
        n = xs[0].shape[0]
        ys = [np.zeros((n,) + tuple(p.shape[1:]), dtype=np.int8) for p in self.outputs]
        ins = self.ffi.new(f"struct {self.prefix}_inputs*")
        outs = self.ffi.new(f"struct {self.prefix}_outputs*")
        for i in range(n):
            for x, p in zip(xs, self.inputs):
                setattr(ins, p.name, self.ffi.from_buffer(x[i]))
            for y, p in zip(ys, self.outputs):
                setattr(outs, p.name, self.ffi.from_buffer(y[i]))
            rc = self._run(ins, outs)
            if rc != 0:
                raise HostLibError(f"{self.prefix}_run returned {rc} on sample {i}")
        return ys[0] if len(ys) == 1 else ys

    def quantize(self, x: np.ndarray, index: int = 0) -> np.ndarray:
        """float32 -> int8 with the input's quantization parameters (as torch quantizes)."""
        p = self.inputs[index]
        inv = np.float32(1.0) / np.float32(p.scale)
        q = np.rint(np.asarray(x, dtype=np.float32) * inv).astype(np.int64) + p.zero_point
        return np.clip(q, -128, 127).astype(np.int8)


def load(so_path: str, header_path: str) -> CompiledLibrary:
    return CompiledLibrary(so_path, header_path)
