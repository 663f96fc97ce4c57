"""The frame-by-frame golden reference of a lowered IMX681 model: what the C frame API
(`<prefix>_frame`, `<prefix>_reset_state`) must produce, computed by nnc.reference."""
from __future__ import annotations

import numpy as np

from ... import reference
from .states import Lowered


class ReferenceFrames:
    """numpy twin of the C frame API: `run(frame)` keeps the state, `reset_state()`."""

    def __init__(self, lowered: Lowered):
        self.lowered = lowered
        self.reset_state()

    def reset_state(self):
        self.states = [p.initial.copy() for p in self.lowered.persistent]

    def run(self, *frames):
        low = self.lowered
        xs = [np.asarray(f, dtype=np.int8).reshape((1,) + tuple(t.shape[1:]))
              for f, t in zip(frames, low.frame_inputs)]
        xs += [s.reshape((1,) + tuple(p.read.shape[1:])) for s, p in zip(self.states, low.persistent)]
        xs += [c.initial.reshape((1,) + tuple(c.read.shape[1:])) for c in low.constants]
        outs = reference.run(low.graph, xs)
        n = len(low.model_outputs)
        self.states = [o.reshape(p.read.shape).copy() for o, p in zip(outs[n:], low.persistent)]
        ys = [o[0] for o in outs[:n]]
        return ys[0] if n == 1 else ys


def reference_sequences(lowered: Lowered, frames: np.ndarray) -> np.ndarray:
    """S independent sequences of T frames (S, T, *frame shape), batched: the outputs of the
    (single) model output, (S, T, *output shape), every sequence from the initial state."""
    low = lowered
    frames = np.asarray(frames, dtype=np.int8)
    n_seq, n_steps = frames.shape[:2]
    batch = lambda a, t: np.broadcast_to(a.reshape((1,) + tuple(t.shape[1:])),
                                         (n_seq,) + tuple(t.shape[1:])).copy()
    states = [batch(p.initial, p.read) for p in low.persistent]
    consts = [batch(c.initial, c.read) for c in low.constants]
    n = len(low.model_outputs)
    outs = []
    for t in range(n_steps):
        x = frames[:, t].reshape((n_seq,) + tuple(low.frame_inputs[0].shape[1:]))
        res = reference.run(low.graph, [x] + states + consts)
        states = res[n:]
        outs.append(res[0])
    return np.stack(outs, axis=1)
