"""The IMX681 target: the frame API and STATIC_DATA buffers around the AOT C, and its package.

Imx681Target(cfg) behind nnc.targets.base.Target: `prepare` lowers the states (states.py), the
kernels are this target's float state add (kernels.py) then portable C, the header and source
get the frame API (`<prefix>_frame`, `<prefix>_reset_state`, `<prefix>_state`), and `package`
lays the model out in the configured memory regions (memory.py) and makes the output folder:
summary.txt, manifest.json, and the C sources or the memory images (image.py), by OUTPUT_MODE.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compiler import CompiledModel, Package, compile
from ...ir import Graph, c_identifier
from ...kernels.c_kernels import PortableCKernels
from ...outdir import json_text
from .. import base
from . import image, memory, summary
from .config import Config
from .kernels import Imx681Kernels
from .states import Lowered, lower_states

VALUES_PER_LINE = 16


def _c_array(values: np.ndarray) -> str:
    items = [str(int(v)) for v in values.ravel()]
    lines = [", ".join(items[i:i + VALUES_PER_LINE]) for i in range(0, len(items), VALUES_PER_LINE)]
    return "    " + ",\n    ".join(lines)


def _frame_signature(low: Lowered, prefix: str) -> str:
    ins = [f"const void* input{i}" for i in range(len(low.frame_inputs))]
    outs = [f"void* output{i}" for i in range(len(low.model_outputs))]
    return f"int32_t {prefix}_frame({', '.join(ins + outs)})"


class Imx681Target(base.Target):
    """Kernels: the IMX681 provider for torch_float_add, portable C (qnnpack) for the rest; the
    generated C gets the frame API and its STATIC_DATA buffers. `log` receives the warnings."""
    name = "imx681"
    golden_reference = ("torch (qnnpack layers, float state add), reproduced by nnc.reference "
                        "(nnc.arith.torch_float_add)")
    stateful = True

    def __init__(self, cfg: Config, log=None, model_label: str = ""):
        self.cfg, self.log, self.model_label = cfg, log, model_label
        self.lowered = None

    def prepare(self, graph: Graph) -> Graph:
        self.lowered = lower_states(graph, self.cfg, self.log)
        return self.lowered.graph

    def kernel_providers(self):
        return [Imx681Kernels(), PortableCKernels()]

    def _prefix(self, graph):
        return f"tvmgen_{c_identifier(graph.name)}"

    def extra_header_api(self, graph) -> str:
        low, prefix = self.lowered, self._prefix(graph)
        macro = prefix.upper()
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
        lines += [_frame_signature(low, prefix) + ";",
                  f"void {prefix}_reset_state(void);",
                  f"/* The current value of state `index` (int8, {macro}_STATE<index>_SIZE bytes). */",
                  f"const int8_t* {prefix}_state(int32_t index);"]
        return "\n".join(lines)

    def extra_source(self, graph, plan) -> str:
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
        out += [_frame_signature(low, prefix), "{",
                f"    struct {prefix}_inputs inputs;", f"    struct {prefix}_outputs outputs;"]
        # The run() inputs: frame inputs, then every state, then every constant; its outputs:
        # model outputs, then every state (the frame API passes the state buffer for both).
        states = [f"{prefix}_state{i}" for i in range(len(low.persistent))]
        inputs = ([f"(void*)input{i}" for i in range(len(low.frame_inputs))] + states
                  + [f"(void*){prefix}_const{i}" for i in range(len(low.constants))])
        outputs = ([f"output{i};" for i in range(len(low.model_outputs))]
                   + [f"{s};  /* written in place */" for s in states])
        out += [f"    inputs.input{k} = {v};" for k, v in enumerate(inputs)]
        out += [f"    outputs.output{k} = {v}" for k, v in enumerate(outputs)]
        out += [f"    return {prefix}_run(&inputs, &outputs);", "}"]
        return "\n".join(out)

    def package(self, compiled: CompiledModel, source_graph: Graph) -> "Imx681Package":
        cfg, lowered = self.cfg, self.lowered
        params_image = image.build_params_image(lowered, cfg)
        layout = memory.layout(lowered, compiled.plan, cfg, params_image)
        params_bytes = image.finish_params_image(params_image, layout, cfg)
        static_bytes = image.static_data_image(lowered, layout, cfg)
        text = summary.render(lowered, compiled, layout, cfg, self.model_label or cfg.model_label)
        files = {"summary.txt": text.encode()}
        name = cfg.network_name
        manifest = {"network": name, "model": cfg.model_label, "mode": cfg["OUTPUT_MODE"],
                    "prefix": compiled.prefix, "memory_order": cfg["MEMORY_ORDER"],
                    "frame_inputs": [list(t.shape) for t in lowered.frame_inputs],
                    "frame_input_buffer_ids": [lowered.ids[id(t)] for t in lowered.frame_inputs],
                    "model_outputs": [list(t.shape) for t in lowered.model_outputs],
                    "model_output_buffer_ids": [lowered.ids[id(t)] for t in lowered.model_outputs],
                    "states": [{"attribute": p.attribute, "read_buffer_id": lowered.ids[id(p.read)],
                                "write_buffer_id": lowered.ids[id(p.write)], "bytes": p.read.nbytes,
                                "address": layout.address_of(p.read),
                                "scale": p.write.qparams.scale, "zero_point": p.write.qparams.zero_point}
                               for p in lowered.persistent],
                    "regions": layout.usage(), "warnings": lowered.warnings, "files": []}
        if cfg["OUTPUT_MODE"] == "C_SOURCES":
            files[f"{compiled.prefix}.h"] = compiled.header.encode()
            files[f"{compiled.prefix}.c"] = compiled.source.encode()
        else:
            files[f"{name}_params.bin"] = params_bytes
            files[f"{name}_static_data.bin"] = static_bytes
            files["images.txt"] = image.load_list(name, layout, params_bytes, static_bytes, cfg).encode()
        manifest["files"] = sorted(files) + ["manifest.json"]
        files["manifest.json"] = json_text(manifest).encode()
        return Imx681Package(compiled, files, cfg, lowered, layout, text, lowered.warnings)


@dataclass
class Imx681Package(Package):
    config: Config = None
    lowered: Lowered = None
    memory: object = None          # memory.MemoryMap
    summary: str = ""
    warnings: list = None

    def write(self, out_dir: str, where: str = "OUTPUT_DIRECTORY") -> str:
        return super().write(out_dir, where)


def compile_model(qmodel, example_input, cfg: Config, log=None, model_label: str = "",
                  graph=None) -> Imx681Package:
    """Import (with state detection), lower, compile and lay out one model for the configuration
    (nothing written). `graph`: an already imported IR graph (MODEL_FILE) instead of `qmodel`."""
    return compile(graph if graph is not None else qmodel, Imx681Target(cfg, log, model_label),
                   example_input=example_input, name=cfg.network_name)
