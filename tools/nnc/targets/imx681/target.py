"""The Sony IMX681 target: stateful models, memory regions, summary.txt, C sources or images.

Pipeline (`compile_model`), one way:
  1. import with state detection (nnc.frontend.state): a state read is an extra graph input, its
     write an extra graph output, `graph.meta["states"]` pairs them;
  2. buffer IDs (`assign_buffer_ids`): every tensor in order of first use, walking the operations
     in execution order (inputs before outputs). They depend on the model only, never on the
     configuration, so IDs read from one summary.txt are valid for the next compile;
  3. state lowering (`lower_states`), from the configuration:
       MODEL_STATE_READ/WRITE_BUFFER_ID  the named pair is merged (checked: see `_check_pair`);
       MODEL_STATE_AUTO_DETECT ON        every detected pair is merged;
       otherwise                         the read is a constant holding the initial value and
                                         the write an ordinary scratch tensor: a warning says the
                                         state will not persist (the seed's silent behaviour).
     A merged pair is ONE buffer in STATIC_DATA with ONE set of quantization parameters (the
     write's): the read sees what the previous frame wrote. The operation producing the write
     writes it in place, which must be safe (checked);
  4. the shared pipeline (nnc.compiler.compile_graph) with this target's kernels -> AOT C;
     the frame API (`<prefix>_frame`, `<prefix>_reset_state`) binds the state buffers;
  5. memory layout in the configured regions (imx681_memory), summary.txt (imx681_summary),
     memory images (imx681_image).

Arithmetic: this target reuses qnnpack's arithmetic (float32 multipliers, as nnc.arith) for
every layer, plus torch's float dequantize/add/quantize for a state added in float
(`torch_float_add`, nnc.frontend.state). It does not model a Sony-specific fixed-point
requantization: the golden reference is torch itself, reproduced by nnc.reference +
nnc.frontend.state.run_graph, and the C code is bit-exact with both.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import numpy as np

from ..compiler import compile_graph
from ..errors import NncError
from ..frontend import state as state_mod
from ..ir import Graph, Tensor, c_identifier
from ..kernels.c_kernels import PortableCKernels
from ..outdir import output_dir, write_file
from .imx681_config import Config, ConfigError
from .imx681_kernels import Imx681Kernels

VALUES_PER_LINE = 16


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


# ---------------------------------------------------------------------------------------------
# State lowering
# ---------------------------------------------------------------------------------------------
def _dims(t: Tensor) -> str:
    from .imx681_memory import nhwc
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
        real = state_mod.torch_dequantize(s.initial, s.initial_qparams)
    else:
        real = s.initial
    return state_mod.torch_quantize(real, qparams, s.torch_zp_offset).reshape(s.read.shape)


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


# ---------------------------------------------------------------------------------------------
# The target (nnc.compiler interface)
# ---------------------------------------------------------------------------------------------
def _c_array(values: np.ndarray) -> str:
    items = [str(int(v)) for v in values.ravel()]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    return "    " + ",\n    ".join(lines)


class Imx681Target:
    """Kernels: the IMX681 provider for torch_float_add, portable C (qnnpack) for the rest.

    With a `Lowered` model, the generated C gets the frame API and its STATIC_DATA buffers."""
    name = "imx681"
    golden_reference = ("torch (qnnpack layers, float state add), reproduced by nnc.reference + "
                        "nnc.frontend.state.run_graph")

    def __init__(self, lowered: Lowered = None):
        self.lowered = lowered

    def passes(self):
        return []

    def kernel_providers(self):
        return [Imx681Kernels(), PortableCKernels()]

    def _prefix(self, graph):
        return f"tvmgen_{c_identifier(graph.name)}"

    def extra_header_api(self, graph) -> str:
        if self.lowered is None:
            return ""
        low, prefix = self.lowered, self._prefix(graph)
        macro = prefix.upper()
        ins = ", ".join(f"const void* input{i}" for i in range(len(low.frame_inputs)))
        outs = ", ".join(f"void* output{i}" for i in range(len(low.model_outputs)))
        lines = ["/* ---- IMX681 frame API ------------------------------------------------------",
                 " * <prefix>_frame() runs one frame: the frame inputs are input0.., the model outputs",
                 " * output0.. of the structs above; state buffers live in STATIC_DATA inside the",
                 " * .c and keep their value from one call to the next. <prefix>_reset_state()",
                 " * restores their initial values. Not reentrant. */",
                 f"#define {macro}_FRAME_INPUTS {len(low.frame_inputs)}",
                 f"#define {macro}_FRAME_OUTPUTS {len(low.model_outputs)}",
                 f"#define {macro}_STATES {len(low.persistent)}"]
        for i, p in enumerate(low.persistent):
            lines += [f"#define {macro}_STATE{i}_SIZE {p.read.nbytes}",
                      f"#define {macro}_STATE{i}_READ_BUFFER_ID {low.ids[id(p.read)]}",
                      f"#define {macro}_STATE{i}_WRITE_BUFFER_ID {low.ids[id(p.write)]}"]
        lines += [f"int32_t {prefix}_frame({', '.join(x for x in (ins, outs) if x)});",
                  f"void {prefix}_reset_state(void);",
                  f"/* The current value of state `index` (int8, {macro}_STATE<index>_SIZE bytes). */",
                  f"const int8_t* {prefix}_state(int32_t index);"]
        return "\n".join(lines)

    def extra_source(self, graph, plan) -> str:
        if self.lowered is None:
            return ""
        low, prefix = self.lowered, self._prefix(graph)
        out = ["/* ---- IMX681 frame API: STATIC_DATA buffers ---------------------------------- */"]
        for i, p in enumerate(low.persistent):
            n = p.read.nbytes
            out += [f"/* state '{p.attribute}': buffer {low.ids[id(p.read)]} (read) and "
                    f"{low.ids[id(p.write)]} (write), scale {p.write.qparams.scale:.9g}, "
                    f"zero point {p.write.qparams.zero_point}; kept between frames */",
                    f"static const int8_t {prefix}_state{i}_initial[{n}] = {{", _c_array(p.initial), "};",
                    f"static int8_t {prefix}_state{i}[{n}] = {{", _c_array(p.initial), "};"]
        for i, c in enumerate(low.constants):
            out += [f"/* constant '{c.attribute}': buffer {low.ids[id(c.read)]}, the initial value "
                    "every frame */",
                    f"static const int8_t {prefix}_const{i}[{c.read.nbytes}] = {{",
                    _c_array(c.initial), "};"]
        out += ["", f"void {prefix}_reset_state(void)", "{"]
        for i, p in enumerate(low.persistent):
            out += [f"    for (int32_t i = 0; i < {p.read.nbytes}; ++i) {{",
                    f"        {prefix}_state{i}[i] = {prefix}_state{i}_initial[i];", "    }"]
        out += ["}", "", f"const int8_t* {prefix}_state(int32_t index)", "{"]
        for i in range(len(low.persistent)):
            out.append(f"    if (index == {i}) return {prefix}_state{i};")
        out += ["    (void)index;", "    return 0;", "}", ""]
        ins = ", ".join(f"const void* input{i}" for i in range(len(low.frame_inputs)))
        outs = ", ".join(f"void* output{i}" for i in range(len(low.model_outputs)))
        out += [f"int32_t {prefix}_frame({', '.join(x for x in (ins, outs) if x)})", "{",
                f"    struct {prefix}_inputs inputs;", f"    struct {prefix}_outputs outputs;"]
        k = 0
        for i in range(len(low.frame_inputs)):
            out.append(f"    inputs.input{k} = (void*)input{i};")
            k += 1
        for i, _ in enumerate(low.persistent):
            out.append(f"    inputs.input{k} = {prefix}_state{i};")
            k += 1
        for i, _ in enumerate(low.constants):
            out.append(f"    inputs.input{k} = (void*){prefix}_const{i};")
            k += 1
        k = 0
        for i in range(len(low.model_outputs)):
            out.append(f"    outputs.output{k} = output{i};")
            k += 1
        for i, _ in enumerate(low.persistent):
            out.append(f"    outputs.output{k} = {prefix}_state{i};  /* written in place */")
            k += 1
        out += [f"    return {prefix}_run(&inputs, &outputs);", "}"]
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Compile
# ---------------------------------------------------------------------------------------------
@dataclass
class Imx681Package:
    config: Config
    lowered: Lowered
    compiled: object               # nnc.compiler.CompiledModel
    memory: object                 # imx681_memory.MemoryMap
    summary: str
    files: dict                    # file name -> bytes, the output directory's content
    warnings: list

    @property
    def prefix(self) -> str:
        return self.compiled.prefix

    def write(self, out_dir: str, where: str = "OUTPUT_DIRECTORY") -> str:
        """(Re)create out_dir with exactly `files`, all or nothing, and only if nnc made it
        (nnc.outdir); `where` names the key or option the folder came from. Returns its path."""
        with output_dir(out_dir, where) as staging:
            for name, data in sorted(self.files.items()):
                write_file(os.path.join(staging, name), data)
        return os.path.abspath(out_dir)


def compile_model(qmodel, example_input, cfg: Config, log=None, model_label: str = "",
                  graph=None) -> Imx681Package:
    """Import, lower, compile and lay out one model for the configuration (nothing written).
    `graph`: an already imported IR graph (MODEL_FILE) instead of the eager `qmodel`."""
    from . import imx681_image, imx681_memory, imx681_summary
    import json
    if graph is None:
        graph = state_mod.import_stateful_model(qmodel, example_input, cfg.network_name)
    lowered = lower_states(graph, cfg, log)
    compiled = compile_graph(lowered.graph, Imx681Target(lowered))
    params_image = imx681_image.build_params_image(lowered, cfg)
    memory = imx681_memory.layout(lowered, compiled.plan, cfg, params_image)
    params_bytes = imx681_image.finish_params_image(params_image, memory, cfg)
    static_bytes = imx681_image.static_data_image(lowered, memory, cfg)
    summary = imx681_summary.render(lowered, compiled, memory, cfg, model_label or cfg.model_label)
    files = {"summary.txt": summary.encode()}
    name = cfg.network_name
    manifest = {"network": name, "model": cfg.model_label, "mode": cfg["OUTPUT_MODE"],
                "prefix": compiled.prefix, "memory_order": cfg["MEMORY_ORDER"],
                "frame_inputs": [list(t.shape) for t in lowered.frame_inputs],
                "frame_input_buffer_ids": [lowered.ids[id(t)] for t in lowered.frame_inputs],
                "model_outputs": [list(t.shape) for t in lowered.model_outputs],
                "model_output_buffer_ids": [lowered.ids[id(t)] for t in lowered.model_outputs],
                "states": [{"attribute": p.attribute, "read_buffer_id": lowered.ids[id(p.read)],
                            "write_buffer_id": lowered.ids[id(p.write)], "bytes": p.read.nbytes,
                            "address": memory.address_of(p.read),
                            "scale": p.write.qparams.scale, "zero_point": p.write.qparams.zero_point}
                           for p in lowered.persistent],
                "regions": memory.usage(), "warnings": lowered.warnings, "files": []}
    if cfg["OUTPUT_MODE"] == "C_SOURCES":
        files[f"{compiled.prefix}.h"] = compiled.header.encode()
        files[f"{compiled.prefix}.c"] = compiled.source.encode()
    else:
        files[f"{name}_params.bin"] = params_bytes
        files[f"{name}_static_data.bin"] = static_bytes
        files["images.txt"] = imx681_image.load_list(name, memory, params_bytes, static_bytes, cfg).encode()
    manifest["files"] = sorted(files) + ["manifest.json"]
    files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return Imx681Package(cfg, lowered, compiled, memory, summary, files, lowered.warnings)


def load_zoo_model(cfg: Config):
    """(qmodel, example input) of the configuration's MODEL, or a ConfigError."""
    from models.registry import get
    from .imx681_config import resolve_path
    try:
        spec = get(cfg["MODEL"])
    except (KeyError, LookupError, ValueError) as e:
        raise ConfigError(str(e).strip("'\""), cfg.where("MODEL"), "pick a model of the zoo") from None
    ckpt = cfg.get("MODEL_CHECKPOINT")
    try:
        qmodel = spec.load_quantized(resolve_path(cfg, "MODEL_CHECKPOINT") if ckpt else None)
    except (FileNotFoundError, ValueError) as e:   # recipes.CheckpointError: what and fix
        raise ConfigError(getattr(e, "what", str(e)), cfg.where("MODEL_CHECKPOINT" if ckpt else "MODEL"),
                          getattr(e, "fix", f"create it with `python tools/train.py --model {cfg['MODEL']}`")) \
            from None
    return qmodel, spec.example_input()


# ---------------------------------------------------------------------------------------------
# Frame-by-frame golden reference of a lowered model (what the C frame API must produce)
# ---------------------------------------------------------------------------------------------
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
        outs = state_mod.run_graph(low.graph, xs)
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
        res = state_mod.run_graph(low.graph, [x] + states + consts)
        states = res[n:]
        outs.append(res[0])
    return np.stack(outs, axis=1)
