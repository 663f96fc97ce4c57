"""SCons side of the RIOT builds of firmware/riot and of the board-in-the-loop `check` alias.

- board=stm32f746g-disco RIOTBASE=DIR: the application through RIOT's make (firmware/riot/Makefile),
  in build/<board>/<model>/riot/ (RIOT's own build folder: .../riot/make/); fw.elf, fw.map,
  fit.json as the bare-metal build, so the size report, fit check and flash work the same.
- board=native64 RIOTBASE=DIR: the same application for RIOT's native64 board (a Linux process),
  in build/native64/<model>/; `run` and `check` start it on a pseudo-terminal and talk to it with
  the serial client.
- `check` (every firmware board): flash (board, unless flash=0), send count= inputs (default
  1000) through the serial client, fail on any output that differs from the host library, print
  the cost per inference: cycles (DWT) on the F746, instructions on the emulated Cortex-M7, ticks
  of RIOT's microsecond timer on native64 (the INFO reply says which unit).
Every command is an argument list: RIOTBASE=, port= and paths are never pasted into a shell line.
"""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys

from SCons.Script import AlwaysBuild

from nnc.reports.header import samples_args

NATIVE_BOARDS = ("native64",)
RIOT_BOARDS = ("stm32f746g-disco",) + NATIVE_BOARDS
APP = "nnc_app"
DEFAULT_CHECK_COUNT = 1000


class RiotBaseError(ValueError):
    """RIOTBASE= does not name a RIOT tree."""


def check_riotbase(riotbase: str) -> str:
    """The absolute RIOT tree of RIOTBASE=, or RiotBaseError saying what is wrong."""
    path = os.path.abspath(riotbase)
    if not os.path.isdir(path):
        raise RiotBaseError(f"RIOTBASE={riotbase}: no such directory (a RIOT checkout, e.g. "
                            f"git clone https://github.com/RIOT-OS/RIOT)")
    if not os.path.isfile(os.path.join(path, "Makefile.include")):
        raise RiotBaseError(f"RIOTBASE={riotbase}: not a RIOT tree (it has no Makefile.include)")
    return path


def make_command(app_dir: str, riotbase: str, board: str, model: str, model_dir: str, bindirbase: str) -> list:
    """RIOT's make for the application, as an argument list."""
    return ["make", "-C", app_dir, f"RIOTBASE={riotbase}", f"BOARD={board}", f"NNC_MODEL={model}",
            f"NNC_MODEL_DIR={model_dir}", f"BINDIRBASE={bindirbase}", "QUIET=1", "all"]


def riot_objects(bindir: str) -> list:
    """The object files of a RIOT build folder (one folder per module), for the fit message."""
    return sorted(glob.glob(os.path.join(bindir, "*", "*.o")))


def build(env, board, model, src_c, hdr, bdir, fw_dir, riotbase, nofit_ok=False):
    """RIOT's make for board/model; its elf and map are copied to bdir/fw.elf, fw.map and the
    fit check's record to bdir/fit.json. Returns (env, elf, map, fit) like bare_metal()."""
    import firmware_arm
    e = env.Clone()
    riotbase = check_riotbase(riotbase)
    make_dir = bdir.Dir("make")
    bindir = os.path.join(make_dir.abspath, board)

    def make(target, source, env):
        cmd = make_command(fw_dir.abspath, riotbase, board, model, hdr.dir.abspath, make_dir.abspath)
        print(" ".join(shlex.quote(c) for c in cmd))
        sys.stdout.flush()
        r = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        elf = os.path.join(bindir, f"{APP}.elf")
        if r.returncode != 0 or not os.path.exists(elf):
            if os.path.exists(elf):
                os.remove(elf)   # RIOT keeps an older image when the link fails
            if board in NATIVE_BOARDS:
                firmware_arm._remove_outputs(str(target[0]))
                sys.stderr.write((r.stderr.rstrip() or "RIOT build failed") + "\n")
                return 1
            return firmware_arm._link_failed(r.stderr or "RIOT build failed", board, model, riot_objects(bindir),
                                             str(target[0]), str(target[2]), nofit_ok)
        shutil.copyfile(elf, str(target[0]))
        shutil.copymode(elf, str(target[0]))
        mp = elf[:-4] + ".map"
        if os.path.exists(mp):
            shutil.copyfile(mp, str(target[1]))
        else:
            open(str(target[1]), "w").close()
        firmware_arm._write_fit(str(target[2]), board, model, {})
        return 0

    sources = [src_c, hdr] + [fw_dir.File(f) for f in (
        "main.c", "platform_riot.c", "Makefile", "model.cflags", "layer_hook.h", "pkg/nnc_model/Makefile",
        "pkg/nnc_model/Makefile.include", "pkg/nnc_model/Makefile.nnc_model")]
    elf, map_file, fit = e.Command([bdir.File("fw.elf"), bdir.File("fw.map"), bdir.File("fit.json")], sources,
                                   e.Action(make, f"RIOT make for {board}: {model}"))
    AlwaysBuild(elf)   # RIOT's make tracks its own dependencies (and copies the model when it changed)
    return e, elf, map_file, fit


# ---------------------------------------------------------------------------------------------
# run / check through the serial client
# ---------------------------------------------------------------------------------------------

def client_command(python, client, board, elf, port, header, count, compare) -> list:
    """The serial client against the board (--port), the emulated M7 (--qemu) or native64 (--native)."""
    if board in NATIVE_BOARDS:
        where = ["--native", elf]
    elif board == "mps2-an500":
        where = ["--qemu", elf]
    else:
        where = ["--port", port]
    return [python, client, *where, *samples_args(header, count), "--quiet", *compare]


def flash_command(python, flash_tool, programmer, elf, binary) -> list:
    return [python, flash_tool, "--programmer", programmer, "--elf", elf, "--bin", binary]


def _run_steps(steps):
    """Runs the commands in order; the first that fails fails the alias (with its status)."""
    def act(target, source, env):
        for what, cmd in steps:
            print(f"{what}: " + " ".join(shlex.quote(c) for c in cmd))
            sys.stdout.flush()
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                sys.stderr.write(f"error: {what} failed (exit status {rc})\n")
                return rc
        return 0
    return act


def check_alias(e, board, model, elf, binary, bdir, hdr, so, opts, python, root):
    """`check`: flash (a board, unless flash=0), then count= inputs through the serial client,
    compared with the host library of the same C."""
    count = int(opts.get("count") or DEFAULT_CHECK_COUNT)
    client = root.File("tools/serial_client.py").abspath
    compare = ["--so", so.abspath, "--header", hdr.abspath]
    steps = []
    if board not in NATIVE_BOARDS and board != "mps2-an500" and opts.get("flash", True):
        steps.append(("flash", flash_command(python, root.File("tools/flash.py").abspath,
                                             opts.get("programmer") or "openocd", elf.abspath,
                                             binary.abspath if binary is not None else "")))
    steps.append((f"check of {model} on {board} ({count} inputs)",
                  client_command(python, client, board, elf.abspath, opts.get("port") or "/dev/ttyACM0",
                                 hdr.abspath, count, compare)))
    deps = [elf, so] + ([binary] if binary is not None else [])
    node = e.Command(bdir.File(".check"), deps, e.Action(_run_steps(steps), None))
    AlwaysBuild(node)
    e.Alias("check", node)
    return node


def native_firmware(env, board, model, src_c, hdr, bdir, fw_dir, opts, python, root):
    """board=native64: the RIOT build and its run/check aliases (`run` is `check`: the same inputs,
    the process started on a pty). Returns the default targets."""
    riotbase = opts.get("RIOTBASE") or ""
    e, elf, _map, _fit = build(env, board, model, src_c, hdr, bdir, fw_dir, riotbase)
    so = e.Dir("#").File(f"build/host/{model}/lib{model}.so")
    node = check_alias(e, board, model, elf, None, bdir, hdr, so, opts, python, root)
    e.Alias("run", node)
    for alias in ("flash", "size", "bench"):
        e.Alias(alias, e.Command(bdir.File(f".{alias}-native"), [], e.Action(_not_native(alias), None)))
    return [elf]


def _not_native(alias):
    def act(target, source, env):
        sys.stderr.write(f"error: board=native64 is a Linux process: `{alias}` is for the Cortex-M7 boards "
                         f"(board=stm32f746g-disco, board=mps2-an500); native64 has build, run and check\n")
        return 2
    return act
