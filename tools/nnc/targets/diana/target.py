"""The DIANA target ("soma_dory, c"): its passes (partition, tile, layout), its kernel providers
(the DORY kernels, then portable C), its header lines, its package (the C, the placement report,
the L2 budget), and compile_diana."""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Optional

from ... import ir
from ...compiler import CompiledModel, Package, compile
from ...ir import Graph
from ...kernels.c_kernels import PortableCKernels
from ..base import Target
from .hardware import (ACCEL, CLOCK_HZ, CPU, L1_ACT_BYTES, L1_WEIGHT_BYTES, L2_BYTES,
                       PEAK_MACS_PER_CYCLE, REVERSE)
from .kernels import DianaKernels
from .layout import LayoutStats, cancel_reversals, insert_reversals
from .partition import DianaFallbackWarning, accelerator_violations, check_shift, kernel_entry
from .tiling import Tiling, tile_op


@dataclass
class Placement:
    layer: str
    kind: str
    where: str           # ACCEL or CPU
    why: str
    macs: int
    tiling: Optional[Tiling] = None
    kernel: str = ""     # which DORY entry point


class DianaTarget(Target):
    """compile(graph, DianaTarget()) -> DianaPackage; the passes run on a copy of the graph."""
    name = "diana"
    target_string = "soma_dory, c"
    golden_reference = "nnc.reference (requant='shift': arithmetic right shift, clip)"

    def __init__(self, l1_act: int = L1_ACT_BYTES, l1_weights: int = L1_WEIGHT_BYTES,
                 warn: bool = True):
        self.l1_act, self.l1_weights, self.warn = l1_act, l1_weights, warn
        self.placements: list = []
        self.layout = LayoutStats()
        self.graph_name = ""
        self.fallback_warnings: list = []

    def prepare(self, graph: Graph) -> Graph:
        return copy.deepcopy(graph)      # the reference keeps running the graph as built

    # passes
    def passes(self):
        return [self.partition, self.tile, self.layout_pass]

    def partition(self, graph: Graph) -> None:
        self.graph_name = graph.name
        self.placements = []
        for op in graph.ops:
            check_shift(op)
            violations = accelerator_violations(op)
            if not violations:
                op.attrs["diana_placement"] = ACCEL
                self.placements.append(Placement(op.name, op.kind, ACCEL,
                                                 "meets every digital accelerator constraint",
                                                 op.macs(), kernel=kernel_entry(op)))
                continue
            op.attrs["diana_placement"] = CPU
            why = "; ".join(violations)
            self.placements.append(Placement(op.name, op.kind, CPU, why, op.macs(), kernel="C"))
            if op.kind != "reshape":
                msg = (f"DIANA: layer '{op.name}' ({op.kind}) falls back to the RISC-V core (C): "
                       f"{why}")
                self.fallback_warnings.append(msg)
                if self.warn:
                    warnings.warn(DianaFallbackWarning(msg), stacklevel=2)

    def tile(self, graph: Graph) -> None:
        by_name = {p.layer: p for p in self.placements}
        for op in graph.ops:
            if op.attrs.get("diana_placement") == ACCEL:
                t = tile_op(op, self.l1_act, self.l1_weights)
                op.attrs["diana_tiling"] = t
                by_name[op.name].tiling = t

    def layout_pass(self, graph: Graph) -> None:
        self.layout = insert_reversals(graph)
        cancel_reversals(graph, self.layout)

    def kernel_providers(self):
        return [DianaKernels(), PortableCKernels()]

    def extra_header_api(self, graph) -> str:
        accel = sum(1 for p in self.placements if p.where == ACCEL)
        return (f"/* DIANA (soma_dory, c): {accel} of {len(self.placements)} layers on the digital "
                f"accelerator;\n * link firmware/diana/hal/diana_hal.c (bit-exact model). */\n"
                f"#define TVMGEN_{ir.c_identifier(graph.name).upper()}_DIANA_ACCEL_MACS "
                f"{self.accel_macs()}")

    def package(self, compiled: CompiledModel, source_graph: Graph) -> "DianaPackage":
        """gen/tvmgen_<name>.h/.c and placement_report.txt; tools/diana_compile.py adds the demo
        application and placement.json."""
        compiled.report = self.summary()
        pkg = DianaPackage(compiled, {}, self, source_graph)
        pkg.files = {f"gen/{compiled.prefix}.h": compiled.header,
                     f"gen/{compiled.prefix}.c": compiled.source,
                     "placement_report.txt": pkg.report}
        return pkg

    # report
    def accel_macs(self) -> int:
        return sum(p.macs for p in self.placements if p.where == ACCEL)

    def total_macs(self) -> int:
        return sum(p.macs for p in self.placements)

    def accel_cycles(self) -> int:
        return sum(p.tiling.cycles for p in self.placements if p.tiling)

    def summary(self) -> dict:
        total = self.total_macs()
        return {
            "graph": self.graph_name, "target": self.target_string,
            "macs": total, "accelerator_macs": self.accel_macs(),
            "accelerator_mac_share": self.accel_macs() / total if total else 0.0,
            "accelerator_cycles": self.accel_cycles(),
            "accelerator_us": self.accel_cycles() / CLOCK_HZ * 1e6,
            "reversals": {"inserted": self.layout.inserted,
                          "cancelled_pairs": self.layout.cancelled_pairs,
                          "merged": self.layout.merged,
                          "moved_across": list(self.layout.moved_across)},
            "warnings": list(self.fallback_warnings),
            "layers": [{"layer": p.layer, "kind": p.kind, "where": p.where, "why": p.why,
                        "macs": p.macs, "kernel": p.kernel,
                        "tiling": p.tiling.describe() if p.tiling else None,
                        "cycles": p.tiling.cycles if p.tiling else None,
                        "compute_cycles": p.tiling.compute_cycles if p.tiling else None,
                        "dma_cycles": p.tiling.dma_cycles if p.tiling else None}
                       for p in self.placements],
        }

    def report_text(self, graph: Optional[Graph] = None) -> str:
        rows = [("layer", "kind", "runs on", "MACs", "tiling", "est. cycles", "why")]
        for p in self.placements:
            where = "accelerator" if p.where == ACCEL else "RISC-V (C)"
            rows.append((p.layer, p.kind, where, str(p.macs),
                         p.tiling.describe() if p.tiling else "-",
                         str(p.tiling.cycles) if p.tiling else "-", p.why))
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = [f"DIANA placement report: {self.graph_name} (target \"{self.target_string}\")", ""]
        for r in rows:
            lines.append("  ".join(r[i].ljust(widths[i]) if i in (0, 1, 2, 4) else r[i].rjust(widths[i])
                                   for i in range(6)) + "  " + r[6])
        total, accel = self.total_macs(), self.accel_macs()
        share = 100.0 * accel / total if total else 0.0
        cyc = self.accel_cycles()
        lay = self.layout
        lines += ["",
                  f"MACs on the accelerator: {accel} of {total} ({share:.1f}%)",
                  f"estimated accelerator time: {cyc} cycles = {cyc / CLOCK_HZ * 1e6:.1f} us at "
                  f"{CLOCK_HZ // 1_000_000} MHz (peak {PEAK_MACS_PER_CYCLE} MAC/cycle; DMA one word/cycle)",
                  f"layout: {lay.inserted} word reversals inserted, {lay.cancelled_pairs} pairs cancelled"
                  f"{', ' + str(lay.merged) + ' merged' if lay.merged else ''}"
                  f"{' (across ' + ', '.join(lay.moved_across) + ')' if lay.moved_across else ''}, "
                  f"{lay.remaining} remain on the CPU",
                  f"L1: activations {self.l1_act} B, weights {self.l1_weights} B"]
        if graph is not None:
            lines.append("reversals left: " + (", ".join(op.name for op in graph.ops
                                                        if op.kind == REVERSE) or "none"))
        return "\n".join(lines) + "\n"


@dataclass
class DianaPackage(Package):
    target: DianaTarget = None
    source_graph: Graph = None    # the graph as built (the reference runs this one); compiled.graph
                                  # is the graph after the passes

    def l2_usage(self) -> dict:
        """Bytes the model needs in DIANA's L2: arena, constants (packed weights), graph I/O."""
        c = self.compiled
        consts = sum(int(v.nbytes) for k in c.kernels.values() for v in k.consts.values())
        io = sum(t.nbytes for t in c.graph.inputs + c.graph.outputs)
        return {"arena": c.plan.arena_size, "constants": consts, "io": io,
                "total": c.plan.arena_size + consts + io, "l2": L2_BYTES}

    @property
    def report(self) -> str:
        u = self.l2_usage()
        line = (f"L2: arena {u['arena']} B + weights/constants {u['constants']} B + inputs/outputs "
                f"{u['io']} B = {u['total']} B of {L2_BYTES} B")
        if u["total"] > L2_BYTES:
            line += (" -- does NOT fit DIANA's L2 (the QEMU firmware has more RAM, real DIANA "
                     "would need the model split)")
        return self.target.report_text(self.compiled.graph) + line + "\n"


def compile_diana(graph: Graph, l1_act: int = L1_ACT_BYTES, l1_weights: int = L1_WEIGHT_BYTES,
                  warn: bool = True) -> DianaPackage:
    """Compile a copy of `graph` for DIANA. Raises NncError for an untileable layer."""
    return compile(graph, DianaTarget(l1_act, l1_weights, warn))
