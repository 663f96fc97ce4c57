#!/usr/bin/env python3
"""The old path of `nnc divergence`, kept for existing scripts: see `nnc divergence --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("divergence"))
