"""Flash and RAM of a firmware image: `arm-none-eabi-size -A` output and the linker map, split into
the model's weights, code and arena and the runtime (application, board layer or RIOT, libc)."""
from __future__ import annotations

import os
import re
import subprocess

from ..toolchains import CORTEX_M7_SIZE

# Which output sections take flash and which take RAM, per linker script: the bare-metal one
# (board/common/sections.ld) and RIOT's cortexm_base.ld (vectors, code and constants in .text;
# initialised data in .relocate and .backup.data, stored in flash and copied to RAM; the ISR stack
# in .stack, thread stacks in .bss). RIOT's .backup.* live in the 4 KiB backup SRAM.
SECTIONS = {
    "bare-metal": {"flash": (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data"),
                   "ram": (".data", ".bss", ".stack")},
    "riot": {"flash": (".text", ".ARM.extab", ".ARM.exidx", ".relocate", ".backup.data"),
             "ram": (".stack", ".relocate", ".bss", ".noinit")},
}


def parse_size_output(text: str) -> dict:
    """{section: bytes} from `size -A -d` (System V format); sections of the same name add up."""
    sizes = {}
    for line in text.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+(\d+)", line)
        if m:
            sizes[m.group(1)] = sizes.get(m.group(1), 0) + int(m.group(2))
    return sizes


def section_sizes(path: str) -> dict:
    """{section: bytes} of an ELF or object file (runs arm-none-eabi-size -A -d)."""
    return parse_size_output(subprocess.run([CORTEX_M7_SIZE, "-A", "-d", path], capture_output=True,
                                            text=True, check=True).stdout)


def parse_map(text: str) -> list:
    """Input sections placed by the linker, from a GNU ld map: [(output section, input section,
    size, file)]."""
    start = text.find("Linker script and memory map")
    lines = text[start:].splitlines() if start >= 0 else []
    placed, out_sec, pending = [], None, None
    rec = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
    for line in lines:
        m = re.match(r"^(\.[\w.]+)(\s+0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+.*)?$", line)
        if m:
            out_sec, pending = m.group(1), None
            continue
        if pending is not None:   # a long input section name: its address and size on the next line
            m = rec.match(line)
            if m:
                placed.append((out_sec, pending, int(m.group(2), 16), m.group(3).strip()))
            pending = None
            continue
        m = re.match(r"^ ([.\w*][^\s]*)\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$", line)
        if m and m.group(1) != "*fill*":
            placed.append((out_sec, m.group(1), int(m.group(3), 16), m.group(4).strip()))
            continue
        m = re.match(r"^ ([.\w][^\s]*|COMMON)$", line)
        if m:
            pending = m.group(1)
    return placed


def linker_layout(secs: dict) -> str:
    """'riot' for an image linked by RIOT (its .relocate section), else 'bare-metal'."""
    return "riot" if ".relocate" in secs else "bare-metal"


def model_kind(section: str):
    """'weights', 'code' or 'arena' for a section of the model's object file, None for others."""
    if section.startswith(".rodata"):
        return "weights"
    if section.startswith(".text"):
        return "code"
    if section.startswith((".bss", ".data", "COMMON")):
        return "arena"
    return None


def size_report(secs: dict, placed: list, model: str, board: str, memory: dict) -> dict:
    """Flash and RAM of the image (`secs`: parse_size_output, `placed`: parse_map, `memory`:
    linker.board_memory), split into model weights, model code, model arena/data and runtime."""
    layout = SECTIONS[linker_layout(secs)]
    flash = sum(secs.get(s, 0) for s in layout["flash"])
    ram = sum(secs.get(s, 0) for s in layout["ram"])
    model_obj = f"tvmgen_{model}.o"
    of_model = {"weights": 0, "code": 0, "arena": 0}
    for out_sec, in_sec, size, path in placed:
        if path.endswith(model_obj) or path.endswith(model_obj + ")"):
            kind = model_kind(in_sec) or model_kind(out_sec)   # RIOT puts .rodata.* in .text
            if kind:
                of_model[kind] += size
    stack = secs.get(".stack", 0)
    return {
        "board": board, "model": model,
        "flash": {"total": flash, "available": memory["flash"][1], "model_weights": of_model["weights"],
                  "model_code": of_model["code"], "runtime": flash - of_model["weights"] - of_model["code"]},
        "ram": {"total": ram, "available": memory["ram"][1], "model_arena_and_data": of_model["arena"],
                "stack_reserve": stack, "runtime": ram - of_model["arena"] - stack},
        "sections": secs,
    }


def firmware_size(elf: str, map_file: str, model: str, board: str, memory: dict) -> dict:
    """size_report() of a linked image and its map."""
    with open(map_file, errors="replace") as f:
        placed = parse_map(f.read())
    return size_report(section_sizes(elf), placed, model, board, memory)


def format_size_report(r: dict) -> str:
    f, m = r["flash"], r["ram"]
    return "\n".join([
        f"size of {r['model']} firmware for {r['board']}:",
        f"  flash {f['total']:>9,} B of {f['available']:,} ({100.0 * f['total'] / f['available']:.1f}%): "
        f"model weights {f['model_weights']:,}, model code {f['model_code']:,}, runtime {f['runtime']:,}",
        f"  RAM   {m['total']:>9,} B of {m['available']:,} ({100.0 * m['total'] / m['available']:.1f}%): "
        f"model arena+data {m['model_arena_and_data']:,}, stack reserve {m['stack_reserve']:,}, "
        f"runtime {m['runtime']:,}"])


def object_breakdown(object_sizes: dict, model: str) -> dict:
    """Pre-link sizes ({object path: {section: bytes}}) split into the model's weights, code and
    arena and the runtime's flash and RAM (for the message when the link fails)."""
    b = {"model_weights": 0, "model_code": 0, "model_arena": 0, "runtime_flash": 0, "runtime_ram": 0}
    for path, secs in object_sizes.items():
        is_model = os.path.basename(path) == f"tvmgen_{model}.o"
        for sec, size in secs.items():
            kind = model_kind(sec)
            if kind is None or sec.startswith("COMMON"):
                continue
            if is_model:
                b[f"model_{kind}"] += size
            else:
                b["runtime_ram" if kind == "arena" else "runtime_flash"] += size
    return b
