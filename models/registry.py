"""The model zoo: one ModelSpec per model, with its data set, quantization recipe and committed
checkpoints.

    from models import registry
    spec = registry.get("lenet5")
    qmodel = spec.load_quantized()          # converted int8 eager model, engine qnnpack
    x = spec.example_input()                # float, spec.input_shape
    calib = spec.calibration_inputs(1000)   # real data, float

Checkpoint paths are relative to the repository root. Retrain any model with
`nnc train --model NAME`.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from nnc.errors import NncError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class UnknownModel(NncError, KeyError, ValueError):
    """A model name that is not in the zoo (a KeyError too, for dictionary-style callers)."""


@dataclass
class ModelSpec:
    name: str
    input_shape: tuple
    dataset: str            # 'digits' (28x28) | 'digits32' | 'ffn_synthetic' | 'synthetic'
    recipe: str             # 'qat' | 'ptq'
    checkpoint: str         # converted int8 state_dict, relative to the repo root
    description: str
    fits_stm32: bool
    # -- beyond the required API ---------------------------------------------------------------
    build: Callable = field(default=None, repr=False)   # () -> float nn.Module
    scheme: str = "per_tensor"                          # weight quantization
    task: str = "classify"                              # 'classify' | 'regress'
    float_checkpoint: str = ""                          # fp32 (ptq) or QAT-prepared (qat) weights
    float_half: bool = False                            # float checkpoint stored as float16
    stateful: bool = False
    train_defaults: dict = field(default_factory=dict)
    data_defaults: dict = field(default_factory=dict)

    # -- paths ---------------------------------------------------------------------------------
    def path(self, rel: str | None = None) -> str:
        rel = self.checkpoint if rel is None else rel
        return rel if os.path.isabs(rel) else os.path.join(REPO_ROOT, rel)

    @property
    def image_size(self) -> int:
        return int(self.input_shape[-1])

    # -- data ------------------------------------------------------------------------------------
    def data(self, spec: str | None = None, **kw):
        """(train, held-out) Splits. For digit models `spec` is 'digits' or 'mnist:DIR'; for the
        FFN, keyword arguments n_samples and seed select the synthetic set."""
        from . import data
        if self.dataset == "ffn_synthetic":
            args = dict(self.data_defaults)
            args.update({k: v for k, v in kw.items() if v is not None})
            return data.ffn_synthetic(args.get("n_samples", 10000), args.get("seed", 42))
        if self.dataset == "synthetic":
            return data.synthetic(self.input_shape[1:])
        return data.image_data(spec or "digits", self.image_size)

    def heldout(self, spec: str | None = None, **kw):
        return self.data(spec, **kw)[1]

    @property
    def benchmark_only(self) -> bool:
        """Seeded weights calibrated on synthetic inputs: for speed and bit-exactness only."""
        return self.dataset == "synthetic"

    def example_input(self):
        """A real held-out sample (float, shape input_shape)."""
        import torch
        x = self.heldout().x[:1]
        return torch.from_numpy(np.ascontiguousarray(x)).reshape(self.input_shape)

    def calibration_inputs(self, n: int):
        """n real inputs (float, (n, ...)). Digits: the training split, then the held-out split,
        then deterministic 1-2 pixel shifts of them; FFN: the synthetic generator's samples."""
        import torch
        from . import data
        if n <= 0:
            raise ValueError("calibration_inputs: n must be positive")
        if self.dataset == "synthetic":
            return torch.from_numpy(data.synthetic(self.input_shape[1:], n, 0)[0].x)
        if self.dataset == "ffn_synthetic":
            train, test = self.data()
            pool = np.concatenate([train.x, test.x])
            if n > len(pool):
                pool = data.ffn_synthetic(n + n // 4 + 10, seed=12345)[0].x
            x = pool[:n]
        else:
            train, held = self.data()
            x = data.shifted_variants(np.concatenate([train.x, held.x]), n)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    # -- models ----------------------------------------------------------------------------------
    def new_float(self):
        return self.build()

    def load_quantized(self, path: str | None = None):
        """The converted int8 eager model (eval mode, engine qnnpack) from the checkpoint."""
        from . import quant, recipes
        path = self.path(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name}: int8 checkpoint {path} missing; create it with "
                                    f"`nnc train --model {self.name}`")
        blob = recipes.load_checkpoint(path)
        if blob.get("kind") != "int8":
            raise ValueError(f"{path} holds a {blob.get('kind')} checkpoint, not a converted int8 one")
        with _mismatch_is_user_error(path, self.name):
            model = self._build_from_extra(blob.get("extra", {}))
            q = quant.skeleton(model)
            with quant.quiet():
                q.load_state_dict(blob["state_dict"])
        q.eval()
        if self.stateful:
            q.reset_state()
        return q

    def load_float(self, path: str | None = None):
        """The float model the int8 one came from (eval mode). For QAT models: the fused QAT
        model with fake quantization off."""
        from . import quant, recipes
        path = self.path(path or self.float_checkpoint)
        if self.benchmark_only and not os.path.isfile(path):
            return recipes.benchmark_float(self)   # re-made exactly, so not committed
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{self.name}: float checkpoint {path} missing; create it with "
                                    f"`nnc train --model {self.name}`")
        blob = recipes.load_checkpoint(path)
        with _mismatch_is_user_error(path, self.name):
            model = self._build_from_extra(blob.get("extra", {}), blob["state_dict"])
            if blob["kind"] == "qat":
                quant.prepare_qat(model, self.scheme)
                model.load_state_dict(blob["state_dict"])
                quant.float_view_of_qat(model)
            else:
                model.load_state_dict(blob["state_dict"])
        model.eval()
        return model

    def _build_from_extra(self, extra: dict, state_dict: dict | None = None):
        if extra.get("resnet_config"):
            from .nets import QuantizableResNet
            return QuantizableResNet(**extra["resnet_config"])
        return self.build()

    def weight_count(self) -> int:
        from .quant import weight_count
        return weight_count(self.build())


@contextmanager
def _mismatch_is_user_error(path: str, model: str):
    """A readable checkpoint whose tensors do not fit the model (another model's, hand-edited) is
    the user's file, not a bug: say so in one line instead of torch's traceback."""
    from .recipes import CheckpointError
    try:
        yield
    except (RuntimeError, KeyError, TypeError, AttributeError, IndexError) as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"{path} does not match model {model} ({type(e).__name__}: {detail})",
                              f"pass a checkpoint of {model}, e.g. one written by "
                              f"`nnc train --model {model}`") from None


def _resnet(depth, width):
    def build():
        from .nets import QuantizableResNet
        return QuantizableResNet(depth=depth, num_classes=10, in_channels=1, width=width, stem="small",
                                 zero_init_residual=True)
    return build


def _lazy(cls_name):
    def build():
        from . import nets
        return getattr(nets, cls_name)()
    return build


_CK = "models/checkpoints"

MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec(
        name="lenet5", input_shape=(1, 1, 28, 28), dataset="digits", recipe="qat",
        checkpoint=f"{_CK}/lenet5_int8.pt", float_checkpoint=f"{_CK}/lenet5_qat.pt",
        description="LeNet-5 (seed 002 QMnistModel), quantization-aware training, per-tensor weights",
        fits_stm32=True, build=_lazy("LeNet5"), scheme="per_tensor",
        train_defaults=dict(epochs=30, lr=3e-3, batch_size=64, freeze_observers_at=20)),
    ModelSpec(
        name="mnist_cnn", input_shape=(1, 1, 28, 28), dataset="digits", recipe="ptq",
        checkpoint=f"{_CK}/mnist_cnn_int8.pt", float_checkpoint=f"{_CK}/mnist_cnn_fp32.pt",
        description="MNIST CNN (seed 002 MnistModel: conv32, conv64, fc 9216-128-10, 1.2 M weights), "
                    "post-training quantization; too big for the STM32F746's 1 MiB flash",
        fits_stm32=False, build=_lazy("MnistCNN"), scheme="per_tensor", float_half=True,
        train_defaults=dict(epochs=8, lr=1e-3, batch_size=64)),
    ModelSpec(
        name="ffn", input_shape=(1, 2), dataset="ffn_synthetic", recipe="ptq",
        checkpoint=f"{_CK}/ffn_int8.pt", float_checkpoint=f"{_CK}/ffn_fp32.pt",
        description="Feed-forward regression 2-6-4-1 with ReLU (seed 003), synthetic data, MSE, PTQ",
        fits_stm32=True, build=_lazy("FFN"), scheme="per_tensor", task="regress",
        train_defaults=dict(epochs=32, lr=1e-2, batch_size=64),
        data_defaults=dict(n_samples=10000, seed=42)),
    ModelSpec(
        name="stateful", input_shape=(1, 1, 32, 32), dataset="digits32", recipe="ptq",
        checkpoint=f"{_CK}/stateful_int8.pt", float_checkpoint=f"{_CK}/stateful_fp32.pt",
        description="Seed 000 SampleModel idea: a persistent 32x32 state added to every frame "
                    "(float dequant/add/quant, torch only); digits at 32x32, PTQ",
        fits_stm32=True, build=_lazy("StatefulModel"), scheme="per_tensor", stateful=True,
        train_defaults=dict(epochs=15, lr=3e-3, batch_size=64)),
    ModelSpec(
        name="resnet18", input_shape=(1, 1, 28, 28), dataset="digits", recipe="ptq",
        checkpoint=f"{_CK}/resnet18_int8.pt", float_checkpoint=f"{_CK}/resnet18_fp32.pt",
        description="Quantizable ResNet-18 (basic blocks, fused conv-bn-relu, add_relu skips), "
                    "width 16, 3x3 stem, 28x28 digits, PTQ with per-channel weights",
        fits_stm32=True, build=_resnet(18, 16), scheme="per_channel", float_half=True,
        train_defaults=dict(epochs=4, lr=3e-3, batch_size=64)),
    ModelSpec(
        name="resnet50", input_shape=(1, 1, 28, 28), dataset="digits", recipe="ptq",
        checkpoint=f"{_CK}/resnet50_int8.pt", float_checkpoint=f"{_CK}/resnet50_fp32.pt",
        description="Quantizable ResNet-50 (bottlenecks, fused conv-bn-relu, add_relu skips), "
                    "width 16, 3x3 stem, 28x28 digits, PTQ with per-channel weights",
        fits_stm32=False, build=_resnet(50, 16), scheme="per_channel", float_half=True,
        train_defaults=dict(epochs=6, lr=3e-3, batch_size=64)),
    ModelSpec(
        name="residual_cnn", input_shape=(1, 1, 28, 28), dataset="digits", recipe="ptq",
        checkpoint=f"{_CK}/residual_cnn_int8.pt", float_checkpoint=f"{_CK}/residual_cnn_fp32.pt",
        description="Small residual CNN for the compiler tests: conv+ReLU, conv, quantized add, "
                    "avgpool, linear; per-channel weights",
        fits_stm32=True, build=_lazy("ResidualCNN"), scheme="per_channel",
        train_defaults=dict(epochs=25, lr=3e-3, batch_size=64)),
    # MLPerf Tiny v1.0 reference architectures. Their data sets (CIFAR-10, Speech Commands, the
    # Visual Wake Words subset of COCO, ToyADMOS) cannot be made here: seeded weights, batch-norm
    # statistics and calibration from synthetic inputs; benchmark-only (no accuracy claimed).
    *[ModelSpec(
        name=name, input_shape=shape, dataset="synthetic", recipe="ptq",
        checkpoint=f"{_CK}/{name}_int8.pt", float_checkpoint=f"{_CK}/{name}_fp32.pt",
        description=f"MLPerf Tiny {task}: {arch}; benchmark-only (seeded weights, calibrated on "
                    "synthetic inputs), per-channel weights",
        fits_stm32=True, build=_lazy(cls), scheme="per_channel", float_half=True,
        task="regress" if cls == "FCAutoencoder" else "classify",
        train_defaults=dict(epochs=0, lr=0.0, batch_size=64))
      for name, shape, cls, task, arch in [
        ("mlperf_resnet8", (1, 3, 32, 32), "ResNet8", "image classification", "ResNet-8, 3x32x32"),
        ("mlperf_dscnn", (1, 1, 49, 10), "DSCNN", "keyword spotting", "DS-CNN, 1x49x10"),
        ("mlperf_mobilenet", (1, 3, 96, 96), "MobileNetV1", "visual wake words",
         "MobileNetV1 0.25, 3x96x96"),
        ("mlperf_autoencoder", (1, 640), "FCAutoencoder", "anomaly detection",
         "FC autoencoder, 640")]],
]}


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def names() -> list[str]:
    return list(MODELS)
