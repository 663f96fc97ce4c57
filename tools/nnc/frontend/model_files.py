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


def check_pt2_archive(path: str, members: bool = True) -> None:
    """Refuse a .pt2 whose loading would unpickle anything beyond plain tensors. members=False:
    only that it is a PT2 archive (no torch import: a build reading a list of model files)."""
    where = f"file {path}"
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise NncError(f"not a PT2 archive ({e})", where,
                       "give a file written by torch.export.save(torch.export.export(converted, (x,)), "
                       "'net.pt2')") from None
    with z:
        try:
            names = z.namelist()
            formats = [n for n in names if n.endswith("/archive_format")]
            if not formats or z.read(formats[0]).strip() != b"pt2":
                raise NncError("not a PT2 archive (no archive_format 'pt2')", where,
                               "write it with torch.export.save")
            for n in names if members else ():
                base = os.path.basename(n)
                if n.endswith("_config.json") and "/data/" in n:
                    config = json.loads(z.read(n)).get("config", {})
                    for fqn, meta in config.items():
                        if meta.get("use_pickle") or str(meta.get("path_name", "")).startswith(_PICKLED_PREFIXES):
                            raise NncError(f"the archive stores '{fqn}' as a pickled object, which loading "
                                           "would execute", f"{where}, member {n}",
                                           "save plain tensors only (torch.export.save of a converted "
                                           "program does); never load archives from untrusted sources")
                elif n.endswith(".pt") or n.endswith(".pkl") or base.endswith("data.pkl"):
                    _check_weights_only(z.read(n), f"{where}, member {n}")
        except zipfile.BadZipFile as e:
            raise NncError(f"the archive is damaged or truncated ({e})", where,
                           "export the program again") from None


def _check_weights_only(data: bytes, where: str) -> None:
    import pickle
    import torch
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as e:
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
        path = spec[4:]
        try:
            x = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise NncError(f"cannot read calibration data: {e}", f"file {path}",
                           "save a float array with numpy.save") from None
    elif spec == "digits":
        from models.registry import get
        x = get("lenet5").calibration_inputs(n).numpy()
    else:
        raise NncError(f"unknown calibration data {spec!r}", "", "use npy:FILE or digits")
    per_sample = int(np.prod(example.shape))
    if x.size % per_sample:
        raise NncError(f"calibration data of shape {x.shape} does not hold inputs of shape "
                       f"{tuple(example.shape)}", f"calibration {spec}", "save inputs shaped like the example")
    return [torch.from_numpy(s).reshape(example.shape) for s in x.reshape(-1, per_sample)[:n]]


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
