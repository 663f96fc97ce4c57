"""Train a zoo model and write its checkpoints (one command per model).

QAT models (lenet5) train with fake quantization from the start and are converted to int8;
PTQ models train in float, then are calibrated and converted. Both checkpoints (float and
int8) go to models/checkpoints/ and the measured held-out numbers to ACCURACY.md.

Examples:
  nnc train --model lenet5
  nnc train --model mnist_cnn --data mnist:~/mnist --epochs 2
  nnc train --model ffn --n_samples 10000 --seed 42 --save-data data/ffn
  nnc train --model resnet18 --fp32-only
"""
from __future__ import annotations

import copy
import os
import time

from models import MODELS
from models.cli import (CHECKPOINT_DIR, UserError, calibration_from, load_splits, positive,
                        record_metrics, relpath, spec_or_error)


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    ap.add_argument("--data", default=None,
                    help="digit models: 'digits' (default, sklearn's bundled digits resized) or "
                         "'mnist:DIR' (MNIST IDX files you already have; nothing is downloaded)")
    ap.add_argument("--n_samples", "--n-samples", type=positive(int), default=None,
                    help="ffn only: number of synthetic samples (default 10000)")
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed: initialisation, shuffling and, for ffn, the synthetic data "
                         "(default 42 for ffn, 0 otherwise)")
    ap.add_argument("--epochs", type=positive(int), default=None, help="default: per model")
    ap.add_argument("--lr", type=positive(float), default=None, help="peak learning rate")
    ap.add_argument("--batch-size", type=positive(int), default=None)
    ap.add_argument("--calib", type=positive(int), default=512,
                    help="PTQ calibration set size, taken from the training split (default 512)")
    ap.add_argument("--fp32-only", action="store_true",
                    help="train in float only (no fake quantization) and write only the float "
                         "checkpoint; quantize later with nnc quantize")
    ap.add_argument("--out-dir", default=CHECKPOINT_DIR,
                    help="where checkpoints go (default models/checkpoints; the accuracy record is "
                         "only updated there)")
    ap.add_argument("--no-save", action="store_true", help="train and report, write nothing")
    ap.add_argument("--save-data", metavar="DIR", default=None,
                    help="ffn only: also write the synthetic train.npy/test.npy (x1, x2, y) to DIR")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.set_defaults(run=main)


def main(args) -> int:
    spec = spec_or_error(args.model)
    from models import quant, recipes

    recipes.light_torch()
    seed = args.seed if args.seed is not None else spec.data_defaults.get("seed", 0)
    if spec.dataset != "ffn_synthetic" and args.save_data:
        raise UserError("--save-data only applies to the ffn model")
    for option, folder in (("--out-dir", None if args.no_save else args.out_dir),
                           ("--save-data", args.save_data)):
        if folder and os.path.exists(folder) and not os.path.isdir(folder):
            # found now, not after the training it would throw away
            raise UserError(f"{option} {folder} exists and is not a folder; give a folder")
    train, held = load_splits(spec, args.data, args.n_samples, seed if spec.dataset == "ffn_synthetic" else None)
    if args.save_data:
        from models.data import save_ffn_npy
        n = args.n_samples or spec.data_defaults.get("n_samples", 10000)
        for p in save_ffn_npy(n, seed, args.save_data):
            print(f"wrote {p}")
    cfg = dict(spec.train_defaults)
    epochs = args.epochs or cfg["epochs"]
    lr = args.lr or cfg["lr"]
    bs = args.batch_size or cfg["batch_size"]
    progress = not args.quiet
    qat = spec.recipe == "qat" and not args.fp32_only
    data_name = args.data or ("synthetic" if spec.dataset in ("ffn_synthetic", "synthetic") else "digits")
    print(f"{spec.name}: {spec.description}")
    print(f"  data {data_name}: {len(train)} train / {len(held)} held-out; {epochs} epochs, lr {lr}, "
          f"batch {bs}, seed {seed}, {'QAT' if qat else 'float training'}")

    recipes.seed_everything(seed)
    model = spec.new_float()
    t0 = time.time()
    if spec.benchmark_only:
        model = recipes.benchmark_float(spec, seed)
    elif qat:
        quant.prepare_qat(model, spec.scheme)
        hook = recipes.qat_epoch_hook(cfg.get("freeze_observers_at", max(1, epochs * 2 // 3)),
                                      cfg.get("freeze_bn_at", max(1, epochs * 2 // 3)))
        recipes.train_classifier(model, train, epochs=epochs, lr=lr, batch_size=bs, seed=seed,
                                 progress=progress, epoch_hook=hook, stateful=spec.stateful,
                                 desc=f"QAT {spec.name}")
    elif spec.task == "regress":
        recipes.train_regressor(model, train, epochs=epochs, lr=lr, batch_size=bs, seed=seed,
                                progress=progress, desc=f"train {spec.name}")
    else:
        recipes.train_classifier(model, train, epochs=epochs, lr=lr, batch_size=bs, seed=seed,
                                 progress=progress, stateful=spec.stateful, desc=f"train {spec.name}")
    train_seconds = time.time() - t0

    # Float reference (for QAT: the same network with fake quantization off).
    float_model = model
    if qat:
        float_model = quant.float_view_of_qat(copy.deepcopy(model))
    # benchmark-only networks have no labels: nothing to measure
    measure = (lambda m: None) if spec.benchmark_only else \
        (lambda m: recipes.metric(spec.task, recipes.predict(m, held.x), held))
    f32 = measure(float_model)

    int8_model = None
    if qat:
        int8_model = quant.convert(copy.deepcopy(model).eval())
    elif not args.fp32_only:
        calib = calibration_from(spec, train, args.calib)
        t1 = time.time()
        int8_model = recipes.ptq(copy.deepcopy(model).eval(), spec.scheme, calib,
                                 stateful=spec.stateful, progress=progress)
        print(f"  calibrated on {len(calib)} training inputs in {time.time() - t1:.1f} s")
    i8 = None if int8_model is None else measure(int8_model)

    unit = "MSE" if spec.task == "regress" else "accuracy"
    fmt = (lambda v: f"{v:.6f}") if spec.task == "regress" else (lambda v: f"{100 * v:.2f}%")
    print(f"  trained in {train_seconds:.1f} s")
    if f32 is not None:
        print(f"  held-out {unit}: fp32 {fmt(f32)}" + ("" if i8 is None else f", int8 {fmt(i8)}"))
    notes = None
    if spec.stateful:
        two = recipes.two_frame_accuracy(float_model, held)
        two8 = None if int8_model is None else recipes.two_frame_accuracy(int8_model, held)
        print(f"  two-frame (state carried) accuracy: fp32 {fmt(two)}"
              + ("" if two8 is None else f", int8 {fmt(two8)}"))
        notes = (f"single frame from a zero state; with the state carried over a second frame of the "
                 f"same class: fp32 {fmt(two)}" + ("" if two8 is None else f", int8 {fmt(two8)}"))

    if args.no_save:
        return 0
    out_dir = os.path.abspath(args.out_dir)
    default_dir = out_dir == os.path.abspath(CHECKPOINT_DIR)
    fpath = spec.path(spec.float_checkpoint) if default_dir else \
        os.path.join(out_dir, os.path.basename(spec.float_checkpoint))
    ipath = spec.path() if default_dir else os.path.join(out_dir, os.path.basename(spec.checkpoint))
    extra = {"seed": seed, "data": data_name}
    cfg_extra = getattr(model, "config", None)
    if cfg_extra:
        extra["resnet_config"] = cfg_extra
    if qat:
        recipes.save_checkpoint(fpath, spec.name, "qat", model.state_dict(), extra)
    else:
        recipes.save_checkpoint(fpath, spec.name, "fp32", model.state_dict(), extra, half=spec.float_half)
    print(f"  wrote {relpath(fpath)} ({os.path.getsize(fpath) / 1024:.0f} KiB)")
    if int8_model is not None:
        recipes.save_checkpoint(ipath, spec.name, "int8", int8_model.state_dict(), extra)
        print(f"  wrote {relpath(ipath)} ({os.path.getsize(ipath) / 1024:.0f} KiB)")
    if spec.benchmark_only:
        print("  benchmark-only: seeded weights, batch-norm statistics and calibration from synthetic "
              "inputs (no accuracy is measured)")
    elif default_dir and int8_model is not None and data_name in ("digits", "synthetic"):
        cmd = "nnc train --model " + spec.name
        if args.epochs or args.lr or args.batch_size or args.seed is not None or args.n_samples:
            cmd = " ".join(["nnc"] + args.argv)
        # Re-measure from the files just written: the record describes the committed checkpoints.
        fl = spec.load_float(fpath)
        q = spec.load_quantized(ipath)
        f32s = recipes.metric(spec.task, recipes.predict(fl, held.x), held)
        i8s = recipes.metric(spec.task, recipes.predict(q, held.x), held)
        if (f32s, i8s) != (f32, i8):
            print(f"  from the saved files: fp32 {fmt(f32s)}, int8 {fmt(i8s)}"
                  + (" (float checkpoint stored as float16)" if spec.float_half else ""))
        shown = spec.dataset if data_name == "digits" else data_name   # digits / digits32
        record_metrics(spec.name, dict(recipe=spec.recipe, scheme=spec.scheme, task=spec.task,
                                       data=shown, n_heldout=len(held), fp32=f32s, int8=i8s,
                                       train_seconds=round(train_seconds, 1), command=cmd,
                                       **({"notes": notes} if notes else {})))
        print(f"  updated {relpath(os.path.join(CHECKPOINT_DIR, 'ACCURACY.md'))}")
    return 0
