#!/usr/bin/env python3
"""The old path of `nnc pad`, kept for existing scripts: see `nnc pad --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("pad"))
