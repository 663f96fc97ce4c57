"""The DIANA firmware's console: its `@result {...}` lines and the summary table per graph."""
from __future__ import annotations

import json


def parse_results(output: str) -> list:
    """The demo's `@result {...}` lines, as dicts."""
    return [json.loads(line[len("@result "):]) for line in output.splitlines()
            if line.startswith("@result ")]


def summary_table(results: list, placements: dict) -> str:
    """Per graph: share of MACs on the accelerator, CPU fallback instructions, accelerator cycles.
    `placements`: model name -> placement.json contents."""
    rows = [("graph", "MACs", "on accel", "CPU fallback instr.", "reversal instr.",
             "accel model instr.", "accel cycles", "accel us", "mismatches")]
    for r in results:
        p = placements.get(r["model"], {})
        layers = r["layers"]
        cpu = sum(l["instructions"] for l in layers if l["where"] == "cpu")
        lay = sum(l["instructions"] for l in layers if l["where"] == "layout")
        acc = sum(l["instructions"] for l in layers if l["where"] == "accelerator")
        cyc = sum(l["cycles"] for l in layers if l["where"] == "accelerator")
        share = p.get("accelerator_mac_share")
        rows.append((r["model"], str(p.get("macs", "?")),
                     f"{100 * share:.1f}%" if share is not None else "?", str(cpu), str(lay),
                     str(acc), str(cyc), f"{cyc / 100:.1f}",
                     f"{r['mismatches']} / {r['samples']} samples"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))) for row in rows) + "\n"
