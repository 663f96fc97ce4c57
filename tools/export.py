#!/usr/bin/env python3
"""The old path of `nnc export`, kept for existing scripts: see `nnc export --help`."""
import sys

from nnc.cli.main import tool

sys.exit(tool("export"))
