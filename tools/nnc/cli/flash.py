"""Flash the firmware onto an STM32F746G-DISCO through its on-board ST-LINK.

    nnc flash --elf build/stm32f746g-disco/lenet5/fw.elf                      # openocd (default)
    nnc flash --programmer stlink --bin build/stm32f746g-disco/lenet5/fw.bin  # st-flash

openocd programs the ELF and verifies it; st-flash writes the raw image (fw.bin) at the start of
the flash, 0x08000000. Without a probe (or without permission to open it) both tools fail in
their own words; this tool says so in one line and exits 1. Exit status 2: a usage error (also
--elf naming a file that is not a 32-bit ARM ELF: checked before a probe is touched).
"""
from __future__ import annotations

import os
import shutil
import subprocess

from nnc.errors import DeviceError, NncError

FLASH_BASE = 0x08000000
NO_PROBE = ("no ST-LINK probe found (or no permission: udev rules). Connect the board's ST-LINK USB "
            "port (CN14); if it is connected, install the udev rules of openocd/stlink-tools "
            "(e.g. /lib/udev/rules.d/60-openocd.rules) and re-plug, or run as a user in the plugdev group")
# What the tools print when they cannot open a probe (measured with none attached).
NO_PROBE_PATTERNS = ("open failed", "OpenOCD init failed", "Couldn't find any ST-Link", "LIBUSB_ERROR_ACCESS",
                     "LIBUSB_ERROR_NO_DEVICE", "unable to open", "No ST-LINK", "no device found",
                     "Found 0 stlink programmers")

ELF_MAGIC = b"\x7fELF"
EM_ARM = 40         # e_machine of a 32-bit ARM ELF (the Cortex-M7 firmware)


def check_arm_elf(path: str) -> None:
    """openocd would program any file it can parse; a host binary or a text file must be refused
    here, in words, before a probe is touched."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError as e:
        raise NncError(f"cannot read {path}: {e.strerror}", "--elf") from None
    if len(head) < 20 or head[:4] != ELF_MAGIC:
        raise NncError(f"{path} is not an ELF file", "--elf",
                       "give the firmware ELF, e.g. build/stm32f746g-disco/lenet5/fw.elf "
                       "(scons board=stm32f746g-disco)")
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    if head[4] != 1 or machine != EM_ARM:
        raise NncError(f"{path} is an ELF file for another machine (class {head[4]}, e_machine "
                       f"{machine}), not a 32-bit ARM firmware", "--elf",
                       "give the firmware built for the board: scons board=stm32f746g-disco")


def openocd_command(elf: str) -> list:
    return ["openocd", "-f", "board/stm32f746g-disco.cfg", "-c", f"program {{{elf}}} verify reset exit"]


def stflash_command(binary: str) -> list:
    return ["st-flash", "--reset", "write", binary, hex(FLASH_BASE)]


def flash(programmer: str, elf: str | None, binary: str | None, timeout: float = 180) -> int:
    if programmer == "openocd":
        if not elf:
            raise NncError("openocd flashes the ELF: give --elf", "--programmer openocd")
        image, cmd = elf, openocd_command(elf)
    else:
        if not binary:
            if not elf:
                raise NncError("st-flash writes a raw image: give --bin (or --elf to convert)",
                               "--programmer stlink")
            if not os.path.isfile(elf):
                raise NncError(f"{elf}: no such file", "--elf",
                               "build it first: scons board=stm32f746g-disco")
            check_arm_elf(elf)
            binary = os.path.splitext(elf)[0] + ".bin"
            r = subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", elf, binary],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise DeviceError(f"arm-none-eabi-objcopy failed with status {r.returncode}: "
                                  f"{r.stderr.strip()[-300:]}", "--elf")
        image, cmd = binary, stflash_command(binary)
    if not os.path.isfile(image):
        raise NncError(f"{image}: no such file", "--elf" if image == elf else "--bin",
                       "build it first: scons board=stm32f746g-disco")
    if image == elf:
        check_arm_elf(elf)
    if not shutil.which(cmd[0]):
        pkg = "openocd" if programmer == "openocd" else "stlink-tools"
        raise NncError(f"{cmd[0]} not found", f"--programmer {programmer}",
                       f"apt-get install --no-install-recommends {pkg}")
    print(" ".join(cmd), flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{cmd[0]} did not finish within {timeout:.0f} s", image,
                          "check the probe's connection, or raise --timeout") from None
    output = r.stdout + r.stderr
    if r.returncode == 0 and not any(p in output for p in NO_PROBE_PATTERNS[-1:]):
        print(f"flashed {image} with {cmd[0]}")
        return 0
    if any(p in output for p in NO_PROBE_PATTERNS):
        raise DeviceError(NO_PROBE)
    tail = "\n".join(output.strip().splitlines()[-8:])
    raise DeviceError(f"{cmd[0]} failed (exit status {r.returncode}):\n{tail}")


def add_parser(subparsers, name, parents):
    from nnc.cli.main import add_subparser
    ap = add_subparser(subparsers, name, parents, __doc__)
    ap.add_argument("--programmer", choices=("openocd", "stlink"), default="openocd",
                    help="openocd (default) or stlink (st-flash)")
    ap.add_argument("--elf", help="firmware ELF (openocd)")
    ap.add_argument("--bin", dest="binary", help="raw image for st-flash, written at 0x08000000")
    ap.add_argument("--timeout", type=float, default=180, help="seconds before giving up (default 180)")
    ap.set_defaults(run=run)


def run(args) -> int:
    return flash(args.programmer, args.elf, args.binary, args.timeout)
