"""IMX681 state lowering: buffer IDs and the configuration's state policy.

Buffer IDs (`assign_buffer_ids`): every tensor in order of first use, walking the operations in
execution order (inputs before outputs). They depend on the model only, never on the
configuration, so IDs read from one summary.txt are valid for the next compile.

State lowering (`lower_states`), from the configuration:
  MODEL_STATE_READ/WRITE_BUFFER_ID  the named pair is merged (checked: see `_check_pair`);
  MODEL_STATE_AUTO_DETECT ON        every detected pair is merged;
  otherwise                         the read is a constant holding the initial value and the
                                    write an ordinary scratch tensor: a warning says the state
                                    will not persist (the seed's silent behaviour).
A merged pair is ONE buffer in STATIC_DATA with ONE set of quantization parameters (the
write's): the read sees what the previous frame wrote. The operation producing the write writes
it in place, which must be safe (checked).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from ...arith import torch_dequantize, torch_quantize
from ...errors import NncError
from ...ir import Graph, Tensor
from .config import Config, ConfigError
from .memory import nhwc


@dataclass(eq=False)
class Persistent:
    """A merged state: one STATIC_DATA buffer, read at the start and written during a frame."""
    attribute: str
    read: Tensor
    write: Tensor
    initial: np.ndarray            # int8, with the write's quantization
    explicit: bool                 # from the MODEL_STATE_*_BUFFER_ID keys


@dataclass(eq=False)
class Constant:
    """A read that is not merged: a STATIC_DATA buffer holding the initial value every frame."""
    attribute: str
    read: Tensor
    initial: np.ndarray            # int8, with the read's own quantization
    lost_write: Tensor = None      # the write of a state that is not kept (warning)


@dataclass
class Lowered:
    graph: Graph
    ids: dict                       # id(tensor) -> buffer ID
    frame_inputs: list
    model_outputs: list
    persistent: list
    constants: list
    warnings: list = field(default_factory=list)

    def tensor_of(self, buffer_id: int):
        for t in self.graph.tensors():
            if self.ids.get(id(t)) == buffer_id:
                return t
        return None


def assign_buffer_ids(graph: Graph) -> dict:
    """id(tensor) -> buffer ID: order of first use, operations in execution order."""
    ids = {}
    for op in graph.ops:
        for t in op.inputs + op.outputs:
            if id(t) not in ids:
                ids[id(t)] = len(ids)
    for t in graph.inputs + graph.outputs:
        if id(t) not in ids:
            ids[id(t)] = len(ids)
    return ids


def _dims(t: Tensor) -> str:
    return " x ".join(str(d) for d in nhwc(t.shape))


def _describe(lowered_graph: Graph, ids: dict, t: Tensor) -> str:
    p = lowered_graph.producer(t)
    what = f"the output of operation {lowered_graph.ops.index(p)} ({p.kind} '{p.name}')" if p else \
        "a graph input"
    return f"buffer {ids[id(t)]} ({t.name}, {_dims(t)}, {what})"


def _depends_on(graph: Graph, write: Tensor, read: Tensor) -> bool:
    todo, seen = [write], set()
    while todo:
        t = todo.pop()
        if t is read:
            return True
        if id(t) in seen:
            continue
        seen.add(id(t))
        p = graph.producer(t)
        if p is not None:
            todo.extend(p.inputs)
        if t.alias_of is not None:
            todo.append(t.alias_of)
    return False


def _check_pair(graph: Graph, ids: dict, states: list, read_id: int, write_id: int, cfg: Config):
    """The MODEL_STATE_*_BUFFER_ID pair, or an error that says why it is not one state's."""
    by_id = {ids[id(t)]: t for t in graph.tensors()}
    known = f"buffer IDs of this model: 0..{max(by_id)} (summary.txt)"
    for key, bid in (("MODEL_STATE_READ_BUFFER_ID", read_id), ("MODEL_STATE_WRITE_BUFFER_ID", write_id)):
        if bid not in by_id:
            raise ConfigError(f"{key} {bid}: no buffer has this ID", cfg.where(key), known)
    read, write = by_id[read_id], by_id[write_id]
    reads = {id(s.read): s for s in states}
    if read_id == write_id:
        raise ConfigError(f"MODEL_STATE_READ_BUFFER_ID and MODEL_STATE_WRITE_BUFFER_ID are both {read_id}",
                          cfg.where("MODEL_STATE_WRITE_BUFFER_ID"),
                          "the write is the output of the operation that updates the state")
    if id(read) not in reads:
        candidates = ", ".join(str(ids[id(s.read)]) for s in states) or "none in this model"
        raise ConfigError(f"MODEL_STATE_READ_BUFFER_ID {read_id} is not a state read: it is "
                          f"{_describe(graph, ids, read)}", cfg.where("MODEL_STATE_READ_BUFFER_ID"),
                          "a state read is a buffer no operation produces, in STATIC_DATA with parent "
                          f"-1 (the model's reads: {candidates})")
    if graph.producer(write) is None:
        raise ConfigError(f"MODEL_STATE_WRITE_BUFFER_ID {write_id} is not produced by any operation: "
                          f"it is {_describe(graph, ids, write)}",
                          cfg.where("MODEL_STATE_WRITE_BUFFER_ID"),
                          "the write buffer is the output of the operation that updates the state")
    if tuple(read.shape) != tuple(write.shape):
        raise ConfigError(f"the state buffers have different shapes: read {read_id} is {_dims(read)}, "
                          f"write {write_id} is {_dims(write)}",
                          cfg.where("MODEL_STATE_WRITE_BUFFER_ID"),
                          "a state keeps its shape; pick the read and the write of the same state")
    if not _depends_on(graph, write, read):
        raise ConfigError(f"MODEL_STATE_WRITE_BUFFER_ID {write_id} is not computed from the read "
                          f"buffer {read_id}: it is {_describe(graph, ids, write)}, which does not "
                          "depend on it", cfg.where("MODEL_STATE_WRITE_BUFFER_ID"),
                          "the write is the output of the operation that updates the state "
                          "(e.g. the ADDSUB that takes the read as an input)")
    return reads[id(read)], write


def _check_in_place(graph: Graph, ids: dict, read: Tensor, write: Tensor) -> None:
    """The write lands on the read's bytes: nothing may read the old value afterwards."""
    producer = graph.producer(write)
    step = graph.ops.index(producer)
    where = f"state buffers {ids[id(read)]} (read) / {ids[id(write)]} (write)"
    for op in graph.consumers(read):
        i = graph.ops.index(op)
        if i > step:
            raise NncError(f"operation {i} ({op.kind} '{op.name}') reads the state after operation "
                           f"{step} has overwritten it", where,
                           "read the state before updating it (the seed's pattern: "
                           "state = x + state, then use the new state)")
    if any(t is read for t in producer.inputs) and producer.kind not in ("add", "relu"):
        raise NncError(f"operation {step} ({producer.kind}) would compute the new state in place "
                       "from the old one, which only element-wise operations can do", where,
                       "update the state with an element-wise operation (add)")
    if write.alias_of is not None:
        raise NncError("the state is written through a reshape view", where,
                       "store the output of a computing layer")


def _requantize_initial(s, qparams) -> np.ndarray:
    if s.initial_qparams is not None:            # the attribute held a quantized tensor
        real = torch_dequantize(s.initial, s.initial_qparams)
    else:
        real = s.initial
    return torch_quantize(real, qparams, s.torch_zp_offset).reshape(s.read.shape)


def lower_states(graph: Graph, cfg: Config, log=None) -> Lowered:
    """A deep copy of the graph with the configuration's state policy applied."""
    graph = copy.deepcopy(graph)
    ids = assign_buffer_ids(graph)
    states = graph.meta.get("states", [])
    reads = {id(s.read) for s in states}
    writes = {id(s.write) for s in states if s.write is not None}
    frame_inputs = [t for t in graph.inputs if id(t) not in reads]
    model_outputs = [t for t in graph.outputs if id(t) not in writes]
    warnings = []
    pairs = []
    rid, wid = cfg.get("MODEL_STATE_READ_BUFFER_ID"), cfg.get("MODEL_STATE_WRITE_BUFFER_ID")
    if rid is not None:
        s, write = _check_pair(graph, ids, states, rid, wid, cfg)
        pairs.append((s, write, True))
        if cfg["MODEL_STATE_AUTO_DETECT"] and s.write is not None and s.write is not write:
            warnings.append(f"the MODEL_STATE_*_BUFFER_ID keys pair read {rid} with write {wid}; "
                            f"state detection found write {ids[id(s.write)]} for '{s.attribute}': "
                            "the keys win")
    if cfg["MODEL_STATE_AUTO_DETECT"]:
        paired = {id(p[0]) for p in pairs}
        pairs += [(s, s.write, False) for s in states if s.is_state and id(s) not in paired]
    persistent, constants = [], []
    paired = {id(p[0]): p for p in pairs}
    for s in states:
        if id(s) in paired:
            _, write, explicit = paired[id(s)]
            _check_in_place(graph, ids, s.read, write)
            s.read.qparams = write.qparams       # one set of quantization parameters
            persistent.append(Persistent(s.attribute, s.read, write, _requantize_initial(s, write.qparams),
                                         explicit))
        else:
            c = Constant(s.attribute, s.read, _requantize_initial(s, s.read.qparams), s.write)
            constants.append(c)
            if s.write is not None:
                warnings.append(
                    f"the state '{s.attribute}' will NOT persist between frames: automatic state "
                    "detection is off and MODEL_STATE_READ_BUFFER_ID / MODEL_STATE_WRITE_BUFFER_ID "
                    f"are not set, so its read (buffer {ids[id(s.read)]}) is a constant holding the "
                    f"initial value and its write (buffer {ids[id(s.write)]}) is discarded. Set "
                    f"MODEL_STATE_AUTO_DETECT ON, or MODEL_STATE_READ_BUFFER_ID {ids[id(s.read)]} and "
                    f"MODEL_STATE_WRITE_BUFFER_ID {ids[id(s.write)]}")
    # Graph I/O for the AOT emitter: frame inputs, then every read (state or constant buffer);
    # model outputs, then the merged writes (the frame API passes the state buffer for both).
    graph.inputs = frame_inputs + [p.read for p in persistent] + [c.read for c in constants]
    graph.outputs = model_outputs + [p.write for p in persistent]
    graph.validate()
    lowered = Lowered(graph, ids, frame_inputs, model_outputs, persistent, constants, warnings)
    if log:
        for w in warnings:
            log(f"warning: {w}")
    return lowered
