"""Load a compiled model's shared library through cffi and run it from Python.

    from hostlib import load
    lib = load("build/host/lenet5/liblenet5.so", "build/gen/c/lenet5/tvmgen_lenet5.h")
    y = lib.run(x)          # x: int8 (N, 1, 28, 28) or (1, 28, 28); y: int8 (N, 10)

Everything about the interface is read from the generated header: prefix, input and output
sizes, shapes and quantization parameters. Before any call, the identity the library carries
(tools/nnc/identity.py) must match the header: a library of another model or build, an edited
header, a truncated or foreign file are a HostLibError, never a crash. run() may be called
from several threads; calls into one library file take turns.
"""
from __future__ import annotations

import os
import re
import struct
import threading
from dataclasses import dataclass

import numpy as np

from nnc.errors import NncError


IDENTITY_VERSION = 1   # of the identity string written by tools/nnc/identity.py


class HostLibError(NncError):
    """A library, header or input that cannot be used, with what to do about it."""


_LOCKS: dict = {}
_LOCKS_GUARD = threading.Lock()


def _library_lock(so_path: str) -> threading.Lock:
    """One lock per loaded file. The generated C keeps every intermediate tensor in one static
    arena and cffi releases the GIL during a call, so two threads inside the same library would
    overwrite each other's intermediates. dlopen maps a file once per process (by path and by
    inode), so every CompiledLibrary of that file shares the lock; a copy of the file is
    independent and runs in parallel."""
    st = os.stat(so_path)
    keys = (os.path.realpath(so_path), (st.st_dev, st.st_ino))
    with _LOCKS_GUARD:
        lock = next((_LOCKS[k] for k in keys if k in _LOCKS), None) or threading.Lock()
        for k in keys:
            _LOCKS[k] = lock
    return lock


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


def _read_text(path: str, what: str) -> str:
    """A text file, or a HostLibError saying why it cannot be one."""
    if not os.path.exists(path):
        raise HostLibError(f"{path} does not exist; build it with `./scons host`")
    if not os.path.isfile(path):
        raise HostLibError(f"{path} is not a file; give the {what}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise HostLibError(f"{path}: cannot read the {what}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HostLibError(f"{path} is not a text file (byte {data[:4]!r}... is not UTF-8): "
                           f"give the {what}") from None


def parse_header(header_path: str) -> dict:
    text = _read_text(header_path, "generated header tvmgen_<name>.h")
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
            try:
                shape = tuple(int(v) for v in defs[f"{m_}_SHAPE"].strip("{} ").split(","))
                port = Port(f"{kind.lower()}{i}", shape, _parse_float(defs[f"{m_}_SCALE"]),
                            int(defs[f"{m_}_ZERO_POINT"].strip("()")))
                size = int(defs[f"{m_}_SIZE"])
            except (KeyError, ValueError) as e:
                raise HostLibError(f"{header_path}: malformed or missing {m_}_* macro ({e}); "
                                   "regenerate the header (nnc export)") from None
            if size != port.size or size <= 0:
                raise HostLibError(f"{header_path}: {m_}_SIZE {size} does not match {m_}_SHAPE "
                                   f"{shape}; the header was edited: regenerate it (nnc export)")
            out.append(port)
            i += 1
        return out

    info = {"prefix": prefix, "inputs": ports("INPUT"), "outputs": ports("OUTPUT"), "defines": defs}
    try:
        info["workspace"] = int(defs[f"{macro}_WORKSPACE_SIZE"])
    except (KeyError, ValueError):
        raise HostLibError(f"{header_path}: no valid {macro}_WORKSPACE_SIZE; is it a generated "
                           "header? Regenerate it (nnc export)") from None
    return info


def parse_identity(text: str) -> dict:
    """The identity string of a generated model (tools/nnc/identity.py) -> {key: value}."""
    fields = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not key or key in fields:
            raise ValueError(f"malformed identity token {token[:40]!r}")
        fields[key] = value
    if fields.get("nnc_identity") != str(IDENTITY_VERSION):
        raise ValueError(f"identity version {fields.get('nnc_identity')!r}, expected {IDENTITY_VERSION}")
    return fields


def port_identity(kind: str, index: int, port: Port) -> dict:
    """The identity fields of one port, as the generator writes them."""
    return {f"{kind}{index}_size": str(port.size),
            f"{kind}{index}_shape": "x".join(str(d) for d in port.shape),
            f"{kind}{index}_scale": float(port.scale).hex(),
            f"{kind}{index}_zero_point": str(port.zero_point)}


def check_shared_object(path: str) -> None:
    """An ELF shared object of this machine's word size whose headers and segments lie inside the
    file: a truncated library would otherwise crash the process (SIGBUS) when its pages are read."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF":
                raise HostLibError(f"{path} is not a shared library (no ELF header); rebuild it with "
                                   "`./scons host`")
            if head[4] != 2 or head[5] != 1:
                raise HostLibError(f"{path} is not a 64-bit little-endian ELF file: it was built for "
                                   "another machine; build the host library with `./scons host`")
            e_type, = struct.unpack_from("<H", head, 16)
            if e_type != 3:
                raise HostLibError(f"{path} is an ELF file but not a shared library (type {e_type}); "
                                   "give the lib<model>.so")
            phoff, shoff = struct.unpack_from("<QQ", head, 32)
            phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 54)
            ends = [phoff + phentsize * phnum, shoff + shentsize * shnum]
            if ends[0] <= size:
                f.seek(phoff)
                table = f.read(phentsize * phnum)
                for i in range(phnum):
                    offset, _, _, filesz = struct.unpack_from("<QQQQ", table, i * phentsize + 8)
                    ends.append(offset + filesz)
    except OSError as e:
        raise HostLibError(f"{path}: cannot read the library: {e.strerror}") from None
    except struct.error:
        ends = [size + 1]
    if max(ends) > size:
        raise HostLibError(f"{path} is truncated ({size} bytes, its headers need {max(ends)}); "
                           "rebuild it with `./scons host`")


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
        check_shared_object(so_path)
        self.ffi = cffi.FFI()
        ins = " ".join(f"void* {p.name};" for p in self.inputs)
        outs = " ".join(f"void* {p.name};" for p in self.outputs)
        self.ffi.cdef(f"struct {self.prefix}_inputs {{ {ins} }};\n"
                      f"struct {self.prefix}_outputs {{ {outs} }};\n"
                      f"int32_t {self.prefix}_run(struct {self.prefix}_inputs*, struct {self.prefix}_outputs*);\n"
                      f"extern const char {self.prefix}_identity[];")
        try:
            self.lib = self.ffi.dlopen(os.path.abspath(so_path))
        except OSError as e:
            raise HostLibError(f"{so_path} cannot be loaded: {e}; rebuild it with `./scons host`") from None
        self.identity = self._check_identity(so_path, header_path)
        try:
            self._run = getattr(self.lib, f"{self.prefix}_run")
        except (AttributeError, KeyError):
            raise HostLibError(f"{so_path} has no {self.prefix}_run()") from None
        # One static arena per library file: concurrent calls would share it (see run()).
        self._lock = _library_lock(so_path)

    def _check_identity(self, so_path: str, header_path: str) -> dict:
        """The library's compiled-in identity must describe the header's model and ports."""
        symbol = f"{self.prefix}_identity"
        try:
            lib_text = self.ffi.string(getattr(self.lib, symbol), 4096).decode("ascii")
            lib_id = parse_identity(lib_text)
        except (AttributeError, KeyError):    # cffi raises either for a missing symbol
            raise HostLibError(f"{so_path} has no symbol {symbol}: it is not a build of the model "
                               f"of {header_path} (another model's library, or one built before "
                               "libraries carried an identity); rebuild it from the C generated with "
                               "this header (`./scons host`)") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise HostLibError(f"{so_path}: unreadable {symbol} ({e}); rebuild it with `./scons host`") from None
        try:
            head_id = parse_identity(self.defines.get(f"{self.prefix.upper()}_IDENTITY", "").strip('"'))
        except ValueError:
            raise HostLibError(f"{header_path} has no valid {self.prefix.upper()}_IDENTITY: it was "
                               "generated by an older nnc or edited; regenerate it (nnc export)") from None
        expected = {"prefix": self.prefix, "inputs": str(len(self.inputs)),
                    "outputs": str(len(self.outputs)), "graph_sha256": head_id.get("graph_sha256")}
        for kind, ports in (("input", self.inputs), ("output", self.outputs)):
            for i, p in enumerate(ports):
                expected.update(port_identity(kind, i, p))
        # Other kernels (c, m7, tvm) of the same model compute the same bytes: accepted. The same
        # kernels must come from the very same C.
        if lib_id.get("kernels") == head_id.get("kernels"):
            expected["c_sha256"] = head_id.get("c_sha256")
        differ = [f"{k}: library {lib_id.get(k)}, header {v}" for k, v in expected.items()
                  if lib_id.get(k) != v]
        if differ:
            raise HostLibError(f"{so_path} and {header_path} do not belong together ("
                               + "; ".join(differ[:4]) + ("; ..." if len(differ) > 4 else "")
                               + "): use the header generated with the library's C, or rebuild the "
                               "library from this header's C (`./scons host`)")
        return lib_id

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
        """Run every sample of a batch; returns one int8 array (or a list for several outputs).
        Safe from several threads: calls into one library file take turns (one static arena)."""
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
            with self._lock:
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
