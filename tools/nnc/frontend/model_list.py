"""A team's list of model files for the daily build matrix (`scons all models=FILE`).

One model per line, written as `model=` takes it, then its options (`name=value`):

    # the team's models: scons all models=team/models.txt
    kws.pt2                                        # a converted PT2E program (torch.export.save)
    dwsep_per_tensor.py:build                      # a factory returning a converted program
    detector.py:build calibration=npy:calib.npy    # a factory returning a float model
    detector_v2.py calibration=digits              # ':build' is the default function
    lenet5_pt2e                                    # a PT2E zoo variant

Blank lines and `#` comments are ignored; a path with spaces is quoted ('my net.pt2'). Relative
paths are relative to the list's folder (the list works from any folder and in any clone). The only
option is `calibration=` (npy:FILE or digits), for a factory that returns a float model. Each model
builds as its file's base name (tvmgen_<name>, build/<board>/<name>), which must differ from every
zoo model's name and from the other entries'.

The list is checked before anything is built, without running any of it: files exist, a .pt2 is a
PT2 archive, a factory file parses and defines its function. The exporter checks the rest (a
factory's result, the archive's members) when it runs.
"""
from __future__ import annotations

import ast
import os
import shlex
from dataclasses import dataclass

from ..errors import NncError
from .model_files import check_pt2_archive, name_of, pt2e_variants

OPTIONS = ("calibration",)
ENTRY_HELP = ("one model per line: a .pt2 program, a factory 'net.py:build' (optionally "
              "calibration=npy:FILE or calibration=digits), or a PT2E zoo variant")


@dataclass(frozen=True)
class ListedModel:
    name: str                  # what it builds as: tvmgen_<name>, build/<board>/<name>
    source: str                # for `nnc export --model`: an absolute path ('...py:fn'), or a variant's name
    calibration: str | None    # for `--calibration`: 'digits' or 'npy:<absolute path>'
    inputs: tuple              # the files the export reads (the build's dependencies)
    line: int                  # where it is in the list


def read_model_list(path: str, reserved: dict) -> list:
    """The entries of the list at `path`. reserved: {name: what already builds under it} (the zoo
    models, the build's own files). Raises NncError naming the list file and line."""
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise NncError(f"model list {path} {what}", f"models={path}",
                       f"give a text file, {ENTRY_HELP}")
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise NncError(f"cannot read the model list: {e}", f"models={path}",
                       "give a UTF-8 text file") from None
    folder = os.path.dirname(os.path.abspath(path))
    entries, seen = [], {}
    for number, text in enumerate(lines, 1):
        where = f"{path}, line {number}: {text.strip()}"
        try:
            words = shlex.split(text, comments=True)
        except ValueError as e:
            raise NncError(f"cannot split the line into words ({e})", where,
                           "close the quotes around a path with spaces") from None
        if not words:
            continue
        if words[0] in reserved:
            raise NncError(f"{words[0]} is {reserved[words[0]]}, not a model file", where,
                           "remove the line: `scons all` builds the zoo's models itself")
        entry = _entry(words, folder, number, where)
        if entry.name in reserved:
            raise NncError(f"{words[0]} would build as {entry.name!r}, the name of {reserved[entry.name]}",
                           where, "rename the file (a listed model builds as its file's base name)")
        if entry.name in seen:
            raise NncError(f"{words[0]} would build as {entry.name!r}, like line {seen[entry.name]}",
                           where, "rename one of the files (a listed model builds as its file's base "
                           "name) or remove the duplicate line")
        seen[entry.name] = number
        entries.append(entry)
    if not entries:
        raise NncError("the model list names no model", f"models={path}", ENTRY_HELP)
    return entries


def _factory_file(model: str):
    """(file, function) of 'net.py' or 'net.py:fn', else None."""
    file, _, function = model.rpartition(":") if ":" in model else (model, "", "build")
    return (file, function) if file.endswith(".py") else None


def _entry(words: list, folder: str, number: int, where: str) -> ListedModel:
    model, options = words[0], {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or key not in OPTIONS:
            raise NncError(f"{word!r} is not an option of a listed model", where,
                           f"options: {', '.join(o + '=' for o in OPTIONS)}; {ENTRY_HELP}")
        options[key] = value
    resolve = lambda p: os.path.normpath(os.path.join(folder, os.path.expanduser(p)))  # noqa: E731
    calibration, inputs = options.get("calibration"), []
    factory = _factory_file(model)
    if model.endswith(".pt2"):
        source = resolve(model)
        _check_file(source, model, where)
        _check_pt2(source, where)
        inputs.append(source)
    elif factory is not None:
        file, function = factory
        source_file = resolve(file)
        _check_file(source_file, file, where)
        _check_factory(source_file, function, where)
        source = f"{source_file}:{function}"
        inputs.append(source_file)
    else:
        source = model
        if os.sep in model or "." in model:
            raise NncError(f"{model} is not a model file", where,
                           "give a converted PT2E program (.pt2) or a factory file (net.py:build)")
        variant = _pt2e_variant(model, where)
        inputs.append(variant)
    if calibration is not None:
        if factory is None:
            raise NncError("calibration= applies to a factory file (net.py:build) that returns a float "
                           f"model; {model} is quantized already", where, "remove calibration=")
        if calibration.startswith("npy:"):
            data = resolve(calibration[4:])
            _check_file(data, calibration[4:], where)
            calibration = f"npy:{data}"
            inputs.append(data)
        elif calibration != "digits":
            raise NncError(f"unknown calibration data {calibration!r}", where,
                           "calibration=npy:FILE (float inputs shaped like the example input) or "
                           "calibration=digits")
    return ListedModel(model if source == model else name_of(source), source, calibration,
                       tuple(inputs), number)


def _check_file(path: str, written: str, where: str) -> None:
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise NncError(f"{written} {what} ({path})", where,
                       "paths in a model list are relative to the list's folder")


def _check_pt2(path: str, where: str) -> None:
    """The file is a PT2 archive (the error names the list's line and the file)."""
    try:
        check_pt2_archive(path, members=False)
    except NncError as e:
        raise NncError(e.what, f"{where} ({e.where})", e.fix) from None


def _check_factory(path: str, function: str, where: str) -> None:
    """The factory file parses and defines `function` at its top level (it is not run here)."""
    if not function.isidentifier():
        raise NncError(f"{function!r} is not a Python function name", where, "write the factory as net.py:build")
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
    except (MemoryError, RecursionError):   # CPython's parser gives up on very deep nesting this way
        raise NncError("the factory file is nested too deeply for Python to parse", f"{where} ({path})",
                       "fix the factory file") from None
    except (SyntaxError, UnicodeDecodeError, ValueError) as e:
        at = f", line {e.lineno}" if getattr(e, "lineno", None) else ""
        raise NncError(f"the factory file is not valid Python: {e.msg if hasattr(e, 'msg') else e}",
                       f"{where} ({path}{at})", "fix the factory file") from None
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Name)}
    defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    if function not in defined:
        raise NncError(f"{os.path.basename(path)} defines no function {function}()", where,
                       f"define `def {function}(): return model, example_input`, or name the "
                       "function: net.py:my_function")


def _pt2e_variant(model: str, where: str) -> str:
    """A PT2E zoo variant's float checkpoint (what its export reads), or the error for an
    unknown name."""
    variants = pt2e_variants()   # imports torch: only for lists that name a variant
    if model not in variants:
        raise NncError(f"unknown model {model!r}", where,
                       f"PT2E zoo variants: {', '.join(variants)}; or {ENTRY_HELP}")
    return variants[model]
