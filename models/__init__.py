"""Model zoo: quantizable PyTorch models with their data, recipes and committed int8 checkpoints.

`models.get(name)` / `models.MODELS` (see models/registry.py). Importing this package does not
import torch; the ModelSpec methods do, when called.
"""
from .registry import MODELS, ModelSpec, UnknownModel, get, names  # noqa: F401
