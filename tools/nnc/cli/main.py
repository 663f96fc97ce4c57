"""The `nnc` command: builds the parser from the subcommand modules and applies the one exit
policy of the project.

    0    success
    1    the command ran and its check failed (a mismatch, a divergence, a device error)
    2    a user error: what is wrong, where, how to fix it; no traceback
    3    an internal error (a bug in nnc): one line, and `--debug` for the traceback
    130  Ctrl-C (other signals that a command handles: 128 + the signal's number)
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from nnc.cli import COMMANDS
from nnc.errors import (DEBUG_ENV, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USER, Interrupted,
                        NncError)

DEBUG_HELP = (f"show the traceback of an internal error, and in a model import error the whole "
              f"chain of your calls that reach the operation (the same as {DEBUG_ENV}=1)")
# A package missing from the Python that runs nnc (numpy, torch, models, ...): the set-up was skipped.
SETUP_FIX = ("run ./scons once in the repository (it creates .venv with the pinned requirements "
             "and installs nnc into it), then use .venv/bin/nnc or `. .venv/bin/activate`")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the modules' docstrings (usage examples)."""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="nnc", formatter_class=_Formatter,
        description="nnc: quantized PyTorch models to bit-exact C for microcontrollers and "
                    "accelerators.",
        epilog="`nnc <subcommand> --help` describes each one. Exit status: 0 success, 1 a check "
               "failed (mismatch, device error), 2 a user error, 3 an internal error, 130 "
               "interrupted.")
    ap.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = ap.add_subparsers(dest="command", metavar="<subcommand>", required=True)
    # Every subcommand also takes --debug after its name; SUPPRESS keeps a --debug given before
    # the name from being reset by the subparser's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    for name, module in COMMANDS.items():
        importlib.import_module(f"nnc.cli.{module}").add_parser(sub, name, [common])
    return ap


def add_subparser(subparsers, name: str, parents: list, doc: str, **kwargs) -> argparse.ArgumentParser:
    """The subparser of one subcommand: its first docstring line is the summary in `nnc --help`,
    the whole docstring its description."""
    return subparsers.add_parser(name, parents=parents, help=" ".join(doc.strip().split("\n\n")[0].split()),
                                 description=doc, formatter_class=_Formatter, **kwargs)


def _missing_package(e: ModuleNotFoundError) -> bool:
    """A package of the environment (numpy, torch, the zoo `models`, ...) is missing, not a module
    of nnc itself (that would be a bug)."""
    return bool(e.name) and e.name.split(".")[0] != "nnc"


def main(argv: list | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = os.environ.get(DEBUG_ENV) == "1" or "--debug" in argv
    saved = os.environ.get(DEBUG_ENV)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv                     # the command line as given (recorded by train)
        if args.debug:
            os.environ[DEBUG_ENV] = "1"      # read by the frontends when they build an error
        return int(args.run(args) or 0)
    except NncError as e:    # the user's mistake: the message is the whole story, no traceback
        print(e.format(), file=sys.stderr)
        return e.exit_status
    except Interrupted as e:
        print(f"error: stopped by {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as e:
        if not _missing_package(e):
            return _internal(e, debug)
        if debug:
            traceback.print_exc()
        print(f"error: the Python package '{e.name}' is not installed for {sys.executable}\n"
              f"  fix:   {SETUP_FIX}", file=sys.stderr)
        return EXIT_USER
    except Exception as e:   # a bug: one line, the traceback on request
        return _internal(e, debug)
    finally:                 # called in-process (tests, scripts): leave the environment as it was
        if saved is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = saved


def _internal(e: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"internal error (a bug in nnc, please report it): {type(e).__name__}: {e}\n"
          f"  rerun with --debug (or {DEBUG_ENV}=1) for the traceback", file=sys.stderr)
    return EXIT_INTERNAL


def tool(name: str) -> int:
    """The old tools/<script>.py paths: `nnc <name>` with the script's arguments."""
    return main([name] + sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
