"""Read a deployment directory's metadata.json (nnc deploy writes it) without trusting it.

    from hostlib.deployment import read_metadata
    meta = read_metadata("deploy/resnet18")   # {"name", "prefix", "layout", "kernels", "library", "header", "source"}

Every field the tools use is checked for type and value; anything else in the file is ignored.
A missing, unreadable, non-UTF-8, non-JSON or incomplete file is a HostLibError naming the
file and the field, never another exception.
"""
from __future__ import annotations

import json
import os
import re

from . import HostLibError

LAYOUTS = ("nchw", "nhwc")
KERNELS = ("c", "tvm", "m7")
_FILE_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_metadata(directory: str) -> dict:
    path = os.path.join(directory, "metadata.json")
    fix = "regenerate the deployment with nnc deploy"
    try:
        with open(path, "rb") as f:
            raw = f.read(16 << 20)
    except OSError as e:
        raise HostLibError(f"{path}: cannot read the deployment's metadata ({e.strerror}); {fix}") from None
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise HostLibError(f"{path} is not valid JSON ({str(e)[:80]}); {fix}") from None
    if not isinstance(doc, dict):
        raise HostLibError(f"{path}: expected a JSON object, got {type(doc).__name__}; {fix}")

    def field(where, key, check, what):
        value = where.get(key) if isinstance(where, dict) else None
        if not isinstance(value, str) or not check(value):
            raise HostLibError(f"{path}: field {key!r} must be {what}, got {str(value)[:60]!r}; {fix}")
        return value

    options = doc.get("compiler_options", {})
    meta = {
        "name": field(doc, "name", lambda v: 0 < len(v) < 256, "the model name"),
        "prefix": field(doc, "prefix", _IDENTIFIER.fullmatch, "a C identifier (tvmgen_<name>)"),
        "layout": field(doc, "input_layout", lambda v: v in LAYOUTS, f"one of {', '.join(LAYOUTS)}"),
        "kernels": field(options, "kernels", lambda v: v in KERNELS,
                         f"one of {', '.join(KERNELS)} (in compiler_options)"),
    }
    for key in ("library", "header", "source"):
        meta[key] = field(doc, key, lambda v: _FILE_NAME.fullmatch(v) and v not in (".", ".."),
                          "a file name inside the deployment directory")
    return meta
