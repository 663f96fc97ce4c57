#!/usr/bin/env python3
"""The old path of `nnc imx681`, kept for existing scripts: see `nnc imx681 --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("imx681"))
