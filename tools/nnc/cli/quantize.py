"""Post-training quantization of a zoo model's float checkpoint (or your own float state_dict).

Fuses, calibrates on real data, converts to int8 (engine qnnpack, quint8 activations, qint8
weights) and writes the converted state_dict, which `ModelSpec.load_quantized(path)` loads.

Examples:
  nnc quantize --model mnist_cnn                      # re-quantize the committed fp32
  nnc quantize --model residual_cnn --calib 1000 --scheme per_tensor --out /tmp/r.pt
  nnc quantize --model resnet50 --float-checkpoint my_resnet50.pth \\
          --calib-data npy:calib.npy --out my_resnet50_int8.pt     # your own ResNet weights
  nnc quantize --model lenet5 --out /tmp/lenet5_ptq.pt # PTQ instead of QAT

Your own ResNet state_dict (torchvision names: conv1, bn1, layer1.0.conv1, ..., fc) may have
any width, input channel count, class count and stem; they are read from the tensors' shapes.
"""
from __future__ import annotations

import copy
import os
import time

from models import MODELS
from models.cli import (UserError, calibration_from, load_splits, positive, record_metrics, relpath,
                        spec_or_error)


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    ap.add_argument("--float-checkpoint", default=None,
                    help="float weights to quantize: a zoo checkpoint or a plain state_dict "
                         "(default: the model's committed float checkpoint)")
    ap.add_argument("--calib", type=positive(int), default=512, help="calibration set size (default 512)")
    ap.add_argument("--calib-data", default="train",
                    help="'train' (default: the training split, shifted copies beyond its size), "
                         "'npy:FILE' (a float array (N, ...) in the model's input domain) or "
                         "'random' (uniform [0,1); only for wiring tests, gives poor scales)")
    ap.add_argument("--data", default=None, help="'digits' (default) or 'mnist:DIR' for the split used")
    ap.add_argument("--n_samples", "--n-samples", type=positive(int), default=None, help="ffn only")
    ap.add_argument("--seed", type=int, default=None, help="ffn only: synthetic data seed (default 42)")
    ap.add_argument("--scheme", choices=("per_tensor", "per_channel"), default=None,
                    help="weight quantization (default: the model's)")
    ap.add_argument("--out", default=None,
                    help="int8 checkpoint to write (default: the model's committed int8 checkpoint "
                         "for its own float weights; required with --float-checkpoint)")
    ap.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.set_defaults(run=main)


def load_float(spec, path):
    """Float model from a zoo checkpoint (fp32 or QAT kind) or a user's plain state_dict."""
    from models import nets, recipes
    if not os.path.isfile(path):
        raise UserError(f"float checkpoint {path!r} does not exist")
    try:
        blob = recipes.load_checkpoint(path)
    except recipes.CheckpointError as exc:   # unreadable, or refused: needs the full unpickler
        raise UserError(str(exc)) from None
    sd, extra = blob["state_dict"], dict(blob.get("extra") or {})
    if blob.get("kind") == "int8":
        raise UserError(f"{path} is already a converted int8 checkpoint; pass a float one")
    if spec.name.startswith("resnet") and "resnet_config" not in extra:
        depth = int(spec.name[len("resnet"):])
        try:
            extra["resnet_config"] = nets.resnet_config_from_state_dict(sd, depth)
        except ValueError as exc:
            raise UserError(f"{path}: {exc}") from None
    try:
        model = spec._build_from_extra(extra)
    except TypeError as exc:   # a resnet_config with foreign keys
        raise UserError(f"{path}: its model description does not fit {spec.name}: {exc}") from None
    if blob.get("kind") == "qat":
        # The QAT model's float weights, without its fake-quant/observer state. The QAT modules
        # keep the float modules' parameter names (no batch norms in the zoo's QAT models), and
        # prepare_ptq() applies the same fusion, so the float network is the one QAT trained.
        sd = {k: v for k, v in sd.items()
              if "fake_quant" not in k and "activation_post_process" not in k}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:   # tensors of the wrong shapes
        raise UserError(f"{path} does not match model {spec.name}: {' '.join(str(exc).split())[:300]}") \
            from None
    if missing or unexpected:
        raise UserError(f"{path} does not match model {spec.name}: missing {list(missing)[:6]}, "
                        f"unexpected {list(unexpected)[:6]}")
    return model.eval(), extra


def main(args) -> int:
    spec = spec_or_error(args.model)
    from models import recipes

    recipes.light_torch()
    user_ckpt = args.float_checkpoint is not None
    if user_ckpt and not args.out:
        raise UserError("--out is required with --float-checkpoint (the committed int8 checkpoint "
                        "stays the zoo's)")
    if args.out and os.path.isdir(args.out):   # found now, not by os.replace after calibration
        raise UserError(f"--out {args.out} is a folder; give the checkpoint's file name, e.g. "
                        f"{os.path.join(args.out, spec.name + '_int8.pt')}")
    fpath = args.float_checkpoint or spec.path(spec.float_checkpoint)
    model, extra = load_float(spec, fpath)
    scheme = args.scheme or spec.scheme
    seed = args.seed if args.seed is not None else spec.data_defaults.get("seed")
    shape = tuple(spec.input_shape)
    rc = extra.get("resnet_config")
    if rc:
        res = shape[-1] if rc["stem"] == "small" else 224
        shape = (1, rc["in_channels"], res, res)
    custom_shape = shape != tuple(spec.input_shape)
    train = held = None
    if not custom_shape:
        train, held = load_splits(spec, args.data, args.n_samples, seed)
    elif args.calib_data == "train":
        raise UserError(f"this checkpoint takes {shape[1]}-channel inputs; the digits do not fit. "
                        "Pass --calib-data npy:FILE (your own calibration images, float "
                        f"(N, {shape[1]}, H, W)) or --calib-data random")
    calib = calibration_from(spec, train, args.calib, args.calib_data, shape[1:])
    if custom_shape and args.calib_data == "random":
        import numpy as np
        calib = np.random.RandomState(0).uniform(0, 1, size=(args.calib,) + shape[1:]).astype("float32")
    if calib.shape[1:] != shape[1:]:
        raise UserError(f"calibration inputs have shape {calib.shape[1:]}, the model takes {shape[1:]}")
    t0 = time.time()
    q = recipes.ptq(copy.deepcopy(model), scheme, calib, stateful=spec.stateful, progress=not args.quiet)
    print(f"{spec.name}: calibrated on {len(calib)} inputs ({args.calib_data}), {scheme} weights, "
          f"{time.time() - t0:.1f} s")
    out = os.path.abspath(args.out) if args.out else spec.path()
    extra.setdefault("data", args.data or "digits")
    recipes.save_checkpoint(out, spec.name, "int8", q.state_dict(), extra)
    print(f"  wrote {relpath(out)} ({os.path.getsize(out) / 1024:.0f} KiB)")

    if args.no_eval or held is None:
        return 0
    f32 = recipes.metric(spec.task, recipes.predict(model, held.x), held)
    q2 = spec.load_quantized(out)
    i8 = recipes.metric(spec.task, recipes.predict(q2, held.x), held)
    fmt = (lambda v: f"MSE {v:.6f}") if spec.task == "regress" else (lambda v: f"accuracy {100 * v:.2f}%")
    print(f"  held-out ({len(held)}): fp32 {fmt(f32)}, int8 {fmt(i8)}")
    if (not args.out or out == spec.path()) and scheme == spec.scheme and spec.recipe == "ptq" \
            and args.data in (None, "digits"):
        record_metrics(spec.name, dict(int8=i8, fp32=f32, n_heldout=len(held), scheme=scheme))
    return 0
