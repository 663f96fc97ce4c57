#!/usr/bin/env python3
"""The old path of `nnc serial`, kept for existing scripts: see `nnc serial --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("serial"))
