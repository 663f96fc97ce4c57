#!/usr/bin/env python3
"""The old path of `nnc diana`, kept for existing scripts: see `nnc diana --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("diana"))
