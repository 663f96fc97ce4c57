#!/usr/bin/env python3
"""The old path of `nnc deploy`, kept for existing scripts: see `nnc deploy --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("deploy"))
