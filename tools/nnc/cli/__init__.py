"""`nnc <subcommand>`: the one command line of the project (tvmc style).

Each subcommand is one module of this package with `add_parser(subparsers, name)`, which
registers its argparse subparser and sets `run(args) -> exit status` as its handler. The exit
policy (user error 2, internal error 3, Ctrl-C 130) lives in one place: nnc.cli.main.
"""
import os

# subcommand -> module of nnc.cli (the module names are the old tools/<name>.py scripts, which
# remain as thin wrappers around `nnc <subcommand>`)
COMMANDS = {
    "export": "export",
    "deploy": "deploy",
    "divergence": "divergence",
    "evaluate": "evaluate",
    "quantize": "quantize",
    "quantize-pt2e": "quantize_pt2e",
    "train": "train",
    "diana": "diana_compile",
    "imx681": "imx681_compile",
    "flash": "flash",
    "serial": "serial_client",
    "pad": "digit_pad",
    "plots": "plots",
}

# The repository this package lives in (it is installed editable): default places such as build/.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
