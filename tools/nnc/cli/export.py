"""Export a quantized model (zoo, .pt2 file or factory) to portable C (tvmgen_<name>.h/.c) plus a model.json.

    nnc export --model lenet5 --out build/host/lenet5/gen

Nothing is written when the model cannot be compiled: the error names the layer and the fix.
The output folder is nnc's: it is replaced as a whole, and only if nnc made it (or it is new or
empty); a failure leaves the previous output as it was.
"""
from __future__ import annotations

import os
import time

from nnc import outdir


def model_summary(compiled, target_name: str) -> dict:
    g, plan = compiled.graph, compiled.plan
    return {
        "name": g.name,
        "prefix": compiled.prefix,
        "target": target_name,
        "macs": g.macs(),
        "weight_bytes": g.weight_bytes(),
        "arena_bytes": plan.arena_size,
        "arena_lower_bound": plan.lower_bound,
        "alignment": plan.alignment,
        "inputs": [{"name": f"input{i}", "shape": list(t.shape), "dtype": "int8",
                    "scale": t.qparams.scale, "zero_point": t.qparams.zero_point}
                   for i, t in enumerate(g.inputs)],
        "outputs": [{"name": f"output{i}", "shape": list(t.shape), "dtype": "int8",
                     "scale": t.qparams.scale, "zero_point": t.qparams.zero_point}
                    for i, t in enumerate(g.outputs)],
        "layers": [{"name": op.name, "kind": op.kind, "output_shape": list(op.output.shape),
                    "macs": op.macs(),
                    "kernel": compiled.kernels[id(op)].provider if id(op) in compiled.kernels else None,
                    "arena_offset": plan.offset_of(op.output)}
                   for op in g.ops],
        "buffers": [{"tensor": b.name, "offset": b.offset, "size": b.size,
                     "first_step": b.first, "last_step": b.last} for b in plan.buffers],
        "notes": g.meta.get("notes", []),
    }


def quiet_torch_warnings() -> None:
    """torch 2.13 warns about eager-mode quantization on every call; the seeds use it on purpose."""
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def compile_model(source: str, kernels: str = "c", layout: str = "nchw", checkpoint: str = None,
                  calibration: str = None, progress: bool = False, device_softmax: bool = False):
    """A model (zoo name, .pt2, factory file; see nnc.frontend.model_files) -> (LoadedModel, graph,
    CompiledModel) for the cpu target."""
    from nnc.compiler import compile_graph
    from nnc.frontend.model_files import load_model
    from nnc.passes import apply_input_layout
    from nnc.targets.cpu import CpuTarget

    loaded = load_model(source, checkpoint, calibration, progress)
    graph = loaded.graph(device_softmax)
    apply_input_layout(graph, layout)
    compiled = compile_graph(graph, CpuTarget(kernels=kernels))
    return loaded, graph, compiled


def export(model_name: str, out_dir: str, kernels: str = "c", quiet: bool = False,
           layout: str = "nchw", device_softmax: bool = False, checkpoint: str = None,
           calibration: str = None) -> dict:
    t0 = time.time()
    outdir.check_target(out_dir, "--out")        # before the work, not after it
    loaded, graph, compiled = compile_model(model_name, kernels, layout, checkpoint, calibration,
                                            progress=not quiet, device_softmax=device_softmax)
    model_name = loaded.name
    summary = model_summary(compiled, "cpu")
    summary["input_layout"] = layout
    summary["kernels"] = kernels
    with outdir.output_dir(out_dir, "--out") as staging:
        compiled.write(staging)
        outdir.write_json(os.path.join(staging, "model.json"), summary)
    if not quiet:
        for note in summary["notes"]:
            print(f"note: {note}")
        print(f"exported {model_name}: {len(graph.ops)} layers, {summary['macs']} MACs, "
              f"weights {summary['weight_bytes']} B, arena {summary['arena_bytes']} B "
              f"(lower bound {summary['arena_lower_bound']} B) in {time.time() - t0:.2f} s -> {out_dir}")
    return summary


def add_calibration_argument(ap) -> None:
    """--calibration, for every command that takes a model (a float factory needs it)."""
    ap.add_argument("--calibration", help="calibration data when a factory returns a float model: "
                                          "npy:FILE (float inputs) or digits")


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True,
                    help="a zoo name (models/registry.py, or a PT2E variant: lenet5_pt2e, "
                         "residual_cnn_pt2e, dwsep_pt2e), a converted PT2E program file (.pt2, "
                         "torch.export.save), or a Python factory 'path/net.py:build' returning "
                         "(model, example_input)")
    ap.add_argument("--checkpoint", help="converted int8 weights for a zoo model (plain tensors, read "
                                         "with torch.load(weights_only=True))")
    add_calibration_argument(ap)
    ap.add_argument("--out", required=True,
                    help="output folder for tvmgen_<model>.h/.c and model.json: new, empty, or made "
                         "by nnc (it is replaced as a whole)")
    ap.add_argument("--kernels", choices=("c", "tvm", "m7"), default="c",
                    help="kernel generator: portable C templates (default), TVM TE/TOPI schedules, "
                         "or Cortex-M7 DSP kernels (smlad; portable C intrinsics on other hosts)")
    ap.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw",
                    help="memory layout of 4-D model inputs (the model computes in NCHW)")
    ap.add_argument("--device-softmax", action="store_true",
                    help="compile the softmax that follows the DeQuantStub on the device: the C then "
                         "returns qnnpack's int8 probabilities (scale 1/256, zero point -128) instead "
                         "of the logits (by default the softmax is left to the caller)")
    ap.add_argument("--quiet", action="store_true")
    ap.set_defaults(run=run)


def run(args) -> int:
    quiet_torch_warnings()
    export(args.model, args.out, args.kernels, args.quiet, args.layout, args.device_softmax,
           args.checkpoint, args.calibration)
    return 0
