"""The fit check of a link: ld's "region `X' overflowed by N bytes" errors -> a fit.json record,
a readable "does not fit" message, and the one-line form of the bench tables."""
from __future__ import annotations

import re

from .linker import REGION_MEMORY


def link_overflow(stderr: str, memory: dict) -> dict:
    """{region: {"needed", "available", "origin", "overflow"}} from ld's region overflow errors
    ({} if none); `memory`: linker.board_memory. needed = the region's length + the overflow ld
    reports. A region that is neither flash nor RAM (RIOT's backup RAM) gets only the overflow."""
    over = {}
    for region, n in re.findall(r"region `(\w+)' overflowed by (\d+) bytes", stderr):
        over[region] = max(over.get(region, 0), int(n))
    regions = {}
    for region, n in sorted(over.items()):
        kind = REGION_MEMORY.get(region)
        if kind is None:
            regions[region] = {"needed": None, "available": None, "origin": None, "overflow": n}
            continue
        origin, length = memory[kind]
        regions[region] = {"needed": length + n, "available": length, "origin": origin, "overflow": n}
    return regions


def fit_record(board: str, model: str, regions: dict) -> dict:
    """fit.json: fits, or the regions that overflow."""
    return {"board": board, "model": model, "fits": not regions, "regions": regions}


def fit_error(regions: dict, board: str, what: str, model: str, breakdown: dict, elf: str,
              severity: str = "error") -> str:
    """A readable 'does not fit' message for the overflowing regions of link_overflow();
    `what` describes the board, `breakdown` is sizes.object_breakdown of the objects."""
    b = breakdown
    lines = [f"{severity}: model {model!r} does not fit the {board} ({what})"]
    for region, r in regions.items():
        if r["needed"] is None:
            lines.append(f"  {region}: overflowed by {r['overflow']:,} bytes")
            continue
        n = r["needed"] - r["available"]
        lines.append(f"  {region}: {r['needed']:,} bytes needed, {r['available']:,} available "
                     f"({REGION_MEMORY[region]} at {r['origin']:#010x}), {n:,} bytes too many")
        if REGION_MEMORY[region] == "flash":
            lines.append(f"    model weights {b['model_weights']:,} B, model code {b['model_code']:,} B, "
                         f"runtime ~{b['runtime_flash']:,} B (object sizes before unused code is dropped)")
            lines.append("    what to do: use a smaller model (fewer channels or units: every int8 weight "
                         "takes one byte of flash); this build keeps weights in the internal flash and does "
                         "not use the DISCO's 16 MB QSPI flash")
        else:
            lines.append(f"    model arena and data {b['model_arena']:,} B (the largest set of intermediate "
                         f"tensors alive at once), runtime and stacks ~{b['runtime_ram']:,} B")
            lines.append("    what to do: use a model with smaller intermediate tensors (fewer channels, "
                         "smaller feature maps, pooling earlier); this build does not use the DISCO's "
                         "8 MB SDRAM")
    lines.append(f"  nothing was produced: {elf} removed")
    return "\n".join(lines)


def describe_no_fit(fit: dict) -> str:
    """'does not fit: needs N B flash of L' from a fit.json record."""
    what = {"flash": "flash", "ram": "RAM"}
    return "does not fit: " + ", ".join(
        f"needs {r['needed']:,} B {what[REGION_MEMORY[k]]} of {r['available']:,}" if r["needed"] is not None
        else f"{k} overflowed by {r['overflow']:,} B" for k, r in sorted(fit["regions"].items()))
