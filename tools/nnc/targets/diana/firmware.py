"""Building and running the DIANA firmware: RV32IMC flags, sources, QEMU command, result parsing.

Shared by firmware/diana/SConscript (the `scons board=diana` build), firmware/diana/run_qemu.py
(`scons board=diana run` / `bench`) and the tests, so that all three build and run the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Optional

from ...toolchains import DIANA_CFLAGS, DIANA_LINKFLAGS, RV32_CC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
FW = os.path.join(ROOT, "firmware", "diana")

QEMU = "qemu-system-riscv32"
LINKFLAGS = DIANA_LINKFLAGS + ["-T", os.path.join(FW, "board", "link.ld")]
INCLUDES = [os.path.join(FW, "hal"), os.path.join(FW, "board")]
HOOK = os.path.join(FW, "app", "layer_hook.h")       # -include'd into generated model C only
RUNTIME_SOURCES = [os.path.join(FW, "board", "start.S"), os.path.join(FW, "board", "board.c"),
                   os.path.join(FW, "hal", "diana_hal.c")]
HAL_SOURCE = os.path.join(FW, "hal", "diana_hal.c")
QEMU_ARGS = ["-M", "virt", "-cpu", "rv32,a=off,f=off,d=off", "-bios", "none", "-display", "none",
             "-monitor", "none", "-serial", "stdio", "-icount", "shift=0"]


def toolchain_missing() -> Optional[str]:
    for tool in (RV32_CC, QEMU):
        if shutil.which(tool) is None:
            return tool
    return None


def build_firmware(gen_dirs: list, demo_c: str, elf: str, obj_dir: Optional[str] = None) -> str:
    """Compile generated models + demo + HAL + board into `elf` (plain gcc calls)."""
    obj_dir = obj_dir or os.path.join(os.path.dirname(elf), "obj")
    os.makedirs(obj_dir, exist_ok=True)
    incs = [f"-I{d}" for d in INCLUDES + list(gen_dirs)]
    objs = []
    for d in gen_dirs:
        for name in sorted(os.listdir(d)):
            if name.endswith(".c"):
                o = os.path.join(obj_dir, name[:-2] + ".o")
                subprocess.run([RV32_CC] + DIANA_CFLAGS + incs + ["-include", HOOK, "-c",
                                                       os.path.join(d, name), "-o", o], check=True)
                objs.append(o)
    for src in RUNTIME_SOURCES + [demo_c]:
        o = os.path.join(obj_dir, os.path.basename(src).rsplit(".", 1)[0] + ".o")
        subprocess.run([RV32_CC] + DIANA_CFLAGS + incs + ["-c", src, "-o", o], check=True)
        objs.append(o)
    subprocess.run([RV32_CC] + LINKFLAGS + objs + ["-o", elf], check=True)
    return elf


def run_qemu(elf: str, timeout: float = 600) -> tuple:
    """(exit status, console output) of one firmware run."""
    p = subprocess.run(["timeout", str(int(timeout)), QEMU] + QEMU_ARGS + ["-kernel", elf],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout + 30)
    return p.returncode, p.stdout.decode(errors="replace").replace("\r\n", "\n")


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
