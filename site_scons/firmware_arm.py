"""SCons side of the Cortex-M7 firmware (firmware/riot): build, size report, fit check, and the
run / flash / size / bench aliases. Called from firmware/riot/SConscript.

Two ways to build the same application sources:
  - bare metal (default): startup, vector table, linker script and UART of firmware/riot/board/<board>
  - RIOT (RIOTBASE=... given, board=stm32f746g-disco): RIOT's make with firmware/riot/Makefile
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from SCons.Script import AlwaysBuild, Dir, File

CC = "arm-none-eabi-gcc"
OBJCOPY = "arm-none-eabi-objcopy"
SIZE = "arm-none-eabi-size"
CPU_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"]
# -fsingle-precision-constant and -Wdouble-promotion: the F746's FPU is single precision, a
# double operation would become a slow soft-float call (or, in inline asm, a fault).
C_FLAGS = ["-std=c99", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-ffunction-sections",
           "-fdata-sections", "-fsingle-precision-constant", "-ffp-contract=off", "-fno-math-errno"]
APP_FLAGS = ["-Wdouble-promotion", "-Wstrict-prototypes", "-Wshadow"]
LINK_FLAGS = ["--specs=nano.specs", "-nostartfiles", "-Wl,--gc-sections"]

BOARDS = {
    "stm32f746g-disco": {"irqs": 98, "flash": (0x08000000, 1024 * 1024), "ram": (0x20000000, 320 * 1024),
                         "what": "STM32F746NG: 1 MiB flash, 320 KiB SRAM"},
    "mps2-an500": {"irqs": 32, "flash": (0x00000000, 1024 * 1024), "ram": (0x20000000, 320 * 1024),
                   "what": "QEMU mps2-an500, memory clamped to the STM32F746's 1 MiB flash / 320 KiB SRAM"},
}
# microTVM's published LeNet-5 figures on this board (RIOT, seed 002) and what notes/targets.md
# measured for other LeNet-5 builds on the emulated M7 (instructions per inference).
MICROTVM_LENET5 = {"ms": 39.6, "ram_kb": 11.1, "flash_kb": 64.7}
REFERENCE_LENET5_INSTRUCTIONS = [("TVM 0.27 default schedules, plain C", 5100560),
                                 ("CMSIS-NN v7 kernels", 2272132),
                                 ("straightforward C loops", 5637234)]


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


FLASH_SECTIONS = (".isr_vector", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data")
RAM_SECTIONS = (".data", ".bss", ".stack")


def size_report(elf: str, map_file: str, model: str, board: str) -> dict:
    """Flash and RAM of the firmware, split into model weights, model code, model arena/data and
    runtime (application, board layer, libc)."""
    secs = section_sizes(elf)
    flash = sum(secs.get(s, 0) for s in FLASH_SECTIONS)
    ram = sum(secs.get(s, 0) for s in RAM_SECTIONS)
    # RIOT puts its stacks in .bss and has other section names: count what is allocated
    if ".stack" not in secs and ".isr_vector" not in secs:
        flash = sum(v for k, v in secs.items() if k in (".text", ".rodata", ".data", ".relocate",
                                                       ".vectors", ".ARM.exidx", ".ARM.extab"))
        ram = sum(v for k, v in secs.items() if k in (".data", ".relocate", ".bss", ".heap3"))
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


def fit_error(stderr: str, board: str, model: str, objs: list, elf: str) -> str | None:
    """A readable 'does not fit' message from ld's region overflow errors, or None."""
    over = {}
    for region, n in re.findall(r"region `(\w+)' overflowed by (\d+) bytes", stderr):
        over[region] = max(over.get(region, 0), int(n))
    if not over:
        return None
    b = object_breakdown(objs, model)
    spec = BOARDS[board]
    lines = [f"error: model {model!r} does not fit the {board} ({spec['what']})"]
    for region, n in sorted(over.items()):
        origin, length = spec["flash"] if region == "FLASH" else spec["ram"]
        lines.append(f"  {region}: {length + n:,} bytes needed, {length:,} available "
                     f"(at {origin:#010x}), {n:,} bytes too many")
        if region == "FLASH":
            lines.append(f"    model weights {b['model_weights']:,} B, model code {b['model_code']:,} B, "
                         f"runtime ~{b['runtime_flash']:,} B (object sizes before unused code is dropped)")
            lines.append("    what to do: use a smaller model (fewer channels or units: every int8 weight "
                         "takes one byte of flash); this build keeps weights in the internal flash and does "
                         "not use the DISCO's 16 MB QSPI flash")
        else:
            lines.append(f"    model arena and data {b['model_arena']:,} B (the largest set of intermediate "
                         f"tensors alive at once), stack reserve 8,192 B, runtime ~{b['runtime_ram']:,} B")
            lines.append("    what to do: use a model with smaller intermediate tensors (fewer channels, "
                         "smaller feature maps, pooling earlier); this build does not use the DISCO's "
                         "8 MB SDRAM")
    lines.append(f"  nothing was produced: {elf} removed")
    return "\n".join(lines)


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
    for name in ("fw.elf", "fw.map", "fw.bin", "fw.hex", "size.json", "bench.json", "bench.txt"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            os.remove(p)


def _link_action(board, model, objs_paths):
    def link(target, source, env):
        elf, map_file = str(target[0]), str(target[1])
        cmd = [CC, *CPU_FLAGS, *LINK_FLAGS, "-L", env["FW_COMMON_DIR"], "-T", env["FW_LDSCRIPT"],
               f"-Wl,-Map={map_file}", "-o", elf, *[str(s) for s in source if str(s).endswith(".o")], "-lm"]
        print(" ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            _remove_outputs(elf)
            msg = fit_error(r.stderr, board, model, [str(s) for s in source], elf)
            sys.stderr.write((msg or r.stderr.rstrip()) + "\n")
            return 1
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


def _samples_args(header_node) -> str:
    """Digits for single-channel square image models (NCHW or NHWC), random inputs otherwise."""
    shape = _input_shape(header_node.abspath) if os.path.exists(header_node.abspath) else None
    if shape and len(shape) == 4:
        n, a, b, c = shape
        if (a == 1 and b == c) or (c == 1 and a == b):
            return "--dataset digits"
    return "--random 10"


def bare_metal(env, board, model, src_c, hdr, bdir, fw_dir):
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
    elf, map_file = e.Command([bdir.File("fw.elf"), bdir.File("fw.map")], objs,
                              e.Action(_link_action(board, model, [str(o) for o in objs]),
                                       None))
    e.Depends(elf, [ld, fw_dir.File("board/common/sections.ld")])
    return e, elf, map_file


def riot(env, board, model, src_c, hdr, bdir, fw_dir, riotbase):
    """Build through RIOT's make; the elf and map are copied to build_dir/fw.elf, fw.map."""
    e = env.Clone()
    riot_bin = bdir.Dir("riot")
    gen_abs = hdr.dir.abspath

    def make(target, source, env):
        cmd = ["make", "-C", fw_dir.abspath, f"RIOTBASE={os.path.abspath(riotbase)}", f"BOARD={board}",
               f"NNC_MODEL={model}", f"NNC_MODEL_DIR={gen_abs}", f"BINDIRBASE={riot_bin.abspath}",
               "QUIET=1", "all"]
        print(" ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        elf = os.path.join(riot_bin.abspath, board, "nnc_app.elf")
        if r.returncode != 0 or not os.path.exists(elf):
            msg = fit_error(r.stderr, board, model, [], str(target[0]))
            sys.stderr.write((msg or r.stderr.rstrip() or "RIOT build failed") + "\n")
            _remove_outputs(str(target[0]))
            return 1
        shutil.copyfile(elf, str(target[0]))
        mp = elf[:-4] + ".map"
        if os.path.exists(mp):
            shutil.copyfile(mp, str(target[1]))
        else:
            open(str(target[1]), "w").close()
        return 0

    sources = [src_c, hdr, fw_dir.File("main.c"), fw_dir.File("platform_riot.c"), fw_dir.File("Makefile"),
               fw_dir.File("pkg/nnc_model/Makefile"), fw_dir.File("pkg/nnc_model/Makefile.include")]
    elf, map_file = e.Command([bdir.File("fw.elf"), bdir.File("fw.map")], sources,
                              e.Action(make, f"RIOT make for {board}"))
    AlwaysBuild(elf)   # RIOT's make tracks its own dependencies
    return e, elf, map_file


def firmware(env, board, model, gen_dir, build_dir, fw_dir):
    """Defines the firmware of one board/model and its aliases; returns the default targets."""
    if board not in BOARDS:
        raise ValueError(f"firmware/riot builds for {', '.join(BOARDS)}, not {board!r}")
    opts = env.get("OPTS", {}) or {}
    python = env.get("PYTHON", sys.executable)
    root = fw_dir.Dir("../..")   # the repository, also when called from a SConstruct elsewhere
    bdir = Dir(build_dir if os.path.isabs(str(build_dir)) else "#" + str(build_dir))
    src_c, hdr, model_json = _model_files(gen_dir, model)
    riotbase = opts.get("RIOTBASE") or ""

    if riotbase and board == "stm32f746g-disco":
        e, elf, map_file = riot(env, board, model, src_c, hdr, bdir, fw_dir, riotbase)
    else:
        if riotbase:
            print(f"note: RIOT has no {board} board; building the bare-metal firmware for it")
        e, elf, map_file = bare_metal(env, board, model, src_c, hdr, bdir, fw_dir)

    binf = e.Command(bdir.File("fw.bin"), elf, f"{OBJCOPY} -O binary $SOURCE $TARGET")
    hexf = e.Command(bdir.File("fw.hex"), elf, f"{OBJCOPY} -O ihex $SOURCE $TARGET")
    size_json = e.Command(bdir.File("size.json"), [elf, map_file],
                          e.Action(_size_action(board, model), None))
    targets = [elf, binf[0], hexf[0], size_json[0]]

    size_alias = e.Command(bdir.File(".size-print"), size_json, e.Action(_print_size, None))
    AlwaysBuild(size_alias)
    e.Alias("size", size_alias)

    client = root.File("tools/serial_client.py").abspath
    so = Dir("#").File(f"build/host/{model}/lib{model}.so")
    compare = ""
    run_deps = [elf]
    if so.has_builder() or os.path.exists(so.abspath):
        compare = f" --so {so.abspath} --header {hdr.abspath}"
        run_deps.append(so)
    samples = _samples_args(hdr)

    if board == "mps2-an500":
        run = e.Command(bdir.File(".run"), run_deps,
                        f'"{python}" {client} --qemu {elf.abspath} {samples} --count 20{compare}')
        bench_json = bdir.File("bench.json")
        bench = e.Command(bdir.File("bench.txt"), run_deps + [size_json] + ([model_json] if model_json else []),
                          [f'"{python}" {client} --qemu {elf.abspath} {samples} --count 5 --quiet '
                           f'--bench {bench_json.abspath}{compare}',
                           e.Action(_bench_action(model, model_json, bench_json), None)])
    else:
        port = opts.get("port") or "/dev/ttyACM0"
        run = e.Command(bdir.File(".run"), run_deps,
                        f'"{python}" {client} --port {port} {samples} --count 20{compare}')
        programmer = opts.get("programmer") or "openocd"
        flash = e.Command(bdir.File(".flash"), [elf, binf[0]],
                          f'"{python}" {root.File("tools/flash.py").abspath} --programmer {programmer} '
                          f'--elf {elf.abspath} --bin {binf[0].abspath}')
        AlwaysBuild(flash)
        e.Alias("flash", flash)
        bench = e.Command(bdir.File(".bench-note"), size_json,
                          e.Action(_bench_board_note(model), None))
    AlwaysBuild(run)
    AlwaysBuild(bench)
    e.Alias("run", run)
    e.Alias("bench", bench)
    if board == "mps2-an500":
        e.Alias("flash", e.Command(bdir.File(".flash"), [], e.Action(_no_flash_emulator, None)))
    return targets


def _no_flash_emulator(target, source, env):
    sys.stderr.write("error: board=mps2-an500 is the emulator: there is nothing to flash. "
                     "Use `scons board=mps2-an500 run`, or board=stm32f746g-disco flash for the real board.\n")
    return 2


def _bench_board_note(model):
    def act(target, source, env):
        print(format_size_report(json.load(open(str(source[0])))))
        print(f"bench: instruction counts come from the emulated Cortex-M7: "
              f"scons board=mps2-an500 model={model} bench")
        return 0
    return act


def _bench_action(model, model_json, bench_json):
    def act(target, source, env):
        b = json.load(open(bench_json.abspath))
        size = json.load(open([str(s) for s in source if str(s).endswith("size.json")][0]))
        names = []
        if model_json is not None and os.path.exists(model_json.abspath):
            meta = json.load(open(model_json.abspath))
            names = [(l["name"], l.get("kind", ""), l.get("macs", 0)) for l in meta.get("layers", [])]
        text = format_bench(b, size, names)
        print(text)
        with open(str(target[0]), "w") as f:
            f.write(text + "\n")
        return 0
    return act


def format_bench(b: dict, size: dict, names: list) -> str:
    per = b["per_inference"]
    unit = b["unit"]
    lo, hi = min(per), max(per)
    mean = sum(per) / len(per)
    f, r = size["flash"], size["ram"]
    total_macs = sum(n[2] for n in names) if names else 0
    lines = [f"bench: {b['model']} on the emulated Cortex-M7 (QEMU mps2-an500, -icount shift="
             f"{b['icount_shift']}: exact {unit}), {b['inferences']} inferences",
             f"  {unit} per inference: {mean:,.0f} (min {lo:,}, max {hi:,})"
             + (f", {mean / total_macs:.2f} per MAC ({total_macs:,} MACs)" if total_macs else ""),
             f"  flash {f['total']:,} B (weights {f['model_weights']:,}, model code {f['model_code']:,}, "
             f"runtime {f['runtime']:,})",
             f"  RAM {r['total']:,} B (arena+model data {r['model_arena_and_data']:,}, stack reserve "
             f"{r['stack_reserve']:,}, runtime {r['runtime']:,}); stack used {b['stack_used']:,} B, "
             f"so RAM in use {r['total'] - r['stack_reserve'] + b['stack_used']:,} B"]
    if b["per_layer"]:
        lines.append(f"  {'layer':<24}{'kind':<14}{'MACs':>10}{unit:>14}{'per MAC':>9}")
        for i, v in enumerate(b["per_layer"]):
            name, kind, macs = names[i] if i < len(names) else (f"layer {i}", "", 0)
            per_mac = f"{v / macs:.2f}" if macs else ""
            lines.append(f"  {name:<24}{kind:<14}{macs:>10,}{v:>14,}{per_mac:>9}")
        lines.append(f"  (per layer includes the layer hook, ~10 instructions; the rest of the total is "
                     f"the call and timer reads)")
    if b["model"] == "lenet5":
        t = MICROTVM_LENET5
        lines.append(f"  microTVM on the real STM32F746G-DISCO (RIOT, published): {t['ms']} ms, "
                     f"{t['ram_kb']} KB RAM, {t['flash_kb']} KB flash")
        lines.append(f"  this firmware: {mean / 216e3:.1f} ms at 216 MHz if it ran 1 instruction per cycle "
                     f"(an estimate: QEMU has no timing model; the M7 dual-issues, flash wait states cost), "
                     f"{(r['total'] - r['stack_reserve'] + b['stack_used']) / 1000:.1f} KB RAM in use, "
                     f"{f['total'] / 1000:.1f} KB flash")
        for what, n in REFERENCE_LENET5_INSTRUCTIONS:
            lines.append(f"  reference, same emulator (notes/targets.md): {what}: {n:,} instructions")
    return "\n".join(lines)
