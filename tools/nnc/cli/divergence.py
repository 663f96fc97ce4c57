"""Layer-by-layer divergence finder: torch vs the numpy reference vs the compiled C.

    nnc divergence --model lenet5                      # freshly generated C
    nnc divergence --model lenet5 --c-source deploy/l5  # the C of a deployment

Runs the three on the same input, captures every intermediate tensor (the C through a debug
build whose layer hook copies each output out), and prints per layer the mismatch counts and
max differences, naming the first layer that diverges. Exit 0: no divergence; 1: divergence;
2: usage error.
"""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from hostlib import HostLibError
from hostlib.deployment import read_metadata
from nnc.cli.export import add_calibration_argument, compile_model, quiet_torch_warnings
from nnc.errors import NncError
from nnc.frontend.model_files import name_of
from nnc.toolchains import host_shared_library

HOOK = "-DTVMGEN_LAYER_OUTPUT_HOOK(i,d,n)=nnc_debug_capture(i,d,n)"


def c_intermediates(c_source: str, header: str, x: np.ndarray) -> dict:
    """{layer index: int8 array} from a debug build of the generated C."""
    import cffi
    import hostlib
    hostdir = os.path.dirname(os.path.abspath(hostlib.__file__))
    header_dir = os.path.dirname(header)
    with tempfile.TemporaryDirectory() as tmp:
        so = os.path.join(tmp, "libdebug.so")
        try:
            host_shared_library([c_source, os.path.join(hostdir, "debug_capture.c")], so,
                                include_dirs=[header_dir, hostdir],
                                extra_flags=[HOOK, "-include", "debug_capture.h"])
        except RuntimeError as e:
            raise NncError(f"the C in {header_dir} does not compile", str(e).strip()[-600:],
                           "give the directory of a generated model or deployment (nnc deploy)") from None
        try:
            lib = hostlib.load(so, header)
        except hostlib.HostLibError as e:
            raise NncError(str(e), f"--c-source {header_dir}",
                           "give the directory of a deployment of this model (nnc deploy), or of "
                           "its generated C (the model's NCHW portable-C build)") from None
        ffi = cffi.FFI()
        ffi.cdef("typedef void (*nnc_capture_fn)(int32_t, const void*, int32_t);"
                 "void nnc_set_capture(nnc_capture_fn fn);")
        cap = ffi.dlopen(so)
        captured = {}

        @ffi.callback("void(int32_t, const void*, int32_t)")
        def on_layer(layer, data, nbytes):
            captured[layer] = np.frombuffer(ffi.buffer(data, nbytes), dtype=np.int8).copy()

        cap.nnc_set_capture(on_layer)
        lib.run(x)
        cap.nnc_set_capture(ffi.NULL)
    return captured


def find_divergence(model: str, c_source_dir: str = None, seed: int = 0, out=None,
                    checkpoint: str = None, calibration: str = None):
    import torch
    from nnc.cli.deploy import sample_input, to_nchw
    from nnc import reference
    from nnc.frontend.torch_eager import torch_intermediates

    out = out or sys.stdout   # at call time: a default bound at import outlives a redirected stdout
    layout, kernels = "nchw", "c"
    if c_source_dir:
        if not os.path.isdir(c_source_dir):
            raise NncError(f"{c_source_dir} is not a directory", "--c-source",
                           "give the directory that holds the generated C (e.g. a deployment)")
        meta = None
        if os.path.exists(os.path.join(c_source_dir, "metadata.json")):
            try:
                meta = read_metadata(c_source_dir)
            except HostLibError as e:
                raise NncError(str(e), f"--c-source {c_source_dir}") from None
            # a deployment is named after the model (a model file's base name: name_of)
            if meta["name"] != name_of(model):
                raise NncError(f"{c_source_dir} is a deployment of {meta['name']!r}, not {model!r}",
                               "--model / --c-source",
                               f"run with the --model the deployment was made from ({meta['name']!r}, "
                               f"or the model file of that name)")
            layout, kernels = meta["layout"], meta["kernels"]   # compile as the deployment was
    loaded, graph, compiled = compile_model(model, kernels, layout, checkpoint=checkpoint,
                                            calibration=calibration)
    x = sample_input(loaded.spec, graph, layout, seed)
    x_nchw = to_nchw(x, layout)
    q = graph.inputs[0].qparams
    x_float = torch.from_numpy((x_nchw.astype(np.float32) - q.zero_point) * np.float32(q.scale))
    # PT2E programs have no per-layer int8 torch kernels: their column stays '-'.
    t_vals = torch_intermediates(loaded.model, x_float) if loaded.kind == "eager" else {}
    _, r_vals = reference.run(graph, [x], capture=True)

    with tempfile.TemporaryDirectory() as tmp:
        if c_source_dir:
            names = (meta["source"], meta["header"]) if meta else (f"{compiled.prefix}.c", f"{compiled.prefix}.h")
            src, hdr = (os.path.join(c_source_dir, n) for n in names)
            for p in (src, hdr):
                if not os.path.isfile(p):
                    raise NncError(f"no {os.path.basename(p)} in {c_source_dir}", "--c-source",
                                   "give the directory that holds the generated C (e.g. a deployment)")
        else:
            hdr, src = compiled.write(tmp)
        c_vals = c_intermediates(src, hdr, x)

    rows, first = [], None
    for index, op in enumerate(graph.ops):
        ref = r_vals[op.output.name].reshape(-1)
        row = {"layer": index, "name": op.name, "kind": op.kind, "elements": ref.size}
        # A fused op ("conv1+maxpool2d") stores what its last part computes in torch.
        for label, vals, key in (("torch", t_vals, op.name.split("+")[-1]), ("c", c_vals, index)):
            v = vals.get(key)
            if v is None:
                row[label] = None
                continue
            v = v.reshape(-1)
            diff = np.abs(v.astype(np.int32) - ref.astype(np.int32))
            row[label] = (int(np.count_nonzero(diff)), int(diff.max()) if diff.size else 0)
        bad = [lbl for lbl in ("torch", "c") if row[lbl] and row[lbl][0]]
        if bad and first is None:
            first = (op.name, bad)
        rows.append(row)

    fmt = "{:>5}  {:<28} {:<10} {:>9}  {:>18}  {:>18}"
    print(fmt.format("layer", "name", "kind", "elements", "torch vs reference", "C vs reference"),
          file=out)
    for r in rows:
        cell = lambda v: "-" if v is None else f"{v[0]} (max {v[1]})"
        print(fmt.format(r["layer"], r["name"][:28], r["kind"], r["elements"], cell(r["torch"]),
                         cell(r["c"])), file=out)
    if first:
        who = " and ".join({"torch": "torch", "c": "the C"}[b] for b in first[1])
        print(f"first divergence: layer '{first[0]}' ({who} differs from the reference)", file=out)
    else:
        print("no divergence: torch, the reference and the C agree on every layer", file=out)
    return rows, first


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True,
                    help="a zoo name, a PT2E zoo variant, a .pt2 program or net.py:build (see nnc export --help)")
    ap.add_argument("--checkpoint", help="converted int8 weights for a zoo model (safe loader only)")
    add_calibration_argument(ap)
    ap.add_argument("--c-source", help="directory holding the tvmgen_<model>.c to check "
                                       "(default: freshly generated)")
    ap.add_argument("--seed", type=int, default=0, help="which data-set sample to run")
    ap.set_defaults(run=run)


def run(args) -> int:
    if args.seed < 0:
        raise NncError(f"--seed must be 0 or more, got {args.seed}", "--seed", "give a sample number >= 0")
    quiet_torch_warnings()
    _, first = find_divergence(args.model, args.c_source, args.seed, checkpoint=args.checkpoint,
                               calibration=args.calibration)
    return 1 if first else 0
