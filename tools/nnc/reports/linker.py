"""Linker scripts: the MEMORY block (flash and RAM of a board) and the stack reserve."""
from __future__ import annotations

import re

from ..toolchains import linker_script

# Linker memory regions -> what they are: the bare-metal script's names and RIOT's
# (cortexm_base.ld calls the flash `rom`).
REGION_MEMORY = {"FLASH": "flash", "rom": "flash", "RAM": "ram", "ram": "ram"}


def parse_length(text: str) -> int:
    """A linker script number: 0x100, 1024, 320K, 1M."""
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([KkMm]?)\s*", text)
    if not m:
        raise ValueError(f"not a linker script length: {text!r}")
    return int(m.group(1), 0) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def parse_memory(text: str) -> dict:
    """{region: (origin, length)} of the MEMORY block of a linker script."""
    return {name: (parse_length(origin), parse_length(length)) for name, origin, length in re.findall(
        r"^\s*(\w+)\s*\([rwx!]+\)\s*:\s*ORIGIN\s*=\s*(\w+)\s*,\s*LENGTH\s*=\s*(\w+)", text, re.M)}


def parse_stack_size(text: str) -> int:
    """The `__stack_size : N;` reserve of the script (0 when it has none)."""
    m = re.search(r"__stack_size\s*:\s*(\w+)\s*;", text)
    return parse_length(m.group(1)) if m else 0


def board_memory(board: str, path: str | None = None) -> dict:
    """{'flash': (origin, length), 'ram': (origin, length), 'stack': bytes, 'source': path} of a
    Cortex-M7 board, from the linker script it links with. ValueError if the script has no FLASH
    and RAM regions; OSError if it is missing."""
    path = path or linker_script(board)
    with open(path) as f:
        text = f.read()
    regions = {REGION_MEMORY.get(k): v for k, v in parse_memory(text).items()}
    if "flash" not in regions or "ram" not in regions:
        raise ValueError(f"{path}: MEMORY has no FLASH and RAM regions")
    return {"flash": regions["flash"], "ram": regions["ram"], "stack": parse_stack_size(text), "source": path}
