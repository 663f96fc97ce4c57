"""Write a deployment directory for a zoo model (the seed's MERA-style flow).

    nnc deploy --model resnet18 --out deploy/resnet18 [--layout nhwc]
    build/host/inference deploy/resnet18 --runs 100

The directory holds the shared library, the generated C and header, input0.bin (one real
sample, int8, in the chosen layout), ref_result_<i>.bin (torch qnnpack's int8 outputs for it),
metadata.json (names, shapes, dtypes, layout, quantization, reference, compiler options) and
deploy.cfg (the same facts as KEY VALUE lines, for the C `inference` application).
The directory appears complete or not at all, and replaces only a deployment directory nnc made
(or a new or empty one): anything else is refused.
"""
from __future__ import annotations

import os
import time

import numpy as np

from nnc.cli.export import add_calibration_argument, compile_model, model_summary, quiet_torch_warnings
from nnc.errors import NncError
from nnc.outdir import check_target, output_dir, write_json
from nnc.toolchains import HOST_CFLAGS, host_shared_library

REFERENCE = "torch eager quantized model, engine qnnpack (int8 tensor before the DeQuantStub)"
REFERENCE_PT2E = "nnc.reference (numpy) of the imported PT2E program"


def sample_input(spec, graph, layout: str, seed: int) -> np.ndarray:
    """Held-out/training sample number `seed` of the model's data set, quantized as its QuantStub
    does; a model file without a data set gets seeded uniform int8. In the input's layout."""
    from nnc.frontend.torch_eager import quantize_like_torch
    if spec is None:   # graph.inputs[0] is already in `layout` (apply_input_layout ran)
        xi = np.random.default_rng(seed).integers(-128, 128, (1,) + tuple(graph.inputs[0].shape[1:]))
        return xi.astype(np.int8)
    x = spec.calibration_inputs(seed + 1)[seed:seed + 1].float().numpy()
    return to_layout(quantize_like_torch(x, graph.inputs[0].qparams), layout)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """An NCHW input in `layout`: like nnc.passes.apply_input_layout, only 4-D inputs change."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "nhwc" and x.ndim == 4 else x


def to_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    """The inverse of to_layout."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "nhwc" and x.ndim == 4 else x


def deploy(model: str, out: str, layout: str = "nchw", kernels: str = "c", seed: int = 0,
           checkpoint: str = None, out_label: str = "--out", calibration: str = None) -> dict:
    from nnc import reference

    t0 = time.time()
    check_target(out, out_label)        # before the work, not after it
    loaded, graph, compiled = compile_model(model, kernels, layout, checkpoint, calibration)
    model = loaded.name
    compile_seconds = time.time() - t0
    x = sample_input(loaded.spec, graph, layout, seed)
    golden = reference.run(graph, [x])
    if loaded.kind == "eager":
        refs = loaded.run_int8([to_nchw(x, layout)])
        for r, g in zip(refs, golden):
            if not np.array_equal(r, g):
                raise NncError("the numpy reference disagrees with torch on the deployment input",
                               f"model {model}", "report this: it is a compiler bug")
    else:
        refs = golden   # PT2E: the golden model is nnc.reference (see the README's contracts)

    with output_dir(out, out_label) as staging:
        c_file, h_file = (os.path.basename(p) for p in reversed(compiled.write(staging)))
        lib_name = f"lib{model}.so"
        host_shared_library([os.path.join(staging, c_file)], os.path.join(staging, lib_name),
                            include_dirs=[staging])
        x.tofile(os.path.join(staging, "input0.bin"))
        for i, r in enumerate(refs):
            r.astype(np.int8).tofile(os.path.join(staging, f"ref_result_{i}.bin"))
        meta = model_summary(compiled, "cpu")
        meta.update({"input_layout": layout,
                     "reference": REFERENCE if loaded.kind == "eager" else REFERENCE_PT2E, "library": lib_name,
                     "header": h_file, "source": c_file,
                     "compiler_options": {"kernels": kernels, "cflags": HOST_CFLAGS},
                     "compile_seconds": round(compile_seconds, 2)})
        write_json(os.path.join(staging, "metadata.json"), meta)
        with open(os.path.join(staging, "deploy.cfg"), "w") as f:
            f.write(f"library {lib_name}\nrun_symbol {compiled.prefix}_run\n")
            for i, t in enumerate(graph.inputs):
                f.write(f"input{i}_size {t.nbytes}\n")
            for i, t in enumerate(graph.outputs):
                f.write(f"output{i}_size {t.nbytes}\n")
    return meta


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True,
                    help="a zoo name, a PT2E zoo variant, a .pt2 program or net.py:build (see nnc export --help)")
    ap.add_argument("--checkpoint", help="converted int8 weights for a zoo model (safe loader only)")
    add_calibration_argument(ap)
    ap.add_argument("--out", required=True, help="deployment directory to (re)create: new, empty, or made by nnc")
    ap.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw", help="input layout")
    ap.add_argument("--kernels", choices=("c", "tvm", "m7"), default="c", help="kernel generator")
    ap.add_argument("--seed", type=int, default=0, help="which data-set sample becomes input0.bin")
    ap.add_argument("--out-label", default="--out", metavar="TEXT",
                    help="how error messages name the output folder (default --out; the SCons "
                         "build passes deploy=, the option its user typed)")
    ap.set_defaults(run=run)


def run(args) -> int:
    quiet_torch_warnings()
    meta = deploy(args.model, args.out, args.layout, args.kernels, args.seed, args.checkpoint,
                  args.out_label, args.calibration)
    print(f"deployed {args.model} ({args.layout}) to {args.out}: compile {meta['compile_seconds']} s, "
          f"arena {meta['arena_bytes']} B, weights {meta['weight_bytes']} B")
    return 0
