"""Compile a model of the zoo for the Sony IMX681 from a KEY VALUE configuration file.

    nnc imx681 --config firmware/imx681/configs/imx681_pytorch_classification_with_state_i2c.cfg

The output directory (OUTPUT_DIRECTORY; a relative path is relative to the configuration file's
folder, --output-dir to the current directory) is recreated with, by OUTPUT_MODE:
  C_SOURCES    tvmgen_<network>.h/.c: the network, its STATIC_DATA state buffers and the frame
               API (<prefix>_frame, <prefix>_reset_state) to link into firmware;
  I2C_IMAGES   <network>_params.bin, <network>_static_data.bin and images.txt (load addresses,
               sizes, CRC-32): memory images to write over I2C;
and always summary.txt (operations, buffers with their stable IDs, memory, states, estimated
time) and manifest.json. State tensors are found automatically (MODEL_STATE_AUTO_DETECT ON);
the seed's MODEL_STATE_READ_BUFFER_ID / MODEL_STATE_WRITE_BUFFER_ID keys also work.

On an error nothing is written: the message says what, where and how to fix it (exit 2).
The output directory is replaced only if nnc made it (or it is new or empty): anything else is
refused, so a mistyped path never deletes your files.
`--keys` lists every configuration key.
"""
from __future__ import annotations

import sys

from nnc.errors import NncError


def _keys_help() -> str:
    from nnc.targets.imx681.config import KEYS
    lines = []
    for k, spec in KEYS.items():
        req = "required" if spec.required else f"default {spec.default}"
        choices = f" ({'|'.join(spec.choices)})" if spec.choices else ""
        lines.append(f"  {k:<30} {req}{choices}: {spec.help}")
    return "\n".join(lines)


def load_zoo_model(cfg):
    """(qmodel, example input) of the configuration's MODEL, or a ConfigError (the compiler
    never imports the zoo: this tool hands it the model)."""
    from models.registry import get
    from nnc.targets.imx681 import ConfigError, resolve_path
    try:
        spec = get(cfg["MODEL"])
    except (KeyError, LookupError, ValueError) as e:
        raise ConfigError(str(e).strip("'\""), cfg.where("MODEL"), "pick a model of the zoo") from None
    ckpt = cfg.get("MODEL_CHECKPOINT")
    try:
        qmodel = spec.load_quantized(resolve_path(cfg, "MODEL_CHECKPOINT") if ckpt else None)
    except (FileNotFoundError, ValueError) as e:   # recipes.CheckpointError: what and fix
        raise ConfigError(getattr(e, "what", str(e)), cfg.where("MODEL_CHECKPOINT" if ckpt else "MODEL"),
                          getattr(e, "fix", f"create it with `nnc train --model {cfg['MODEL']}`")) \
            from None
    return qmodel, spec.example_input()


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--config", metavar="FILE", help="configuration file (KEY VALUE lines, # comments)")
    ap.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                    help="override a configuration key (repeatable), e.g. --set OUTPUT_MODE=C_SOURCES")
    ap.add_argument("--model", help="shorthand for --set MODEL=NAME")
    ap.add_argument("--output-dir", help="shorthand for --set OUTPUT_DIRECTORY=DIR (relative to the "
                                         "current directory); new, empty, or made by nnc")
    ap.add_argument("--keys", action="store_true", help="list the configuration keys and exit")
    ap.add_argument("--quiet", action="store_true", help="print errors and warnings only")
    ap.set_defaults(run=run)


def run(args) -> int:
    if args.keys:
        print(_keys_help())
        return 0
    if not args.config:
        raise NncError("no configuration file given", "--config",
                       "pass --config FILE (examples in firmware/imx681/configs/)")
    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise NncError(f"--set {item!r}: expected KEY=VALUE", "--set", "e.g. --set OUTPUT_MODE=C_SOURCES")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v.strip()
    if args.model:
        overrides["MODEL"] = args.model
    if args.output_dir:
        overrides["OUTPUT_DIRECTORY"] = args.output_dir
    from nnc.outdir import check_target
    from nnc.targets.imx681 import compile_model, parse_config, resolve_path
    cfg = parse_config(args.config, overrides)
    out_where = "--output-dir" if args.output_dir else cfg.where("OUTPUT_DIRECTORY")
    out_dir = resolve_path(cfg, "OUTPUT_DIRECTORY")
    check_target(out_dir, out_where)        # before the work, not after it
    warn = lambda msg: print(msg, file=sys.stderr)
    if cfg.get("MODEL_FILE"):
        from nnc.frontend.model_files import load_model
        graph = load_model(resolve_path(cfg, "MODEL_FILE"), progress=not args.quiet).graph()
        graph.name = cfg.network_name   # C symbols and file names, as for a zoo MODEL
        package = compile_model(None, None, cfg, log=warn, graph=graph)
    else:
        qmodel, example = load_zoo_model(cfg)
        package = compile_model(qmodel, example, cfg, log=warn)
    out = package.write(out_dir, out_where)
    if not args.quiet:
        m = package.memory
        used = ", ".join(f"{r} {m.used[r]}/{m.regions[r][1]} B" for r in m.regions)
        states = ", ".join(f"'{p.attribute}' buffers {package.lowered.ids[id(p.read)]}/"
                           f"{package.lowered.ids[id(p.write)]} at 0x{m.address_of(p.read):08x}"
                           for p in package.lowered.persistent) or "none kept"
        print(f"compiled {cfg.model_label} as {cfg.network_name} ({cfg['OUTPUT_MODE']}): "
              f"{len(package.lowered.graph.ops)} operations; {used}; states: {states} -> {out}")
    return 0
