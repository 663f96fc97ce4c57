#!/usr/bin/env python3
"""The old path of `nnc flash`, kept for existing scripts: see `nnc flash --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("flash"))
