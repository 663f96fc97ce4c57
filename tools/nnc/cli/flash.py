#!/usr/bin/env python3
"""Flash the firmware onto an STM32F746G-DISCO through its on-board ST-LINK.

    flash.py --elf build/stm32f746g-disco/lenet5/fw.elf                      # openocd (default)
    flash.py --programmer stlink --bin build/stm32f746g-disco/lenet5/fw.bin  # st-flash

openocd programs the ELF and verifies it; st-flash writes the raw image (fw.bin) at the start of
the flash, 0x08000000. Without a probe (or without permission to open it) both tools fail in
their own words; this tool says so in one line and exits 1. Exit status 2: a usage error.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

FLASH_BASE = 0x08000000
NO_PROBE = ("no ST-LINK probe found (or no permission: udev rules). Connect the board's ST-LINK USB "
            "port (CN14); if it is connected, install the udev rules of openocd/stlink-tools "
            "(e.g. /lib/udev/rules.d/60-openocd.rules) and re-plug, or run as a user in the plugdev group")
# What the tools print when they cannot open a probe (measured with none attached).
NO_PROBE_PATTERNS = ("open failed", "OpenOCD init failed", "Couldn't find any ST-Link", "LIBUSB_ERROR_ACCESS",
                     "LIBUSB_ERROR_NO_DEVICE", "unable to open", "No ST-LINK", "no device found",
                     "Found 0 stlink programmers")


class UserError(Exception):
    pass


def openocd_command(elf: str) -> list:
    return ["openocd", "-f", "board/stm32f746g-disco.cfg", "-c", f"program {{{elf}}} verify reset exit"]


def stflash_command(binary: str) -> list:
    return ["st-flash", "--reset", "write", binary, hex(FLASH_BASE)]


def flash(programmer: str, elf: str | None, binary: str | None, timeout: float = 180) -> int:
    if programmer == "openocd":
        if not elf:
            raise UserError("openocd flashes the ELF: give --elf")
        image, cmd = elf, openocd_command(elf)
    else:
        if not binary:
            if not elf:
                raise UserError("st-flash writes a raw image: give --bin (or --elf to convert)")
            binary = os.path.splitext(elf)[0] + ".bin"
            subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", elf, binary], check=True)
        image, cmd = binary, stflash_command(binary)
    if not os.path.isfile(image):
        raise UserError(f"{image}: no such file (build it first: scons board=stm32f746g-disco)")
    if not shutil.which(cmd[0]):
        pkg = "openocd" if programmer == "openocd" else "stlink-tools"
        raise UserError(f"{cmd[0]} not found: apt-get install --no-install-recommends {pkg}")
    print(" ".join(cmd), flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"error: {cmd[0]} did not finish within {timeout:.0f} s", file=sys.stderr)
        return 1
    output = r.stdout + r.stderr
    if r.returncode == 0 and not any(p in output for p in NO_PROBE_PATTERNS[-1:]):
        print(f"flashed {image} with {cmd[0]}")
        return 0
    if any(p in output for p in NO_PROBE_PATTERNS):
        print(f"error: {NO_PROBE}", file=sys.stderr)
        return 1
    tail = "\n".join(output.strip().splitlines()[-8:])
    print(f"error: {cmd[0]} failed (exit status {r.returncode}):\n{tail}", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--programmer", choices=("openocd", "stlink"), default="openocd",
                    help="openocd (default) or stlink (st-flash)")
    ap.add_argument("--elf", help="firmware ELF (openocd)")
    ap.add_argument("--bin", dest="binary", help="raw image for st-flash, written at 0x08000000")
    ap.add_argument("--timeout", type=float, default=180, help="seconds before giving up (default 180)")
    args = ap.parse_args(argv)
    try:
        return flash(args.programmer, args.elf, args.binary, args.timeout)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"error: {' '.join(e.cmd)} failed with status {e.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
