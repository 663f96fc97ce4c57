"""Evaluate a zoo model on its held-out set: fp32 vs int8 torch (qnnpack), and optionally the
compiled C library, all on the same inputs.

The C comparison (--c-lib) feeds the library the int8 input torch's QuantStub produces and
compares its int8 output element by element with the tensor torch dequantizes at the end:
a bit-exact compile has 0 mismatching elements and the same accuracy as int8 torch.

Examples:
  nnc evaluate --model lenet5
  nnc evaluate --model lenet5 --c-lib build/host/lenet5/liblenet5.so
  nnc evaluate --model ffn --n_samples 10000 --seed 42
  nnc evaluate --model resnet50 --limit 20 --c-lib build/host/resnet50/libresnet50.so
  nnc evaluate --model net.pt2 --c-lib build/host/net/libnet.so    # your PT2E program
"""
from __future__ import annotations

import os
import time

import numpy as np

from models import MODELS
from models.cli import UserError, load_splits, positive, record_metrics, spec_or_error
from nnc.cli import ROOT


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True,
                    help=f"one of: {', '.join(MODELS)}; or a PT2E zoo variant (lenet5_pt2e, ...), a "
                         ".pt2 program or net.py:build (digit classifiers: C vs nnc.reference vs the program)")
    ap.add_argument("--calibration", default=None, help="net.py:build returning a float model: npy:FILE or digits")
    ap.add_argument("--data", default=None, help="'digits' (default) or 'mnist:DIR' (its t10k set)")
    ap.add_argument("--n_samples", "--n-samples", type=positive(int), default=None, help="ffn only")
    ap.add_argument("--seed", type=int, default=None, help="ffn only: synthetic data seed (default 42)")
    ap.add_argument("--limit", type=positive(int), default=None,
                    help="evaluate only the first N held-out inputs")
    ap.add_argument("--checkpoint", default=None, help="int8 checkpoint (default: the committed one)")
    ap.add_argument("--float-checkpoint", default=None,
                    help="float checkpoint (default: the committed one)")
    ap.add_argument("--c-lib", default=None, metavar="SO",
                    help="compiled C model (shared library from `scons host model=NAME`) to compare "
                         "against int8 torch; optional")
    ap.add_argument("--c-header", default=None, metavar="H",
                    help="its header (default: tvmgen_NAME.h next to the .so, else "
                         "build/gen/c/NAME/tvmgen_NAME.h)")
    ap.add_argument("--record", action="store_true",
                    help="write the measured numbers to models/checkpoints/ACCURACY.md")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.set_defaults(run=main)


def _output_capture(qmodel):
    """Forward pre-hook on the model's last DeQuantize: keeps the quantized output tensor."""
    import torch
    deq = [m for m in qmodel.modules() if isinstance(m, torch.ao.nn.quantized.DeQuantize)]
    qs = [m for m in qmodel.modules() if isinstance(m, torch.ao.nn.quantized.Quantize)]
    if len(deq) != 1 or len(qs) != 1:
        raise UserError(f"the C comparison needs one QuantStub and one DeQuantStub; this model has "
                        f"{len(qs)} and {len(deq)} (a stateful model runs in torch only here)")
    box = {}
    deq[0].register_forward_pre_hook(lambda m, inp: box.__setitem__("out", inp[0]))
    return box, qs[0]


def _to_int8(q):
    """torch quantized tensor -> int8 numpy in the IR's domain (quint8 shifted by -128)."""
    import torch
    r = q.int_repr().numpy().astype(np.int16)
    if q.dtype == torch.quint8:
        r = r - 128
    return r.astype(np.int8)


def check_c_library(so_path: str, model: str) -> None:
    """--c-lib is an existing shared library: checked before the slow evaluation, not after it."""
    import hostlib
    if not os.path.isfile(so_path):
        raise UserError(f"C library {so_path!r} does not exist; build it with `scons host model={model}`")
    hostlib.check_shared_object(so_path)


def load_c_library(name, so_path, header):
    """The compiled model; its header defaults to tvmgen_NAME.h next to the .so or in build/gen/c."""
    import hostlib
    check_c_library(so_path, name)
    if header is None:
        d, base = os.path.split(so_path)
        stem = os.path.splitext(base)[0]
        stem = stem[3:] if stem.startswith("lib") else stem
        candidates = [os.path.join(d, f"tvmgen_{name}.h"), os.path.join(d, stem + ".h"),
                      os.path.join(ROOT, "build", "gen", "c", name, f"tvmgen_{name}.h")]
        header = next((c for c in candidates if os.path.isfile(c)), candidates[0])
    if not os.path.isfile(header):
        raise UserError(f"C header {header!r} does not exist; pass --c-header")
    return hostlib.load(so_path, header)   # HostLibError (an NncError): unreadable header, other model, ...


def run_c(qmodel, x, lib, progress):
    import torch
    from tqdm import tqdm
    box, quant = _output_capture(qmodel)
    torch_out, c_out = [], []
    bs = 64
    with torch.no_grad():
        for i in tqdm(range(0, len(x), bs), desc="torch vs C", disable=not progress, leave=False):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + bs]))
            qmodel(xb)
            torch_out.append(_to_int8(box["out"]))
            qin = _to_int8(quant(xb))
            c_out.append(np.asarray(lib.run(qin)).reshape(torch_out[-1].shape).astype(np.int8))
    t, c = np.concatenate(torch_out), np.concatenate(c_out)
    qp = box["out"]
    scale = qp.q_scale()
    zp = qp.q_zero_point() - (128 if qp.dtype == torch.quint8 else 0)
    return t, c, (c.astype(np.float32) - zp) * np.float32(scale)


def evaluate_model_file(args) -> int:
    """A PT2E zoo variant or model file on the held-out digits: the C library (--c-lib) against
    nnc.reference (must be equal) and the converted program (mismatches reported), top-1 of each."""
    from models.registry import get
    from nnc import reference
    from nnc.frontend.model_files import load_model
    from nnc.frontend.torch_eager import quantize_like_torch
    if args.c_lib:
        check_c_library(args.c_lib, args.model)
    m = load_model(args.model, args.checkpoint, args.calibration, progress=not args.quiet)
    graph = m.graph()
    if tuple(graph.inputs[0].shape[1:]) != (1, 28, 28):
        raise UserError(f"{args.model}: evaluate.py measures digit classifiers (1x28x28 inputs); this "
                        f"model takes {tuple(graph.inputs[0].shape[1:])}")
    held = get("lenet5").heldout(args.data)
    if args.limit:
        held = type(held)(held.x[:args.limit], held.y[:args.limit])
    x = quantize_like_torch(held.x.reshape(-1, 1, 28, 28), graph.inputs[0].qparams)
    ref = reference.run(graph, [x])[0]
    prog = m.run_int8([x])[0]
    top1 = lambda y: f"{100 * float(np.mean(y.argmax(1) == held.y)):.2f}%"
    diff = np.abs(prog.astype(int) - ref.astype(int))
    print(f"{m.name}: {len(held)} held-out digits")
    print(f"  PT2E program (float-simulated) accuracy {top1(prog)}")
    print(f"  nnc.reference                  accuracy {top1(ref)}; vs the program: "
          f"{int(np.count_nonzero(diff))} of {diff.size} elements differ, max |diff| {int(diff.max())}")
    if args.c_lib:
        lib = load_c_library(m.name, args.c_lib, args.c_header)
        c = np.asarray(lib.run(x)).reshape(ref.shape).astype(np.int8)
        mism = int(np.count_nonzero(c != ref))
        print(f"  C library                      accuracy {top1(c)}; vs nnc.reference: {mism} mismatching "
              f"elements of {c.size}")
        return 1 if mism else 0
    return 0


def main(args) -> int:
    if args.model not in MODELS:
        return evaluate_model_file(args)
    spec = spec_or_error(args.model)
    if spec.benchmark_only:
        raise UserError(f"model {spec.name} is benchmark-only (seeded weights, synthetic inputs, no labels): "
                        "it has no accuracy to evaluate; its bit-exactness is tested by "
                        "tests/test_zoo_bitexact.py and its speed measured by `scons bench`")
    from models import recipes

    lib = load_c_library(spec.name, args.c_lib, args.c_header) if args.c_lib else None
    recipes.light_torch()
    seed = args.seed if args.seed is not None else spec.data_defaults.get("seed")
    _, held = load_splits(spec, args.data, args.n_samples, seed)
    if args.limit:
        held = type(held)(held.x[:args.limit], held.y[:args.limit])
    try:
        fmodel = spec.load_float(args.float_checkpoint)
        qmodel = spec.load_quantized(args.checkpoint)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    progress = not args.quiet
    t0 = time.time()
    f_out = recipes.predict(fmodel, held.x, progress=progress, desc="fp32")
    t1 = time.time()
    q_out = recipes.predict(qmodel, held.x, progress=progress, desc="int8")
    t2 = time.time()
    f32, i8 = recipes.metric(spec.task, f_out, held), recipes.metric(spec.task, q_out, held)
    regress = spec.task == "regress"
    fmt = (lambda v: f"{v:.6f}") if regress else (lambda v: f"{100 * v:.2f}%")
    name = "MSE" if regress else "accuracy"
    print(f"{spec.name}: {len(held)} held-out inputs ({args.data or ('synthetic' if regress else 'digits')})")
    print(f"  fp32 {name:9s} {fmt(f32)}   ({t1 - t0:.2f} s)")
    print(f"  int8 {name:9s} {fmt(i8)}   (torch qnnpack, {t2 - t1:.2f} s)")
    if regress:
        print(f"  int8 / fp32 MSE: {i8 / f32:.4f}")
    else:
        agree = float(np.mean(f_out.argmax(1) == q_out.argmax(1)))
        print(f"  fp32/int8 top-1 agreement {100 * agree:.2f}%")
    if spec.stateful:
        print(f"  two-frame accuracy (state carried): fp32 {fmt(recipes.two_frame_accuracy(fmodel, held))}, "
              f"int8 {fmt(recipes.two_frame_accuracy(qmodel, held))}")
    entry = dict(fp32=f32, int8=i8, n_heldout=len(held), task=spec.task)

    if args.c_lib:
        t_int8, c_int8, c_deq = run_c(qmodel, held.x, lib, progress)
        mism = int(np.count_nonzero(t_int8 != c_int8))
        c_metric = recipes.metric(spec.task, c_deq, held)
        print(f"  C    {name:9s} {fmt(c_metric)}   ({args.c_lib})")
        print(f"  C vs torch int8: {mism} mismatching elements of {t_int8.size}"
              + ("" if mism == 0 else f", max |diff| {int(np.abs(t_int8.astype(int) - c_int8).max())}"))
        entry.update(c_int8=c_metric, c_mismatch=f"{mism} / {t_int8.size}")
        if mism:
            if args.record and not args.limit:
                record_metrics(spec.name, entry)
            return 1
    if args.record:
        if args.limit or args.checkpoint or args.float_checkpoint or args.data not in (None, "digits"):
            raise UserError("--record only records the committed checkpoints on the full default set")
        record_metrics(spec.name, entry)
    return 0
