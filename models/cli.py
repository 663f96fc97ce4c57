"""Helpers shared by `nnc train`, `nnc quantize` and `nnc evaluate` (nnc.cli): the zoo's user
error, data/calibration selection, the accuracy record."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from nnc.errors import NncError

from .registry import REPO_ROOT, get

CHECKPOINT_DIR = os.path.join(REPO_ROOT, "models", "checkpoints")
METRICS_JSON = os.path.join(CHECKPOINT_DIR, "metrics.json")
ACCURACY_MD = os.path.join(CHECKPOINT_DIR, "ACCURACY.md")


class UserError(NncError):
    """Something the user can fix; `nnc` prints it as 'error: ...' with exit status 2."""


def spec_or_error(name: str):
    return get(name)   # UnknownModel lists the known names


def positive(kind=int):
    import argparse

    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {s}")
        return v
    return parse


def load_splits(spec, data_spec=None, n_samples=None, seed=None):
    if spec.dataset == "ffn_synthetic":
        if data_spec not in (None, "synthetic", "ffn_synthetic"):
            raise UserError(f"model {spec.name} uses synthetic data (--n_samples, --seed), "
                            f"not --data {data_spec}")
        return spec.data(n_samples=n_samples, seed=seed)
    if spec.dataset == "synthetic" and data_spec not in (None, "synthetic"):
        raise UserError(f"model {spec.name} is benchmark-only: it uses synthetic inputs, not --data {data_spec}")
    if n_samples is not None:
        raise UserError(f"--n_samples only applies to the ffn model's synthetic data")
    return spec.data(data_spec)


def calibration_from(spec, train_split, n: int, calib_data: str | None = None,
                     sample_shape: tuple | None = None) -> np.ndarray:
    """Calibration inputs: the training split (shifted copies beyond its size), or
    'npy:FILE' (an array of inputs of sample_shape, by default the model's), or 'random'
    (uniform [0,1), only for untrained experiments)."""
    from . import data
    if calib_data in (None, "", "train"):
        if spec.dataset == "ffn_synthetic":
            x = train_split.x
            return np.resize(x, (n,) + x.shape[1:]).astype(np.float32) if n > len(x) else x[:n]
        return data.shifted_variants(train_split.x, n)
    if calib_data == "random":
        rng = np.random.RandomState(0)
        return rng.uniform(0, 1, size=(n,) + tuple(spec.input_shape[1:])).astype(np.float32)
    if calib_data.startswith("npy:"):
        shape = tuple(sample_shape or spec.input_shape[1:])
        return data.read_npy_inputs(calib_data[4:], shape, n)
    raise UserError(f"--calib-data {calib_data!r}: use 'train', 'random' or 'npy:FILE'")


def relpath(p: str) -> str:
    try:
        r = os.path.relpath(p, REPO_ROOT)
        return p if r.startswith("..") else r
    except ValueError:
        return p


# ---------------------------------------------------------------------------------------------
# the accuracy record: metrics.json (machine-readable) -> ACCURACY.md
# ---------------------------------------------------------------------------------------------
def record_metrics(name: str, entry: dict):
    os.makedirs(CHECKPOINT_DIR, exist_ok=True)
    allm = {}
    if os.path.isfile(METRICS_JSON):
        with open(METRICS_JSON) as f:
            allm = json.load(f)
    entry = dict(entry, measured=time.strftime("%Y-%m-%d"))
    allm[name] = {**allm.get(name, {}), **entry}
    with open(METRICS_JSON, "w") as f:
        json.dump(allm, f, indent=1, sort_keys=True)
        f.write("\n")
    write_accuracy_md(allm)


def _fmt(v, task):
    if v is None:
        return "-"
    return f"{v:.6f}" if task == "regress" else f"{100 * v:.2f}%"


def write_accuracy_md(allm: dict):
    from .registry import MODELS
    lines = [
        "# Model zoo: measured accuracy of the committed checkpoints",
        "",
        "Written by `nnc train` / `nnc quantize` / `nnc evaluate` from their",
        "measurements (models/checkpoints/metrics.json); nothing here is typed by hand.",
        "Held-out set: 20% of sklearn's digits (359 images, fixed split, resized with PIL bilinear),",
        "or the FFN's synthetic test set (2000 samples, --n_samples 10000 --seed 42).",
        "Classification: top-1 accuracy; regression (ffn): mean squared error (lower is better).",
        "`fp32` of a QAT model is the trained QAT network with fake quantization switched off.",
        "",
        "| model | recipe | weights | data | held-out n | fp32 | int8 (torch qnnpack) | "
        "int8 vs fp32 | train time | command |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        e = allm.get(name)
        if not e:
            continue
        task = e.get("task", "classify")
        f32, i8 = e.get("fp32"), e.get("int8")
        if task == "regress" and f32 and i8 is not None:
            rel = f"{100 * (i8 / f32 - 1):+.2f}% MSE"
        elif f32 is not None and i8 is not None:
            rel = f"{100 * (i8 - f32):+.2f} pt"
        else:
            rel = "-"
        t = e.get("train_seconds")
        lines.append(f"| {name} | {e.get('recipe', '-')} | {e.get('scheme', '-')} | {e.get('data', '-')} | "
                     f"{e.get('n_heldout', '-')} | {_fmt(f32, task)} | {_fmt(i8, task)} | {rel} | "
                     f"{'-' if t is None else f'{t:.0f} s'} | `{e.get('command', '-')}` |")
    extra = [(n, e) for n, e in allm.items() if e.get("notes")]
    if extra:
        lines += ["", "Notes:", ""]
        lines += [f"- {n}: {e['notes']}" for n, e in extra]
    c = [(n, e) for n, e in allm.items() if e.get("c_int8") is not None]
    if c:
        lines += ["", "Compiled C library (nnc evaluate --c-lib):", "",
                  "| model | C int8 | mismatching outputs vs torch |", "|---|---|---|"]
        lines += [f"| {n} | {_fmt(e['c_int8'], e.get('task', 'classify'))} | {e.get('c_mismatch', '-')} |"
                  for n, e in c]
    with open(ACCURACY_MD, "w") as f:
        f.write("\n".join(lines) + "\n")
