"""The Sony IMX681 target: stateful models, memory regions, summary.txt, C sources or images.

    package = nnc.compiler.compile(qmodel, Imx681Target(cfg), example_input=x, name=cfg.network_name)
    package.write(out_dir)                   # or compile_model(qmodel, x, cfg), the same

Pipeline, one way, one module per step:
  1. import with state detection (nnc.frontend.state, by nnc.compiler for a target that keeps
     states): a state read is an extra graph input, its write an extra graph output,
     `graph.meta["states"]` pairs them;
  2. states     buffer IDs (stable across configurations) and the configuration's state policy:
                a merged read/write pair is ONE buffer in STATIC_DATA (Imx681Target.prepare);
  3. the shared pipeline (nnc.compiler) with this target's kernels (kernels: the float state
     add, then portable C) -> AOT C; target: the frame API (`<prefix>_frame`,
     `<prefix>_reset_state`) binds the state buffers;
  4. memory     layout in the configured regions (config: the KEY VALUE file);
     image      the memory images; summary: summary.txt; target: the package (Imx681Package);
  5. frames     the frame-by-frame golden reference of the C frame API.

Arithmetic: this target reuses qnnpack's arithmetic (float32 multipliers, as nnc.arith) for
every layer, plus torch's float dequantize/add/quantize for a state added in float
(`arith.torch_float_add`). It does not model a Sony-specific fixed-point requantization: the
golden reference is torch itself, reproduced by nnc.reference, and the C code is bit-exact with
both.
"""
from .config import Config, ConfigError, parse_config, resolve_path
from .frames import ReferenceFrames, reference_sequences
from .states import Lowered, assign_buffer_ids, lower_states
from .target import Imx681Package, Imx681Target, compile_model

__all__ = ["Config", "ConfigError", "Imx681Package", "Imx681Target", "Lowered", "ReferenceFrames",
           "assign_buffer_ids", "compile_model", "lower_states", "parse_config", "reference_sequences",
           "resolve_path"]
