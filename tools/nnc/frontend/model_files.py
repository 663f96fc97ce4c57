"""The one loader of models for every entry point: a zoo name, a zoo name with a checkpoint, a
PT2E zoo variant, a converted PT2E program file (.pt2) or a Python factory (`path/net.py:build`).

    m = load_model("lenet5")                              # eager zoo model (committed checkpoint)
    m = load_model("lenet5", checkpoint="mine_int8.pt")   # ... with your converted weights
    m = load_model("dwsep_pt2e")                          # PT2E zoo variant
    m = load_model("net.pt2")                             # torch.export.save of a converted program
    m = load_model("net.py:build", calibration="npy:calib.npy")
    graph = m.graph()                                     # the integer IR

Data files are never unpickled with code: a .pt2 archive is checked before torch.export.load
(which itself would unpickle some members without restriction) and checkpoints are read with
torch.load(weights_only=True). A Python factory file is code by definition: it runs, as the
user asked.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import NncError

FILE_HELP = ("a zoo name (see --help), a converted PT2E program saved with torch.export.save "
             "(.pt2), or a Python factory 'path/net.py:build' returning (model, example_input)")


@dataclass
class LoadedModel:
    name: str
    kind: str                        # 'eager' | 'pt2e'
    source: str                      # what the user named
    model: object                    # eager quantized nn.Module or ExportedProgram
    example_input: object
    spec: object = None              # the zoo ModelSpec/PT2EModel, if any
    _graph: Optional[object] = field(default=None, repr=False)

    def graph(self, device_softmax: bool = False):
        if self._graph is None:
            if self.kind == "pt2e":
                from .pt2e import import_pt2e
                if device_softmax:
                    raise NncError("--device-softmax applies to eager zoo models only",
                                   f"model {self.source}", "leave the softmax to the caller")
                self._graph = import_pt2e(self.model, self.name, self.example_input)
            else:
                from .torch_eager import import_torch_model
                self._graph = import_torch_model(self.model, self.example_input, self.name,
                                                 device_softmax=device_softmax)
        return self._graph

    def run_int8(self, inputs: list) -> list:
        """The program's own int8 outputs on int8 inputs (torch qnnpack for eager models, the
        float-simulated converted program for PT2E)."""
        g = self.graph()
        qparams = [t.qparams for t in g.inputs]
        if self.kind == "pt2e":
            from .pt2e import run_pt2e_int8
            return run_pt2e_int8(self.model, inputs, qparams)
        from .torch_eager import run_torch_int8
        return run_torch_int8(self.model, inputs, qparams)


def name_of(path: str) -> str:
    """The name a model file builds as (tvmgen_<name>, build/host/<name>): its base name, with
    every character but letters and digits written as '_'."""
    base = os.path.splitext(os.path.basename(path.split(":")[0]))[0]
    return "".join(c if c.isalnum() else "_" for c in base) or "model"


# -- .pt2 archives -----------------------------------------------------------------------------
_PICKLED_PREFIXES = ("custom_obj", "opaque_obj")
# Members torch.export.load turns into native code: an AOTInductor folder is extracted and its
# shared library dlopen()ed (its constructors run) before anything checks it; ExecuTorch/MTIA
# programs are compiled artifacts too. An nnc model file never needs them.
_NATIVE_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia")
# The most a model file or checkpoint (both zip archives) may unpack to: a zoo program is a few MB (ResNet-50, float weight copies
# included, about 100 MB); a zip bomb declares far more. Everything is read in chunks of _CHUNK.
MAX_UNPACKED_BYTES = 1 << 30
_CHUNK = 1 << 20
# What a damaged or hostile zip makes zipfile raise (bad CRC, unknown compression method,
# encryption, a size that lies, a deflate stream that is not one).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
               NotImplementedError, RuntimeError, zlib.error)
_PT2_FIX = "give a file written by torch.export.save(torch.export.export(converted, (x,)), 'net.pt2')"


def _member_path(name: str) -> str:
    """A member's path below the archive's root folder (torch.export.save names it after the file)."""
    return name.split("/", 1)[1] if "/" in name else name


def check_pt2_archive(path: str, members: bool = True) -> None:
    """Refuse a .pt2 whose loading would run code (pickles beyond plain tensors, compiled native
    code), that is damaged (every member's checksum is verified: torch's reader does not) or that
    unpacks to more than MAX_UNPACKED_BYTES. members=False: only that it is a PT2 archive (no torch
    import: a build reading a list of model files)."""
    where = f"file {path}"
    try:
        z = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise NncError(f"not a PT2 archive ({e})", where, _PT2_FIX) from None
    with z:
        try:
            infos = z.infolist()
            formats = [i for i in infos if i.filename.endswith("/archive_format")]
            if not formats or _read_member(z, formats[0], 16, where).strip() != b"pt2":
                raise NncError("not a PT2 archive (no archive_format 'pt2')", where,
                               "write it with torch.export.save")
            if not members:
                return
            _check_total(infos, path, "model file", _PT2_FIX)
            for info in infos:
                n = info.filename
                if _member_path(n).startswith(_NATIVE_CODE_DIRS):
                    raise NncError("the archive holds compiled native code, which loading would run",
                                   f"{where}, member {n}",
                                   "save the converted program with torch.export.save, not an "
                                   "AOTInductor package; never load archives from untrusted sources")
                data = _read_member(z, info, None, where)   # also verifies the checksum
                base = os.path.basename(n)
                if n.endswith("_config.json") and "/data/" in n:
                    _check_config(data, f"{where}, member {n}")
                elif n.endswith(".pt") or n.endswith(".pkl") or base.endswith("data.pkl"):
                    _check_weights_only(data, f"{where}, member {n}")
        except _ZIP_ERRORS as e:
            raise NncError(f"the archive is damaged or truncated ({type(e).__name__}: {e})", where,
                           "export the program again") from None


def _check_total(infos, path: str, what: str, fix: str) -> None:
    total = sum(i.file_size for i in infos)
    if total > MAX_UNPACKED_BYTES:
        raise NncError(f"{path} unpacks to {total:,} bytes, more than the {MAX_UNPACKED_BYTES:,} a {what} "
                       f"may hold (a zip bomb, or not a {what})", f"file {path}", fix)


def check_unpacked_size(path: str, what: str) -> None:
    """A zip archive (a torch checkpoint) must not declare more than MAX_UNPACKED_BYTES: torch.load
    inflates each member whole (a 2 MB checkpoint declaring 2 GiB took 2.3 GB of memory)."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except _ZIP_ERRORS:
        return   # not a zip (an old-format checkpoint, garbage): torch.load says what it is
    _check_total(infos, path, what, "store plain tensors: torch.save(model.state_dict(), PATH)")


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit, where: str) -> bytes:
    """A member's bytes, read in chunks so that a size that lies cannot exhaust memory; at most
    `limit` bytes (None: the whole member, whose checksum zipfile then verifies)."""
    out = bytearray()
    with z.open(info) as f:
        while limit is None or len(out) < limit:
            chunk = f.read(_CHUNK if limit is None else limit - len(out))
            if not chunk:
                break
            out += chunk
            if len(out) > MAX_UNPACKED_BYTES:
                raise NncError(f"member {info.filename} unpacks to more than {MAX_UNPACKED_BYTES:,} bytes",
                               where, _PT2_FIX)
    return bytes(out)


def _check_config(data: bytes, where: str) -> None:
    """A weights/constants config must store tensors, never pickled objects."""
    try:
        config = json.loads(data).get("config", {})
        entries = list(config.items())
        if not all(isinstance(meta, dict) for _, meta in entries):
            raise TypeError("an entry is not an object")
    except (ValueError, AttributeError, TypeError) as e:
        raise NncError(f"the archive's tensor configuration is damaged ({e})", where,
                       "export the program again") from None
    for fqn, meta in entries:
        if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_PICKLED_PREFIXES):
            raise NncError(f"the archive stores '{fqn}' as a pickled object, which loading would execute",
                           where, "save plain tensors only (torch.export.save of a converted program "
                                  "does); never load archives from untrusted sources")


def _check_weights_only(data: bytes, where: str) -> None:
    import torch
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- a gate: whatever the safe loader cannot read is refused
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NncError(f"a member holds more than plain tensors and would run code when loaded: {first}",
                       where, "save plain tensors only; never load files from untrusted sources") from None


def load_pt2(path: str):
    import logging
    import torch
    from .pt2e_quantizer import pt2e_api
    check_pt2_archive(path)
    pt2e_api()   # registers the quantized_decomposed ops the program calls
    log = logging.getLogger("torch.export")
    level = log.level
    log.setLevel(logging.ERROR)   # torch logs a traceback before raising; our error says it once
    try:
        program = torch.export.load(path)
    except Exception as e:   # noqa: BLE001 -- version skew, damaged members: one clear error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NncError(f"torch {torch.__version__} cannot load this program: {first}", f"file {path}",
                       "export it again with the torch version in requirements.txt") from None
    finally:
        log.setLevel(level)
    return program


# -- checkpoints and factories -------------------------------------------------------------------
def load_state_dict(path: str) -> dict:
    """A checkpoint's tensors, read with the safe loader only."""
    import pickle
    import torch
    if not os.path.isfile(path):
        raise NncError(f"checkpoint {path} does not exist", "", "check the path")
    check_unpacked_size(path, "checkpoint")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NncError(f"cannot read the checkpoint with the safe loader: {first}", f"file {path}",
                       "store plain tensors (torch.save(model.state_dict(), path)); files that "
                       "need the full unpickler can run code and are refused") from None
    return blob


def calibration_inputs(spec: str, example, n: int = 256):
    """Calibration inputs named by the user: 'npy:FILE' or a zoo data set ('digits')."""
    import torch
    if spec is None:
        raise NncError("a float model needs calibration data", "",
                       "pass --calibration npy:FILE (float inputs, shape (N, ...) like the example "
                       "input) or --calibration digits")
    if spec.startswith("npy:"):
        from models.data import read_npy_inputs
        x = read_npy_inputs(spec[4:], tuple(example.shape[1:]), n)
    elif spec == "digits":
        from models.registry import get
        x = get("lenet5").calibration_inputs(n).numpy()
        per_sample = int(np.prod(example.shape))
        if x.size % per_sample:
            raise NncError(f"the digits (inputs of shape {x.shape[1:]}) do not fit inputs of shape "
                           f"{tuple(example.shape)}", f"calibration {spec}", "pass --calibration npy:FILE")
    else:
        raise NncError(f"unknown calibration data {spec!r}", "", "use npy:FILE or digits")
    return [torch.from_numpy(s).reshape(example.shape) for s in x.reshape(-1, int(np.prod(example.shape)))[:n]]


def load_factory_model(target: str):
    """Run `path/net.py:build` -> (model, example input) exactly as the factory returns them."""
    path, _, fn_name = target.rpartition(":")
    if not os.path.isfile(path):
        raise NncError(f"factory file {path} does not exist", f"model {target}", FILE_HELP)
    spec = importlib.util.spec_from_file_location(f"nnc_user_{name_of(path)}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 -- the user's file failed: say where
        raise NncError(f"running {path} failed: {type(e).__name__}: {e}", f"model {target}",
                       "fix the factory file") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise NncError(f"{path} has no function {fn_name}()", f"model {target}",
                       "define e.g. `def build(): return model, example_input`")
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 -- the user's factory failed: say where, not "a bug in nnc"
        raise NncError(f"{fn_name}() in {path} failed: {type(e).__name__}: {e}", f"model {target}",
                       "fix the factory function") from None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise NncError(f"{fn_name}() must return (model, example_input)", f"model {target}", "")
    return result


def load_factory(target: str, calibration: str = None, progress: bool = True):
    """A factory's (kind, program, example): an eager-quantized module (torch.ao.quantization
    convert) is imported as it is, like a zoo model; a converted PT2E program too; a float model
    is quantized with NncQuantizer on `calibration`."""
    import torch
    model, example = load_factory_model(target)
    if _is_eager_quantized(model):
        return "eager", model, example
    if isinstance(model, torch.export.ExportedProgram) or _is_converted(model):
        return "pt2e", model, example
    if not isinstance(model, torch.nn.Module):
        raise NncError(f"the factory returned a {type(model).__name__}, not a torch model",
                       f"model {target}", "return an nn.Module or a converted PT2E program")
    _check_runs(model, example, target)
    from .pt2e_quantizer import quantize_pt2e
    return "pt2e", quantize_pt2e(model, example, calibration_inputs(calibration, example), True,
                                 progress), example


def _check_runs(model, example, target: str) -> None:
    """The float model must run on its own example input; otherwise the failure would surface
    inside torch.export or the quantizer as if it were nnc's."""
    import torch
    from ..errors import first_line, user_line_of
    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as e:  # noqa: BLE001 -- the user's model failed: say where
        where = user_line_of(e)
        raise NncError(f"the model fails on the example input build() returns: {first_line(e)}",
                       f"model {target}" + (f", at {where}" if where else ""),
                       "fix forward() or the example input (its shape is the model's input shape, "
                       "batch size 1)") from None


def _is_eager_quantized(model) -> bool:
    """torch.ao.quantization.convert made it: its QuantStubs became Quantize modules. Quantizing
    it again as a float model would fail far from the cause (or quantize the dequantized copy)."""
    import torch
    return isinstance(model, torch.nn.Module) and not isinstance(model, torch.fx.GraphModule) and any(
        isinstance(m, torch.ao.nn.quantized.Quantize) for m in model.modules())


def _is_converted(model) -> bool:
    import torch.fx
    return isinstance(model, torch.fx.GraphModule) and any(
        "quantize_per_tensor" in str(n.target) for n in model.graph.nodes)


def pt2e_variants() -> dict:
    """{PT2E zoo variant: the float checkpoint it is quantized from (absolute path)}."""
    from models import pt2e_zoo
    from models.registry import REPO_ROOT
    return {name: os.path.join(REPO_ROOT, m.weights) for name, m in pt2e_zoo.MODELS.items()}


def load_model(source: str, checkpoint: str = None, calibration: str = None,
               progress: bool = True) -> LoadedModel:
    """See the module docstring."""
    if source.endswith(".pt2"):
        if not os.path.isfile(source):
            raise NncError(f"model file {source} does not exist", "", FILE_HELP)
        program = load_pt2(source)
        return LoadedModel(name_of(source), "pt2e", source, program, None)
    if ".py:" in source or source.endswith(".py"):
        if ":" not in source:
            source += ":build"
        kind, model, example = load_factory(source, calibration, progress)
        return LoadedModel(name_of(source), kind, source, model, example)
    from models import pt2e_zoo
    from models.registry import UnknownModel, get
    if source in pt2e_zoo.MODELS:
        m = pt2e_zoo.MODELS[source]
        try:
            program = pt2e_zoo.load(source, progress)
        except FileNotFoundError as e:
            raise NncError(str(e), f"model {source}", "") from None
        return LoadedModel(source, "pt2e", source, program, m.example_input(), m)
    if os.path.sep in source or os.path.exists(source):
        raise NncError(f"cannot tell what kind of model file {source} is", "", FILE_HELP)
    try:
        spec = get(source)
    except UnknownModel as e:
        raise NncError(str(e), "", f"known PT2E variants: {', '.join(pt2e_zoo.MODELS)}; or {FILE_HELP}") from None
    if spec.stateful:   # its state needs the IMX681's STATIC_DATA, not the cpu target
        raise NncError(f"model {source!r} keeps a state between frames; the cpu target compiles "
                       "stateless models only", f"model {source!r}",
                       "compile it for the IMX681: python tools/imx681_compile.py --config "
                       "firmware/imx681/configs/imx681_pytorch_classification_with_state_c.cfg "
                       "(or ./scons board=imx681)")
    if checkpoint is not None:
        load_state_dict(checkpoint)   # the safe loader must accept it before the zoo reads it
    try:
        qmodel = spec.load_quantized(checkpoint)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        raise NncError(getattr(e, "what", str(e).strip("'\"")),
                       f"model {source!r}" + (f", checkpoint {checkpoint}" if checkpoint else ""),
                       getattr(e, "fix", "give a converted int8 checkpoint of this zoo model "
                                         "(tools/quantize.py --out) or create one with "
                                         "`python tools/train.py --help`")) from None
    return LoadedModel(source, "eager", source, qmodel, spec.example_input(), spec)
