"""Weight packing: the int8 blob the accelerator reads (packed weights, then int32 biases,
word-reversed)."""
from __future__ import annotations

import numpy as np

from ...ir import Op
from .hardware import ceil16
from .partition import is_depthwise


def _reverse_words(b: np.ndarray) -> np.ndarray:
    assert b.size % 4 == 0, b.size
    return b.reshape(-1, 4)[:, ::-1].reshape(-1)


def pack_weights(op: Op) -> np.ndarray:
    """The int8 blob the accelerator reads: packed weights then int32 biases, word-reversed.

    conv:      [K/16][C][FY][FX][16] (K padded to 16), then K_pad int32 biases
    depthwise: [K/16][4][FY][FX][16], slot 0 the channel's kernel, slots 1..3 zero
    dense:     [K/16][C_pad][16] (C padded to 16)
    """
    w = op.params["weight"].astype(np.int8)
    k = w.shape[0]
    kp = ceil16(k) * 16
    if op.kind == "conv2d":
        _, c, fy, fx = w.shape
        if is_depthwise(op):
            wp = np.zeros((kp, 4, fy, fx), np.int8)
            wp[:k, 0] = w[:, 0]
            c = 4
        else:
            wp = np.zeros((kp, c, fy, fx), np.int8)
            wp[:k] = w
        packed = wp.reshape(kp // 16, 16, c, fy, fx).transpose(0, 2, 3, 4, 1)
    elif op.kind == "dense":
        c = w.shape[1]
        cp = ceil16(c) * 16
        wp = np.zeros((kp, cp), np.int8)
        wp[:k, :c] = w
        packed = wp.reshape(kp // 16, 16, cp).transpose(0, 2, 1)
    else:
        raise ValueError(f"{op.name}: {op.kind} has no weights")
    bias = np.zeros(kp, "<i4")
    bias[:k] = op.params["bias"].astype(np.int32)
    blob = np.concatenate([packed.reshape(-1).view(np.uint8), bias.view(np.uint8)])
    return _reverse_words(blob).view(np.int8).copy()
