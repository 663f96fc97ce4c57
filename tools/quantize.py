#!/usr/bin/env python3
"""The old path of `nnc quantize`, kept for existing scripts: see `nnc quantize --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("quantize"))
