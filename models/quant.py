"""Eager-mode quantization recipes for engine qnnpack: activations quint8, weights qint8
(symmetric), per-tensor or per-channel weights; PTQ (prepare/calibrate/convert) and QAT
(prepare_qat/train/convert)."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
import torch.nn as nn
from torch.ao import quantization as tq

SCHEMES = ("per_tensor", "per_channel")


def set_engine():
    torch.backends.quantized.engine = "qnnpack"


@contextlib.contextmanager
def quiet():
    """Silence torch's quantization deprecation/observer warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def qconfig(scheme: str, qat: bool):
    if scheme not in SCHEMES:
        raise ValueError(f"weight scheme {scheme!r}: choose one of {SCHEMES}")
    if scheme == "per_tensor":
        # torch's qnnpack defaults: histogram-calibrated quint8 activations (full range),
        # symmetric per-tensor qint8 weights.
        return tq.get_default_qat_qconfig("qnnpack") if qat else tq.get_default_qconfig("qnnpack")
    if qat:
        act = tq.get_default_qat_qconfig("qnnpack").activation
        return tq.QConfig(activation=act, weight=tq.default_fused_per_channel_wt_fake_quant)
    act = tq.get_default_qconfig("qnnpack").activation
    return tq.QConfig(activation=act, weight=tq.default_per_channel_weight_observer)


def prepare_ptq(model: nn.Module, scheme: str) -> nn.Module:
    """Float model -> fused model with observers (eval mode, in place)."""
    set_engine()
    model.eval()
    model.fuse_model(qat=False)
    model.qconfig = qconfig(scheme, qat=False)
    with quiet():
        tq.prepare(model, inplace=True)
    return model


def prepare_qat(model: nn.Module, scheme: str) -> nn.Module:
    """Float model -> fused model with fake-quant modules (train mode, in place)."""
    set_engine()
    model.train()
    model.fuse_model(qat=True)
    model.qconfig = qconfig(scheme, qat=True)
    with quiet():
        tq.prepare_qat(model, inplace=True)
    return model


def convert(model: nn.Module) -> nn.Module:
    set_engine()
    model.eval()
    with quiet():
        tq.convert(model, inplace=True)
    return model


def float_view_of_qat(model: nn.Module) -> nn.Module:
    """A QAT-prepared model computing in plain float (fake quantization and observers off)."""
    model.eval()
    model.apply(tq.disable_fake_quant)
    model.apply(tq.disable_observer)
    return model


@torch.no_grad()
def calibrate(prepared: nn.Module, x: np.ndarray, batch_size: int = 64, progress=None, reset=None):
    """Run calibration data through a prepared model. `reset(model)` runs before each batch
    (stateful models)."""
    prepared.eval()
    for i in range(0, len(x), batch_size):
        if reset is not None:
            reset(prepared)
        prepared(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
        if progress is not None:
            progress.update(min(batch_size, len(x) - i))


def skeleton(float_model: nn.Module) -> nn.Module:
    """The converted int8 module structure with placeholder quantization parameters, ready for
    `load_state_dict` of a converted checkpoint, which overwrites every weight, scale and zero
    point (and brings the weights' own per-tensor or per-channel scheme). Built with the
    cheapest observers: converting with per-channel observers costs a second for ResNet-50."""
    set_engine()
    float_model.eval()
    float_model.fuse_model(qat=False)
    float_model.qconfig = tq.QConfig(
        activation=tq.MinMaxObserver.with_args(dtype=torch.quint8),
        weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric))
    with quiet():
        tq.prepare(float_model, inplace=True)
    return convert(float_model)


def weight_count(model: nn.Module) -> int:
    """Number of weights + biases of a float or converted model."""
    total = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):   # quantized modules: weight()
            total += w().numel()
            b = m.bias() if callable(getattr(m, "bias", None)) else None
            total += 0 if b is None else b.numel()
        elif isinstance(w, torch.Tensor) and not isinstance(m, nn.modules.batchnorm._BatchNorm):
            total += w.numel()
            b = getattr(m, "bias", None)
            total += 0 if b is None else b.numel()
    return total
