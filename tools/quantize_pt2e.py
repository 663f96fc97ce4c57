#!/usr/bin/env python3
"""The old path of `nnc quantize-pt2e`, kept for existing scripts: see `nnc quantize-pt2e --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("quantize-pt2e"))
