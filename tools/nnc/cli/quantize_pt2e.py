"""Quantize your own float PyTorch model the PT2E way (torch.export + NncQuantizer) and write a
.pt2 program that every nnc entry point takes (nnc export, nnc deploy, scons model=FILE, ...).

    nnc quantize-pt2e --model net.py:build --calibration npy:calib.npy --out net.pt2
    nnc quantize-pt2e --model net.py:build --calibration digits --out net.pt2 --per-tensor

`net.py:build` is a function returning (float nn.Module in eval mode, example input tensor).
Calibration data: `npy:FILE` (float inputs, (N, ...) shaped like the example input; read without
pickle) or `digits` (the zoo's handwritten digits, 1x28x28 in [0, 1]).

Quantization-aware training (--qat is not a flag: training is your loop) -- in your script:
    from nnc.frontend.pt2e_quantizer import NncQuantizer, pt2e_api
    api = pt2e_api()
    m = api.prepare_qat_pt2e(torch.export.export(model.train(), (x,)).module(), NncQuantizer(qat=True))
    ... train m for a few epochs with your optimizer ...
    m = api.convert_pt2e(m)
    torch.export.save(torch.export.export(m, (x,)), "net.pt2")
The output file is written only when quantization succeeded and the program imports.
"""
from __future__ import annotations

import os
import tempfile
import time

from nnc.errors import NncError


def quantize(model: str, calibration: str, out: str, per_channel: bool = True, count: int = 256,
             progress: bool = True) -> dict:
    import torch
    from nnc.frontend.model_files import calibration_inputs, load_factory_model
    from nnc.frontend.pt2e import import_pt2e
    from nnc.frontend.pt2e_quantizer import quantize_pt2e

    t0 = time.time()
    if os.path.exists(out):   # replace only a program file, never some other file of the user's
        from nnc.frontend.model_files import check_pt2_archive
        try:
            check_pt2_archive(out)
        except NncError:
            raise NncError(f"{out} exists and is not a PT2 program file: it is not replaced", "--out",
                           "choose a new file name") from None
    float_model, example = load_factory_model(model)
    calib = calibration_inputs(calibration, example, count)
    program = quantize_pt2e(float_model, example, calib, per_channel, progress)
    graph = import_pt2e(program, "check")   # refuse now what the compiler would refuse later
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-", suffix=".pt2")
    os.close(fd)
    try:
        torch.export.save(program, tmp)
        os.replace(tmp, out)
    except BaseException:
        os.remove(tmp)
        raise
    return {"layers": len(graph.ops), "calibration": len(calib), "seconds": time.time() - t0}


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True, help="factory 'path/net.py:build' returning (float model, example input)")
    ap.add_argument("--calibration", required=True, help="npy:FILE or digits")
    ap.add_argument("--count", type=int, default=256, help="calibration inputs to use (default 256)")
    ap.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default: per channel)")
    ap.add_argument("--out", required=True, help="the .pt2 file to write")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.set_defaults(run=run)


def run(args) -> int:
    from nnc.cli.export import quiet_torch_warnings
    quiet_torch_warnings()
    r = quantize(args.model, args.calibration, args.out, not args.per_tensor, args.count, not args.quiet)
    print(f"quantized {args.model}: {r['layers']} layers, calibrated on {r['calibration']} inputs in "
          f"{r['seconds']:.1f} s -> {args.out}")
    return 0
