"""What several Cortex-M7 kernel modules share: the input zero point folded into the bias, and
C helpers of their preludes. A leaf module: it imports no other kernel module."""
from __future__ import annotations

import numpy as np


def _folded_bias64(op) -> tuple:
    w = op.params["weight"].reshape(op.params["weight"].shape[0], -1).astype(np.int64)
    return w, op.params["bias"].astype(np.int64) - op.inputs[0].qparams.zero_point * w.sum(axis=1)


def folded_bias(op) -> np.ndarray:
    """bias - zp_in * sum(weights) per output channel: the columns then hold the raw input values
    (padding at the zero point) and sum(w * x) + this equals bias + sum(w * (x - zp_in)) exactly."""
    return _folded_bias64(op)[1].astype(np.int32)


def bias_folds(op) -> bool:
    """The folded bias and every partial sum stay inside int32 (else: the portable kernel)."""
    w, folded = _folded_bias64(op)
    return bool(np.all(np.abs(folded) + 128 * np.abs(w).sum(axis=1) < 2 ** 31))


NO_PRESCHEDULE = """\
/* gcc's scheduling before register allocation moves the loads of unrolled multiply-accumulate
 * code ahead; more values are then live than the core has registers and they go to the stack.
 * Off for the kernels that say so (the M7's own pipeline still pairs the instructions).
 * Variable-tracking assignments off too: these long straight-line functions exceed its size
 * limit with -g, and gcc would print a note and retry without it anyway (same debug info). */
#if defined(__GNUC__) && !defined(__clang__)
#define NNC_M7_NO_PRESCHEDULE __attribute__((optimize("no-schedule-insns", "no-var-tracking-assignments")))
#else
#define NNC_M7_NO_PRESCHEDULE
#endif
"""
