#!/usr/bin/env python3
"""The old path of `nnc evaluate`, kept for existing scripts: see `nnc evaluate --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("evaluate"))
