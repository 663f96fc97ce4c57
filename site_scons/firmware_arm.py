"""SCons side of the Cortex-M7 firmware (firmware/riot): build, size report, fit check, and the
run / flash / size / bench aliases, plus the bench summary over several models. Called from
firmware/riot/SConscript (one model) and from the SConstruct (bench_summary).

Two ways to build the same application sources:
  - bare metal (default): startup, vector table, linker script and UART of firmware/riot/board/<board>
  - RIOT (RIOTBASE=... given, board=stm32f746g-disco; always for board=native64): RIOT's make with
    firmware/riot/Makefile, see firmware_riot.py
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

from SCons.Script import AlwaysBuild, Dir, GetOption

from argv_action import argv_action
import firmware_riot

CC = "arm-none-eabi-gcc"
OBJCOPY = "arm-none-eabi-objcopy"
SIZE = "arm-none-eabi-size"
CPU_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"]
# The code generation flags of the model (-O2, -ffp-contract=off, -fsingle-precision-constant: the
# F746's FPU is single precision, a double operation would become a slow soft-float call), shared
# with the RIOT build (firmware/riot/model.cflags). -Wdouble-promotion for the application.
MODEL_CFLAGS = [flag for line in open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                  "firmware", "riot", "model.cflags"))
                if not line.startswith("#") for flag in line.split()]
C_FLAGS = ["-std=c99", "-g", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections",
           *MODEL_CFLAGS]
APP_FLAGS = ["-Wdouble-promotion", "-Wstrict-prototypes", "-Wshadow"]
LINK_FLAGS = ["--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections"]

BOARDS = {
    "stm32f746g-disco": {"irqs": 98, "flash": (0x08000000, 1024 * 1024), "ram": (0x20000000, 320 * 1024),
                         "what": "STM32F746NG: 1 MiB flash, 320 KiB SRAM"},
    "mps2-an500": {"irqs": 32, "flash": (0x00000000, 1024 * 1024), "ram": (0x20000000, 320 * 1024),
                   "what": "QEMU mps2-an500, memory clamped to the STM32F746's 1 MiB flash / 320 KiB SRAM"},
}
# microTVM's published LeNet-5 figures on this board (RIOT, seed 002). Other kernel providers are
# compared by running this bench with kernels=c or kernels=tvm.
MICROTVM_LENET5 = {"ms": 39.6, "ram_kb": 11.1, "flash_kb": 64.7}
# Best published MLPerf Tiny v1.0 latencies on an STM32F746 at 216 MHz, per zoo model of the same
# reference network. Goal: instructions on the emulated M7 <= 0.8 x these cycles.
F746_HZ = 216e6
MLPERF_TINY_F746 = {
    "mlperf_resnet8": {"ms": 64.8, "source": "MLPerf Tiny v1.0, image classification, Plumerai"},
    "mlperf_dscnn": {"ms": 19.1, "source": "MLPerf Tiny v1.0, keyword spotting"},
    "mlperf_mobilenet": {"ms": 57.0, "source": "MLPerf Tiny v1.0, visual wake words"},
    "mlperf_autoencoder": {"ms": 2.3, "source": "MLPerf Tiny v1.0, anomaly detection"},
}
MLPERF_GOAL = 0.8


def published_cycles(model: str):
    t = MLPERF_TINY_F746.get(model)
    return None if t is None else t["ms"] * 1e-3 * F746_HZ


def _flags_str(flags):
    return " ".join(flags)


# ---------------------------------------------------------------------------------------------
# sizes
# ---------------------------------------------------------------------------------------------

def section_sizes(path: str) -> dict:
    """{section: size} of an ELF or object file (arm-none-eabi-size -A)."""
    out = subprocess.run([SIZE, "-A", "-d", path], capture_output=True, text=True, check=True).stdout
    sizes = {}
    for line in out.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+(\d+)", line)
        if m:
            sizes[m.group(1)] = sizes.get(m.group(1), 0) + int(m.group(2))
    return sizes


def parse_map(path: str) -> list:
    """Input sections placed by the linker: [(output section, input section, size, file)]."""
    text = open(path, errors="replace").read()
    start = text.find("Linker script and memory map")
    lines = text[start:].splitlines() if start >= 0 else []
    placed, out_sec, pending = [], None, None
    rec = re.compile(r"^\s+0x([0-9a-fA-F]+)\s+0x([0-9a-fA-F]+)\s+(\S.*)$")
    for line in lines:
        m = re.match(r"^(\.[\w.]+)(\s+0x[0-9a-fA-F]+\s+0x[0-9a-fA-F]+.*)?$", line)
        if m:
            out_sec, pending = m.group(1), None
            continue
        if pending is not None:
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


def linker_layout(secs: dict) -> str:
    """'riot' for an image linked by RIOT (its .relocate section), else 'bare-metal'."""
    return "riot" if ".relocate" in secs else "bare-metal"


def size_report(elf: str, map_file: str, model: str, board: str) -> dict:
    """Flash and RAM of the firmware, split into model weights, model code, model arena/data and
    runtime (application, board layer or RIOT, libc)."""
    secs = section_sizes(elf)
    layout = SECTIONS[linker_layout(secs)]
    flash = sum(secs.get(s, 0) for s in layout["flash"])
    ram = sum(secs.get(s, 0) for s in layout["ram"])
    model_obj = f"tvmgen_{model}.o"
    weights = code = arena = 0
    for out_sec, _in_sec, size, path in parse_map(map_file):
        if not (path.endswith(model_obj) or path.endswith(model_obj + ")")):
            continue
        if out_sec in (".rodata",) or _in_sec.startswith(".rodata"):
            weights += size
        elif out_sec in (".text",) or _in_sec.startswith(".text"):
            code += size
        elif out_sec in (".bss", ".data") or _in_sec.startswith((".bss", ".data", "COMMON")):
            arena += size
    stack = secs.get(".stack", 0)
    lo, ll = BOARDS[board]["flash"]
    ro, rl = BOARDS[board]["ram"]
    return {
        "board": board, "model": model,
        "flash": {"total": flash, "available": ll, "model_weights": weights, "model_code": code,
                  "runtime": flash - weights - code},
        "ram": {"total": ram, "available": rl, "model_arena_and_data": arena, "stack_reserve": stack,
                "runtime": ram - arena - stack},
        "sections": secs,
    }


def format_size_report(r: dict) -> str:
    f, m = r["flash"], r["ram"]
    lines = [f"size of {r['model']} firmware for {r['board']}:",
             f"  flash {f['total']:>9,} B of {f['available']:,} ({100.0 * f['total'] / f['available']:.1f}%): "
             f"model weights {f['model_weights']:,}, model code {f['model_code']:,}, runtime {f['runtime']:,}",
             f"  RAM   {m['total']:>9,} B of {m['available']:,} ({100.0 * m['total'] / m['available']:.1f}%): "
             f"model arena+data {m['model_arena_and_data']:,}, stack reserve {m['stack_reserve']:,}, "
             f"runtime {m['runtime']:,}"]
    return "\n".join(lines)


def object_breakdown(objs: list, model: str) -> dict:
    """Pre-link sizes from the object files (for the error message when the link fails)."""
    b = {"model_weights": 0, "model_code": 0, "model_arena": 0, "runtime_flash": 0, "runtime_ram": 0}
    for o in objs:
        if not os.path.exists(o):
            continue
        is_model = os.path.basename(o) == f"tvmgen_{model}.o"
        for sec, size in section_sizes(o).items():
            if sec.startswith(".rodata"):
                b["model_weights" if is_model else "runtime_flash"] += size
            elif sec.startswith(".text"):
                b["model_code" if is_model else "runtime_flash"] += size
            elif sec.startswith((".bss", ".data")):
                b["model_arena" if is_model else "runtime_ram"] += size
    return b


# Linker memory regions: the bare-metal script's names and RIOT's (cortexm_base.ld)
REGION_MEMORY = {"FLASH": "flash", "rom": "flash", "RAM": "ram", "ram": "ram"}


def link_overflow(stderr: str, board: str) -> dict:
    """{region: {"needed", "available", "origin"}} from ld's region overflow errors ({} if none);
    the lengths are the board's (BOARDS), needed = length + the overflow ld reports. A region that
    is neither flash nor RAM (RIOT's backup RAM) gets only the overflow: "needed" None."""
    over = {}
    for region, n in re.findall(r"region `(\w+)' overflowed by (\d+) bytes", stderr):
        over[region] = max(over.get(region, 0), int(n))
    spec = BOARDS[board]
    regions = {}
    for region, n in sorted(over.items()):
        memory = REGION_MEMORY.get(region)
        if memory is None:
            regions[region] = {"needed": None, "available": None, "origin": None, "overflow": n}
            continue
        origin, length = spec[memory]
        regions[region] = {"needed": length + n, "available": length, "origin": origin, "overflow": n}
    return regions


def fit_error(regions: dict, board: str, model: str, objs: list, elf: str, severity: str = "error") -> str:
    """A readable 'does not fit' message for the overflowing regions of link_overflow()."""
    b = object_breakdown(objs, model)
    lines = [f"{severity}: model {model!r} does not fit the {board} ({BOARDS[board]['what']})"]
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


def _write_atomic(path: str, text: str):
    """Readers never see half a file: the project's one atomic writer."""
    from nnc.outdir import write_file   # the venv's editable install of the project
    write_file(path, text)


def _write_fit(path: str, board: str, model: str, regions: dict):
    """fit.json, the result of the link's fit check: fits, or the regions that overflow."""
    _write_atomic(path, json.dumps({"board": board, "model": model, "fits": not regions,
                                    "regions": regions}, indent=1) + "\n")


def _link_failed(stderr: str, board: str, model: str, objs: list, elf: str, fit_path: str,
                 nofit_ok: bool) -> int:
    """After a failed link: no outputs left; a region overflow is recorded in fit.json and, with
    nofit_ok (a bench over several models), reported as a note instead of failing the build."""
    _remove_outputs(elf)
    regions = link_overflow(stderr, board)
    if not regions:
        sys.stderr.write((stderr.rstrip() or "link failed") + "\n")
        return 1
    _write_fit(fit_path, board, model, regions)
    if nofit_ok:
        print(fit_error(regions, board, model, objs, elf, severity="note")
              + "\n  the bench lists it as 'does not fit'")
        return 0
    sys.stderr.write(fit_error(regions, board, model, objs, elf) + "\n")
    return 1


# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------

def _model_files(gen_dir, model):
    """gen_dir: a Dir, a path, or the node list of the export (header, source, ...)."""
    if isinstance(gen_dir, (list, tuple)) or hasattr(gen_dir, "__iter__") and not isinstance(gen_dir, str):
        nodes = list(gen_dir)
        src = [n for n in nodes if str(n).endswith(f"tvmgen_{model}.c")]
        hdr = [n for n in nodes if str(n).endswith(f"tvmgen_{model}.h")]
        js = [n for n in nodes if str(n).endswith("model.json")]
        if not src or not hdr:
            raise ValueError(f"gen_dir nodes hold no tvmgen_{model}.c/.h")
        return src[0], hdr[0], (js[0] if js else None)
    d = Dir(gen_dir) if isinstance(gen_dir, str) else gen_dir
    js = d.File("model.json")
    return d.File(f"tvmgen_{model}.c"), d.File(f"tvmgen_{model}.h"), js


def _remove_outputs(elf: str):
    """After a failed link: no fw.elf, and no older fw.bin/.hex/size.json that could pass for it."""
    d = os.path.dirname(elf)
    for name in ("fw.elf", "fw.map", "fw.bin", "fw.hex", "size.json", "fit.json", "bench.json",
                 "bench.txt"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            os.remove(p)


def _link_action(board, model, nofit_ok):
    def link(target, source, env):
        elf, map_file, fit_path = (str(t) for t in target[:3])
        cmd = [CC, *CPU_FLAGS, *LINK_FLAGS, "-L", env["FW_COMMON_DIR"], "-T", env["FW_LDSCRIPT"],
               f"-Wl,-Map={map_file}", "-o", elf, *[str(s) for s in source if str(s).endswith(".o")], "-lm"]
        print(" ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return _link_failed(r.stderr, board, model, [str(s) for s in source], elf, fit_path, nofit_ok)
        _write_fit(fit_path, board, model, {})
        if r.stderr.strip():
            sys.stderr.write(r.stderr)
        return 0
    return link


def _size_action(board, model):
    def act(target, source, env):
        rep = size_report(str(source[0]), str(source[1]), model, board)
        with open(str(target[0]), "w") as f:
            json.dump(rep, f, indent=1)
        print(format_size_report(rep))
        return 0
    return act


def _print_size(target, source, env):
    print(format_size_report(json.load(open(str(source[0])))))
    return 0


def _input_shape(header_path: str):
    try:
        text = open(header_path).read()
    except OSError:
        return None
    m = re.search(r"#define TVMGEN_\w+_INPUT0_SHAPE \{([^}]*)\}", text)
    return tuple(int(v) for v in m.group(1).split(",")) if m else None


def _samples_args(header_path: str) -> str:
    """Digits for single-channel square image models (NCHW or NHWC), random inputs otherwise."""
    shape = _input_shape(header_path)
    if shape and len(shape) == 4:
        n, a, b, c = shape
        if (a == 1 and b == c) or (c == 1 and a == b):
            return "--dataset digits"
    return "--random 10"


def bare_metal(env, board, model, src_c, hdr, bdir, fw_dir, nofit_ok=False):
    e = env.Clone()
    e.Replace(CC=CC, AS=CC, OBJSUFFIX=".o", CCFLAGS=CPU_FLAGS + C_FLAGS, CFLAGS=[],
              CPPPATH=[fw_dir.abspath, fw_dir.Dir("board/common").abspath, hdr.dir.abspath],
              CPPDEFINES=[("BOARD_NUM_IRQS", BOARDS[board]["irqs"]), ("NNC_MODEL", model),
                          ("NNC_MODEL_UC", model.upper())])
    obj = bdir.Dir("obj")
    app_flags = CPU_FLAGS + C_FLAGS + APP_FLAGS
    objs = [
        e.Object(obj.File("main.o"), fw_dir.File("main.c"), CCFLAGS=app_flags),
        e.Object(obj.File("startup.o"), fw_dir.File("board/common/startup.c"),
                 CCFLAGS=app_flags + ["-std=gnu99"]),
        e.Object(obj.File("board.o"), fw_dir.File(f"board/{board}/board.c"), CCFLAGS=app_flags),
        e.Object(obj.File(f"tvmgen_{model}.o"), src_c,
                 CCFLAGS=CPU_FLAGS + C_FLAGS + ["-include", fw_dir.File("layer_hook.h").abspath]),
    ]
    objs = [o[0] for o in objs]
    e.Depends(objs[0], hdr)   # included through a macro: the scanner cannot see it
    ld = fw_dir.File(f"board/{board}/linker.ld")
    e["FW_LDSCRIPT"] = ld.abspath
    e["FW_COMMON_DIR"] = fw_dir.Dir("board/common").abspath
    elf, map_file, fit = e.Command([bdir.File("fw.elf"), bdir.File("fw.map"), bdir.File("fit.json")], objs,
                                   e.Action(_link_action(board, model, nofit_ok), None))
    e.Depends(elf, [ld, fw_dir.File("board/common/sections.ld")])
    return e, elf, map_file, fit


def firmware(env, board, model, gen_dir, build_dir, fw_dir):
    """Defines the firmware of one board/model and its aliases; returns the default targets.

    env["NOFIT_OK"] true (a bench over several models): a model that does not fit is recorded in
    fit.json and benched as 'does not fit' instead of failing the build."""
    if board not in BOARDS and board not in firmware_riot.NATIVE_BOARDS:
        raise ValueError(f"firmware/riot builds for {', '.join(BOARDS + firmware_riot.NATIVE_BOARDS)}, "
                         f"not {board!r}")
    opts = env.get("OPTS", {}) or {}
    nofit_ok = bool(env.get("NOFIT_OK"))
    python = env.get("PYTHON", sys.executable)
    root = fw_dir.Dir("../..")   # the repository, also when called from a SConstruct elsewhere
    bdir = Dir(build_dir if os.path.isabs(str(build_dir)) else "#" + str(build_dir))
    src_c, hdr, model_json = _model_files(gen_dir, model)
    riotbase = opts.get("RIOTBASE") or ""

    if board in firmware_riot.NATIVE_BOARDS:
        return firmware_riot.native_firmware(env, board, model, src_c, hdr, bdir, fw_dir, opts, python, root)
    if riotbase and board in firmware_riot.RIOT_BOARDS:
        bdir = bdir.Dir("riot")   # next to the bare-metal image, so both can be compared
        e, elf, map_file, fit = firmware_riot.build(env, board, model, src_c, hdr, bdir, fw_dir, riotbase,
                                                    nofit_ok)
    else:
        if riotbase:
            print(f"note: RIOT has no {board} board; building the bare-metal firmware for it")
        e, elf, map_file, fit = bare_metal(env, board, model, src_c, hdr, bdir, fw_dir, nofit_ok)

    binf = e.Command(bdir.File("fw.bin"), elf, argv_action([OBJCOPY, "-O", "binary", elf, bdir.File("fw.bin")]))
    hexf = e.Command(bdir.File("fw.hex"), elf, argv_action([OBJCOPY, "-O", "ihex", elf, bdir.File("fw.hex")]))
    size_json = e.Command(bdir.File("size.json"), [elf, map_file],
                          e.Action(_size_action(board, model), None))
    targets = [elf, binf[0], hexf[0], size_json[0]]

    size_alias = e.Command(bdir.File(".size-print"), size_json, e.Action(_print_size, None))
    AlwaysBuild(size_alias)
    e.Alias("size", size_alias)

    client = root.File("tools/serial_client.py").abspath
    # The firmware's outputs are compared with the host library of the portable reference
    # (env["REFERENCE_LIBS"]: model -> (library, its header), from the SConstruct), not with a
    # host build of the firmware's own kernels.
    so, so_hdr = (env.get("REFERENCE_LIBS") or {}).get(
        model, (Dir("#").File(f"build/host/{model}/lib{model}.so"), hdr))
    compare = []
    run_deps = [elf]
    if so.has_builder() or os.path.exists(so.abspath):
        compare = ["--so", so.abspath, "--header", so_hdr.abspath]
        run_deps += [so, so_hdr]
    fw = _bench_paths(board, model, bdir, hdr, model_json)

    if board == "mps2-an500":
        run = e.Command(bdir.File(".run"), run_deps,
                        argv_action([python, client, f"--qemu={elf.abspath}", *_samples_args(hdr.abspath).split(),
                                     "--count", "20", *compare]))
        bench_deps = run_deps + [map_file, fit, hdr] + ([model_json] if model_json else [])
        bench = e.Command(bdir.File("bench.txt"), bench_deps,
                          e.Action(_bench_action(fw, [python, client], compare), None))
    else:
        port = opts.get("port") or "/dev/ttyACM0"
        run = e.Command(bdir.File(".run"), run_deps,
                        argv_action([python, client, f"--port={port}", *_samples_args(hdr.abspath).split(),
                                     "--count", "20", *compare]))
        programmer = opts.get("programmer") or "openocd"
        flash = e.Command(bdir.File(".flash"), [elf, binf[0]],
                          argv_action([python, root.File("tools/flash.py"), "--programmer", programmer,
                                       f"--elf={elf.abspath}", f"--bin={binf[0].abspath}"]))
        AlwaysBuild(flash)
        e.Alias("flash", flash)
        bench = e.Command(bdir.File(".bench-note"), [elf, map_file, fit],
                          e.Action(_bench_board_note(fw), None))
    AlwaysBuild(run)
    AlwaysBuild(bench)
    e.Alias("run", run)
    e.Alias("bench", bench)
    firmware_riot.check_alias(e, board, model, elf, binf[0], bdir, so_hdr, so, opts, python, root)
    if board == "mps2-an500":
        e.Alias("flash", e.Command(bdir.File(".flash"), [], e.Action(_no_flash_emulator, None)))
    return targets


def _no_flash_emulator(target, source, env):
    sys.stderr.write("error: board=mps2-an500 is the emulator: there is nothing to flash. "
                     "Use `scons board=mps2-an500 run`, or board=stm32f746g-disco flash for the real board.\n")
    return 2


def _bench_paths(board, model, bdir, hdr, model_json) -> dict:
    """Where the bench of one board/model finds its inputs (paths: they end up in action closures)."""
    return {"board": board, "model": model, "elf": bdir.File("fw.elf").abspath,
            "map": bdir.File("fw.map").abspath, "fit": bdir.File("fit.json").abspath,
            "bench_json": bdir.File("bench.json").abspath, "header": hdr.abspath,
            "model_json": model_json.abspath if model_json is not None else None}


def _fit_record(fw: dict) -> dict:
    return json.load(open(fw["fit"]))


def _size(fw: dict) -> dict:
    return size_report(fw["elf"], fw["map"], fw["model"], fw["board"])


def _bench_board_note(fw):
    def act(target, source, env):
        fit = _fit_record(fw)
        if not fit["fits"]:
            print(f"bench: {fw['model']} on {fw['board']}: {describe_no_fit(fit)}")
            return 0
        print(format_size_report(_size(fw)))
        print(f"bench: instruction counts come from the emulated Cortex-M7: "
              f"scons board=mps2-an500 model={fw['model']} bench")
        return 0
    return act


BENCH_INFERENCES = 5


def _bench_action(fw, client, compare):
    """Runs the firmware under QEMU (serial client, BENCH_INFERENCES inputs, outputs compared with
    the host library) and prints/writes the report; a model that does not fit gets a one-line
    report. Any failure of the client (QEMU, mismatch) fails the bench and leaves no bench.json."""
    def act(target, source, env):
        fit = _fit_record(fw)
        if not fit["fits"]:
            text = f"bench: {fw['model']} on {fw['board']}: {describe_no_fit(fit)} (not run)"
            print(text)
            _write_atomic(str(target[0]), text + "\n")
            return 0
        bench_json = fw["bench_json"]
        cmd = [*client, "--qemu", fw["elf"], *_samples_args(fw["header"]).split(),
               "--count", str(BENCH_INFERENCES), "--quiet", "--bench", bench_json, *compare]
        print(" ".join(shlex.quote(c) for c in cmd))
        sys.stdout.flush()
        if subprocess.run(cmd).returncode != 0:
            if os.path.exists(bench_json):
                os.remove(bench_json)
            sys.stderr.write(f"error: bench of {fw['model']} failed (see above)\n")
            return 1
        meta = _model_meta(fw)
        names = [(l["name"], l.get("kind", ""), l.get("macs", 0)) for l in meta.get("layers", [])]
        text = format_bench(json.load(open(bench_json)), _size(fw), names)
        print(text)
        _write_atomic(str(target[0]), text + "\n")
        return 0
    return act


def _model_meta(fw: dict) -> dict:
    mj = fw["model_json"]
    return json.load(open(mj)) if mj is not None and os.path.exists(mj) else {}


def bench_figures(b: dict, size: dict, macs: int) -> dict:
    """The headline numbers of one bench (bench.json of the serial client + the size report)."""
    per = b["per_inference"]
    mean = sum(per) / len(per)
    r = size["ram"]
    return {"mean": mean, "min": min(per), "max": max(per), "per_mac": mean / macs if macs else None,
            "ram_in_use": r["total"] - r["stack_reserve"] + b["stack_used"]}


def format_bench(b: dict, size: dict, names: list) -> str:
    unit = b["unit"]
    f, r = size["flash"], size["ram"]
    total_macs = sum(n[2] for n in names) if names else 0
    fig = bench_figures(b, size, total_macs)
    mean = fig["mean"]
    lines = [f"bench: {b['model']} on the emulated Cortex-M7 (QEMU mps2-an500, -icount shift="
             f"{b['icount_shift']}: exact {unit}), {b['inferences']} inferences",
             f"  {unit} per inference: {mean:,.0f} (min {fig['min']:,}, max {fig['max']:,})"
             + (f", {fig['per_mac']:.2f} per MAC ({total_macs:,} MACs)" if total_macs else ""),
             f"  flash {f['total']:,} B (weights {f['model_weights']:,}, model code {f['model_code']:,}, "
             f"runtime {f['runtime']:,})",
             f"  RAM {r['total']:,} B (arena+model data {r['model_arena_and_data']:,}, stack reserve "
             f"{r['stack_reserve']:,}, runtime {r['runtime']:,}); stack used {b['stack_used']:,} B, "
             f"so RAM in use {fig['ram_in_use']:,} B"]
    if b["per_layer"]:
        lines.append(f"  {'layer':<24}{'kind':<14}{'MACs':>10}{unit:>14}{'per MAC':>9}")
        for i, v in enumerate(b["per_layer"]):
            name, kind, macs = names[i] if i < len(names) else (f"layer {i}", "", 0)
            per_mac = f"{v / macs:.2f}" if macs else ""
            lines.append(f"  {name:<24}{kind:<14}{macs:>10,}{v:>14,}{per_mac:>9}")
        lines.append("  (per layer includes the layer hook, ~10 instructions; the rest of the total is "
                     "the call and timer reads)")
    if b["model"] == "lenet5":
        t = MICROTVM_LENET5
        lines.append(f"  microTVM on the real STM32F746G-DISCO (RIOT, published): {t['ms']} ms, "
                     f"{t['ram_kb']} KB RAM, {t['flash_kb']} KB flash")
        lines.append(f"  this firmware: {mean / 216e3:.1f} ms at 216 MHz if it ran 1 instruction per cycle "
                     f"(an estimate: QEMU has no timing model; the M7 dual-issues, flash wait states cost), "
                     f"{fig['ram_in_use'] / 1000:.1f} KB RAM in use, "
                     f"{f['total'] / 1000:.1f} KB flash")
    if b["model"] in MLPERF_TINY_F746:
        t, cycles = MLPERF_TINY_F746[b["model"]], published_cycles(b["model"])
        lines.append(f"  best published on STM32F746 @ 216 MHz ({t['source']}): {t['ms']} ms = "
                     f"{cycles:,.0f} cycles; this firmware: {mean:,.0f} instructions = "
                     f"{mean / cycles:.2f} x those cycles (goal <= {MLPERF_GOAL} x: {MLPERF_GOAL * cycles:,.0f})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# bench summary over several models
# ---------------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["model", "MACs", "instructions / inference", "instructions / MAC", "arena B",
                   "stack used B", "flash B", "RAM in use B"]   # numbers right-aligned


def bench_summary(env, board, models, gen_dirs, summary):
    """After the per-model benches of `models` (firmware() of each, build/<board>/<model>), one
    table over all of them, printed and written to `summary` (markdown). A model that does not
    fit is a row 'does not fit: needs N B flash of L'. Returns the summary node.

    The previous summary is removed now, before anything is built (not for -n, -q, -h): a bench
    that fails leaves no summary that could pass for its result."""
    fws, bench_nodes = [], []
    for model in models:
        bdir = Dir(f"#build/{board}/{model}")
        _src, hdr, model_json = _model_files(gen_dirs[model], model)
        fws.append(_bench_paths(board, model, bdir, hdr, model_json))
        bench_nodes.append(bdir.File("bench.txt"))
    out = env.File(summary)
    if os.path.exists(out.abspath) and not any(GetOption(o) for o in ("no_exec", "question", "help")):
        os.remove(out.abspath)
    node = env.Command(out, bench_nodes, env.Action(_summary_action(fws), None))
    AlwaysBuild(node)
    env.Alias("bench", node)
    return node


def _summary_action(fws):
    def act(target, source, env):
        text = format_summary(fws)
        print(text)
        _write_atomic(str(target[0]), text + "\n")
        return 0
    return act


def format_summary(fws: list) -> str:
    rows, shifts, inferences, kernels = [], set(), set(), set()
    for fw in fws:
        meta = _model_meta(fw)
        macs = meta.get("macs", 0)
        kernels.add(meta.get("kernels", "?"))
        fit = _fit_record(fw)
        if not fit["fits"]:
            rows.append([fw["model"], f"{macs:,}", describe_no_fit(fit)] + [""] * (len(SUMMARY_COLUMNS) - 3))
            continue
        b = json.load(open(fw["bench_json"]))
        size = _size(fw)
        fig = bench_figures(b, size, macs)
        shifts.add(b["icount_shift"])
        inferences.add(b["inferences"])
        rows.append([fw["model"], f"{macs:,}", f"{fig['mean']:,.0f}",
                     f"{fig['per_mac']:.2f}" if fig["per_mac"] is not None else "",
                     f"{b['workspace']:,}", f"{b['stack_used']:,}", f"{size['flash']['total']:,}",
                     f"{fig['ram_in_use']:,}"])
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(SUMMARY_COLUMNS)]
    right = [False] + [True] * (len(SUMMARY_COLUMNS) - 1)

    def line(cells, right):
        return "| " + " | ".join(c.rjust(w) if r else c.ljust(w)
                                 for c, w, r in zip(cells, widths, right)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + (":" if r else "-") for w, r in zip(widths, right)) + "|"
    board = fws[0]["board"] if fws else "?"
    caption = [f"Bench summary: {len(fws)} zoo models on the emulated Cortex-M7 (QEMU {board}, -icount "
               f"shift={'/'.join(map(str, sorted(shifts))) or '-'}: exact instruction counts),",
               f"kernels={'/'.join(sorted(kernels))}, mean of {'/'.join(map(str, sorted(inferences))) or '-'} "
               f"inferences per model. Flash and RAM: the firmware (arm-none-eabi-size);",
               "RAM in use = static RAM - stack reserve + stack used (measured)."]
    return "\n".join(caption + ["", line(SUMMARY_COLUMNS, [False] * len(widths)), sep]
                     + [line(r, right) for r in rows] + format_mlperf(fws))


MLPERF_COLUMNS = ["model", "instructions / inference", "published F746 ms", "as cycles @ 216 MHz",
                  "instructions / published cycles", "goal (0.8 x cycles)", "source"]


def format_mlperf(fws: list) -> list:
    """The MLPerf Tiny models of the bench beside the best published STM32F746 figures."""
    rows = []
    for fw in fws:
        t = MLPERF_TINY_F746.get(fw["model"])
        if t is None or not _fit_record(fw)["fits"]:
            continue
        b = json.load(open(fw["bench_json"]))
        mean, cycles = sum(b["per_inference"]) / len(b["per_inference"]), published_cycles(fw["model"])
        rows.append([fw["model"], f"{mean:,.0f}", f"{t['ms']}", f"{cycles:,.0f}", f"{mean / cycles:.2f}",
                     f"{MLPERF_GOAL * cycles:,.0f}", t["source"]])
    if not rows:
        return []
    return ["", "MLPerf Tiny networks against the best published STM32F746 results (instructions are "
            "not cycles: the M7 dual-issues some pairs and stalls on others):", "",
            "| " + " | ".join(MLPERF_COLUMNS) + " |", "|" + "|".join("---" for _ in MLPERF_COLUMNS) + "|"] \
        + ["| " + " | ".join(r) + " |" for r in rows]
