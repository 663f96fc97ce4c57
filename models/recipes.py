"""Training, quantization and evaluation procedures shared by the CLIs and the tests."""
from __future__ import annotations

import copy
import io
import os
import pickle
import re
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nnc.errors import NncError

from . import quant
from .data import Split

CHECKPOINT_FORMAT = "nnc-model-zoo/1"


def _bar(total, desc, enabled=True, unit="it"):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False, dynamic_ncols=True)


def seed_everything(seed: int):
    torch.manual_seed(seed)
    np.random.seed(seed)


def light_torch():
    """Two shared cores: one thread for torch."""
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# augmentation (digits): random shifts of up to `max_shift` pixels
# ---------------------------------------------------------------------------------------------
def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    sh = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(sh[i, 0]), int(sh[i, 1])
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    return out


# ---------------------------------------------------------------------------------------------
# training loops
# ---------------------------------------------------------------------------------------------
def train_classifier(model: nn.Module, train: Split, *, epochs: int, lr: float, batch_size: int,
                     seed: int, augment: int = 2, weight_decay: float = 0.0, progress=True,
                     epoch_hook=None, stateful: bool = False, desc="train"):
    """Adam + cosine schedule, cross-entropy. `epoch_hook(model, epoch)` runs before each epoch
    (QAT uses it to freeze observers). Stateful models train on two-frame sequences: frame 1
    from a zero state, frame 2 an image of the same class added to the first's state."""
    gen = torch.Generator().manual_seed(seed)
    x_all = torch.from_numpy(train.x)
    y_all = torch.from_numpy(train.y)
    by_class = [torch.nonzero(y_all == c).flatten() for c in range(int(y_all.max()) + 1)]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x_all) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    bar = _bar(steps, desc, progress, "batch")
    for epoch in range(epochs):
        if epoch_hook is not None:
            epoch_hook(model, epoch)
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            xb = random_shift(x_all[idx], augment, gen)
            yb = y_all[idx]
            if stateful:
                model.state_update = True
                model.reset_state(torch.zeros(len(idx), 1, 32, 32))
                out1 = model(xb)
                partner = torch.stack([by_class[int(c)][torch.randint(len(by_class[int(c)]), (1,),
                                                                      generator=gen)][0] for c in yb])
                out = model(random_shift(x_all[partner], augment, gen))
                loss = 0.5 * (F.cross_entropy(out1, yb) + F.cross_entropy(out, yb))
            else:
                out = model(xb)
                loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss_sum / total:.4f}",
                            acc=f"{correct / total:.3f}")
    bar.close()
    if stateful:
        model.reset_state()
    return model


def train_regressor(model: nn.Module, train: Split, *, epochs: int, lr: float, batch_size: int,
                    seed: int, progress=True, desc="train"):
    """MSE training (Adam, step decay) for the FFN."""
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.from_numpy(train.x), torch.from_numpy(train.y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.3)
    steps = epochs * ((len(x_all) + batch_size - 1) // batch_size)
    bar = _bar(steps, desc, progress, "batch")
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        loss_sum, total = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.mse_loss(model(x_all[idx]), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            total += len(idx)
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", mse=f"{loss_sum / total:.5f}")
        sched.step()
    bar.close()
    return model


@torch.no_grad()
def batchnorm_statistics(model: nn.Module, x: np.ndarray, batch_size: int = 64) -> nn.Module:
    """Benchmark-only networks (no data set here): keep the seeded weights and set every batch
    norm's running statistics to the cumulative mean/variance over `x`, so activations keep a
    sensible range through the depth of the network (and quantize like a trained one's)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for i in range(0, len(x), batch_size):
        model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
    return model.eval()


def benchmark_float(spec, seed: int = 0) -> nn.Module:
    """The float network of a benchmark-only model, as `nnc train` makes it: the seeded
    initialisation with batch-norm statistics from the synthetic training inputs (deterministic)."""
    seed_everything(seed)
    return batchnorm_statistics(spec.new_float(), spec.data()[0].x)


def qat_epoch_hook(freeze_observers_at: int, freeze_bn_at: int):
    """Standard QAT schedule: stop observer updates (fix the scales) and freeze BN statistics
    after some epochs."""
    def hook(model, epoch):
        if epoch == freeze_observers_at:
            model.apply(torch.ao.quantization.disable_observer)
        if epoch == freeze_bn_at:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
    return hook


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 128, progress=False, desc="eval"):
    """Model outputs for x, batched; stateful models run each frame from a zero state."""
    model.eval()
    stateful = hasattr(model, "reset_state")
    if stateful:
        model.state_update = False
        model.reset_state()
    outs = []
    bar = _bar(len(x), desc, progress, "img")
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size]))
        outs.append(model(xb).float())
        bar.update(len(xb))
    bar.close()
    if stateful:
        model.state_update = True
        model.reset_state()
    return torch.cat(outs).numpy()


def metric(task: str, outputs: np.ndarray, split: Split) -> float:
    if task == "regress":
        return float(np.mean((outputs.reshape(split.y.shape) - split.y) ** 2))
    return float(np.mean(outputs.argmax(1) == split.y))


@torch.no_grad()
def two_frame_accuracy(model: nn.Module, split: Split, seed: int = 0) -> float:
    """Stateful model: frame 1 from a zero state, frame 2 another image of the same class
    added to that state; accuracy of frame 2's prediction."""
    model.eval()
    rng = np.random.RandomState(seed)
    by_class = {c: np.flatnonzero(split.y == c) for c in np.unique(split.y)}
    partner = np.array([rng.choice(by_class[c]) for c in split.y])
    model.state_update = True
    model.reset_state(torch.zeros(len(split), 1, 32, 32))
    model(torch.from_numpy(split.x[partner]))
    out = model(torch.from_numpy(split.x)).numpy()
    model.reset_state()
    return float(np.mean(out.argmax(1) == split.y))


# ---------------------------------------------------------------------------------------------
# post-training quantization
# ---------------------------------------------------------------------------------------------
def ptq(float_model: nn.Module, scheme: str, calib_x: np.ndarray, *, stateful=False,
        progress=True, batch_size=64) -> nn.Module:
    """Fuse, observe `calib_x`, convert. Stateful models calibrate on two-frame sequences
    (the second half of calib_x added to the state the first half leaves), so quant_2 sees
    accumulated states."""
    prepared = quant.prepare_ptq(float_model, scheme)
    bar = _bar(len(calib_x), "calibrate", progress, "img")
    with torch.no_grad(), quant.quiet():
        if stateful:
            half = len(calib_x) // 2
            a, b = calib_x[:half], calib_x[half:2 * half]
            for i in range(0, half, batch_size):
                xa = torch.from_numpy(np.ascontiguousarray(a[i:i + batch_size]))
                prepared.state_update = True
                prepared.reset_state(torch.zeros(len(xa), 1, 32, 32))
                prepared(xa)
                prepared(torch.from_numpy(np.ascontiguousarray(b[i:i + batch_size])))
                bar.update(2 * len(xa))
            prepared.reset_state()
        else:
            quant.calibrate(prepared, calib_x, batch_size, progress=bar)
    bar.close()
    return quant.convert(prepared)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path: str, model_name: str, kind: str, state_dict: dict, extra: dict | None = None,
                    half: bool = False):
    """kind: 'int8' (converted state_dict), 'fp32' (float state_dict) or 'qat' (QAT-prepared
    state_dict). half=True stores float tensors as float16 (restored to float32 on load)."""
    sd = OrderedDict()
    # Keep the per-module version metadata: quantized modules read their keys by it.
    sd._metadata = copy.deepcopy(getattr(state_dict, "_metadata", OrderedDict()))
    for k, v in state_dict.items():
        if half and isinstance(v, torch.Tensor) and v.dtype == torch.float32 and not v.is_quantized:
            v = v.half()
        sd[k] = v
    from nnc.outdir import write_file
    blob = {"format": CHECKPOINT_FORMAT, "model": model_name, "kind": kind, "state_dict": sd,
            "extra": extra or {}, "saved": time.strftime("%Y-%m-%d %H:%M:%S")}
    data = io.BytesIO()
    torch.save(blob, data)
    data.seek(0)
    torch.load(data, map_location="cpu", weights_only=True)   # readable by load_checkpoint: or fail here
    write_file(path, data.getvalue())


class CheckpointError(NncError, ValueError):
    """A checkpoint file that cannot be read, or that nnc refuses to read: what, and how to fix it."""

    def __init__(self, what: str, fix: str = "pass a file written by torch.save(state_dict, PATH)"):
        super().__init__(what, "", fix)


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint with torch's safe loader only (`weights_only=True`: tensors, quantized
    tensors, plain containers). A file that needs Python's full unpickler could run any code while
    loading, so it is refused, never retried with `weights_only=False`."""
    from nnc.frontend.model_files import check_unpacked_size
    check_unpacked_size(path, "checkpoint")   # torch.load would inflate a zip bomb whole
    try:
        with quant.quiet():
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise CheckpointError(_unreadable(path, e)) from None
        names = re.findall(r"GLOBAL (\S+)", str(e))
        what = (f"loading it needs Python's full unpickler (it names {names[0]})" if names else
                "it is not a file torch's safe loader can read (a plain pickle or another format)")
        raise CheckpointError(
            f"{path} is refused: {what}; nnc never loads a file with the full unpickler, which can "
            "run any code", "save plain tensors instead, e.g. torch.save(model.state_dict(), PATH) "
            "(a quantized model's state_dict works too), and pass that file") from None
    except Exception as e:   # torch raises EOFError, KeyError, OSError, RuntimeError on bad files
        raise CheckpointError(_unreadable(path, e)) from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        # A bare state_dict (e.g. a user's own checkpoint).
        plain = _plain(blob, path)
        _check_finite(plain, path)
        return {"format": None, "model": None, "kind": "fp32", "state_dict": plain, "extra": {}}
    src, extra = blob.get("state_dict"), blob.get("extra")
    if not isinstance(src, dict) or not isinstance(extra, (dict, type(None))):
        raise CheckpointError(f"{path} is a damaged nnc checkpoint: its state_dict or extra is not a "
                              "dictionary", "write it again (nnc train, nnc quantize)")
    sd = OrderedDict((k, v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16 else v)
                     for k, v in src.items())
    _check_finite(sd, path)
    if hasattr(src, "_metadata"):
        sd._metadata = src._metadata
    blob["state_dict"] = sd
    blob["extra"] = extra or {}
    return blob


def _check_finite(state_dict: dict, path: str) -> None:
    """Refuse NaN or infinite weights, biases and quantization scales: torch quantizes a NaN bias
    to an arbitrary int32 and compiles without a word, so the C would compute garbage. Observer
    statistics (min_val/max_val) are left alone: an observer that saw no data holds +-inf."""
    def bad(value, positive=False) -> bool:
        if isinstance(value, (tuple, list)):   # a quantized Linear's packed (weight, bias)
            return any(bad(v) for v in value)
        if not isinstance(value, torch.Tensor):
            return False
        if value.is_quantized:
            scales = value.q_per_channel_scales() if value.qscheme() in (
                torch.per_channel_affine, torch.per_channel_symmetric) else torch.tensor([value.q_scale()])
            return not bool((torch.isfinite(scales) & (scales > 0)).all())
        if not value.is_floating_point():
            return False
        ok = torch.isfinite(value)
        if positive:
            ok &= value > 0
        return not bool(ok.all())
    for key, value in state_dict.items():   # a converted module's output scale: 'conv1.scale'
        if not key.endswith(("min_val", "max_val")) and bad(value, key.endswith(".scale")):
            raise CheckpointError(f"{path} holds NaN or infinite values (or a quantization scale that is "
                                  f"not positive) in '{key}'",
                                  "train or quantize the model again: a NaN usually means training "
                                  "diverged (lower the learning rate)")


def _unreadable(path: str, err: Exception) -> str:
    text = " ".join(str(err).split())
    if os.path.isdir(path):
        what = "is a folder, not a checkpoint file"
    elif os.path.isfile(path) and os.path.getsize(path) == 0:
        what = "is empty"
    else:
        detail = text.split(". ")[0][:160] if text and not isinstance(err, KeyError) else "not a torch file"
        what = f"is not a readable torch checkpoint (truncated, damaged or another format: {detail})"
    return f"{path} {what}"


def _plain(obj, path: str = "checkpoint"):
    """Accept {'state_dict': ...}, {'model': ...} wrappers around a state_dict."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return _plain(obj[key], path)
        return obj
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict (a dictionary of "
                          "tensors)", "save one with torch.save(model.state_dict(), PATH)")
