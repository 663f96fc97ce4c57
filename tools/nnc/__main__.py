"""`python -m nnc`: the same as the `nnc` command."""
import sys

from nnc.cli.main import main

sys.exit(main())
