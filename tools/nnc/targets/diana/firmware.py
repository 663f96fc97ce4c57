"""Building and running the DIANA firmware: sources, include folders, QEMU command (the flags are
nnc.toolchains'; the console's results and the summary table are nnc.reports.diana).

Shared by site_scons/firmware_diana.py (the `scons board=diana` build), firmware/diana/run_qemu.py
(`scons board=diana run` / `bench`) and the tests, so that all three build and run the same way.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Optional

from ...toolchains import DIANA_CFLAGS, DIANA_LINKFLAGS, RV32_CC

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))))
FW = os.path.join(ROOT, "firmware", "diana")

QEMU = "qemu-system-riscv32"
LINKFLAGS = DIANA_LINKFLAGS   # with the board's linker script
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
