#!/usr/bin/env python3
"""The old path of `nnc train`, kept for existing scripts: see `nnc train --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("train"))
