#!/usr/bin/env python3
"""The old path of `nnc plots`, kept for existing scripts: see `nnc plots --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("plots"))
